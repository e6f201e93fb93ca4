//! Lease sizing: how much money a node asks to hold for a campaign, from its recent spend.
//!
//! Each round, per campaign: `ewma ← (3·ewma + spent)/4` (spend per round, about four rounds of
//! memory). The target is `max(ewma, spent) · lease_intervals`, so a lease lasts a few rounds at
//! the current pace and a missed sync does not starve the node. When a bid could not be covered
//! during the round the target at least doubles (a node that runs dry grows its lease
//! geometrically until it stops running dry), unless the store had nothing to give anyway. An active campaign never asks for less than
//! `max(min_lease, 2 × the largest price it failed to cover)`, so one lease always fits an
//! impression, nor more than `max_lease`. After `idle_rounds` rounds without spend or unmet
//! demand the target drops to zero and the node hands its lease back.

use crate::campaign::Book;
use crate::config::BudgetConfig;
use crate::store::MAX_MICROS;

/// The sizing knobs, copied out of the config once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeasePolicy {
    pub lease_intervals: u64,
    pub min_lease: u64,
    pub max_lease: u64,
    pub idle_rounds: u32,
}

impl LeasePolicy {
    pub fn from_config(cfg: &BudgetConfig) -> Self {
        LeasePolicy {
            lease_intervals: u64::from(cfg.lease_intervals.max(1)),
            min_lease: cfg.min_lease_micros,
            max_lease: cfg.max_lease_micros.unwrap_or(MAX_MICROS).min(MAX_MICROS),
            idle_rounds: cfg.idle_rounds(),
        }
    }

    /// Folds one round (`spent` micros charged, largest uncovered price `unmet`, 0 if none) into
    /// the book and returns the new target, also stored in `book.target`. `grow` is false while
    /// the store has nothing to give (exhausted or paused): unmet demand then keeps the
    /// campaign active without doubling the target, so a long-starved node does not ask for
    /// the whole of a later raise.
    pub fn next_target(&self, book: &mut Book, spent: u64, unmet: u64, grow: bool) -> u64 {
        book.ewma = book
            .ewma
            .saturating_mul(3)
            .saturating_add(spent)
            .checked_div(4)
            .unwrap_or(0);
        book.price_hint = book.price_hint.max(unmet);
        if spent > 0 || unmet > 0 {
            book.idle_rounds = 0;
        } else {
            book.idle_rounds = book.idle_rounds.saturating_add(1);
        }
        let target = if book.idle_rounds >= self.idle_rounds {
            0
        } else {
            let mut t = book.ewma.max(spent).saturating_mul(self.lease_intervals);
            if unmet > 0 && grow {
                t = t.max(book.target.saturating_mul(2));
            }
            let floor = self.min_lease.max(book.price_hint.saturating_mul(2));
            // The cap wins over the floor, except that a lease must fit one impression.
            t.max(floor)
                .min(self.max_lease)
                .max(book.price_hint)
                .min(MAX_MICROS)
        };
        book.target = target;
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LeasePolicy {
        LeasePolicy {
            lease_intervals: 3,
            min_lease: 1_000,
            max_lease: 1_000_000,
            idle_rounds: 5,
        }
    }

    #[test]
    fn steady_spend_holds_a_few_rounds_of_it() {
        let p = policy();
        let mut book = Book::default();
        let mut t = 0;
        for _ in 0..40 {
            t = p.next_target(&mut book, 10_000, 0, true);
        }
        assert!((29_000..=30_000).contains(&t), "{t}");
    }

    #[test]
    fn a_step_up_is_followed_at_once() {
        let p = policy();
        let mut book = Book::default();
        assert_eq!(p.next_target(&mut book, 0, 0, true), 1_000);
        assert_eq!(p.next_target(&mut book, 50_000, 0, true), 150_000);
    }

    #[test]
    fn running_dry_doubles_the_lease() {
        let p = policy();
        let mut book = Book::default();
        let first = p.next_target(&mut book, 0, 500, true);
        assert_eq!(first, 1_000);
        let mut last = first;
        for _ in 0..5 {
            let t = p.next_target(&mut book, 0, 500, true);
            assert_eq!(t, (last * 2).min(1_000_000));
            last = t;
        }
    }

    #[test]
    fn a_starved_campaign_stays_active_without_growing() {
        let p = policy();
        let mut book = Book::default();
        for _ in 0..20 {
            assert_eq!(p.next_target(&mut book, 0, 500, false), 1_000);
        }
        assert_eq!(p.next_target(&mut book, 0, 500, true), 2_000);
    }

    #[test]
    fn a_lease_fits_the_largest_uncovered_price_even_over_the_cap() {
        let p = LeasePolicy {
            max_lease: 10_000,
            ..policy()
        };
        let mut book = Book::default();
        assert_eq!(p.next_target(&mut book, 0, 4_000, true), 8_000);
        assert_eq!(p.next_target(&mut book, 0, 25_000, true), 25_000);
    }

    #[test]
    fn idle_campaigns_hand_everything_back() {
        let p = policy();
        let mut book = Book::default();
        p.next_target(&mut book, 9_000, 0, true);
        let mut targets = Vec::new();
        for _ in 0..6 {
            targets.push(p.next_target(&mut book, 0, 0, true));
        }
        assert!(targets[..4].iter().all(|&t| t > 0), "{targets:?}");
        assert_eq!(targets[4..], [0, 0]);
        assert!(
            p.next_target(&mut book, 1, 0, true) > 0,
            "activity wakes it up"
        );
    }
}

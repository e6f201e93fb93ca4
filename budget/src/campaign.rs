//! One campaign's local counter: the lease this node may spend, charged with a CAS loop.
//!
//! The request path touches two atomics only: `lease` (read by `can_cover`, CAS by `try_charge`)
//! and, when a bid cannot be covered, `unmet` (test-before-set, so a starved campaign does not
//! turn every bid into a shared write). Everything else (what was granted, returned, reported)
//! lives in the sync loop's `Book` behind a mutex the request path never takes.

use crate::key::CampaignKey;
use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A shared, owned reference to a campaign counter (for holding across `.await`).
pub type CampaignHandle = Arc<Campaign>;

/// A campaign's counters on this node.
#[derive(Debug)]
pub struct Campaign {
    key: CampaignKey,
    /// Micros this node may still spend. Only ever lowered by charges and by the sync loop
    /// handing money back; only ever raised by the sync loop crediting a grant.
    lease: CachePadded<AtomicU64>,
    /// Largest price a bid could not be covered for since the last round (0: none). A separate
    /// cache line, so recording a miss does not slow readers of `lease`.
    unmet: CachePadded<AtomicU64>,
    book: Mutex<Book>,
}

/// The sync loop's bookkeeping for one campaign. Invariant, whenever the mutex is not held:
/// `credited - returned - lease == charged` (every micro this node ever charged).
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// Cumulative micros granted to this node's session and added to `lease`.
    pub credited: u64,
    /// Cumulative micros taken out of `lease` and handed back.
    pub returned: u64,
    /// Cumulative charged / returned the store has acknowledged.
    pub acked_spent: u64,
    pub acked_returned: u64,
    /// `charged` at the previous round, to measure spend per round.
    pub last_charged: u64,
    /// Spend per round, exponentially weighted (micros).
    pub ewma: u64,
    /// The lease this node aimed for last round.
    pub target: u64,
    /// Largest price that could not be covered, ever (a lease must fit one impression).
    pub price_hint: u64,
    /// Rounds in a row without spend or unmet demand.
    pub idle_rounds: u32,
    /// The store had no money to give (exhausted or paused): sync again only in full rounds.
    pub starved: bool,
    /// The store says the campaign is paused.
    pub paused: bool,
    /// The store has no such campaign (deleted, or Redis lost its data).
    pub missing: bool,
    /// The store has answered about this campaign at least once.
    pub synced: bool,
    /// This campaign was in a report: the store may hold a grant for this session.
    pub sent: bool,
    /// The store's totals as of the last successful sync.
    pub remote: Option<Remote>,
    /// The campaign's time zone as the store last said (`None`: not yet heard, taken as UTC).
    pub tz: Option<std::sync::Arc<str>>,
}

/// The store's totals for a campaign as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remote {
    pub budget: u64,
    pub spent: u64,
    pub held: u64,
    pub daily_budget: Option<u64>,
    pub day: u64,
    pub day_spent: u64,
}

impl Campaign {
    pub(crate) fn new(key: CampaignKey) -> Self {
        Campaign {
            key,
            lease: CachePadded::new(AtomicU64::new(0)),
            unmet: CachePadded::new(AtomicU64::new(0)),
            book: Mutex::new(Book::default()),
        }
    }

    /// Which campaign this is.
    pub fn key(&self) -> &CampaignKey {
        &self.key
    }

    /// Whether the lease can pay `micros` now. A read of one atomic; a `false` also records the
    /// unmet demand so the next sync asks for a larger lease.
    #[inline]
    pub fn can_cover(&self, micros: u64) -> bool {
        // Relaxed: the lease is a self-contained counter; no other memory is published through it.
        if self.lease.load(Ordering::Relaxed) >= micros {
            return true;
        }
        self.note_unmet(micros);
        false
    }

    /// Takes `micros` out of the lease atomically; `false` (nothing taken) when the lease cannot
    /// pay it, so the lease never goes below zero whatever the number of threads.
    #[inline]
    pub fn try_charge(&self, micros: u64) -> bool {
        let mut current = self.lease.load(Ordering::Relaxed);
        loop {
            if current < micros {
                self.note_unmet(micros);
                return false;
            }
            match self.lease.compare_exchange_weak(
                current,
                current - micros,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Micros this node may spend right now.
    #[inline]
    pub fn available(&self) -> u64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Every micro this node has charged to the campaign since it started, for reconciliation
    /// with billed impressions. Takes the sync loop's mutex briefly (not for the request path).
    pub fn charged_total(&self) -> u64 {
        let book = self.book();
        charged(&book, self.lease.load(Ordering::Relaxed))
    }

    #[cold]
    fn note_unmet(&self, micros: u64) {
        // Test before write: once a miss is recorded, further misses of the same size stay reads.
        if micros > self.unmet.load(Ordering::Relaxed) {
            self.unmet.fetch_max(micros, Ordering::Relaxed);
        }
    }

    /// The unmet price recorded since the last call, clearing it.
    pub(crate) fn take_unmet(&self) -> u64 {
        if self.unmet.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.unmet.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn book(&self) -> MutexGuard<'_, Book> {
        // A poisoned book still holds consistent numbers: every update below is a few integer
        // assignments that cannot panic halfway, so recovering the guard is sound.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Current lease (for the sync loop, which holds the book).
    pub(crate) fn lease(&self) -> u64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Credits a grant. Call with the book held, and add the same amount to `book.credited`.
    pub(crate) fn credit(&self, micros: u64) {
        self.lease.fetch_add(micros, Ordering::Relaxed);
    }

    /// Takes back whatever the lease holds above `keep`, returning how much was taken. Call with
    /// the book held, and add the result to `book.returned`.
    pub(crate) fn take_above(&self, keep: u64) -> u64 {
        match self
            .lease
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lease| {
                (lease > keep).then_some(keep)
            }) {
            Ok(before) => before - keep,
            Err(_) => 0,
        }
    }
}

/// Charged so far, from the book and a lease read while holding it.
pub(crate) fn charged(book: &Book, lease: u64) -> u64 {
    book.credited
        .saturating_sub(book.returned)
        .saturating_sub(lease)
}

/// A report that asks for nothing: the session's books as they stand (at release, or from a
/// node going silent). Its spend counts in the store's current day.
pub(crate) fn final_report(c: &Campaign, book: &Book) -> crate::store::SyncItem {
    crate::store::SyncItem {
        key: c.key().clone(),
        granted: book.credited,
        spent: charged(book, c.lease()),
        returned: book.returned,
        want: 0,
        day: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn funded(micros: u64) -> Campaign {
        let c = Campaign::new(CampaignKey::new("d", "c"));
        let mut book = c.book();
        c.credit(micros);
        book.credited += micros;
        drop(book);
        c
    }

    #[test]
    fn charges_never_go_below_zero() {
        let c = funded(1_000);
        assert!(c.can_cover(1_000));
        assert!(c.try_charge(600));
        assert!(!c.can_cover(600));
        assert!(!c.try_charge(600));
        assert!(c.try_charge(400));
        assert!(!c.try_charge(1));
        assert_eq!(c.available(), 0);
        assert_eq!(c.charged_total(), 1_000);
        assert!(c.try_charge(0), "a free impression needs no money");
    }

    #[test]
    fn misses_record_the_largest_price() {
        let c = funded(100);
        assert!(!c.can_cover(300));
        assert!(!c.try_charge(700));
        assert!(!c.can_cover(200));
        assert_eq!(c.take_unmet(), 700);
        assert_eq!(c.take_unmet(), 0);
    }

    #[test]
    fn taking_back_keeps_the_books_straight() {
        let c = funded(1_000);
        assert!(c.try_charge(100));
        let mut book = c.book();
        let taken = c.take_above(300);
        book.returned += taken;
        assert_eq!(taken, 600);
        assert_eq!(c.take_above(500), 0);
        drop(book);
        assert_eq!(c.available(), 300);
        assert_eq!(c.charged_total(), 100);
    }

    #[test]
    fn concurrent_charges_spend_exactly_the_lease() {
        let c = Arc::new(funded(100_000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    let mut won = 0u64;
                    while c.try_charge(7) {
                        won += 7;
                    }
                    won
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 100_000 - 100_000 % 7);
        assert_eq!(c.available(), 100_000 % 7);
        assert_eq!(c.charged_total(), total);
    }
}

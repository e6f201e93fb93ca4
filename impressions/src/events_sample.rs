//! Sampling of the event log's informational events (wins, losses, late answers): which of
//! them are written at a configured rate, and why billing events never are.
//!
//! Only `win`, `loss` and `late` may be sampled. Everything that bills, or that an audit of
//! billing needs, is always written: billed impressions and clicks, their duplicates, invalid
//! (blocklisted or bot) hits, and test auctions' hits. A win is not a bill (the impression is),
//! so a sampled win costs analysis, never money.
//!
//! The choice is made per auction, from a hash of its id against the rate: an auction kept at
//! the lowest rate is kept at every higher one, so a sampled log holds an auction's win, its
//! losses and its late answers together rather than scattered halves.

use crate::events::EventType;

/// Share of each informational event type written to the log, `0.0..=1.0`. Default 1.0 (all).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRates {
    pub win: f64,
    pub loss: f64,
    pub late: f64,
}

impl Default for SampleRates {
    fn default() -> Self {
        Self {
            win: 1.0,
            loss: 1.0,
            late: 1.0,
        }
    }
}

impl SampleRates {
    /// Each rate outside `0.0..=1.0` (or not a number), named as `events.sample.<type>`.
    pub fn problems(&self) -> Vec<String> {
        [("win", self.win), ("loss", self.loss), ("late", self.late)]
            .into_iter()
            .filter(|(_, rate)| !(0.0..=1.0).contains(rate))
            .map(|(name, rate)| {
                format!("events.sample.{name} must be within 0.0..=1.0, got {rate}")
            })
            .collect()
    }
}

/// The event types that may be sampled, in the order of [`Sampler::index`].
pub(crate) const SAMPLED: [EventType; 3] = [EventType::Win, EventType::Loss, EventType::Late];

/// Decides, per event, whether it is written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sampler {
    /// Per type in [`SAMPLED`] order: `None` keeps all, else keep when the auction's hash is
    /// below the threshold.
    thresholds: [Option<u64>; 3],
}

impl Sampler {
    pub fn new(rates: SampleRates) -> Self {
        let threshold = |rate: f64| {
            // `as` saturates: 1.0 would be 2^64, one past u64::MAX, hence the explicit keep-all.
            (rate < 1.0).then(|| (rate.max(0.0) * 18_446_744_073_709_551_616.0) as u64)
        };
        Self {
            thresholds: [
                threshold(rates.win),
                threshold(rates.loss),
                threshold(rates.late),
            ],
        }
    }

    /// Where `kind` is in [`SAMPLED`]; `None` for every event that is never sampled.
    pub fn index(kind: EventType) -> Option<usize> {
        SAMPLED.iter().position(|k| *k == kind)
    }

    /// Whether an event of `kind` about `auction_id` is written.
    pub fn keep(&self, kind: EventType, auction_id: &str) -> bool {
        match Self::index(kind).and_then(|i| self.thresholds[i]) {
            None => true,
            Some(0) => false,
            // xxh3 is a fixed, documented function: the same auction is kept or dropped on
            // every node and every version.
            Some(t) => xxhash_rust::xxh3::xxh3_64(auction_id.as_bytes()) < t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_events_are_never_sampled_and_rates_nest_per_auction() {
        let none = Sampler::new(SampleRates {
            win: 0.0,
            loss: 0.0,
            late: 0.0,
        });
        for kind in [
            EventType::Impression,
            EventType::Click,
            EventType::DuplicateImpression,
            EventType::DuplicateClick,
            EventType::InvalidImpression,
            EventType::InvalidClick,
        ] {
            assert!(none.keep(kind, "a"), "{kind:?} must never be sampled");
        }
        assert!(!none.keep(EventType::Win, "a"));
        let all = Sampler::new(SampleRates::default());
        assert!(all.keep(EventType::Late, "a"));

        let s = Sampler::new(SampleRates {
            win: 0.5,
            loss: 0.1,
            late: 1.0,
        });
        let ids: Vec<String> = (0..10_000).map(|i| format!("auction-{i}")).collect();
        let wins = ids.iter().filter(|id| s.keep(EventType::Win, id)).count();
        let losses = ids.iter().filter(|id| s.keep(EventType::Loss, id)).count();
        // Fixed by xxh3 over these ids: within a percent of the rates.
        assert_eq!((wins, losses), (4_947, 1_007));
        for id in &ids {
            if s.keep(EventType::Loss, id) {
                assert!(s.keep(EventType::Win, id), "{id}: kept at 0.1, not at 0.5");
            }
        }
        assert_eq!(
            SampleRates {
                win: 1.5,
                loss: f64::NAN,
                late: -0.1
            }
            .problems()
            .len(),
            3
        );
    }
}

//! Per-key request rates with bounded memory: a fixed table of GCRA cells indexed by a keyed
//! hash. Each cell is one `AtomicU64`: a 16-bit tag of the key and its theoretical arrival time
//! (48 bits of µs since the table was made, about 8.9 years). So memory is `slots × 8` bytes
//! whatever the number of keys. A key whose cell holds another key's tag takes the cell over
//! as if new: under more distinct keys than slots a rate can be missed, never invented, so a
//! real user is never screened for someone else's traffic.
//!
//! Hand-written rather than `governor`'s keyed limiter, whose state map grows with every key
//! until it is pruned; this one has no map, no lock and no pruning task.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// At most `limit` requests per key in any one second (GCRA with a one-second burst: `limit`
/// at once, then one per `1 s / limit`).
pub struct RateTable {
    cells: Box<[AtomicU64]>,
    mask: u64,
    /// Random keys: nobody can craft keys that share a cell.
    hasher: RandomState,
    /// µs between two requests at the steady rate.
    interval_us: u64,
    /// How far ahead of now a key's theoretical arrival time may run: one second less one
    /// interval, which admits exactly `limit` requests at once.
    tolerance_us: u64,
    origin: Instant,
}

impl RateTable {
    /// `slots` is rounded up to a power of two.
    pub fn new(limit: u32, slots: usize, origin: Instant) -> Self {
        let slots = slots.max(1).next_power_of_two();
        let interval_us = (1_000_000 / u64::from(limit.max(1))).max(1);
        RateTable {
            cells: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            mask: slots as u64 - 1,
            hasher: RandomState::new(),
            interval_us,
            tolerance_us: 1_000_000u64.saturating_sub(interval_us),
            origin,
        }
    }

    /// Counts one request of `key` at `now`; `true` when it is over the limit (and then it is
    /// not counted, so a screened burst does not push the key's next window out).
    pub fn over(&self, key: impl Hash, now: Instant) -> bool {
        let hash = self.hasher.hash_one(key);
        let tag = hash >> TIME_BITS;
        let cell = &self.cells[(hash & self.mask) as usize];
        // Time 0 means "never seen", so the clock starts at 1 µs.
        let now_us =
            (now.saturating_duration_since(self.origin).as_micros() as u64 + 1) & TIME_MASK;
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let tat = if current >> TIME_BITS == tag {
                (current & TIME_MASK).max(now_us)
            } else {
                now_us
            };
            if tat - now_us > self.tolerance_us {
                return true;
            }
            let next = (tag << TIME_BITS) | ((tat + self.interval_us) & TIME_MASK);
            match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return false,
                Err(seen) => current = seen,
            }
        }
    }

    /// Bytes of counter memory.
    pub fn memory_bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<AtomicU64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_limit_plus_one_th_request_in_a_second_is_over_and_the_next_second_is_fresh() {
        let t0 = Instant::now();
        let table = RateTable::new(3, 1024, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!table.over("a", at(0)));
        assert!(!table.over("a", at(10)));
        assert!(!table.over("a", at(20)));
        assert!(table.over("a", at(30)), "the 4th within a second");
        assert!(!table.over("b", at(30)), "another key has its own count");
        assert!(
            table.over("a", at(300)),
            "a screened request is not counted, but 1/3 s has not passed"
        );
        assert!(
            !table.over("a", at(334)),
            "the steady rate frees one slot per 1/3 s"
        );
        assert!(!table.over("a", at(2000)));
        assert!(!table.over("a", at(2000)));
        assert!(!table.over("a", at(2000)));
        assert!(table.over("a", at(2000)));
        assert_eq!(table.memory_bytes(), 8192);
    }

    #[test]
    fn a_one_slot_table_never_screens_a_key_for_another_s_traffic() {
        let t0 = Instant::now();
        let table = RateTable::new(1, 1, t0);
        assert!(!table.over("a", t0));
        assert!(table.over("a", t0));
        // Another key (with another tag: at least one of these has one) takes the cell over
        // rather than being screened.
        assert!((0..16).any(|k| !table.over(k, t0)));
    }
}

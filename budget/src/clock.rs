//! The wall clock the budget crate reads, handed in so a test can run a simulated day.

use std::fmt;
use std::sync::Arc;

/// Milliseconds since the Unix epoch, read through a function the caller chose: the system
/// clock by default ([`Clock::system`]), a manual one in tests ([`Clock::manual`]). Campaign
/// days and even pacing read it; a test drives reconciliation with `Budgets::reconcile_at`.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock (one shared value, so every config that uses it compares equal).
    pub fn system() -> Self {
        static SYSTEM: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        SYSTEM
            .get_or_init(|| Clock(Arc::new(crate::reconcile::wall_clock_ms)))
            .clone()
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    /// A clock that reads what the returned handle last set (start: `start_ms`).
    pub fn manual(start_ms: u64) -> (Self, ManualClock) {
        let now = Arc::new(std::sync::atomic::AtomicU64::new(start_ms));
        let read = Arc::clone(&now);
        (
            Clock::from_fn(move || read.load(std::sync::atomic::Ordering::Acquire)),
            ManualClock(now),
        )
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Two clocks are the same clock only when they read the same function.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Clock {}

/// The setter of a [`Clock::manual`].
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicU64>);

impl ManualClock {
    /// Sets the time, in ms since the Unix epoch.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::Release);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::AcqRel);
    }

    /// The time it reads.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

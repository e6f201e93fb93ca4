//! Polling a condition until a deadline: how a test waits for something that happens after
//! the call it made (a notice fired, a sync round done, a task gone), instead of sleeping
//! for a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked: short against the waits tests make (tens of ms and
/// up), long enough that polling does not compete with the work it waits for.
pub const POLL_EVERY: Duration = Duration::from_millis(5);

/// Checks `check` until it returns true (then returns true) or `limit` has passed since the
/// call (then returns false, after one last check). For a condition that is plain code, pass
/// `|| std::future::ready(cond)`.
///
/// ```no_run
/// # async fn t(count: &std::sync::atomic::AtomicU64) {
/// use std::sync::atomic::Ordering;
/// use std::time::Duration;
/// let arrived = testkit::eventually(Duration::from_secs(5), || {
///     std::future::ready(count.load(Ordering::Relaxed) == 3)
/// })
/// .await;
/// assert!(arrived, "three notices within 5 s");
/// # }
/// ```
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually`] for code outside a runtime: blocks the thread between checks.
pub fn eventually_blocking(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn returns_once_true_and_gives_up_at_the_deadline() {
        let calls = AtomicU32::new(0);
        let third = eventually(Duration::from_secs(1), || {
            std::future::ready(calls.fetch_add(1, Ordering::Relaxed) == 2)
        })
        .await;
        assert!(third);
        assert_eq!(calls.load(Ordering::Relaxed), 3);

        let start = tokio::time::Instant::now();
        assert!(!eventually(Duration::from_millis(100), || std::future::ready(false)).await);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(
            waited < Duration::from_millis(100) + 2 * POLL_EVERY,
            "{waited:?}"
        );
    }

    #[test]
    fn the_blocking_one_too() {
        let mut n = 0;
        assert!(eventually_blocking(Duration::from_secs(1), || {
            n += 1;
            n == 3
        }));
        assert!(!eventually_blocking(Duration::from_millis(20), || false));
    }
}

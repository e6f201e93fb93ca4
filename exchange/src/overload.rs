//! Overload control: an adaptive bound on auctions in flight, lowered when the node's own
//! scheduler falls behind and raised again when it keeps up.
//!
//! Why the scheduler and not latency: an auction's latency is mostly the DSP wait, which says
//! nothing about this node (slow DSPs cost waiting, not CPU), and the queue of a saturated
//! node is often outside it, in the client's connection pool, where no server-side latency
//! sees it. What a saturated node cannot hide is that its runtime always has ready work: a
//! probe task that yields is polled again only after everything queued ahead of it. When the
//! smallest such lag over a window is above the target, there has been a standing queue for
//! the whole window (the CoDel reading of a minimum), so the bound drops to three quarters of
//! what was running; every window without one raises it by an eighth. Auctions over the bound
//! are answered 204 at once, which costs microseconds, so what is served stays fast and the
//! excess does not queue.
//!
//! [`Governor::decide`] is the pure rule; [`probe`] is the task that feeds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::OverloadConfig;

/// The auction bound in force, shared by the admission check and the probe.
pub struct Governor {
    limit: AtomicUsize,
    ceiling: usize,
    floor: usize,
    target_lag: Duration,
    limit_gauge: metrics::Gauge,
    lag_gauge: metrics::Gauge,
}

impl Governor {
    /// Starts at `ceiling` (`server.max_in_flight_auctions`): nothing is shed until the
    /// scheduler says so. With overload control off, the bound stays there.
    pub fn new(config: &OverloadConfig, ceiling: usize) -> Self {
        let gauge = metrics::gauge!("exchange_overload_limit");
        gauge.set(ceiling as f64);
        Self {
            limit: AtomicUsize::new(ceiling),
            ceiling,
            floor: config.min_limit.min(ceiling),
            target_lag: Duration::from_micros(config.target_lag_us),
            limit_gauge: gauge,
            lag_gauge: metrics::gauge!("exchange_scheduler_lag_seconds"),
        }
    }

    /// Auctions that may run at once right now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The new bound after a window whose smallest scheduler lag was `min_lag`, with
    /// `in_flight` auctions running at its end.
    pub fn decide(&self, limit: usize, min_lag: Duration, in_flight: usize) -> usize {
        if min_lag > self.target_lag {
            (limit.min(in_flight.max(self.floor)) * 3 / 4).max(self.floor)
        } else {
            (limit + limit / 8 + 1).min(self.ceiling)
        }
    }

    fn close_window(&self, min_lag: Duration, in_flight: usize) {
        let next = self.decide(self.limit(), min_lag, in_flight);
        self.limit.store(next, Ordering::Relaxed);
        self.limit_gauge.set(next as f64);
        self.lag_gauge.set(min_lag.as_secs_f64());
    }
}

/// Measures the scheduler lag every `probe_interval` and closes a window every `window`,
/// until dropped. `in_flight` is the node's count of running auctions.
pub async fn probe(
    governor: Arc<Governor>,
    config: OverloadConfig,
    in_flight: impl Fn() -> usize + Send + 'static,
) {
    let interval = Duration::from_millis(config.probe_interval_ms);
    let window = Duration::from_millis(config.window_ms);
    let mut window_start = Instant::now();
    let mut min_lag = Duration::MAX;
    loop {
        tokio::time::sleep(interval).await;
        let before = Instant::now();
        tokio::task::yield_now().await;
        min_lag = min_lag.min(before.elapsed());
        if window_start.elapsed() >= window {
            governor.close_window(min_lag, in_flight());
            window_start = Instant::now();
            min_lag = Duration::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor(ceiling: usize) -> Governor {
        let config = OverloadConfig {
            target_lag_us: 1_000,
            min_limit: 16,
            ..OverloadConfig::default()
        };
        Governor::new(&config, ceiling)
    }

    /// `(limit, min lag µs, in flight) -> next limit`.
    fn check(g: &Governor, cases: &[(usize, u64, usize, usize)]) {
        for &(limit, lag_us, in_flight, want) in cases {
            let got = g.decide(limit, Duration::from_micros(lag_us), in_flight);
            assert_eq!(
                got, want,
                "limit {limit}, lag {lag_us} µs, {in_flight} in flight"
            );
        }
    }

    #[test]
    fn the_bound_follows_the_scheduler() {
        let g = governor(20_000);
        check(
            &g,
            &[
                // Keeping up: grow by an eighth, never past the ceiling.
                (20_000, 50, 3, 20_000),
                (800, 999, 100, 901),
                (16, 0, 0, 19),
                (19_990, 10, 5, 20_000),
                // Behind: three quarters of what was running, or of the bound if lower.
                (20_000, 1_500, 100, 75),
                (60, 1_500, 100, 45),
                // Never below the floor, even with nothing running.
                (20, 5_000, 2, 16),
                (16, 5_000, 0, 16),
                // The target itself is still keeping up.
                (100, 1_000, 100, 113),
            ],
        );
    }

    #[test]
    fn the_floor_never_exceeds_the_ceiling() {
        let g = governor(4);
        check(&g, &[(4, 5_000, 4, 4), (4, 0, 0, 4)]);
    }

    // Real time, not paused: the lag is the wall-clock wait of a real scheduler.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_runtime_keeps_the_ceiling() {
        let config = OverloadConfig::default();
        let g = Arc::new(Governor::new(&config, 1_000));
        let task = tokio::spawn(probe(g.clone(), config.clone(), || 0));
        tokio::time::sleep(Duration::from_millis(config.window_ms * 5)).await;
        assert_eq!(g.limit(), 1_000);
        task.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_never_idles_lowers_the_bound() {
        let config = OverloadConfig::default();
        let g = Arc::new(Governor::new(&config, 1_000));
        let probe_task = tokio::spawn(probe(g.clone(), config.clone(), || 1_000));
        // A task that hogs the only worker for longer than the target at every turn: the
        // probe's yield waits behind it each time.
        let hog = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_millis(3));
                tokio::task::yield_now().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(config.window_ms * 3)).await;
        assert!(g.limit() < 1_000, "limit stayed at {}", g.limit());
        hog.abort();
        probe_task.abort();
    }
}

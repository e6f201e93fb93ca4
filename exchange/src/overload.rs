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
//! what was running; so it does when the mean lag is above its own target (mild overload, where
//! the queue comes and goes within the window but every wake-up waits); every window without
//! either raises it by an eighth. Auctions over the bound
//! are answered 204 at once, which costs microseconds, so what is served stays fast and the
//! excess does not queue.
//!
//! The runtime lag cannot see a queue in the client's own connection pool: an HTTP/1.1 client
//! with fewer connections than the auctions it wants in flight keeps its excess at home, and the
//! node sees only as many auctions as the client has connections. Two things show that queue
//! together: requests arriving back to back on their connections (the next one was already
//! waiting when the answer left) and auctions taking over twice as long as they did in the best
//! recent calm window (the node is contended, not the client merely busy). Either signal lowers the
//! bound; shed auctions answer in microseconds, the client's connections cycle faster, and its
//! queue drains.
//!
//! [`Governor::decide`] is the pure rule; [`probe`] is the task that feeds it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::OverloadConfig;
use crate::metrics::Registry;

/// The auction bound in force, shared by the admission check and the probe.
pub struct Governor {
    limit: AtomicUsize,
    ceiling: usize,
    floor: usize,
    target_lag: Duration,
    target_mean_lag: Duration,
    limit_gauge: metrics::Gauge,
    lag_gauge: metrics::Gauge,
    arrivals: AtomicU64,
    back_to_back: AtomicU64,
    served: AtomicU64,
    served_us: AtomicU64,
    /// The last window's mean scheduler lag, µs: how long a request that just became
    /// readable is expected to wait before this node polls it.
    queue_estimate_us: AtomicU64,
    stress: Arc<NodeStress>,
}

/// Whether the node is overloaded right now, for those that must not blame others for its
/// slowness (a DSP call whose deadline timer fired late). Updated by the probe.
#[derive(Debug, Default)]
pub struct NodeStress {
    /// The latest scheduler lag sample, µs.
    latest_lag_us: AtomicU64,
    /// The last window showed overload.
    overloaded: AtomicBool,
    /// Above this latest lag the node counts as stressed, µs.
    threshold_us: u64,
}

impl NodeStress {
    /// The last window showed overload, or the latest lag sample is above the mean-lag target.
    pub fn is_stressed(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
            || self.latest_lag_us.load(Ordering::Relaxed) > self.threshold_us
    }
}

/// What one window saw, as [`Governor::decide`] reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowStats {
    /// The smallest scheduler lag sampled.
    pub min_lag: Duration,
    /// The mean scheduler lag sampled.
    pub mean_lag: Duration,
    /// Auctions running at the window's end.
    pub in_flight: usize,
    /// Auction requests that arrived, and how many of them came back to back.
    pub arrivals: u64,
    pub back_to_back: u64,
    /// Mean time from request head to answer of the auctions served.
    pub mean_service: Option<Duration>,
    /// The smallest mean service time of recent windows.
    pub base_service: Option<Duration>,
}

/// Fewer arrivals than this in a window say nothing about a client's queue.
const MIN_ARRIVALS: u64 = 20;

impl WindowStats {
    /// Most requests arrived back to back: a client had them waiting.
    pub fn client_waiting(&self) -> bool {
        self.arrivals >= MIN_ARRIVALS && self.back_to_back * 2 > self.arrivals
    }
}

impl Governor {
    /// Starts at `ceiling` (`server.max_in_flight_auctions`): nothing is shed until the
    /// scheduler says so. With overload control off, the bound stays there.
    pub fn new(config: &OverloadConfig, ceiling: usize, registry: &Registry) -> Self {
        let gauge = registry.gauge("exchange_overload_limit", &[]);
        gauge.set(ceiling as f64);
        Self {
            limit: AtomicUsize::new(ceiling),
            ceiling,
            floor: config.min_limit.min(ceiling),
            target_lag: Duration::from_micros(config.target_lag_us),
            target_mean_lag: Duration::from_micros(config.target_mean_lag_us),
            limit_gauge: gauge,
            lag_gauge: registry.gauge("exchange_scheduler_lag_seconds", &[]),
            arrivals: AtomicU64::new(0),
            back_to_back: AtomicU64::new(0),
            served: AtomicU64::new(0),
            served_us: AtomicU64::new(0),
            queue_estimate_us: AtomicU64::new(0),
            stress: Arc::new(NodeStress {
                threshold_us: if config.target_mean_lag_us > 0 {
                    config.target_mean_lag_us
                } else {
                    config.target_lag_us
                },
                ..NodeStress::default()
            }),
        }
    }

    /// An auction request arrived; `back_to_back` when its connection's previous answer left
    /// less than `overload.back_to_back_us` before.
    pub fn arrived(&self, back_to_back: bool) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        if back_to_back {
            self.back_to_back.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An admitted auction was answered `took` after its request head.
    pub fn served(&self, took: Duration) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.served_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Takes the window's counters, leaving them at zero.
    fn take_counts(&self) -> (u64, u64, Option<Duration>) {
        let arrivals = self.arrivals.swap(0, Ordering::Relaxed);
        let back_to_back = self.back_to_back.swap(0, Ordering::Relaxed);
        let served = self.served.swap(0, Ordering::Relaxed);
        let served_us = self.served_us.swap(0, Ordering::Relaxed);
        let mean = (served > 0).then(|| Duration::from_micros(served_us / served));
        (arrivals, back_to_back, mean)
    }

    /// How long a request is expected to have waited in this node before its handler ran:
    /// the last window's mean scheduler lag. The auction's deadline counts from its arrival,
    /// so this much comes off what it can still afford.
    pub fn queue_estimate(&self) -> Duration {
        Duration::from_micros(self.queue_estimate_us.load(Ordering::Relaxed))
    }

    /// The handle the fan-out reads to tell a late node from a late DSP.
    pub fn stress(&self) -> Arc<NodeStress> {
        self.stress.clone()
    }

    /// Auctions that may run at once right now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether a window shows overload: the runtime never idle (a standing queue of ready
    /// work), or a client queueing behind its connections while auctions run slow.
    pub fn overloaded(&self, w: &WindowStats) -> bool {
        let runtime_behind = w.min_lag > self.target_lag
            || (!self.target_mean_lag.is_zero() && w.mean_lag > self.target_mean_lag);
        let client_queueing = w.client_waiting()
            && matches!((w.mean_service, w.base_service), (Some(m), Some(b)) if m > b * 2);
        runtime_behind || client_queueing
    }

    /// The new bound after window `w`: three quarters of what was running when overloaded,
    /// an eighth more otherwise, within `[floor, ceiling]`.
    pub fn decide(&self, limit: usize, w: &WindowStats) -> usize {
        if self.overloaded(w) {
            (limit.min(w.in_flight.max(self.floor)) * 3 / 4).max(self.floor)
        } else {
            (limit + limit / 8 + 1).min(self.ceiling)
        }
    }

    /// Applies window `w`; true when it showed overload.
    fn close_window(&self, w: &WindowStats) -> bool {
        let overloaded = self.overloaded(w);
        let next = self.decide(self.limit(), w);
        if next != self.limit() {
            tracing::debug!(target: "exchange::overload", ?w, next, "auction bound changed");
        }
        tracing::trace!(target: "exchange::overload", ?w, "window");
        self.limit.store(next, Ordering::Relaxed);
        self.limit_gauge.set(next as f64);
        self.lag_gauge.set(w.min_lag.as_secs_f64());
        self.queue_estimate_us
            .store(w.mean_lag.as_micros() as u64, Ordering::Relaxed);
        self.stress.overloaded.store(overloaded, Ordering::Relaxed);
        overloaded
    }
}

/// The "best recent" service time after window `w`. Only calm windows (no overload, no client
/// waiting) teach what normal is: an overload, even one that starts with the traffic, must not
/// become the norm and disarm the signal that sheds it. Until a calm window has been seen,
/// there is no base and only the runtime lag can shed.
pub fn learn_base(base: Option<Duration>, w: &WindowStats, overloaded: bool) -> Option<Duration> {
    if overloaded || w.client_waiting() {
        base
    } else {
        next_base(base, w.mean_service)
    }
}

/// The next "best recent" service time: the lower of this window's mean and the last best,
/// which itself creeps up 0.5% a window, so a lasting change (DSPs that got slower) is
/// followed within seconds while one busy window is not mistaken for the norm.
pub fn next_base(base: Option<Duration>, mean: Option<Duration>) -> Option<Duration> {
    match (base, mean) {
        (Some(b), Some(m)) => Some(m.min(b.mul_f64(1.005))),
        (b, m) => m.or(b),
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
    let (mut lag_sum, mut samples) = (Duration::ZERO, 0u32);
    let mut base_service = None;
    loop {
        tokio::time::sleep(interval).await;
        let before = Instant::now();
        tokio::task::yield_now().await;
        let lag = before.elapsed();
        governor
            .stress
            .latest_lag_us
            .store(lag.as_micros() as u64, Ordering::Relaxed);
        min_lag = min_lag.min(lag);
        lag_sum += lag;
        samples += 1;
        if window_start.elapsed() >= window {
            let (arrivals, back_to_back, mean_service) = governor.take_counts();
            let stats = WindowStats {
                min_lag,
                mean_lag: lag_sum / samples.max(1),
                in_flight: in_flight(),
                arrivals,
                back_to_back,
                mean_service,
                base_service,
            };
            let overloaded = governor.close_window(&stats);
            base_service = learn_base(base_service, &stats, overloaded);
            window_start = Instant::now();
            min_lag = Duration::MAX;
            (lag_sum, samples) = (Duration::ZERO, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_registry() -> Registry {
        Registry::new().expect("a Prometheus recorder")
    }

    fn governor(ceiling: usize) -> Governor {
        let config = OverloadConfig {
            target_lag_us: 1_000,
            min_limit: 16,
            ..OverloadConfig::default()
        };
        Governor::new(&config, ceiling, &test_registry())
    }

    /// `(limit, min lag µs, mean lag µs, in flight) -> next limit`, with no client-side signal.
    fn check(g: &Governor, cases: &[(usize, u64, u64, usize, usize)]) {
        for &(limit, min_us, mean_us, in_flight, want) in cases {
            let w = WindowStats {
                min_lag: Duration::from_micros(min_us),
                mean_lag: Duration::from_micros(mean_us),
                in_flight,
                ..WindowStats::default()
            };
            let got = g.decide(limit, &w);
            assert_eq!(
                got, want,
                "limit {limit}, lag min {min_us} µs mean {mean_us} µs, {in_flight} in flight"
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
                (20_000, 50, 60, 3, 20_000),
                (800, 999, 999, 100, 901),
                (16, 0, 0, 0, 19),
                (19_990, 10, 400, 5, 20_000),
                // A standing queue all window: three quarters of what was running, or of the
                // bound if lower.
                (20_000, 1_500, 1_500, 100, 75),
                (60, 1_500, 2_000, 100, 45),
                // No standing queue, but every wake-up waited over a millisecond on average.
                (200, 2, 1_001, 160, 120),
                (200, 2, 3_000, 40, 30),
                // Never below the floor, even with nothing running.
                (20, 5_000, 5_000, 2, 16),
                (16, 5_000, 5_000, 0, 16),
                // The targets themselves are still keeping up.
                (100, 1_000, 1_000, 100, 113),
            ],
        );
    }

    #[test]
    fn the_mean_lag_reading_can_be_turned_off() {
        let config = OverloadConfig {
            target_mean_lag_us: 0,
            ..OverloadConfig::default()
        };
        let g = Governor::new(&config, 20_000, &test_registry());
        check(&g, &[(200, 2, 3_000, 160, 226)]);
    }

    #[test]
    fn a_client_queue_shows_as_back_to_back_arrivals_and_slow_auctions() {
        let g = governor(20_000);
        let ms = Duration::from_millis;
        // (arrivals, back to back, mean service, base service) -> overloaded
        let cases = [
            // The surge: nearly every request was waiting, auctions take 3x the best.
            (1_000, 900, Some(ms(12)), Some(ms(4)), true),
            // Waiting requests but fast auctions: a client with a small pool, not our load.
            (1_000, 900, Some(ms(5)), Some(ms(4)), false),
            // Slow auctions but no waiting requests: slow DSPs cost time, not capacity.
            (1_000, 100, Some(ms(25)), Some(ms(4)), false),
            // Half is not a majority.
            (1_000, 500, Some(ms(12)), Some(ms(4)), false),
            // Too few requests to say.
            (19, 19, Some(ms(12)), Some(ms(4)), false),
            // No history yet, or nothing served.
            (1_000, 900, Some(ms(12)), None, false),
            (1_000, 900, None, Some(ms(4)), false),
        ];
        for (arrivals, back_to_back, mean_service, base_service, want) in cases {
            let w = WindowStats {
                min_lag: Duration::from_micros(5),
                mean_lag: Duration::from_micros(5),
                in_flight: 100,
                arrivals,
                back_to_back,
                mean_service,
                base_service,
            };
            assert_eq!(g.overloaded(&w), want, "{w:?}");
            let next = g.decide(100, &w);
            assert_eq!(next, if want { 75 } else { 113 }, "{w:?}");
        }
    }

    #[test]
    fn the_best_recent_service_time_follows_lasting_changes_only() {
        let ms = Duration::from_millis;
        assert_eq!(next_base(None, None), None);
        assert_eq!(next_base(None, Some(ms(4))), Some(ms(4)));
        assert_eq!(next_base(Some(ms(4)), None), Some(ms(4)));
        assert_eq!(next_base(Some(ms(4)), Some(ms(3))), Some(ms(3)));
        // One slow window moves it 0.5%, not to the window's mean.
        assert_eq!(
            next_base(Some(ms(100)), Some(ms(300))),
            Some(Duration::from_micros(100_500))
        );
        // DSPs that stay 3x slower: followed within ~220 windows (22 s at 100 ms); a surge of
        // a few seconds is not mistaken for the norm.
        let mut base = Some(ms(4));
        for _ in 0..50 {
            base = next_base(base, Some(ms(12)));
        }
        assert!(base < Some(ms(6)), "{base:?}");
        for _ in 0..200 {
            base = next_base(base, Some(ms(12)));
        }
        assert_eq!(base, Some(ms(12)));
    }

    #[test]
    fn only_calm_windows_teach_the_base() {
        let ms = Duration::from_millis;
        let window = |back_to_back, mean| WindowStats {
            arrivals: 100,
            back_to_back,
            mean_service: Some(ms(mean)),
            ..WindowStats::default()
        };
        // Traffic that starts in overload: clients waiting from the first window, no base.
        assert_eq!(learn_base(None, &window(90, 9), false), None);
        assert_eq!(learn_base(None, &window(10, 4), false), Some(ms(4)));
        // A shedding window or a waiting client leaves it alone.
        assert_eq!(learn_base(Some(ms(4)), &window(10, 9), true), Some(ms(4)));
        assert_eq!(learn_base(Some(ms(4)), &window(90, 9), false), Some(ms(4)));
        assert_eq!(learn_base(Some(ms(4)), &window(10, 3), false), Some(ms(3)));
    }

    #[test]
    fn the_floor_never_exceeds_the_ceiling() {
        let g = governor(4);
        check(&g, &[(4, 5_000, 5_000, 4, 4), (4, 0, 0, 0, 4)]);
    }

    // Real time, not paused: the lag is the wall-clock wait of a real scheduler.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_runtime_keeps_the_ceiling() {
        let config = OverloadConfig::default();
        let g = Arc::new(Governor::new(&config, 1_000, &test_registry()));
        // The probe reads the in-flight count once per window it closes.
        let windows = Arc::new(AtomicUsize::new(0));
        let closed = windows.clone();
        let task = tokio::spawn(probe(g.clone(), config.clone(), move || {
            closed.fetch_add(1, Ordering::Relaxed);
            0
        }));
        let five = testkit::eventually(Duration::from_secs(10), || {
            std::future::ready(windows.load(Ordering::Relaxed) >= 5)
        });
        assert!(five.await, "the probe closed no five windows");
        assert_eq!(g.limit(), 1_000);
        task.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_never_idles_lowers_the_bound() {
        let config = OverloadConfig::default();
        let g = Arc::new(Governor::new(&config, 1_000, &test_registry()));
        let probe_task = tokio::spawn(probe(g.clone(), config.clone(), || 1_000));
        // A task that hogs the only worker for longer than the target at every turn: the
        // probe's yield waits behind it each time. The blocking sleep is the behaviour under
        // test, not a wait.
        let hog = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_millis(3));
                tokio::task::yield_now().await;
            }
        });
        let lowered = testkit::eventually(Duration::from_secs(10), || {
            std::future::ready(g.limit() < 1_000)
        });
        assert!(lowered.await, "limit stayed at {}", g.limit());
        hog.abort();
        probe_task.abort();
    }
}

//! Results: per-request outcomes folded into latency histograms and counters, per second and
//! for the whole run, and the report types the table, the JSON and the HTML are made from.
//!
//! Latency is recorded in microseconds from each request's *intended* send time (see
//! [`crate::plan`]), so time spent waiting for a free connection counts. Nothing here reads
//! the clock: the generator hands in latencies and the second boundaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The highest latency a histogram holds (one hour); anything above is recorded as this.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The percentiles drawn on the latency curve.
pub const CURVE_PERCENTILES: [f64; 22] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 97.0, 98.0, 99.0,
    99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer; `bids` is the number of bid objects in a 200 body.
    Answered {
        /// The HTTP status.
        status: u16,
        /// Bids in the answer (0 for anything but a 200 carrying a BidResponse).
        bids: u32,
    },
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection failed (refused, reset, closed mid-answer).
    Error,
}

/// The number of bid objects in a BidResponse body (`seatbid[].bid[]`); 0 when the body is not
/// a BidResponse. Only the structure is read, the bids themselves are skipped.
pub fn count_bids(body: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Response {
        #[serde(default)]
        seatbid: Vec<SeatBid>,
    }
    #[derive(Deserialize)]
    struct SeatBid {
        #[serde(default)]
        bid: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Response>(body).map_or(0, |r| {
        let n: usize = r.seatbid.iter().map(|s| s.bid.len()).sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    })
}

/// Counters of one window (a second, or the whole run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests whose intended send time fell in the window.
    pub scheduled: u64,
    /// Requests written to a connection (a queued request counts when it leaves the queue).
    pub sent: u64,
    /// Requests the generator could not even queue (every connection busy, queue full): never
    /// sent. A non-zero count means the target (or the generator) could not keep up.
    pub dropped: u64,
    /// Requests that got an HTTP answer.
    pub answered: u64,
    /// `200` answers.
    pub status_200: u64,
    /// `204` answers.
    pub status_204: u64,
    /// Other 2xx and 1xx/3xx answers.
    pub status_other: u64,
    /// `4xx` answers.
    pub status_4xx: u64,
    /// `5xx` answers.
    pub status_5xx: u64,
    /// Requests with no answer within the request timeout.
    pub timeouts: u64,
    /// Requests whose connection failed.
    pub errors: u64,
    /// Bid objects received in `200` answers.
    pub bids: u64,
    /// Answers that carried no bid: `204`, or a `200` without any bid.
    pub no_bids: u64,
    /// Requests still queued or in flight when the run ended (interrupted, or past the drain
    /// bound). Only the run's total carries it.
    pub unfinished: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.scheduled += o.scheduled;
        self.sent += o.sent;
        self.dropped += o.dropped;
        self.answered += o.answered;
        self.status_200 += o.status_200;
        self.status_204 += o.status_204;
        self.status_other += o.status_other;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.timeouts += o.timeouts;
        self.errors += o.errors;
        self.bids += o.bids;
        self.no_bids += o.no_bids;
        self.unfinished += o.unfinished;
    }

    /// Requests that ended one way or another (answered, timed out, failed).
    pub fn finished(&self) -> u64 {
        self.answered + self.timeouts + self.errors
    }
}

/// Latency percentiles of a window, in microseconds (0 when it holds no sample).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// One point of the latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// The percentile, 0 to 100.
    pub percentile: f64,
    /// The latency at that percentile, microseconds.
    pub latency_us: u64,
}

/// A histogram and counters over some stretch of time.
#[derive(Clone, Debug)]
pub struct Window {
    hist: Histogram<u64>,
    /// The split of [`Window::record_split`]: what the generator's own queue cost, and the
    /// answers by kind, so an overloaded target's fast 204s and its served auctions are seen
    /// apart.
    queue: Histogram<u64>,
    served: Histogram<u64>,
    no_content: Histogram<u64>,
    /// The window's counters.
    pub counts: Counts,
}

/// Latencies split by where the time went and what came back (see [`Window::record_split`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// From intended send time to the request leaving the generator's queue for a connection.
    pub queue_wait: LatencySummary,
    /// 200 answers, from intended send time.
    pub served: LatencySummary,
    /// 204 answers, from the request leaving the queue to its answer: the target's own time.
    pub no_content: LatencySummary,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    /// An empty window.
    #[allow(clippy::expect_used)] // constant, valid bounds: see below
    pub fn new() -> Self {
        // Infallible: 1 µs to one hour at 3 significant digits are constant, valid bounds
        // (low >= 1, high >= 2 * low, sigfig <= 5), which is all `new_with_bounds` checks.
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Self {
            queue: hist.clone(),
            served: hist.clone(),
            no_content: hist.clone(),
            hist,
            counts: Counts::default(),
        }
    }

    /// Counts one intended send.
    pub fn scheduled(&mut self) {
        self.counts.scheduled += 1;
    }

    /// Counts `n` requests written to a connection.
    pub fn sent(&mut self, n: u64) {
        self.counts.sent += n;
    }

    /// Counts one request the generator dropped.
    pub fn dropped(&mut self) {
        self.counts.dropped += 1;
    }

    /// Records what became of one request and, unless its connection failed, its latency from
    /// the intended send time (a timeout waited that long too).
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        let c = &mut self.counts;
        match outcome {
            Outcome::Answered { status, bids } => {
                c.answered += 1;
                match status {
                    200 => c.status_200 += 1,
                    204 => c.status_204 += 1,
                    400..=499 => c.status_4xx += 1,
                    500..=599 => c.status_5xx += 1,
                    _ => c.status_other += 1,
                }
                c.bids += u64::from(bids);
                if status == 204 || (status == 200 && bids == 0) {
                    c.no_bids += 1;
                }
            }
            Outcome::Timeout => c.timeouts += 1,
            Outcome::Error => {
                c.errors += 1;
                return;
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// [`Window::record`], plus the split: `wait` is how long the request sat in the
    /// generator's queue before a connection took it, `latency` is from its intended send time.
    pub fn record_split(&mut self, wait: Duration, latency: Duration, outcome: Outcome) {
        self.record(latency, outcome);
        if outcome == Outcome::Error {
            return;
        }
        saturating_record(&mut self.queue, wait);
        match outcome {
            Outcome::Answered { status: 200, .. } => saturating_record(&mut self.served, latency),
            Outcome::Answered { status: 204, .. } => {
                saturating_record(&mut self.no_content, latency.saturating_sub(wait));
            }
            _ => {}
        }
    }

    /// Adds another window's samples and counters to this one.
    pub fn merge(&mut self, other: &Window) {
        merge_hist(&mut self.hist, &other.hist);
        merge_hist(&mut self.queue, &other.queue);
        merge_hist(&mut self.served, &other.served);
        merge_hist(&mut self.no_content, &other.no_content);
        self.counts.add(&other.counts);
    }

    /// The percentile summary.
    pub fn latency(&self) -> LatencySummary {
        summary(&self.hist)
    }

    /// The split's percentile summaries.
    pub fn split(&self) -> SplitSummary {
        SplitSummary {
            queue_wait: summary(&self.queue),
            served: summary(&self.served),
            no_content: summary(&self.no_content),
        }
    }

    /// The latency at each of [`CURVE_PERCENTILES`]; empty when the window holds no sample.
    pub fn curve(&self) -> Vec<PercentilePoint> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        CURVE_PERCENTILES
            .iter()
            .map(|&p| PercentilePoint {
                percentile: p,
                latency_us: self.hist.value_at_percentile(p),
            })
            .collect()
    }
}

fn saturating_record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

fn merge_hist(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both histograms share the same bounds, and `add` only fails when the other's values do
    // not fit: saturate instead of losing the window.
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

fn summary(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        min_us: h.min(),
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

/// One second of the timeline. Rows cover the seconds of the measured window and of the drain
/// after it; the last row may be a partial second, and a drain tail under half a second counts
/// in the run's total without a row of its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    /// Seconds since the measured window started; this row covers `[t, t + 1)`.
    pub t: u32,
    /// The rate the plan asked for in this second.
    pub target_rate: f64,
    /// The second's counters: `scheduled` is the offered rate, `sent` what left the queue,
    /// `answered` the achieved rate.
    #[serde(flatten)]
    pub counts: Counts,
    /// Latencies of the requests that finished in this second.
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// The measured window folded second by second into a timeline and a total.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The second being filled.
    pub current: Window,
    total: Window,
    timeline: Vec<SecondReport>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the current second as second `t` of the timeline and starts a new one.
    pub fn rotate(&mut self, t: u32, target_rate: f64) -> SecondReport {
        let window = std::mem::take(&mut self.current);
        let row = SecondReport {
            t,
            target_rate,
            counts: window.counts.clone(),
            latency: window.latency(),
        };
        self.total.merge(&window);
        self.timeline.push(row.clone());
        row
    }

    /// The whole measured window so far (the current second included) and the timeline.
    pub fn finish(mut self) -> (Window, Vec<SecondReport>) {
        let current = std::mem::take(&mut self.current);
        self.total.merge(&current);
        (self.total, self.timeline)
    }
}

/// One entry of the request mix, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixEntry {
    /// Template or file name.
    pub name: String,
    /// Its weight.
    pub weight: u32,
}

/// One phase of the plan, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Requests per second.
    pub rate: f64,
    /// Seconds.
    pub duration_s: f64,
    /// False for warm-up.
    pub measured: bool,
}

/// One target's share of a run over several.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// The target URL.
    pub url: String,
    /// Answers received per second over the measured window.
    pub achieved_rate: f64,
    /// Its counters.
    pub counts: Counts,
    /// Latency from intended send time.
    pub latency: LatencySummary,
    /// Queue wait, served auctions, 204s.
    pub split: SplitSummary,
}

/// Everything a run measured: what `--json` prints and the HTML report draws.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// A name for the run (the URL unless given).
    pub label: String,
    /// `run` or `surge`.
    pub mode: String,
    /// The target URL.
    pub url: String,
    /// The highest measured rate the plan asked for, requests per second.
    pub target_rate: f64,
    /// The plan's phases, warm-up included.
    pub plan: Vec<PhaseSummary>,
    /// Warm-up length, seconds (not measured).
    pub warmup_s: f64,
    /// The measured window the plan asked for, seconds.
    pub planned_s: f64,
    /// The measured window actually run, seconds: until the schedule ended (or was
    /// interrupted), or the last measured request finished, whichever was later.
    pub elapsed_s: f64,
    /// Connections to the target.
    pub connections: usize,
    /// True when the run was stopped early (Ctrl-C): the figures cover what ran.
    pub interrupted: bool,
    /// Requests written to a connection per second over the measured window.
    pub sent_rate: f64,
    /// Answers received per second over the measured window.
    pub achieved_rate: f64,
    /// The counters of the measured window.
    pub counts: Counts,
    /// Latency from intended send time, over the measured window.
    pub latency: LatencySummary,
    /// The latency split: queue wait, served auctions, 204s.
    #[serde(default)]
    pub split: SplitSummary,
    /// Each target's figures when the run spread its schedule over several (a fleet); empty
    /// for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
    /// The percentile curve.
    pub percentiles: Vec<PercentilePoint>,
    /// One row per second of the measured window.
    pub timeline: Vec<SecondReport>,
    /// The request mix.
    pub mix: Vec<MixEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const OK: Outcome = Outcome::Answered {
        status: 200,
        bids: 2,
    };

    #[test]
    fn the_split_sees_queue_wait_served_and_204s_apart() {
        let mut w = Window::new();
        let no_content = Outcome::Answered {
            status: 204,
            bids: 0,
        };
        w.record_split(ms(10), ms(15), OK);
        w.record_split(ms(30), ms(31), no_content);
        w.record_split(ms(2), ms(900), Outcome::Timeout);
        w.record_split(ms(7), ms(8), Outcome::Error);
        let mut total = Window::new();
        total.merge(&w);
        let sp = total.split();
        assert_eq!(sp.queue_wait.count, 3, "an error has no latency");
        assert_eq!(sp.queue_wait.max_us / 1000, 30);
        assert_eq!(sp.served.count, 1);
        assert_eq!(
            sp.served.max_us / 1000,
            15,
            "a 200 counts from its intended time"
        );
        assert_eq!(sp.no_content.count, 1);
        assert_eq!(sp.no_content.max_us / 1000, 1, "a 204 counts from its send");
        assert_eq!(total.latency().count, 3);
    }

    #[test]
    fn bids_are_counted_across_seats() {
        let body = br#"{"id":"a","seatbid":[{"seat":"x","bid":[{"id":"1"},{"id":"2"}]},
            {"bid":[{"id":"3","ext":{"deep":[1,2]}}]}],"cur":"USD"}"#;
        assert_eq!(count_bids(body), 3);
        assert_eq!(count_bids(br#"{"id":"a"}"#), 0);
        assert_eq!(count_bids(br#"{"id":"a","seatbid":[]}"#), 0);
        assert_eq!(count_bids(b""), 0);
        assert_eq!(count_bids(b"not json"), 0);
        assert_eq!(count_bids(br#"{"seatbid":"nope"}"#), 0);
    }

    #[test]
    fn outcomes_land_in_their_counters() {
        let mut w = Window::new();
        w.scheduled();
        w.sent(1);
        w.dropped();
        w.record(ms(1), OK);
        w.record(
            ms(1),
            Outcome::Answered {
                status: 200,
                bids: 0,
            },
        );
        w.record(
            ms(1),
            Outcome::Answered {
                status: 204,
                bids: 0,
            },
        );
        w.record(
            ms(1),
            Outcome::Answered {
                status: 400,
                bids: 0,
            },
        );
        w.record(
            ms(1),
            Outcome::Answered {
                status: 503,
                bids: 0,
            },
        );
        w.record(
            ms(1),
            Outcome::Answered {
                status: 302,
                bids: 0,
            },
        );
        w.record(ms(900), Outcome::Timeout);
        w.record(ms(5), Outcome::Error);
        let c = &w.counts;
        assert_eq!((c.scheduled, c.sent, c.dropped), (1, 1, 1));
        assert_eq!(c.answered, 6);
        assert_eq!(
            (
                c.status_200,
                c.status_204,
                c.status_4xx,
                c.status_5xx,
                c.status_other
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!((c.timeouts, c.errors), (1, 1));
        assert_eq!((c.bids, c.no_bids), (2, 2));
        assert_eq!(c.finished(), 8);
        // Errors carry no latency; timeouts do.
        let l = w.latency();
        assert_eq!(l.count, 7);
        assert!(l.max_us >= 899_000, "{l:?}");
    }

    #[test]
    fn percentiles_follow_the_samples() {
        let mut w = Window::new();
        for i in 1..=1000 {
            w.record(Duration::from_micros(i * 10), OK);
        }
        let l = w.latency();
        let near = |v: u64, want: u64| v.abs_diff(want) <= want / 100 + 10;
        assert!(near(l.p50_us, 5_000), "{l:?}");
        assert!(near(l.p90_us, 9_000), "{l:?}");
        assert!(near(l.p99_us, 9_900), "{l:?}");
        assert!(near(l.max_us, 10_000), "{l:?}");
        assert!(near(l.min_us, 10), "{l:?}");
        let curve = w.curve();
        assert_eq!(curve.len(), CURVE_PERCENTILES.len());
        assert!(curve.windows(2).all(|p| p[0].latency_us <= p[1].latency_us));
        assert_eq!(Window::new().curve(), Vec::new());
        assert_eq!(Window::new().latency(), LatencySummary::default());
    }

    #[test]
    fn huge_latencies_saturate_instead_of_vanishing() {
        let mut w = Window::new();
        w.record(Duration::from_secs(10 * 3600), OK);
        assert!(w.latency().max_us >= MAX_LATENCY_US * 99 / 100);
    }

    #[test]
    fn the_recorder_keeps_seconds_apart_and_sums_them() {
        let mut r = Recorder::new();
        r.current.scheduled();
        r.current.record(ms(2), OK);
        let first = r.rotate(0, 100.0);
        assert_eq!(first.t, 0);
        assert_eq!(first.target_rate, 100.0);
        assert_eq!(first.counts.answered, 1);
        r.current.record(
            ms(40),
            Outcome::Answered {
                status: 204,
                bids: 0,
            },
        );
        r.current.record(
            ms(40),
            Outcome::Answered {
                status: 204,
                bids: 0,
            },
        );
        let second = r.rotate(1, 100.0);
        assert_eq!(second.counts.status_204, 2);
        assert!(second.latency.p50_us >= 39_000);
        r.current.record(ms(3), Outcome::Timeout);
        let (total, timeline) = r.finish();
        assert_eq!(timeline.len(), 2);
        assert_eq!(total.counts.answered, 3);
        assert_eq!(total.counts.timeouts, 1);
        assert_eq!(total.counts.scheduled, 1);
        assert_eq!(total.latency().count, 4);
    }

    #[test]
    fn a_report_round_trips_through_json() {
        let mut w = Window::new();
        w.record(ms(1), OK);
        let report = RunReport {
            label: "x".into(),
            mode: "run".into(),
            counts: w.counts.clone(),
            latency: w.latency(),
            percentiles: w.curve(),
            timeline: vec![SecondReport {
                t: 0,
                target_rate: 10.0,
                counts: w.counts.clone(),
                latency: w.latency(),
            }],
            ..RunReport::default()
        };
        let text = serde_json::to_string(&report).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timeline"][0]["status_200"], 1, "timeline rows are flat");
        assert!(v["timeline"][0]["p99_us"].is_u64());
    }
}

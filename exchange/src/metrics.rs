//! Prometheus metrics: the recorder, and the handles the hot path increments.
//!
//! Handles are registered once per DSP at start-up, so recording a call is an atomic add
//! with no label formatting or map lookup on the request path.

use std::sync::Mutex;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Error;

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03,
    0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder once and returns its handle; later calls
/// (several exchanges in one test process) share it.
pub fn install() -> Result<PrometheusHandle, Error> {
    // A mutex, not a bare OnceLock check: two exchanges starting at once (tests) would both
    // see "not installed" and the second install_recorder would fail.
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(h) = handle.as_ref() {
        return Ok(h.clone());
    }
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| Error::Metrics(e.to_string()))?
        .install_recorder()
        .map_err(|e| Error::Metrics(e.to_string()))?;
    // Histograms keep raw samples until upkeep folds them into their buckets; without it they
    // grow with every auction between scrapes. One plain thread serves the whole process
    // (the recorder is global, and outlives any one runtime).
    let upkeep = installed.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })
        .map_err(|e| Error::Metrics(format!("starting the metrics upkeep thread: {e}")))?;
    *handle = Some(installed.clone());
    Ok(installed)
}

/// How an auction ended, as counted in `exchange_auctions_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuctionOutcome {
    Won,
    NoBid,
    Invalid,
    TooLarge,
    Overloaded,
    NoTime,
}

impl AuctionOutcome {
    const ALL: [AuctionOutcome; 6] = [
        Self::Won,
        Self::NoBid,
        Self::Invalid,
        Self::TooLarge,
        Self::Overloaded,
        Self::NoTime,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::NoBid => "no_bid",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Overloaded => "overloaded",
            Self::NoTime => "no_time",
        }
    }
}

/// Exchange-wide handles.
pub struct ServerMetrics {
    outcomes: [Counter; 6],
    pub auction_seconds: Histogram,
    pub in_flight: Gauge,
    pub notices_dropped: Counter,
    pub late_abandoned: Counter,
}

impl ServerMetrics {
    pub fn new() -> Self {
        Self {
            outcomes: AuctionOutcome::ALL
                .map(|o| counter!("exchange_auctions_total", "outcome" => o.label())),
            auction_seconds: histogram!("exchange_auction_duration_seconds"),
            in_flight: gauge!("exchange_auctions_in_flight"),
            notices_dropped: counter!("exchange_notices_dropped_total"),
            late_abandoned: counter!("exchange_dsp_late_abandoned_total"),
        }
    }

    pub fn outcome(&self, outcome: AuctionOutcome) {
        // The array is built from ALL in the same order, so the position always exists.
        if let Some(i) = AuctionOutcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes[i].increment(1);
        }
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-DSP handles, labelled `dsp`.
pub struct DspMetrics {
    pub requests: Counter,
    pub bids: Counter,
    pub no_bids: Counter,
    pub timeouts: Counter,
    pub errors: Counter,
    pub throttled: Counter,
    pub late_answers: Counter,
    /// Late calls that had not answered when their grace period ended.
    pub late_unanswered: Counter,
    pub late_seconds: Histogram,
    pub latency_seconds: Histogram,
    pub wins: Counter,
    lost: Vec<Counter>,
    name: String,
}

impl DspMetrics {
    pub fn new(name: &str) -> Self {
        let dsp = name.to_owned();
        Self {
            requests: counter!("exchange_dsp_requests_total", "dsp" => dsp.clone()),
            bids: counter!("exchange_dsp_bids_total", "dsp" => dsp.clone()),
            no_bids: counter!("exchange_dsp_no_bids_total", "dsp" => dsp.clone()),
            timeouts: counter!("exchange_dsp_timeouts_total", "dsp" => dsp.clone()),
            errors: counter!("exchange_dsp_errors_total", "dsp" => dsp.clone()),
            throttled: counter!("exchange_dsp_throttled_total", "dsp" => dsp.clone()),
            late_answers: counter!("exchange_dsp_late_answers_total", "dsp" => dsp.clone()),
            late_unanswered: counter!("exchange_dsp_late_unanswered_total", "dsp" => dsp.clone()),
            late_seconds: histogram!("exchange_dsp_late_by_seconds", "dsp" => dsp.clone()),
            latency_seconds: histogram!("exchange_dsp_duration_seconds", "dsp" => dsp.clone()),
            wins: counter!("exchange_wins_total", "dsp" => dsp.clone()),
            lost: auction::LossReason::ALL
                .iter()
                .map(|r| {
                    counter!("exchange_bids_lost_total", "dsp" => dsp.clone(), "reason" => r.as_str())
                })
                .collect(),
            name: dsp,
        }
    }

    /// A bid or a whole answer rejected, by reason. Reasons are a small fixed set of static
    /// labels, so the registry lookup here is bounded, and it is only on the error path.
    pub fn rejected(&self, reason: &'static str) {
        counter!("exchange_bids_rejected_total", "dsp" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    /// A bid that took part in the auction and lost, by loss reason. Every auction has
    /// losers, so these handles are registered up front like the others.
    pub fn lost(&self, reason: auction::LossReason) {
        if let Some(i) = auction::LossReason::ALL.iter().position(|r| *r == reason) {
            self.lost[i].increment(1);
        }
    }

    /// A win or loss notice fired, by kind and result.
    pub fn notice(&self, kind: &'static str, result: &'static str) {
        counter!("exchange_notices_total", "dsp" => self.name.clone(), "kind" => kind, "result" => result)
            .increment(1);
    }
}

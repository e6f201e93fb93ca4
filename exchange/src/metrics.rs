//! Prometheus metrics: the registry each exchange instance owns, and the handles the hot path
//! increments.
//!
//! Every instance builds its own recorder and hands it to the crates it starts (budgets,
//! tracking), so two exchanges in one process (tests) never share a count. Handles are
//! registered at start-up, so recording on the request path is an atomic add with no label
//! formatting or map lookup.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::dsp_filter::Skip;
use crate::privacy::Rule;
use crate::Error;

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03,
    0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

/// How often histogram samples are folded into their buckets. Without upkeep they pile up
/// between scrapes, one per auction.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// One exchange instance's metrics: the recorder its handles live in and the handle that
/// renders them for `GET /metrics`.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Registry {
    pub fn new() -> Result<Self, Error> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .map_err(|e| Error::Metrics(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        Ok(Self {
            recorder: Arc::new(recorder),
            handle,
        })
    }

    /// The recorder, for the crates that register their own metrics in this instance.
    pub fn recorder(&self) -> Arc<dyn Recorder + Send + Sync> {
        self.recorder.clone()
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// The Prometheus text exposition of everything this instance recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds histogram samples into buckets; the server calls it every [`UPKEEP_INTERVAL`].
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
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
    Late,
    /// Screened by `[fraud]` before the fan-out (`crate::screen`).
    Screened,
    /// Refused by the publisher check (`crate::publishers`): 401 or 403.
    Refused,
}

impl AuctionOutcome {
    const ALL: [AuctionOutcome; 9] = [
        Self::Won,
        Self::NoBid,
        Self::Invalid,
        Self::TooLarge,
        Self::Overloaded,
        Self::NoTime,
        Self::Late,
        Self::Screened,
        Self::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::NoBid => "no_bid",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Overloaded => "overloaded",
            Self::NoTime => "no_time",
            Self::Late => "late",
            Self::Screened => "screened",
            Self::Refused => "refused",
        }
    }
}

/// Exchange-wide handles.
pub struct ServerMetrics {
    outcomes: [Counter; 9],
    /// `exchange_screened_total{reason}`, in the order of `screen::Reason::ALL`.
    screened: [Counter; 8],
    pub auction_seconds: Histogram,
    pub in_flight: Gauge,
    pub notices_dropped: Counter,
    pub late_abandoned: Counter,
    /// `exchange_test_auctions_total`: auctions of requests with `test = 1`, also counted in
    /// `exchange_auctions_total` by outcome like any other.
    pub test_auctions: Counter,
    /// `exchange_debug_answers_total`: answers that carried `ext.debug`.
    pub debug_answers: Counter,
    /// `exchange_debug_refused_total`: requests with an `x-exchange-debug` header that did not
    /// match `debug.token` (or with no token configured), answered as if without it.
    pub debug_refused: Counter,
    /// `exchange_auth_refused_total{reason}`: requests refused by the publisher check.
    pub auth: crate::publishers::AuthMetrics,
}

impl ServerMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            outcomes: AuctionOutcome::ALL
                .map(|o| registry.counter("exchange_auctions_total", &[("outcome", o.label())])),
            screened: crate::screen::Reason::ALL
                .map(|r| registry.counter("exchange_screened_total", &[("reason", r.label())])),
            auction_seconds: registry.histogram("exchange_auction_duration_seconds", &[]),
            in_flight: registry.gauge("exchange_auctions_in_flight", &[]),
            notices_dropped: registry.counter("exchange_notices_dropped_total", &[]),
            late_abandoned: registry.counter("exchange_dsp_late_abandoned_total", &[]),
            test_auctions: registry.counter("exchange_test_auctions_total", &[]),
            debug_answers: registry.counter("exchange_debug_answers_total", &[]),
            debug_refused: registry.counter("exchange_debug_refused_total", &[]),
            auth: crate::publishers::AuthMetrics::new(registry),
        }
    }

    /// A request screened before the fan-out, by reason (also counted as outcome `screened`).
    pub fn screened(&self, reason: crate::screen::Reason) {
        if let Some(i) = crate::screen::Reason::ALL.iter().position(|r| *r == reason) {
            self.screened[i].increment(1);
        }
        self.outcome(AuctionOutcome::Screened);
    }

    /// A request refused by the publisher check, by reason (also counted as outcome
    /// `refused`).
    pub fn refused(&self, reason: crate::publishers::Refusal) {
        self.auth.refused(reason);
        self.outcome(AuctionOutcome::Refused);
    }

    pub fn outcome(&self, outcome: AuctionOutcome) {
        // `outcomes` is built from ALL in the same order, so the position always exists.
        if let Some(i) = AuctionOutcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes[i].increment(1);
        }
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
    /// `exchange_dsp_skipped_total{reason}`, in the order of `Skip::ALL`.
    skipped: [Counter; 4],
    /// `exchange_scrubbed_total{rule}`, in the order of `Rule::ALL`.
    scrubbed: [Counter; 4],
    /// `exchange_dsp_circuit_open`: 1 while the breaker lets only probes through.
    pub circuit_open: Gauge,
    pub late_answers: Counter,
    /// Late calls that had not answered when their grace period ended.
    pub late_unanswered: Counter,
    /// Failed or timed-out calls not held against the DSP's breaker: every DSP of the auction
    /// failed at once, or this node's timer fired late while it was overloaded.
    pub failures_excused: Counter,
    pub late_seconds: Histogram,
    pub latency_seconds: Histogram,
    pub wins: Counter,
    lost: Vec<Counter>,
    name: String,
    registry: Registry,
}

impl DspMetrics {
    pub fn new(registry: &Registry, name: &str) -> Self {
        let dsp = [("dsp", name)];
        Self {
            requests: registry.counter("exchange_dsp_requests_total", &dsp),
            bids: registry.counter("exchange_dsp_bids_total", &dsp),
            no_bids: registry.counter("exchange_dsp_no_bids_total", &dsp),
            timeouts: registry.counter("exchange_dsp_timeouts_total", &dsp),
            errors: registry.counter("exchange_dsp_errors_total", &dsp),
            throttled: registry.counter("exchange_dsp_throttled_total", &dsp),
            skipped: Skip::ALL.map(|r| {
                registry.counter(
                    "exchange_dsp_skipped_total",
                    &[("dsp", name), ("reason", r.label())],
                )
            }),
            scrubbed: Rule::ALL.map(|r| {
                registry.counter(
                    "exchange_scrubbed_total",
                    &[("dsp", name), ("rule", r.label())],
                )
            }),
            circuit_open: {
                let gauge = registry.gauge("exchange_dsp_circuit_open", &dsp);
                gauge.set(0.0);
                gauge
            },
            late_answers: registry.counter("exchange_dsp_late_answers_total", &dsp),
            late_unanswered: registry.counter("exchange_dsp_late_unanswered_total", &dsp),
            failures_excused: registry.counter("exchange_dsp_failures_excused_total", &dsp),
            late_seconds: registry.histogram("exchange_dsp_late_by_seconds", &dsp),
            latency_seconds: registry.histogram("exchange_dsp_duration_seconds", &dsp),
            wins: registry.counter("exchange_wins_total", &dsp),
            lost: auction::LossReason::ALL
                .iter()
                .map(|r| {
                    registry.counter(
                        "exchange_bids_lost_total",
                        &[("dsp", name), ("reason", r.as_str())],
                    )
                })
                .collect(),
            name: name.to_owned(),
            registry: registry.clone(),
        }
    }

    /// A bid or a whole answer rejected, by reason. Reasons are a small fixed set of static
    /// labels, so the registry lookup here is bounded, and it is only on the error path.
    pub fn rejected(&self, reason: &'static str) {
        self.registry
            .counter(
                "exchange_bids_rejected_total",
                &[("dsp", &self.name), ("reason", reason)],
            )
            .increment(1);
    }

    /// A bid that took part in the auction and lost, by loss reason. Every auction has
    /// losers, so these handles are registered up front like the others.
    pub fn lost(&self, reason: auction::LossReason) {
        if let Some(i) = auction::LossReason::ALL.iter().position(|r| *r == reason) {
            self.lost[i].increment(1);
        }
    }

    /// A call not made for this auction, by reason.
    pub fn skipped(&self, reason: Skip) {
        // `skipped` is built from Skip::ALL in the same order, so the position always exists.
        if let Some(i) = Skip::ALL.iter().position(|r| *r == reason) {
            self.skipped[i].increment(1);
        }
    }

    /// A body this DSP received scrubbed, by the rule that asked for it.
    pub fn scrubbed(&self, rule: Rule) {
        // `scrubbed` is built from Rule::ALL in the same order, so the position always exists.
        if let Some(i) = Rule::ALL.iter().position(|r| *r == rule) {
            self.scrubbed[i].increment(1);
        }
    }

    /// A win or loss notice fired, by kind and result.
    pub fn notice(&self, kind: &'static str, result: &'static str) {
        self.registry
            .counter(
                "exchange_notices_total",
                &[("dsp", &self.name), ("kind", kind), ("result", result)],
            )
            .increment(1);
    }
}

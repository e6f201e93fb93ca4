//! Metric names, and the handles one [`crate::Budgets`] records them through: registered on
//! the recorder it was handed (never the process-global one), up front where the labels are
//! fixed, on demand where they name a DSP or a campaign. Per-campaign labels are added only
//! when `per_campaign_metrics` is on.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};

/// Counter: micros charged, labelled `dsp` (and `cid`). Recorded by the sync loop, not per bid.
pub const SPEND: &str = "budget_spend_micros_total";
/// Gauge: micros this node holds in leases, labelled `dsp` (and `cid`).
pub const LEASE_HELD: &str = "budget_lease_micros";
/// Gauge: micros charged on this node that the store has not acknowledged yet.
pub const UNREPORTED: &str = "budget_unreported_micros";
/// Histogram: seconds per sync round trip.
pub const SYNC_SECONDS: &str = "budget_sync_seconds";
/// Counter: failed sync or discovery calls, labelled `op` and `reason`.
pub const SYNC_FAILURES: &str = "budget_sync_failures_total";
/// Gauge: campaigns in the last sync report.
pub const SYNC_CAMPAIGNS: &str = "budget_sync_campaigns";
/// Counter: bids that did not take part because of budgets, labelled `dsp` (and `cid`), `reason`.
pub const BIDS_DROPPED: &str = "budget_bids_dropped_total";

/// Counter: micros credited back to campaigns for wins never rendered (by this node's settles).
pub const RECONCILE_CREDITED: &str = "budget_reconcile_credited_micros_total";
/// Counter: micros billed beyond what was charged, in buckets this node settled.
pub const RECONCILE_BILLED_BEYOND: &str = "budget_reconcile_billed_beyond_charged_micros_total";
/// Counter: reconciliation items that reached the store after their bucket was settled.
pub const RECONCILE_LATE: &str = "budget_reconcile_late_items_total";
/// Gauge: micros recorded on this node and not yet confirmed by the store, labelled `side`
/// (`charged` or `billed`).
pub const RECONCILE_UNREPORTED: &str = "budget_reconcile_unreported_micros";
/// Histogram: seconds per reconcile round trip.
pub const RECONCILE_SECONDS: &str = "budget_reconcile_seconds";
/// Gauge: 1 while this node finds the budget store's data lost (its identity vanished or
/// changed, or the store is fenced) and spends nothing; 0 otherwise.
pub const STORE_IDENTITY_LOST: &str = "budget_store_identity_lost";

/// Counter: dead sessions this node declared dead and reaped (each dead session is counted by
/// exactly one node of the fleet).
pub const SESSIONS_RECLAIMED: &str = "budget_sessions_reclaimed_total";
/// Counter: lease micros this node returned to their campaigns from dead sessions (summed over
/// the fleet, each micro once).
pub const LEASE_RECLAIMED: &str = "budget_lease_reclaimed_micros_total";
/// Counter: times this node found its own session declared dead and started a fresh one.
pub const SESSION_RESTARTS: &str = "budget_session_restarts_total";

/// The recorder a [`crate::Budgets`] registers its metrics on, e.g. one
/// `metrics_exporter_prometheus::PrometheusRecorder` per exchange instance.
pub type SharedRecorder = Arc<dyn Recorder + Send + Sync>;

/// Why a bid was dropped for budget reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The campaign's lease could not cover the bid ([`crate::Budgets::can_cover`]).
    Insufficient,
    /// The bid won but the charge failed: another auction emptied the lease between the
    /// auction's `can_cover` and its charge ([`crate::Budgets::try_charge`]).
    ChargeRace,
    /// The campaign is unknown and the policy is `reject`.
    UnknownCampaign,
    /// The bid has no `cid` and the policy is `reject`.
    NoCid,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Insufficient => "insufficient",
            DropReason::ChargeRace => "charge_race",
            DropReason::UnknownCampaign => "unknown_campaign",
            DropReason::NoCid => "no_cid",
        }
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One node's budget metrics: the recorder and the handles whose labels never change.
pub(crate) struct BudgetMetrics {
    recorder: SharedRecorder,
    per_campaign: bool,
    pub sync_seconds: Histogram,
    pub sync_campaigns: Gauge,
    pub unreported: Gauge,
    pub reconcile_seconds: Histogram,
    pub reconcile_credited: Counter,
    pub reconcile_billed_beyond: Counter,
    pub reconcile_late: Counter,
    pub reconcile_unreported_charged: Gauge,
    pub reconcile_unreported_billed: Gauge,
    pub identity_lost: Gauge,
    pub sessions_reclaimed: Counter,
    pub lease_reclaimed: Counter,
    pub session_restarts: Counter,
}

impl BudgetMetrics {
    /// Describes every budget metric on `recorder` and registers the fixed-label handles.
    pub fn new(recorder: SharedRecorder, per_campaign: bool) -> Self {
        describe(&*recorder);
        let r = &*recorder;
        let side = |s: &'static str| vec![Label::from_static_parts("side", s)];
        BudgetMetrics {
            sync_seconds: r.register_histogram(&Key::from_static_name(SYNC_SECONDS), &METADATA),
            sync_campaigns: r.register_gauge(&Key::from_static_name(SYNC_CAMPAIGNS), &METADATA),
            unreported: r.register_gauge(&Key::from_static_name(UNREPORTED), &METADATA),
            reconcile_seconds: r
                .register_histogram(&Key::from_static_name(RECONCILE_SECONDS), &METADATA),
            reconcile_credited: r
                .register_counter(&Key::from_static_name(RECONCILE_CREDITED), &METADATA),
            reconcile_billed_beyond: r
                .register_counter(&Key::from_static_name(RECONCILE_BILLED_BEYOND), &METADATA),
            reconcile_late: r.register_counter(&Key::from_static_name(RECONCILE_LATE), &METADATA),
            reconcile_unreported_charged: r.register_gauge(
                &Key::from_parts(RECONCILE_UNREPORTED, side("charged")),
                &METADATA,
            ),
            reconcile_unreported_billed: r.register_gauge(
                &Key::from_parts(RECONCILE_UNREPORTED, side("billed")),
                &METADATA,
            ),
            identity_lost: r.register_gauge(&Key::from_static_name(STORE_IDENTITY_LOST), &METADATA),
            sessions_reclaimed: r
                .register_counter(&Key::from_static_name(SESSIONS_RECLAIMED), &METADATA),
            lease_reclaimed: r.register_counter(&Key::from_static_name(LEASE_RECLAIMED), &METADATA),
            session_restarts: r
                .register_counter(&Key::from_static_name(SESSION_RESTARTS), &METADATA),
            per_campaign,
            recorder,
        }
    }

    /// The `dsp` label, and `cid` too when per-campaign labels are on.
    fn campaign_labels(&self, dsp: &str, cid: Option<&str>) -> Vec<Label> {
        let mut labels = vec![Label::new("dsp", dsp.to_owned())];
        if let (true, Some(cid)) = (self.per_campaign, cid) {
            labels.push(Label::new("cid", cid.to_owned()));
        }
        labels
    }

    /// Counts a dropped bid.
    pub fn bid_dropped(&self, dsp: &str, cid: Option<&str>, reason: DropReason) {
        let mut labels = self.campaign_labels(dsp, cid);
        labels.push(Label::from_static_parts("reason", reason.as_str()));
        self.recorder
            .register_counter(&Key::from_parts(BIDS_DROPPED, labels), &METADATA)
            .increment(1);
    }

    /// One round's spend and lease for a DSP (`cid: None`) or a campaign.
    pub fn spend_and_lease(&self, dsp: &str, cid: Option<&str>, spent: u64, lease: u64) {
        let labels = self.campaign_labels(dsp, cid);
        self.recorder
            .register_counter(&Key::from_parts(SPEND, labels.clone()), &METADATA)
            .increment(spent);
        self.recorder
            .register_gauge(&Key::from_parts(LEASE_HELD, labels), &METADATA)
            .set(lease as f64);
    }

    /// Counts a failed store call.
    pub fn sync_failure(&self, op: &'static str, reason: &'static str) {
        let labels = vec![
            Label::from_static_parts("op", op),
            Label::from_static_parts("reason", reason),
        ];
        self.recorder
            .register_counter(&Key::from_parts(SYNC_FAILURES, labels), &METADATA)
            .increment(1);
    }
}

/// Descriptions and units of every budget metric.
fn describe(r: &dyn Recorder) {
    let counter = |name: &'static str, text: &'static str| {
        r.describe_counter(
            KeyName::from_const_str(name),
            Some(Unit::Count),
            text.into(),
        )
    };
    let gauge = |name: &'static str, text: &'static str| {
        r.describe_gauge(
            KeyName::from_const_str(name),
            Some(Unit::Count),
            text.into(),
        )
    };
    let histogram = |name: &'static str, text: &'static str| {
        r.describe_histogram(
            KeyName::from_const_str(name),
            Some(Unit::Seconds),
            text.into(),
        )
    };
    counter(SPEND, "Micros charged to campaigns on this node");
    gauge(LEASE_HELD, "Micros held in leases on this node");
    gauge(
        UNREPORTED,
        "Micros charged on this node not yet acknowledged by the store",
    );
    histogram(SYNC_SECONDS, "Budget sync round-trip time");
    counter(SYNC_FAILURES, "Failed budget store calls");
    gauge(SYNC_CAMPAIGNS, "Campaigns in the last sync report");
    counter(BIDS_DROPPED, "Bids dropped for budget reasons");
    counter(
        RECONCILE_CREDITED,
        "Micros credited back to budgets for wins never rendered",
    );
    counter(
        RECONCILE_BILLED_BEYOND,
        "Micros billed beyond what was charged (reported, not debited)",
    );
    counter(
        RECONCILE_LATE,
        "Reconciliation items that arrived after their bucket was settled",
    );
    gauge(
        RECONCILE_UNREPORTED,
        "Reconciliation micros recorded on this node, not yet in the store",
    );
    histogram(RECONCILE_SECONDS, "Budget reconcile round-trip time");
    counter(
        SESSIONS_RECLAIMED,
        "Dead sessions this node found and reaped (leases returned)",
    );
    counter(
        LEASE_RECLAIMED,
        "Lease micros this node returned to campaigns from dead sessions",
    );
    counter(
        SESSION_RESTARTS,
        "Times this node found its session declared dead and started a fresh one",
    );
    gauge(
        STORE_IDENTITY_LOST,
        "1 while the budget store lost its data and this node spends nothing",
    );
}

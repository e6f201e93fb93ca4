//! Metric names and the helpers that record them (`metrics` macros; the exchange installs the
//! recorder). Per-campaign labels are added only when `per_campaign_metrics` is on.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, Unit};

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

/// Why a bid was dropped for budget reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The campaign's lease could not cover the price.
    Insufficient,
    /// The bid won but the charge failed (another auction emptied the lease first).
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

/// Counts a dropped bid. `per_campaign` adds the `cid` label (use the config's setting).
pub fn bid_dropped(dsp: &str, cid: Option<&str>, reason: DropReason, per_campaign: bool) {
    match (per_campaign, cid) {
        (true, Some(cid)) => counter!(
            BIDS_DROPPED,
            "dsp" => dsp.to_owned(),
            "cid" => cid.to_owned(),
            "reason" => reason.as_str()
        )
        .increment(1),
        _ => counter!(BIDS_DROPPED, "dsp" => dsp.to_owned(), "reason" => reason.as_str())
            .increment(1),
    }
}

/// Registers descriptions and units for every budget metric (call once after installing the
/// recorder).
pub fn describe() {
    describe_counter!(
        SPEND,
        Unit::Count,
        "Micros charged to campaigns on this node"
    );
    describe_gauge!(
        LEASE_HELD,
        Unit::Count,
        "Micros held in leases on this node"
    );
    describe_gauge!(
        UNREPORTED,
        Unit::Count,
        "Micros charged on this node not yet acknowledged by the store"
    );
    describe_histogram!(SYNC_SECONDS, Unit::Seconds, "Budget sync round-trip time");
    describe_counter!(SYNC_FAILURES, Unit::Count, "Failed budget store calls");
    describe_gauge!(
        SYNC_CAMPAIGNS,
        Unit::Count,
        "Campaigns in the last sync report"
    );
    describe_counter!(BIDS_DROPPED, Unit::Count, "Bids dropped for budget reasons");
    describe_counter!(
        RECONCILE_CREDITED,
        Unit::Count,
        "Micros credited back to budgets for wins never rendered"
    );
    describe_counter!(
        RECONCILE_BILLED_BEYOND,
        Unit::Count,
        "Micros billed beyond what was charged (reported, not debited)"
    );
    describe_counter!(
        RECONCILE_LATE,
        Unit::Count,
        "Reconciliation items that arrived after their bucket was settled"
    );
    describe_gauge!(
        RECONCILE_UNREPORTED,
        Unit::Count,
        "Reconciliation micros recorded on this node, not yet in the store"
    );
    describe_histogram!(
        RECONCILE_SECONDS,
        Unit::Seconds,
        "Budget reconcile round-trip time"
    );
}

//! Reconciliation in the store: the numbered batches of counts a node sends, the per-bucket
//! settlement rule both stores apply (Redis in `lua/recon_*.lua`, memory in Rust) and the
//! campaign totals they keep.
//!
//! Counts are kept per campaign and per auction-time bucket, so a bucket's `charged` and
//! `billed` refer to the same auctions whichever nodes ran the auction and served the
//! impression. A bucket is settled once, after `settle_after_ms`: `charged - billed` (if
//! positive) is credited back to the campaign's `spent`, never below zero; `billed - charged`
//! (if positive) is only reported. Settling removes the bucket from the open set in the same
//! atomic step that credits it, so two nodes settling at once, or one settling twice, credit once.
//!
//! A node's counts are deltas, sent in batches numbered 1, 2, 3... per session. The store
//! remembers the last number it applied per session and skips any batch at or below it, so a
//! batch resent after a lost reply counts once. A batch also names the batch sent just before
//! it in the same call (`prev`); it is held back unless that one was applied, so a failure in
//! the middle of a call never lets a later batch overtake an earlier one.

use crate::key::CampaignKey;
use serde::Serialize;

/// One campaign's counts for one auction-time bucket since the node's previous batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconItem {
    /// The campaign.
    pub key: CampaignKey,
    /// Start of the auction-time bucket (a multiple of the bucket size), ms since the epoch.
    pub bucket_start_ms: u64,
    /// Micros charged for wins of auctions in this bucket.
    pub charged: u64,
    /// Micros billed for impressions of auctions in this bucket.
    pub billed: u64,
}

/// A numbered batch of a session's counts (deltas). A session numbers its batches 1, 2, 3...;
/// the store applies a batch only if its number is above the last it applied for the session
/// (a resent batch counts once) and, when another batch precedes it in the same call, only if
/// that one is applied too (a failure mid-call never lets a later batch overtake it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconBatch {
    /// 1 for a session's first batch, then one more per batch.
    pub seq: u64,
    /// The counts.
    pub items: Vec<ReconItem>,
}

/// The settings of one reconcile call. Every node of a fleet must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconArgs {
    /// The caller's wall clock, ms since the epoch.
    pub now_ms: u64,
    /// Bucket size; the store refuses batches of a size other than the one it has seen first.
    pub bucket_ms: u64,
    /// A bucket is settled this long after it ends.
    pub settle_after_ms: u64,
    /// How long a settled bucket (and a session's batch number) is remembered.
    pub retain_ms: u64,
    /// Buckets settled by this call, at most (0: report only, settle nothing).
    pub max_settle: usize,
}

impl ReconArgs {
    /// Refuses settings a store cannot work with (zero sizes and periods).
    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        if self.bucket_ms == 0 || self.retain_ms == 0 {
            return Err(crate::Error::Config(
                "reconcile bucket and retention must be > 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// Buckets starting at or before this are due: they ended `settle_after_ms` ago or more.
    /// `None` while the clock is too early for any bucket to be due.
    pub(crate) fn settle_cutoff(&self) -> Option<u64> {
        self.now_ms
            .checked_sub(self.bucket_ms)?
            .checked_sub(self.settle_after_ms)
    }

    /// A bucket the store has no record of that is this old was settled and forgotten (or
    /// is older than anything worth settling): its counts are late.
    pub(crate) fn forgotten(&self, bucket_start_ms: u64) -> bool {
        bucket_start_ms
            .saturating_add(self.bucket_ms)
            .saturating_add(self.settle_after_ms)
            .saturating_add(self.retain_ms)
            <= self.now_ms
    }
}

/// What the store did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOutcome {
    /// Applied now.
    Applied,
    /// Applied earlier (its reply was lost); skipped.
    Duplicate,
    /// The batch before it in the same call was not applied; skipped, to be sent again.
    Blocked,
}

impl BatchOutcome {
    /// Whether the store has the batch (now or from before): the node may forget it.
    pub fn is_stored(self) -> bool {
        matches!(self, BatchOutcome::Applied | BatchOutcome::Duplicate)
    }
}

/// The store's answer for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchReply {
    /// Applied, duplicate or blocked.
    pub outcome: BatchOutcome,
    /// Items for campaigns the store does not have (dropped: nothing was charged to them).
    pub absent: usize,
    /// Items for buckets already settled: counted as late, not settled again.
    pub late: usize,
}

/// What the settlement part of a call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SettleReply {
    /// Buckets settled.
    pub settled: usize,
    /// Micros credited back to `spent`.
    pub credited: u64,
    /// Micros that were due but not credited because `spent` was lower.
    pub uncredited: u64,
    /// Micros billed beyond what was charged (reported, not debited).
    pub billed_beyond_charged: u64,
    /// More buckets were due than `max_settle`: the next call settles them.
    pub more: bool,
}

/// The store's answer to a reconcile call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconReply {
    /// Per batch, in order.
    pub batches: Vec<BatchReply>,
    /// The settlement.
    pub settle: SettleReply,
}

/// A campaign's reconciliation totals in the store. `charged`/`billed` count every on-time
/// report; the `settled_*` part of them belongs to settled buckets, the rest is pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconTotals {
    /// Micros charged for wins, as reported (all buckets).
    pub charged: u64,
    /// Micros billed for rendered impressions, as reported (all buckets).
    pub billed: u64,
    /// The part of `charged` in settled buckets.
    pub settled_charged: u64,
    /// The part of `billed` in settled buckets.
    pub settled_billed: u64,
    /// Micros credited back to `spent` (wins never rendered).
    pub credited: u64,
    /// Micros due for credit that `spent` was too low to take.
    pub uncredited: u64,
    /// Micros billed beyond what was charged, over settled buckets (reported, never debited).
    pub billed_beyond_charged: u64,
    /// Buckets waiting for settlement.
    pub open_buckets: u64,
    /// Buckets settled.
    pub settled_buckets: u64,
    /// Micros charged reported after their bucket was settled (not settled again).
    pub late_charged: u64,
    /// Micros billed reported after their bucket was settled (not settled again).
    pub late_billed: u64,
}

impl ReconTotals {
    /// Charged in buckets not settled yet: what unrendered wins may still hold.
    pub fn pending_charged(&self) -> u64 {
        self.charged.saturating_sub(self.settled_charged)
    }

    /// Billed in buckets not settled yet.
    pub fn pending_billed(&self) -> u64 {
        self.billed.saturating_sub(self.settled_billed)
    }
}

/// The error for a batch whose bucket size is not the store's.
pub(crate) fn bucket_mismatch(mine: u64, store: u64) -> crate::Error {
    crate::Error::Config(format!(
        "reconcile_bucket_ms is {mine} here but {store} in the store; every node must use the same"
    ))
}

/// Whether a session's batch `seq` applies, given the last number the store applied for the
/// session and the batch sent just before it in the same call (`prev`, 0 for the first).
/// `recon_report.lua` is a copy; keep the two in step.
pub(crate) fn gate(last: Option<u64>, seq: u64, prev: u64) -> BatchOutcome {
    if last.is_some_and(|last| seq <= last) {
        return BatchOutcome::Duplicate;
    }
    if prev > 0 && last.is_none_or(|last| last < prev) {
        return BatchOutcome::Blocked;
    }
    BatchOutcome::Applied
}

/// Settles one bucket into its campaign: credits `charged - billed` (if positive) to `spent`,
/// never below zero, and reports `billed - charged` (if positive). `recon_settle.lua` is a
/// copy; keep the two in step.
pub(crate) fn settle_bucket(
    spent: &mut u64,
    totals: &mut ReconTotals,
    charged: u64,
    billed: u64,
) -> SettleReply {
    let due = charged.saturating_sub(billed);
    let over = billed.saturating_sub(charged);
    let credited = due.min(*spent);
    *spent -= credited;
    totals.credited = totals.credited.saturating_add(credited);
    totals.uncredited = totals.uncredited.saturating_add(due - credited);
    totals.billed_beyond_charged = totals.billed_beyond_charged.saturating_add(over);
    totals.settled_charged = totals.settled_charged.saturating_add(charged);
    totals.settled_billed = totals.settled_billed.saturating_add(billed);
    totals.open_buckets = totals.open_buckets.saturating_sub(1);
    totals.settled_buckets = totals.settled_buckets.saturating_add(1);
    SettleReply {
        settled: 1,
        credited,
        uncredited: due - credited,
        billed_beyond_charged: over,
        more: false,
    }
}

impl SettleReply {
    pub(crate) fn add(&mut self, other: SettleReply) {
        self.settled += other.settled;
        self.credited = self.credited.saturating_add(other.credited);
        self.uncredited = self.uncredited.saturating_add(other.uncredited);
        self.billed_beyond_charged = self
            .billed_beyond_charged
            .saturating_add(other.billed_beyond_charged);
        self.more |= other.more;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_applies_once_and_in_order() {
        assert_eq!(gate(None, 1, 0), BatchOutcome::Applied);
        assert_eq!(gate(Some(1), 1, 0), BatchOutcome::Duplicate);
        assert_eq!(gate(Some(1), 2, 0), BatchOutcome::Applied);
        // A gap (the store lost batches to an older snapshot) does not stop a session.
        assert_eq!(gate(Some(1), 5, 0), BatchOutcome::Applied);
        // The batch before it in the call was applied (or had been).
        assert_eq!(gate(Some(4), 5, 4), BatchOutcome::Applied);
        assert_eq!(gate(Some(5), 5, 4), BatchOutcome::Duplicate);
        // It was not: wait for it.
        assert_eq!(gate(Some(3), 5, 4), BatchOutcome::Blocked);
        assert_eq!(gate(None, 5, 4), BatchOutcome::Blocked);
        assert!(BatchOutcome::Duplicate.is_stored());
        assert!(!BatchOutcome::Blocked.is_stored());
    }

    #[test]
    fn settling_credits_unbilled_and_reports_overbilled() {
        let mut totals = ReconTotals {
            charged: 5_000,
            billed: 3_000,
            open_buckets: 1,
            ..ReconTotals::default()
        };
        let mut spent = 10_000;
        let r = settle_bucket(&mut spent, &mut totals, 5_000, 3_000);
        assert_eq!(
            (r.credited, r.uncredited, r.billed_beyond_charged),
            (2_000, 0, 0)
        );
        assert_eq!(spent, 8_000);
        assert_eq!((totals.pending_charged(), totals.pending_billed()), (0, 0));
        assert_eq!((totals.open_buckets, totals.settled_buckets), (0, 1));

        let r = settle_bucket(&mut spent, &mut totals, 1_000, 4_000);
        assert_eq!((r.credited, r.billed_beyond_charged), (0, 3_000));
        assert_eq!(spent, 8_000, "over-billing is reported, never debited");

        let mut low = 500;
        let r = settle_bucket(&mut low, &mut totals, 2_000, 0);
        assert_eq!((r.credited, r.uncredited), (500, 1_500));
        assert_eq!(low, 0, "spent never goes below zero");
    }

    #[test]
    fn cutoffs_never_underflow() {
        let args = ReconArgs {
            now_ms: 1_000,
            bucket_ms: 60_000,
            settle_after_ms: 500,
            retain_ms: 10,
            max_settle: 10,
        };
        assert_eq!(args.settle_cutoff(), None);
        assert!(!args.forgotten(0));
        let later = ReconArgs {
            now_ms: 200_000,
            ..args
        };
        assert_eq!(later.settle_cutoff(), Some(139_500));
        assert!(later.forgotten(120_000));
        assert!(!later.forgotten(180_000));
        assert!(!later.forgotten(u64::MAX));
    }
}

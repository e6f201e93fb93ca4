//! This node's reconciliation counts: micros charged for wins and billed for impressions, per
//! campaign and auction-time bucket, added on the request path and handed to the store in
//! numbered batches by the reconcile round.
//!
//! Recording hashes `(dsp, cid, bucket)` and adds to an atomic under one shard's read lock of a
//! `DashMap` (a write lock and an allocation only the first time a campaign's bucket shows up
//! between two rounds): no IO, nothing held across `.await`. The round swaps each slot's counts
//! to zero and sends them as deltas. A batch stays in the outbox, resent unchanged, until the
//! store confirms it, and no new batch is cut while one waits: the store applies each batch
//! number once, so no micro is counted twice or lost, however many rounds fail.

use crate::key::CampaignKey;
use crate::store::recon::{
    BatchOutcome, BatchReply, ReconBatch, ReconItem, ReconTotals, SettleReply,
};
use dashmap::DashMap;
use serde::Serialize;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Items per batch: each is one script call, which bounds how long it keeps Redis busy.
const ITEMS_PER_BATCH: usize = 256;

/// A campaign's reconciliation: what the store has settled and holds open, plus what this node
/// recorded that the store has not confirmed yet. All amounts are micros.
///
/// On-time reports satisfy `charged = settled + pending` (likewise `billed`), and over settled
/// buckets `settled charged - settled billed = credited + uncredited - billed_beyond_charged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// The campaign.
    pub key: CampaignKey,
    /// Charged for wins, as reported by every node (all buckets).
    pub charged: u64,
    /// Billed for rendered impressions, as reported by every node (all buckets).
    pub billed: u64,
    /// Given back to the budget (`spent` lowered) for wins never rendered.
    pub credited: u64,
    /// Charged in buckets not settled yet: unrendered wins among them still hold budget.
    pub pending_charged: u64,
    /// Billed in buckets not settled yet.
    pub pending_billed: u64,
    /// Buckets waiting for settlement.
    pub open_buckets: u64,
    /// Buckets settled.
    pub settled_buckets: u64,
    /// Billed beyond what was charged in settled buckets: reported, never debited.
    pub billed_beyond_charged: u64,
    /// Due for credit but not given back because `spent` was lower (it never goes below 0).
    pub uncredited: u64,
    /// Charged, reported after the bucket was settled: not settled again.
    pub late_charged: u64,
    /// Billed, reported after the bucket was settled: not settled again.
    pub late_billed: u64,
    /// Charged on this node, not yet confirmed by the store.
    pub unreported_charged: u64,
    /// Billed on this node, not yet confirmed by the store.
    pub unreported_billed: u64,
}

impl Reconciliation {
    pub(crate) fn new(key: CampaignKey, t: &ReconTotals, unreported: (u64, u64)) -> Self {
        Reconciliation {
            key,
            charged: t.charged,
            billed: t.billed,
            credited: t.credited,
            pending_charged: t.pending_charged(),
            pending_billed: t.pending_billed(),
            open_buckets: t.open_buckets,
            settled_buckets: t.settled_buckets,
            billed_beyond_charged: t.billed_beyond_charged,
            uncredited: t.uncredited,
            late_charged: t.late_charged,
            late_billed: t.late_billed,
            unreported_charged: unreported.0,
            unreported_billed: unreported.1,
        }
    }
}

/// What one reconcile round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Batches sent.
    pub batches: usize,
    /// Items (campaign buckets) in them.
    pub items: usize,
    /// Batches the store applied now.
    pub applied: usize,
    /// Batches the store already had (an earlier reply was lost).
    pub duplicates: usize,
    /// Batches held back because an earlier one in the call failed; sent again next round.
    pub blocked: usize,
    /// Items for campaigns the store does not have (dropped: nothing was charged to them).
    pub absent: usize,
    /// Items for buckets already settled (counted as late).
    pub late: usize,
    /// What the settlement did.
    pub settle: SettleReply,
}

impl ReconcileReport {
    pub(crate) fn new(sent: &[ReconBatch], replies: &[BatchReply], settle: SettleReply) -> Self {
        let mut report = ReconcileReport {
            batches: sent.len(),
            items: sent.iter().map(|b| b.items.len()).sum(),
            settle,
            ..ReconcileReport::default()
        };
        for reply in replies {
            match reply.outcome {
                BatchOutcome::Applied => report.applied += 1,
                BatchOutcome::Duplicate => report.duplicates += 1,
                BatchOutcome::Blocked => report.blocked += 1,
            }
            report.absent += reply.absent;
            report.late += reply.late;
        }
        report
    }

    /// Adds another round's numbers.
    pub(crate) fn add(&mut self, other: &ReconcileReport) {
        self.batches += other.batches;
        self.items += other.items;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.blocked += other.blocked;
        self.absent += other.absent;
        self.late += other.late;
        self.settle.add(other.settle);
    }
}

/// Which count a record adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A win charged to the campaign's budget.
    Charged,
    /// A rendered impression billed.
    Billed,
}

/// A campaign's bucket, owned (the map's key).
struct Slot {
    key: CampaignKey,
    bucket_start_ms: u64,
}

/// A slot as the request path names it, borrowed or owned: lets the map be probed with
/// `(&str, &str, u64)` without building a `CampaignKey`.
trait SlotRef {
    fn parts(&self) -> (&str, &str, u64);
}

impl SlotRef for Slot {
    fn parts(&self) -> (&str, &str, u64) {
        (&self.key.dsp, &self.key.cid, self.bucket_start_ms)
    }
}

impl SlotRef for (&str, &str, u64) {
    fn parts(&self) -> (&str, &str, u64) {
        *self
    }
}

// Owned and borrowed forms hash and compare through the same `parts`, as `Borrow` requires.
impl Hash for dyn SlotRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn SlotRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn SlotRef + '_ {}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Slot {}

impl<'a> Borrow<dyn SlotRef + 'a> for Slot {
    fn borrow(&self) -> &(dyn SlotRef + 'a) {
        self
    }
}

/// Micros recorded in a slot since the last cut.
#[derive(Default)]
struct Counts {
    charged: AtomicU64,
    billed: AtomicU64,
}

impl Counts {
    #[inline]
    fn add(&self, side: Side, micros: u64) {
        // Relaxed: each count is a self-contained sum; the cut reads it with a swap (an RMW,
        // which sees every earlier add) and the map's shard lock orders the rest.
        match side {
            Side::Charged => self.charged.fetch_add(micros, Ordering::Relaxed),
            Side::Billed => self.billed.fetch_add(micros, Ordering::Relaxed),
        };
    }

    fn is_zero(&self) -> bool {
        self.charged.load(Ordering::Relaxed) == 0 && self.billed.load(Ordering::Relaxed) == 0
    }
}

/// Batches cut but not yet confirmed by the store.
#[derive(Default)]
struct Outbox {
    batches: Vec<ReconBatch>,
    last_seq: u64,
}

/// The node's counts and its outbox.
pub(crate) struct Recorder {
    bucket_ms: u64,
    live: DashMap<Slot, Counts, foldhash::fast::RandomState>,
    outbox: Mutex<Outbox>,
}

impl Recorder {
    /// A recorder with `bucket_ms` buckets (> 0: the config is validated before this).
    pub(crate) fn new(bucket_ms: u64) -> Self {
        Recorder {
            bucket_ms: bucket_ms.max(1),
            live: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            outbox: Mutex::new(Outbox::default()),
        }
    }

    /// Adds `micros` to the campaign's bucket of `auction_ts_ms`. Free impressions and bids
    /// without a campaign id have nothing to reconcile.
    #[inline]
    pub(crate) fn record(&self, side: Side, dsp: &str, cid: &str, auction_ts_ms: u64, micros: u64) {
        if micros == 0 || cid.is_empty() {
            return;
        }
        let bucket_start_ms = auction_ts_ms - auction_ts_ms % self.bucket_ms;
        let probe = (dsp, cid, bucket_start_ms);
        if let Some(counts) = self.live.get(&probe as &dyn SlotRef) {
            counts.add(side, micros);
            return;
        }
        self.record_new(side, dsp, cid, bucket_start_ms, micros);
    }

    #[cold]
    fn record_new(&self, side: Side, dsp: &str, cid: &str, bucket_start_ms: u64, micros: u64) {
        let slot = Slot {
            key: CampaignKey::new(dsp, cid),
            bucket_start_ms,
        };
        // The entry guard holds the shard's write lock while adding, so a concurrent cut
        // cannot remove the slot between the insert and the add.
        self.live.entry(slot).or_default().add(side, micros);
    }

    /// Drops every count and unconfirmed batch (the store they were meant for lost its
    /// data). Batch numbers keep rising.
    pub(crate) fn clear(&self) {
        let mut outbox = lock(&self.outbox);
        outbox.batches.clear();
        self.live.clear();
    }

    /// The batches a round sends: those still waiting for the store's confirmation, or when
    /// none wait, everything recorded since the last cut as new batches.
    pub(crate) fn outgoing(&self) -> Vec<ReconBatch> {
        let mut outbox = lock(&self.outbox);
        if outbox.batches.is_empty() {
            let items = self.cut();
            for chunk in items.chunks(ITEMS_PER_BATCH) {
                outbox.last_seq += 1;
                let seq = outbox.last_seq;
                outbox.batches.push(ReconBatch {
                    seq,
                    items: chunk.to_vec(),
                });
            }
        }
        outbox.batches.clone()
    }

    /// Takes every slot's counts as items and drops the slots left at zero.
    fn cut(&self) -> Vec<ReconItem> {
        let mut items = Vec::new();
        for slot in self.live.iter() {
            let charged = slot.charged.swap(0, Ordering::Relaxed);
            let billed = slot.billed.swap(0, Ordering::Relaxed);
            if charged > 0 || billed > 0 {
                items.push(ReconItem {
                    key: slot.key().key.clone(),
                    bucket_start_ms: slot.key().bucket_start_ms,
                    charged,
                    billed,
                });
            }
        }
        // Under each shard's write lock: a slot that received an add since the swap keeps it.
        self.live.retain(|_, counts| !counts.is_zero());
        items
    }

    /// Forgets the batches the store has (applied now or before); keeps the others for the
    /// next round.
    pub(crate) fn confirm(&self, sent: &[ReconBatch], replies: &[BatchReply]) {
        let stored: Vec<u64> = sent
            .iter()
            .zip(replies)
            .filter(|(_, reply)| reply.outcome.is_stored())
            .map(|(batch, _)| batch.seq)
            .collect();
        lock(&self.outbox)
            .batches
            .retain(|batch| !stored.contains(&batch.seq));
    }

    /// Micros charged and billed here that the store has not confirmed, for one campaign or
    /// for all. Walks every slot: for the admin API and metrics, not the request path.
    pub(crate) fn unreported(&self, only: Option<&CampaignKey>) -> (u64, u64) {
        let mut charged = 0u64;
        let mut billed = 0u64;
        let wanted = |key: &CampaignKey| only.is_none_or(|k| k == key);
        for batch in &lock(&self.outbox).batches {
            for item in batch.items.iter().filter(|i| wanted(&i.key)) {
                charged = charged.saturating_add(item.charged);
                billed = billed.saturating_add(item.billed);
            }
        }
        for slot in self.live.iter().filter(|s| wanted(&s.key().key)) {
            charged = charged.saturating_add(slot.charged.load(Ordering::Relaxed));
            billed = billed.saturating_add(slot.billed.load(Ordering::Relaxed));
        }
        (charged, billed)
    }

    /// Nothing recorded waits to be sent or confirmed.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&self.outbox).batches.is_empty() && self.live.iter().all(|slot| slot.is_zero())
    }
}

fn lock(m: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    // The outbox is a list replaced or filtered whole; a panic elsewhere cannot leave it
    // half-updated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wall-clock milliseconds since the epoch (0 for a clock set before 1970), the clock auction
/// timestamps use.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn reply(outcome: BatchOutcome) -> BatchReply {
        BatchReply {
            outcome,
            absent: 0,
            late: 0,
        }
    }

    #[test]
    fn records_land_in_the_auction_bucket() {
        let r = Recorder::new(60_000);
        r.record(Side::Charged, "d", "c", 60_000, 700);
        r.record(Side::Charged, "d", "c", 119_999, 300);
        r.record(Side::Billed, "d", "c", 61_000, 700);
        r.record(Side::Charged, "d", "c", 120_000, 5);
        r.record(Side::Charged, "d", "", 60_000, 5);
        r.record(Side::Billed, "d", "c", 60_000, 0);
        let mut items = r.outgoing().remove(0).items;
        items.sort_by_key(|i| i.bucket_start_ms);
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].bucket_start_ms, items[0].charged, items[0].billed),
            (60_000, 1_000, 700)
        );
        assert_eq!((items[1].bucket_start_ms, items[1].charged), (120_000, 5));
    }

    #[test]
    fn a_batch_is_resent_unchanged_until_confirmed() {
        let r = Recorder::new(1_000);
        r.record(Side::Charged, "d", "c", 5, 10);
        let first = r.outgoing();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].seq, 1);
        // More counts while the batch waits: they wait for the next cut.
        r.record(Side::Charged, "d", "c", 5, 20);
        assert_eq!(r.outgoing(), first);
        assert_eq!(r.unreported(None), (30, 0));
        r.confirm(&first, &[reply(BatchOutcome::Blocked)]);
        assert_eq!(r.outgoing(), first);
        r.confirm(&first, &[reply(BatchOutcome::Duplicate)]);
        let second = r.outgoing();
        assert_eq!(second[0].seq, 2);
        assert_eq!(second[0].items[0].charged, 20);
        r.confirm(&second, &[reply(BatchOutcome::Applied)]);
        assert!(r.is_idle());
        assert!(r.outgoing().is_empty(), "nothing to send");
        assert_eq!(r.unreported(None), (0, 0));
    }

    #[test]
    fn large_cuts_are_split_into_numbered_batches() {
        let r = Recorder::new(1);
        for ts in 0..(ITEMS_PER_BATCH as u64 * 2 + 1) {
            r.record(Side::Billed, "d", "c", ts, 1);
        }
        let batches = r.outgoing();
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(batches.iter().map(|b| b.items.len()).sum::<usize>(), 513);
        let other = CampaignKey::new("x", "y");
        assert_eq!(r.unreported(Some(&other)), (0, 0));
        assert_eq!(r.unreported(Some(&CampaignKey::new("d", "c"))), (0, 513));
    }

    #[test]
    fn concurrent_records_and_cuts_lose_nothing() {
        let r = Arc::new(Recorder::new(10));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let side = if i % 3 == 0 {
                            Side::Billed
                        } else {
                            Side::Charged
                        };
                        r.record(side, "d", &format!("c{}", i % 5), (t * 7 + i) % 50, 3);
                    }
                })
            })
            .collect();
        let mut total = 0u64;
        let mut take = |r: &Recorder| {
            let batches = r.outgoing();
            for b in &batches {
                total += b.items.iter().map(|i| i.charged + i.billed).sum::<u64>();
            }
            let ok: Vec<_> = batches
                .iter()
                .map(|_| reply(BatchOutcome::Applied))
                .collect();
            r.confirm(&batches, &ok);
        };
        while threads.iter().any(|t| !t.is_finished()) {
            take(&r);
        }
        for t in threads {
            t.join().unwrap();
        }
        take(&r);
        assert!(r.is_idle());
        assert_eq!(total, 4 * 20_000 * 3);
    }
}

//! The request path: the campaign index a bid's `(dsp, cid)` is found in, and the charge
//! against its lease.
//!
//! The index is an immutable map swapped whole when campaigns are added (rare), so a lookup is
//! a thread-local guard plus two hash probes on `&str`: no lock, no allocation, no shared write.
//! Charges are one CAS on the campaign's lease (see `campaign`).

use crate::budgets::Budgets;
use crate::campaign::{Campaign, CampaignHandle};
use crate::key::CampaignKey;
use crate::metrics::DropReason;
use arc_swap::Guard;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Size of the lock-free filter of recently queued unknown campaigns.
pub(crate) const RECENT_UNKNOWN_SLOTS: usize = 4096;

/// Campaigns by DSP then `cid`, plus a flat list for the sync loop.
#[derive(Default)]
pub(crate) struct Index {
    by_dsp: FastMap<Box<str>, FastMap<Box<str>, CampaignHandle>>,
    pub(crate) all: Vec<CampaignHandle>,
}

impl Index {
    #[inline]
    pub(crate) fn get(&self, dsp: &str, cid: &str) -> Option<&CampaignHandle> {
        self.by_dsp.get(dsp)?.get(cid)
    }
}

/// What a bid's `(dsp, cid)` resolved to. Only `Found` has a budget; for the other two the
/// caller applies [`Budgets::unknown_policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<C> {
    /// A budgeted campaign: its lease decides.
    Found(C),
    /// The bid carries no `cid` (or an empty one).
    NoCid,
    /// No campaign by that name on this node; it was queued for discovery.
    Unknown,
}

impl<C> Lookup<C> {
    /// The campaign, if found.
    pub fn campaign(&self) -> Option<&C> {
        match self {
            Lookup::Found(c) => Some(c),
            Lookup::NoCid | Lookup::Unknown => None,
        }
    }
}

/// Unknown campaigns seen on the request path, waiting for the next sync to ask the store.
#[derive(Default)]
pub(crate) struct Pending {
    /// Hashes of `(dsp, cid)` already queued or asked for since the last full round.
    seen: HashSet<u64>,
    queue: Vec<CampaignKey>,
}

/// A borrowed view of the index for a burst of lookups (one auction): lookups through it hand
/// out `&Campaign` without touching any reference count. Keep it short-lived and do not hold
/// it across `.await`.
pub struct BudgetView<'a> {
    budgets: &'a Budgets,
    index: Guard<Arc<Index>>,
}

impl BudgetView<'_> {
    /// Finds a bid's campaign; see [`Budgets::lookup`].
    #[inline]
    pub fn lookup(&self, dsp: &str, cid: Option<&str>) -> Lookup<&Campaign> {
        match self.budgets.resolve(&self.index, dsp, cid) {
            Lookup::Found(c) => Lookup::Found(&**c),
            Lookup::NoCid => Lookup::NoCid,
            Lookup::Unknown => Lookup::Unknown,
        }
    }
}

impl Budgets {
    /// Finds a bid's campaign and returns an owned handle (one reference-count increment; use
    /// [`Budgets::view`] to avoid even that). An unknown campaign is queued for discovery by
    /// the next sync; no store call happens here.
    #[inline]
    pub fn lookup(&self, dsp: &str, cid: Option<&str>) -> Lookup<CampaignHandle> {
        let index = self.index.load();
        match self.resolve(&index, dsp, cid) {
            Lookup::Found(c) => Lookup::Found(Arc::clone(c)),
            Lookup::NoCid => Lookup::NoCid,
            Lookup::Unknown => Lookup::Unknown,
        }
    }

    /// A view for many lookups in a row without reference counting (see [`BudgetView`]).
    #[inline]
    pub fn view(&self) -> BudgetView<'_> {
        BudgetView {
            budgets: self,
            index: self.index.load(),
        }
    }

    #[inline]
    fn resolve<'i>(
        &self,
        index: &'i Index,
        dsp: &str,
        cid: Option<&str>,
    ) -> Lookup<&'i CampaignHandle> {
        let Some(cid) = cid.filter(|c| !c.is_empty()) else {
            return Lookup::NoCid;
        };
        match index.get(dsp, cid) {
            Some(c) => Lookup::Found(c),
            None => {
                self.queue_unknown(dsp, cid);
                Lookup::Unknown
            }
        }
    }

    #[cold]
    fn queue_unknown(&self, dsp: &str, cid: &str) {
        // Bids of unbudgeted campaigns may be most of the traffic: a cid already queued since
        // the last full round costs a hash and one shared read, no lock and no write.
        let hash = self.pair_hasher.hash_one((dsp, cid)) | 1;
        let slot = &self.recent_unknown[(hash >> 40) as usize % RECENT_UNKNOWN_SLOTS];
        if slot.load(Ordering::Relaxed) == hash {
            return;
        }
        slot.store(hash, Ordering::Relaxed);
        // try_lock: if another thread is queueing right now, the full round's campaign list
        // finds the campaign anyway.
        let Ok(mut pending) = self.pending.try_lock() else {
            return;
        };
        if pending.queue.len() < self.cfg.max_probes_per_round && pending.seen.insert(hash) {
            pending.queue.push(CampaignKey::new(dsp, cid));
        }
    }

    /// Counts a bid dropped for budget reasons (labels per the config's `per_campaign_metrics`).
    /// [`Budgets::can_cover`] and [`Budgets::try_charge`] count their own drops; this is for
    /// the others ([`DropReason::NoCid`], [`DropReason::UnknownCampaign`]).
    pub fn record_drop(&self, dsp: &str, cid: Option<&str>, reason: DropReason) {
        self.metrics.bid_dropped(dsp, cid, reason);
    }

    /// Whether `campaign`'s lease can pay `micros` now ([`Campaign::can_cover`]); a `false`
    /// drops the bid and is counted as [`DropReason::Insufficient`]. For an auction ledger's
    /// eligibility check, which keeps a bid it refuses out of the auction.
    #[inline]
    pub fn can_cover(&self, campaign: &Campaign, micros: u64) -> bool {
        if campaign.can_cover(micros) {
            return true;
        }
        self.count_drop(campaign, DropReason::Insufficient);
        false
    }

    /// Charges `micros` to `campaign`'s lease ([`Campaign::try_charge`]); a `false` means the
    /// winning bid is dropped after all and is counted as [`DropReason::ChargeRace`]: its lease
    /// covered it at [`Budgets::can_cover`] and another auction emptied it since.
    #[inline]
    pub fn try_charge(&self, campaign: &Campaign, micros: u64) -> bool {
        if campaign.try_charge(micros) {
            return true;
        }
        self.count_drop(campaign, DropReason::ChargeRace);
        false
    }

    #[cold]
    fn count_drop(&self, campaign: &Campaign, reason: DropReason) {
        let key = campaign.key();
        self.metrics.bid_dropped(&key.dsp, Some(&key.cid), reason);
    }

    /// Adds campaigns to the index (publishing a new snapshot if any is new) and returns the
    /// handles for `keys`, in order.
    pub(crate) fn insert(&self, keys: &[CampaignKey]) -> Vec<CampaignHandle> {
        let _writer = self
            .index_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.index.load_full();
        let mut next: Option<Index> = None;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let existing = match &next {
                Some(n) => n.get(&key.dsp, &key.cid),
                None => current.get(&key.dsp, &key.cid),
            };
            if let Some(c) = existing {
                out.push(Arc::clone(c));
                continue;
            }
            let n = next.get_or_insert_with(|| Index {
                by_dsp: current.by_dsp.clone(),
                all: current.all.clone(),
            });
            let c = Arc::new(Campaign::new(key.clone()));
            n.by_dsp
                .entry(Box::from(&*key.dsp))
                .or_default()
                .insert(Box::from(&*key.cid), Arc::clone(&c));
            n.all.push(Arc::clone(&c));
            out.push(c);
        }
        if let Some(n) = next {
            self.index.store(Arc::new(n));
        }
        out
    }

    pub(crate) fn take_probes(&self, full: bool) -> Vec<CampaignKey> {
        let mut pending = crate::budgets::lock(&self.pending);
        let probes = std::mem::take(&mut pending.queue);
        if full {
            // Campaigns created since are also found by the full round's campaign list, so
            // forgetting what was asked costs at most one repeated probe per cid.
            pending.seen.clear();
            for slot in self.recent_unknown.iter() {
                slot.store(0, Ordering::Relaxed);
            }
        }
        probes
    }
}

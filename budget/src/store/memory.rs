//! In-process store: the embedded default when no Redis is configured, same rules as Redis.

use super::recon::{
    bucket_mismatch, gate, settle_bucket, BatchOutcome, BatchReply, ReconArgs, ReconBatch,
    ReconReply, ReconTotals, SettleReply,
};
use super::{
    apply_daily, apply_sync, CampaignState, Grant, NodeHold, Session, StatedCampaign, Store,
    StoreIdentity, SyncItem, Totals,
};
use crate::daily::{DailyChange, DailySettings, DayWindow};
use crate::key::CampaignKey;
use crate::store::MAX_MICROS;
use crate::Error;
use futures::future::{self, BoxFuture, FutureExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Record {
    totals: Totals,
    sessions: BTreeMap<String, Session>,
    recon: ReconTotals,
}

/// One campaign's counts for one auction-time bucket.
#[derive(Debug, Default)]
struct Bucket {
    charged: u64,
    billed: u64,
    /// Set when settled; the bucket is forgotten at this time (ms, the callers' clock).
    forget_at: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    campaigns: HashMap<CampaignKey, Record>,
    buckets: HashMap<(CampaignKey, u64), Bucket>,
    /// Open buckets by start, as Redis keeps them in a sorted set.
    open: BTreeSet<(u64, CampaignKey)>,
    /// Per session: the last batch applied and when the number may be forgotten.
    batches: HashMap<String, (u64, u64)>,
    /// The bucket size of the first batch applied.
    bucket_ms: Option<u64>,
    /// The store's identity and fence (see `identity.rs`).
    identity: Option<String>,
    fence: Option<String>,
}

/// Budgets kept in this process. The mutex is held only for plain arithmetic, never across
/// `.await` (every method completes before returning its future).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update under this lock is integer arithmetic that cannot panic halfway, so a
        // poisoned map is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sync_now(&self, session: &str, items: &[SyncItem]) -> Vec<Option<Grant>> {
        let mut inner = self.lock();
        let map = &mut inner.campaigns;
        items
            .iter()
            .map(|item| {
                let record = map.get_mut(&item.key)?;
                let mut entry = record.sessions.get(session).copied().unwrap_or_default();
                let grant = apply_sync(&mut record.totals, &mut entry, item);
                if entry != Session::default() {
                    record.sessions.insert(session.to_owned(), entry);
                }
                Some(grant)
            })
            .collect()
    }

    fn change_budget(
        &self,
        key: &CampaignKey,
        amount: u64,
        add: bool,
    ) -> Result<CampaignState, Error> {
        let mut inner = self.lock();
        let map = &mut inner.campaigns;
        let totals = map.get(key).map(|r| r.totals.clone()).unwrap_or_default();
        let budget = if add {
            totals.budget.saturating_add(amount)
        } else {
            amount
        };
        if budget > MAX_MICROS {
            return Err(Error::TooLarge(budget));
        }
        let committed = totals.spent.saturating_add(totals.held);
        if budget < committed {
            return Err(Error::BelowCommitted { budget, committed });
        }
        let record = map.entry(key.clone()).or_default();
        record.totals.budget = budget;
        Ok(snapshot(key, record))
    }
}

impl Inner {
    /// `recon_report.lua` and `recon_settle.lua`, in Rust: batches in order, then settlement.
    fn reconcile(
        &mut self,
        session: &str,
        batches: &[ReconBatch],
        args: &ReconArgs,
    ) -> Result<ReconReply, Error> {
        // Settled buckets and batch numbers expire as Redis keys do.
        self.buckets
            .retain(|_, b| b.forget_at.is_none_or(|at| at > args.now_ms));
        self.batches.retain(|_, (_, until)| *until > args.now_ms);
        let mismatch = self.bucket_ms.filter(|&size| size != args.bucket_ms);
        let mut replies = Vec::with_capacity(batches.len());
        let mut prev = 0;
        for batch in batches {
            if mismatch.is_none() {
                replies.push(self.apply_batch(session, batch, prev, args));
            }
            prev = batch.seq;
        }
        let settle = self.settle(args);
        if let Some(size) = mismatch {
            return Err(bucket_mismatch(args.bucket_ms, size));
        }
        Ok(ReconReply {
            batches: replies,
            settle,
        })
    }

    fn apply_batch(
        &mut self,
        session: &str,
        batch: &ReconBatch,
        prev: u64,
        args: &ReconArgs,
    ) -> BatchReply {
        let last = self.batches.get(session).map(|(seq, _)| *seq);
        let outcome = gate(last, batch.seq, prev);
        let mut reply = BatchReply {
            outcome,
            absent: 0,
            late: 0,
        };
        if outcome != BatchOutcome::Applied {
            return reply;
        }
        self.bucket_ms.get_or_insert(args.bucket_ms);
        for item in &batch.items {
            let Some(record) = self.campaigns.get_mut(&item.key) else {
                reply.absent += 1;
                continue;
            };
            let slot = (item.key.clone(), item.bucket_start_ms);
            let totals = &mut record.recon;
            let settled = self.buckets.get(&slot).map(|b| b.forget_at.is_some());
            if settled == Some(true) || (settled.is_none() && args.forgotten(item.bucket_start_ms))
            {
                reply.late += 1;
                totals.late_charged = totals.late_charged.saturating_add(item.charged);
                totals.late_billed = totals.late_billed.saturating_add(item.billed);
                continue;
            }
            if settled.is_none() {
                totals.open_buckets += 1;
                self.open.insert((item.bucket_start_ms, item.key.clone()));
            }
            let bucket = self.buckets.entry(slot).or_default();
            bucket.charged = bucket.charged.saturating_add(item.charged);
            bucket.billed = bucket.billed.saturating_add(item.billed);
            totals.charged = totals.charged.saturating_add(item.charged);
            totals.billed = totals.billed.saturating_add(item.billed);
        }
        let until = args.now_ms.saturating_add(args.retain_ms);
        self.batches.insert(session.to_owned(), (batch.seq, until));
        reply
    }

    fn settle(&mut self, args: &ReconArgs) -> SettleReply {
        let mut reply = SettleReply::default();
        let Some(cutoff) = args.settle_cutoff() else {
            return reply;
        };
        if args.max_settle == 0 {
            return reply;
        }
        let mut due = self
            .open
            .iter()
            .take_while(|(start, _)| *start <= cutoff)
            .take(args.max_settle.saturating_add(1))
            .cloned()
            .collect::<Vec<_>>();
        reply.more = due.len() > args.max_settle;
        due.truncate(args.max_settle);
        for (start, key) in due {
            self.open.remove(&(start, key.clone()));
            let Some(bucket) = self.buckets.get_mut(&(key.clone(), start)) else {
                continue;
            };
            if bucket.forget_at.is_some() {
                continue;
            }
            bucket.forget_at = Some(args.now_ms.saturating_add(args.retain_ms));
            if let Some(record) = self.campaigns.get_mut(&key) {
                reply.add(settle_bucket(
                    &mut record.totals.spent,
                    &mut record.recon,
                    bucket.charged,
                    bucket.billed,
                ));
            }
        }
        reply
    }
}

fn snapshot(key: &CampaignKey, record: &Record) -> CampaignState {
    CampaignState {
        key: key.clone(),
        budget: record.totals.budget,
        spent: record.totals.spent,
        held: record.totals.held,
        paused: record.totals.paused,
        daily_budget: record.totals.daily,
        pacing: record.totals.pacing,
        timezone: record.totals.tz.clone(),
        day: record.totals.day,
        day_spent: record.totals.day_spent,
        nodes: record
            .sessions
            .iter()
            .map(|(name, s)| NodeHold {
                session: name.clone(),
                granted: s.granted,
                spent: s.spent,
                returned: s.returned,
                held: s.held(),
                reclaimed: s.reclaimed,
            })
            .collect(),
    }
}

impl Store for MemoryStore {
    fn sync<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, Result<Vec<Option<Grant>>, Error>> {
        future::ready(Ok(self.sync_now(session, items))).boxed()
    }

    fn end_session<'a>(
        &'a self,
        session: &'a str,
        keys: &'a [CampaignKey],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut inner = self.lock();
        let map = &mut inner.campaigns;
        for key in keys {
            if let Some(record) = map.get_mut(key) {
                if record.sessions.get(session).is_some_and(|s| s.held() == 0) {
                    record.sessions.remove(session);
                }
            }
        }
        future::ready(Ok(())).boxed()
    }

    fn campaigns(&self) -> BoxFuture<'_, Result<Vec<CampaignKey>, Error>> {
        let keys = self.lock().campaigns.keys().cloned().collect();
        future::ready(Ok(keys)).boxed()
    }

    fn seed_if_absent<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
        paused: bool,
        daily: &'a DailySettings,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        let daily_micros = daily.daily_budget_micros.unwrap_or(0);
        let result = if budget.max(daily_micros) > MAX_MICROS {
            Err(Error::TooLarge(budget.max(daily_micros)))
        } else {
            let mut inner = self.lock();
            let map = &mut inner.campaigns;
            let created = !map.contains_key(key);
            if created {
                let totals = Totals {
                    budget,
                    paused,
                    daily: daily.daily_budget_micros,
                    pacing: daily.pacing,
                    tz: daily.timezone.clone(),
                    ..Totals::default()
                };
                map.insert(
                    key.clone(),
                    Record {
                        totals,
                        ..Record::default()
                    },
                );
            }
            Ok(created)
        };
        future::ready(result).boxed()
    }

    fn set_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        future::ready(self.change_budget(key, budget, false)).boxed()
    }

    fn add_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        micros: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        future::ready(self.change_budget(key, micros, true)).boxed()
    }

    fn set_daily<'a>(
        &'a self,
        key: &'a CampaignKey,
        change: &'a DailyChange,
        day: &'a DayWindow,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        let mut inner = self.lock();
        let result = match inner.campaigns.get_mut(key) {
            Some(record) => {
                apply_daily(&mut record.totals, change, day).map(|()| snapshot(key, record))
            }
            None => Err(Error::NotFound(key.clone())),
        };
        future::ready(result).boxed()
    }

    fn set_paused<'a>(
        &'a self,
        key: &'a CampaignKey,
        paused: bool,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        let mut inner = self.lock();
        let result = match inner.campaigns.get_mut(key) {
            Some(record) => {
                record.totals.paused = paused;
                Ok(snapshot(key, record))
            }
            None => Err(Error::NotFound(key.clone())),
        };
        future::ready(result).boxed()
    }

    fn state<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<CampaignState>, Error>> {
        let state = self
            .lock()
            .campaigns
            .get(key)
            .map(|record| snapshot(key, record));
        future::ready(Ok(state)).boxed()
    }

    fn reclaim<'a>(
        &'a self,
        key: &'a CampaignKey,
        session: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        let mut inner = self.lock();
        let result = match inner.campaigns.get_mut(key) {
            None => Err(Error::NotFound(key.clone())),
            Some(record) => match record.sessions.get_mut(session) {
                None => Ok(0),
                Some(s) => {
                    let held = s.held();
                    s.returned += held;
                    s.reclaimed = true;
                    record.totals.held = record.totals.held.saturating_sub(held);
                    Ok(held)
                }
            },
        };
        future::ready(result).boxed()
    }

    fn reconcile<'a>(
        &'a self,
        session: &'a str,
        batches: &'a [ReconBatch],
        args: &'a ReconArgs,
    ) -> BoxFuture<'a, Result<ReconReply, Error>> {
        let result = args
            .check()
            .and_then(|()| self.lock().reconcile(session, batches, args));
        future::ready(result).boxed()
    }

    fn reconciliation<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<ReconTotals>, Error>> {
        let totals = self.lock().campaigns.get(key).map(|r| r.recon);
        future::ready(Ok(totals)).boxed()
    }

    fn identity(&self) -> BoxFuture<'_, Result<StoreIdentity, Error>> {
        let inner = self.lock();
        let identity = StoreIdentity {
            id: inner.identity.clone(),
            fenced: inner.fence.is_some(),
        };
        future::ready(Ok(identity)).boxed()
    }

    fn init_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, Error>> {
        let mut inner = self.lock();
        let held = inner.identity.get_or_insert_with(|| id.to_owned()).clone();
        future::ready(Ok(held)).boxed()
    }

    fn fence<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let mut inner = self.lock();
        inner.fence.get_or_insert_with(|| reason.to_owned());
        future::ready(Ok(())).boxed()
    }

    fn adopt<'a>(
        &'a self,
        id: &'a str,
        campaigns: &'a [StatedCampaign],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut inner = self.lock();
        inner.campaigns.clear();
        for c in campaigns {
            let record = inner.campaigns.entry(c.key.clone()).or_default();
            record.totals = Totals {
                budget: c.budget,
                spent: c.spent,
                held: 0,
                paused: c.paused,
                daily: c.daily.daily_budget_micros,
                pacing: c.daily.pacing,
                tz: c.daily.timezone.clone(),
                ..Totals::default()
            };
        }
        inner.identity = Some(id.to_owned());
        inner.fence = None;
        future::ready(Ok(())).boxed()
    }
}

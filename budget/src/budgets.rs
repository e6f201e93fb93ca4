//! A node's budgets: the campaign index the request path reads, the sync round that reports
//! spend and renews leases, graceful release, and the admin operations.
//!
//! The index is an immutable map swapped whole when campaigns are added (rare), so a lookup is
//! a thread-local guard plus two hash probes on `&str`: no lock, no allocation, no shared write.
//! The sync round keeps every report cumulative (see `store`), so rounds may fail, repeat or
//! even overlap without losing or double-counting a micro. The reconcile round (its own task,
//! stopped with the sync loop) sends charged-win and billed-impression counts in numbered
//! batches and settles due buckets (see `reconcile` and `store::recon`); it has the same
//! property.

use crate::campaign::{charged, Campaign, CampaignHandle, Remote};
use crate::config::{BudgetConfig, UnknownPolicy};
use crate::key::CampaignKey;
use crate::lease::LeasePolicy;
use crate::metrics::{self as m, DropReason};
use crate::reconcile::{wall_clock_ms, ReconcileReport, Reconciliation, Recorder, Side};
use crate::store::{CampaignState, Grant, Store, SyncItem, MAX_MICROS};
use crate::Error;
use arc_swap::{ArcSwap, Guard};
use metrics::{counter, gauge, histogram};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Size of the lock-free filter of recently queued unknown campaigns.
const RECENT_UNKNOWN_SLOTS: usize = 4096;

/// Campaigns by DSP then `cid`, plus a flat list for the sync loop.
#[derive(Default)]
struct Index {
    by_dsp: FastMap<Box<str>, FastMap<Box<str>, CampaignHandle>>,
    all: Vec<CampaignHandle>,
}

impl Index {
    #[inline]
    fn get(&self, dsp: &str, cid: &str) -> Option<&CampaignHandle> {
        self.by_dsp.get(dsp)?.get(cid)
    }
}

/// What a bid's `(dsp, cid)` resolved to. Only `Found` has a budget; for the other two the
/// caller applies [`Budgets::unknown_policy`] (see [`Lookup::admits`]).
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

    /// Whether the bid may take part at all: a found campaign may (its lease then decides),
    /// the others only under [`UnknownPolicy::Allow`].
    pub fn admits(&self, policy: UnknownPolicy) -> bool {
        match self {
            Lookup::Found(_) => true,
            Lookup::NoCid | Lookup::Unknown => policy.allows(),
        }
    }
}

/// Unknown campaigns seen on the request path, waiting for the next sync to ask the store.
#[derive(Default)]
struct Pending {
    /// Hashes of `(dsp, cid)` already queued or asked for since the last full round.
    seen: HashSet<u64>,
    queue: Vec<CampaignKey>,
}

/// What one sync round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Campaigns in the report sent to the store.
    pub campaigns: usize,
    /// Micros newly credited to leases.
    pub credited: u64,
    /// Campaigns this node learned of.
    pub discovered: usize,
}

/// What a graceful release did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseReport {
    /// Campaigns reported in the final sync.
    pub campaigns: usize,
    /// Unspent lease micros handed back.
    pub returned: u64,
    /// Micros charged on this node over its life, all of them now reported.
    pub charged: u64,
    /// Reconciliation counts (charged wins) the store could not be given before the timeout.
    pub unreconciled_charged: u64,
    /// Reconciliation counts (billed impressions) the store could not be given before the
    /// timeout; their wins will be credited back as if never rendered.
    pub unreconciled_billed: u64,
}

/// One campaign's counters on this node, for the admin API and billing reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalState {
    /// The campaign.
    pub key: CampaignKey,
    /// Spendable now.
    pub available: u64,
    /// Charged on this node since it started (reconcile with billed impressions).
    pub charged_total: u64,
    /// Charged but not yet acknowledged by the store.
    pub unreported: u64,
    /// The lease this node currently aims to hold.
    pub target: u64,
    /// Paused, as of the last sync.
    pub paused: bool,
    /// The store did not know the campaign at the last sync.
    pub missing: bool,
    /// The store's budget, spent and held, as of the last sync.
    pub store_budget: Option<u64>,
    /// See `store_budget`.
    pub store_spent: Option<u64>,
    /// See `store_budget`.
    pub store_held: Option<u64>,
}

/// A node's campaign budgets. Share it as `Arc<Budgets>`.
pub struct Budgets {
    cfg: BudgetConfig,
    policy: LeasePolicy,
    session: String,
    store: Arc<dyn Store>,
    index: ArcSwap<Index>,
    /// Serialises index rebuilds (never held across `.await`).
    index_writer: Mutex<()>,
    pending: Mutex<Pending>,
    /// Lock-free filter in front of `pending`: hashes of recently queued unknown campaigns.
    recent_unknown: Box<[AtomicU64]>,
    pair_hasher: foldhash::fast::RandomState,
    round: AtomicU64,
    full_every: u64,
    closed: AtomicBool,
    /// The last store call failed (log transitions, not every round of an outage).
    failing: AtomicBool,
    /// Charged-win and billed-impression counts waiting for the reconcile round.
    recon: Recorder,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("session", &self.session)
            .field("campaigns", &self.index.load().all.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
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

/// The running sync and reconcile loops. Call [`SyncTask::shutdown`] to stop them, hand
/// leases back and send the last reconciliation counts.
#[derive(Debug)]
pub struct SyncTask {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
    reconcile: JoinHandle<()>,
    budgets: Arc<Budgets>,
}

impl SyncTask {
    /// Stops both loops (a round in flight finishes first), releases every lease after a final
    /// report ([`Budgets::release`]), then sends what is left of the reconciliation counts
    /// ([`Budgets::flush_reconciliation`]; what cannot be sent is logged and reported in
    /// [`ReleaseReport`]). Call it once no more wins are charged or impressions billed.
    pub async fn shutdown(self) -> Result<ReleaseReport, Error> {
        // The receivers may already be gone if the loops ended; either way they are stopping.
        let _ = self.stop.send(true);
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "budget sync task ended abnormally");
        }
        if let Err(e) = self.reconcile.await {
            tracing::error!(error = %e, "budget reconcile task ended abnormally");
        }
        // One budget of `shutdown_timeout_ms` for both steps, so a dead store does not cost it
        // twice.
        let limit = Duration::from_millis(self.budgets.cfg.shutdown_timeout_ms);
        let deadline = Instant::now() + limit;
        let released = self.budgets.release().await;
        let flushed = self
            .budgets
            .flush_reconciliation_until(deadline, limit)
            .await;
        if let Err(e) = flushed {
            let (charged, billed) = self.budgets.recon.unreported(None);
            tracing::error!(
                error = %e,
                unreported_charged_micros = charged,
                unreported_billed_micros = billed,
                "could not send the last reconciliation counts; unrendered-win credits will be off by them"
            );
        }
        let mut report = released?;
        (report.unreconciled_charged, report.unreconciled_billed) =
            self.budgets.recon.unreported(None);
        Ok(report)
    }
}

impl Budgets {
    /// Budgets for this node over `store`, knowing the config's campaigns (with empty leases
    /// until the first sync). Does no IO; see [`Budgets::start`] for the usual startup.
    pub fn new(cfg: BudgetConfig, store: Arc<dyn Store>) -> Result<Arc<Self>, Error> {
        cfg.validate()?;
        let session = format!("{}-{:016x}", cfg.node_id, rand::random::<u64>());
        let seeds: Vec<CampaignKey> = cfg
            .campaigns
            .iter()
            .map(|s| CampaignKey::new(&s.dsp, &s.cid))
            .collect();
        let budgets = Arc::new(Budgets {
            policy: LeasePolicy::from_config(&cfg),
            full_every: cfg.full_every_rounds(),
            session,
            store,
            index: ArcSwap::from_pointee(Index::default()),
            index_writer: Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            recent_unknown: (0..RECENT_UNKNOWN_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            pair_hasher: foldhash::fast::RandomState::default(),
            round: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            recon: Recorder::new(cfg.reconcile_bucket_ms),
            cfg,
        });
        budgets.insert(&seeds);
        Ok(budgets)
    }

    /// The usual startup: [`Budgets::new`], create the config's campaigns in the store if
    /// absent, one sync round, then the sync loop. Store failures are logged, not fatal: the
    /// node starts with empty leases (failing closed) and the loop keeps trying.
    pub async fn start(
        cfg: BudgetConfig,
        store: Arc<dyn Store>,
    ) -> Result<(Arc<Self>, SyncTask), Error> {
        let budgets = Budgets::new(cfg, store)?;
        if let Err(e) = budgets.seed().await {
            tracing::warn!(error = %e, "could not seed campaign budgets; will sync what the store has");
        }
        if let Err(e) = budgets.sync_once().await {
            tracing::warn!(error = %e, "first budget sync failed; leases stay empty until one succeeds");
        }
        let task = budgets.spawn_sync();
        Ok((budgets, task))
    }

    /// Creates the config's campaigns in the store where absent; returns how many were created.
    pub async fn seed(&self) -> Result<usize, Error> {
        let mut created = 0;
        for seed in &self.cfg.campaigns {
            let key = CampaignKey::new(&seed.dsp, &seed.cid);
            if self
                .store
                .seed_if_absent(&key, seed.budget_micros, seed.paused)
                .await?
            {
                created += 1;
            }
        }
        Ok(created)
    }

    /// Starts the sync loop on the current tokio runtime: one round per `sync_interval`
    /// (a late round delays the next rather than bunching up), and the reconcile loop beside
    /// it: one [`Budgets::reconcile_once`] per `reconcile_interval_ms`.
    pub fn spawn_sync(self: &Arc<Self>) -> SyncTask {
        let (stop, mut stopped) = watch::channel(false);
        let mut reconcile_stopped = stop.subscribe();
        let reconciling = Arc::clone(self);
        let reconcile = tokio::spawn(async move {
            let mut tick = tokio::time::interval(reconciling.cfg.reconcile_interval());
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = reconcile_stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                // Counted and logged (on the transition) inside reconcile_once.
                if let Err(e) = reconciling.reconcile_once().await {
                    tracing::debug!(error = %e, "budget reconcile round failed");
                }
            }
        });
        let budgets = Arc::clone(self);
        let join = tokio::spawn(async move {
            let mut tick = tokio::time::interval(budgets.cfg.sync_interval());
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                match budgets.sync_once().await {
                    Ok(_) => {}
                    Err(Error::Closed) => break,
                    // Counted and logged (on the transition) inside sync_once.
                    Err(e) => tracing::debug!(error = %e, "budget sync round failed"),
                }
            }
        });
        SyncTask {
            stop,
            join,
            reconcile,
            budgets: Arc::clone(self),
        }
    }

    /// This node's session name in the store (`{node_id}-{random}`).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The configuration in use.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// The policy for bids without a known campaign.
    pub fn unknown_policy(&self) -> UnknownPolicy {
        self.cfg.unknown_campaign
    }

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
    pub fn record_drop(&self, dsp: &str, cid: Option<&str>, reason: DropReason) {
        m::bid_dropped(dsp, cid, reason, self.cfg.per_campaign_metrics);
    }

    /// Records a win charged to campaign `(dsp, cid)`: `cost_micros` (one impression at the
    /// clearing price) for the auction at `auction_ts_ms` (the timestamp the impression URL
    /// carries). Call it on the node that charged, right after the charge succeeded. Request
    /// path safe: an atomic add in a sharded map, no IO, no lock across `.await`.
    #[inline]
    pub fn record_charge(&self, dsp: &str, cid: &str, auction_ts_ms: u64, cost_micros: u64) {
        self.recon
            .record(Side::Charged, dsp, cid, auction_ts_ms, cost_micros);
    }

    /// Records an impression billed to campaign `(dsp, cid)`: its cost for the auction at
    /// `auction_ts_ms`, on whichever node served the impression URL, once per billed (not
    /// duplicate) impression. Request path safe, like [`Budgets::record_charge`].
    #[inline]
    pub fn record_billed(&self, dsp: &str, cid: &str, auction_ts_ms: u64, cost_micros: u64) {
        self.recon
            .record(Side::Billed, dsp, cid, auction_ts_ms, cost_micros);
    }

    /// One reconcile round at the wall clock (see [`Budgets::reconcile_at`]).
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, Error> {
        self.reconcile_at(wall_clock_ms()).await
    }

    /// One reconcile round as if the clock read `now_ms`: sends this node's counts (or resends
    /// the batches the store has not confirmed) and settles the buckets that ended
    /// `settle_after_ms` before `now_ms`, in one store call. A failed round keeps every count
    /// for the next one; a resent batch counts once.
    pub async fn reconcile_at(&self, now_ms: u64) -> Result<ReconcileReport, Error> {
        let batches = self.recon.outgoing();
        let args = self.cfg.recon_args(now_ms);
        let started = Instant::now();
        let result = self.store.reconcile(&self.session, &batches, &args).await;
        histogram!(m::RECONCILE_SECONDS).record(started.elapsed().as_secs_f64());
        let reply = match result {
            Ok(reply) if reply.batches.len() == batches.len() => reply,
            Ok(reply) => {
                let e = Error::Protocol(format!(
                    "{} answers for {} batches",
                    reply.batches.len(),
                    batches.len()
                ));
                self.store_failed("reconcile", &e);
                return Err(e);
            }
            Err(e) => {
                self.store_failed("reconcile", &e);
                return Err(e);
            }
        };
        self.store_ok();
        self.recon.confirm(&batches, &reply.batches);
        let report = ReconcileReport::new(&batches, &reply.batches, reply.settle);
        counter!(m::RECONCILE_CREDITED).increment(report.settle.credited);
        counter!(m::RECONCILE_BILLED_BEYOND).increment(report.settle.billed_beyond_charged);
        counter!(m::RECONCILE_LATE).increment(report.late as u64);
        let (charged, billed) = self.recon.unreported(None);
        gauge!(m::RECONCILE_UNREPORTED, "side" => "charged").set(charged as f64);
        gauge!(m::RECONCILE_UNREPORTED, "side" => "billed").set(billed as f64);
        if report.settle.settled > 0 {
            tracing::debug!(?report, "reconciliation buckets settled");
        }
        Ok(report)
    }

    /// Reconcile rounds until every count recorded here is in the store, for at most
    /// `shutdown_timeout_ms` ([`Error::Timeout`] past it, or the last store error).
    /// [`SyncTask::shutdown`] calls it after the loops stopped.
    pub async fn flush_reconciliation(&self) -> Result<ReconcileReport, Error> {
        let limit = Duration::from_millis(self.cfg.shutdown_timeout_ms);
        self.flush_reconciliation_until(Instant::now() + limit, limit)
            .await
    }

    /// [`Budgets::flush_reconciliation`] by `deadline`, with at least one try when there is
    /// something to send.
    async fn flush_reconciliation_until(
        &self,
        deadline: Instant,
        limit: Duration,
    ) -> Result<ReconcileReport, Error> {
        let mut total = ReconcileReport::default();
        while !self.recon.is_idle() {
            let failure = match self.reconcile_once().await {
                Ok(report) => {
                    total.add(&report);
                    if self.recon.is_idle() {
                        break;
                    }
                    Error::Timeout(limit)
                }
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(self.cfg.sync_interval().min(deadline - now)).await;
        }
        Ok(total)
    }

    /// A campaign's reconciliation: the store's totals (charged, billed, credited back,
    /// pending, billed beyond charged, late) and what this node has not reported yet.
    /// [`Error::NotFound`] if the store has no such campaign.
    pub async fn reconciliation(&self, dsp: &str, cid: &str) -> Result<Reconciliation, Error> {
        let key = CampaignKey::new(dsp, cid);
        let Some(totals) = self.store.reconciliation(&key).await? else {
            return Err(Error::NotFound(key));
        };
        let unreported = self.recon.unreported(Some(&key));
        Ok(Reconciliation::new(key, &totals, unreported))
    }

    /// One sync round: measure each campaign's spend, hand back idle money, report to the store
    /// and credit the grants, in one store call. Every `full_sync_ms` the round also re-reads
    /// the campaign list and includes every campaign; otherwise only campaigns with spend to
    /// report, a lease to watch or a lease to fill. A failed round changes nothing that the
    /// next one does not repeat: spend stays counted locally and is reported then.
    pub async fn sync_once(&self) -> Result<SyncReport, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let round = self.round.fetch_add(1, Ordering::Relaxed);
        let full = round.is_multiple_of(self.full_every);
        let mut report = SyncReport::default();
        if full {
            report.discovered = self.discover().await;
        }
        let probes = self.take_probes(full);
        let index = self.index.load_full();
        let mut items = Vec::with_capacity(index.all.len() + probes.len());
        let mut synced = Vec::with_capacity(index.all.len());
        let mut stats = RoundStats::new(self.cfg.per_campaign_metrics);
        for c in &index.all {
            let prepared = self.prepare(c, full);
            stats.add(c.key(), &prepared);
            if let Some(item) = prepared.item {
                items.push(item);
                synced.push(Arc::clone(c));
            }
        }
        stats.publish();
        let known = items.len();
        // Probes ask for nothing: a grant whose reply got lost would belong to a campaign this
        // node does not track yet. The lease comes with the next round.
        items.extend(
            probes
                .into_iter()
                .filter(|k| index.get(&k.dsp, &k.cid).is_none())
                .map(|key| SyncItem {
                    key,
                    granted: 0,
                    spent: 0,
                    returned: 0,
                    want: 0,
                }),
        );
        report.campaigns = items.len();
        gauge!(m::SYNC_CAMPAIGNS).set(items.len() as f64);
        if items.is_empty() {
            return Ok(report);
        }
        let started = Instant::now();
        let result = self.store.sync(&self.session, &items).await;
        histogram!(m::SYNC_SECONDS).record(started.elapsed().as_secs_f64());
        let grants = match result {
            Ok(grants) if grants.len() == items.len() => grants,
            Ok(grants) => {
                let e = Error::Protocol(format!(
                    "{} answers for {} campaigns",
                    grants.len(),
                    items.len()
                ));
                self.store_failed("sync", &e);
                return Err(e);
            }
            Err(e) => {
                self.store_failed("sync", &e);
                return Err(e);
            }
        };
        self.store_ok();
        for ((c, item), grant) in synced.iter().zip(&items).zip(&grants) {
            report.credited += self.apply(c, item, grant.as_ref());
        }
        let found: Vec<CampaignKey> = items[known..]
            .iter()
            .zip(&grants[known..])
            .filter(|(_, g)| g.is_some())
            .map(|(item, _)| item.key.clone())
            .collect();
        if !found.is_empty() {
            report.discovered += found.len();
            self.insert(&found);
        }
        Ok(report)
    }

    /// Ends this node's part: no new leases, every lease handed back, all spend reported
    /// (retried until `shutdown_timeout_ms`), then the session's records cleared in the store.
    /// After this every lookup finds empty leases. Stop the sync loop first
    /// ([`SyncTask::shutdown`] does both).
    pub async fn release(&self) -> Result<ReleaseReport, Error> {
        self.closed.store(true, Ordering::Release);
        let index = self.index.load_full();
        let mut report = ReleaseReport::default();
        for c in &index.all {
            let mut book = c.book();
            let taken = c.take_above(0);
            book.returned += taken;
            report.returned += taken;
        }
        let touched: Vec<&CampaignHandle> = index.all.iter().filter(|c| c.book().sent).collect();
        let deadline = Instant::now() + Duration::from_millis(self.cfg.shutdown_timeout_ms);
        loop {
            let items: Vec<SyncItem> = touched
                .iter()
                .map(|c| {
                    let book = c.book();
                    SyncItem {
                        key: c.key().clone(),
                        granted: book.credited,
                        spent: charged(&book, c.lease()),
                        returned: book.returned,
                        want: 0,
                    }
                })
                .collect();
            if items.is_empty() {
                break;
            }
            let result = match self.store.sync(&self.session, &items).await {
                Ok(grants) if grants.len() == items.len() => Ok(grants),
                Ok(grants) => Err(Error::Protocol(format!(
                    "{} answers for {} campaigns",
                    grants.len(),
                    items.len()
                ))),
                Err(e) => Err(e),
            };
            match result {
                Ok(grants) => {
                    let mut again = false;
                    for ((c, item), grant) in touched.iter().zip(&items).zip(&grants) {
                        self.apply(c, item, grant.as_ref());
                        let book = c.book();
                        // A grant whose reply was lost earlier surfaces now and is handed back
                        // at once; report that too.
                        again |= grant.is_some() && book.returned > book.acked_returned;
                    }
                    // `again` can only repeat once per lost grant; the deadline is a backstop.
                    if !again || Instant::now() >= deadline {
                        break;
                    }
                }
                Err(e) => {
                    self.store_failed("release", &e);
                    let now = Instant::now();
                    if now >= deadline {
                        let unreported: u64 = touched
                            .iter()
                            .map(|c| {
                                let book = c.book();
                                charged(&book, c.lease()).saturating_sub(book.acked_spent)
                            })
                            .sum();
                        tracing::error!(
                            error = %e,
                            session = %self.session,
                            unreported_micros = unreported,
                            "could not hand leases back; the store keeps them held for this session"
                        );
                        return Err(e);
                    }
                    tokio::time::sleep(self.cfg.sync_interval().min(deadline - now)).await;
                }
            }
        }
        let keys: Vec<CampaignKey> = touched.iter().map(|c| c.key().clone()).collect();
        if let Err(e) = self.store.end_session(&self.session, &keys).await {
            // Only tidiness: the records hold nothing any more.
            tracing::warn!(error = %e, "could not clear this session's records in the store");
        }
        report.campaigns = keys.len();
        report.charged = index.all.iter().map(|c| c.charged_total()).sum();
        Ok(report)
    }

    /// Creates the campaign or sets its budget (refused below what is spent or leased out).
    /// This node picks the change up at once; others at their next full round.
    pub async fn set_budget(
        &self,
        dsp: &str,
        cid: &str,
        budget_micros: u64,
    ) -> Result<CampaignState, Error> {
        if budget_micros > MAX_MICROS {
            return Err(Error::TooLarge(budget_micros));
        }
        let key = CampaignKey::new(dsp, cid);
        let state = self.store.set_budget(&key, budget_micros).await?;
        self.adopt(&key, &state);
        Ok(state)
    }

    /// Creates the campaign or raises its budget by `micros`.
    pub async fn add_budget(
        &self,
        dsp: &str,
        cid: &str,
        micros: u64,
    ) -> Result<CampaignState, Error> {
        if micros > MAX_MICROS {
            return Err(Error::TooLarge(micros));
        }
        let key = CampaignKey::new(dsp, cid);
        let state = self.store.add_budget(&key, micros).await?;
        self.adopt(&key, &state);
        Ok(state)
    }

    /// Pauses or resumes a campaign. This node stops spending at once and hands its lease back;
    /// other nodes stop at their next sync of the campaign (at most one interval for a node
    /// that holds any of it).
    pub async fn pause(&self, dsp: &str, cid: &str, paused: bool) -> Result<CampaignState, Error> {
        let key = CampaignKey::new(dsp, cid);
        let state = self.store.set_paused(&key, paused).await?;
        self.adopt(&key, &state);
        Ok(state)
    }

    /// The store's view of a campaign: budget, spent, held, paused, per session.
    pub async fn state(&self, dsp: &str, cid: &str) -> Result<Option<CampaignState>, Error> {
        self.store.state(&CampaignKey::new(dsp, cid)).await
    }

    /// Every campaign in the store.
    pub async fn campaigns(&self) -> Result<Vec<CampaignKey>, Error> {
        self.store.campaigns().await
    }

    /// Writes off a dead session's lease (see [`Store::reclaim`]: never for a live node).
    pub async fn reclaim(&self, dsp: &str, cid: &str, session: &str) -> Result<u64, Error> {
        self.store
            .reclaim(&CampaignKey::new(dsp, cid), session)
            .await
    }

    /// This node's counters for one campaign.
    pub fn local(&self, dsp: &str, cid: &str) -> Option<LocalState> {
        let index = self.index.load();
        index.get(dsp, cid).map(|c| local_state(c))
    }

    /// This node's counters for every campaign it knows, including what it charged
    /// (`charged_total`) for reconciliation with billing.
    pub fn local_all(&self) -> Vec<LocalState> {
        self.index
            .load()
            .all
            .iter()
            .map(|c| local_state(c))
            .collect()
    }

    /// Makes a campaign the admin just changed known here, with the store's new state.
    fn adopt(&self, key: &CampaignKey, state: &CampaignState) {
        let Some(c) = self.insert(std::slice::from_ref(key)).pop() else {
            return;
        };
        let mut book = c.book();
        book.missing = false;
        book.paused = state.paused;
        book.starved = state.paused;
        if state.paused {
            let taken = c.take_above(0);
            book.returned += taken;
        }
    }

    /// Adds campaigns to the index (publishing a new snapshot if any is new) and returns the
    /// handles for `keys`, in order.
    fn insert(&self, keys: &[CampaignKey]) -> Vec<CampaignHandle> {
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

    async fn discover(&self) -> usize {
        match self.store.campaigns().await {
            Ok(keys) => {
                let index = self.index.load();
                let new: Vec<CampaignKey> = keys
                    .into_iter()
                    .filter(|k| index.get(&k.dsp, &k.cid).is_none())
                    .collect();
                drop(index);
                if !new.is_empty() {
                    self.insert(&new);
                }
                new.len()
            }
            Err(e) => {
                self.store_failed("discover", &e);
                0
            }
        }
    }

    fn take_probes(&self, full: bool) -> Vec<CampaignKey> {
        let mut pending = lock(&self.pending);
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

    /// Folds one round into a campaign's book and decides whether it is in this report.
    fn prepare(&self, c: &Campaign, full: bool) -> Prepared {
        let mut book = c.book();
        let lease = c.lease();
        let charged_now = charged(&book, lease);
        let spent = charged_now.saturating_sub(book.last_charged);
        book.last_charged = charged_now;
        let unmet = c.take_unmet();
        let grow = !book.starved && !book.paused;
        let mut target = self.policy.next_target(&mut book, spent, unmet, grow);
        if book.paused {
            target = 0;
            book.target = 0;
        }
        // Hand back what sits idle: everything when the target is zero, else what exceeds
        // twice the target (the slack keeps a lease from bouncing between node and store).
        let keep = if target == 0 {
            0
        } else if lease > target.saturating_mul(2) {
            target
        } else {
            lease
        };
        if keep < lease {
            let taken = c.take_above(keep);
            book.returned += taken;
        }
        let lease_now = c.lease();
        let unreported = charged_now > book.acked_spent || book.returned > book.acked_returned;
        let wants_more = lease_now < target && !book.starved;
        // A node that holds money syncs every round, so a pause reaches it within one interval.
        let include = full || !book.synced || unreported || lease_now > 0 || wants_more;
        if include {
            book.sent = true;
        }
        Prepared {
            spent,
            lease: lease_now,
            unreported: charged_now.saturating_sub(book.acked_spent),
            item: include.then(|| SyncItem {
                key: c.key().clone(),
                granted: book.credited,
                spent: charged_now,
                returned: book.returned,
                want: target,
            }),
        }
    }

    /// Applies the store's answer for one campaign; returns the micros credited to the lease.
    fn apply(&self, c: &Campaign, item: &SyncItem, grant: Option<&Grant>) -> u64 {
        let mut book = c.book();
        book.synced = true;
        let Some(g) = grant else {
            // Nothing was recorded: keep the spend unacknowledged (it stays visible, and the
            // cumulative report counts it if the campaign is created again).
            book.missing = true;
            book.starved = true;
            book.remote = None;
            return 0;
        };
        book.acked_spent = book.acked_spent.max(item.spent);
        book.acked_returned = book.acked_returned.max(item.returned);
        book.missing = false;
        book.paused = g.paused;
        book.remote = Some(Remote {
            budget: g.budget,
            spent: g.spent,
            held: g.held,
        });
        let mut credited = 0;
        if g.granted > book.credited {
            let add = g.granted - book.credited;
            book.credited = g.granted;
            if g.paused || self.closed.load(Ordering::Acquire) {
                // Received but not spendable: count it as handed back right away.
                book.returned += add;
            } else {
                c.credit(add);
                credited = add;
            }
        }
        if g.paused {
            let taken = c.take_above(0);
            book.returned += taken;
        }
        let available = g.budget.saturating_sub(g.spent).saturating_sub(g.held);
        book.starved = g.paused || (available == 0 && c.lease() < item.want);
        credited
    }

    fn store_failed(&self, op: &'static str, e: &Error) {
        let reason = match e {
            Error::Timeout(_) => "timeout",
            Error::Redis(_) => "redis",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            _ => "other",
        };
        counter!(m::SYNC_FAILURES, "op" => op, "reason" => reason).increment(1);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, op, "budget store unreachable; spending only held leases");
        }
    }

    fn store_ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("budget store reachable again");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a plain queue; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn local_state(c: &Campaign) -> LocalState {
    let book = c.book();
    let lease = c.lease();
    let charged_total = charged(&book, lease);
    LocalState {
        key: c.key().clone(),
        available: lease,
        charged_total,
        unreported: charged_total.saturating_sub(book.acked_spent),
        target: book.target,
        paused: book.paused,
        missing: book.missing,
        store_budget: book.remote.map(|r| r.budget),
        store_spent: book.remote.map(|r| r.spent),
        store_held: book.remote.map(|r| r.held),
    }
}

/// One campaign's part of a round.
struct Prepared {
    spent: u64,
    lease: u64,
    unreported: u64,
    item: Option<SyncItem>,
}

/// Per-round metric sums, per DSP unless per-campaign labels are on.
struct RoundStats {
    per_campaign: bool,
    by_dsp: FastMap<Arc<str>, (u64, u64)>,
    unreported: u64,
}

impl RoundStats {
    fn new(per_campaign: bool) -> Self {
        RoundStats {
            per_campaign,
            by_dsp: FastMap::default(),
            unreported: 0,
        }
    }

    fn add(&mut self, key: &CampaignKey, p: &Prepared) {
        self.unreported = self.unreported.saturating_add(p.unreported);
        if self.per_campaign {
            counter!(m::SPEND, "dsp" => key.dsp.clone(), "cid" => key.cid.clone())
                .increment(p.spent);
            gauge!(m::LEASE_HELD, "dsp" => key.dsp.clone(), "cid" => key.cid.clone())
                .set(p.lease as f64);
        } else {
            let sums = self.by_dsp.entry(key.dsp.clone()).or_default();
            sums.0 = sums.0.saturating_add(p.spent);
            sums.1 = sums.1.saturating_add(p.lease);
        }
    }

    fn publish(self) {
        for (dsp, (spent, lease)) in self.by_dsp {
            counter!(m::SPEND, "dsp" => dsp.clone()).increment(spent);
            gauge!(m::LEASE_HELD, "dsp" => dsp).set(lease as f64);
        }
        gauge!(m::UNREPORTED).set(self.unreported as f64);
    }
}

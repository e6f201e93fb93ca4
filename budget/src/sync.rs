//! The sync loop: one round per `sync_interval_ms` reports each campaign's cumulative spend,
//! hands idle money back and takes new leases, in one store call; graceful release at
//! shutdown; and the task that runs it beside the reconcile round.

use crate::budgets::Budgets;
use crate::campaign::{charged, final_report, Campaign, CampaignHandle, Remote};
use crate::daily::DayWindow;
use crate::index::FastMap;
use crate::key::CampaignKey;
use crate::metrics::BudgetMetrics;
use crate::store::{Grant, SyncAnswer, SyncItem};
use crate::Error;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

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

/// The running sync and reconcile loops. Call [`SyncTask::shutdown`] to stop them, hand
/// leases back and send the last reconciliation counts.
#[derive(Debug)]
pub struct SyncTask {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
    reconcile: JoinHandle<()>,
    presence: JoinHandle<()>,
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
        if let Err(e) = self.presence.await {
            tracing::error!(error = %e, "budget presence task ended abnormally");
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

impl SyncTask {
    /// Stops every loop at once without handing anything back or sending the last counts, as
    /// a crash would: the store keeps this session's leases until the fleet finds it dead.
    pub fn abort(self) {
        self.join.abort();
        self.reconcile.abort();
        self.presence.abort();
    }
}

impl Budgets {
    /// Starts the sync loop on the current tokio runtime: one round per `sync_interval`
    /// (a late round delays the next rather than bunching up), and the reconcile loop beside
    /// it: one [`Budgets::reconcile_once`] per `reconcile_interval_ms`.
    pub fn spawn_sync(self: &Arc<Self>) -> SyncTask {
        let (stop, mut stopped) = watch::channel(false);
        let mut reconcile_stopped = stop.subscribe();
        let presence = self.spawn_presence(stop.subscribe());
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
                    // Logged on the transition inside; the loop keeps checking for an adoption.
                    Err(Error::StoreLost(_)) => {}
                    // Counted and logged (on the transition) inside sync_once.
                    Err(e) => tracing::debug!(error = %e, "budget sync round failed"),
                }
            }
        });
        SyncTask {
            stop,
            join,
            reconcile,
            presence,
            budgets: Arc::clone(self),
        }
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
        // Before anything is written: a store that lost its data gets no report and no seed.
        self.check_identity().await?;
        // Then presence: a round takes grants only under a session the fleet knows is alive;
        // a session found dead is replaced here, books and all. Without a renewal the round
        // still reports what was spent and handed back, asking for nothing, so a node cut off
        // from its presence key's shard keeps its spend counted.
        let (session, unrenewed) = match self.heartbeat().await {
            Ok(session) => (session, None),
            Err(e) => (self.session.load_full(), Some(e)),
        };
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
        let mut days = Days::new(self.clock.now_ms());
        for c in &index.all {
            let prepared = self.prepare(c, full, &mut days);
            stats.add(c.key(), &prepared);
            if let Some(item) = prepared.item {
                items.push(item);
                synced.push(Arc::clone(c));
            }
        }
        stats.publish(&self.metrics);
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
                    day: None,
                }),
        );
        if unrenewed.is_some() {
            for item in &mut items {
                item.want = 0;
            }
        }
        report.campaigns = items.len();
        self.metrics.sync_campaigns.set(items.len() as f64);
        if items.is_empty() {
            return unrenewed.map_or(Ok(report), Err);
        }
        let started = Instant::now();
        let result = self.store.sync_partial(&session, &items).await;
        self.metrics
            .sync_seconds
            .record(started.elapsed().as_secs_f64());
        if result.answers.len() != items.len() {
            let e = Error::Protocol(format!(
                "{} answers for {} campaigns",
                result.answers.len(),
                items.len()
            ));
            self.store_failed("sync", &e);
            return Err(e);
        }
        let answers = result.answers;
        // A part of the store that failed (a shard, a timed-out group) changes nothing for its
        // campaigns: their counts go in the next report, as after a failed round.
        for ((c, item), answer) in synced.iter().zip(&items).zip(&answers) {
            match answer {
                SyncAnswer::Granted(g) => report.credited += self.apply(c, item, Some(g)),
                SyncAnswer::Absent => report.credited += self.apply(c, item, None),
                SyncAnswer::Unanswered => {}
            }
        }
        let found: Vec<CampaignKey> = items[known..]
            .iter()
            .zip(&answers[known..])
            .filter(|(_, a)| matches!(a, SyncAnswer::Granted(_)))
            .map(|(item, _)| item.key.clone())
            .collect();
        if let Some(e) = result.error {
            self.store_failed("sync", &e);
            if answers.iter().all(|a| *a == SyncAnswer::Unanswered) {
                return Err(e);
            }
        } else if unrenewed.is_none() {
            self.store_ok();
        }
        if !found.is_empty() {
            report.discovered += found.len();
            self.insert(&found);
        }
        unrenewed.map_or(Ok(report), Err)
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
        if self.identity.lost() {
            // Nothing to report to: the store that granted these leases is gone.
            return Err(Error::StoreLost("at release".to_owned()));
        }
        let touched: Vec<&CampaignHandle> = index.all.iter().filter(|c| c.book().sent).collect();
        let session = self.session.load_full();
        let deadline = Instant::now() + Duration::from_millis(self.cfg.shutdown_timeout_ms);
        loop {
            let items: Vec<SyncItem> = touched.iter().map(|c| final_report(c, &c.book())).collect();
            if items.is_empty() {
                break;
            }
            let result = match self.store.sync(&session, &items).await {
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
                            session = %session,
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
        if let Err(e) = self.store.end_session(&session, &keys).await {
            // Only tidiness: the records hold nothing any more.
            tracing::warn!(error = %e, "could not clear this session's records in the store");
        }
        report.campaigns = keys.len();
        report.charged = index.all.iter().map(|c| c.charged_total()).sum();
        Ok(report)
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

    /// Folds one round into a campaign's book and decides whether it is in this report.
    fn prepare(&self, c: &Campaign, full: bool, days: &mut Days) -> Prepared {
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
        // A remnant too small for this round's bids while the store has nothing more: handed
        // back without asking for more this round, it pools with the other nodes' remnants
        // into an impression the next node to ask can buy, instead of nodes × (one price − 1
        // micro) sitting stranded.
        let pool = book.starved && lease > 0 && unmet > lease;
        let keep = if target == 0 || pool {
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
                want: if pool { 0 } else { target },
                day: days.get(book.tz.as_ref()),
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
            daily_budget: g.daily_budget,
            day: g.day,
            day_spent: g.day_spent,
        });
        if book.tz.as_deref() != Some(g.timezone.as_str()) {
            book.tz = Some(Arc::from(g.timezone.as_str()));
        }
        let mut credited = 0;
        if g.granted > book.credited {
            let add = g.granted - book.credited;
            book.credited = g.granted;
            if g.paused || self.closed.load(Ordering::Acquire) || !self.presence_fresh() {
                // Received but not spendable (paused, closing, or this node's presence may
                // lapse before it could be spent): count it as handed back right away.
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
        // `room` counts every cap (lifetime, daily, pacing): a paced campaign that reached its
        // line is starved until the line moves on, and syncs in full rounds only.
        book.starved = g.paused || (g.room == 0 && c.lease() < item.want);
        credited
    }

    pub(crate) fn store_failed(&self, op: &'static str, e: &Error) {
        let reason = match e {
            Error::Timeout(_) => "timeout",
            Error::Redis(_) => "redis",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            _ => "other",
        };
        self.metrics.sync_failure(op, reason);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, op, "budget store unreachable; spending only held leases");
        }
    }

    pub(crate) fn store_ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("budget store reachable again");
        }
    }
}

/// The campaigns' days for one round, computed once per time zone from one clock reading.
struct Days {
    now_ms: u64,
    utc: Arc<str>,
    seen: Vec<DayWindow>,
}

impl Days {
    fn new(now_ms: u64) -> Self {
        Days {
            now_ms,
            utc: Arc::from(crate::daily::DEFAULT_TIMEZONE),
            seen: Vec::new(),
        }
    }

    /// The day in `tz` (UTC until the store has named the campaign's zone); `None` if the
    /// zone is unknown to the bundled database (the store then grants a capped campaign
    /// nothing).
    fn get(&mut self, tz: Option<&Arc<str>>) -> Option<DayWindow> {
        let tz = tz.unwrap_or(&self.utc);
        if let Some(d) = self.seen.iter().find(|d| d.tz == *tz) {
            return Some(d.clone());
        }
        match DayWindow::at(tz, self.now_ms) {
            Ok(d) => {
                self.seen.push(d.clone());
                Some(d)
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaign day not computed");
                None
            }
        }
    }
}

/// One campaign's part of a round.
struct Prepared {
    spent: u64,
    lease: u64,
    unreported: u64,
    item: Option<SyncItem>,
}

/// A DSP, and a `cid` when metrics are labelled per campaign.
type Series = (Arc<str>, Option<Arc<str>>);

/// Per-round metric sums, per DSP unless per-campaign labels are on.
struct RoundStats {
    per_campaign: bool,
    /// Spent and lease per series.
    sums: FastMap<Series, (u64, u64)>,
    unreported: u64,
}

impl RoundStats {
    fn new(per_campaign: bool) -> Self {
        RoundStats {
            per_campaign,
            sums: FastMap::default(),
            unreported: 0,
        }
    }

    fn add(&mut self, key: &CampaignKey, p: &Prepared) {
        self.unreported = self.unreported.saturating_add(p.unreported);
        let cid = self.per_campaign.then(|| key.cid.clone());
        let sums = self.sums.entry((key.dsp.clone(), cid)).or_default();
        sums.0 = sums.0.saturating_add(p.spent);
        sums.1 = sums.1.saturating_add(p.lease);
    }

    fn publish(self, metrics: &BudgetMetrics) {
        for ((dsp, cid), (spent, lease)) in self.sums {
            metrics.spend_and_lease(&dsp, cid.as_deref(), spent, lease);
        }
        metrics.unreported.set(self.unreported as f64);
    }
}

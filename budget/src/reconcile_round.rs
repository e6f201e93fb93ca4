//! The reconcile round's glue: recording charged wins and billed impressions on the request
//! path, sending them in numbered batches and settling due buckets (see `reconcile` for the
//! counts and `store::recon` for the store's side).

use crate::budgets::Budgets;
use crate::key::CampaignKey;
use crate::reconcile::{wall_clock_ms, ReconcileReport, Reconciliation, Side};
use crate::Error;
use std::time::{Duration, Instant};

impl Budgets {
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

    /// One reconcile round at the wall clock (see [`Budgets::reconcile_at`]). Not the
    /// injected clock: buckets are keyed by auction timestamps, which the exchange takes from
    /// the wall clock, and settling them by another clock would credit wins still billable.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, Error> {
        self.reconcile_at(wall_clock_ms()).await
    }

    /// One reconcile round as if the clock read `now_ms`: sends this node's counts (or resends
    /// the batches the store has not confirmed) and settles the buckets that ended
    /// `settle_after_ms` before `now_ms`, in one store call. A failed round keeps every count
    /// for the next one; a resent batch counts once.
    pub async fn reconcile_at(&self, now_ms: u64) -> Result<ReconcileReport, Error> {
        if self.identity.lost() {
            return Err(Error::StoreLost("no reconciliation into it".to_owned()));
        }
        let batches = self.recon.outgoing();
        let args = self.cfg.recon_args(now_ms);
        let started = Instant::now();
        let session = self.session.load_full();
        let result = self.store.reconcile(&session, &batches, &args).await;
        self.metrics
            .reconcile_seconds
            .record(started.elapsed().as_secs_f64());
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
        let m = &self.metrics;
        m.reconcile_credited.increment(report.settle.credited);
        m.reconcile_billed_beyond
            .increment(report.settle.billed_beyond_charged);
        m.reconcile_late.increment(report.late as u64);
        let (charged, billed) = self.recon.unreported(None);
        m.reconcile_unreported_charged.set(charged as f64);
        m.reconcile_unreported_billed.set(billed as f64);
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
    pub(crate) async fn flush_reconciliation_until(
        &self,
        deadline: Instant,
        limit: Duration,
    ) -> Result<ReconcileReport, Error> {
        let mut total = ReconcileReport::default();
        while !self.recon.is_idle() {
            if self.identity.lost() {
                return Err(Error::StoreLost("no reconciliation into it".to_owned()));
            }
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
}

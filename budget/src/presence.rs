//! A node's presence in the store and the recovery of dead nodes' leases.
//!
//! Every sync round renews this node's presence (`node_ttl_ms`) before it reports anything.
//! Beside the sync loop a task ticking every half sync interval:
//! - stops this node spending once its presence may lapse: when the last renewal that
//!   succeeded was sent more than `node_ttl_ms - sync_interval_ms` ago, every lease is zeroed
//!   (counted as handed back) and grants that arrive are not spent, so the node has stopped
//!   before any other node can find it dead;
//! - reaps dead sessions: the sessions listed in the store are read at most once per
//!   `node_ttl_ms / 2`, and each is probed when its presence is due to expire; one found
//!   expired is declared dead and its unspent leases go back to their campaigns, exactly once
//!   whichever nodes race (see `store/redis_presence.rs`).
//!
//! A node whose own session was declared dead (paused past the TTL, cut off from Redis) finds
//! out at its next renewal: it starts a fresh session with fresh books (its leases were zeroed
//! first, see `identity.rs` `start_afresh`), so it never spends the lease that was returned.

use crate::budgets::{lock, new_session, Budgets};
use crate::campaign::final_report;
use crate::store::{Presence, Reap};
use crate::Error;
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// The reaper's schedule: when to list the sessions again, and when to probe each.
#[derive(Default)]
struct Schedule {
    next_list: Option<Instant>,
    probes: HashMap<String, Instant>,
}

impl Budgets {
    /// Renews this node's presence; after finding its session declared dead, starts a fresh
    /// one and renews that. Answers the session the round must report under.
    pub(crate) async fn heartbeat(&self) -> Result<Arc<String>, Error> {
        for _ in 0..2 {
            let session = self.session.load_full();
            let sent = Instant::now();
            match self.store.heartbeat(&session, self.cfg.node_ttl_ms).await {
                Ok(Presence::Alive) => {
                    *lock(&self.presence) = Some(sent);
                    return Ok(session);
                }
                Ok(Presence::Reaped) => {
                    self.last_report(&session).await;
                    self.restart_session(&session);
                }
                Err(e) => {
                    self.store_failed("heartbeat", &e);
                    return Err(e);
                }
            }
        }
        Err(Error::Protocol(
            "a fresh budget session was declared dead at once".to_owned(),
        ))
    }

    /// Whether this node may spend and take grants: its last renewal is recent enough that no
    /// node can find it dead before the next check. The margin is one sync interval (the
    /// checks come every half interval) plus a tenth of the TTL for a busy scheduler, at most
    /// half of what the TTL leaves beyond two intervals (so a healthy node, renewing every
    /// interval, stays fresh).
    pub(crate) fn presence_fresh(&self) -> bool {
        let ttl = self.cfg.node_ttl();
        let interval = self.cfg.sync_interval();
        let slack = (ttl / 10).min(ttl.saturating_sub(interval * 2) / 2);
        let limit = ttl.saturating_sub(interval).saturating_sub(slack);
        lock(&self.presence).is_some_and(|sent| sent.elapsed() < limit)
    }

    /// Before the books of a session declared dead are dropped: every lease is zeroed (so
    /// nothing more is charged under it) and what it charged since its last report is sent,
    /// with nothing asked for. The store counts that spend (the wins happened) and grants the
    /// session nothing; a failure here only leaves that spend unrecorded, as a crash would.
    async fn last_report(&self, session: &str) {
        let index = self.index.load_full();
        let mut items = Vec::new();
        for c in &index.all {
            let mut book = c.book();
            let taken = c.take_above(0);
            book.returned += taken;
            if book.sent {
                items.push(final_report(c, &book));
            }
        }
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.store.sync(session, &items).await {
            tracing::warn!(error = %e, session, "could not report the dead session's last spend");
        }
    }

    /// Starts a fresh session after `dead` was declared dead, once however many callers race.
    fn restart_session(&self, dead: &str) {
        let mut presence = lock(&self.presence);
        if self.session.load().as_str() != dead {
            return;
        }
        self.start_afresh();
        let fresh = new_session(&self.cfg.node_id);
        tracing::error!(
            dead,
            fresh = %fresh,
            "this node's budget session was declared dead (silent past node_ttl_ms); its leases went back to their campaigns, starting a fresh session"
        );
        self.session.store(Arc::new(fresh));
        *presence = None;
        self.metrics.session_restarts.increment(1);
    }

    /// Zeroes every lease when the presence may lapse (see the module).
    fn watchdog(&self) {
        if self.presence_fresh() {
            return;
        }
        let mut taken_total = 0u64;
        for c in &self.index.load().all {
            let mut book = c.book();
            let taken = c.take_above(0);
            book.returned += taken;
            taken_total += taken;
        }
        if taken_total > 0 {
            tracing::warn!(
                micros = taken_total,
                "budget presence not renewed within node_ttl_ms; leases given up until it is"
            );
        }
    }

    /// Starts the presence task (see the module); it ends when `stopped` changes. The
    /// watchdog and the reaper run side by side in it, so a reaper call waiting on a dead
    /// Redis never delays the watchdog.
    pub(crate) fn spawn_presence(
        self: &Arc<Self>,
        mut stopped: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let budgets = Arc::clone(self);
        tokio::spawn(async move {
            let every = (budgets.cfg.sync_interval() / 2).max(Duration::from_millis(1));
            let watch = async {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    budgets.watchdog();
                }
            };
            let reap = async {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut schedule = Schedule::default();
                loop {
                    tick.tick().await;
                    if budgets.closed.load(Ordering::Acquire) || budgets.identity.lost() {
                        continue;
                    }
                    budgets.reap_due(&mut schedule).await;
                }
            };
            tokio::select! {
                _ = stopped.changed() => {}
                () = watch => {}
                () = reap => {}
            }
        })
    }

    async fn reap_due(&self, schedule: &mut Schedule) {
        let now = Instant::now();
        let ttl = self.cfg.node_ttl();
        if schedule.next_list.is_none_or(|at| now >= at) {
            schedule.next_list = Some(now + ttl / 2);
            match self.store.sessions().await {
                Ok(listed) => {
                    schedule.probes.retain(|s, _| listed.contains(s));
                    for s in listed {
                        schedule.probes.entry(s).or_insert(now);
                    }
                }
                Err(e) => self.store_failed("sessions", &e),
            }
        }
        let own = self.session.load_full();
        let due: Vec<String> = schedule
            .probes
            .iter()
            .filter(|(s, at)| **at <= now && s.as_str() != own.as_str())
            .map(|(s, _)| s.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let results = join_all(due.iter().map(|s| self.store.reap(s))).await;
        for (session, result) in due.into_iter().zip(results) {
            match result {
                Ok(Reap::Alive { expires_in_ms }) => {
                    // Probed again just after its presence would expire, unless renewed.
                    let wait = Duration::from_millis(expires_in_ms.saturating_add(1)).min(ttl);
                    schedule.probes.insert(session, Instant::now() + wait);
                }
                Ok(Reap::Reaped { first, micros }) => {
                    if first {
                        self.metrics.sessions_reclaimed.increment(1);
                    }
                    self.metrics.lease_reclaimed.increment(micros);
                    if first || micros > 0 {
                        tracing::warn!(
                            %session,
                            micros,
                            "budget session silent past node_ttl_ms declared dead; its unspent leases went back to their campaigns"
                        );
                    }
                    schedule.probes.remove(&session);
                }
                Err(e) => {
                    self.store_failed("reap", &e);
                    schedule
                        .probes
                        .insert(session, Instant::now() + self.cfg.sync_interval());
                }
            }
        }
    }
}

//! The central store of campaign totals: the `Store` trait, its message types and the
//! per-campaign sync rule both stores implement (Redis in Lua, memory in Rust).
//!
//! A node's session reports cumulative numbers, never deltas: what it was granted so far, what
//! it charged so far, what it handed back so far, plus the lease it wants to hold. The store
//! keeps the same three numbers per session and applies only the increase, so a report sent
//! twice (a reply lost to a timeout, then a retry) counts once, and a report that never arrived
//! is covered by the next one. The store's `held` is the sum over sessions of
//! `granted - spent - returned`; a grant is at most `budget - spent - held`, which keeps
//! `spent + held ≤ budget` after every sync. A campaign with a daily budget also keeps
//! `day_spent + held ≤ daily_budget` for its current day, and an even-paced one
//! `day_spent + held ≤ line(now)` (see `daily`).

mod layout;
pub mod memory;
mod migrate;
pub mod recon;
pub mod redis;
mod redis_presence;
mod redis_recon;

use crate::config::BudgetConfig;
use crate::daily::{DailyChange, DailySettings, DayWindow, Pacing};
use crate::key::CampaignKey;
use crate::Error;
use futures::future::BoxFuture;
use recon::{ReconArgs, ReconBatch, ReconReply, ReconTotals};
use serde::Serialize;
use std::sync::Arc;

/// The largest amount the store keeps exactly (Redis Lua numbers are doubles: 2^53 - 1 micros,
/// about nine billion dollars).
pub const MAX_MICROS: u64 = (1 << 53) - 1;

/// One campaign in a node's sync report. All amounts are cumulative for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncItem {
    /// The campaign.
    pub key: CampaignKey,
    /// Micros granted to this session that the node has received.
    pub granted: u64,
    /// Micros this session has charged.
    pub spent: u64,
    /// Micros this session has handed back.
    pub returned: u64,
    /// The lease the node wants to hold after this sync (the store tops it up to this).
    pub want: u64,
    /// The campaign's day by the node's clock, in the zone the node believes the campaign has.
    /// A campaign with a daily budget gets no grant without the right one (wrong zone, or a
    /// day the store has already left).
    pub day: Option<DayWindow>,
}

/// The store's answer for one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Micros granted to this session so far (cumulative); the node credits the increase.
    pub granted: u64,
    /// The campaign's budget.
    pub budget: u64,
    /// Spent across all nodes, as reported.
    pub spent: u64,
    /// Held in leases across all nodes.
    pub held: u64,
    /// Paused campaigns get no new money.
    pub paused: bool,
    /// What the store could still grant now, after this grant (every cap applied).
    pub room: u64,
    /// The campaign's daily budget, if it has one.
    pub daily_budget: Option<u64>,
    /// The store's current day of the campaign (`yyyymmdd`, 0 before the first).
    pub day: u64,
    /// Spent during that day, as reported.
    pub day_spent: u64,
    /// How the day's budget is spent.
    pub pacing: Pacing,
    /// The campaign's time zone.
    pub timezone: String,
}

/// One session's share of a campaign, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeHold {
    /// `{node_id}-{incarnation}`.
    pub session: String,
    /// Granted to it so far.
    pub granted: u64,
    /// Reported spent so far.
    pub spent: u64,
    /// Handed back so far.
    pub returned: u64,
    /// Still held: `granted - spent - returned`.
    pub held: u64,
    /// An operator reclaimed its lease (the session gets no more money).
    pub reclaimed: bool,
}

/// A campaign as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignState {
    /// The campaign.
    pub key: CampaignKey,
    /// Total budget.
    pub budget: u64,
    /// Spent across all nodes, as reported.
    pub spent: u64,
    /// Held in leases across all nodes.
    pub held: u64,
    /// No new leases while paused.
    pub paused: bool,
    /// At most this much spent per day, if set.
    pub daily_budget: Option<u64>,
    /// How the day's budget is spent.
    pub pacing: Pacing,
    /// The zone whose midnight starts the campaign's day.
    pub timezone: String,
    /// The store's current day of the campaign (`yyyymmdd`, 0 before the first report).
    pub day: u64,
    /// Spent during `day`, as reported (reports count in the day they reach the store).
    pub day_spent: u64,
    /// Per session, sorted by name.
    pub nodes: Vec<NodeHold>,
}

/// The central store of budgets. Every method is one bounded call: implementations must finish
/// or fail within their own timeout and must not block the calling thread.
pub trait Store: Send + Sync + 'static {
    /// Applies a node's cumulative report and tops its leases up, atomically per campaign, in
    /// one round trip. Answers in item order; `None` for a campaign the store does not have.
    fn sync<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, Result<Vec<Option<Grant>>, Error>>;

    /// Forgets a session's per-campaign records where it holds nothing (after a final sync with
    /// everything handed back). Records still holding money are kept for an operator to see.
    fn end_session<'a>(
        &'a self,
        session: &'a str,
        keys: &'a [CampaignKey],
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Every campaign the store knows.
    fn campaigns(&self) -> BoxFuture<'_, Result<Vec<CampaignKey>, Error>>;

    /// Creates the campaign unless it exists, with its daily settings; `true` if it was created.
    fn seed_if_absent<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
        paused: bool,
        daily: &'a DailySettings,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Changes a campaign's daily settings ([`Error::NotFound`] if absent). `day` is the
    /// campaign's day in the zone it has after the change, by the caller's clock: a new zone
    /// moves the campaign to that day keeping what it spent today; the same zone moves it
    /// forward only, as a sync does. Refuses a daily budget below `day_spent + held`
    /// ([`Error::DailyBelowCommitted`]).
    fn set_daily<'a>(
        &'a self,
        key: &'a CampaignKey,
        change: &'a DailyChange,
        day: &'a DayWindow,
    ) -> BoxFuture<'a, Result<CampaignState, Error>>;

    /// Creates the campaign or sets its budget. Refuses a budget below `spent + held`.
    fn set_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>>;

    /// Creates the campaign or raises its budget by `micros`.
    fn add_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        micros: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>>;

    /// Pauses or resumes a campaign ([`Error::NotFound`] if absent).
    fn set_paused<'a>(
        &'a self,
        key: &'a CampaignKey,
        paused: bool,
    ) -> BoxFuture<'a, Result<CampaignState, Error>>;

    /// The campaign's totals and per-session holdings, `None` if absent.
    fn state<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<CampaignState>, Error>>;

    /// Writes off a dead session's lease: its held money becomes available again and the session
    /// gets no more. Returns the micros released. Only for sessions known to be gone: a live
    /// one could still spend what it holds, which would then exceed the budget.
    fn reclaim<'a>(
        &'a self,
        key: &'a CampaignKey,
        session: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>>;

    /// Applies a session's reconciliation batches in order, each at most once (see
    /// [`ReconBatch`]), then settles up to `args.max_settle` due buckets, in one round trip.
    /// Answers per batch in order. A bucket size other than the one the store has seen first
    /// is refused ([`Error::Config`]) without applying any batch.
    fn reconcile<'a>(
        &'a self,
        session: &'a str,
        batches: &'a [ReconBatch],
        args: &'a ReconArgs,
    ) -> BoxFuture<'a, Result<ReconReply, Error>>;

    /// The campaign's reconciliation totals, `None` if the campaign is absent.
    fn reconciliation<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<ReconTotals>, Error>>;

    /// The store's identity and fence, in one call.
    fn identity(&self) -> BoxFuture<'_, Result<StoreIdentity, Error>>;

    /// Writes `id` as the store's identity unless it has one; answers the identity the store
    /// holds afterwards (`id`, or the one another node wrote first).
    fn init_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, Error>>;

    /// Fences the store (see [`StoreIdentity::fenced`]); `reason` is kept for an operator.
    fn fence<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// The operator's word after a data loss, atomically: every campaign in the store is
    /// replaced by exactly the stated ones (budget, spent, nothing held, no sessions), the
    /// identity becomes `id` and the fence is lifted.
    fn adopt<'a>(
        &'a self,
        id: &'a str,
        campaigns: &'a [StatedCampaign],
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// [`Store::sync`] where a part of the store may fail alone (a cluster shard down, a call
    /// timed out): answers per item, [`SyncAnswer::Unanswered`] for the items of a failed part
    /// (their counts go in the next report, as after a failed sync), and the first error.
    fn sync_partial<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, PartialSync> {
        Box::pin(async move {
            match self.sync(session, items).await {
                Ok(grants) => PartialSync {
                    answers: grants
                        .into_iter()
                        .map(|g| g.map_or(SyncAnswer::Absent, SyncAnswer::Granted))
                        .collect(),
                    error: None,
                },
                Err(e) => PartialSync {
                    answers: vec![SyncAnswer::Unanswered; items.len()],
                    error: Some(e),
                },
            }
        })
    }

    /// Renews the session's presence for `ttl_ms` and lists the session among the nodes;
    /// [`Presence::Reaped`] when another node declared it dead (its leases were returned).
    /// A store only one process uses (memory) has no one to reap it.
    fn heartbeat<'a>(
        &'a self,
        _session: &'a str,
        _ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Presence, Error>> {
        Box::pin(async { Ok(Presence::Alive) })
    }

    /// The sessions listed as nodes (alive or not yet reaped).
    fn sessions(&self) -> BoxFuture<'_, Result<Vec<String>, Error>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Reaps `session` if its presence expired: declares it dead (so it never renews), returns
    /// its unspent leases to their campaigns exactly once whichever nodes race, and unlists it.
    fn reap<'a>(&'a self, _session: &'a str) -> BoxFuture<'a, Result<Reap, Error>> {
        Box::pin(async {
            Ok(Reap::Alive {
                expires_in_ms: u64::MAX,
            })
        })
    }
}

/// One campaign's answer in a [`PartialSync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAnswer {
    /// The store applied the report.
    Granted(Grant),
    /// The store has no such campaign.
    Absent,
    /// This part of the store did not answer: nothing is known to have been applied.
    Unanswered,
}

/// A sync's answers when parts of the store may fail alone.
#[derive(Debug)]
pub struct PartialSync {
    /// Per item, in order.
    pub answers: Vec<SyncAnswer>,
    /// The first failure, if any part failed.
    pub error: Option<Error>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Renewed.
    Alive,
    /// The session was declared dead and its leases returned: start a fresh session.
    Reaped,
}

/// What a reap of one session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// The session is present; its presence ends in this many ms unless renewed.
    Alive {
        /// Milliseconds until its presence expires.
        expires_in_ms: u64,
    },
    /// The session is dead, its leases returned and it is unlisted.
    Reaped {
        /// This call declared it dead (one node does, whatever the race).
        first: bool,
        /// Micros this call returned to their campaigns (0 for a session already reclaimed).
        micros: u64,
    },
}

/// The store's identity as a node reads it each round (see `identity.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreIdentity {
    /// The id written when the store was first initialised (or last adopted); `None` in a
    /// store that has never been initialised, or that lost its data.
    pub id: Option<String>,
    /// A node found the store's data lost and fenced it: no node spends until an operator
    /// adopts the store ([`Store::adopt`]).
    pub fenced: bool,
}

/// One campaign as an operator states it when adopting a store that lost its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatedCampaign {
    /// The campaign.
    pub key: CampaignKey,
    /// Its total budget.
    pub budget: u64,
    /// What the fleet has already spent of it (may exceed `budget`: then nothing is left).
    pub spent: u64,
    /// Created paused.
    pub paused: bool,
    /// Its daily settings (the day's spend starts again from zero).
    pub daily: DailySettings,
}

/// The store the config asks for: Redis when `redis_url` is set, else in process. Call it
/// inside the tokio runtime that will run the sync loop.
pub fn open_store(cfg: &BudgetConfig) -> Result<Arc<dyn Store>, Error> {
    match &cfg.redis_url {
        Some(url) => Ok(Arc::new(redis::RedisStore::open(
            url,
            &cfg.key_prefix,
            cfg.redis_timeout(),
        )?)),
        None => Ok(Arc::new(memory::MemoryStore::new())),
    }
}

/// A campaign's totals, as the sync rule reads and writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    pub budget: u64,
    pub spent: u64,
    pub held: u64,
    pub paused: bool,
    pub daily: Option<u64>,
    pub pacing: Pacing,
    pub tz: String,
    pub day: u64,
    pub day_spent: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            budget: 0,
            spent: 0,
            held: 0,
            paused: false,
            daily: None,
            pacing: Pacing::Asap,
            tz: crate::daily::DEFAULT_TIMEZONE.to_owned(),
            day: 0,
            day_spent: 0,
        }
    }
}

impl Totals {
    /// Moves to the day of `window` when it is in the campaign's zone and later than the
    /// store's (never backwards: a node whose clock lags cannot undo a day change); whether
    /// the window is the store's current day afterwards.
    pub fn advance_day(&mut self, window: Option<&DayWindow>) -> bool {
        let Some(w) = window.filter(|w| *w.tz == *self.tz) else {
            return false;
        };
        if w.id > self.day {
            self.day = w.id;
            self.day_spent = 0;
        }
        w.id == self.day
    }

    /// What the daily cap and pacing leave to grant now, at most `left`.
    pub fn daily_room(&self, left: u64, today: Option<&DayWindow>) -> u64 {
        let Some(daily) = self.daily else {
            return left;
        };
        let Some(w) = today else {
            return 0;
        };
        let committed = self.day_spent.saturating_add(self.held);
        let mut room = left.min(daily.saturating_sub(committed));
        if self.pacing == Pacing::Even {
            room = room.min(w.line(daily).saturating_sub(committed));
        }
        room
    }
}

/// A session's record within a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Session {
    pub granted: u64,
    pub spent: u64,
    pub returned: u64,
    pub reclaimed: bool,
}

impl Session {
    pub fn held(&self) -> u64 {
        self.granted
            .saturating_sub(self.spent)
            .saturating_sub(self.returned)
    }
}

/// The sync rule for one campaign and one session. `sync.lua` is a line-by-line copy; keep the
/// two in step (the store contract tests run both).
pub(crate) fn apply_sync(totals: &mut Totals, session: &mut Session, item: &SyncItem) -> Grant {
    // Reports count in the store's current day, after the day moved forward if it did.
    let today = totals.advance_day(item.day.as_ref());
    // A node can know of a grant the store has lost (Redis restored from an older snapshot):
    // count it as held again rather than hand the same money out twice.
    if item.granted > session.granted && !session.reclaimed {
        totals.held = totals.held.saturating_add(item.granted - session.granted);
        session.granted = item.granted;
    }
    let mut held = session.held();
    let new_spent = item.spent.saturating_sub(session.spent);
    let new_returned = item.returned.saturating_sub(session.returned);
    session.spent = session.spent.max(item.spent);
    session.returned = session.returned.max(item.returned);
    totals.spent = totals.spent.saturating_add(new_spent);
    totals.day_spent = totals.day_spent.saturating_add(new_spent);
    let gone = new_spent.saturating_add(new_returned).min(held);
    totals.held = totals.held.saturating_sub(gone);
    held -= gone;
    let left = totals
        .budget
        .saturating_sub(totals.spent)
        .saturating_sub(totals.held);
    let mut available = totals.daily_room(left, item.day.as_ref().filter(|_| today));
    let mut grant = 0;
    if !totals.paused && !session.reclaimed && item.want > held {
        grant = (item.want - held).min(available);
    }
    available -= grant;
    session.granted += grant;
    totals.held = totals.held.saturating_add(grant);
    Grant {
        granted: session.granted,
        budget: totals.budget,
        spent: totals.spent,
        held: totals.held,
        paused: totals.paused,
        room: available,
        daily_budget: totals.daily,
        day: totals.day,
        day_spent: totals.day_spent,
        pacing: totals.pacing,
        timezone: totals.tz.clone(),
    }
}

/// An admin change of the daily settings (see [`Store::set_daily`]); `budget.lua`'s `daily`
/// mode is a line-by-line copy.
pub(crate) fn apply_daily(
    totals: &mut Totals,
    change: &DailyChange,
    day: &DayWindow,
) -> Result<(), Error> {
    let mut next = totals.clone();
    if let Some(daily) = change.daily_budget_micros {
        next.daily = daily;
    }
    if let Some(pacing) = change.pacing {
        next.pacing = pacing;
    }
    if let Some(tz) = &change.timezone {
        // A new zone has its own day ids: take the caller's, keeping what was spent today.
        if *tz != next.tz && **tz == *day.tz {
            next.tz = tz.clone();
            next.day = day.id;
        }
    }
    next.advance_day(Some(day));
    if let Some(daily) = next.daily {
        if daily > MAX_MICROS {
            return Err(Error::TooLarge(daily));
        }
        let committed = next.day_spent.saturating_add(next.held);
        if daily < committed {
            return Err(Error::DailyBelowCommitted { daily, committed });
        }
    }
    *totals = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(granted: u64, spent: u64, returned: u64, want: u64) -> SyncItem {
        SyncItem {
            key: CampaignKey::new("d", "c"),
            granted,
            spent,
            returned,
            want,
            day: None,
        }
    }

    #[test]
    fn grants_are_capped_by_what_is_left() {
        let mut totals = Totals {
            budget: 1_000,
            ..Totals::default()
        };
        let (mut a, mut b) = (Session::default(), Session::default());
        assert_eq!(
            apply_sync(&mut totals, &mut a, &item(0, 0, 0, 700)).granted,
            700
        );
        assert_eq!(
            apply_sync(&mut totals, &mut b, &item(0, 0, 0, 700)).granted,
            300
        );
        assert_eq!(totals.held, 1_000);
        // a spent 200 and hands 100 back: b may top up by the 100, not by what a still holds.
        let g = apply_sync(&mut totals, &mut a, &item(700, 200, 100, 0));
        assert_eq!((g.spent, g.held), (200, 700));
        assert_eq!(
            apply_sync(&mut totals, &mut b, &item(300, 0, 0, 700)).granted,
            400
        );
        assert_eq!(totals.held, 800);
        assert_eq!(totals.spent + totals.held, 1_000);
    }

    #[test]
    fn a_repeated_report_counts_once() {
        let mut totals = Totals {
            budget: 1_000,
            ..Totals::default()
        };
        let mut s = Session::default();
        apply_sync(&mut totals, &mut s, &item(0, 0, 0, 500));
        let first = apply_sync(&mut totals, &mut s, &item(500, 300, 0, 500));
        let again = apply_sync(&mut totals, &mut s, &item(500, 300, 0, 500));
        assert_eq!(first, again);
        assert_eq!((totals.spent, totals.held), (300, 500));
    }

    #[test]
    fn a_lost_grant_is_held_again() {
        let mut totals = Totals {
            budget: 1_000,
            ..Totals::default()
        };
        let mut s = Session::default();
        // The store forgot everything, the node still holds 400 of which it spent 100.
        let g = apply_sync(&mut totals, &mut s, &item(400, 100, 0, 300));
        assert_eq!((g.spent, g.held, g.granted), (100, 300, 400));
    }

    #[test]
    fn paused_and_reclaimed_get_nothing() {
        let mut totals = Totals {
            budget: 1_000,
            paused: true,
            ..Totals::default()
        };
        let mut s = Session::default();
        assert_eq!(
            apply_sync(&mut totals, &mut s, &item(0, 0, 0, 500)).granted,
            0
        );
        totals.paused = false;
        let mut dead = Session {
            reclaimed: true,
            ..Session::default()
        };
        assert_eq!(
            apply_sync(&mut totals, &mut dead, &item(0, 0, 0, 500)).granted,
            0
        );
    }
}

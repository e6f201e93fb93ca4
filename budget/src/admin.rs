//! The admin operations: set, raise or pause a campaign's budget, change its daily budget,
//! pacing and time zone, read the store's and this node's view of it, and reclaim a dead
//! session's lease.

use crate::budgets::Budgets;
use crate::campaign::{charged, Campaign};
use crate::daily::{check_timezone, DailyChange, DayWindow};
use crate::key::CampaignKey;
use crate::store::{CampaignState, MAX_MICROS};
use crate::Error;
use serde::Serialize;

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

impl Budgets {
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

    /// Changes a campaign's daily budget, pacing or time zone ([`Error::NotFound`] if absent;
    /// [`Error::DailyBelowCommitted`] below what is spent today or leased out). Nodes apply it
    /// at their next sync of the campaign; a new zone takes them one more round to learn.
    pub async fn set_daily(
        &self,
        dsp: &str,
        cid: &str,
        change: &DailyChange,
    ) -> Result<CampaignState, Error> {
        let key = CampaignKey::new(dsp, cid);
        if let Some(daily) = change.daily_budget_micros.flatten() {
            if daily > MAX_MICROS {
                return Err(Error::TooLarge(daily));
            }
        }
        let tz = match &change.timezone {
            Some(tz) => {
                check_timezone(tz)?;
                tz.clone()
            }
            None => {
                self.store
                    .state(&key)
                    .await?
                    .ok_or_else(|| Error::NotFound(key.clone()))?
                    .timezone
            }
        };
        let day = self.day_in(&tz)?;
        let state = self.store.set_daily(&key, change, &day).await?;
        self.adopt(&key, &state);
        Ok(state)
    }

    /// The day in zone `tz` by this node's clock.
    pub fn day_in(&self, tz: &str) -> Result<DayWindow, Error> {
        DayWindow::at(&std::sync::Arc::from(tz), self.clock.now_ms())
    }

    /// What a campaign spent today by this node's clock: the store's `day_spent` while the
    /// store is on today, 0 once the day has turned and no report has landed in it yet.
    pub fn spent_today(&self, state: &CampaignState) -> Result<(DayWindow, u64), Error> {
        let today = self.day_in(&state.timezone)?;
        let spent = if state.day >= today.id {
            state.day_spent
        } else {
            0
        };
        Ok((today, spent))
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

//! In-process store: the embedded default when no Redis is configured, same rules as Redis.

use super::{apply_sync, CampaignState, Grant, NodeHold, Session, Store, SyncItem, Totals};
use crate::key::CampaignKey;
use crate::store::MAX_MICROS;
use crate::Error;
use futures::future::{self, BoxFuture, FutureExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Record {
    totals: Totals,
    sessions: BTreeMap<String, Session>,
}

/// Budgets kept in this process. The mutex is held only for plain arithmetic, never across
/// `.await` (every method completes before returning its future).
#[derive(Debug, Default)]
pub struct MemoryStore {
    campaigns: Mutex<HashMap<CampaignKey, Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CampaignKey, Record>> {
        // Every update under this lock is integer arithmetic that cannot panic halfway, so a
        // poisoned map is still consistent.
        self.campaigns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sync_now(&self, session: &str, items: &[SyncItem]) -> Vec<Option<Grant>> {
        let mut map = self.lock();
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
        let mut map = self.lock();
        let totals = map.get(key).map(|r| r.totals).unwrap_or_default();
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

fn snapshot(key: &CampaignKey, record: &Record) -> CampaignState {
    CampaignState {
        key: key.clone(),
        budget: record.totals.budget,
        spent: record.totals.spent,
        held: record.totals.held,
        paused: record.totals.paused,
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
        let mut map = self.lock();
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
        let keys = self.lock().keys().cloned().collect();
        future::ready(Ok(keys)).boxed()
    }

    fn seed_if_absent<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
        paused: bool,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        let result = if budget > MAX_MICROS {
            Err(Error::TooLarge(budget))
        } else {
            let mut map = self.lock();
            let created = !map.contains_key(key);
            if created {
                let totals = Totals {
                    budget,
                    paused,
                    ..Totals::default()
                };
                map.insert(
                    key.clone(),
                    Record {
                        totals,
                        sessions: BTreeMap::new(),
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

    fn set_paused<'a>(
        &'a self,
        key: &'a CampaignKey,
        paused: bool,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        let mut map = self.lock();
        let result = match map.get_mut(key) {
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
        let state = self.lock().get(key).map(|record| snapshot(key, record));
        future::ready(Ok(state)).boxed()
    }

    fn reclaim<'a>(
        &'a self,
        key: &'a CampaignKey,
        session: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        let mut map = self.lock();
        let result = match map.get_mut(key) {
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
}

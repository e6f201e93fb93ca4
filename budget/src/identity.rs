//! The store's identity: what a node remembers of the store it spends against, so that a store
//! which lost its data (restarted empty, failed over to an empty replica) stops every node
//! instead of being re-seeded from the config with nothing spent, until an operator states
//! what was spent ([`Budgets::adopt_store`]).
//!
//! The rule, checked before every sync round and before seeding:
//! - a fenced store is lost (the first node that saw the loss fenced it for every node);
//! - no identity in the store and none remembered: a new store; this node writes one;
//! - the identity this node remembers (in memory, and in `state_file` across restarts): fine;
//! - an identity this node does not remember yet (its first start): it is remembered;
//! - an identity an operator wrote by adopting the store: remembered, and the node's books
//!   start afresh (the adopted store knows nothing of its old sessions);
//! - otherwise (the remembered identity vanished or another was created): lost. The node
//!   gives up its leases, fences the store, logs an error, sets
//!   `budget_store_identity_lost` to 1 and neither syncs nor seeds until the store is adopted.

use crate::budgets::Budgets;
use crate::index::Index;
use crate::key::CampaignKey;
use crate::reconcile::wall_clock_ms;
use crate::store::{StatedCampaign, StoreIdentity, MAX_MICROS};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How an identity written by [`Budgets::adopt_store`] starts: every node accepts it.
const ADOPTED: &str = "adopted-";
/// How an identity written by a node finding a store never initialised starts.
const CREATED: &str = "created-";
/// How a fence names the identity it was set against: `id=ID;reason` (`id=-;` for none).
pub(crate) const FENCE_SEEN: &str = "id=";
/// What a node remembers when its state file cannot be read: matches no store identity, so
/// only an adopted store is accepted.
const UNREADABLE: &str = "unreadable-state-file";

/// A node's memory of the store's identity.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    known: Mutex<Option<String>>,
    lost: AtomicBool,
    /// Held while an identity is remembered and written to the state file, so a caller that
    /// finds it already remembered returns only once the file holds it too.
    writing: tokio::sync::Mutex<()>,
}

impl Identity {
    fn known(&self) -> Option<String> {
        crate::budgets::lock(&self.known).clone()
    }

    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// What the check concluded.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The store this node knows.
    Same,
    /// A store never initialised, and this node remembers none: write an identity.
    Fresh,
    /// An identity to remember; `reset` when the node's books belong to another store.
    Accept { id: String, reset: bool },
    /// The store lost its data.
    Lost(String),
}

fn judge(known: Option<&str>, seen: &StoreIdentity) -> Verdict {
    if seen.fenced {
        return Verdict::Lost("the store is fenced: a node found its data lost".to_owned());
    }
    match (seen.id.as_deref(), known) {
        (None, None) => Verdict::Fresh,
        (None, Some(k)) => Verdict::Lost(format!("the store's identity {k} vanished")),
        (Some(s), Some(k)) if s == k => Verdict::Same,
        (Some(s), None) => Verdict::Accept {
            id: s.to_owned(),
            reset: false,
        },
        (Some(s), Some(_)) if s.starts_with(ADOPTED) => Verdict::Accept {
            id: s.to_owned(),
            reset: true,
        },
        (Some(s), Some(k)) => Verdict::Lost(format!(
            "the store's identity changed from {k} to {s} without an adoption"
        )),
    }
}

fn new_id(kind: &str) -> String {
    format!("{kind}{:016x}-{}", rand::random::<u64>(), wall_clock_ms())
}

/// One campaign in an operator's adoption of a store: what the fleet has spent of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatedSpend {
    /// The DSP's configured name.
    pub dsp: String,
    /// The campaign id.
    pub cid: String,
    /// Micros the fleet has spent on it so far (from the event logs: `exchange report`).
    pub spent_micros: u64,
    /// Its total budget; absent: this node's configured budget for it.
    #[serde(default)]
    pub budget_micros: Option<u64>,
    /// Adopted paused.
    #[serde(default)]
    pub paused: bool,
}

/// What an adoption wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptReport {
    /// The store's new identity.
    pub identity: String,
    /// The campaigns now in the store, as stated.
    pub campaigns: Vec<StatedCampaign>,
}

impl Budgets {
    /// Whether this node finds the store's data lost and spends nothing.
    pub fn store_lost(&self) -> bool {
        self.identity.lost()
    }

    /// Reads the identity this node last saw from `state_file`, if configured. An unreadable
    /// file fails closed: only an adopted store is accepted then.
    pub(crate) async fn load_identity(&self) {
        let Some(path) = &self.cfg.state_file else {
            return;
        };
        let known = match tokio::fs::read_to_string(path).await {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot read the budget state file; budgets stay closed until the store is adopted");
                Some(UNREADABLE.to_owned())
            }
        };
        *crate::budgets::lock(&self.identity.known) = known;
    }

    /// Checks the store's identity (see the module's rule). `Ok` when the node may use the
    /// store; [`Error::StoreLost`] when it lost its data; the store's error when unreachable.
    pub(crate) async fn check_identity(&self) -> Result<(), Error> {
        let seen = match self.store.identity().await {
            Ok(seen) => seen,
            Err(e) => {
                self.store_failed("identity", &e);
                return Err(e);
            }
        };
        let known = self.identity.known();
        match judge(known.as_deref(), &seen) {
            Verdict::Same => self.resume(),
            Verdict::Fresh => {
                let held = match self.store.init_identity(&new_id(CREATED)).await {
                    Ok(held) => held,
                    Err(e) => {
                        self.store_failed("identity", &e);
                        return Err(e);
                    }
                };
                tracing::info!(identity = %held, "budget store initialised");
                self.remember(known.as_deref(), &held, false).await;
                self.resume();
            }
            Verdict::Accept { id, reset } => {
                tracing::info!(identity = %id, "budget store identity remembered");
                self.remember(known.as_deref(), &id, reset).await;
                self.resume();
            }
            Verdict::Lost(why) => {
                self.lose(&why, seen.id.as_deref()).await;
                return Err(Error::StoreLost(why));
            }
        }
        Ok(())
    }

    /// The operator's word after the store lost its data: the store is rewritten with exactly
    /// `stated` (each campaign's budget and what the fleet already spent of it, nothing held),
    /// gets a new identity every node accepts, and the fence is lifted; this node resumes at
    /// once, the others at their next round. Refused ([`Error::Adopt`]) while the store has
    /// not lost its data, when a campaign of this node's config is not stated (seeding it
    /// from the config would count nothing spent) or is stated twice.
    pub async fn adopt_store(&self, stated: &[StatedSpend]) -> Result<AdoptReport, Error> {
        let seen = self.store.identity().await?;
        let intact = !seen.fenced && seen.id.is_some();
        if intact && !self.identity.lost() {
            return Err(Error::Adopt(
                "the store has not lost its data; change budgets with the campaign API".into(),
            ));
        }
        let mut seen_keys = HashSet::new();
        let mut campaigns = Vec::with_capacity(stated.len());
        for s in stated {
            let key = CampaignKey::new(&s.dsp, &s.cid);
            if !seen_keys.insert(key.clone()) {
                return Err(Error::Adopt(format!("{key} is stated twice")));
            }
            let seed = self
                .cfg
                .campaigns
                .iter()
                .find(|c| c.dsp == s.dsp && c.cid == s.cid);
            let Some(budget) = s.budget_micros.or(seed.map(|c| c.budget_micros)) else {
                return Err(Error::Adopt(format!(
                    "{key} is not in this node's config: state its budget_micros"
                )));
            };
            for amount in [budget, s.spent_micros] {
                if amount > MAX_MICROS {
                    return Err(Error::TooLarge(amount));
                }
            }
            // The daily settings come from this node's config (an adopted store has none).
            let daily = seed.map(|c| c.daily()).unwrap_or_default();
            campaigns.push(StatedCampaign {
                key,
                budget,
                spent: s.spent_micros,
                paused: s.paused,
                daily,
            });
        }
        if let Some(missing) = self
            .cfg
            .campaigns
            .iter()
            .map(|c| CampaignKey::new(&c.dsp, &c.cid))
            .find(|k| !seen_keys.contains(k))
        {
            return Err(Error::Adopt(format!(
                "{missing} is in this node's config but not stated (state spent_micros 0 if it never ran)"
            )));
        }
        let identity = new_id(ADOPTED);
        self.store.adopt(&identity, &campaigns).await?;
        tracing::warn!(%identity, campaigns = campaigns.len(), "budget store adopted by an operator");
        self.check_identity().await?;
        Ok(AdoptReport {
            identity,
            campaigns,
        })
    }

    /// Remembers `id` in memory and in the state file, if this node still remembers `was`
    /// (the identity the verdict was reached against); with `reset`, its books start afresh in
    /// the same step. A sync round and an adoption may check at once: only the first changes
    /// anything, so books that already synced with the adopted store are never thrown away.
    async fn remember(&self, was: Option<&str>, id: &str, reset: bool) {
        let _writing = self.identity.writing.lock().await;
        {
            let mut known = crate::budgets::lock(&self.identity.known);
            if known.as_deref() != was || known.as_deref() == Some(id) {
                return;
            }
            if reset {
                self.start_afresh();
            }
            *known = Some(id.to_owned());
        }
        if let Some(path) = &self.cfg.state_file {
            if let Err(e) = write_state(path, id).await {
                // The running node still remembers; only a restart would trust the store blindly.
                tracing::error!(error = %e, path = %path.display(), "cannot write the budget state file; a restart of this node will not recognise a store that lost its data");
            }
        }
    }

    fn resume(&self) {
        if self.identity.lost.swap(false, Ordering::AcqRel) {
            tracing::warn!("budget store usable again; spending resumes");
        }
        self.metrics.identity_lost.set(0.0);
    }

    /// Stops spending: every lease is given up (and counted as handed back, in case the store
    /// this node knows comes back), the store is fenced for every node.
    /// `seen` is the identity the verdict was reached against: the fence names it, so a fence
    /// that lands after an adoption (its verdict read the store before) fences nothing.
    async fn lose(&self, why: &str, seen: Option<&str>) {
        if !self.identity.lost.swap(true, Ordering::AcqRel) {
            tracing::error!(reason = why, session = %self.session.load(), "budget store lost its data; no campaign is spendable until an operator adopts it (POST /admin/store/adopt)");
        }
        self.metrics.identity_lost.set(1.0);
        for c in &self.index.load().all {
            let mut book = c.book();
            let taken = c.take_above(0);
            book.returned += taken;
        }
        let reason = format!(
            "{FENCE_SEEN}{};{why} (seen by {} at {} ms)",
            seen.unwrap_or("-"),
            self.session.load(),
            wall_clock_ms()
        );
        if let Err(e) = self.store.fence(&reason).await {
            tracing::warn!(error = %e, "could not fence the budget store");
        }
    }

    /// Forgets every book kept against the old store, or under a session the fleet declared
    /// dead: fresh counters for the same campaigns (every lease zeroed first, so no money of
    /// the old books is spent again) and no pending reconciliation counts (dropping them can
    /// only withhold credits, never give one twice).
    pub(crate) fn start_afresh(&self) {
        let keys: Vec<CampaignKey> = self
            .index
            .load()
            .all
            .iter()
            .map(|c| c.key().clone())
            .collect();
        for c in &self.index.load().all {
            c.take_above(0);
        }
        self.index.store(Arc::new(Index::default()));
        self.insert(&keys);
        self.recon.clear();
    }
}

/// Writes the state file through a temporary file and a rename, so a crash leaves the old
/// identity or the new one, never half of either.
async fn write_state(path: &Path, id: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, format!("{id}\n")).await?;
    let file = tokio::fs::File::open(&tmp).await?;
    file.sync_all().await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: Option<&str>, fenced: bool) -> StoreIdentity {
        StoreIdentity {
            id: id.map(str::to_owned),
            fenced,
        }
    }

    #[test]
    fn the_rule() {
        assert_eq!(judge(None, &seen(None, false)), Verdict::Fresh);
        assert_eq!(judge(Some("a"), &seen(Some("a"), false)), Verdict::Same);
        assert_eq!(
            judge(None, &seen(Some("a"), false)),
            Verdict::Accept {
                id: "a".into(),
                reset: false
            }
        );
        assert!(matches!(
            judge(Some("a"), &seen(None, false)),
            Verdict::Lost(_)
        ));
        assert!(matches!(
            judge(Some("a"), &seen(Some("created-b"), false)),
            Verdict::Lost(_)
        ));
        assert!(matches!(
            judge(Some("a"), &seen(Some("a"), true)),
            Verdict::Lost(_)
        ));
        assert!(matches!(judge(None, &seen(None, true)), Verdict::Lost(_)));
        assert_eq!(
            judge(Some("a"), &seen(Some("adopted-b"), false)),
            Verdict::Accept {
                id: "adopted-b".into(),
                reset: true
            }
        );
        assert!(matches!(
            judge(Some(UNREADABLE), &seen(Some("created-b"), false)),
            Verdict::Lost(_)
        ));
    }
}

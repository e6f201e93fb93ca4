//! A node's budgets: the [`Budgets`] value itself, its construction and startup. The request
//! path lives in `index`, the sync loop in `sync`, the reconcile round in `reconcile_round`
//! and the admin operations in `admin`, each as its own `impl Budgets`.
//!
//! The sync round keeps every report cumulative (see `store`), so rounds may fail, repeat or
//! even overlap without losing or double-counting a micro. The reconcile round (its own task,
//! stopped with the sync loop) sends charged-win and billed-impression counts in numbered
//! batches and settles due buckets (see `reconcile` and `store::recon`); it has the same
//! property.

use crate::clock::Clock;
use crate::config::{BudgetConfig, UnknownPolicy};
use crate::identity::Identity;
use crate::index::{Index, Pending, RECENT_UNKNOWN_SLOTS};
use crate::key::CampaignKey;
use crate::lease::LeasePolicy;
use crate::metrics::{BudgetMetrics, SharedRecorder};
use crate::reconcile::Recorder;
use crate::store::Store;
use crate::sync::SyncTask;
use crate::Error;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A node's campaign budgets. Share it as `Arc<Budgets>`.
pub struct Budgets {
    pub(crate) cfg: BudgetConfig,
    pub(crate) policy: LeasePolicy,
    /// This node's session in the store; replaced when the session was declared dead.
    pub(crate) session: ArcSwap<String>,
    /// Presence: when the last renewal that succeeded was sent.
    pub(crate) presence: Mutex<Option<Instant>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) index: ArcSwap<Index>,
    /// Serialises index rebuilds (never held across `.await`).
    pub(crate) index_writer: Mutex<()>,
    pub(crate) pending: Mutex<Pending>,
    /// Lock-free filter in front of `pending`: hashes of recently queued unknown campaigns.
    pub(crate) recent_unknown: Box<[AtomicU64]>,
    pub(crate) pair_hasher: foldhash::fast::RandomState,
    pub(crate) round: AtomicU64,
    pub(crate) full_every: u64,
    pub(crate) closed: AtomicBool,
    /// The last store call failed (log transitions, not every round of an outage).
    pub(crate) failing: AtomicBool,
    /// Charged-win and billed-impression counts waiting for the reconcile round.
    pub(crate) recon: Recorder,
    /// This node's metric handles, on the recorder it was handed.
    pub(crate) metrics: BudgetMetrics,
    /// The store identity this node knows, and whether the store lost its data.
    pub(crate) identity: Identity,
    /// The wall clock (`cfg.clock`) of campaigns' days and pacing.
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("session", &self.session.load())
            .field("campaigns", &self.index.load().all.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Budgets {
    /// Budgets for this node over `store`, knowing the config's campaigns (with empty leases
    /// until the first sync), recording its metrics on `recorder` (registered and described
    /// here; nothing goes to the process-global recorder). Does no IO; see [`Budgets::start`]
    /// for the usual startup.
    pub fn new(
        cfg: BudgetConfig,
        store: Arc<dyn Store>,
        recorder: SharedRecorder,
    ) -> Result<Arc<Self>, Error> {
        cfg.validate()?;
        let session = new_session(&cfg.node_id);
        let seeds: Vec<CampaignKey> = cfg
            .campaigns
            .iter()
            .map(|s| CampaignKey::new(&s.dsp, &s.cid))
            .collect();
        let budgets = Arc::new(Budgets {
            policy: LeasePolicy::from_config(&cfg),
            full_every: cfg.full_every_rounds(),
            session: ArcSwap::from_pointee(session),
            presence: Mutex::new(None),
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
            metrics: BudgetMetrics::new(recorder, cfg.per_campaign_metrics),
            identity: Identity::default(),
            clock: cfg.clock.clone(),
            cfg,
        });
        for (c, seed) in budgets.insert(&seeds).iter().zip(&budgets.cfg.campaigns) {
            // The first sync already sends the campaign's day in its configured zone.
            c.book().tz = Some(Arc::from(seed.timezone.as_str()));
        }
        Ok(budgets)
    }

    /// The usual startup: [`Budgets::new`], the store's identity checked against the one
    /// this node remembers (`state_file`, see `identity.rs`), the config's campaigns created
    /// in the store if absent (only when the identity check passed: a store that lost its data
    /// is never re-seeded with nothing spent), one sync round, then the sync loop. Store
    /// failures are logged, not fatal: the node starts with empty leases (failing closed) and
    /// the loop keeps trying.
    pub async fn start(
        cfg: BudgetConfig,
        store: Arc<dyn Store>,
        recorder: SharedRecorder,
    ) -> Result<(Arc<Self>, SyncTask), Error> {
        let budgets = Budgets::new(cfg, store, recorder)?;
        budgets.load_identity().await;
        match budgets.check_identity().await {
            Ok(()) => {
                if let Err(e) = budgets.seed().await {
                    tracing::warn!(error = %e, "could not seed campaign budgets; will sync what the store has");
                }
            }
            // Logged at error, counted and fenced inside.
            Err(Error::StoreLost(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not check the budget store's identity; campaigns are not seeded, will sync what the store has");
            }
        }
        if let Err(e) = budgets.sync_once().await {
            tracing::warn!(error = %e, "first budget sync failed; leases stay empty until one succeeds");
        }
        let task = budgets.spawn_sync();
        Ok((budgets, task))
    }

    /// Creates the config's campaigns in the store where absent; returns how many were created.
    /// Refused while the store is found to have lost its data ([`Budgets::store_lost`]).
    pub async fn seed(&self) -> Result<usize, Error> {
        if self.store_lost() {
            return Err(Error::StoreLost("never seeded from the config".to_owned()));
        }
        let mut created = 0;
        for seed in &self.cfg.campaigns {
            let key = CampaignKey::new(&seed.dsp, &seed.cid);
            if self
                .store
                .seed_if_absent(&key, seed.budget_micros, seed.paused, &seed.daily())
                .await?
            {
                created += 1;
            }
        }
        Ok(created)
    }

    /// This node's session name in the store (`{node_id}-{random}`); a new one after the
    /// fleet declared the previous one dead.
    pub fn session(&self) -> String {
        self.session.load().as_str().to_owned()
    }

    /// The configuration in use.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// The policy for bids without a known campaign.
    pub fn unknown_policy(&self) -> UnknownPolicy {
        self.cfg.unknown_campaign
    }
}

/// A session name: the node id and a random suffix, so no two processes (or two lives of one
/// process) share one.
pub(crate) fn new_session(node_id: &str) -> String {
    format!("{node_id}-{:016x}", rand::random::<u64>())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a plain queue; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

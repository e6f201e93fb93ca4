//! Real-time campaign budgets: per-node spend counters fed by leases from a central store.
//!
//! This crate owns the per-campaign counters every exchange node charges winners against
//! ([`Campaign`]), the index that finds them ([`Budgets`]), the loop that reports spend and takes
//! new leases ([`Budgets::sync_once`], [`SyncTask`]) and the [`Store`] that keeps the campaign
//! totals: [`RedisStore`] across nodes, [`MemoryStore`] in process. It also owns the
//! reconciliation of charged wins against billed impressions ([`Budgets::record_charge`],
//! [`Budgets::record_billed`], [`Budgets::reconciliation`]): per auction-time bucket, wins that
//! were never rendered are credited back to the budget, exactly once, after `settle_after_ms`.
//! Nodes renew a presence in the store; the leases of a node silent past `node_ttl_ms` go back
//! to their campaigns, returned once by whichever live node notices first (`presence`). The
//! Redis store runs on a single server or a Redis Cluster with one key layout (`store::layout`).
//!
//! It must never hold a lock across `.await`, never call the store on the request path
//! (lookups and charges touch only local atomics), and never let a Redis call run without its
//! own timeout. Money is integer micros throughout.
//!
//! The guarantee: for every campaign, `spent + Σ leases held by nodes ≤ budget` in the store, and
//! a node only charges what its lease holds, so total spend never exceeds the budget however
//! many nodes share the store. Reconciliation only lowers `spent` (never below zero), so the
//! guarantee holds through it. A campaign with a daily budget also keeps
//! `day_spent + held ≤ daily_budget` for its current day in its own time zone, and an
//! even-paced one `day_spent + held ≤` the straight line of the day (`daily`); days and pacing
//! read the [`Clock`] the config hands in. See `ARCHITECTURE.md` ("Budgets", "Reconciliation") for the
//! argument and its costs.

mod admin;
mod budgets;
mod campaign;
mod clock;
mod config;
mod daily;
mod identity;
mod index;
mod key;
mod lease;
pub mod metrics;
mod presence;
mod reconcile;
mod reconcile_round;
mod store;
mod sync;

pub use admin::LocalState;
pub use budgets::Budgets;
pub use campaign::{Campaign, CampaignHandle};
pub use clock::{Clock, ManualClock};
pub use config::{BudgetConfig, CampaignSeed, UnknownPolicy};
pub use daily::{check_timezone, DailyChange, DailySettings, DayWindow, Pacing, DEFAULT_TIMEZONE};
pub use identity::{AdoptReport, StatedSpend};
pub use index::{BudgetView, Lookup};
pub use key::CampaignKey;
pub use reconcile::{ReconcileReport, Reconciliation};
pub use store::memory::MemoryStore;
pub use store::recon::{
    BatchOutcome, BatchReply, ReconArgs, ReconBatch, ReconItem, ReconReply, ReconTotals,
    SettleReply,
};
pub use store::redis::RedisStore;
pub use store::{
    open_store, CampaignState, Grant, NodeHold, PartialSync, Presence, Reap, StatedCampaign, Store,
    StoreIdentity, SyncAnswer, SyncItem, MAX_MICROS,
};
pub use sync::{ReleaseReport, SyncReport, SyncTask};

use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A store call did not finish within its timeout.
    #[error("store call timed out after {0:?}")]
    Timeout(Duration),
    /// The store answered something this crate did not write.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
    /// The campaign does not exist in the store.
    #[error("campaign {0} not found")]
    NotFound(CampaignKey),
    /// Lowering a budget below what is already spent or leased out would break the guarantee.
    #[error("budget {budget} is below the {committed} micros already spent or leased")]
    BelowCommitted {
        /// The budget that was asked for.
        budget: u64,
        /// `spent + held` at the time of the request.
        committed: u64,
    },
    /// Lowering a daily budget below what is spent today or leased out would break the
    /// daily guarantee.
    #[error("daily budget {daily} is below the {committed} micros already spent today or leased")]
    DailyBelowCommitted {
        /// The daily budget that was asked for.
        daily: u64,
        /// `day_spent + held` at the time of the request.
        committed: u64,
    },
    /// An amount past [`MAX_MICROS`] (the store keeps exact integers only up to 2^53).
    #[error("{0} micros exceeds the maximum of {MAX_MICROS}")]
    TooLarge(u64),
    /// The configuration cannot work.
    #[error("invalid budget config: {0}")]
    Config(String),
    /// The node has released its leases and takes no new ones.
    #[error("budgets are closed: leases were released")]
    Closed,
    /// The store lost its data (its identity vanished or changed, or a node fenced it): no
    /// node spends until an operator adopts it with the spend so far
    /// ([`Budgets::adopt_store`]).
    #[error("the budget store lost its data ({0}); spending stops until an operator adopts it")]
    StoreLost(String),
    /// An adoption that does not state every campaign it must.
    #[error("adoption refused: {0}")]
    Adopt(String),
}

//! Shared by the node and cluster tests: a fast-syncing config with one campaign and a store
//! on a real Redis.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;
use std::time::Duration;

use budget::{BudgetConfig, CampaignSeed, RedisStore, Store};
use testkit::redis::RedisServer;

/// Syncs every 10 ms with one campaign `acme/c1` of `budget_micros`.
pub fn config(budget_micros: u64) -> BudgetConfig {
    BudgetConfig {
        sync_interval_ms: 10,
        redis_timeout_ms: 300,
        full_sync_ms: 20,
        min_lease_micros: 10_000,
        campaigns: vec![CampaignSeed {
            dsp: "acme".into(),
            cid: "c1".into(),
            budget_micros,
            paused: false,
            ..CampaignSeed::new("", "", 0)
        }],
        ..BudgetConfig::default()
    }
}

pub fn redis_store(redis: &RedisServer, cfg: &BudgetConfig) -> Arc<dyn Store> {
    Arc::new(RedisStore::open(&redis.url(), &cfg.key_prefix, cfg.redis_timeout()).unwrap())
}

/// How long a test waits for the sync loop to get somewhere (real rounds take milliseconds).
pub const PATIENCE: Duration = Duration::from_secs(60);
/// A recorder for tests that do not read metrics.
pub fn recorder() -> budget::metrics::SharedRecorder {
    Arc::new(metrics::NoopRecorder)
}

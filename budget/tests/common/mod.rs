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

/// The tracker's durable billed counts, written as its claim script does: `HINCRBY
/// {prefix}:billed:{iNN}:{bucket start} {len(dsp)}:{dsp}{cid} {micros}`, the impression group
/// `NN` taken from the auction time here (any spread does: settlement sums all 256).
pub struct DurableBilling {
    conn: std::sync::Mutex<Box<dyn redis::ConnectionLike + Send>>,
    prefix: String,
    bucket_ms: u64,
}

impl DurableBilling {
    pub fn new(url: &str, cfg: &BudgetConfig) -> Self {
        let conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        Self::over(Box::new(conn), cfg)
    }

    /// The same over a Redis Cluster.
    pub fn cluster(seeds: &[String], cfg: &BudgetConfig) -> Self {
        let client = redis::cluster::ClusterClient::new(seeds.to_vec()).unwrap();
        Self::over(Box::new(client.get_connection().unwrap()), cfg)
    }

    fn over(conn: Box<dyn redis::ConnectionLike + Send>, cfg: &BudgetConfig) -> Self {
        DurableBilling {
            conn: std::sync::Mutex::new(conn),
            prefix: cfg.key_prefix.clone(),
            bucket_ms: cfg.reconcile_bucket_ms,
        }
    }

    /// Records one billed impression durably, as the tracker's claim does.
    pub fn bill(&self, dsp: &str, cid: &str, auction_ts_ms: u64, micros: u64) {
        let start = auction_ts_ms - auction_ts_ms % self.bucket_ms;
        let group = auction_ts_ms % 256;
        let hash = format!("{}:billed:{{i{group:02x}}}:{start}", self.prefix);
        let field = format!("{}:{dsp}{cid}", dsp.len());
        let _: i64 = redis::cmd("HINCRBY")
            .arg(hash)
            .arg(field)
            .arg(micros)
            .query(&mut **self.conn.lock().unwrap())
            .unwrap();
    }
}

/// A store on a Redis Cluster, as a node opens it (one cluster connection per node).
pub async fn cluster_store(seeds: &[String], cfg: &BudgetConfig) -> Arc<dyn Store> {
    let client = redis::cluster::ClusterClient::builder(seeds.to_vec())
        .connection_timeout(cfg.redis_timeout())
        .response_timeout(cfg.redis_timeout())
        .build()
        .unwrap();
    let conn = client.get_async_connection().await.unwrap();
    Arc::new(RedisStore::with_connection(
        conn,
        &cfg.key_prefix,
        cfg.redis_timeout(),
    ))
}

//! The store's identity against a real Redis: a Redis that restarts empty (or is flushed)
//! under the fleet stops every node instead of being re-seeded with nothing spent, and only an
//! operator's adoption, stating what was spent, lets spending resume.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use budget::{BudgetConfig, Budgets, CampaignKey, Lookup, StatedSpend, Store};
use common::{config, redis_store, PATIENCE};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::ready;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use testkit::eventually;
use testkit::redis::RedisServer;

const BUDGET: u64 = 100_000;
const PRICE: u64 = 2_000;

fn key() -> CampaignKey {
    CampaignKey::new("acme", "c1")
}

/// A fresh directory for one node's state file.
fn state_dir() -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "budget-identity-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn node_config(state_file: Option<PathBuf>) -> BudgetConfig {
    BudgetConfig {
        state_file,
        ..config(BUDGET)
    }
}

fn prometheus() -> (budget::metrics::SharedRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (Arc::new(recorder), handle)
}

fn lost_gauge(handle: &PrometheusHandle) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        line.strip_prefix("budget_store_identity_lost ")?
            .parse()
            .ok()
    })
}

/// Charges every bid of `PRICE` the node's lease covers right now, as auctions would.
fn charge_all(node: &Budgets, wins: &AtomicU64) {
    let view = node.view();
    if let Lookup::Found(c) = view.lookup("acme", Some("c1")) {
        while c.can_cover(PRICE) && node.try_charge(c, PRICE) {
            wins.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Spends through the sync loop until `want` wins, then until the store has every report.
async fn spend(node: &Budgets, store: &Arc<dyn Store>, want: u64, spent: u64) -> u64 {
    let wins = AtomicU64::new(0);
    let all = eventually(PATIENCE, || {
        charge_all(node, &wins);
        ready(wins.load(Ordering::Relaxed) >= want)
    })
    .await;
    assert!(all, "only {} wins", wins.load(Ordering::Relaxed));
    let reported = eventually(PATIENCE, || async {
        store
            .state(&key())
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.spent == spent && s.held == 0)
    })
    .await;
    assert!(reported, "{:?}", store.state(&key()).await);
    // Several rounds later nothing more can be charged.
    for _ in 0..5 {
        let _ = node.sync_once().await;
        charge_all(node, &wins);
    }
    wins.load(Ordering::Relaxed)
}

async fn flushall(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
}

fn stated(spent_micros: u64) -> Vec<StatedSpend> {
    vec![StatedSpend {
        dsp: "acme".into(),
        cid: "c1".into(),
        spent_micros,
        budget_micros: None,
        paused: false,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_spends_nothing_past_the_budget() {
    let mut redis = RedisServer::start().expect("start redis-server");
    let port = redis.port();
    let state_file = state_dir().join("budget-store-identity");
    let cfg = node_config(Some(state_file.clone()));
    let store = redis_store(&redis, &cfg);
    let (recorder, _) = prometheus();
    let (node, task) = Budgets::start(cfg.clone(), store.clone(), recorder)
        .await
        .unwrap();
    assert!(!node.store_lost());
    assert_eq!(spend(&node, &store, 50, BUDGET).await, 50);
    let remembered = std::fs::read_to_string(&state_file).unwrap();
    assert!(remembered.starts_with("created-"), "{remembered}");

    // Redis comes back empty on the same port (no persistence), and the node restarts.
    redis.kill();
    drop(redis);
    let redis = RedisServer::start_on(port).expect("restart redis-server empty");
    let _ = task.shutdown().await;
    drop(node);
    let (recorder, metrics) = prometheus();
    let store = redis_store(&redis, &cfg);
    let (node, task) = Budgets::start(cfg.clone(), store.clone(), recorder)
        .await
        .unwrap();
    assert!(node.store_lost());
    assert_eq!(lost_gauge(&metrics), Some(1.0));
    // Not re-seeded, fenced for every other node, and nothing to spend however often it syncs.
    assert_eq!(store.state(&key()).await.unwrap(), None);
    let seen = store.identity().await.unwrap();
    assert!(seen.fenced);
    assert_eq!(seen.id, None);
    let wins = AtomicU64::new(0);
    for _ in 0..5 {
        assert!(matches!(
            node.sync_once().await,
            Err(budget::Error::StoreLost(_))
        ));
        charge_all(&node, &wins);
    }
    assert_eq!(wins.load(Ordering::Relaxed), 0);
    assert_eq!(node.local("acme", "c1").unwrap().available, 0);

    // A node's config is no adoption: every configured campaign must be stated.
    assert!(matches!(
        node.adopt_store(&[]).await,
        Err(budget::Error::Adopt(_))
    ));
    // The operator states the whole budget spent: still nothing to spend.
    let report = node.adopt_store(&stated(BUDGET)).await.unwrap();
    assert!(report.identity.starts_with("adopted-"));
    assert!(!node.store_lost());
    assert_eq!(lost_gauge(&metrics), Some(0.0));
    assert_eq!(
        std::fs::read_to_string(&state_file).unwrap().trim(),
        report.identity
    );
    assert_eq!(spend(&node, &store, 0, BUDGET).await, 0);
    let state = store.state(&key()).await.unwrap().unwrap();
    assert_eq!((state.budget, state.spent, state.held), (BUDGET, BUDGET, 0));
    // An intact store cannot be adopted over.
    assert!(matches!(
        node.adopt_store(&stated(0)).await,
        Err(budget::Error::Adopt(_))
    ));

    // Lost again, stated as half spent: exactly 25 more wins of 2 000.
    flushall(&redis).await;
    let lost = eventually(PATIENCE, || ready(node.store_lost())).await;
    assert!(lost, "the running node never noticed the flush");
    node.adopt_store(&stated(BUDGET / 2)).await.unwrap();
    assert_eq!(spend(&node, &store, 25, BUDGET).await, 25);
    let state = store.state(&key()).await.unwrap().unwrap();
    assert_eq!((state.budget, state.spent, state.held), (BUDGET, BUDGET, 0));
    task.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_store_stops_every_running_node() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = state_dir();
    let (recorder, metrics) = prometheus();
    let cfg_a = node_config(Some(dir.join("a")));
    // Node b remembers only in memory: the running node notices all the same.
    let cfg_b = node_config(None);
    let store = redis_store(&redis, &cfg_a);
    let (a, task_a) = Budgets::start(cfg_a.clone(), store.clone(), recorder)
        .await
        .unwrap();
    let (b, task_b) = Budgets::start(
        cfg_b.clone(),
        redis_store(&redis, &cfg_b),
        common::recorder(),
    )
    .await
    .unwrap();
    let wins = AtomicU64::new(0);
    let leased = eventually(PATIENCE, || {
        charge_all(&a, &wins);
        charge_all(&b, &wins);
        ready(wins.load(Ordering::Relaxed) >= 10)
    })
    .await;
    assert!(leased);
    assert_eq!(lost_gauge(&metrics), Some(0.0));

    flushall(&redis).await;
    let stopped = eventually(PATIENCE, || ready(a.store_lost() && b.store_lost())).await;
    assert!(stopped, "a: {}, b: {}", a.store_lost(), b.store_lost());
    assert_eq!(lost_gauge(&metrics), Some(1.0));
    let before = wins.load(Ordering::Relaxed);
    for _ in 0..5 {
        let _ = a.sync_once().await;
        let _ = b.sync_once().await;
        charge_all(&a, &wins);
        charge_all(&b, &wins);
    }
    assert_eq!(wins.load(Ordering::Relaxed), before);
    assert_eq!(a.local("acme", "c1").unwrap().available, 0);
    assert_eq!(b.local("acme", "c1").unwrap().available, 0);
    assert_eq!(store.state(&key()).await.unwrap(), None, "never re-seeded");

    // A node started now, with no memory of the store, finds it fenced and stays closed too.
    let cfg_c = node_config(Some(dir.join("c")));
    let (c, task_c) = Budgets::start(
        cfg_c.clone(),
        redis_store(&redis, &cfg_c),
        common::recorder(),
    )
    .await
    .unwrap();
    assert!(c.store_lost());
    assert_eq!(store.state(&key()).await.unwrap(), None);
    for task in [task_a, task_b, task_c] {
        let _ = task.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_without_a_state_file_starts_normally() {
    let redis = RedisServer::start().expect("start redis-server");
    let state_file = state_dir().join("nested").join("budget-store-identity");
    let cfg = node_config(Some(state_file.clone()));
    let store = redis_store(&redis, &cfg);
    let (recorder, metrics) = prometheus();
    let (node, task) = Budgets::start(cfg.clone(), store.clone(), recorder)
        .await
        .unwrap();
    assert!(!node.store_lost());
    assert_eq!(lost_gauge(&metrics), Some(0.0));
    let id = store.identity().await.unwrap();
    assert!(!id.fenced);
    let id = id.id.unwrap();
    assert_eq!(std::fs::read_to_string(&state_file).unwrap().trim(), id);
    assert_eq!(spend(&node, &store, 50, BUDGET).await, 50);
    task.shutdown().await.unwrap();

    // Restarted against the same store: same identity, nothing re-seeded, nothing to spend.
    let (node, task) = Budgets::start(cfg, store.clone(), common::recorder())
        .await
        .unwrap();
    assert!(!node.store_lost());
    assert_eq!(store.identity().await.unwrap().id.as_deref(), Some(&*id));
    assert_eq!(spend(&node, &store, 0, BUDGET).await, 0);
    task.shutdown().await.unwrap();
}

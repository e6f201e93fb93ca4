//! Several nodes on one Redis under concurrent load: the budget holds across nodes, through a
//! Redis crash and restart, and a crashed node's lease is visible and can be reclaimed by hand
//! (the live nodes' reaper does it by itself, see `fleet.rs`; these nodes run no loops).

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use budget::{BudgetConfig, Budgets, Lookup, SyncTask};
mod common;
use common::{redis_store, PATIENCE};
use std::future::ready;
use testkit::eventually;

/// Graceful stops of several nodes at once get more time than the default.
fn config(budget_micros: u64) -> BudgetConfig {
    BudgetConfig {
        shutdown_timeout_ms: 5_000,
        ..common::config(budget_micros)
    }
}
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::redis::RedisServer;

/// Bidding threads on acme/c1 across several nodes, summing what they won.
struct Load {
    stop: Arc<AtomicBool>,
    won: Arc<AtomicU64>,
    attempts: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &[Arc<Budgets>], threads_per_node: usize, price: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let won = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for node in nodes {
            for _ in 0..threads_per_node {
                let (node, stop, won) = (node.clone(), stop.clone(), won.clone());
                let attempts = attempts.clone();
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let charged = match node.lookup("acme", Some("c1")) {
                            Lookup::Found(c) => c.can_cover(price) && c.try_charge(price),
                            Lookup::NoCid | Lookup::Unknown => false,
                        };
                        if charged {
                            won.fetch_add(price, Ordering::Relaxed);
                        } else {
                            // Pacing, not a wait: an empty lease lets the sync loop run on
                            // this 2-core box instead of spinning.
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            won,
            attempts,
            threads,
        }
    }

    fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    /// Charges tried so far, won or not.
    fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.won.load(Ordering::Relaxed)
    }
}

async fn start_nodes(
    redis: &RedisServer,
    cfg: &BudgetConfig,
    n: usize,
) -> Vec<(Arc<Budgets>, SyncTask)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let cfg = BudgetConfig {
            node_id: format!("node{i}"),
            ..cfg.clone()
        };
        nodes.push(
            Budgets::start(cfg.clone(), redis_store(redis, &cfg), common::recorder())
                .await
                .unwrap(),
        );
    }
    nodes
}

fn charged_on(nodes: &[Arc<Budgets>]) -> u64 {
    nodes
        .iter()
        .map(|n| n.local("acme", "c1").unwrap().charged_total)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_never_overspend_and_account_for_every_micro() {
    let redis = RedisServer::start().expect("start redis-server");
    let budget = 3_000_000;
    let price = 900;
    let cfg = config(budget);
    let admin = redis_store(&redis, &cfg);
    let (nodes, tasks): (Vec<_>, Vec<_>) = start_nodes(&redis, &cfg, 3).await.into_iter().unzip();
    let load = Load::start(&nodes, 3, price);
    let key = budget::CampaignKey::new("acme", "c1");
    // The invariants hold at every look while the budget is being spent.
    let spent = eventually(PATIENCE, || async {
        let state = admin.state(&key).await.unwrap().unwrap();
        assert!(state.spent + state.held <= budget, "store: {state:?}");
        assert!(load.won() <= budget, "charged {} of {budget}", load.won());
        assert!(charged_on(&nodes) <= budget);
        budget - load.won() < 3 * price
    })
    .await;
    assert!(spent, "budget not spent: {}", load.won());
    let won = load.stop();
    for task in tasks {
        task.shutdown().await.unwrap();
    }
    assert!(won <= budget);
    assert_eq!(charged_on(&nodes), won);
    let state = admin.state(&key).await.unwrap().unwrap();
    assert_eq!(
        state.spent, won,
        "Redis spent equals the sum charged on the nodes"
    );
    assert_eq!(state.held, 0, "every lease came back");
    assert!(state.nodes.is_empty());
    // Every node took part.
    for node in &nodes {
        assert!(node.local("acme", "c1").unwrap().charged_total > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_costs_no_spend_and_no_overspend() {
    let mut redis = RedisServer::start_persistent().expect("start redis-server");
    let budget = 50_000_000;
    let price = 1_000;
    // A short presence: with Redis gone a node gives up whatever it still holds once its
    // presence may lapse, and a grant whose reply was still being applied is handed back, so
    // "dry" below is final.
    let cfg = BudgetConfig {
        node_ttl_ms: 300,
        ..config(budget)
    };
    let (nodes, tasks): (Vec<_>, Vec<_>) = start_nodes(&redis, &cfg, 2).await.into_iter().unzip();
    let load = Load::start(&nodes, 2, price);
    let some = eventually(PATIENCE, || ready(load.won() >= 1_000_000)).await;
    assert!(some, "no spend: {}", load.won());

    redis.kill();
    let killed = std::time::Instant::now();
    // Nodes spend what they hold, then stop bidding on the campaign (fail closed). Once no
    // node can have renewed its presence for a whole TTL, none holds or takes spendable money.
    let dry = eventually(PATIENCE, || {
        ready(
            killed.elapsed() >= cfg.node_ttl()
                && nodes
                    .iter()
                    .all(|n| n.local("acme", "c1").unwrap().available == 0),
        )
    })
    .await;
    assert!(dry, "the leases never ran dry with Redis down");
    // Every charge made is counted by the bidders too...
    let settled = eventually(PATIENCE, || ready(load.won() == charged_on(&nodes))).await;
    assert!(
        settled,
        "{} won, {} charged",
        load.won(),
        charged_on(&nodes)
    );
    let stalled = load.won();
    // ...and once every bidder has tried again many times, none of them won anything.
    let tried = load.attempts();
    let retried = eventually(PATIENCE, || ready(load.attempts() >= tried + 400)).await;
    assert!(retried, "the bidders stopped trying");
    assert_eq!(load.won(), stalled, "no spend without a lease");
    assert!(stalled <= budget);
    let unreported: u64 = nodes
        .iter()
        .map(|n| n.local("acme", "c1").unwrap().unreported)
        .sum();
    assert!(unreported > 0, "spend made while Redis was away is kept");

    redis.restart().expect("restart redis-server");
    let resumed = eventually(PATIENCE, || ready(load.won() >= stalled + 500_000)).await;
    assert!(resumed, "spending never resumed: {}", load.won());
    let won = load.stop();
    for task in tasks {
        task.shutdown().await.unwrap();
    }
    let state = redis_store(&redis, &cfg)
        .state(&budget::CampaignKey::new("acme", "c1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.spent, won, "nothing lost, nothing counted twice");
    assert_eq!(state.held, 0);
    assert!(state.spent <= budget);
}

#[tokio::test]
async fn a_crashed_nodes_lease_is_visible_and_reclaimable_by_hand() {
    let redis = RedisServer::start().expect("start redis-server");
    let budget = 100_000;
    let cfg = BudgetConfig {
        min_lease_micros: 60_000,
        ..config(budget)
    };
    let crashed = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    crashed.seed().await.unwrap();
    crashed.sync_once().await.unwrap();
    let session = crashed.session().to_owned();
    let Lookup::Found(c) = crashed.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    assert!(c.try_charge(10_000));
    crashed.sync_once().await.unwrap(); // reports the spend, tops the lease up to 60_000
    assert_eq!(c.available(), 60_000);
    drop(c);
    drop(crashed); // no release: the process died

    let other = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    other.sync_once().await.unwrap();
    assert_eq!(
        other.local("acme", "c1").unwrap().available,
        30_000,
        "only what the crashed node does not hold"
    );
    let state = other.state("acme", "c1").await.unwrap().unwrap();
    let dead = state.nodes.iter().find(|n| n.session == session).unwrap();
    assert_eq!((dead.spent, dead.held), (10_000, 60_000));

    assert_eq!(other.reclaim("acme", "c1", &session).await.unwrap(), 60_000);
    for _ in 0..4 {
        other.sync_once().await.unwrap();
    }
    assert_eq!(other.local("acme", "c1").unwrap().available, 60_000);
    let state = other.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!((state.spent, state.held), (10_000, 60_000));
    let dead = state.nodes.iter().find(|n| n.session == session).unwrap();
    assert!(dead.reclaimed);
    assert_eq!(dead.held, 0);
}

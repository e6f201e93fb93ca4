//! One or two nodes against a real Redis (or in process): charging, leases, pause, discovery,
//! graceful release and Redis outages.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use budget::{open_store, BudgetConfig, Budgets, CampaignSeed, Lookup, UnknownPolicy};
mod common;
use common::{config, redis_store, PATIENCE};
use std::future::ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::redis::RedisServer;
use testkit::{eventually, free_port};

/// Generous bound for "this must not hang" checks; real calls take milliseconds.
const BOUND: Duration = Duration::from_secs(5);

fn available(b: &Budgets) -> u64 {
    b.local("acme", "c1").map_or(0, |l| l.available)
}

/// Threads that keep bidding `price` on acme/c1 until stopped, as auctions would.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
    won: Arc<AtomicU64>,
}

impl Load {
    fn start(budgets: &Arc<Budgets>, threads: usize, price: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let won = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (budgets, stop, won) = (budgets.clone(), stop.clone(), won.clone());
                std::thread::spawn(move || {
                    let mut mine = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let view = budgets.view();
                        let charged = match view.lookup("acme", Some("c1")) {
                            Lookup::Found(c) => c.can_cover(price) && c.try_charge(price),
                            Lookup::NoCid | Lookup::Unknown => false,
                        };
                        drop(view);
                        if charged {
                            mine += price;
                            won.fetch_add(price, Ordering::Relaxed);
                        } else {
                            // Pacing, not a wait: an empty lease lets the sync loop run on
                            // this 2-core box instead of spinning.
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    mine
                })
            })
            .collect();
        Load { stop, threads, won }
    }

    fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_threads_spend_exactly_the_budget() {
    let redis = RedisServer::start().expect("start redis-server");
    let budget = 1_000_000;
    let price = 700;
    let cfg = config(budget);
    let store = redis_store(&redis, &cfg);
    let (budgets, task) = Budgets::start(cfg, store.clone(), common::recorder())
        .await
        .unwrap();
    let load = Load::start(&budgets, 8, price);
    let spent = eventually(PATIENCE, || ready(budget - load.won() < price)).await;
    assert!(spent, "the budget was never spent: {} won", load.won());
    let won = load.stop();
    let released = task.shutdown().await.unwrap();

    assert!(won <= budget, "charged {won} of {budget}");
    assert!(
        budget - won < price,
        "{won} leaves a whole impression unspent"
    );
    assert_eq!(released.charged, won);
    assert_eq!(budgets.local("acme", "c1").unwrap().charged_total, won);
    let state = budgets.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(state.spent, won, "every charge reached the store");
    assert_eq!(state.held, 0, "the remainder was handed back");
    assert!(state.nodes.is_empty(), "the session's records were cleared");
}

#[tokio::test]
async fn graceful_release_hands_the_lease_back() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config(10_000_000);
    let a = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    a.seed().await.unwrap();
    a.sync_once().await.unwrap();
    let held = available(&a);
    assert!(
        held >= cfg.min_lease_micros,
        "a lease after one sync: {held}"
    );
    let state = a.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(state.held, held);
    assert_eq!(state.nodes.len(), 1);
    assert_eq!(state.nodes[0].session, a.session());
    assert_eq!(state.nodes[0].held, held);

    let Lookup::Found(c) = a.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    assert!(c.try_charge(1_234));
    let report = a.release().await.unwrap();
    assert_eq!(report.returned, held - 1_234);
    assert_eq!(report.charged, 1_234);
    assert_eq!(c.available(), 0);
    assert!(!c.can_cover(1));
    assert!(matches!(a.sync_once().await, Err(budget::Error::Closed)));

    let state = a.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!((state.spent, state.held), (1_234, 0));
    assert!(state.nodes.is_empty());
}

#[tokio::test]
async fn pause_stops_spending_after_the_next_sync_and_a_raise_gives_more() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config(20_000);
    let node = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    let admin = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap();
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    assert!(c.can_cover(5_000));

    admin.pause("acme", "c1", true).await.unwrap();
    assert!(c.can_cover(5_000), "a node spends its lease until it syncs");
    node.sync_once().await.unwrap();
    assert!(!c.can_cover(1), "paused after the next sync");
    assert!(node.local("acme", "c1").unwrap().paused);
    node.sync_once().await.unwrap();
    let state = admin.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(state.held, 0, "the lease went back");

    // Resume, spend what there is, then raise the budget: the node gets more.
    admin.pause("acme", "c1", false).await.unwrap();
    for _ in 0..4 {
        node.sync_once().await.unwrap();
    }
    assert!(c.try_charge(10_000));
    for _ in 0..4 {
        node.sync_once().await.unwrap();
        while c.try_charge(1_000) {}
    }
    assert_eq!(c.charged_total(), 20_000, "the whole budget was spendable");
    assert!(!c.can_cover(1_000));
    admin.set_budget("acme", "c1", 50_000).await.unwrap();
    for _ in 0..4 {
        node.sync_once().await.unwrap();
    }
    assert!(c.can_cover(10_000), "raised budget reached the node");
}

#[tokio::test]
async fn unknown_campaigns_follow_the_policy_and_are_discovered() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = BudgetConfig {
        unknown_campaign: UnknownPolicy::Reject,
        full_sync_ms: 10_000,
        ..config(1_000_000)
    };
    let node = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    let admin = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap(); // the full round; the next ones are not

    assert!(!node.unknown_policy().allows());
    assert!(matches!(node.lookup("acme", None), Lookup::NoCid));
    assert!(matches!(node.lookup("acme", Some("")), Lookup::NoCid));
    assert!(matches!(node.lookup("acme", Some("c1")), Lookup::Found(_)));
    assert!(matches!(
        node.lookup("acme", Some("fresh")),
        Lookup::Unknown
    ));
    assert!(matches!(node.lookup("other", Some("c1")), Lookup::Unknown));

    admin.set_budget("acme", "fresh", 500_000).await.unwrap();
    assert!(matches!(
        node.lookup("acme", Some("fresh")),
        Lookup::Unknown
    ));
    let report = node.sync_once().await.unwrap();
    assert_eq!(report.discovered, 1, "the probe found it");
    let Lookup::Found(c) = node.lookup("acme", Some("fresh")) else {
        panic!("discovered campaign is known");
    };
    node.sync_once().await.unwrap();
    assert!(c.can_cover(10_000), "and it got a lease");
    assert!(matches!(node.lookup("other", Some("c1")), Lookup::Unknown));
}

#[tokio::test]
async fn embedded_budgets_come_from_config() {
    let cfg = BudgetConfig {
        campaigns: vec![
            CampaignSeed {
                dsp: "acme".into(),
                cid: "c1".into(),
                budget_micros: 30_000,
                paused: false,
                ..CampaignSeed::new("", "", 0)
            },
            CampaignSeed {
                dsp: "acme".into(),
                cid: "off".into(),
                budget_micros: 30_000,
                paused: true,
                ..CampaignSeed::new("", "", 0)
            },
        ],
        ..config(0)
    };
    assert!(cfg.redis_url.is_none());
    let store = open_store(&cfg).unwrap();
    let node = Budgets::new(cfg, store, common::recorder()).unwrap();
    node.seed().await.unwrap();
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("configured campaign is known");
    };
    let mut spent = 0;
    for _ in 0..10 {
        node.sync_once().await.unwrap();
        while c.try_charge(7_000) {
            spent += 7_000;
        }
    }
    assert_eq!(spent, 28_000);
    let Lookup::Found(off) = node.lookup("acme", Some("off")) else {
        panic!("configured campaign is known");
    };
    assert!(!off.can_cover(1), "created paused");
    node.release().await.unwrap();
    let state = node.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!((state.spent, state.held), (28_000, 0));
}

#[tokio::test]
async fn a_dead_redis_never_stalls_and_fails_closed() {
    let port = free_port().expect("free port");
    let cfg = BudgetConfig {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..config(1_000_000)
    };
    let store = open_store(&cfg).unwrap();
    let started = tokio::time::timeout(BOUND, Budgets::start(cfg, store, common::recorder())).await;
    let (node, task) = started.expect("start is bounded").unwrap();
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("configured campaign is known without Redis");
    };
    assert!(!c.can_cover(1), "no lease without the store");
    assert!(tokio::time::timeout(BOUND, node.sync_once())
        .await
        .expect("a sync is bounded")
        .is_err());
    // No report was ever sent (every round stops at the store's identity check, which needs
    // Redis), so the store can hold nothing for this session: release has nothing to hand
    // back, and returns within its shutdown timeout.
    let shutdown = tokio::time::timeout(BOUND, task.shutdown()).await;
    let report = shutdown.expect("shutdown is bounded").unwrap();
    assert_eq!(
        (report.campaigns, report.returned, report.charged),
        (0, 0, 0)
    );
    assert!(!c.can_cover(1));
}

#[tokio::test]
async fn a_frozen_redis_times_out_and_unreported_spend_arrives_later() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config(1_000_000);
    let node = Budgets::new(cfg.clone(), redis_store(&redis, &cfg), common::recorder()).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap();
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    let lease = c.available();
    assert!(lease > 0);

    redis.freeze().expect("freeze redis-server");
    let result = tokio::time::timeout(BOUND, node.sync_once()).await;
    match result.expect("a sync is bounded") {
        Err(budget::Error::Timeout(_)) => {}
        Err(budget::Error::Redis(e)) if e.is_timeout() => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Spend only what is held, then stop.
    let mut spent = 0;
    while c.try_charge(1_000) {
        spent += 1_000;
    }
    assert_eq!(spent, lease - lease % 1_000);
    assert!(tokio::time::timeout(BOUND, node.sync_once())
        .await
        .expect("a sync is bounded")
        .is_err());
    assert_eq!(node.local("acme", "c1").unwrap().unreported, spent);

    redis.thaw().expect("thaw redis-server");
    let synced = eventually(Duration::from_secs(30), || async {
        node.sync_once().await.is_ok()
    })
    .await;
    assert!(synced, "no sync succeeded after Redis came back");
    assert_eq!(node.local("acme", "c1").unwrap().unreported, 0);
    let state = node.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(
        state.spent, spent,
        "spend made while Redis was away is in Redis"
    );
    assert!(c.can_cover(1_000), "a new lease after recovery");
}

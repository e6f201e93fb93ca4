//! Several nodes over a real local Redis Cluster: concurrent charging never spends past the
//! budget, a node that dies without a shutdown has its leases back within `node_ttl_ms` plus
//! one sync interval (returned exactly once while live nodes race), a node declared dead that
//! comes back starts a fresh session, a master killed under load fails over without breaking
//! the rule, and settlement credits nothing back for rendered impressions whose node is gone.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use budget::{BudgetConfig, Budgets, CampaignKey, Lookup, Store, SyncTask};
use common::{cluster_store, DurableBilling, PATIENCE};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::cluster::RedisCluster;
use testkit::eventually;

const SYNC_MS: u64 = 20;
const TTL_MS: u64 = 400;

fn config(budget_micros: u64) -> BudgetConfig {
    BudgetConfig {
        sync_interval_ms: SYNC_MS,
        full_sync_ms: 40,
        node_ttl_ms: TTL_MS,
        redis_timeout_ms: 300,
        shutdown_timeout_ms: 5_000,
        ..common::config(budget_micros)
    }
}

fn key() -> CampaignKey {
    CampaignKey::new("acme", "c1")
}

/// Nodes that take 60 000 micros a lease, so a dead node's hold is easy to see.
fn leased(budget_micros: u64) -> BudgetConfig {
    BudgetConfig {
        min_lease_micros: 60_000,
        ..config(budget_micros)
    }
}

/// The campaign `acme/c1` on `node`.
fn c1(node: &Budgets) -> budget::CampaignHandle {
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    c
}

/// Polls until `session` is declared dead and its lease is back; false if it never is.
async fn reaped(admin: &Arc<dyn Store>, session: &str, within: Duration) -> bool {
    eventually(within, || async {
        let state = admin.state(&key()).await.unwrap().unwrap();
        state
            .nodes
            .iter()
            .any(|n| n.session == session && n.reclaimed && n.held == 0)
    })
    .await
}

fn prometheus() -> (budget::metrics::SharedRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (Arc::new(recorder), handle)
}

fn counter(handle: &PrometheusHandle, name: &str) -> u64 {
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A live node: started as the exchange starts it, with its own cluster connection.
async fn live(
    cluster: &RedisCluster,
    cfg: &BudgetConfig,
    name: &str,
) -> (Arc<Budgets>, SyncTask, PrometheusHandle) {
    let cfg = BudgetConfig {
        node_id: name.to_owned(),
        ..cfg.clone()
    };
    let (recorder, handle) = prometheus();
    let store = cluster_store(&cluster.seeds(), &cfg).await;
    let (node, task) = Budgets::start(cfg, store, recorder).await.unwrap();
    (node, task, handle)
}

/// A node driven round by round (no background loops), so a test decides when it goes silent.
async fn manual(cluster: &RedisCluster, cfg: &BudgetConfig) -> Arc<Budgets> {
    let cfg = BudgetConfig {
        node_id: "victim".to_owned(),
        ..cfg.clone()
    };
    let store = cluster_store(&cluster.seeds(), &cfg).await;
    let node = Budgets::new(cfg, store, common::recorder()).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap();
    node
}

/// Bidding threads on acme/c1 across several nodes, summing what they won.
struct Load {
    stop: Arc<AtomicBool>,
    won: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &[Arc<Budgets>], threads_per_node: usize, price: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let won = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for node in nodes {
            for _ in 0..threads_per_node {
                let (node, stop, won) = (node.clone(), stop.clone(), won.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let charged = match node.lookup("acme", Some("c1")) {
                            Lookup::Found(c) => c.can_cover(price) && c.try_charge(price),
                            Lookup::NoCid | Lookup::Unknown => false,
                        };
                        if charged {
                            won.fetch_add(price, Ordering::Relaxed);
                        }
                        // Pacing, not a wait: leaves the 2-core box to the sync loops.
                        std::thread::sleep(Duration::from_micros(300));
                    }
                }));
            }
        }
        Load { stop, won, threads }
    }

    fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.won.load(Ordering::Relaxed)
    }
}

fn charged_on(nodes: &[Arc<Budgets>]) -> u64 {
    nodes
        .iter()
        .map(|n| n.local("acme", "c1").unwrap().charged_total)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_cluster_never_spend_past_the_budget() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let budget = 2_000_000;
    let price = 700;
    let cfg = config(budget);
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    for name in ["n0", "n1", "n2"] {
        let (node, task, _) = live(&cluster, &cfg, name).await;
        nodes.push(node);
        tasks.push(task);
    }
    let admin = cluster_store(&cluster.seeds(), &cfg).await;
    let load = Load::start(&nodes, 2, price);
    let spent = eventually(PATIENCE, || async {
        let state = admin.state(&key()).await.unwrap().unwrap();
        assert!(state.spent + state.held <= budget, "store: {state:?}");
        assert!(load.won() <= budget, "charged {} of {budget}", load.won());
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
    let state = admin.state(&key()).await.unwrap().unwrap();
    assert_eq!(state.spent, won, "the store's spent is the sum charged");
    assert_eq!(state.held, 0, "every lease came back");
    for node in &nodes {
        assert!(node.local("acme", "c1").unwrap().charged_total > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_has_its_leases_back_once_within_the_ttl() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let budget = 1_000_000;
    let cfg = leased(budget);
    // The victim first, so the live nodes' first look at the listed sessions finds it; the
    // live nodes' own presence lasts longer than the victim's, so a live node starved of CPU
    // by the other tests is not declared dead too (which would blur the counts below).
    let victim = manual(&cluster, &cfg).await;
    let live_cfg = BudgetConfig {
        node_ttl_ms: 1_500,
        ..cfg.clone()
    };
    let (a, task_a, metrics_a) = live(&cluster, &live_cfg, "a").await;
    let (b, task_b, metrics_b) = live(&cluster, &live_cfg, "b").await;
    let c = c1(&victim);
    assert!(c.try_charge(10_000));
    victim.sync_once().await.unwrap(); // reports the spend, tops the lease up
    let session = victim.session();
    let admin = cluster_store(&cluster.seeds(), &cfg).await;
    let state = admin.state(&key()).await.unwrap().unwrap();
    let held = state
        .nodes
        .iter()
        .find(|n| n.session == session)
        .unwrap()
        .held;
    assert_eq!(held, 60_000);
    // The process dies: no release, no more renewals.
    let died = Instant::now();
    drop(c);
    drop(victim);

    let limit = Duration::from_millis(TTL_MS + SYNC_MS);
    // Allowance for two busy cores scheduling the reaper, not part of the rule.
    let slack = Duration::from_millis(300);
    let back = reaped(&admin, &session, limit + slack).await;
    let took = died.elapsed();
    assert!(back, "leases not back after {took:?}");
    eprintln!("a dead node's leases came back {took:?} after it died (ttl {TTL_MS} ms, sync {SYNC_MS} ms)");
    // Both live nodes race to reap it: one declares it dead, the lease is returned once.
    let counted = eventually(PATIENCE, || {
        ready(
            counter(&metrics_a, "budget_lease_reclaimed_micros_total")
                + counter(&metrics_b, "budget_lease_reclaimed_micros_total")
                == held,
        )
    })
    .await;
    assert!(counted, "reclaimed micros do not add up to {held}");
    assert_eq!(
        counter(&metrics_a, "budget_sessions_reclaimed_total")
            + counter(&metrics_b, "budget_sessions_reclaimed_total"),
        1
    );
    let listed = admin.sessions().await.unwrap();
    assert!(!listed.contains(&session), "the dead session is unlisted");
    let state = admin.state(&key()).await.unwrap().unwrap();
    assert_eq!(state.spent, 10_000, "what it reported spent stays spent");
    assert!(state.spent + state.held <= budget);
    // The live nodes hold the rest of the money again as they need it.
    assert_eq!(
        state.held,
        state
            .nodes
            .iter()
            .filter(|n| n.session != session)
            .map(|n| n.held)
            .sum::<u64>()
    );
    for (node, task) in [(a, task_a), (b, task_b)] {
        task.shutdown().await.unwrap();
        drop(node);
    }
}

/// A node that reported a charge to reconciliation but died before its next budget sync: the
/// charge stays spent when its lease returns, or settlement would credit back (if unrendered)
/// money that was never counted spent, and the campaign's spent would end below what rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_charges_reported_to_reconciliation_stay_spent() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let budget = 1_000_000;
    let cfg = leased(budget);
    let victim = manual(&cluster, &cfg).await;
    let live_cfg = BudgetConfig {
        node_ttl_ms: 1_500,
        ..cfg.clone()
    };
    let (a, task_a, _) = live(&cluster, &live_cfg, "a").await;
    let c = c1(&victim);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(c.try_charge(4_000));
    victim.record_charge("acme", "c1", now, 4_000);
    victim.reconcile_at(now).await.unwrap();
    let session = victim.session();
    drop(c);
    drop(victim);
    let admin = cluster_store(&cluster.seeds(), &cfg).await;
    assert!(
        reaped(&admin, &session, PATIENCE).await,
        "the dead session was never reaped"
    );
    let state = admin.state(&key()).await.unwrap().unwrap();
    let dead = state.nodes.iter().find(|n| n.session == session).unwrap();
    assert_eq!(
        (dead.granted, dead.spent, dead.returned),
        (60_000, 4_000, 56_000),
        "the reported charge is spent, the rest returned"
    );
    assert_eq!(state.spent, 4_000);
    assert!(state.spent + state.held <= budget);
    task_a.shutdown().await.unwrap();
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_declared_dead_comes_back_under_a_fresh_session() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let budget = 1_000_000;
    let cfg = leased(budget);
    let (a, task_a, _) = live(&cluster, &cfg, "a").await;
    let zombie = manual(&cluster, &cfg).await;
    let old = c1(&zombie);
    assert!(old.try_charge(5_000));
    zombie.sync_once().await.unwrap();
    assert_eq!(old.available(), 60_000);
    let dead = zombie.session();
    let admin = cluster_store(&cluster.seeds(), &cfg).await;
    // Paused past the TTL: the live node declares it dead and takes its lease back.
    assert!(
        reaped(&admin, &dead, PATIENCE).await,
        "the silent session was never reaped"
    );

    // It resumes: its next round finds its session dead and starts afresh.
    zombie.sync_once().await.unwrap();
    let fresh = zombie.session();
    assert_ne!(fresh, dead);
    assert_eq!(
        old.available(),
        0,
        "the returned lease is gone from the old books"
    );
    assert!(!old.try_charge(1));
    let local = zombie.local("acme", "c1").unwrap();
    assert_eq!(local.charged_total, 0, "fresh books");
    let state = admin.state(&key()).await.unwrap().unwrap();
    let old_record = state.nodes.iter().find(|n| n.session == dead).unwrap();
    assert_eq!(
        (old_record.granted, old_record.spent, old_record.held),
        (65_000, 5_000, 0)
    );
    let new_record = state.nodes.iter().find(|n| n.session == fresh).unwrap();
    assert_eq!(
        new_record.held, local.available,
        "only fresh grants are spendable"
    );
    assert_eq!(state.spent, 5_000);
    assert!(state.spent + state.held <= budget);
    let listed = admin.sessions().await.unwrap();
    assert!(listed.contains(&fresh) && !listed.contains(&dead));
    task_a.shutdown().await.unwrap();
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_and_the_budget_holds() {
    let mut cluster = RedisCluster::start(3, 1).expect("start a redis cluster");
    // A replica promoted before its first sync holds nothing: the fleet would find the store
    // lost and fence it (fail closed). This test is about a failover to a synced replica.
    cluster
        .wait_replicas_synced()
        .expect("the replicas finish their first sync");
    let budget = 3_000_000;
    let price = 900;
    // The presence outlives a failover (a node timeout of 1 s plus the election), as
    // `node_ttl_ms` must in production: no live node is declared dead meanwhile.
    let cfg = BudgetConfig {
        node_ttl_ms: 5_000,
        ..config(budget)
    };
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    for name in ["n0", "n1", "n2"] {
        let (node, task, _) = live(&cluster, &cfg, name).await;
        nodes.push(node);
        tasks.push(task);
    }
    let sessions: Vec<String> = nodes.iter().map(|n| n.session()).collect();
    let admin = cluster_store(&cluster.seeds(), &cfg).await;
    let load = Load::start(&nodes, 2, price);
    let some = eventually(PATIENCE, || ready(load.won() >= budget / 4)).await;
    assert!(some, "no spend: {}", load.won());
    let victim = cluster.master_ports()[0];
    cluster.kill(victim);
    let promoted = eventually(PATIENCE, || ready(cluster.master_ports().len() == 3)).await;
    assert!(promoted, "no replica took over");
    cluster.wait_ok().unwrap();
    // The nodes carry on and the rule holds at every look (a look during the failover may
    // fail: skipped).
    let spent = eventually(PATIENCE, || async {
        if let Ok(Some(state)) = admin.state(&key()).await {
            assert!(state.spent + state.held <= budget, "store: {state:?}");
        }
        assert!(load.won() <= budget, "charged {} of {budget}", load.won());
        budget - load.won() < 3 * price
    })
    .await;
    assert!(spent, "budget not spent after the failover: {}", load.won());
    let won = load.stop();
    let now: Vec<String> = nodes.iter().map(|n| n.session()).collect();
    assert_eq!(now, sessions, "no node was declared dead");
    for task in tasks {
        task.shutdown().await.unwrap();
    }
    assert!(won <= budget);
    assert_eq!(charged_on(&nodes), won);
    let state = admin.state(&key()).await.unwrap().unwrap();
    assert_eq!(state.spent, won, "nothing lost, nothing counted twice");
    assert_eq!(state.held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_impressions_are_never_credited_back_when_their_node_is_gone() {
    const T0: u64 = 1_700_000_040_000;
    const PRICE: u64 = 1_000;
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let cfg = config(1_000_000);
    let a = manual(&cluster, &cfg).await;
    let b = manual(&cluster, &cfg).await;
    let durable = DurableBilling::cluster(&cluster.seeds(), &cfg);
    // Node a wins 8 auctions in bucket T0; 5 impressions render on node b, which bills them
    // (durably, in the claim, as the tracker does) and dies before it reports its counts.
    let c = c1(&a);
    for i in 0..8 {
        assert!(c.try_charge(PRICE));
        a.record_charge("acme", "c1", T0 + i, PRICE);
    }
    for i in 0..5 {
        b.record_billed("acme", "c1", T0 + i, PRICE);
        durable.bill("acme", "c1", T0 + i, PRICE);
    }
    drop(b);
    a.sync_once().await.unwrap();
    a.reconcile_at(T0 + 500).await.unwrap();
    let due = T0 + cfg.reconcile_bucket_ms + cfg.settle_after_ms;
    let r = a.reconcile_at(due).await.unwrap();
    assert_eq!((r.settle.settled, r.settle.credited), (1, 3 * PRICE));
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!((rec.credited, rec.billed_beyond_charged), (3 * PRICE, 0));
    assert_eq!(
        rec.billed,
        5 * PRICE,
        "the durable count, not the lost report"
    );
    let state = a.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(state.spent, 5 * PRICE, "spent is what was rendered");
}

/// A node that cannot renew its presence stops spending before the fleet could declare it
/// dead, and carries on under the same session once it can renew again in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_stops_spending_before_its_presence_lapses() {
    let redis = testkit::redis::RedisServer::start().expect("start redis-server");
    let cfg = BudgetConfig {
        min_lease_micros: 60_000,
        node_ttl_ms: 300,
        ..config(1_000_000)
    };
    let (node, task) = Budgets::start(
        cfg.clone(),
        common::redis_store(&redis, &cfg),
        common::recorder(),
    )
    .await
    .unwrap();
    let session = node.session();
    let leased = eventually(PATIENCE, || {
        ready(node.local("acme", "c1").unwrap().available >= 60_000)
    })
    .await;
    assert!(leased, "no lease");
    redis.freeze().expect("freeze redis-server");
    let frozen = Instant::now();
    let zeroed = eventually(PATIENCE, || {
        ready(node.local("acme", "c1").unwrap().available == 0)
    })
    .await;
    let took = frozen.elapsed();
    assert!(zeroed, "the lease was kept");
    assert!(
        took < Duration::from_millis(300),
        "leases given up {took:?} after the last renewal could have been sent; the presence lasts 300 ms"
    );
    redis.thaw().expect("thaw redis-server");
    let back = eventually(PATIENCE, || {
        ready(node.local("acme", "c1").unwrap().available > 0)
    })
    .await;
    assert!(back, "spending never resumed");
    assert_eq!(node.session(), session, "nobody declared it dead");
    task.shutdown().await.unwrap();
    let state = common::redis_store(&redis, &cfg)
        .state(&key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((state.spent, state.held), (0, 0));
}

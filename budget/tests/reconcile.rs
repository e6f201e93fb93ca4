//! Reconciliation across nodes, against a real Redis and in process: wins charged on one node,
//! impressions billed on another, unrendered wins credited back once, Redis outages and lost
//! replies, and the background loop with its final flush at shutdown.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use budget::{BudgetConfig, Budgets, CampaignSeed, Lookup, MemoryStore, RedisStore, Store};
use std::future::ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::eventually;
use testkit::redis::RedisServer;

/// Generous bound for "this must not hang" checks; real calls take milliseconds.
const BOUND: Duration = Duration::from_secs(5);
const BUCKET: u64 = 60_000;
const SETTLE: u64 = 7_260_000;
/// A bucket start in a realistic epoch range.
const T0: u64 = 1_700_000_040_000;
const PRICE: u64 = 1_000;
/// How long a test waits for the background loops to get somewhere.
const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> BudgetConfig {
    BudgetConfig {
        sync_interval_ms: 10,
        redis_timeout_ms: 300,
        full_sync_ms: 20,
        min_lease_micros: 50_000,
        shutdown_timeout_ms: 3_000,
        campaigns: vec![CampaignSeed {
            dsp: "acme".into(),
            cid: "c1".into(),
            budget_micros: 1_000_000,
            paused: false,
            ..CampaignSeed::new("", "", 0)
        }],
        ..BudgetConfig::default()
    }
}

/// The first instant the bucket starting at `start` is settled.
fn due(start: u64) -> u64 {
    start + BUCKET + SETTLE
}

fn redis_store(redis: &RedisServer, cfg: &BudgetConfig) -> Arc<dyn Store> {
    Arc::new(RedisStore::open(&redis.url(), &cfg.key_prefix, cfg.redis_timeout()).unwrap())
}

async fn node(cfg: &BudgetConfig, store: Arc<dyn Store>) -> Arc<Budgets> {
    let node = Budgets::new(cfg.clone(), store, common::recorder()).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap();
    node
}

/// Wins an auction at `ts` on `node`, as the exchange does: charge the lease, then record it.
fn win(node: &Budgets, ts: u64) {
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    assert!(c.try_charge(PRICE), "the lease covers the win");
    node.record_charge("acme", "c1", ts, PRICE);
}

async fn spent(node: &Budgets) -> u64 {
    node.state("acme", "c1").await.unwrap().unwrap().spent
}

/// Node `a` runs the auctions, node `b` serves the impressions: only the unrendered wins come
/// back to the budget, once, whichever node settles and however often.
async fn charge_on_one_node_bill_on_another(
    a: Arc<Budgets>,
    b: Arc<Budgets>,
    durable: Option<&common::DurableBilling>,
) {
    let billed = |ts: u64| {
        b.record_billed("acme", "c1", ts, PRICE);
        if let Some(d) = durable {
            d.bill("acme", "c1", ts, PRICE);
        }
    };
    let t1 = T0 + BUCKET;
    // Bucket T0: 10 wins, 6 rendered. Bucket T1: 4 wins, all rendered.
    for i in 0..10 {
        win(&a, T0 + i * 1_000);
    }
    for i in 0..6 {
        billed(T0 + i * 1_000);
    }
    for i in 0..4 {
        win(&a, t1 + i);
        billed(t1 + i);
    }
    a.sync_once().await.unwrap();
    assert_eq!(spent(&a).await, 14 * PRICE);

    let before = b.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(
        (before.unreported_charged, before.unreported_billed),
        (0, 10 * PRICE),
        "each node sees what it has not reported"
    );
    let r = a.reconcile_at(T0 + 500).await.unwrap();
    assert_eq!((r.batches, r.items, r.applied), (1, 2, 1));
    b.reconcile_at(T0 + 500).await.unwrap();
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!((rec.charged, rec.billed), (14 * PRICE, 10 * PRICE));
    assert_eq!(
        (rec.pending_charged, rec.pending_billed),
        (14 * PRICE, 10 * PRICE)
    );
    assert_eq!((rec.open_buckets, rec.credited), (2, 0));
    assert_eq!((rec.unreported_charged, rec.unreported_billed), (0, 0));

    // A millisecond early: nothing moves.
    let r = b.reconcile_at(due(T0) - 1).await.unwrap();
    assert_eq!(r.settle.settled, 0);
    assert_eq!(spent(&a).await, 14 * PRICE);

    // Both nodes settle at once, both buckets due: credited once, only the unrendered wins.
    let (x, y) = tokio::join!(a.reconcile_at(due(t1)), b.reconcile_at(due(t1)));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.settle.settled + y.settle.settled, 2);
    assert_eq!(x.settle.credited + y.settle.credited, 4 * PRICE);
    assert_eq!(spent(&a).await, 10 * PRICE, "spent is what was billed");
    // And again, later: nothing more.
    for n in [&a, &b, &a] {
        let r = n.reconcile_at(due(t1) + BUCKET).await.unwrap();
        assert_eq!(r.settle.settled, 0);
    }
    assert_eq!(spent(&a).await, 10 * PRICE);
    let rec = b.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(
        (rec.credited, rec.settled_buckets, rec.open_buckets),
        (4 * PRICE, 2, 0)
    );
    assert_eq!((rec.pending_charged, rec.pending_billed), (0, 0));
    assert_eq!(rec.billed_beyond_charged, 0);

    // Billed where no charge was reported (its node died first): reported, never debited.
    let t5 = T0 + 5 * BUCKET;
    for i in 0..3 {
        billed(t5 + i);
    }
    b.reconcile_at(t5 + 10).await.unwrap();
    let r = a.reconcile_at(due(t5)).await.unwrap();
    assert_eq!(
        (
            r.settle.settled,
            r.settle.credited,
            r.settle.billed_beyond_charged
        ),
        (1, 0, 3 * PRICE)
    );
    assert_eq!(spent(&a).await, 10 * PRICE);

    // The store keeps its invariant, and the credit is spendable again.
    let state = a.state("acme", "c1").await.unwrap().unwrap();
    assert!(state.spent + state.held <= state.budget);
    assert_eq!(
        a.reconciliation("acme", "c1")
            .await
            .unwrap()
            .billed_beyond_charged,
        3 * PRICE
    );
    assert!(matches!(
        a.reconciliation("acme", "nope").await,
        Err(budget::Error::NotFound(_))
    ));
}

#[tokio::test]
async fn redis_credits_unrendered_wins_once_across_nodes() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config();
    let a = node(&cfg, redis_store(&redis, &cfg)).await;
    let b = node(&cfg, redis_store(&redis, &cfg)).await;
    let durable = common::DurableBilling::new(&redis.url(), &cfg);
    charge_on_one_node_bill_on_another(a, b, Some(&durable)).await;
}

#[tokio::test]
async fn memory_credits_unrendered_wins_once_across_nodes() {
    let cfg = config();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = node(&cfg, store.clone()).await;
    let b = node(&cfg, store).await;
    charge_on_one_node_bill_on_another(a, b, None).await;
}

#[tokio::test]
async fn a_credit_never_takes_spent_below_zero() {
    let cfg = config();
    let node = node(&cfg, Arc::new(MemoryStore::new())).await;
    // A charge recorded whose spend never reached the store (its sync report did not happen).
    node.record_charge("acme", "c1", T0, 5 * PRICE);
    node.reconcile_at(T0).await.unwrap();
    let r = node.reconcile_at(due(T0)).await.unwrap();
    assert_eq!((r.settle.credited, r.settle.uncredited), (0, 5 * PRICE));
    assert_eq!(spent(&node).await, 0);
    let rec = node.reconciliation("acme", "c1").await.unwrap();
    assert_eq!((rec.credited, rec.uncredited), (0, 5 * PRICE));
}

#[tokio::test]
async fn counts_made_while_redis_is_frozen_arrive_later_once() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config();
    let a = node(&cfg, redis_store(&redis, &cfg)).await;
    let b = node(&cfg, redis_store(&redis, &cfg)).await;
    let durable = common::DurableBilling::new(&redis.url(), &cfg);
    for i in 0..3 {
        win(&a, T0 + i);
    }
    a.reconcile_at(T0 + 100).await.unwrap();

    redis.freeze().expect("freeze redis-server");
    for i in 3..8 {
        win(&a, T0 + i);
    }
    b.record_billed("acme", "c1", T0, PRICE);
    for n in [&a, &b] {
        let failed = tokio::time::timeout(BOUND, n.reconcile_at(T0 + 200)).await;
        assert!(failed.expect("a round is bounded").is_err());
    }
    // More counts during the outage: they wait behind the unconfirmed batch.
    win(&a, T0 + 8);
    b.record_billed("acme", "c1", T0 + 1, PRICE);

    redis.thaw().expect("thaw redis-server");
    // The tracker's claims of those two impressions landed once Redis answered.
    durable.bill("acme", "c1", T0, PRICE);
    durable.bill("acme", "c1", T0 + 1, PRICE);
    for n in [&a, &b] {
        let back = eventually(Duration::from_secs(30), || async {
            n.reconcile_at(T0 + 300).await.is_ok()
        })
        .await;
        assert!(back, "no round succeeded after Redis came back");
        // The batch cut during the outage went first; the rest follows.
        n.reconcile_at(T0 + 400).await.unwrap();
    }
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!((rec.charged, rec.billed), (9 * PRICE, 2 * PRICE));
    assert_eq!((rec.unreported_charged, rec.unreported_billed), (0, 0));

    a.sync_once().await.unwrap();
    a.reconcile_at(due(T0)).await.unwrap();
    assert_eq!(spent(&a).await, 2 * PRICE);
}

/// True when a PING on a fresh connection gets no answer within 50 ms (or no connection).
async fn unresponsive(url: String) -> bool {
    let quick = Duration::from_millis(50);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(quick))
        .set_response_timeout(Some(quick));
    let Ok(client) = redis::Client::open(url) else {
        return true;
    };
    let pong: Result<String, _> = match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(mut conn) => redis::cmd("PING").query_async(&mut conn).await,
        Err(e) => Err(e),
    };
    pong.is_err()
}

/// Runs a busy Lua script that keeps Redis from answering anyone for `ms` milliseconds, as a
/// slow command would: commands sent meanwhile run afterwards, their senders have given up.
async fn stall(url: String, ms: u64) {
    let client = redis::Client::open(url).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let script = "local t = redis.call('TIME') \
        local start = t[1] * 1000000 + t[2] \
        while true do \
          local n = redis.call('TIME') \
          if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) * 1000 then return 1 end \
        end";
    let _: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(0)
        .arg(ms)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_was_lost_counts_once() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = config();
    let a = node(&cfg, redis_store(&redis, &cfg)).await;
    // One round first, so the scripts are loaded and the stalled call is the real batch.
    win(&a, T0);
    a.reconcile_at(T0 + 50).await.unwrap();
    for i in 1..5 {
        win(&a, T0 + i);
    }
    let stalled = tokio::spawn(stall(redis.url(), 1_500));
    // Once Redis stops answering the stall has started; the batch sent now queues behind
    // it and the node times out.
    let busy = eventually(BOUND, || unresponsive(redis.url())).await;
    assert!(busy, "the stall never started");
    let lost = tokio::time::timeout(BOUND, a.reconcile_at(T0 + 100)).await;
    assert!(
        lost.expect("a round is bounded").is_err(),
        "the reply was lost"
    );
    stalled.await.unwrap();

    // The store applied it after all; the node does not know and still counts it unreported.
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(rec.charged, 5 * PRICE, "applied when Redis got to it");
    assert_eq!(rec.unreported_charged, 4 * PRICE);
    // More wins meanwhile, then the resend: the lost batch is a duplicate, the rest follows.
    win(&a, T0 + 10);
    let r = a.reconcile_at(T0 + 200).await.unwrap();
    assert_eq!((r.duplicates, r.applied), (1, 0));
    let r = a.reconcile_at(T0 + 300).await.unwrap();
    assert_eq!(r.applied, 1);
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!((rec.charged, rec.unreported_charged), (6 * PRICE, 0));
}

#[tokio::test]
async fn nodes_must_agree_on_the_bucket_size() {
    let cfg = config();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = node(&cfg, store.clone()).await;
    let odd = BudgetConfig {
        reconcile_bucket_ms: 30_000,
        ..config()
    };
    let b = node(&odd, store).await;
    win(&a, T0);
    a.reconcile_at(T0).await.unwrap();
    b.record_billed("acme", "c1", T0, PRICE);
    assert!(matches!(
        b.reconcile_at(T0).await,
        Err(budget::Error::Config(_))
    ));
    let rec = b.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(
        (rec.billed, rec.unreported_billed),
        (0, PRICE),
        "kept, not mixed in"
    );
}

/// Real time, real loops: wins and impressions recorded from several threads while the loops
/// run, unrendered wins credited after a short settle delay, the rest flushed at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_settles_after_the_delay_and_shutdown_flushes() {
    let redis = RedisServer::start().expect("start redis-server");
    let cfg = BudgetConfig {
        reconcile_interval_ms: 20,
        reconcile_bucket_ms: 100,
        settle_after_ms: 1_000,
        ..config()
    };
    let (a, task_a) = Budgets::start(cfg.clone(), redis_store(&redis, &cfg), common::recorder())
        .await
        .unwrap();
    let (b, task_b) = Budgets::start(cfg.clone(), redis_store(&redis, &cfg), common::recorder())
        .await
        .unwrap();
    let durable = Arc::new(common::DurableBilling::new(&redis.url(), &cfg));
    let leased = eventually(PATIENCE, || {
        ready(
            a.local("acme", "c1")
                .is_some_and(|l| l.available >= 50 * PRICE),
        )
    })
    .await;
    assert!(leased, "no lease");

    // Two threads win on node a; every third win is rendered, billed on node b.
    let stop = Arc::new(AtomicBool::new(false));
    let won = Arc::new(AtomicU64::new(0));
    let rendered = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (a, b, durable) = (a.clone(), b.clone(), durable.clone());
            let (stop, won, rendered) = (stop.clone(), won.clone(), rendered.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && won.load(Ordering::Relaxed) < 200 * PRICE {
                    let Lookup::Found(c) = a.lookup("acme", Some("c1")) else {
                        panic!("seeded campaign is known");
                    };
                    if !c.try_charge(PRICE) {
                        // Pacing, not a wait: an empty lease lets the sync loop run.
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let ts = now_ms();
                    a.record_charge("acme", "c1", ts, PRICE);
                    won.fetch_add(PRICE, Ordering::Relaxed);
                    n += 1;
                    if n.is_multiple_of(3) {
                        b.record_billed("acme", "c1", ts, PRICE);
                        durable.bill("acme", "c1", ts, PRICE);
                        rendered.fetch_add(PRICE, Ordering::Relaxed);
                    }
                    // Pacing: wins spread over several buckets, as real traffic would.
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    let enough = eventually(PATIENCE, || {
        ready(won.load(Ordering::Relaxed) >= 200 * PRICE)
    })
    .await;
    assert!(enough, "only {} won", won.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (won, rendered) = (
        won.load(Ordering::Relaxed),
        rendered.load(Ordering::Relaxed),
    );

    // The loops send everything and, once the buckets are old enough, credit the unrendered.
    let settled = eventually(PATIENCE, || async {
        let rec = a.reconciliation("acme", "c1").await.unwrap();
        rec.charged == won && rec.open_buckets == 0
    })
    .await;
    assert!(settled, "buckets left open");
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(rec.billed, rendered);
    assert_eq!(rec.credited, won - rendered);
    assert_eq!(rec.billed_beyond_charged, 0);

    // Counts recorded just before shutdown still reach the store.
    b.record_billed("acme", "c1", now_ms(), PRICE);
    let report = task_b.shutdown().await.unwrap();
    assert_eq!(
        (report.unreconciled_charged, report.unreconciled_billed),
        (0, 0)
    );
    let report = task_a.shutdown().await.unwrap();
    assert_eq!(report.charged, won);
    let rec = a.reconciliation("acme", "c1").await.unwrap();
    assert_eq!(rec.billed + rec.late_billed, rendered + PRICE);
    let state = a.state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(
        state.spent,
        won - rec.credited,
        "spent is charged minus credited"
    );
    assert_eq!(state.held, 0);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

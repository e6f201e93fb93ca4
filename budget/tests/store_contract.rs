//! One contract, three stores: `MemoryStore`, `RedisStore` on a real redis-server and
//! `RedisStore` on a real 3-master Redis Cluster must agree.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use budget::{
    BatchOutcome, BatchReply, CampaignKey, DailyChange, DailySettings, DayWindow, Error,
    MemoryStore, Pacing, ReconArgs, ReconBatch, ReconItem, RedisStore, StatedCampaign, Store,
    StoreIdentity, SyncItem, MAX_MICROS,
};
use redis::aio::ConnectionLike;
use std::time::Duration;
use testkit::cluster::RedisCluster;
use testkit::redis::RedisServer;

/// Where a store's settlement finds billed impressions: in the node-reported counts (the
/// memory store), or in the tracker's durable counts, which these tests write as the tracker's
/// claim script does (`HINCRBY P:billed:{iNN}:START LEN:DSPCID MICROS`).
#[derive(Clone)]
enum Billing {
    Reported,
    Durable(Durable),
}

#[derive(Clone)]
enum Durable {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Billing {
    async fn single(redis: &RedisServer) -> Billing {
        let client = redis::Client::open(redis.url()).unwrap();
        Billing::Durable(Durable::Single(
            client.get_multiplexed_async_connection().await.unwrap(),
        ))
    }

    /// Bills `micros` of campaign `key` in the bucket starting at `start`, spread over three
    /// impression groups the way distinct impressions would be.
    async fn bill(&self, prefix: &str, key: &CampaignKey, start: u64, micros: u64) {
        let Billing::Durable(conn) = self else {
            return;
        };
        let field = format!("{}:{}{}", key.dsp.len(), key.dsp, key.cid);
        let parts = [micros / 3, micros / 3, micros - 2 * (micros / 3)];
        for (n, part) in parts.into_iter().enumerate() {
            let group = (start / 1000 + 97 * n as u64) % 256;
            let hash = format!("{prefix}:billed:{{i{group:02x}}}:{start}");
            let mut cmd = redis::cmd("HINCRBY");
            cmd.arg(&hash).arg(&field).arg(part);
            let _: i64 = match conn {
                Durable::Single(c) => query(c.clone(), &cmd).await,
                Durable::Cluster(c) => query(c.clone(), &cmd).await,
            };
        }
    }
}

async fn query<C: ConnectionLike>(mut conn: C, cmd: &redis::Cmd) -> i64 {
    cmd.query_async(&mut conn).await.unwrap()
}

/// A cluster connection to `cluster`, and the store over it.
async fn cluster_store(
    cluster: &RedisCluster,
    prefix: &str,
) -> (RedisStore<redis::cluster_async::ClusterConnection>, Billing) {
    let client = redis::cluster::ClusterClient::builder(cluster.seeds())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let conn = client.get_async_connection().await.unwrap();
    let store = RedisStore::with_connection(conn.clone(), prefix, Duration::from_secs(2));
    (store, Billing::Durable(Durable::Cluster(conn)))
}

fn item(key: &CampaignKey, granted: u64, spent: u64, returned: u64, want: u64) -> SyncItem {
    SyncItem {
        key: key.clone(),
        granted,
        spent,
        returned,
        want,
        day: None,
    }
}

/// Grant of a one-item sync, panicking if the campaign is absent.
async fn grant(store: &dyn Store, session: &str, it: SyncItem) -> budget::Grant {
    let mut out = store.sync(session, &[it]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap().expect("campaign exists")
}

async fn contract(store: &dyn Store) {
    // Awkward names on purpose: separators and hash-tag braces must survive.
    let key = CampaignKey::new("dsp:one", "c{1}%");

    // Absent campaign.
    assert!(store.state(&key).await.unwrap().is_none());
    assert_eq!(
        store.sync("a", &[item(&key, 0, 0, 0, 100)]).await.unwrap(),
        vec![None]
    );
    assert!(matches!(
        store.set_paused(&key, true).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.reclaim(&key, "a").await,
        Err(Error::NotFound(_))
    ));

    // Seeding creates once and never overrides.
    assert!(store
        .seed_if_absent(&key, 1_000, false, &DailySettings::default())
        .await
        .unwrap());
    assert!(!store
        .seed_if_absent(&key, 5_000, true, &DailySettings::default())
        .await
        .unwrap());
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.budget, s.spent, s.held, s.paused), (1_000, 0, 0, false));
    assert!(s.nodes.is_empty());
    assert!(store.campaigns().await.unwrap().contains(&key));

    // Grants are capped by what is left.
    let g = grant(store, "a", item(&key, 0, 0, 0, 600)).await;
    assert_eq!((g.granted, g.held, g.budget), (600, 600, 1_000));
    let g = grant(store, "b", item(&key, 0, 0, 0, 600)).await;
    assert_eq!((g.granted, g.held), (400, 1_000));

    // The same report twice (its reply lost, then retried) counts once and answers alike.
    let first = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    let again = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    assert_eq!(first, again);
    assert_eq!((first.granted, first.spent, first.held), (600, 250, 750));
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (250, 750));
    let a = s.nodes.iter().find(|n| n.session == "a").unwrap();
    assert_eq!((a.granted, a.spent, a.returned, a.held), (600, 250, 0, 350));
    let b = s.nodes.iter().find(|n| n.session == "b").unwrap();
    assert_eq!(b.held, 400);

    // An older report arriving late changes nothing.
    let late = grant(store, "a", item(&key, 600, 100, 0, 0)).await;
    assert_eq!((late.spent, late.held, late.granted), (250, 750, 600));

    // A budget below what is spent or held is refused; raising it gives more lease.
    assert!(matches!(
        store.set_budget(&key, 900).await,
        Err(Error::BelowCommitted {
            budget: 900,
            committed: 1_000
        })
    ));
    assert_eq!(store.set_budget(&key, 2_000).await.unwrap().budget, 2_000);
    let g = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    assert_eq!(g.granted, 850, "topped up from 350 to 600");

    // Paused: no new money, but reports still count.
    assert!(store.set_paused(&key, true).await.unwrap().paused);
    let g = grant(store, "b", item(&key, 400, 100, 0, 1_000)).await;
    assert!(g.paused);
    assert_eq!((g.granted, g.spent), (400, 350));
    assert!(!store.set_paused(&key, false).await.unwrap().paused);

    // Raising by an amount.
    assert_eq!(store.add_budget(&key, 500).await.unwrap().budget, 2_500);

    // b hands back the 300 it holds; then its record can be forgotten, a's (holding) cannot.
    let g = grant(store, "b", item(&key, 400, 100, 300, 0)).await;
    assert_eq!((g.spent, g.held), (350, 600));
    store
        .end_session("b", std::slice::from_ref(&key))
        .await
        .unwrap();
    store
        .end_session("a", std::slice::from_ref(&key))
        .await
        .unwrap();
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!(
        s.nodes
            .iter()
            .map(|n| n.session.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );

    // Reclaiming a dead session frees what it held; it gets nothing more, but spend it still
    // reports is counted.
    assert_eq!(store.reclaim(&key, "a").await.unwrap(), 600);
    assert_eq!(store.reclaim(&key, "nobody").await.unwrap(), 0);
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (350, 0));
    assert!(s.nodes[0].reclaimed);
    let g = grant(store, "a", item(&key, 850, 400, 0, 500)).await;
    assert_eq!((g.granted, g.spent, g.held), (850, 500, 0));

    // A grant the store lost (restored from an older snapshot) is held again, not re-granted.
    let fresh = CampaignKey::new("dsp:one", "lost");
    assert!(store
        .seed_if_absent(&fresh, 1_000, false, &DailySettings::default())
        .await
        .unwrap());
    let g = grant(store, "c", item(&fresh, 400, 100, 0, 300)).await;
    assert_eq!((g.granted, g.spent, g.held), (400, 100, 300));

    // Amounts the store cannot keep exactly are refused.
    assert!(matches!(
        store.set_budget(&key, MAX_MICROS + 1).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        store.add_budget(&key, MAX_MICROS).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        store
            .seed_if_absent(
                &CampaignKey::new("d", "huge"),
                MAX_MICROS + 1,
                false,
                &DailySettings::default()
            )
            .await,
        Err(Error::TooLarge(_))
    ));
    assert!(store
        .state(&CampaignKey::new("d", "huge"))
        .await
        .unwrap()
        .is_none());
    let big = CampaignKey::new("d", "big");
    let s = store.set_budget(&big, MAX_MICROS).await.unwrap();
    assert_eq!(s.budget, MAX_MICROS);
    let g = grant(store, "a", item(&big, 0, 0, 0, MAX_MICROS - 1)).await;
    assert_eq!((g.granted, g.held), (MAX_MICROS - 1, MAX_MICROS - 1));
}

/// Hundreds of campaigns in one report (several script calls in one round trip), answered in
/// order, absent ones included.
async fn many_campaigns(store: &dyn Store) {
    let keys: Vec<CampaignKey> = (0..600)
        .map(|i| CampaignKey::new("bulk", &format!("c{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 7 != 0 {
            store
                .seed_if_absent(key, 1_000 + i as u64, false, &DailySettings::default())
                .await
                .unwrap();
        }
    }
    let items: Vec<SyncItem> = keys.iter().map(|k| item(k, 0, 0, 0, 5_000)).collect();
    let grants = store.sync("n", &items).await.unwrap();
    assert_eq!(grants.len(), keys.len());
    for (i, g) in grants.iter().enumerate() {
        if i % 7 == 0 {
            assert!(g.is_none(), "campaign {i} was never created");
        } else {
            let g = g.as_ref().expect("created campaign");
            assert_eq!(g.granted, 1_000 + i as u64, "campaign {i}");
        }
    }
    let listed = store.campaigns().await.unwrap();
    assert_eq!(
        listed.iter().filter(|k| &*k.dsp == "bulk").count(),
        600 - 86
    );
}

/// A bucket start (a multiple of the one-minute bucket) in a realistic epoch range.
const T0: u64 = 1_700_000_040_000;
const BUCKET: u64 = 60_000;
const SETTLE: u64 = 7_260_000;
const RETAIN: u64 = 86_400_000;
/// The first instant bucket `T0` is due for settlement.
const DUE: u64 = T0 + BUCKET + SETTLE;

fn args(now_ms: u64) -> ReconArgs {
    ReconArgs {
        now_ms,
        bucket_ms: BUCKET,
        settle_after_ms: SETTLE,
        retain_ms: RETAIN,
        max_settle: 1000,
    }
}

fn batch(seq: u64, items: &[(&CampaignKey, u64, u64, u64)]) -> ReconBatch {
    ReconBatch {
        seq,
        items: items
            .iter()
            .map(|&(key, bucket_start_ms, charged, billed)| ReconItem {
                key: key.clone(),
                bucket_start_ms,
                charged,
                billed,
            })
            .collect(),
    }
}

fn outcome(outcome: BatchOutcome, absent: usize, late: usize) -> BatchReply {
    BatchReply {
        outcome,
        absent,
        late,
    }
}

/// A campaign with `spent` micros reported spent by session "spender".
async fn spent_campaign(store: &dyn Store, key: &CampaignKey, spent: u64) {
    assert!(store
        .seed_if_absent(key, 1_000_000, false, &DailySettings::default())
        .await
        .unwrap());
    grant(store, "spender", item(key, 0, 0, 0, spent)).await;
    let g = grant(store, "spender", item(key, spent, spent, 0, 0)).await;
    assert_eq!(g.spent, spent);
}

async fn spent_of(store: &dyn Store, key: &CampaignKey) -> u64 {
    store.state(key).await.unwrap().unwrap().spent
}

/// Reconciliation: batches apply once, buckets settle once, credits never take `spent` below
/// zero, over-billing and late counts are reported, not settled.
async fn recon_contract(store: &dyn Store, billing: &Billing) {
    let key = CampaignKey::new("dsp:r", "c{2}");

    // A campaign the store does not have: the counts are dropped (nothing was charged to it).
    let r = store
        .reconcile("a", &[batch(1, &[(&key, T0, 5_000, 0)])], &args(T0))
        .await
        .unwrap();
    assert_eq!(r.batches, [outcome(BatchOutcome::Applied, 1, 0)]);
    assert!(store.reconciliation(&key).await.unwrap().is_none());

    spent_campaign(store, &key, 10_000).await;
    let t1 = T0 + BUCKET;

    // Node a charged 5_000 in bucket T0 and 2_000 in T1; node b billed 3_000 of T0 and all of
    // T1. Node a's reply was lost and it sends the same batch again: counted once.
    let a = batch(2, &[(&key, T0, 5_000, 0), (&key, t1, 2_000, 0)]);
    let r = store
        .reconcile("a", std::slice::from_ref(&a), &args(T0 + 1))
        .await
        .unwrap();
    assert_eq!(r.batches, [outcome(BatchOutcome::Applied, 0, 0)]);
    let r = store
        .reconcile("a", std::slice::from_ref(&a), &args(T0 + 2))
        .await
        .unwrap();
    assert_eq!(r.batches, [outcome(BatchOutcome::Duplicate, 0, 0)]);
    // Two batches in one call: the second waits for the first, which applies.
    billing.bill("budget", &key, T0, 3_000).await;
    billing.bill("budget", &key, t1, 2_000).await;
    let r = store
        .reconcile(
            "b",
            &[
                batch(1, &[(&key, T0, 0, 3_000)]),
                batch(2, &[(&key, t1, 0, 2_000)]),
            ],
            &args(T0 + 3),
        )
        .await
        .unwrap();
    assert_eq!(
        r.batches,
        [
            outcome(BatchOutcome::Applied, 0, 0),
            outcome(BatchOutcome::Applied, 0, 0)
        ]
    );
    let t = store.reconciliation(&key).await.unwrap().unwrap();
    assert_eq!((t.charged, t.billed), (7_000, 5_000));
    assert_eq!((t.pending_charged(), t.pending_billed()), (7_000, 5_000));
    assert_eq!((t.open_buckets, t.settled_buckets, t.credited), (2, 0, 0));
    assert_eq!(r.settle.settled, 0, "nothing is due yet");

    // Not due a millisecond early.
    let r = store.reconcile("z", &[], &args(DUE - 1)).await.unwrap();
    assert_eq!(r.settle.settled, 0);
    assert_eq!(spent_of(store, &key).await, 10_000);

    // Due: bucket T0 gives back its 2_000 never billed; T1 is not due yet.
    let r = store.reconcile("z", &[], &args(DUE)).await.unwrap();
    assert_eq!((r.settle.settled, r.settle.credited), (1, 2_000));
    assert!(!r.settle.more);
    assert_eq!(spent_of(store, &key).await, 8_000);
    // Settling again, from another session, later: T1 settles with nothing to credit (every
    // win was rendered), T0 is not credited twice.
    let r = store
        .reconcile("y", &[], &args(DUE + 2 * BUCKET))
        .await
        .unwrap();
    assert_eq!((r.settle.settled, r.settle.credited), (1, 0));
    let r = store
        .reconcile("z", &[], &args(DUE + 3 * BUCKET))
        .await
        .unwrap();
    assert_eq!(r.settle.settled, 0);
    assert_eq!(spent_of(store, &key).await, 8_000);
    let t = store.reconciliation(&key).await.unwrap().unwrap();
    assert_eq!((t.charged, t.billed, t.credited), (7_000, 5_000, 2_000));
    assert_eq!((t.settled_charged, t.settled_billed), (7_000, 5_000));
    assert_eq!((t.pending_charged(), t.pending_billed()), (0, 0));
    assert_eq!((t.open_buckets, t.settled_buckets), (0, 2));

    // Counts for a settled bucket, or for one too old to be remembered, are late: reported,
    // not settled again.
    let forgotten = T0 - 2 * RETAIN;
    let r = store
        .reconcile(
            "b",
            &[batch(3, &[(&key, T0, 0, 1_000), (&key, forgotten, 500, 0)])],
            &args(DUE + 3 * BUCKET),
        )
        .await
        .unwrap();
    assert_eq!(r.batches, [outcome(BatchOutcome::Applied, 0, 2)]);
    let t = store.reconciliation(&key).await.unwrap().unwrap();
    assert_eq!((t.late_charged, t.late_billed), (500, 1_000));
    assert_eq!((t.charged, t.billed, t.open_buckets), (7_000, 5_000, 0));
    assert_eq!(spent_of(store, &key).await, 8_000);

    // Billed beyond charged (a charge report lost with its node) is reported, not debited.
    let t2 = T0 + 2 * BUCKET;
    billing.bill("budget", &key, t2, 4_000).await;
    store
        .reconcile("b", &[batch(4, &[(&key, t2, 1_000, 4_000)])], &args(t2))
        .await
        .unwrap();
    let r = store
        .reconcile("z", &[], &args(t2 + BUCKET + SETTLE))
        .await
        .unwrap();
    assert_eq!((r.settle.settled, r.settle.credited), (1, 0));
    assert_eq!(r.settle.billed_beyond_charged, 3_000);
    assert_eq!(spent_of(store, &key).await, 8_000);
    let t = store.reconciliation(&key).await.unwrap().unwrap();
    assert_eq!((t.billed_beyond_charged, t.uncredited), (3_000, 0));

    // A credit never takes `spent` below zero: the rest is reported as uncredited.
    let low = CampaignKey::new("dsp:r", "low");
    spent_campaign(store, &low, 500).await;
    store
        .reconcile("a", &[batch(3, &[(&low, T0, 2_000, 0)])], &args(T0))
        .await
        .unwrap();
    let r = store.reconcile("z", &[], &args(DUE)).await.unwrap();
    assert_eq!((r.settle.credited, r.settle.uncredited), (500, 1_500));
    assert_eq!(spent_of(store, &low).await, 0);
    let t = store.reconciliation(&low).await.unwrap().unwrap();
    assert_eq!((t.credited, t.uncredited), (500, 1_500));

    // At most `max_settle` buckets per call; `more` says others are due.
    let many = CampaignKey::new("dsp:r", "many");
    spent_campaign(store, &many, 10_000).await;
    let starts = [T0, T0 + BUCKET, T0 + 2 * BUCKET];
    let items: Vec<_> = starts.iter().map(|&s| (&many, s, 100, 0)).collect();
    store
        .reconcile("a", &[batch(4, &items)], &args(T0))
        .await
        .unwrap();
    let limited = ReconArgs {
        max_settle: 2,
        ..args(DUE + 10 * BUCKET)
    };
    let r = store.reconcile("z", &[], &limited).await.unwrap();
    assert_eq!(
        (r.settle.settled, r.settle.credited, r.settle.more),
        (2, 200, true)
    );
    let r = store.reconcile("z", &[], &limited).await.unwrap();
    assert_eq!(
        (r.settle.settled, r.settle.credited, r.settle.more),
        (1, 100, false)
    );
    assert_eq!(spent_of(store, &many).await, 9_700);

    // Every node must use the store's bucket size: another is refused, nothing applied.
    let other_size = ReconArgs {
        bucket_ms: 30_000,
        ..args(T0)
    };
    let b5 = batch(5, &[(&many, T0 + 5 * BUCKET, 100, 0)]);
    assert!(matches!(
        store
            .reconcile("a", std::slice::from_ref(&b5), &other_size)
            .await,
        Err(Error::Config(_))
    ));
    let r = store
        .reconcile("a", std::slice::from_ref(&b5), &args(T0))
        .await
        .unwrap();
    assert_eq!(r.batches, [outcome(BatchOutcome::Applied, 0, 0)]);
    assert_eq!(
        store.reconciliation(&many).await.unwrap().unwrap().charged,
        400
    );
    let zero = ReconArgs {
        retain_ms: 0,
        ..args(T0)
    };
    assert!(matches!(
        store.reconcile("a", &[], &zero).await,
        Err(Error::Config(_))
    ));

    // Reconciliation fields do not disturb the budget state.
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.budget, s.spent, s.held), (1_000_000, 8_000, 0));
}

/// The identity is written once, the fence sticks, and an adoption replaces every campaign by
/// the stated ones and lifts the fence.
async fn identity_contract(store: &dyn Store) {
    assert_eq!(store.identity().await.unwrap(), StoreIdentity::default());
    assert_eq!(store.init_identity("one").await.unwrap(), "one");
    assert_eq!(store.init_identity("two").await.unwrap(), "one");
    store.fence("lost").await.unwrap();
    store.fence("again").await.unwrap();
    let seen = store.identity().await.unwrap();
    assert_eq!((seen.id.as_deref(), seen.fenced), (Some("one"), true));

    let (kept, dropped) = (
        CampaignKey::new("d", "kept"),
        CampaignKey::new("d", "dropped"),
    );
    for key in [&kept, &dropped] {
        assert!(store
            .seed_if_absent(key, 1_000, false, &DailySettings::default())
            .await
            .unwrap());
        grant(store, "a", item(key, 0, 0, 0, 400)).await;
    }
    let stated = StatedCampaign {
        key: kept.clone(),
        budget: 10_000,
        spent: 7_000,
        paused: false,
        daily: DailySettings::default(),
    };
    store.adopt("adopted-x", &[stated]).await.unwrap();
    let seen = store.identity().await.unwrap();
    assert_eq!(
        (seen.id.as_deref(), seen.fenced),
        (Some("adopted-x"), false)
    );
    assert_eq!(store.campaigns().await.unwrap(), vec![kept.clone()]);
    assert!(store.state(&dropped).await.unwrap().is_none());
    let s = store.state(&kept).await.unwrap().unwrap();
    assert_eq!(
        (s.budget, s.spent, s.held, s.paused),
        (10_000, 7_000, 0, false)
    );
    assert!(s.nodes.is_empty(), "no session survives an adoption");
    // The old session's report counts its grant as held again (see `apply_sync`); a node that
    // follows the adoption starts a fresh book, so only the stated spend is there.
    let g = grant(store, "b", item(&kept, 0, 0, 0, 5_000)).await;
    assert_eq!((g.granted, g.spent, g.held), (3_000, 7_000, 3_000));
}

const DAY_MS: u64 = 86_400_000;
/// 2026-12-07T00:00:00Z, the start of day 20261207 in UTC.
const D1_START: u64 = 1_796_601_600_000;

fn window(tz: &str, id: u64, start_ms: u64, now_ms: u64) -> DayWindow {
    DayWindow {
        tz: tz.into(),
        id,
        start_ms,
        end_ms: start_ms + DAY_MS,
        now_ms,
    }
}

fn on(it: SyncItem, day: &DayWindow) -> SyncItem {
    SyncItem {
        day: Some(day.clone()),
        ..it
    }
}

fn daily(micros: Option<u64>, pacing: Pacing, tz: &str) -> DailySettings {
    DailySettings {
        daily_budget_micros: micros,
        pacing,
        timezone: tz.to_owned(),
    }
}

/// Daily caps, day changes and even pacing: the same answers from both stores.
async fn daily_contract(store: &dyn Store) {
    let key = CampaignKey::new("d", "daily");
    let d1 = window("UTC", 20_261_207, D1_START, D1_START + 3_600_000);
    let d2 = window(
        "UTC",
        20_261_208,
        D1_START + DAY_MS,
        D1_START + DAY_MS + 60_000,
    );
    assert!(matches!(
        store.set_daily(&key, &DailyChange::default(), &d1).await,
        Err(Error::NotFound(_))
    ));
    let settings = daily(Some(1_000), Pacing::Asap, "UTC");
    assert!(store
        .seed_if_absent(&key, 10_000, false, &settings)
        .await
        .unwrap());
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            s.daily_budget,
            s.pacing,
            s.timezone.as_str(),
            s.day,
            s.day_spent
        ),
        (Some(1_000), Pacing::Asap, "UTC", 0, 0)
    );

    // Without the campaign's day a capped campaign gets nothing.
    let g = grant(store, "a", item(&key, 0, 0, 0, 600)).await;
    assert_eq!((g.granted, g.room, g.day), (0, 0, 0));
    // The daily cap binds before the lifetime budget: 600 + 400, then nothing.
    let g = grant(store, "a", on(item(&key, 0, 0, 0, 600), &d1)).await;
    assert_eq!(
        (g.granted, g.held, g.room, g.day),
        (600, 600, 400, 20_261_207)
    );
    let g = grant(store, "b", on(item(&key, 0, 0, 0, 600), &d1)).await;
    assert_eq!((g.granted, g.held, g.room), (400, 1_000, 0));
    // Spend moves held to day_spent; the day stays full.
    let g = grant(store, "a", on(item(&key, 600, 500, 0, 600), &d1)).await;
    assert_eq!(
        (g.granted, g.spent, g.day_spent, g.held, g.room),
        (600, 500, 500, 500, 0)
    );
    assert_eq!(g.daily_budget, Some(1_000));
    assert_eq!(g.timezone, "UTC");

    // The next day: day_spent starts again, what is held still counts against it.
    let g = grant(store, "b", on(item(&key, 400, 0, 0, 600), &d2)).await;
    assert_eq!(
        (g.granted, g.day, g.day_spent, g.held, g.room),
        (600, 20_261_208, 0, 700, 300)
    );
    // A node whose clock is still on yesterday cannot move the day back; its report lands in
    // today, and it gets nothing until its clock agrees.
    let g = grant(store, "a", on(item(&key, 600, 600, 0, 600), &d1)).await;
    assert_eq!(
        (g.granted, g.day, g.day_spent, g.held, g.room),
        (600, 20_261_208, 100, 600, 0)
    );
    // A window in another zone is no window.
    let paris = window(
        "Europe/Paris",
        20_261_209,
        D1_START + 2 * DAY_MS,
        D1_START + 2 * DAY_MS,
    );
    let g = grant(store, "a", on(item(&key, 600, 600, 0, 600), &paris)).await;
    assert_eq!((g.granted, g.day, g.room), (600, 20_261_208, 0));
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!(
        (s.day, s.day_spent, s.spent, s.held),
        (20_261_208, 100, 600, 600)
    );

    // A daily budget below today's spend plus what is held is refused.
    let lower = DailyChange {
        daily_budget_micros: Some(Some(600)),
        ..DailyChange::default()
    };
    assert!(matches!(
        store.set_daily(&key, &lower, &d2).await,
        Err(Error::DailyBelowCommitted {
            daily: 600,
            committed: 700
        })
    ));
    assert!(matches!(
        store
            .set_daily(
                &key,
                &DailyChange {
                    daily_budget_micros: Some(Some(MAX_MICROS + 1)),
                    ..DailyChange::default()
                },
                &d2
            )
            .await,
        Err(Error::TooLarge(_))
    ));
    let raised = DailyChange {
        daily_budget_micros: Some(Some(2_000)),
        ..DailyChange::default()
    };
    let s = store.set_daily(&key, &raised, &d2).await.unwrap();
    assert_eq!((s.daily_budget, s.day_spent), (Some(2_000), 100));
    // A new zone takes the caller's day in it and keeps today's spend.
    let ny = window(
        "America/New_York",
        20_261_207,
        D1_START + 5 * 3_600_000,
        D1_START + DAY_MS,
    );
    let moved = DailyChange {
        timezone: Some("America/New_York".to_owned()),
        ..DailyChange::default()
    };
    let s = store.set_daily(&key, &moved, &ny).await.unwrap();
    assert_eq!(
        (s.timezone.as_str(), s.day, s.day_spent),
        ("America/New_York", 20_261_207, 100)
    );
    // Removing the cap leaves the lifetime budget only (no day needed).
    let uncapped = DailyChange {
        daily_budget_micros: Some(None),
        ..DailyChange::default()
    };
    let s = store.set_daily(&key, &uncapped, &ny).await.unwrap();
    assert_eq!(s.daily_budget, None);
    let g = grant(store, "c", item(&key, 0, 0, 0, 5_000)).await;
    assert_eq!((g.granted, g.held, g.room), (5_000, 5_600, 3_800));

    // Even pacing: 86_400 micros a day is one per second of the day, granted along the line.
    let paced = CampaignKey::new("d", "paced");
    let settings = daily(Some(86_400), Pacing::Even, "UTC");
    assert!(store
        .seed_if_absent(&paced, 1_000_000, false, &settings)
        .await
        .unwrap());
    let at = |ms: u64| window("UTC", 20_261_207, D1_START, D1_START + ms);
    let g = grant(store, "a", on(item(&paced, 0, 0, 0, 10_000), &at(0))).await;
    assert_eq!(g.granted, 0, "nothing before the line moves");
    let g = grant(
        store,
        "a",
        on(item(&paced, 0, 0, 0, 10_000), &at(3_600_000)),
    )
    .await;
    assert_eq!((g.granted, g.room, g.pacing), (3_600, 0, Pacing::Even));
    // A minute later, one minute more, whoever asks.
    let g = grant(
        store,
        "b",
        on(item(&paced, 0, 0, 0, 10_000), &at(3_660_000)),
    )
    .await;
    assert_eq!((g.granted, g.held), (60, 3_660));
    // Underspend is made up later: what was handed back is there again under the line.
    let g = grant(
        store,
        "a",
        on(item(&paced, 3_600, 1_000, 2_600, 0), &at(7_200_000)),
    )
    .await;
    assert_eq!((g.day_spent, g.held, g.room), (1_000, 60, 6_140));
    let g = grant(
        store,
        "b",
        on(item(&paced, 60, 0, 0, 10_000), &at(7_200_000)),
    )
    .await;
    assert_eq!((g.granted, g.held, g.room), (6_200, 6_200, 0));
    // At the day's end the line is the daily budget.
    let g = grant(
        store,
        "b",
        on(item(&paced, 6_200, 6_200, 0, 100_000), &at(DAY_MS)),
    )
    .await;
    assert_eq!((g.granted, g.day_spent, g.held), (85_400, 7_200, 79_200));
    assert_eq!(g.day_spent + g.held, 86_400);
}

#[tokio::test]
async fn both_stores_keep_the_daily_contract() {
    daily_contract(&MemoryStore::new()).await;
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    daily_contract(&store).await;
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let store = MemoryStore::new();
    contract(&store).await;
    many_campaigns(&store).await;
    recon_contract(&store, &Billing::Reported).await;
}

#[tokio::test]
async fn both_stores_keep_the_identity_contract() {
    identity_contract(&MemoryStore::new()).await;
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    identity_contract(&store).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    contract(&store).await;
    many_campaigns(&store).await;
    recon_contract(&store, &Billing::single(&redis).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_keeps_the_contract() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let (store, billing) = cluster_store(&cluster, "budget").await;
    contract(&store).await;
    many_campaigns(&store).await;
    recon_contract(&store, &billing).await;
    let (store, _) = cluster_store(&cluster, "ident").await;
    identity_contract(&store).await;
}

#[tokio::test]
async fn redis_settles_once_when_nodes_race() {
    let redis = RedisServer::start().expect("start redis-server");
    let open = || RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    let (one, two) = (open(), open());
    let keys: Vec<CampaignKey> = (0..50)
        .map(|i| CampaignKey::new("race", &format!("c{i}")))
        .collect();
    for key in &keys {
        spent_campaign(&one, key, 10_000).await;
    }
    let items: Vec<_> = keys.iter().map(|k| (k, T0, 1_000, 400)).collect();
    let billing = Billing::single(&redis).await;
    for key in &keys {
        billing.bill("budget", key, T0, 400).await;
    }
    one.reconcile("n", &[batch(1, &items)], &args(T0))
        .await
        .unwrap();
    let now = args(DUE);
    let (a, b) = tokio::join!(one.reconcile("p", &[], &now), two.reconcile("q", &[], &now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.settle.settled + b.settle.settled, 50);
    assert_eq!(a.settle.credited + b.settle.credited, 50 * 600);
    for key in &keys {
        assert_eq!(spent_of(&one, key).await, 9_400, "{key} credited once");
    }
}

#[tokio::test]
async fn redis_prefixes_keep_stores_apart() {
    let redis = RedisServer::start().expect("start redis-server");
    let one = RedisStore::open(&redis.url(), "one", Duration::from_secs(2)).unwrap();
    let two = RedisStore::open(&redis.url(), "two", Duration::from_secs(2)).unwrap();
    let key = CampaignKey::new("d", "c");
    assert!(one
        .seed_if_absent(&key, 100, false, &DailySettings::default())
        .await
        .unwrap());
    assert!(two.state(&key).await.unwrap().is_none());
    assert!(two.campaigns().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_store_survives_a_flushed_script_cache() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    let key = CampaignKey::new("d", "c");
    store
        .seed_if_absent(&key, 1_000, false, &DailySettings::default())
        .await
        .unwrap();
    assert_eq!(
        grant(&store, "n", item(&key, 0, 0, 0, 100)).await.granted,
        100
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        grant(&store, "n", item(&key, 100, 0, 0, 300)).await.granted,
        300
    );
}

/// A store written before hash tags is moved to the grouped layout by the first node that
/// reads it; its sessions are listed as nodes, so their leases come back by reaping, and its
/// open buckets still settle.
#[tokio::test]
async fn an_old_layout_store_is_migrated_once() {
    let redis = RedisServer::start().expect("start redis-server");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let bucket = format!("budget:recon:b:acme:c1:{T0}");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("budget:acme:c1")
        .arg(&[
            ("budget", "10000"),
            ("spent", "1000"),
            ("held", "3000"),
            ("paused", "0"),
            ("node:old-1:granted", "4000"),
            ("node:old-1:spent", "1000"),
            ("node:old-1:returned", "0"),
        ])
        .ignore()
        .cmd("SADD")
        .arg("budget:campaigns")
        .arg("budget:acme:c1")
        .ignore()
        .cmd("HSET")
        .arg(&bucket)
        .arg(&[
            ("c", "budget:acme:c1"),
            ("charged", "1000"),
            ("billed", "0"),
            ("settled", "0"),
        ])
        .ignore()
        .cmd("ZADD")
        .arg("budget:recon:open:buckets")
        .arg(T0)
        .arg(&bucket)
        .ignore()
        .cmd("SET")
        .arg("budget:recon:conf:bucket_ms")
        .arg(BUCKET)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let key = CampaignKey::new("acme", "c1");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    assert_eq!(store.identity().await.unwrap(), StoreIdentity::default());
    let old: i64 = redis::cmd("EXISTS")
        .arg("budget:campaigns")
        .arg("budget:acme:c1")
        .arg(&bucket)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(old, 0, "no key of the old layout is left");
    assert_eq!(store.campaigns().await.unwrap(), vec![key.clone()]);
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.budget, s.spent, s.held), (10_000, 1_000, 3_000));
    // A second store value (another node) finds nothing to move.
    let other = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    other.identity().await.unwrap();
    assert_eq!(other.sessions().await.unwrap(), vec!["old-1".to_owned()]);
    // The old session never renews: reaping returns its 3_000.
    assert_eq!(
        other.reap("old-1").await.unwrap(),
        budget::Reap::Reaped {
            first: true,
            micros: 3_000
        }
    );
    assert!(other.sessions().await.unwrap().is_empty());
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (1_000, 0));
    // The open bucket settles in its new place with the durable billed count.
    Billing::single(&redis)
        .await
        .bill("budget", &key, T0, 400)
        .await;
    let r = store.reconcile("z", &[], &args(DUE)).await.unwrap();
    assert_eq!((r.settle.settled, r.settle.credited), (1, 600));
    assert_eq!(spent_of(&store, &key).await, 400);
}

/// Presence: a session renews until it is declared dead; then it can never renew, its lease
/// is returned exactly once whoever reaps, and it is unlisted.
async fn presence_contract(store: &dyn Store, other: &dyn Store) {
    let key = CampaignKey::new("p", "c");
    assert!(store
        .seed_if_absent(&key, 10_000, false, &DailySettings::default())
        .await
        .unwrap());
    assert_eq!(
        grant(store, "n-1", item(&key, 0, 0, 0, 4_000))
            .await
            .granted,
        4_000
    );
    grant(store, "n-1", item(&key, 4_000, 1_000, 0, 3_000)).await;
    assert_eq!(
        store.heartbeat("n-1", 60_000).await.unwrap(),
        budget::Presence::Alive
    );
    assert_eq!(store.sessions().await.unwrap(), vec!["n-1".to_owned()]);
    match other.reap("n-1").await.unwrap() {
        budget::Reap::Alive { expires_in_ms } => assert!(expires_in_ms <= 60_000),
        dead => panic!("a present session was reaped: {dead:?}"),
    }
    // Its presence lapses (a short TTL, renewed once more, then silence).
    assert_eq!(
        store.heartbeat("n-1", 1).await.unwrap(),
        budget::Presence::Alive
    );
    let dead = testkit::eventually(Duration::from_secs(10), || async {
        matches!(
            other.reap("n-1").await.unwrap(),
            budget::Reap::Reaped { .. }
        )
    })
    .await;
    assert!(dead);
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (1_000, 0), "its 3_000 came back");
    assert!(s.nodes[0].reclaimed);
    // Again, from either side: nothing more to return.
    assert_eq!(
        store.reap("n-1").await.unwrap(),
        budget::Reap::Reaped {
            first: false,
            micros: 0
        }
    );
    assert_eq!(
        store.heartbeat("n-1", 60_000).await.unwrap(),
        budget::Presence::Reaped,
        "a dead session never renews"
    );
    assert!(store.sessions().await.unwrap().is_empty());
    // It gets no more money, whatever it asks.
    let g = grant(store, "n-1", item(&key, 4_000, 1_000, 0, 4_000)).await;
    assert_eq!((g.granted, g.held), (4_000, 0));
}

#[tokio::test]
async fn redis_presence_keeps_the_contract() {
    let redis = RedisServer::start().expect("start redis-server");
    let open = || RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    presence_contract(&open(), &open()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_presence_keeps_the_contract() {
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let (one, _) = cluster_store(&cluster, "budget").await;
    let (two, _) = cluster_store(&cluster, "budget").await;
    presence_contract(&one, &two).await;
}

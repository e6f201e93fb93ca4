//! The tracker on a real local Redis Cluster (three masters): two nodes claiming the same
//! impressions bill each once, the durable billed counts hold exactly the billed micros, keys
//! spread over many slots with every claim's keys in one, each node writes its own event
//! stream, and a master killed during the claims loses and doubles nothing.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use impressions::{
    keys, read_events, BidRef, EventId, EventType, Outcome, RedisConfig, RedisConn, Target,
    Tracker, TrackerConfig, TrackingKey,
};
use support::{query, TempDir};
use testkit::RedisCluster;

const SECRET: &str = "shared-secret-of-every-node-0123456789";
const PREFIX: &str = "fleet";
const CALL: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    (impressions::system_clock())()
}

fn bid(n: u32, ts: u64) -> BidRef {
    BidRef {
        auction_id: format!("req-{n}"),
        imp_id: "1".into(),
        bid_id: format!("bid-{n}"),
        dsp: "dsp-a".into(),
        seat: "seat".into(),
        campaign: format!("camp{}", n % 3),
        creative_id: format!("cr-{n}"),
        price_micros: 1_000_000 + 7 * u64::from(n),
        currency: "USD".into(),
        auction_ts_ms: ts,
        ..BidRef::default()
    }
}

/// Micros each campaign field should hold for impressions `ns`.
fn expected_micros(ns: impl Iterator<Item = u32>, ts: u64) -> BTreeMap<String, u64> {
    let mut want = BTreeMap::new();
    for n in ns {
        let b = bid(n, ts);
        *want
            .entry(keys::billed_field(&b.dsp, &b.campaign))
            .or_default() += money::CpmMicros::new(b.price_micros).cost_of_one().get();
    }
    want
}

struct Node {
    tracker: Tracker,
    dir: TempDir,
}

impl Node {
    async fn start(tag: &str, seeds: Vec<String>, timeout: Duration) -> Self {
        let dir = TempDir::new(tag);
        let mut redis = RedisConfig::cluster(seeds);
        redis.timeout = timeout;
        redis.stream = true;
        let mut cfg = TrackerConfig {
            public_url: "https://ex.test".into(),
            key: TrackingKey::from_secret(SECRET).unwrap(),
            redis: Some(redis),
            key_prefix: PREFIX.into(),
            spool_dir: dir.path().join("spool"),
            // Replays run when a test asks for them.
            replay_interval: Duration::from_secs(3600),
            ..TrackerConfig::default()
        };
        cfg.events.file = Some(dir.path().join("events.jsonl"));
        cfg.events.stream_key = "events".into();
        cfg.events.fsync_interval = Duration::from_millis(10);
        let tracker = Tracker::start(cfg, None, support::recorder())
            .await
            .unwrap();
        Self { tracker, dir }
    }

    fn billed_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        read_events(&self.dir.path().join("events.jsonl"), |e| {
            if e.kind == EventType::Impression {
                out.push(e.impression_id.unwrap());
            }
        })
        .unwrap();
        out
    }
}

/// Every impression id billed on `nodes`, with how often.
fn billed(nodes: &[&Node]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for node in nodes {
        for id in node.billed_ids() {
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

/// The durable billed counts of the bucket holding `ts`, summed over the 256 groups.
async fn durable_counts(conn: &RedisConn, ts: u64) -> BTreeMap<String, u64> {
    let start = keys::bucket_start(ts, impressions::BilledCounts::default().bucket_ms);
    let mut sums = BTreeMap::new();
    for group in 0..=255u8 {
        let hash: HashMap<String, u64> = conn
            .query(
                redis::cmd("HGETALL").arg(keys::billed_key(PREFIX, group, start)),
                CALL,
            )
            .await
            .unwrap();
        for (field, micros) in hash {
            *sums.entry(field).or_default() += micros;
        }
    }
    sums
}

async fn slot(conn: &RedisConn, key: &str) -> i64 {
    conn.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key), CALL)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_cluster_bill_each_impression_once_and_count_it_durably() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let conn = redislink::open(&Target::Cluster(cluster.seeds()), CALL).unwrap();
    let a = Node::start("cl-a", cluster.seeds(), CALL).await;
    let b = Node::start("cl-b", cluster.seeds(), CALL).await;
    let ts = now_ms();
    const N: u32 = 200;
    let urls: Vec<String> = (0..N)
        .map(|n| a.tracker.impression_url(&bid(n, ts), None))
        .collect();

    // Every impression fired at both nodes at once.
    let mut tasks = Vec::new();
    for url in &urls {
        for tracker in [a.tracker.clone(), b.tracker.clone()] {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                tracker.record_impression(query(&url)).await.unwrap()
            }));
        }
    }
    let mut outcomes = HashMap::<&str, usize>::new();
    for t in tasks {
        let o = t.await.unwrap();
        *outcomes
            .entry(match o {
                Outcome::Billed(_) => "billed",
                Outcome::Duplicate => "duplicate",
                _ => "other",
            })
            .or_default() += 1;
    }
    assert_eq!(
        outcomes,
        HashMap::from([("billed", N as usize), ("duplicate", N as usize)])
    );
    a.tracker.flush().await.unwrap();
    b.tracker.flush().await.unwrap();
    let ids = billed(&[&a, &b]);
    assert_eq!(ids.len(), N as usize);
    assert!(ids.values().all(|&c| c == 1));

    assert_eq!(durable_counts(&conn, ts).await, expected_micros(0..N, ts));

    // Keys spread over many slots; a claim's two keys share one.
    let start = keys::bucket_start(ts, 60_000);
    let mut slots = HashSet::new();
    for n in 0..N {
        let id = EventId::new(&bid(n, ts), 60_000);
        let dedup = keys::dedup_key(PREFIX, impressions::Kind::Impression, &id);
        let counts = keys::billed_key(PREFIX, keys::group_of(&id), start);
        let s = slot(&conn, &dedup).await;
        assert_eq!(s, slot(&conn, &counts).await, "{dedup} and {counts}");
        slots.insert(s);
    }
    assert!(
        slots.len() > 100,
        "{} slots for {N} impressions",
        slots.len()
    );

    // Each node wrote its own stream; the reader sees every billing event once.
    let (sa, sb) = (
        a.tracker.stream_key().unwrap(),
        b.tracker.stream_key().unwrap(),
    );
    assert_ne!(sa, sb);
    let events = impressions::read_streams(&conn, "events", CALL)
        .await
        .unwrap();
    let mut seen = HashMap::<String, usize>::new();
    for e in events.iter().filter(|e| e.kind == EventType::Impression) {
        *seen.entry(e.impression_id.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(seen, ids);
    let in_stream = |key: &str| {
        let conn = conn.clone();
        let key = key.to_owned();
        async move {
            conn.query::<u64>(redis::cmd("XLEN").arg(key), CALL)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        in_stream(sa).await + in_stream(sb).await,
        events.len() as u64
    );
    assert_eq!(events.len(), 2 * N as usize, "billed and duplicate events");
    a.tracker.shutdown().await.unwrap();
    b.tracker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_claims_neither_loses_nor_doubles_a_billing() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    // Writes acknowledged from now on reach the replicas (one still in its first sync would
    // take over without them).
    cluster.wait_replicas_synced().unwrap();
    let conn = redislink::open(&Target::Cluster(cluster.seeds()), CALL).unwrap();
    let timeout = Duration::from_millis(300);
    let a = Node::start("fo-a", cluster.seeds(), timeout).await;
    let b = Node::start("fo-b", cluster.seeds(), timeout).await;
    let ts = now_ms();
    const N: u32 = 300;
    let urls: Vec<String> = (0..N)
        .map(|n| a.tracker.impression_url(&bid(n, ts), None))
        .collect();

    // Claims run on both nodes in turn; halfway through, a master is killed and they go on.
    let (half_tx, half_rx) = tokio::sync::oneshot::channel::<()>();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let firing = {
        let (ta, tb, urls) = (a.tracker.clone(), b.tracker.clone(), urls.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut half = Some((half_tx, killed_rx));
            for (i, url) in urls.iter().enumerate() {
                if i == urls.len() / 2 {
                    if let Some((half_tx, killed_rx)) = half.take() {
                        half_tx.send(()).unwrap();
                        killed_rx.await.unwrap();
                    }
                }
                let node = if i % 2 == 0 { &ta } else { &tb };
                outcomes.push(node.record_impression(query(url)).await.unwrap());
            }
            outcomes
        })
    };
    half_rx.await.unwrap();
    let victim = cluster.master_ports()[0];
    cluster.kill(victim);
    killed_tx.send(()).unwrap();
    let outcomes = firing.await.unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Billed(_) | Outcome::Spooled)));
    let spooled = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Spooled))
        .count();
    assert!(spooled > 0, "the outage reached some claims");

    // The replica takes over; both spools replay through the claim script.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_ok().unwrap();
        cluster
    })
    .await
    .unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(30), || async {
            let _ = a.tracker.replay_now().await;
            let _ = b.tracker.replay_now().await;
            a.tracker.spooled() + b.tracker.spooled() == 0
        })
        .await
    );

    // Every impression fired again, at the other node: none bills a second time.
    for (i, url) in urls.iter().enumerate() {
        let node = if i % 2 == 0 { &b } else { &a };
        let outcome = node.tracker.record_impression(query(url)).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Duplicate | Outcome::Spooled),
            "{i}: {outcome:?}"
        );
    }
    assert!(
        testkit::eventually(Duration::from_secs(30), || async {
            let _ = a.tracker.replay_now().await;
            let _ = b.tracker.replay_now().await;
            a.tracker.spooled() + b.tracker.spooled() == 0
        })
        .await
    );
    a.tracker.flush().await.unwrap();
    b.tracker.flush().await.unwrap();
    let ids = billed(&[&a, &b]);
    assert_eq!(ids.len(), N as usize, "nothing billable is lost");
    assert!(ids.values().all(|&c| c == 1), "nothing is billed twice");
    assert_eq!(durable_counts(&conn, ts).await, expected_micros(0..N, ts));
    a.tracker.shutdown().await.unwrap();
    b.tracker.shutdown().await.unwrap();
    drop(cluster);
}

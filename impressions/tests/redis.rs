//! The tracker against a real `redis-server`: dedup across nodes under concurrency, a Redis
//! killed and restarted while impressions arrive, a hung Redis, Redis down at start, the
//! per-token idempotency of a claim, and the event stream.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use impressions::{
    read_events, BidRef, Billed, BilledHook, Claim, ClaimKey, DedupStore, Event, EventId,
    EventType, Kind, Outcome, RedisConfig, RedisDedup, Tracker, TrackerConfig, TrackingKey,
};
use support::{query, TempDir};
use testkit::free_port;
use testkit::redis::RedisServer;

const SECRET: &str = "shared-secret-of-every-node-0123456789";

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
        campaign: "camp".into(),
        creative_id: format!("cr-{n}"),
        price_micros: 1_000_000 + u64::from(n),
        currency: "USD".into(),
        auction_ts_ms: ts,
        ..BidRef::default()
    }
}

fn config(dir: &Path, redis_url: &str) -> TrackerConfig {
    let mut c = TrackerConfig {
        public_url: "https://ex.test".into(),
        key: TrackingKey::from_secret(SECRET).unwrap(),
        redis: Some(RedisConfig::new(redis_url)),
        spool_dir: dir.join("spool"),
        // Replays run when a test asks for them, so their effects are deterministic.
        replay_interval: Duration::from_secs(3600),
        ..TrackerConfig::default()
    };
    c.events.file = Some(dir.join("events.jsonl"));
    c.events.fsync_interval = Duration::from_millis(10);
    c
}

/// A tracker standing for one exchange node, with its own files.
struct Node {
    tracker: Tracker,
    dir: TempDir,
    billed: Arc<Mutex<Vec<Billed>>>,
}

impl Node {
    async fn start(tag: &str, redis_url: &str, tweak: impl FnOnce(&mut TrackerConfig)) -> Self {
        let dir = TempDir::new(tag);
        let billed = Arc::new(Mutex::new(Vec::new()));
        let sink = billed.clone();
        let hook: BilledHook = Arc::new(move |b: &Billed| sink.lock().unwrap().push(b.clone()));
        let mut cfg = config(dir.path(), redis_url);
        tweak(&mut cfg);
        let tracker = Tracker::start(cfg, Some(hook), support::recorder())
            .await
            .unwrap();
        Self {
            tracker,
            dir,
            billed,
        }
    }

    fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        read_events(&self.dir.path().join("events.jsonl"), |e| out.push(e)).unwrap();
        out
    }
}

/// Impression ids billed across `nodes`, with how often each was billed.
fn billed_ids(nodes: &[&Node]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for node in nodes {
        for e in node.events() {
            if e.kind == EventType::Impression {
                *ids.entry(e.impression_id.unwrap()).or_default() += 1;
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_sightings_on_two_nodes_bill_once() {
    let redis = RedisServer::start().expect("start redis-server");
    let a = Node::start("conc-a", &redis.url(), |_| {}).await;
    let b = Node::start("conc-b", &redis.url(), |_| {}).await;
    let url = a
        .tracker
        .impression_url(&bid(1, now_ms()), Some("https://dsp.test/burl"));

    let mut tasks = Vec::new();
    for i in 0..100 {
        let tracker = if i % 2 == 0 {
            a.tracker.clone()
        } else {
            b.tracker.clone()
        };
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tracker.record_impression(query(&url)).await.unwrap()
        }));
    }
    let mut billed = 0;
    let mut duplicates = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Billed(_) => billed += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::Spooled => panic!("redis is up; nothing should be spooled"),
            Outcome::Test(_) => panic!("not a test auction's URL"),
        }
    }
    assert_eq!((billed, duplicates), (1, 99));
    a.tracker.shutdown().await.unwrap();
    b.tracker.shutdown().await.unwrap();

    assert_eq!(
        a.billed.lock().unwrap().len() + b.billed.lock().unwrap().len(),
        1,
        "burl fired once"
    );
    let ids = billed_ids(&[&a, &b]);
    assert_eq!(ids.len(), 1);
    assert!(ids.values().all(|&n| n == 1));
    let dups = a
        .events()
        .iter()
        .chain(b.events().iter())
        .filter(|e| e.kind == EventType::DuplicateImpression)
        .count();
    assert_eq!(dups, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_every_impression_billed_exactly_once() {
    let mut redis = RedisServer::start_persistent().expect("start redis-server");
    let a = Node::start("outage-a", &redis.url(), |_| {}).await;
    let b = Node::start("outage-b", &redis.url(), |_| {}).await;
    let ts = now_ms();
    let urls: Vec<String> = (0..20)
        .map(|n| {
            a.tracker
                .impression_url(&bid(n, ts), Some(&format!("https://dsp.test/b/{n}")))
        })
        .collect();

    // 0..10 are billed while Redis is up.
    for url in &urls[..10] {
        assert!(matches!(
            a.tracker.record_impression(query(url)).await.unwrap(),
            Outcome::Billed(_)
        ));
    }

    redis.kill();
    // While it is down: new impressions 10..20 on node A, their repeats on node B, and repeats
    // of already billed ones on both. Nothing can be checked, so everything is spooled, and
    // no call waits on the dead Redis past its own timeout.
    for (i, url) in urls.iter().enumerate() {
        let nodes = if i < 10 {
            vec![&a, &b]
        } else {
            vec![&a, &b, &b]
        };
        for node in nodes {
            let outcome = tokio::time::timeout(
                Duration::from_secs(5),
                node.tracker.record_impression(query(url)),
            )
            .await
            .expect("a Redis call outlived its timeout")
            .unwrap();
            assert_eq!(outcome, Outcome::Spooled);
        }
    }
    assert_eq!(a.tracker.spooled(), 20);
    assert_eq!(b.tracker.spooled(), 30);
    // A replay while Redis is still down keeps everything.
    assert_eq!(a.tracker.replay_now().await.unwrap().remaining, 20);

    redis.restart().expect("restart redis-server");
    // The nodes' connections come back on their own schedule (a reconnect backs off), so the
    // replay is repeated until the spools are empty, as the replay loop would; the totals over
    // the rounds are what must be exact.
    let totals = std::sync::Mutex::new((0, 0));
    let drained = testkit::eventually(Duration::from_secs(20), || async {
        let (ra, rb) = tokio::join!(a.tracker.replay_now(), b.tracker.replay_now());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let mut totals = totals.lock().unwrap();
        totals.0 += ra.billed + rb.billed;
        totals.1 += ra.duplicates + rb.duplicates;
        ra.remaining + rb.remaining == 0
    })
    .await;
    assert!(drained, "the spools never drained");
    let (billed, duplicates) = *totals.lock().unwrap();
    assert_eq!(billed, 10);
    assert_eq!(duplicates, 40);
    // Online traffic goes to Redis again.
    assert_eq!(
        b.tracker.record_impression(query(&urls[0])).await.unwrap(),
        Outcome::Duplicate
    );
    a.tracker.shutdown().await.unwrap();
    b.tracker.shutdown().await.unwrap();

    let ids = billed_ids(&[&a, &b]);
    assert_eq!(ids.len(), 20, "every impression billed");
    assert!(ids.values().all(|&n| n == 1), "none billed twice: {ids:?}");
    let mut burls: Vec<String> = a
        .billed
        .lock()
        .unwrap()
        .iter()
        .chain(b.billed.lock().unwrap().iter())
        .filter_map(|b| b.burl.clone())
        .collect();
    burls.sort();
    burls.dedup();
    assert_eq!(burls.len(), 20);
    assert_eq!(
        a.billed.lock().unwrap().len() + b.billed.lock().unwrap().len(),
        20,
        "each burl fired once"
    );
    let replayed = a
        .events()
        .iter()
        .chain(b.events().iter())
        .filter(|e| e.kind == EventType::Impression && e.replayed)
        .count();
    assert_eq!(replayed, 10);
}

#[tokio::test]
async fn hung_redis_times_out_and_spools() {
    let redis = RedisServer::start().expect("start redis-server");
    let node = Node::start("hung", &redis.url(), |c| {
        if let Some(r) = c.redis.as_mut() {
            r.timeout = Duration::from_millis(100);
        }
    })
    .await;
    let ts = now_ms();
    let warm = node.tracker.impression_url(&bid(0, ts), None);
    assert!(matches!(
        node.tracker.record_impression(query(&warm)).await.unwrap(),
        Outcome::Billed(_)
    ));

    redis.freeze().expect("freeze redis-server");
    let url = node.tracker.impression_url(&bid(1, ts), None);
    for _ in 0..3 {
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            node.tracker.record_impression(query(&url)),
        )
        .await
        .expect("a Redis call outlived its timeout")
        .unwrap();
        assert_eq!(outcome, Outcome::Spooled);
    }
    redis.thaw().expect("thaw redis-server");
    let stats = node.tracker.replay_now().await.unwrap();
    assert_eq!((stats.billed, stats.duplicates, stats.remaining), (1, 2, 0));
    node.tracker.shutdown().await.unwrap();
    assert_eq!(billed_ids(&[&node]).len(), 2);
}

#[tokio::test]
async fn redis_down_at_start_spools_until_it_answers() {
    let port = free_port().expect("free port");
    let url = format!("redis://127.0.0.1:{port}/");
    let node = Node::start("late-start", &url, |_| {}).await;
    let imp = node.tracker.impression_url(&bid(1, now_ms()), None);
    assert_eq!(
        node.tracker.record_impression(query(&imp)).await.unwrap(),
        Outcome::Spooled
    );
    assert_eq!(node.tracker.replay_now().await.unwrap().remaining, 1);

    let _redis = RedisServer::start_on(port).expect("start redis-server");
    let stats = node.tracker.replay_now().await.unwrap();
    assert_eq!((stats.billed, stats.remaining), (1, 0));
    assert_eq!(
        node.tracker.record_impression(query(&imp)).await.unwrap(),
        Outcome::Duplicate
    );
    node.tracker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_claim_is_idempotent_for_its_own_token() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisDedup::connect(
        &impressions::Target::Single(redis.url()),
        Duration::from_millis(500),
        60,
        "p",
        impressions::BilledCounts::default(),
    )
    .unwrap();
    let id = EventId::new(&bid(1, 1_000), 60_000);
    let key = |token| ClaimKey {
        id,
        kind: Kind::Impression,
        token,
        bill: None,
    };
    assert_eq!(store.claim(key(7), 0).await, Claim::First);
    // The same sighting retried (its first reply lost) is still the first; another is not.
    assert_eq!(store.claim(key(7), 0).await, Claim::First);
    assert_eq!(store.claim(key(8), 0).await, Claim::Duplicate);
    let click = ClaimKey {
        kind: Kind::Click,
        ..key(9)
    };
    assert_eq!(
        store
            .claim_many(&[key(7), key(8), click.clone(), click], 0)
            .await,
        vec![Claim::First, Claim::Duplicate, Claim::First, Claim::First]
    );

    // The key is `P:imp:{iNN}:ID` and expires.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let hex = id.to_string();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("p:imp:{{i{}}}:{hex}", &hex[..2]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
}

/// A billable claim counts its cost in the same script: once for a new claim, not again for a
/// retry of its own token nor for a duplicate.
#[tokio::test]
async fn a_billable_claim_counts_its_cost_once() {
    let redis = RedisServer::start().expect("start redis-server");
    let billed = impressions::BilledCounts {
        bucket_ms: 60_000,
        retain_ms: 10_000,
    };
    let store = RedisDedup::connect(
        &impressions::Target::Single(redis.url()),
        Duration::from_millis(500),
        60,
        "p",
        billed,
    )
    .unwrap();
    let b = bid(1, 1_234_567);
    let key = |token| ClaimKey {
        id: EventId::new(&b, 60_000),
        kind: Kind::Impression,
        token,
        bill: impressions::Bill::of(&b),
    };
    assert_eq!(store.claim(key(7), 0).await, Claim::First);
    assert_eq!(store.claim(key(7), 0).await, Claim::First);
    assert_eq!(store.claim(key(8), 0).await, Claim::Duplicate);
    assert_eq!(
        store.claim_many(&[key(7), key(9)], 0).await,
        [Claim::First, Claim::Duplicate]
    );

    let id = EventId::new(&b, 60_000);
    let counts = impressions::billed_key("p", impressions::keys::group_of(&id), 1_200_000);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let hash: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(&counts)
        .query_async(&mut conn)
        .await
        .unwrap();
    // 1 000 001 CPM micros: one impression costs 1 001 micros (rounded up).
    assert_eq!(hash, HashMap::from([("5:dsp-acamp".to_owned(), 1_001)]));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&counts)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=10).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn events_are_mirrored_to_a_redis_stream() {
    let redis = RedisServer::start().expect("start redis-server");
    let node = Node::start("stream", &redis.url(), |c| {
        if let Some(r) = c.redis.as_mut() {
            r.stream = true;
        }
        c.events.stream_key = "test:events".into();
        c.events.stream_maxlen = 1000;
    })
    .await;
    let ts = now_ms();
    for n in 0..5 {
        let url = node.tracker.impression_url(&bid(n, ts), None);
        node.tracker.record_impression(query(&url)).await.unwrap();
    }
    node.tracker
        .record_event(&Event::loss(&bid(9, ts), 102, ts))
        .await
        .unwrap();
    node.tracker.flush().await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // The node's own stream, listed in the registry set.
    let stream = node.tracker.stream_key().unwrap().to_owned();
    assert!(stream.starts_with("test:events:"), "{stream}");
    let listed: Vec<String> = redis::cmd("SMEMBERS")
        .arg("test:events:streams")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&stream));
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 6);
    let (_, fields) = &entries[0];
    assert_eq!(fields[0], ("type".to_owned(), "impression".to_owned()));
    let event: Event = serde_json::from_str(&fields[1].1).unwrap();
    assert_eq!(
        (event.kind, event.auction_id.as_str(), event.cost_micros),
        (EventType::Impression, "req-0", Some(1_000))
    );
    assert_eq!(entries[5].1[0].1, "loss");
    node.tracker.shutdown().await.unwrap();
    assert_eq!(node.events().len(), 6, "the file has them too");
}

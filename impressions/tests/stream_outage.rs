//! The event stream through a Redis outage, against a real `redis-server`: events written
//! while Redis is down wait in the backlog (the file never waits) and reach the stream once,
//! in order, when it is back; a full backlog gives up its oldest events and counts them.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use impressions::{BidRef, Event, RedisConfig, Tracker, TrackerConfig, TrackingKey};
use metrics_exporter_prometheus::PrometheusHandle;
use support::TempDir;
use testkit::redis::RedisServer;

/// Longest wait for the backlog to reach a Redis that is back.
const PATIENCE: Duration = Duration::from_secs(20);

fn loss(n: u32) -> Event {
    let bid = BidRef {
        auction_id: format!("req-{n}"),
        imp_id: "1".into(),
        bid_id: format!("bid-{n}"),
        dsp: "dsp-a".into(),
        ..BidRef::default()
    };
    Event::loss(&bid, 102, 1_000)
}

async fn start(dir: &TempDir, redis: &RedisServer, backlog: usize) -> (Tracker, PrometheusHandle) {
    let mut redis_config = RedisConfig::new(redis.url());
    redis_config.stream = true;
    let mut config = TrackerConfig {
        public_url: "https://ex.test".into(),
        key: TrackingKey::from_secret("shared-secret-of-every-node-0123456789").unwrap(),
        redis: Some(redis_config),
        spool_dir: dir.path().join("spool"),
        replay_interval: Duration::from_secs(3600),
        ..TrackerConfig::default()
    };
    config.events.file = Some(dir.path().join("events.jsonl"));
    config.events.stream_key = "ev".into();
    config.events.stream_backlog = backlog;
    let (recorder, handle) = support::prometheus();
    (
        Tracker::start(config, None, recorder).await.unwrap(),
        handle,
    )
}

/// The auction ids in the stream, in stream order.
async fn in_stream(url: &str, key: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    entries
        .iter()
        .map(|(_, fields)| {
            serde_json::from_str::<Event>(&fields[1].1)
                .unwrap()
                .auction_id
        })
        .collect()
}

/// The stream's auction ids once it holds at least `n` entries (or after PATIENCE): the stream
/// is sent by a task of its own, so a flush guarantees the file, not the stream.
async fn stream_of(url: &str, key: &str, n: usize) -> Vec<String> {
    testkit::eventually(PATIENCE, || async { in_stream(url, key).await.len() >= n }).await;
    in_stream(url, key).await
}

fn reqs(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("req-{n}")).collect()
}

fn dropped(metrics: &PrometheusHandle) -> f64 {
    support::sample(metrics, "impressions_stream_dropped_total").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_during_an_outage_reach_the_stream_once_in_order() {
    let dir = TempDir::new("stream-outage");
    // Persistent: the outage loses no entry Redis acknowledged.
    let mut redis = RedisServer::start_persistent().unwrap();
    let url = redis.url();
    let (tracker, metrics) = start(&dir, &redis, 1000).await;
    let key = tracker.stream_key().unwrap().to_owned();
    for n in 0..3 {
        tracker.record_event(&loss(n)).await.unwrap();
    }
    tracker.flush().await.unwrap();
    assert_eq!(stream_of(&url, &key, 3).await, reqs(0..3));

    redis.kill();
    for n in 3..8 {
        // Each returns once its line is in the file: the stream does not hold it up.
        tracker.record_event(&loss(n)).await.unwrap();
        tracker.flush().await.unwrap();
    }
    redis.restart().unwrap();
    let all = testkit::eventually(PATIENCE, || async {
        in_stream(&url, &key).await.len() >= 8
    })
    .await;
    assert!(all, "stream: {:?}", in_stream(&url, &key).await);
    for n in 8..10 {
        tracker.record_event(&loss(n)).await.unwrap();
    }
    tracker.flush().await.unwrap();
    assert_eq!(stream_of(&url, &key, 10).await, reqs(0..10));
    assert_eq!(dropped(&metrics), 0.0);
    tracker.shutdown().await.unwrap();
    let mut in_file = Vec::new();
    impressions::read_events(&dir.path().join("events.jsonl"), |e| {
        in_file.push(e.auction_id)
    })
    .unwrap();
    assert_eq!(in_file, reqs(0..10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_drops_its_oldest_events_and_counts_them() {
    let dir = TempDir::new("stream-backlog");
    let mut redis = RedisServer::start_persistent().unwrap();
    let url = redis.url();
    let (tracker, metrics) = start(&dir, &redis, 4).await;
    let key = tracker.stream_key().unwrap().to_owned();
    tracker.record_event(&loss(0)).await.unwrap();
    tracker.flush().await.unwrap();
    assert_eq!(stream_of(&url, &key, 1).await, reqs(0..1));

    redis.kill();
    for n in 1..8 {
        tracker.record_event(&loss(n)).await.unwrap();
        tracker.flush().await.unwrap();
    }
    // The mirror may hold the oldest batch in flight a moment before it is back in line.
    let counted = testkit::eventually(PATIENCE, || async { dropped(&metrics) == 3.0 }).await;
    assert!(counted, "dropped {}", dropped(&metrics));
    redis.restart().unwrap();
    let all = testkit::eventually(PATIENCE, || async {
        in_stream(&url, &key).await.len() >= 5
    })
    .await;
    assert!(all, "stream: {:?}", in_stream(&url, &key).await);
    tracker.shutdown().await.unwrap();
    let mut expected = reqs(0..1);
    expected.extend(reqs(4..8));
    assert_eq!(in_stream(&url, &key).await, expected);
    assert_eq!(dropped(&metrics), 3.0);
}

//! Impression tracking: the impression id, signing and verifying tracking URLs, and dedup
//! throughput against a real local Redis (one `SET NX` per event, many in flight at once on
//! one multiplexed connection, plus writing the billing event to the log).
//!
//! Run: `cargo bench -p benches --bench tracking` (needs `redis-server` on PATH)
//!
//! Latest figures (see BENCHMARKS.md for the machine and date):
//!   tracking/impression_id                          150 ns
//!   tracking/sign_impression_url                    1.34 µs
//!   tracking/verify_impression_url                  2.16 µs
//!   dedup_redis/record_impression_1_in_flight      57 µs per event (~17 600/s)
//!   dedup_redis/record_impression_64_in_flight     18 µs per event (~55 800/s)
//!   dedup_redis/record_impression_256_in_flight    17 µs per event (~58 700/s)

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::stream::{self, StreamExt};
use impressions::sign::{impression_url, verify};
use impressions::{BidRef, EventId, Kind, Tracker, TrackerConfig, TrackingKey, Validity};

const SECRET: &str = "benchmark-secret-0123456789abcdef";

fn bid(n: u64, now_ms: u64) -> BidRef {
    BidRef {
        auction_id: format!("80ce30c53c16e6ede735f123ef6e32361bfc7b22-{n}"),
        imp_id: "1".into(),
        bid_id: format!("bid-{n}"),
        dsp: "alpha".into(),
        seat: "seat-1".into(),
        campaign: "cmp-1".into(),
        creative_id: "cr-1".into(),
        price_micros: 1_234_567,
        currency: "USD".into(),
        auction_ts_ms: now_ms,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn signing(c: &mut Criterion) {
    let key = TrackingKey::from_secret(SECRET).unwrap();
    let now = now_ms();
    let b = bid(1, now);
    let burl = "http://dsp.example/bill?a=80ce30c5&p=1.234567";
    let url = impression_url("https://rtb.example.com/event/imp", &b, Some(burl), &key);
    let query = url
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();

    let mut group = c.benchmark_group("tracking");
    group.bench_function("impression_id", |bench| {
        bench.iter(|| black_box(EventId::new(black_box(&b), 60_000)))
    });
    group.bench_function("sign_impression_url", |bench| {
        bench.iter(|| {
            black_box(impression_url(
                "https://rtb.example.com/event/imp",
                black_box(&b),
                Some(burl),
                &key,
            ))
        })
    });
    group.bench_function("verify_impression_url", |bench| {
        bench.iter(|| {
            black_box(
                verify(
                    black_box(&query),
                    &key,
                    Kind::Impression,
                    now,
                    &Validity::default(),
                )
                .is_ok(),
            )
        })
    });
    group.finish();
}

fn dedup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = loadtest::redis::RedisServer::start().expect("redis-server on PATH");
    let dir = std::env::temp_dir().join(format!("bench-tracking-{}", std::process::id()));
    let config = TrackerConfig {
        public_url: "http://127.0.0.1:8080".into(),
        key: TrackingKey::from_secret(SECRET).unwrap(),
        redis: Some(impressions::RedisConfig::new(redis.url())),
        events: impressions::EventLogConfig {
            file: Some(dir.join("events.jsonl")),
            ..Default::default()
        },
        spool_dir: dir.join("spool"),
        ..TrackerConfig::default()
    };
    let tracker = rt
        .block_on(Tracker::start(
            config,
            None,
            Arc::new(metrics::NoopRecorder),
        ))
        .unwrap();
    let key = TrackingKey::from_secret(SECRET).unwrap();
    let mut next = 0u64;

    let mut group = c.benchmark_group("dedup_redis");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for in_flight in [1usize, 64, 256] {
        // Time per billed impression (first sighting) with `in_flight` of them at once:
        // 1 / this is the events per second one node's tracker sustains.
        group.bench_function(
            format!("record_impression_{in_flight}_in_flight"),
            |bench| {
                bench.iter_custom(|iters| {
                    let now = now_ms();
                    let queries: Vec<String> = (0..iters)
                        .map(|_| {
                            next += 1;
                            let url =
                                impression_url("http://x/event/imp", &bid(next, now), None, &key);
                            url.split_once('?')
                                .map(|(_, q)| q.to_owned())
                                .unwrap_or_default()
                        })
                        .collect();
                    rt.block_on(async {
                        let started = Instant::now();
                        let billed = stream::iter(queries.iter())
                            .map(|q| tracker.record_impression(q))
                            .buffer_unordered(in_flight)
                            .filter(|r| {
                                std::future::ready(matches!(r, Ok(impressions::Outcome::Billed(_))))
                            })
                            .count()
                            .await;
                        let took = started.elapsed();
                        assert_eq!(
                            billed as u64, iters,
                            "every distinct impression is billed once"
                        );
                        took
                    })
                })
            },
        );
    }
    group.finish();
    rt.block_on(async {
        let _ = tracker.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, signing, dedup);
criterion_main!(benches);

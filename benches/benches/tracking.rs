//! Impression tracking: the impression id, signing and verifying tracking URLs, and dedup
//! throughput against a real local Redis (one claim per event: the `SET NX` and the durable
//! billed count in one script, many in flight at once on one multiplexed connection, plus
//! writing the billing event to the log and waiting until it is written).
//!
//! Run: `cargo bench -p benches --bench tracking` (needs `redis-server` on PATH)
//!
//! Latest figures (see BENCHMARKS.md for the machine and date; before = the two-signature
//! signer of the previous commit, run in the same sitting):
//!   tracking/impression_id                              107 ns
//!   tracking/sign_impression_url                        0.61 µs (before 0.84 µs)
//!   tracking/sign_impression_and_click_urls_one_signer  0.97 µs (before, two signatures: 1.83 µs)
//!   tracking/sign_impression_and_click_urls             1.26 µs
//!   tracking/decorate_banner                            2.43 µs (before 3.27 µs)
//!   tracking/verify_impression_url                      1.24 µs (before 1.59 µs)
//!   markup/wrap_clicks_banner_handwritten               0.72 µs (lol_html 2.62 µs)
//!   markup/wrap_clicks_rich_banner_handwritten          3.62 µs (lol_html 7.23 µs)
//!   dedup_redis/record_impression_1_in_flight      190–198 µs per event (before 121–131)
//!   dedup_redis/record_impression_64_in_flight     19.1–19.6 µs per event (before 10.2–13.3)
//!   dedup_redis/record_impression_256_in_flight    14.3–15.6 µs per event (before 9.7–12.4)
//!   (dedup_redis: machine B, 2026-12-07, two alternating runs each of this tree and of
//!   6b1fbdc, before issue 12 and 13's claim script, sale fields and written-before-answer)

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::stream::{self, StreamExt};
use impressions::sign::{click_url, impression_url, verify};
use impressions::{AdFormat, BidRef, EventId, Kind, Tracker, TrackerConfig, TrackingKey, Validity};

const SECRET: &str = "benchmark-secret-0123456789abcdef";

/// A typical HTML banner: one link around one image.
const BANNER: &str = r#"<html><body><a href="https://shop.example/landing?id=7&amp;src=ad" target="_blank"><img src="https://cdn.example/b/300x250.png" width="300" height="250" alt="Ad"></a></body></html>"#;

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
        publisher: "pub-8812".into(),
        domain: "news.example.com".into(),
        bundle: String::new(),
        country: "USA".into(),
        media_type: Some(impressions::AdFormat::Banner),
        net_price_micros: Some(1_049_382),
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

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("bench-signing-{}", std::process::id()));
    let config = TrackerConfig {
        public_url: "https://rtb.example.com".into(),
        key: TrackingKey::from_secret(SECRET).unwrap(),
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
    // What one winning banner costs: its impression URL and the click URL of its one link,
    // from one pass over the bid (as `Tracker::decorate` does it)...
    group.bench_function("sign_impression_and_click_urls_one_signer", |bench| {
        bench.iter(|| {
            let signer = key.bid_signer(black_box(&b));
            let imp = signer.impression_url("https://rtb.example.com/event/imp", Some(burl));
            let click = signer.click_url(
                "https://rtb.example.com/event/click",
                "https://shop.example/landing?id=7",
            );
            black_box((imp, click))
        })
    });
    // ...and signed separately.
    group.bench_function("sign_impression_and_click_urls", |bench| {
        bench.iter(|| {
            let imp = impression_url(
                "https://rtb.example.com/event/imp",
                black_box(&b),
                Some(burl),
                &key,
            );
            let click = click_url(
                "https://rtb.example.com/event/click",
                black_box(&b),
                "https://shop.example/landing?id=7",
                &key,
            );
            black_box((imp, click))
        })
    });
    group.bench_function("decorate_banner", |bench| {
        bench.iter(|| {
            black_box(tracker.decorate(black_box(&b), Some(burl), BANNER, AdFormat::Banner))
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
    rt.block_on(async {
        let _ = tracker.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A larger banner: a script, styles and three links, about 2 KB.
fn rich_banner() -> String {
    let mut adm = String::from(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"><style>.ad{font:12px sans-serif;border:1px solid #ccc}.cta{background:#06c;color:#fff;padding:4px 8px}</style><script>window.adLoaded=function(){var e=document.getElementById('ad');if(e&&e.dataset){e.dataset.shown='1';}};</script></head><body onload="adLoaded()"><div id="ad" class="ad" data-campaign="cmp-1" data-creative="cr-1">"#,
    );
    for i in 0..3 {
        adm.push_str(&format!(
            r#"<div class="slot"><a class="cta" href="https://shop.example/p/{i}?utm_source=ad&amp;utm_medium=banner&amp;id={i}" target="_blank" rel="noopener" ><img src="https://cdn.example/creative/{i}/300x250.jpg" width="300" height="250" alt="Product {i}" loading="lazy"></a><p>Offer {i}: free delivery on orders over 20 EUR, see terms and conditions for details.</p></div>"#
        ));
    }
    adm.push_str("</div></body></html>");
    adm
}

/// The same job as `impressions::markup::wrap_clicks` for HTML, done by `lol_html`: every
/// `<a href>` whose (entity-decoded) value is an http(s) URL goes through `wrap`.
fn lol_wrap_clicks(adm: &str, mut wrap: impl FnMut(&str) -> Option<String>) -> Option<String> {
    use lol_html::{element, rewrite_str, RewriteStrSettings};
    let mut changed = false;
    let out = rewrite_str(
        adm,
        RewriteStrSettings {
            element_content_handlers: vec![element!("a[href]", |el| {
                // lol_html hands attribute values over with their entities, and writes them
                // back escaping only `"`.
                let Some(raw) = el.get_attribute("href") else {
                    return Ok(());
                };
                let landing = raw
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&");
                if !impressions::sign::is_valid_landing(&landing) {
                    return Ok(());
                }
                if let Some(new) = wrap(&landing) {
                    el.set_attribute("href", &new.replace('&', "&amp;"))?;
                    changed = true;
                }
                Ok(())
            })],
            ..RewriteStrSettings::new()
        },
    )
    .ok()?;
    changed.then_some(out)
}

/// Links found, in order, by a scanner.
fn landings(
    scan: impl FnOnce(&str, &mut dyn FnMut(&str) -> Option<String>) -> Option<String>,
    adm: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    scan(adm, &mut |l: &str| {
        seen.push(l.to_owned());
        Some("https://x.example/c?k=click".to_owned())
    });
    seen
}

fn markup(c: &mut Criterion) {
    let rich = rich_banner();
    let wrap = |l: &str| Some(format!("https://rtb.example.com/event/click?l={}", l.len()));
    // Both are correct on these inputs: the same links, in the same order.
    for adm in [
        BANNER,
        rich.as_str(),
        r#"<a href="https://a.example/" >x</a>"#,
    ] {
        let ours = landings(
            |a, w| impressions::markup::wrap_clicks(a, AdFormat::Banner, w),
            adm,
        );
        let lol = landings(|a, w| lol_wrap_clicks(a, w), adm);
        assert_eq!(ours, lol, "{adm}");
        assert!(!ours.is_empty());
    }
    let mut group = c.benchmark_group("markup");
    for (name, adm) in [("banner", BANNER), ("rich_banner", rich.as_str())] {
        group.bench_function(format!("wrap_clicks_{name}_handwritten"), |bench| {
            bench.iter(|| {
                black_box(impressions::markup::wrap_clicks(
                    black_box(adm),
                    AdFormat::Banner,
                    wrap,
                ))
            })
        });
        group.bench_function(format!("wrap_clicks_{name}_lol_html"), |bench| {
            bench.iter(|| black_box(lol_wrap_clicks(black_box(adm), wrap)))
        });
    }
    group.finish();
}

fn dedup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = testkit::redis::RedisServer::start().expect("redis-server on PATH");
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

criterion_group!(benches, signing, markup, dedup);
criterion_main!(benches);

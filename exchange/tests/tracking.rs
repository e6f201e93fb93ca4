//! Impressions and clicks through the real server: signed URLs, dedup across nodes on a real
//! Redis, the spool across a Redis outage, and the event log.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{banner_request, config_for, TestExchange};
use exchange::Config;
use futures::future::join_all;
use http::StatusCode;
use mockdsp::{MockDsp, MockDspHandle, Price};
use testkit::eventually;
use testkit::redis::RedisServer;

const SECRET: &str = "tracking-secret-for-tests-0123456789";

fn node(dsp: &MockDspHandle, redis: Option<&RedisServer>) -> Config {
    let mut config = config_for(&[dsp]);
    config.redis.url = redis.map(RedisServer::url);
    config.tracking.secret = Some(SECRET.to_owned());
    config.tracking.replay_interval_ms = 100;
    config
}

async fn bidder(name: &str) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(2.0))
        .notices(true)
        .start()
        .await
        .unwrap()
}

/// Runs an auction and returns the winning bid's `burl`: the exchange's impression URL.
async fn impression_url(ex: &TestExchange, id: &str) -> String {
    let body = ex.auction(banner_request(id, 1.0)).await.json();
    let burl = body["seatbid"][0]["bid"][0]["burl"]
        .as_str()
        .expect("a winning bid")
        .to_owned();
    assert!(
        burl.starts_with(&format!("http://{}/event/imp?", ex.addr)),
        "{burl}"
    );
    burl
}

/// The same URL, sent to another node.
fn on(ex: &TestExchange, url: &str) -> String {
    let path = &url[url.find("/event/").unwrap()..];
    format!("http://{}{path}", ex.addr)
}

async fn get(ex: &TestExchange, url: &str) -> common::Answer {
    ex.get(&url[url.find("/event/").unwrap()..]).await
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_impression_seen_100_times_on_two_nodes_is_billed_once() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("dedup-dsp").await;
    let mut with_stream = node(&dsp, Some(&redis));
    with_stream.events.redis_stream = Some("exchange-events".into());
    let a = TestExchange::start(with_stream.clone()).await;
    let b = TestExchange::start(with_stream).await;

    let url = impression_url(&a, "dedup-1").await;
    let answers = join_all((0..100).map(|i| {
        let (ex, url) = if i % 2 == 0 {
            (&a, url.clone())
        } else {
            (&b, on(&b, &url))
        };
        async move { get(ex, &url).await.status }
    }))
    .await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::NO_CONTENT),
        "{answers:?}"
    );

    // Every claim was decided before its answer; stopping both nodes drains the notices
    // they queued. So exactly one server-side burl call reached the DSP, with the clearing
    // price, and none is still on its way.
    let mut events = a.stop_with_events().await;
    events.extend(b.stop_with_events().await);
    assert_eq!(dsp.stats().burl_hits, 1);
    let burl = dsp
        .notices()
        .into_iter()
        .find(|n| n.kind == mockdsp::NoticeKind::Burl)
        .unwrap();
    assert_eq!(burl.param("price"), Some("1.01"));
    assert_eq!(burl.param("auction"), Some("dedup-1"));

    assert_eq!(count(&events, "impression"), 1, "exactly one billing event");
    assert_eq!(
        count(&events, "duplicate_impression"),
        99,
        "the repeats are counted"
    );
    let billed = events.iter().find(|e| e["type"] == "impression").unwrap();
    for field in [
        "ts",
        "auction_id",
        "imp_id",
        "bid_id",
        "dsp",
        "campaign",
        "price_micros",
        "currency",
        "impression_id",
    ] {
        assert!(
            !billed[field].is_null(),
            "the billing event lacks {field}: {billed}"
        );
    }
    assert_eq!(billed["auction_id"], "dedup-1");
    assert_eq!(billed["price_micros"], 1_010_000);
    assert_eq!(billed["dsp"], "dedup-dsp");

    // The Redis Streams (one per node, listed in `exchange-events:streams`) mirror the files:
    // one billed impression there too.
    let conn = redislink::open(
        &redislink::Target::Single(redis.url()),
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    let types: Vec<String> =
        impressions::read_streams(&conn, "exchange-events", std::time::Duration::from_secs(2))
            .await
            .unwrap()
            .iter()
            .map(|e| e.kind.as_str().to_owned())
            .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "impression").count(),
        1,
        "{types:?}"
    );
}

#[tokio::test]
async fn forged_tampered_and_expired_urls_get_403_and_bill_nothing() {
    let dsp = bidder("forge-dsp").await;
    let ex = TestExchange::start(node(&dsp, None)).await;
    let url = impression_url(&ex, "forge-1").await;

    let replace = |key: &str, value: &str| -> String {
        let (base, query) = url.split_once('?').unwrap();
        let query: Vec<String> = query
            .split('&')
            .map(|kv| {
                if kv.starts_with(&format!("{key}=")) {
                    format!("{key}={value}")
                } else {
                    kv.to_owned()
                }
            })
            .collect();
        format!("{base}?{}", query.join("&"))
    };
    let truncated = &url[..url.len() - 5];
    let unsigned: String = {
        let (base, query) = url.split_once('?').unwrap();
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.starts_with("sig="))
            .collect();
        format!("{base}?{}", kept.join("&"))
    };
    // A URL signed with the right key but for an auction two hours ago.
    let key = impressions::TrackingKey::from_secret(SECRET).unwrap();
    let old = impressions::BidRef {
        auction_id: "forge-old".into(),
        imp_id: "1".into(),
        bid_id: "b".into(),
        dsp: "forge-dsp".into(),
        seat: "forge-dsp".into(),
        campaign: "c".into(),
        creative_id: "cr".into(),
        price_micros: 1_000_000,
        currency: "USD".into(),
        auction_ts_ms: common_now_ms() - 2 * 3_600_000,
        ..Default::default()
    };
    let expired = impressions::sign::impression_url(
        &format!("http://{}/event/imp", ex.addr),
        &old,
        None,
        &key,
    );

    for (what, bad) in [
        ("tampered price", replace("p", "99000000")),
        ("swapped campaign", replace("c", "someone-else")),
        ("truncated signature", truncated.to_owned()),
        ("no signature", unsigned),
        ("expired", expired),
    ] {
        let answer = get(&ex, &bad).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}: {bad}");
        assert!(answer.json()["error"].is_string(), "{what}");
    }
    // The untouched URL still bills, once (stopping drains the notices).
    assert_eq!(get(&ex, &url).await.status, StatusCode::NO_CONTENT);
    let events = ex.stop_with_events().await;
    assert_eq!(dsp.stats().burl_hits, 1);
    assert_eq!(
        count(&events, "impression"),
        1,
        "only the genuine impression is billed"
    );
}

fn common_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_click_redirects_to_the_signed_landing_page_only() {
    let dsp = MockDsp::builder("click-dsp")
        .price(Price::Fixed(2.0))
        .adm(r#"<div><a href="https://shop.example/sale?x=1">Buy</a></div>"#)
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(node(&dsp, None)).await;
    let body = ex.auction(banner_request("click-1", 0.0)).await.json();
    let adm = body["seatbid"][0]["bid"][0]["adm"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = adm.find("href=\"").unwrap() + 6;
    let click = adm[start..start + adm[start..].find('"').unwrap()].replace("&amp;", "&");
    assert!(
        click.starts_with(&format!("http://{}/event/click?", ex.addr)),
        "{adm}"
    );
    assert!(
        adm.contains("/event/imp?"),
        "the markup carries the impression pixel: {adm}"
    );

    let answer = get(&ex, &click).await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(answer.headers["location"], "https://shop.example/sale?x=1");

    let evil = click.replace("shop.example", "evil.example");
    assert_ne!(evil, click);
    assert_eq!(get(&ex, &evil).await.status, StatusCode::FORBIDDEN);
    let events = ex.stop_with_events().await;
    assert_eq!(count(&events, "click"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impressions_during_a_redis_outage_are_billed_exactly_once_after_it() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let dsp = bidder("spool-dsp").await;
    let ex = TestExchange::start(node(&dsp, Some(&redis))).await;
    let mut urls = Vec::new();
    for i in 0..10 {
        urls.push(impression_url(&ex, &format!("spool-{i}")).await);
    }
    // Two billed before the outage.
    for url in &urls[..2] {
        assert_eq!(get(&ex, url).await.status, StatusCode::NO_CONTENT);
    }
    redis.kill();
    // During the outage every impression (and a repeat of each, and of the two already
    // billed) is answered at once and kept in the spool, not guessed at.
    for url in urls.iter().chain(urls.iter()) {
        let started = std::time::Instant::now();
        assert_eq!(get(&ex, url).await.status, StatusCode::NO_CONTENT);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited on a dead Redis"
        );
    }
    redis.restart().unwrap();
    // The replay is over once every spooled record has been claimed and logged: the two
    // billed before, then 20 spooled (8 new, 12 repeats).
    let replayed = eventually(Duration::from_secs(15), || {
        let events = ex.events();
        std::future::ready(
            count(&events, "impression") + count(&events, "duplicate_impression") == 22,
        )
    })
    .await;
    let events = ex.events();
    assert!(
        replayed,
        "replay unfinished: {} impressions, {} duplicates",
        count(&events, "impression"),
        count(&events, "duplicate_impression")
    );
    // Stopping drains the billing notices the replay queued.
    let events = ex.stop_with_events().await;
    assert_eq!(count(&events, "impression"), 10);
    assert_eq!(count(&events, "duplicate_impression"), 12);
    assert_eq!(dsp.stats().burl_hits, 10, "an impression was billed twice");
}

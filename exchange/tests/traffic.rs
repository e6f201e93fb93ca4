//! Through the real server: notice URLs that point into our own network are refused, and
//! per-DSP traffic control (QPS cap, targeting) decides which DSPs an auction calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{banner_request, config_for, TestExchange};
use mockdsp::{Behavior, MockDsp, Price};
use testkit::eventually;

/// A DSP that bids 3.0 (0.5 when the request id starts with "lose") with markup, so the
/// exchange fires its win notice itself, and whose nurl and lurl point into loopback on hosts
/// that are not a DSP's: `127.0.0.2` and `localhost` (the DSPs are configured as 127.0.0.1).
fn rogue(witness: std::net::SocketAddr) -> mockdsp::MockDspBuilder {
    let port = witness.port();
    MockDsp::builder("rogue").behavior(Behavior::custom(move |req| {
        let id = req["id"].as_str().unwrap_or_default().to_owned();
        let price = if id.starts_with("lose") { 0.5 } else { 3.0 };
        let body = serde_json::json!({"id": id, "seatbid": [{"bid": [{
            "id": "b1", "impid": "1", "price": price, "adm": "<b>ad</b>", "crid": "c1",
            "nurl": format!("http://127.0.0.2:{port}/nurl"),
            "lurl": format!("http://localhost:{port}/lurl"),
        }]}]});
        (200, body.to_string().into_bytes())
    }))
}

#[tokio::test]
async fn notices_to_private_hosts_are_refused_unless_the_host_is_a_dsps_or_allowed() {
    let witness = MockDsp::builder("witness").start().await.unwrap();
    let rogue = rogue(witness.addr()).start().await.unwrap();
    let honest = MockDsp::builder("honest")
        .price(Price::Fixed(1.0))
        .notices(true)
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(config_for(&[&rogue, &honest])).await;

    // The rogue wins: its nurl (127.0.0.2) is refused; the honest DSP's lurl, on its own
    // host 127.0.0.1, is called.
    let answer = ex.auction(banner_request("win-1", 0.0)).await;
    assert_eq!(answer.status, 200);
    // The rogue loses: its lurl (localhost, which resolves to loopback) is refused; the
    // honest DSP's nurl is called.
    let answer = ex.auction(banner_request("lose-1", 0.0)).await;
    assert_eq!(answer.status, 200);
    let ok = |kind| [("dsp", "honest"), ("kind", kind), ("result", "ok")];
    let refused = |kind| [("dsp", "rogue"), ("kind", kind), ("result", "refused")];
    assert!(
        eventually(Duration::from_secs(5), || async {
            ex.metric("exchange_notices_total", &refused("win")).await == 1.0
                && ex.metric("exchange_notices_total", &refused("loss")).await == 1.0
                && ex.metric("exchange_notices_total", &ok("win")).await == 1.0
                && ex.metric("exchange_notices_total", &ok("loss")).await == 1.0
        })
        .await
    );
    let honest_stats = honest.stats();
    assert_eq!((honest_stats.nurl_hits, honest_stats.lurl_hits), (1, 1));
    assert_eq!(
        ex.metric("exchange_notices_total", &[("dsp", "rogue")])
            .await,
        2.0,
        "the rogue's notices were refused and nothing else"
    );
    ex.stop().await;
    let w = witness.stats();
    assert_eq!((w.nurl_hits, w.lurl_hits), (0, 0));

    // Listed in [notices] allow_hosts, the same localhost lurl is called.
    let mut config = config_for(&[&rogue, &honest]);
    config.notices.allow_hosts = vec!["localhost".to_owned()];
    let ex = TestExchange::start(config).await;
    assert_eq!(ex.auction(banner_request("lose-2", 0.0)).await.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            witness.stats().lurl_hits == 1
        })
        .await
    );
    assert_eq!(
        ex.metric(
            "exchange_notices_total",
            &[("dsp", "rogue"), ("kind", "loss"), ("result", "ok")]
        )
        .await,
        1.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn the_qps_cap_skips_calls_over_it() {
    let capped = MockDsp::builder("capped").start().await.unwrap();
    let free = MockDsp::builder("free").start().await.unwrap();
    let mut config = config_for(&[&capped, &free]);
    config.dsps[0].qps = Some(2);
    let ex = TestExchange::start(config).await;
    // Ten auctions at once: GCRA admits one second's worth (2) and refills one every 500 ms,
    // far longer than ten loopback auctions take to start.
    let auctions = (0..10).map(|i| {
        let ex = &ex;
        async move { ex.auction(banner_request(&format!("qps-{i}"), 0.0)).await }
    });
    for answer in futures::future::join_all(auctions).await {
        assert!(
            answer.status == 200 || answer.status == 204,
            "{}",
            answer.status
        );
    }
    assert_eq!(capped.stats().requests, 2);
    assert_eq!(free.stats().requests, 10);
    let skipped = |dsp, reason| {
        let ex = &ex;
        async move {
            ex.metric(
                "exchange_dsp_skipped_total",
                &[("dsp", dsp), ("reason", reason)],
            )
            .await
        }
    };
    assert_eq!(skipped("capped", "qps").await, 8.0);
    assert_eq!(skipped("capped", "targeting").await, 0.0);
    assert_eq!(skipped("free", "qps").await, 0.0);
    assert_eq!(
        ex.metric("exchange_dsp_requests_total", &[("dsp", "capped")])
            .await,
        2.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn a_dsp_is_called_only_for_the_media_types_it_targets() {
    let video_only = MockDsp::builder("video-only").start().await.unwrap();
    let any = MockDsp::builder("any").start().await.unwrap();
    let mut config = config_for(&[&video_only, &any]);
    config.dsps[0].media_types = vec!["video".to_owned()];
    let ex = TestExchange::start(config).await;

    ex.auction(banner_request("banner-1", 0.0)).await;
    assert_eq!(video_only.stats().requests, 0);
    assert_eq!(any.stats().requests, 1);
    assert_eq!(
        ex.metric(
            "exchange_dsp_skipped_total",
            &[("dsp", "video-only"), ("reason", "targeting")]
        )
        .await,
        1.0
    );

    let video = serde_json::json!({
        "id": "video-1",
        "imp": [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 640, "h": 480}}],
        "site": {"id": "s1", "domain": "news.example"},
        "tmax": 200
    });
    let answer = ex.auction(video.to_string()).await;
    assert!(
        answer.status == 200 || answer.status == 204,
        "{}",
        answer.status
    );
    assert_eq!(video_only.stats().requests, 1);
    assert_eq!(any.stats().requests, 2);
    assert_eq!(
        ex.metric(
            "exchange_dsp_skipped_total",
            &[("dsp", "video-only"), ("reason", "targeting")]
        )
        .await,
        1.0
    );
    ex.stop().await;
}

//! Invalid traffic is never billed, through the real server: an impression or click hit from a
//! known bot or from a blocklisted client IP (the peer, or what a trusted proxy reports in
//! `X-Forwarded-For`) is answered as usual but logged as `invalid_impression` /
//! `invalid_click`, bills nothing, fires no `burl`, and leaves the impression billable by a
//! later valid hit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{banner_request, config_for, TestExchange};
use exchange::Config;
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{MockDsp, MockDspHandle, Price};

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

async fn bidder(name: &str) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(2.0))
        .adm(r#"<div><a href="https://shop.example/sale">Buy</a></div>"#)
        .notices(true)
        .start()
        .await
        .unwrap()
}

fn node(dsp: &MockDspHandle) -> Config {
    let mut config = config_for(&[dsp]);
    config.tracking.secret = Some("tracking-secret-for-tests-0123456789".to_owned());
    config
}

/// The winning bid's impression URL (its `burl`) and click URL (in its markup), as paths.
async fn tracking_urls(ex: &TestExchange, id: &str) -> (String, String) {
    let body = ex.auction(banner_request(id, 1.0)).await.json();
    let bid = &body["seatbid"][0]["bid"][0];
    let burl = bid["burl"].as_str().expect("a winning bid");
    let adm = bid["adm"].as_str().unwrap();
    let start = adm.find("href=\"").unwrap() + 6;
    let click = adm[start..start + adm[start..].find('"').unwrap()].replace("&amp;", "&");
    let path = |url: &str| url[url.find("/event/").unwrap()..].to_owned();
    (path(burl), path(&click))
}

/// GET `path` with the given headers.
async fn hit(ex: &TestExchange, path: &str, headers: &[(&str, &str)]) -> common::Answer {
    let mut req = Request::get(format!("http://{}{path}", ex.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    ex.request(req.body(Full::new(Bytes::new())).unwrap()).await
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

async fn tracked(ex: &TestExchange, kind: &str, result: &str) -> f64 {
    ex.metric(
        "exchange_tracking_events_total",
        &[("kind", kind), ("result", result)],
    )
    .await
}

#[tokio::test]
async fn a_bot_s_hits_are_answered_but_never_billed_and_a_real_hit_still_bills_once() {
    let dsp = bidder("ivt-dsp").await;
    let ex = TestExchange::start(node(&dsp)).await;
    let (imp, click) = tracking_urls(&ex, "ivt-1").await;

    // The bot's impression: the pixel answers as usual, nothing is billed.
    let answer = hit(&ex, &imp, &[("user-agent", GOOGLEBOT)]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(tracked(&ex, "imp", "invalid").await, 1.0);
    assert_eq!(tracked(&ex, "imp", "billed").await, 0.0);
    assert_eq!(
        ex.metric(
            "impressions_events_total",
            &[("type", "invalid_impression")]
        )
        .await,
        1.0
    );
    assert_eq!(
        ex.metric("impressions_events_total", &[("type", "impression")])
            .await,
        0.0
    );
    // The bot's click: redirected all the same, not billed.
    let answer = hit(&ex, &click, &[("user-agent", "curl/8.5.0")]).await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(answer.headers["location"], "https://shop.example/sale");
    assert_eq!(tracked(&ex, "click", "invalid").await, 1.0);
    assert_eq!(tracked(&ex, "click", "billed").await, 0.0);

    // A person's hits of the same impression and click: billed once each, since the invalid
    // hits claimed nothing.
    assert_eq!(
        hit(&ex, &imp, &[("user-agent", CHROME)]).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        hit(&ex, &click, &[("user-agent", CHROME)]).await.status,
        StatusCode::FOUND
    );
    assert_eq!(tracked(&ex, "imp", "billed").await, 1.0);
    assert_eq!(tracked(&ex, "click", "billed").await, 1.0);
    assert_eq!(tracked(&ex, "imp", "duplicate").await, 0.0);

    // Stopping drains the billing notices: the one burl call is the real hit's.
    let events = ex.stop_with_events().await;
    assert_eq!(dsp.stats().burl_hits, 1, "the bot's hit fired no burl");
    assert_eq!(count(&events, "invalid_impression"), 1);
    assert_eq!(count(&events, "invalid_click"), 1);
    assert_eq!(count(&events, "impression"), 1);
    assert_eq!(count(&events, "click"), 1);
    assert_eq!(count(&events, "duplicate_impression"), 0);
    let invalid = events
        .iter()
        .find(|e| e["type"] == "invalid_impression")
        .unwrap();
    assert_eq!(invalid["invalid_reason"], "bot_ua");
    assert_eq!(invalid["auction_id"], "ivt-1");
    assert!(invalid.get("cost_micros").is_none(), "{invalid}");
    let billed = events.iter().find(|e| e["type"] == "impression").unwrap();
    assert_eq!(billed["cost_micros"], 1_010, "{billed}");
    assert_eq!(invalid["impression_id"], billed["impression_id"]);
}

#[tokio::test]
async fn a_blocklisted_client_ip_counts_only_when_a_trusted_proxy_reports_it() {
    let dir = std::env::temp_dir().join(format!("ivt-lists-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("datacentres.txt");
    std::fs::write(&list, "203.0.113.0/24\n").unwrap();
    let dsp = bidder("ivt-proxy-dsp").await;
    let forwarded = [("x-forwarded-for", "192.0.2.77, 203.0.113.9")];

    // Behind a trusted proxy (the test client is 127.0.0.1): the reported client is listed.
    let mut trusted = node(&dsp);
    trusted.fraud.ip_blocklist_files = vec![list.clone()];
    trusted.server.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    let ex = TestExchange::start(trusted).await;
    let (imp, _) = tracking_urls(&ex, "ivt-proxy-1").await;
    assert_eq!(
        hit(&ex, &imp, &forwarded).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(tracked(&ex, "imp", "invalid").await, 1.0);
    assert_eq!(tracked(&ex, "imp", "billed").await, 0.0);
    let events = ex.stop_with_events().await;
    assert_eq!(count(&events, "invalid_impression"), 1);
    assert_eq!(count(&events, "impression"), 0);
    let invalid = events
        .iter()
        .find(|e| e["type"] == "invalid_impression")
        .unwrap();
    assert_eq!(invalid["invalid_reason"], "ip_blocklist");
    assert_eq!(dsp.stats().burl_hits, 0);

    // From a peer that is not a trusted proxy the same header is ignored: billed.
    let dsp = bidder("ivt-proxy-dsp-2").await;
    let mut untrusted = node(&dsp);
    untrusted.fraud.ip_blocklist_files = vec![list];
    untrusted.server.trusted_proxies = vec!["10.0.0.0/8".to_owned()];
    let ex = TestExchange::start(untrusted).await;
    let (imp, _) = tracking_urls(&ex, "ivt-proxy-2").await;
    assert_eq!(
        hit(&ex, &imp, &forwarded).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(tracked(&ex, "imp", "invalid").await, 0.0);
    assert_eq!(tracked(&ex, "imp", "billed").await, 1.0);
    let events = ex.stop_with_events().await;
    assert_eq!(count(&events, "impression"), 1);
    assert_eq!(count(&events, "invalid_impression"), 0);
    assert_eq!(dsp.stats().burl_hits, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Test traffic (`BidRequest.test = 1`) through the real server: the answer is real, but no
//! campaign is charged, its tracking URLs bill nothing and fire no `burl`, and its events say
//! `"test": true`. A normal auction on the same node is charged and billed as before.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{banner_request, TestExchange};
use exchange::config::{CampaignConfig, DspConfig};
use exchange::Config;
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{MockDsp, MockDspHandle, Price};
use testkit::eventually;

const ADMIN: &str = "test-admin-token-0123456789";
const SECRET: &str = "tracking-secret-for-tests-0123456789";
/// The winner bids 2.00 and the runner-up 1.00 over a 0.50 floor: the winner clears at
/// 1.00 + 0.01 = 1.01 CPM, so one impression costs ceil(1 010 000 / 1000) = 1010 micros.
const COST: u64 = 1_010;

struct Setup {
    ex: TestExchange,
    winner: MockDspHandle,
    loser: MockDspHandle,
}

async fn setup() -> Setup {
    let winner = MockDsp::builder("tt-win")
        .price(Price::Fixed(2.0))
        .cids(["small"])
        .notices(true)
        .start()
        .await
        .unwrap();
    let loser = MockDsp::builder("tt-lose")
        .price(Price::Fixed(1.0))
        .notices(true)
        .start()
        .await
        .unwrap();
    let mut config = Config {
        dsps: vec![
            DspConfig::new(winner.name(), winner.url()),
            DspConfig::new(loser.name(), loser.url()),
        ],
        ..Config::default()
    };
    config.auction.dsp_timeout_ms = 500;
    config.budget.sync_interval_ms = 20;
    config.budget.full_sync_ms = 100;
    config.budget.min_lease_micros = 10_000;
    config.admin.token = Some(ADMIN.to_owned());
    config.tracking.secret = Some(SECRET.to_owned());
    config.campaigns = vec![CampaignConfig {
        dsp: winner.name().to_owned(),
        id: "small".into(),
        budget: 1.0,
        paused: false,
        ..CampaignConfig::default()
    }];
    let ex = TestExchange::start(config).await;
    // The lease is filled by the first sync; until then the campaign cannot pay.
    let filled = eventually(Duration::from_secs(5), || async {
        let c = campaign(&ex).await;
        c["this_node"]["available_micros"]
            .as_u64()
            .is_some_and(|a| a >= COST)
    })
    .await;
    assert!(filled, "no lease: {}", campaign(&ex).await);
    Setup { ex, winner, loser }
}

async fn campaign(ex: &TestExchange) -> serde_json::Value {
    let req = Request::get(format!("http://{}/admin/campaigns/tt-win/small", ex.addr))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = ex.request(req).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()
}

fn test_request(id: &str) -> String {
    let mut req: serde_json::Value = serde_json::from_str(&banner_request(id, 0.5)).unwrap();
    req["test"] = 1.into();
    req.to_string()
}

/// The winning bid's `burl`, the exchange's impression URL, as a path on `ex`.
fn impression_path(answer: &serde_json::Value, ex: &TestExchange) -> String {
    let burl = answer["seatbid"][0]["bid"][0]["burl"]
        .as_str()
        .expect("a winning bid");
    assert!(
        burl.starts_with(&format!("http://{}/event/imp?", ex.addr)),
        "{burl}"
    );
    burl[burl.find("/event/").unwrap()..].to_owned()
}

async fn billed(ex: &TestExchange, result: &str) -> f64 {
    ex.metric(
        "exchange_tracking_events_total",
        &[("kind", "imp"), ("result", result)],
    )
    .await
}

fn of_auction<'e>(events: &'e [serde_json::Value], id: &str) -> Vec<&'e serde_json::Value> {
    events.iter().filter(|e| e["auction_id"] == id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_auction_answers_for_real_and_charges_and_bills_nothing() {
    let Setup { ex, winner, loser } = setup().await;
    let before = campaign(&ex).await;
    assert_eq!(before["this_node"]["charged_micros"], 0);

    let answer = ex.auction(test_request("tt-1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    let bid = &body["seatbid"][0]["bid"][0];
    assert_eq!(body["seatbid"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["seatbid"][0]["seat"], "tt-win");
    assert_eq!(bid["id"], "tt-win-1");
    assert_eq!(bid["price"], 1.01);
    assert_eq!(bid["cid"], "small");
    // A test auction's answer explains itself.
    assert_eq!(body["ext"]["debug"]["test"], true);
    assert_eq!(body["ext"]["debug"]["imps"][0]["clearing"], 1.01);
    assert_eq!(body["ext"]["debug"]["imps"][0]["charged_micros"], 0);
    let imp = impression_path(&body, &ex);
    assert!(imp.contains("&test=1&sig="), "{imp}");
    assert!(
        bid["adm"].as_str().unwrap().contains("test=1"),
        "the markup's pixel is the test URL too: {}",
        bid["adm"]
    );

    // Nothing was charged on this node, and the store's spend did not move.
    let after = campaign(&ex).await;
    assert_eq!(after["this_node"]["charged_micros"], 0);
    assert_eq!(after["spent_micros"], before["spent_micros"]);
    assert_eq!(after["spent_micros"], 0);

    // The impression is answered as usual, and billed never: twice, to be sure no dedup
    // turns the second into anything else.
    for _ in 0..2 {
        let hit = ex.get(&imp).await;
        assert_eq!(hit.status, StatusCode::NO_CONTENT);
        assert_eq!(hit.headers["cache-control"], "no-store");
    }
    assert_eq!(billed(&ex, "billed").await, 0.0);
    assert_eq!(billed(&ex, "duplicate").await, 0.0);
    assert_eq!(billed(&ex, "test").await, 2.0);
    assert_eq!(ex.metric("exchange_test_auctions_total", &[]).await, 1.0);
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "won")])
            .await,
        1.0
    );
    // A tampered flag is not a way out of billing, nor into it.
    let stripped = imp.replace("&test=1", "");
    assert_eq!(ex.get(&stripped).await.status, StatusCode::FORBIDDEN);

    // A real auction after it: once the store has heard of its spend, the spend is exactly
    // that one impression's, so the test auction added nothing in between.
    let real = ex.auction(banner_request("tt-1-real", 0.5)).await;
    assert_eq!(real.status, StatusCode::OK);
    let reported = eventually(Duration::from_secs(5), || async {
        campaign(&ex).await["spent_micros"] == COST
    })
    .await;
    assert!(reported, "{}", campaign(&ex).await);
    assert_eq!(campaign(&ex).await["this_node"]["charged_micros"], COST);

    // Stopping drains every queued notice: the DSP's burl was never called; win and loss
    // notices went out as for any auction (one per auction).
    let events = ex.stop_with_events().await;
    assert_eq!(winner.stats().burl_hits, 0);
    assert_eq!(winner.stats().nurl_hits, 2);
    assert_eq!(loser.stats().lurl_hits, 2);
    let events = of_auction(&events, "tt-1");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "win").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "loss").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "impression").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(events.len(), 4, "{events:?}");
    for e in &events {
        assert_eq!(e["test"], true, "{e}");
        assert!(
            e.get("cost_micros").is_none(),
            "a test event costs nothing: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_auction_is_still_charged_and_billed() {
    let Setup { ex, winner, loser } = setup().await;
    let answer = ex.auction(banner_request("tt-2", 0.5)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["seatbid"][0]["bid"][0]["price"], 1.01);
    assert!(body.get("ext").is_none(), "{body}");
    let imp = impression_path(&body, &ex);
    assert!(!imp.contains("test="), "{imp}");
    assert_eq!(campaign(&ex).await["this_node"]["charged_micros"], COST);

    assert_eq!(ex.get(&imp).await.status, StatusCode::NO_CONTENT);
    assert_eq!(ex.get(&imp).await.status, StatusCode::NO_CONTENT);
    assert_eq!(billed(&ex, "billed").await, 1.0);
    assert_eq!(billed(&ex, "duplicate").await, 1.0);
    assert_eq!(billed(&ex, "test").await, 0.0);
    assert_eq!(ex.metric("exchange_test_auctions_total", &[]).await, 0.0);
    // The store hears of the spend at the next sync: exactly one impression's worth.
    let reported = eventually(Duration::from_secs(5), || async {
        campaign(&ex).await["spent_micros"] == COST
    })
    .await;
    assert!(reported, "{}", campaign(&ex).await);

    let events = ex.stop_with_events().await;
    assert_eq!(winner.stats().burl_hits, 1);
    assert_eq!(loser.stats().lurl_hits, 1);
    let events = of_auction(&events, "tt-2");
    let billed_events: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "impression")
        .collect();
    assert_eq!(billed_events.len(), 1, "{events:?}");
    assert_eq!(billed_events[0]["cost_micros"], COST);
    for e in &events {
        assert!(e.get("test").is_none(), "{e}");
    }
}

//! `ext.debug` through the real server: asked for by `test = 1` or by the
//! `x-exchange-debug` header carrying `debug.token`; never in a normal answer, never for a
//! wrong token; a debugged auction nothing won is a 200 with an empty `seatbid`.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{banner_request, Answer, TestExchange};
use exchange::config::DspConfig;
use exchange::Config;
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{Behavior, MockDsp, MockDspHandle, Price};
use serde_json::json;

const TOKEN: &str = "debug-token-for-tests-0123456789";

/// Four DSPs: one that targets video only (skipped for a banner), one that never bids, and
/// two bidders at 2.00 and 1.50.
struct Fleet {
    ex: TestExchange,
    _dsps: Vec<MockDspHandle>,
}

async fn fleet() -> Fleet {
    let video = MockDsp::builder("dbg-video").start().await.unwrap();
    let none = MockDsp::builder("dbg-none")
        .behavior(Behavior::NoBid204)
        .start()
        .await
        .unwrap();
    let high = MockDsp::builder("dbg-high")
        .price(Price::Fixed(2.0))
        .cids(["camp-h"])
        .crid("cr-h")
        .start()
        .await
        .unwrap();
    let low = MockDsp::builder("dbg-low")
        .price(Price::Fixed(1.5))
        .cids(["camp-l"])
        .crid("cr-l")
        .start()
        .await
        .unwrap();
    let mut video_only = DspConfig::new(video.name(), video.url());
    video_only.media_types = vec!["video".into()];
    let mut config = Config {
        dsps: vec![
            video_only,
            DspConfig::new(none.name(), none.url()),
            DspConfig::new(high.name(), high.url()),
            DspConfig::new(low.name(), low.url()),
        ],
        ..Config::default()
    };
    config.auction.dsp_timeout_ms = 500;
    config.debug.token = Some(TOKEN.to_owned());
    Fleet {
        ex: TestExchange::start(config).await,
        _dsps: vec![video, none, high, low],
    }
}

async fn auction_with_header(ex: &TestExchange, body: String, token: &str) -> Answer {
    let req = Request::post(format!("http://{}/openrtb2/auction", ex.addr))
        .header("content-type", "application/json")
        .header("x-exchange-debug", token)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    ex.request(req).await
}

fn with_test(body: String) -> String {
    let mut req: serde_json::Value = serde_json::from_str(&body).unwrap();
    req["test"] = 1.into();
    req.to_string()
}

/// `ext.debug` with each called DSP's `latency_ms` checked (a number, under the 500 ms
/// deadline) and taken out, since it is the one value a test cannot know.
fn debug_of(answer: &Answer) -> serde_json::Value {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let mut debug = answer.json()["ext"]["debug"].take();
    for dsp in debug["dsps"].as_array_mut().expect("a DSP list") {
        let dsp = dsp.as_object_mut().unwrap();
        if dsp["called"] == true {
            let ms = dsp
                .remove("latency_ms")
                .and_then(|v| v.as_f64())
                .expect("a called DSP's latency");
            assert!((0.0..500.0).contains(&ms), "{ms}");
        } else {
            assert!(!dsp.contains_key("latency_ms"));
        }
    }
    debug
}

/// The DSP list every debugged auction of [`fleet`] shows, for a 1.00 floor; `n` numbers the
/// bidders' bids (each mock numbers its bids from 1).
fn dsps_won_by_high(n: u32) -> serde_json::Value {
    json!([
        {"dsp": "dbg-video", "called": false, "skipped": "targeting", "result": "skipped"},
        {"dsp": "dbg-none", "called": true, "status": 204, "result": "no_bid", "reason": "no_content"},
        {"dsp": "dbg-high", "called": true, "status": 200, "result": "bids", "bids": [
            {"id": format!("dbg-high-{n}"), "impid": "1", "price": 2.0, "seat": "dbg-high",
             "cid": "camp-h", "crid": "cr-h", "outcome": "won", "loss_code": 0, "clearing": 1.51}
        ]},
        {"dsp": "dbg-low", "called": true, "status": 200, "result": "bids", "bids": [
            {"id": format!("dbg-low-{n}"), "impid": "1", "price": 1.5, "seat": "dbg-low",
             "cid": "camp-l", "crid": "cr-l", "outcome": "lost", "loss_code": 102,
             "reason": "lost_to_higher_bid"}
        ]},
    ])
}

/// `ext.debug.scrubbing` for a request without privacy signals: no DSP's body is scrubbed,
/// and no supply-chain node is configured.
fn no_scrubbing() -> serde_json::Value {
    let dsp = |name: &str| json!({"dsp": name, "scrub": null, "rule": null});
    json!({
        "schain_node": false,
        "dsps": [dsp("dbg-video"), dsp("dbg-none"), dsp("dbg-high"), dsp("dbg-low")],
    })
}

/// The second-price computation: runner-up 1.50 over a 1.00 floor, plus 0.01.
fn imps_won_by_high(n: u32) -> serde_json::Value {
    json!([{
        "id": "1", "at": 2, "bids": 2, "floor": 1.0, "runner_up": 1.5, "second_price": 1.5,
        "increment": 0.01, "clearing": 1.51, "charged_micros": 0,
        "winner": {"dsp": "dbg-high", "bid": format!("dbg-high-{n}")}
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_header_and_test_auctions_explain_the_auction() {
    let Fleet { ex, _dsps } = fleet().await;

    // A normal answer: the same auction, and not a byte of debug in it.
    let normal = ex.auction(banner_request("dbg-0", 1.0)).await;
    assert_eq!(normal.status, StatusCode::OK);
    let text = String::from_utf8(normal.body.to_vec()).unwrap();
    assert!(!text.contains("\"ext\""), "{text}");
    assert!(!text.contains("debug"), "{text}");
    assert_eq!(normal.json()["seatbid"][0]["bid"][0]["price"], 1.51);

    // Through the header.
    let answer = auction_with_header(&ex, banner_request("dbg-1", 1.0), TOKEN).await;
    assert_eq!(answer.json()["seatbid"][0]["bid"][0]["price"], 1.51);
    assert_eq!(
        debug_of(&answer),
        json!({
            "test": false,
            "dsps": dsps_won_by_high(2),
            "imps": imps_won_by_high(2),
            "screening": {"screened": false},
            "scrubbing": no_scrubbing(),
        })
    );

    // Through `test = 1`, no header needed.
    let answer = ex.auction(with_test(banner_request("dbg-2", 1.0))).await;
    assert_eq!(answer.json()["seatbid"][0]["bid"][0]["price"], 1.51);
    assert_eq!(
        debug_of(&answer),
        json!({
            "test": true,
            "dsps": dsps_won_by_high(3),
            "imps": imps_won_by_high(3),
            "screening": {"screened": false},
            "scrubbing": no_scrubbing(),
        })
    );

    // A wrong token is no token: a normal answer, counted.
    for wrong in ["debug-token-for-tests-0123456780", "x"] {
        let answer = auction_with_header(&ex, banner_request("dbg-3", 1.0), wrong).await;
        assert_eq!(answer.status, StatusCode::OK);
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        assert!(!text.contains("debug"), "{text}");
        assert!(answer.json().get("ext").is_none());
    }
    assert_eq!(ex.metric("exchange_debug_refused_total", &[]).await, 2.0);
    assert_eq!(ex.metric("exchange_debug_answers_total", &[]).await, 2.0);
    assert_eq!(ex.metric("exchange_test_auctions_total", &[]).await, 1.0);
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "won")])
            .await,
        5.0
    );
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debugged_auction_nothing_won_is_a_200_with_an_empty_seatbid() {
    let Fleet { ex, _dsps } = fleet().await;
    // Both bids are under a 5.00 floor.
    let answer = auction_with_header(&ex, banner_request("dbg-floor", 5.0), TOKEN).await;
    let body = answer.json();
    assert_eq!(body["id"], "dbg-floor");
    assert_eq!(body["seatbid"], json!([]));
    assert_eq!(body["cur"], "USD");
    let below = |dsp: &str, price: f64, crid: &str, cid: &str| {
        json!({"dsp": dsp, "called": true, "status": 200, "result": "bids", "bids": [
            {"id": format!("{dsp}-1"), "impid": "1", "price": price, "seat": dsp, "cid": cid,
             "crid": crid, "outcome": "lost", "loss_code": 100, "reason": "below_auction_floor"}
        ]})
    };
    assert_eq!(
        debug_of(&answer),
        json!({
            "test": false,
            "dsps": [
                {"dsp": "dbg-video", "called": false, "skipped": "targeting", "result": "skipped"},
                {"dsp": "dbg-none", "called": true, "status": 204, "result": "no_bid", "reason": "no_content"},
                below("dbg-high", 2.0, "cr-h", "camp-h"),
                below("dbg-low", 1.5, "cr-l", "camp-l"),
            ],
            "imps": [{
                "id": "1", "at": 2, "bids": 2, "floor": 5.0, "runner_up": null,
                "second_price": null, "increment": 0.01, "clearing": null,
                "charged_micros": 0, "winner": null
            }],
            "screening": {"screened": false},
            "scrubbing": no_scrubbing(),
        })
    );
    // Without debugging the same auction is the usual 204.
    let plain = ex.auction(banner_request("dbg-floor-2", 5.0)).await;
    assert_eq!(plain.status, StatusCode::NO_CONTENT);
    assert!(plain.body.is_empty());
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "no_bid")])
            .await,
        2.0
    );
    ex.stop().await;
}

//! The money rules through the HTTP endpoint: floor rules, currency conversion of floors,
//! bids and answers, the margin split, bid adjustments and the rates file, with mock DSPs on
//! loopback. Every figure is exact: rates and prices are chosen so each conversion is known.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{banner_request, config_for, TestExchange};
use exchange::config::{CampaignConfig, FloorRule};
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{Behavior, MockDsp, MockDspHandle, NoticeKind, Price};
use serde_json::{json, Value};
use testkit::eventually;

const WAIT: Duration = Duration::from_secs(10);

fn fixed(name: &str, cpm: f64) -> mockdsp::MockDspBuilder {
    MockDsp::builder(name)
        .price(Price::Fixed(cpm))
        .notices(true)
}

fn rates(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(c, r)| ((*c).to_owned(), *r)).collect()
}

/// A one-imp banner request with its own floor, floor currency, `cur` and auction type.
fn request(id: &str, floor: Option<(f64, &str)>, cur: &[&str], at: u8) -> String {
    let mut imp = json!({"id": "1", "banner": {"w": 300, "h": 250}});
    if let Some((value, currency)) = floor {
        imp["bidfloor"] = json!(value);
        imp["bidfloorcur"] = json!(currency);
    }
    let mut req = json!({
        "id": id,
        "imp": [imp],
        "site": {"id": "s1", "domain": "news.example"},
        "tmax": 200,
        "at": at,
    });
    if !cur.is_empty() {
        req["cur"] = json!(cur);
    }
    req.to_string()
}

/// A DSP answering in `cur` at the price `price_of` gives for the request id (none: no bid),
/// with notices to `sink` that say the price and currency it was told.
fn bidder_in(
    name: &'static str,
    sink: &MockDspHandle,
    cur: &'static str,
    price_of: fn(&str) -> Option<f64>,
) -> mockdsp::MockDspBuilder {
    let base = sink.url().replace("/bid", "");
    MockDsp::builder(name).behavior(Behavior::custom(move |req| {
        let id = req["id"].as_str().unwrap_or_default().to_owned();
        let Some(price) = price_of(&id) else {
            return (204, Vec::new());
        };
        let body = json!({"id": id, "cur": cur, "seatbid": [{"seat": name, "bid": [{
            "id": format!("b-{id}"), "impid": "1", "price": price,
            "adm": "<img src=\"https://px.example/?p=${AUCTION_PRICE}&c=${AUCTION_CURRENCY}\">",
            "nurl": format!("{base}/nurl?price=${{AUCTION_PRICE}}&cur=${{AUCTION_CURRENCY}}&auction=${{AUCTION_ID}}"),
            "lurl": format!("{base}/lurl?loss=${{AUCTION_LOSS}}&cur=${{AUCTION_CURRENCY}}&auction=${{AUCTION_ID}}"),
        }]}]});
        (200, body.to_string().into_bytes())
    }))
}

/// The first notice of `kind` `dsp` heard for auction `id`, waited for.
async fn notice(dsp: &MockDspHandle, kind: NoticeKind, id: &str) -> mockdsp::Notice {
    let find = || {
        dsp.notices()
            .into_iter()
            .find(|n| n.kind == kind && n.param("auction") == Some(id))
    };
    assert!(
        eventually(WAIT, || async { find().is_some() }).await,
        "no {kind:?} for {id}: {:?}",
        dsp.notices()
    );
    find().unwrap()
}

fn only_bid(answer: &Value) -> &Value {
    let seatbids = answer["seatbid"].as_array().unwrap();
    assert_eq!(seatbids.len(), 1, "{answer}");
    &seatbids[0]["bid"][0]
}

#[tokio::test]
async fn a_floor_rule_raises_the_floor_dsps_see_and_bids_under_it_lose() {
    let low = fixed("fr-low", 2.0).start().await.unwrap();
    let high = fixed("fr-high", 3.0).start().await.unwrap();
    let mut config = config_for(&[&low, &high]);
    config.floors = vec![FloorRule {
        publisher: None,
        domain: Some("NEWS.example".into()),
        bundle: None,
        media_type: Some("banner".into()),
        size: Some("300x250".into()),
        country: None,
        floor: 2.5,
    }];
    let ex = TestExchange::start(config).await;

    let answer = ex.auction(banner_request("fr-1", 1.0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["seatbid"][0]["seat"], "fr-high", "{body}");
    // Second price over the raised floor: 2.50 + 0.01.
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.51));
    for dsp in [&low, &high] {
        let sent = dsp.received_json().pop().unwrap();
        assert_eq!(sent["imp"][0]["bidfloor"], json!(2.5), "{sent}");
        assert_eq!(sent["imp"][0]["bidfloorcur"], "USD", "{sent}");
        // Every other byte is the publisher's.
        assert_eq!(sent["ext"]["keep"]["me"], json!([1, 2, 3]));
        assert_eq!(sent["imp"][0]["banner"], json!({"w": 300, "h": 250}));
    }
    let lost = notice(&low, NoticeKind::Lurl, "fr-1").await;
    assert_eq!(lost.param("loss"), Some("100"));

    // A request no rule matches reaches the DSPs with its imp as sent.
    let other = banner_request("fr-2", 1.0).replace("news.example", "blog.example");
    let body = ex.auction(other).await.json();
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.01), "{body}");
    let sent = high.received_json().pop().unwrap();
    assert_eq!(sent["imp"][0]["bidfloor"], json!(1.0), "{sent}");
    assert!(sent["imp"][0].get("bidfloorcur").is_none(), "{sent}");
    ex.stop().await;
}

#[tokio::test]
async fn a_eur_floor_and_a_gbp_bid_are_compared_in_the_auction_currency() {
    let sink = MockDsp::builder("cx-sink").start().await.unwrap();
    // 1.60 GBP is 2.025316 USD (rounded down); 1.57 GBP is 1.987341 USD.
    let gbp = bidder_in("cx-gbp", &sink, "GBP", |id| {
        Some(if id.starts_with("win") { 1.60 } else { 1.57 })
    })
    .start()
    .await
    .unwrap();
    let mut config = config_for(&[&gbp]);
    config.currency.rates = rates(&[("EUR", 0.92), ("GBP", 0.79)]);
    let ex = TestExchange::start(config).await;

    // 1.84 EUR at 0.92 is exactly 2.00 USD.
    let answer = ex
        .auction(request("win-1", Some((1.84, "EUR")), &[], 2))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["cur"], "USD");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.01), "{body}");
    let sent = gbp.received_json().pop().unwrap();
    assert_eq!(sent["imp"][0]["bidfloor"], json!(2), "{sent}");
    assert_eq!(sent["imp"][0]["bidfloorcur"], "USD", "{sent}");
    // The DSP hears the 2.01 USD clearing price in pounds: 1.5879 GBP.
    let won = notice(&sink, NoticeKind::Nurl, "win-1").await;
    assert_eq!(won.param("price"), Some("1.5879"));
    assert_eq!(won.param("cur"), Some("GBP"));
    let adm = only_bid(&body)["adm"].as_str().unwrap();
    assert!(adm.contains("p=1.5879&c=GBP"), "{adm}");

    let answer = ex
        .auction(request("lose-1", Some((1.84, "EUR")), &[], 2))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let lost = notice(&sink, NoticeKind::Lurl, "lose-1").await;
    assert_eq!(lost.param("loss"), Some("100"));
    assert_eq!(lost.param("cur"), Some("GBP"));

    // A floor currency without a rate is never guessed: the imp is not sold, and counted.
    let answer = ex
        .auction(request("win-2", Some((0.01, "JPY")), &[], 2))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(ex.metric("exchange_floor_no_rate_total", &[]).await, 1.0);
    ex.stop().await;
}

#[tokio::test]
async fn the_answer_is_in_the_first_requested_currency_with_a_rate() {
    let dsp = fixed("eur-ans", 2.0).start().await.unwrap();
    let mut config = config_for(&[&dsp]);
    config.currency.rates = rates(&[("EUR", 0.92)]);
    let ex = TestExchange::start(config).await;

    let body = ex
        .auction(request("eur-1", None, &["EUR", "USD"], 1))
        .await
        .json();
    assert_eq!(body["cur"], "EUR");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(1.84), "{body}");
    // DSPs are asked for bids in the auction currency.
    assert_eq!(dsp.received_json().pop().unwrap()["cur"], json!(["USD"]));

    let body = ex
        .auction(request("eur-2", None, &["JPY", "USD"], 1))
        .await
        .json();
    assert_eq!(body["cur"], "USD");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.0), "{body}");

    let body = ex.auction(request("eur-3", None, &["JPY"], 1)).await.json();
    assert_eq!(body["cur"], "USD", "no rate for any: the auction currency");
    ex.stop().await;
}

#[tokio::test]
async fn the_dsp_is_told_the_gross_and_the_publisher_the_net() {
    let dsp = fixed("margin", 2.0)
        .adm("<p>${AUCTION_PRICE}</p>")
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&dsp]);
    config.auction.default_margin = 0.15;
    config.currency.rates = rates(&[("EUR", 0.92)]);
    let ex = TestExchange::start(config).await;

    // The issue's example: clearing 2.00 USD at 15%.
    let body = ex.auction(request("m-1", None, &[], 1)).await.json();
    let bid = only_bid(&body);
    assert_eq!(bid["price"].as_f64(), Some(1.7), "{body}");
    assert!(bid["adm"].as_str().unwrap().contains("<p>2</p>"), "{bid}");
    let won = notice(&dsp, NoticeKind::Nurl, "m-1").await;
    assert_eq!(won.param("price"), Some("2"));

    // Net in the publisher's currency: 1.70 USD is 1.564 EUR.
    let body = ex.auction(request("m-2", None, &["EUR"], 1)).await.json();
    assert_eq!(body["cur"], "EUR");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(1.564), "{body}");
    ex.stop().await;
}

const TOKEN: &str = "test-admin-token-0123456789";

async fn spent_micros(ex: &TestExchange, dsp: &str, cid: &str) -> Option<u64> {
    let req = Request::get(format!("http://{}/admin/campaigns/{dsp}/{cid}", ex.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    ex.request(req).await.json()["spent_micros"].as_u64()
}

#[tokio::test]
async fn an_adjusted_bid_ranks_higher_but_never_pays_more_than_it_bid() {
    let adjusted = fixed("adj", 2.0).cids(["c1"]).start().await.unwrap();
    let rival = fixed("adj-rival", 2.5).start().await.unwrap();
    let mut config = config_for(&[&adjusted, &rival]);
    config.dsps[0].bid_adjustment = 1.5;
    config.admin.token = Some(TOKEN.to_owned());
    config.budget.sync_interval_ms = 20;
    config.campaigns = vec![CampaignConfig {
        dsp: "adj".into(),
        id: "c1".into(),
        budget: 10.0,
        paused: false,
        ..CampaignConfig::default()
    }];
    let ex = TestExchange::start(config).await;

    // 2.00 × 1.5 = 3.00 beats 2.50; second price would be 2.51, capped at the 2.00 bid.
    let body = ex.auction(banner_request("adj-1", 1.0)).await.json();
    assert_eq!(body["seatbid"][0]["seat"], "adj", "{body}");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.0), "{body}");
    let won = notice(&adjusted, NoticeKind::Nurl, "adj-1").await;
    assert_eq!(won.param("price"), Some("2"));
    // Charged for one impression at 2.00 CPM: 2000 micros, not 2510.
    assert!(
        eventually(WAIT, || async {
            spent_micros(&ex, "adj", "c1").await == Some(2_000)
        })
        .await,
        "spent: {:?}",
        spent_micros(&ex, "adj", "c1").await
    );

    // Over a 2.20 floor the adjusted 3.00 could pay at most 2.00: below the floor.
    let body = ex.auction(banner_request("adj-2", 2.2)).await.json();
    assert_eq!(body["seatbid"][0]["seat"], "adj-rival", "{body}");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(2.21), "{body}");
    let lost = notice(&adjusted, NoticeKind::Lurl, "adj-2").await;
    assert_eq!(lost.param("loss"), Some("100"));
    ex.stop().await;
}

#[tokio::test]
async fn a_bid_in_a_currency_without_a_rate_is_rejected_and_counted() {
    let jpy = fixed("cur-jpy", 300.0)
        .currency("JPY")
        .start()
        .await
        .unwrap();
    let eur = fixed("cur-eur", 1.0).currency("EUR").start().await.unwrap();
    let mut config = config_for(&[&jpy, &eur]);
    config.currency.rates = rates(&[("EUR", 0.8)]);
    let ex = TestExchange::start(config).await;

    let body = ex.auction(request("nr-1", None, &[], 1)).await.json();
    // 1.00 EUR at 0.8 is 1.25 USD; the yen bid is not in the auction at all.
    assert_eq!(body["seatbid"][0]["seat"], "cur-eur", "{body}");
    assert_eq!(only_bid(&body)["price"].as_f64(), Some(1.25), "{body}");
    let rejected = [("dsp", "cur-jpy"), ("reason", "wrong_currency")];
    assert_eq!(
        ex.metric("exchange_bids_rejected_total", &rejected).await,
        1.0
    );
    ex.stop().await;
}

fn write_rates(path: &std::path::Path, text: &str) {
    // Renamed into place, so the refresh never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn the_rates_file_is_refreshed_and_a_broken_one_keeps_the_last_good_table() {
    let eur = fixed("rf-eur", 1.84).currency("EUR").start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("exchange-rates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rates.json");
    write_rates(&file, r#"{"EUR": 0.92}"#);
    let mut config = config_for(&[&eur]);
    config.currency.rates_file = Some(file.clone());
    config.currency.refresh_interval_s = 1;
    let ex = TestExchange::start(config).await;

    let exr = &ex;
    let mut seq = 0;
    let mut price = move || {
        seq += 1;
        let id = format!("rf-{seq}");
        async move {
            let body = exr.auction(request(&id, None, &[], 1)).await.json();
            only_bid(&body)["price"].as_f64()
        }
    };
    // 1.84 EUR at 0.92: 2.00 USD.
    assert_eq!(price().await, Some(2.0));

    // 1.84 EUR at 0.8: 2.30 USD, once the refresh has read the new file.
    write_rates(&file, r#"{"EUR": 0.8}"#);
    let last = std::cell::Cell::new(None);
    let refreshed = eventually(WAIT, || {
        let got = price();
        let last = &last;
        async move {
            last.set(got.await);
            last.get() == Some(2.3)
        }
    })
    .await;
    assert!(refreshed, "the new rate never applied: {:?}", last.get());

    write_rates(&file, "{not json");
    let failed = [("result", "failed")];
    assert!(
        eventually(WAIT, || async {
            ex.metric("exchange_currency_rates_refresh_total", &failed)
                .await
                >= 1.0
        })
        .await
    );
    assert_eq!(price().await, Some(2.3), "the last good table stays");
    assert!(
        ex.metric("exchange_currency_rates_refresh_total", &[("result", "ok")])
            .await
            >= 1.0
    );

    // A reload (SIGHUP) swaps the rates too, and a broken rates file refuses it.
    let mut broken = ex.config.clone();
    broken.currency.rates = rates(&[("EUR", 0.46)]);
    let refused = ex.reload.reload(Ok(broken)).await.unwrap_err().to_string();
    assert!(refused.contains("currency.rates_file"), "{refused}");
    let mut inline = ex.config.clone();
    inline.currency.rates_file = None;
    inline.currency.rates = rates(&[("EUR", 0.46)]);
    ex.reload.reload(Ok(inline)).await.unwrap();
    assert_eq!(price().await, Some(4.0));
    ex.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! End-to-end auctions: the exchange in process on loopback, real mock DSPs over HTTP.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{banner_request, config_for, TestExchange};
use http::StatusCode;
use mockdsp::{Behavior, Latency, MockDsp, NoticeKind, Price};
use testkit::eventually;

fn fixed(name: &str, cpm: f64) -> mockdsp::MockDspBuilder {
    MockDsp::builder(name)
        .price(Price::Fixed(cpm))
        .notices(true)
}

#[tokio::test]
async fn second_price_clears_at_the_second_bid_plus_the_increment() {
    let hi = fixed("sp-hi", 3.0).start().await.unwrap();
    let lo = fixed("sp-lo", 2.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&hi, &lo])).await;

    let answer = ex.auction(banner_request("auction-sp", 0.5)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-openrtb-version"], "2.6");
    let body = answer.json();
    assert_eq!(body["id"], "auction-sp");
    assert_eq!(body["cur"], "USD");
    let seatbids = body["seatbid"].as_array().unwrap();
    assert_eq!(seatbids.len(), 1, "{body}");
    assert_eq!(seatbids[0]["seat"], "sp-hi");
    let bid = &seatbids[0]["bid"][0];
    assert_eq!(bid["impid"], "1");
    assert_eq!(bid["price"].as_f64(), Some(2.01), "{bid}");
    // The clearing price reached the markup through ${AUCTION_PRICE}.
    let adm = bid["adm"].as_str().unwrap();
    assert!(adm.contains("2.01") && !adm.contains("${"), "{adm}");

    // The winner's nurl is fired by the exchange with the clearing price; the loser hears
    // it lost to a higher bid (102) and what it would have taken to win.
    assert!(
        eventually(Duration::from_secs(5), || async {
            hi.notices().iter().any(|n| n.kind == NoticeKind::Nurl)
                && lo.notices().iter().any(|n| n.kind == NoticeKind::Lurl)
        })
        .await,
        "notices: hi {:?} lo {:?}",
        hi.notices(),
        lo.notices()
    );
    let nurl = hi
        .notices()
        .into_iter()
        .find(|n| n.kind == NoticeKind::Nurl)
        .unwrap();
    assert_eq!(nurl.param("price"), Some("2.01"));
    assert_eq!(nurl.param("auction"), Some("auction-sp"));
    assert_eq!(nurl.param("imp"), Some("1"));
    let lurl = lo
        .notices()
        .into_iter()
        .find(|n| n.kind == NoticeKind::Lurl)
        .unwrap();
    assert_eq!(lurl.param("loss"), Some("102"));
    assert_eq!(lurl.param("mtw"), Some("2.01"));
    assert!(hi.notices().iter().all(|n| n.kind != NoticeKind::Lurl));
    ex.stop().await;
}

#[tokio::test]
async fn a_lone_bid_pays_the_floor_plus_the_increment_and_first_price_pays_the_bid() {
    let only = fixed("lone", 4.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&only])).await;

    let body = ex.auction(banner_request("lone-1", 1.5)).await.json();
    assert_eq!(body["seatbid"][0]["bid"][0]["price"].as_f64(), Some(1.51));

    let mut first_price: serde_json::Value =
        serde_json::from_str(&banner_request("lone-2", 1.5)).unwrap();
    first_price["at"] = 1.into();
    let body = ex.auction(first_price.to_string()).await.json();
    assert_eq!(body["seatbid"][0]["bid"][0]["price"].as_f64(), Some(4.0));

    // Below the floor: nobody wins, and the answer is an empty 204.
    let answer = ex.auction(banner_request("lone-3", 5.0)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    ex.stop().await;
}

#[tokio::test]
async fn no_bids_at_all_is_an_empty_204() {
    let a = MockDsp::builder("nb-a")
        .behavior(Behavior::NoBid204)
        .start()
        .await
        .unwrap();
    let b = MockDsp::builder("nb-b")
        .behavior(Behavior::EmptyObject)
        .start()
        .await
        .unwrap();
    let c = MockDsp::builder("nb-c")
        .behavior(Behavior::Nbr(2))
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(config_for(&[&a, &b, &c])).await;
    let answer = ex.auction(banner_request("nb", 0.0)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    assert_eq!(answer.headers["x-openrtb-version"], "2.6");
    assert_eq!(
        ex.metric("exchange_dsp_no_bids_total", &[("dsp", "nb-c")])
            .await,
        1.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn a_hanging_dsp_does_not_delay_the_answer_past_the_deadline() {
    let hang = MockDsp::builder("hang-h")
        .behavior(Behavior::Hang)
        .start()
        .await
        .unwrap();
    let good = fixed("hang-good", 2.0).start().await.unwrap();
    let mut config = config_for(&[&hang, &good]);
    config.auction.dsp_timeout_ms = 200;
    config.auction.late_grace_ms = 100;
    let ex = TestExchange::start(config).await;
    // Warm the connection pool so connection set-up is not what is measured.
    let _ = ex.auction(banner_request("hang-warm", 0.0)).await;

    let started = Instant::now();
    let answer = ex.auction(banner_request("hang-1", 0.0)).await;
    let took = started.elapsed();
    // The wait: min(200, tmax 200 − reserve 5) − timer slack 2 = 193 ms.
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["seatbid"][0]["seat"], "hang-good");
    assert!(
        took >= Duration::from_millis(185),
        "answered before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(200 + 150),
        "the hanging DSP delayed the answer: {took:?}"
    );
    // The warm-up and the measured auction: two calls, both timed out.
    assert_eq!(
        ex.metric("exchange_dsp_timeouts_total", &[("dsp", "hang-h")])
            .await,
        2.0
    );
    // Past the grace period the hanging calls are given up on and counted as unanswered;
    // none of them counts as a late answer.
    let given_up = eventually(Duration::from_secs(5), || async {
        ex.metric("exchange_dsp_late_unanswered_total", &[("dsp", "hang-h")])
            .await
            == 2.0
    })
    .await;
    assert!(given_up, "the hanging calls were not counted as unanswered");
    assert_eq!(
        ex.metric("exchange_dsp_late_unanswered_total", &[("dsp", "hang-h")])
            .await,
        2.0
    );
    assert_eq!(
        ex.metric("exchange_dsp_late_answers_total", &[("dsp", "hang-h")])
            .await,
        0.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn late_answers_are_counted_not_waited_for() {
    // The slow DSP's wait is the behaviour under test: well past the deadline.
    let slow = fixed("late-slow", 9.0)
        .latency(Latency::Fixed(Duration::from_millis(600)))
        .start()
        .await
        .unwrap();
    let fast = fixed("late-fast", 1.0).start().await.unwrap();
    let mut config = config_for(&[&slow, &fast]);
    config.auction.dsp_timeout_ms = 150;
    let ex = TestExchange::start(config).await;

    let started = Instant::now();
    let answer = ex.auction(banner_request("late-1", 0.0)).await;
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "waited for the late DSP"
    );
    // The slow DSP bid more, but too late: the fast one wins.
    assert_eq!(answer.json()["seatbid"][0]["seat"], "late-fast");

    let counted = eventually(Duration::from_secs(5), || async {
        ex.metric("exchange_dsp_late_answers_total", &[("dsp", "late-slow")])
            .await
            == 1.0
    })
    .await;
    assert!(counted, "the late answer was not counted");
    assert_eq!(
        ex.metric("exchange_dsp_late_answers_total", &[("dsp", "late-fast")])
            .await,
        0.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn broken_dsp_answers_are_rejected_counted_and_harmless() {
    let garbage = MockDsp::builder("bad-garbage")
        .behavior(Behavior::Garbage)
        .start()
        .await
        .unwrap();
    let wrong = MockDsp::builder("bad-wrongid")
        .behavior(Behavior::WrongId)
        .start()
        .await
        .unwrap();
    let error = MockDsp::builder("bad-500")
        .behavior(Behavior::Status(500))
        .start()
        .await
        .unwrap();
    // Loss notices of rejected bids land on this mock's /lurl.
    let sink = MockDsp::builder("bad-sink")
        .behavior(Behavior::NoBid204)
        .start()
        .await
        .unwrap();
    let lurl = format!(
        "{}?loss=${{AUCTION_LOSS}}&bid=${{AUCTION_BID_ID}}&auction=${{AUCTION_ID}}",
        sink.url().replace("/bid", "/lurl")
    );
    let broken_bids = MockDsp::builder("bad-bids")
        .behavior(Behavior::custom(move |req| {
            let id = req["id"].as_str().unwrap_or_default().to_owned();
            let body = serde_json::json!({"id": id, "seatbid": [{"bid": [
                {"id": "a", "impid": "1", "price": -1.0, "adm": "x", "lurl": lurl},
                {"id": "b", "impid": "nope", "price": 50.0, "adm": "x"},
                {"id": "c", "impid": "1", "price": 60.0},
                {"impid": "1", "price": 70.0, "adm": "x"},
                {"id": "e", "impid": "1", "price": 80.0, "adm": "x", "w": "300"}
            ]}]});
            (200, body.to_string().into_bytes())
        }))
        .start()
        .await
        .unwrap();
    let eur = fixed("bad-eur", 30.0)
        .currency("EUR")
        .start()
        .await
        .unwrap();
    let good = fixed("bad-good", 1.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[
        &garbage,
        &wrong,
        &error,
        &broken_bids,
        &eur,
        &good,
    ]))
    .await;

    let answer = ex.auction(banner_request("bad-1", 0.0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["seatbid"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["seatbid"][0]["seat"], "bad-good");

    for (dsp, reason) in [
        ("bad-garbage", "malformed_json"),
        ("bad-wrongid", "wrong_id"),
        ("bad-500", "bad_status"),
        ("bad-eur", "wrong_currency"),
        ("bad-bids", "bad_price"),
        ("bad-bids", "unknown_imp"),
        ("bad-bids", "no_markup"),
        ("bad-bids", "missing_bid_id"),
        ("bad-bids", "malformed_bid"),
    ] {
        let n = ex
            .metric(
                "exchange_bids_rejected_total",
                &[("dsp", dsp), ("reason", reason)],
            )
            .await;
        assert_eq!(n, 1.0, "{dsp} {reason}");
    }
    // The bid rejected for its price hears why: loss code 3, invalid bid response.
    assert!(
        eventually(Duration::from_secs(5), || async {
            sink.stats().lurl_hits == 1
        })
        .await,
        "no loss notice for the rejected bid"
    );
    let notice = sink.notices().into_iter().next().unwrap();
    assert_eq!(notice.param("loss"), Some("3"));
    assert_eq!(notice.param("bid"), Some("a"));
    assert_eq!(notice.param("auction"), Some("bad-1"));
    ex.stop().await;
}

#[tokio::test]
async fn dsps_get_the_publisher_bytes_with_their_own_tmax() {
    let dsp = fixed("fwd", 1.0).start().await.unwrap();
    let mut config = config_for(&[&dsp]);
    config.auction.dsp_timeout_ms = 200;
    let ex = TestExchange::start(config).await;
    let request = r#"{"id":"fwd-1","imp":[{"id":"1","banner":{"w":300,"h":250},"ext":{"bidder":{"x":1}}}],
        "site":{"id":"s","ext":{"amp":0}},"tmax":500,"cur":["EUR"],"unknown_2_7_field":{"a":[1,2]},
        "user":{"ext":{"consent":"abc"}},"ext":{"prebid":{"debug":true}}}"#;
    let answer = ex.auction(request).await;
    assert_eq!(answer.status, StatusCode::OK);

    let received = dsp.received_json();
    let got = received.last().unwrap();
    let tmax = got["tmax"].as_u64().unwrap();
    assert!(
        (1..=200).contains(&tmax),
        "the DSP must get its own remaining time, got {tmax}"
    );
    assert_eq!(got["at"], 2);
    assert_eq!(got["cur"], serde_json::json!(["USD"]));
    let mut sent: serde_json::Value = serde_json::from_str(request).unwrap();
    for owned in ["tmax", "at", "cur"] {
        sent.as_object_mut().unwrap().remove(owned);
    }
    let mut got = got.clone();
    for owned in ["tmax", "at", "cur"] {
        got.as_object_mut().unwrap().remove(owned);
    }
    assert_eq!(
        got, sent,
        "everything but the exchange-owned fields arrives unchanged"
    );
    ex.stop().await;
}

#[tokio::test]
async fn one_dsp_may_win_several_imps_and_each_seat_gets_one_seatbid() {
    let a = fixed("multi-a", 2.0).start().await.unwrap();
    let b = fixed("multi-b", 1.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&a, &b])).await;
    let request = serde_json::json!({
        "id": "multi",
        "imp": [
            {"id": "1", "banner": {"w": 300, "h": 250}},
            {"id": "2", "banner": {"w": 728, "h": 90}},
            {"id": "3", "video": {"mimes": ["video/mp4"]}, "bidfloor": 1.5}
        ]
    });
    let body = ex.auction(request.to_string()).await.json();
    let seatbids = body["seatbid"].as_array().unwrap();
    assert_eq!(seatbids.len(), 1, "{body}");
    assert_eq!(seatbids[0]["seat"], "multi-a");
    let mut imps: Vec<&str> = seatbids[0]["bid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["impid"].as_str().unwrap())
        .collect();
    imps.sort_unstable();
    assert_eq!(imps, ["1", "2", "3"]);
    for bid in seatbids[0]["bid"].as_array().unwrap() {
        let want = if bid["impid"] == "3" { 1.51 } else { 1.01 };
        assert_eq!(bid["price"].as_f64(), Some(want), "{bid}");
    }
    ex.stop().await;
}

#[tokio::test]
async fn request_rules_filter_bids_before_the_auction() {
    let blocked = fixed("rules-blocked", 5.0)
        .adomains(["blocked.example"])
        .start()
        .await
        .unwrap();
    let ok = fixed("rules-ok", 1.0)
        .adomains(["fine.example"])
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(config_for(&[&blocked, &ok])).await;
    let mut request: serde_json::Value =
        serde_json::from_str(&banner_request("rules", 0.0)).unwrap();
    request["badv"] = serde_json::json!(["blocked.example"]);
    let body = ex.auction(request.to_string()).await.json();
    assert_eq!(body["seatbid"][0]["seat"], "rules-ok");
    assert_eq!(body["seatbid"][0]["bid"][0]["price"].as_f64(), Some(0.01));
    assert_eq!(
        ex.metric(
            "exchange_bids_lost_total",
            &[("dsp", "rules-blocked"), ("reason", "advertiser_excluded")]
        )
        .await,
        1.0,
        "the filtered bid is counted as lost, with its reason"
    );
    assert_eq!(
        ex.metric("exchange_bids_lost_total", &[("dsp", "rules-blocked")])
            .await,
        1.0
    );
    assert_eq!(
        ex.metric("exchange_wins_total", &[("dsp", "rules-ok")])
            .await,
        1.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn the_win_notice_is_fired_once_by_the_exchange_or_left_to_the_publisher() {
    // With markup: the exchange fires the nurl and the publisher does not see it.
    let with_adm = fixed("nurl-adm", 2.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&with_adm])).await;
    let body = ex.auction(banner_request("nurl-1", 0.0)).await.json();
    let bid = &body["seatbid"][0]["bid"][0];
    assert!(
        bid.get("nurl").is_none(),
        "the publisher must not fire the win twice: {bid}"
    );
    let burl = bid["burl"].as_str().unwrap();
    assert!(
        burl.starts_with(&format!("http://{}/event/imp?", ex.addr)),
        "the exchange bills the impression: {bid}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            with_adm.stats().nurl_hits == 1
        })
        .await
    );
    ex.stop().await;

    // Without markup: the publisher gets the substituted nurl to fetch the ad from, and the
    // exchange leaves it alone. The nurl points at a witness that records any hit.
    let witness = MockDsp::builder("nurl-witness").start().await.unwrap();
    let markup = format!("http://{}/nurl", witness.addr());
    let nurl_only = MockDsp::builder("nurl-only")
        .behavior(Behavior::custom(move |req| {
            let id = req["id"].as_str().unwrap_or_default().to_owned();
            let body = serde_json::json!({"id": id, "bidid": "resp-9", "seatbid": [{"seat": "s9", "bid": [{
                "id": "b1", "impid": "1", "price": 3.0, "adid": "ad-7",
                "nurl": format!("{markup}?p=${{AUCTION_PRICE}}&a=${{AUCTION_ID}}&b=${{AUCTION_BID_ID}}&i=${{AUCTION_IMP_ID}}&s=${{AUCTION_SEAT_ID}}&ad=${{AUCTION_AD_ID}}&c=${{AUCTION_CURRENCY}}&x=${{AUCTION_UNKNOWN_THING}}"),
                "ext": {"dsp": {"kept": true}}
            }]}]});
            (200, body.to_string().into_bytes())
        }))
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(config_for(&[&nurl_only])).await;
    let body = ex.auction(banner_request("nurl 2&", 1.0)).await.json();
    let bid = &body["seatbid"][0]["bid"][0];
    assert_eq!(
        bid["nurl"],
        format!(
            "http://{}/nurl?p=1.01&a=nurl%202%26&b=resp-9&i=1&s=s9&ad=ad-7&c=USD&x=${{AUCTION_UNKNOWN_THING}}",
            witness.addr()
        )
    );
    assert_eq!(bid["ext"], serde_json::json!({"dsp": {"kept": true}}));
    // Notices are fired before the answer goes out and stopping drains them: had the
    // exchange fired this nurl, the witness would have it by now.
    ex.stop().await;
    assert_eq!(
        witness.stats().nurl_hits,
        0,
        "the exchange fired a nurl the publisher is meant to fetch"
    );
}

#[tokio::test]
async fn loss_notices_can_be_turned_off_per_dsp() {
    let hi = fixed("quiet-hi", 3.0).start().await.unwrap();
    let quiet = fixed("quiet-lo", 1.0).start().await.unwrap();
    let loud = fixed("loud-lo", 1.0).start().await.unwrap();
    let sampled = fixed("sampled-lo", 1.0).start().await.unwrap();
    let mut config = config_for(&[&hi, &quiet, &loud, &sampled]);
    config.dsps[1].loss_notices = false;
    config.dsps[3].loss_notice_sample = 0.0;
    let ex = TestExchange::start(config).await;
    for i in 0..3 {
        ex.auction(banner_request(&format!("quiet-{i}"), 0.0)).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            loud.stats().lurl_hits == 3
        })
        .await
    );
    assert_eq!(quiet.stats().lurl_hits, 0);
    assert_eq!(
        sampled.stats().lurl_hits,
        0,
        "a sample of 0 fires no loss notice"
    );
    ex.stop().await;
}

#[tokio::test]
async fn equal_top_bids_are_broken_fairly() {
    let a = fixed("tie-a", 2.0).start().await.unwrap();
    let b = fixed("tie-b", 2.0).start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&a, &b])).await;
    let mut wins = std::collections::HashMap::new();
    for i in 0..60 {
        let body = ex
            .auction(banner_request(&format!("tie-{i}"), 0.0))
            .await
            .json();
        assert_eq!(
            body["seatbid"][0]["bid"][0]["price"].as_f64(),
            Some(2.0),
            "ties clear at the tied price"
        );
        *wins
            .entry(body["seatbid"][0]["seat"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    // Each wins half the time on average; both winning at least 10 of 60 fails with
    // probability below 1e-5 when the tie-break is fair.
    assert!(wins.get("tie-a").is_some_and(|&n| n >= 10), "{wins:?}");
    assert!(wins.get("tie-b").is_some_and(|&n| n >= 10), "{wins:?}");
    ex.stop().await;
}

#[tokio::test]
async fn a_deal_bid_beats_a_higher_open_market_bid() {
    let open = fixed("pmp-open", 9.0).start().await.unwrap();
    let deal = fixed("pmp-deal", 4.0).deal("deal-1").start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&open, &deal])).await;
    let request = serde_json::json!({
        "id": "pmp",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.5,
                 "pmp": {"private_auction": 0, "deals": [{"id": "deal-1", "bidfloor": 3.0, "at": 3}]}}]
    });
    let body = ex.auction(request.to_string()).await.json();
    assert_eq!(body["seatbid"][0]["seat"], "pmp-deal", "{body}");
    // at = 3 on the deal: it clears at the deal's floor.
    assert_eq!(body["seatbid"][0]["bid"][0]["price"].as_f64(), Some(3.0));
    assert_eq!(body["seatbid"][0]["bid"][0]["dealid"], "deal-1");
    assert_eq!(
        ex.metric(
            "exchange_bids_lost_total",
            &[("dsp", "pmp-open"), ("reason", "lost_to_deal_bid")]
        )
        .await,
        1.0
    );
    assert_eq!(
        ex.metric("exchange_bids_lost_total", &[("dsp", "pmp-open")])
            .await,
        1.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn past_the_in_flight_bound_auctions_are_answered_204_at_once() {
    // The DSP's wait is what keeps the first auction in flight.
    let slow = fixed("busy-slow", 1.0)
        .latency(Latency::Fixed(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&slow]);
    config.server.max_in_flight_auctions = 1;
    config.auction.dsp_timeout_ms = 200;
    let ex = TestExchange::start(config).await;
    let first = ex.auction(banner_request("busy-1", 0.0));
    let second = async {
        // Once the first auction has reached the DSP it holds the only slot.
        let reached = eventually(Duration::from_secs(5), || {
            std::future::ready(slow.stats().requests == 1)
        });
        assert!(reached.await, "the first auction never reached the DSP");
        let started = Instant::now();
        let answer = ex.auction(banner_request("busy-2", 0.0)).await;
        (answer, started.elapsed())
    };
    let (first, (second, took)) = tokio::join!(first, second);
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(second.status, StatusCode::NO_CONTENT);
    assert!(
        took < Duration::from_millis(100),
        "the overloaded answer waited: {took:?}"
    );
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "overloaded")])
            .await,
        1.0
    );
    // Once the first is done, the next one is admitted again.
    assert_eq!(
        ex.auction(banner_request("busy-3", 0.0)).await.status,
        StatusCode::OK
    );
    ex.stop().await;
}

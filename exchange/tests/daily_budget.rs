//! Daily budgets and even pacing through the real server, on a clock the test moves: a
//! constant bidder stops at the daily cap to the micro and starts again after midnight in the
//! campaign's time zone; two nodes sharing the cap never pass it; an even-paced campaign's spend follows the
//! straight line of its day; the admin API shows and changes the daily settings.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use budget::{Clock, ManualClock, Pacing};
use bytes::Bytes;
use common::{banner_request, Answer, TestExchange};
use exchange::config::{CampaignConfig, DspConfig};
use exchange::Config;
use futures::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{MockDsp, MockDspHandle, Price};
use testkit::eventually;
use testkit::redis::RedisServer;

const TOKEN: &str = "test-admin-token-0123456789";
/// Bids are 2.00 CPM over a 1.99 floor, so each impression clears at 2.00 CPM: 2000 micros.
const COST: u64 = 2_000;
/// 2026-12-07T00:00:00Z.
const DEC7_UTC: u64 = 1_796_601_600_000;
const HOUR: u64 = 3_600_000;

async fn bidder(name: &str, cid: &str) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(2.0))
        .cids([cid])
        .start()
        .await
        .unwrap()
}

fn node_config(
    dsp: &MockDspHandle,
    redis: &RedisServer,
    clock: &Clock,
    c: CampaignConfig,
) -> Config {
    let mut config = Config {
        dsps: vec![DspConfig::new(dsp.name(), dsp.url())],
        ..Config::default()
    };
    config.redis.url = Some(redis.url());
    config.budget.sync_interval_ms = 20;
    config.budget.full_sync_ms = 100;
    config.budget.min_lease_micros = 10_000;
    // A test machine busy with builds can take longer than the production 100 ms to seed.
    config.budget.redis_timeout_ms = 2_000;
    config.budget.clock = clock.clone();
    config.admin.token = Some(TOKEN.to_owned());
    config.auction.dsp_timeout_ms = 500;
    // Bursts above 16 auctions; overload shedding has tests of its own.
    config.overload.enabled = false;
    config.campaigns = vec![CampaignConfig {
        dsp: dsp.name().to_owned(),
        ..c
    }];
    config
}

/// Sends `n` auctions at once and returns how many were won.
async fn burst(ex: &TestExchange, tag: &str, n: usize) -> u64 {
    let answers =
        join_all((0..n).map(|i| ex.auction(banner_request(&format!("{tag}-{i}"), 1.99)))).await;
    answers
        .iter()
        .map(|a| {
            assert!(
                matches!(a.status, StatusCode::OK | StatusCode::NO_CONTENT),
                "{}",
                a.status
            );
            u64::from(a.status == StatusCode::OK)
        })
        .sum()
}

async fn admin(ex: &TestExchange, method: &str, path: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", ex.addr))
        .header("authorization", format!("Bearer {TOKEN}"));
    ex.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
}

async fn campaign(ex: &TestExchange, dsp: &str, cid: &str) -> serde_json::Value {
    let answer = admin(ex, "GET", &format!("/admin/campaigns/{dsp}/{cid}"), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()
}

/// Bids on every node until `target` micros were won in all, waiting for lease refills in
/// between; the micros won (stops early, short of `target`, when no node gets a refill).
async fn spend_until(nodes: &[&TestExchange], dsp: &str, cid: &str, tag: &str, target: u64) -> u64 {
    let mut won = 0;
    for round in 0..200 {
        let wins = join_all(
            nodes
                .iter()
                .enumerate()
                .map(|(n, ex)| async move { burst(ex, &format!("{tag}-{round}-{n}"), 20).await }),
        )
        .await;
        won += wins.iter().sum::<u64>() * COST;
        if won >= target {
            break;
        }
        let refilled = eventually(Duration::from_secs(3), || async {
            for ex in nodes {
                if campaign(ex, dsp, cid).await["this_node"]["available_micros"]
                    .as_u64()
                    .is_some_and(|a| a >= COST)
                {
                    return true;
                }
            }
            false
        })
        .await;
        if !refilled {
            break;
        }
    }
    won
}

fn charged(c: &serde_json::Value) -> u64 {
    c["this_node"]["charged_micros"].as_u64().unwrap()
}

async fn at(hand: &ManualClock, ms: u64) {
    hand.set(ms);
}

/// 1.00 in all, 0.10 a day in New York time: 50 impressions a day at 2000 micros.
fn capped_in_new_york() -> CampaignConfig {
    CampaignConfig {
        id: "capped".into(),
        budget: 1.00,
        daily_budget: Some(0.10),
        timezone: Some("America/New_York".into()),
        ..CampaignConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_cap_stops_spend_to_the_micro_and_reopens_after_midnight_in_its_zone() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("d1-dsp", "capped").await;
    // 10:00 in New York on 7 December (UTC-5).
    let (clock, hand) = Clock::manual(DEC7_UTC + 15 * HOUR);
    let c = capped_in_new_york();
    let ex = TestExchange::start(node_config(&dsp, &redis, &clock, c)).await;

    // 0.10 a day is 50 impressions at 2000 micros.
    let won = spend_until(&[&ex], "d1-dsp", "capped", "d1", 100_000).await;
    assert_eq!(won, 100_000, "the day's budget, used to the micro");
    assert_eq!(burst(&ex, "d1-after", 20).await, 0);
    let reported = eventually(Duration::from_secs(5), || async {
        campaign(&ex, "d1-dsp", "capped").await["spent_today_micros"] == 100_000
    })
    .await;
    let state = campaign(&ex, "d1-dsp", "capped").await;
    assert!(reported, "{state}");
    assert_eq!(state["daily_budget_micros"], 100_000);
    assert_eq!(state["daily_budget"].as_f64(), Some(0.1));
    assert_eq!(state["timezone"], "America/New_York");
    assert_eq!(state["pacing"], "asap");
    assert_eq!(state["day"], 20_261_207);
    assert_eq!(state["spent_micros"], 100_000);
    assert_eq!(state["held_micros"], 0);
    assert_eq!(charged(&state), 100_000);

    // 23:59 in New York: still the same day, still nothing.
    at(&hand, DEC7_UTC + 29 * HOUR - 60_000).await;
    assert_eq!(burst(&ex, "d1-late", 20).await, 0);
    // 00:00:01 on 8 December in New York (05:00:01 UTC): a new day and a new 0.10.
    at(&hand, DEC7_UTC + 29 * HOUR + 1_000).await;
    let won = spend_until(&[&ex], "d1-dsp", "capped", "d2", 100_000).await;
    assert_eq!(won, 100_000, "day two, to the micro");
    assert_eq!(burst(&ex, "d2-after", 20).await, 0);
    let reported = eventually(Duration::from_secs(5), || async {
        let c = campaign(&ex, "d1-dsp", "capped").await;
        c["spent_today_micros"] == 100_000 && c["spent_micros"] == 200_000
    })
    .await;
    let state = campaign(&ex, "d1-dsp", "capped").await;
    assert!(reported, "{state}");
    assert_eq!(state["day"], 20_261_208);
    assert_eq!(charged(&state), 200_000);
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_daily_cap_never_pass_it() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("dc-dsp", "capped").await;
    let (clock, hand) = Clock::manual(DEC7_UTC + 15 * HOUR);
    let c = capped_in_new_york();
    let one = TestExchange::start(node_config(&dsp, &redis, &clock, c.clone())).await;
    let two = TestExchange::start(node_config(&dsp, &redis, &clock, c)).await;
    let nodes = [&one, &two];
    // Never one impression over 0.10 a day, however the two nodes share it; what is left
    // unbought is at most a remnant per node, too small for an impression.
    for (day, at_ms) in [
        (20_261_207u64, DEC7_UTC + 15 * HOUR),
        (20_261_208, DEC7_UTC + 29 * HOUR + 1_000),
    ] {
        at(&hand, at_ms).await;
        let won = spend_until(&nodes, "dc-dsp", "capped", &format!("{day}"), 100_000).await;
        assert!(won <= 100_000, "day {day}: {won} over the cap");
        assert!(won > 100_000 - 2 * COST, "day {day}: only {won}");
        assert_eq!(burst(&one, &format!("{day}-1"), 20).await, 0);
        assert_eq!(burst(&two, &format!("{day}-2"), 20).await, 0);
        // The store counts exactly what the nodes charged today.
        let reported = eventually(Duration::from_secs(5), || async {
            let c = campaign(&one, "dc-dsp", "capped").await;
            c["day"] == day && c["spent_today_micros"] == won
        })
        .await;
        let state = campaign(&one, "dc-dsp", "capped").await;
        assert!(reported, "{state}");
        let committed =
            state["spent_today_micros"].as_u64().unwrap() + state["held_micros"].as_u64().unwrap();
        assert!(committed <= 100_000, "{state}");
    }
    one.stop().await;
    two.stop().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_pacing_follows_the_straight_line_of_the_day() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("ep-dsp", "paced").await;
    // One minute into the day: the line is at 694 micros, less than one impression.
    let (clock, hand) = Clock::manual(DEC7_UTC + 60_000);
    let c = CampaignConfig {
        id: "paced".into(),
        budget: 10.00,
        daily_budget: Some(1.00),
        pacing: Pacing::Even,
        ..CampaignConfig::default()
    };
    let ex = TestExchange::start(node_config(&dsp, &redis, &clock, c)).await;
    assert_eq!(burst(&ex, "p0", 20).await, 0);
    let state = campaign(&ex, "ep-dsp", "paced").await;
    assert_eq!(
        (state["pacing"].as_str(), state["timezone"].as_str()),
        (Some("even"), Some("UTC"))
    );

    let daily = 1_000_000u64;
    for (i, t) in [6 * HOUR, 12 * HOUR, 18 * HOUR, 24 * HOUR - 1]
        .into_iter()
        .enumerate()
    {
        at(&hand, DEC7_UTC + t).await;
        let line = daily * t / (24 * HOUR);
        // Demand far above the line: bid until the line is reached (a remnant short).
        spend_until(
            &[&ex],
            "ep-dsp",
            "paced",
            &format!("p{}", i + 1),
            line - 2 * COST,
        )
        .await;
        // More demand changes nothing: the line holds, exactly.
        assert_eq!(burst(&ex, &format!("p{}-more", i + 1), 20).await, 0);
        let spent = charged(&campaign(&ex, "ep-dsp", "paced").await);
        assert!(spent <= line, "at {t} ms: {spent} over the line {line}");
        assert!(
            (line - spent) * 10 <= line,
            "at {t} ms: {spent} more than 10% under the line {line}"
        );
    }
    let reported = eventually(Duration::from_secs(5), || async {
        let c = campaign(&ex, "ep-dsp", "paced").await;
        c["spent_today_micros"] == c["this_node"]["charged_micros"]
    })
    .await;
    assert!(reported);
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sets_and_checks_the_daily_settings() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("da-dsp", "adm").await;
    let (clock, _hand) = Clock::manual(DEC7_UTC + 12 * HOUR);
    let c = CampaignConfig {
        id: "adm".into(),
        budget: 1.00,
        ..CampaignConfig::default()
    };
    let ex = TestExchange::start(node_config(&dsp, &redis, &clock, c)).await;
    let path = "/admin/campaigns/da-dsp/adm";
    let state = campaign(&ex, "da-dsp", "adm").await;
    assert_eq!(state["daily_budget"], serde_json::Value::Null);
    assert_eq!(
        (state["pacing"].as_str(), state["timezone"].as_str()),
        (Some("asap"), Some("UTC"))
    );

    // Every problem at once, naming the first field.
    let bad = admin(
        &ex,
        "PUT",
        path,
        r#"{"daily_budget": -1, "timezone": "Mars/Olympus"}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let body = bad.json();
    assert_eq!(body["field"], "daily_budget", "{body}");
    assert!(body.to_string().contains("Mars/Olympus"), "{body}");
    let bad = admin(&ex, "PUT", path, r#"{"pacing": "fast"}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["field"], "pacing");

    let set = admin(
        &ex,
        "PUT",
        path,
        r#"{"daily_budget": 0.05, "pacing": "even", "timezone": "Europe/Paris"}"#,
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let state = set.json();
    assert_eq!(state["daily_budget_micros"], 50_000);
    assert_eq!(state["pacing"], "even");
    assert_eq!(state["timezone"], "Europe/Paris");
    assert_eq!(state["day"], 20_261_207);

    // Spend some, then a daily budget below today's spend plus what is leased is refused.
    spend_until(&[&ex], "da-dsp", "adm", "a", COST).await;
    let refused = admin(&ex, "PUT", path, r#"{"daily_budget": 0.000001}"#).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    // null removes the cap.
    let removed = admin(&ex, "PUT", path, r#"{"daily_budget": null}"#).await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.json()["daily_budget"], serde_json::Value::Null);
    ex.stop().await;
}

#[test]
fn config_checks_every_daily_key_at_once() {
    let text = r#"
        [[dsp]]
        name = "d"
        url = "http://127.0.0.1:9/bid"
        [[campaign]]
        dsp = "d"
        id = "c1"
        budget = 1.0
        daily_budget = -0.5
        timezone = "Nowhere/Town"
        [[campaign]]
        dsp = "d"
        id = "c2"
        budget = 1.0
        pacing = "even"
    "#;
    let err = Config::from_toml(text)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    for part in [
        "daily_budget must be",
        "\"Nowhere/Town\" is not an IANA",
        "needs a daily_budget",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    let good = Config::from_toml(
        r#"
        [[dsp]]
        name = "d"
        url = "http://127.0.0.1:9/bid"
        [[campaign]]
        dsp = "d"
        id = "c1"
        budget = 1.0
        daily_budget = 0.25
        timezone = "Asia/Tokyo"
        pacing = "even"
    "#,
    )
    .unwrap();
    good.validate().unwrap();
    let seed = &good.budget_config().campaigns[0];
    assert_eq!(
        (
            seed.daily_budget_micros,
            seed.pacing,
            seed.timezone.as_str()
        ),
        (Some(250_000), Pacing::Even, "Asia/Tokyo")
    );
}

//! Campaign budgets through the real server: real Redis, real HTTP, several exchange nodes.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

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

fn node_config(dsp: &MockDspHandle, redis: Option<&RedisServer>, budget: f64) -> Config {
    let mut config = Config {
        dsps: vec![DspConfig::new(dsp.name(), dsp.url())],
        ..Config::default()
    };
    config.redis.url = redis.map(RedisServer::url);
    config.budget.sync_interval_ms = 20;
    config.budget.full_sync_ms = 100;
    config.budget.min_lease_micros = 10_000;
    config.admin.token = Some(TOKEN.to_owned());
    config.auction.dsp_timeout_ms = 500;
    // These tests account for every auction of their bursts (won, or kept out by the budget);
    // overload shedding, which a busy test machine can set off, has tests of its own.
    config.overload.enabled = false;
    config.campaigns = vec![CampaignConfig {
        dsp: dsp.name().to_owned(),
        id: "small".into(),
        budget,
        paused: false,
        ..CampaignConfig::default()
    }];
    config
}

async fn bidder(name: &str) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(2.0))
        .cids(["small"])
        .start()
        .await
        .unwrap()
}

/// Sends `n` auctions at once and returns how many were won.
async fn burst(ex: &TestExchange, tag: String, n: usize) -> u64 {
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

async fn admin(
    ex: &TestExchange,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", ex.addr));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    ex.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
}

/// Waits (up to 5 s) until this node's lease of `dsp`'s campaign can pay for an impression.
async fn lease_refilled(ex: &TestExchange, dsp: &str) -> bool {
    eventually(Duration::from_secs(5), || async {
        // A store that is still coming back answers 503 here: not refilled yet.
        let path = format!("/admin/campaigns/{dsp}/small");
        let answer = admin(ex, "GET", &path, "", Some(TOKEN)).await;
        answer.status == StatusCode::OK
            && answer.json()["this_node"]["available_micros"]
                .as_u64()
                .is_some_and(|a| a >= COST)
    })
    .await
}

async fn campaign(ex: &TestExchange, dsp: &str) -> serde_json::Value {
    let answer = admin(
        ex,
        "GET",
        &format!("/admin/campaigns/{dsp}/small"),
        "",
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_spends_its_whole_budget_and_not_a_micro_more() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("b1-dsp").await;
    // 0.10 in budget: exactly 50 impressions at 2000 micros.
    let ex = TestExchange::start(node_config(&dsp, Some(&redis), 0.10)).await;

    let mut won = 0;
    let mut sent = 0;
    for round in 0..40 {
        won += burst(&ex, format!("b1-{round}"), 20).await;
        sent += 20;
        assert!(won * COST <= 100_000, "overspent: {won} impressions won");
        if won * COST == 100_000 {
            break;
        }
        // The lease ran dry: wait for a sync to refill it.
        assert!(
            lease_refilled(&ex, "b1-dsp").await,
            "no refill with budget left: {}",
            campaign(&ex, "b1-dsp").await
        );
    }
    assert_eq!(
        won * COST,
        100_000,
        "the budget must be used, not stranded: {won} won"
    );
    // Nothing more can be won.
    assert_eq!(burst(&ex, "b1-after".into(), 20).await, 0);
    sent += 20;

    let reported = eventually(Duration::from_secs(5), || async {
        campaign(&ex, "b1-dsp").await["spent_micros"] == 100_000
    })
    .await;
    assert!(
        reported,
        "Redis never saw the spend: {}",
        campaign(&ex, "b1-dsp").await
    );
    let state = campaign(&ex, "b1-dsp").await;
    assert_eq!(state["budget"].as_f64(), Some(0.1));
    assert_eq!(state["this_node"]["charged_micros"], 100_000);
    // Every auction had one bid: it won, or the budget kept it out (its lease could not cover
    // it, or another auction emptied the lease between the check and the charge).
    let dropped = ex
        .metric(
            "budget_bids_dropped_total",
            &[("dsp", "b1-dsp"), ("reason", "insufficient")],
        )
        .await
        + ex.metric(
            "budget_bids_dropped_total",
            &[("dsp", "b1-dsp"), ("reason", "charge_race")],
        )
        .await;
    assert_eq!(dropped as u64 + won, sent);
    assert!(dropped >= 20.0, "the last burst was refused: {dropped}");
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_budget_without_overspending_and_hand_leases_back() {
    let redis = RedisServer::start().unwrap();
    let dsp = bidder("b3-dsp").await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(TestExchange::start(node_config(&dsp, Some(&redis), 0.20)).await);
    }
    let mut won = 0;
    for round in 0..40 {
        let wins = join_all(
            nodes
                .iter()
                .enumerate()
                .map(|(n, ex)| burst(ex, format!("b3-{round}-{n}"), 10)),
        )
        .await;
        won += wins.iter().sum::<u64>();
        assert!(won * COST <= 200_000, "overspent across nodes: {won} won");
        // Go on while some node can buy again once a sync has topped its lease up; what
        // is left when none can is remnants too small for an impression.
        let can_buy = eventually(Duration::from_secs(1), || async {
            let mut available = 0;
            for ex in &nodes {
                available += campaign(ex, "b3-dsp").await["this_node"]["available_micros"]
                    .as_u64()
                    .unwrap_or(0);
            }
            available >= COST
        });
        if won * COST == 200_000 || !can_buy.await {
            break;
        }
    }
    // Three nodes leasing 0.20 between them with 120 tries each must have used most of it.
    assert!(
        won * COST >= 150_000,
        "only {won} impressions won across three nodes"
    );

    let observer = nodes.pop().unwrap();
    for ex in nodes {
        ex.stop().await;
    }
    // The two stopped nodes handed back what they held; only the observer may still hold.
    let state = campaign(&observer, "b3-dsp").await;
    let observer_session = state["this_node"]["session"].as_str().unwrap().to_owned();
    for node in state["nodes"].as_array().unwrap() {
        if node["session"] != observer_session.as_str() {
            assert_eq!(node["held"], 0, "a stopped node kept its lease: {state}");
        }
    }
    observer.stop().await;

    // With every node gone, Redis has exactly what was charged and nothing is held.
    let check = TestExchange::start(node_config(&dsp, Some(&redis), 0.20)).await;
    let state = campaign(&check, "b3-dsp").await;
    assert_eq!(state["spent_micros"].as_u64(), Some(won * COST), "{state}");
    assert_eq!(state["budget_micros"], 200_000);
    check.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_never_causes_overspend_and_no_spend_is_lost() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let dsp = bidder("bk-dsp").await;
    let ex = TestExchange::start(node_config(&dsp, Some(&redis), 1.00)).await;

    let mut won = burst(&ex, "bk-before".into(), 20).await;
    // Redis has seen that spend before it goes away.
    let reported = eventually(Duration::from_secs(5), || async {
        let state = campaign(&ex, "bk-dsp").await;
        state["spent_micros"].as_u64() == Some(won * COST)
            && state["this_node"]["unreported_micros"] == 0
    })
    .await;
    assert!(
        reported,
        "never reported: {}",
        campaign(&ex, "bk-dsp").await
    );
    redis.kill();
    // While Redis is away the node spends at most what it holds, then stops: nothing can
    // refill the lease, so the first burst that wins nothing shows it is spent.
    let mut during = 0;
    for round in 0..100 {
        let wins = burst(&ex, format!("bk-during-{round}"), 20).await;
        during += wins;
        if wins == 0 {
            break;
        }
    }
    assert!(during * COST <= 1_000_000);
    won += during;
    let stalled = burst(&ex, "bk-stalled".into(), 20).await;
    assert_eq!(
        stalled, 0,
        "the node kept winning past its lease with Redis down"
    );

    redis.restart().unwrap();
    // Back: the node reports what it spent while Redis was away and bids again.
    assert!(
        lease_refilled(&ex, "bk-dsp").await,
        "the lease was never refilled after Redis came back"
    );
    let more = burst(&ex, "bk-after".into(), 5).await;
    assert!(
        more > 0,
        "the node never resumed bidding after Redis came back"
    );
    won += more;
    assert!(won * COST <= 1_000_000);
    let charged = campaign(&ex, "bk-dsp").await["this_node"]["charged_micros"]
        .as_u64()
        .unwrap();
    assert_eq!(charged, won * COST);
    ex.stop().await;

    let check = TestExchange::start(node_config(&dsp, Some(&redis), 1.00)).await;
    let state = campaign(&check, "bk-dsp").await;
    assert_eq!(
        state["spent_micros"].as_u64(),
        Some(won * COST),
        "spend lost: {state}"
    );
    check.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sets_reads_and_pauses_budgets_behind_its_token() {
    let dsp = bidder("adm-dsp").await;
    let ex = TestExchange::start(node_config(&dsp, None, 0.0)).await;
    let path = "/admin/campaigns/adm-dsp/small";

    let missing = admin(&ex, "GET", path, "", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.headers.contains_key("www-authenticate"));
    assert!(missing.json()["error"].as_str().unwrap().contains("Bearer"));
    let wrong = admin(&ex, "GET", path, "", Some("not-the-token-at-all")).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);

    for (body, field) in [
        ("{", ""),
        (r#"{"budget": "ten"}"#, "budget"),
        (r#"{"budget": 5, "colour": "red"}"#, "colour"),
        (r#"{"budget": -5}"#, "budget"),
        ("{}", ""),
    ] {
        let answer = admin(&ex, "PUT", path, body, Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let json = answer.json();
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {json}"
        );
        assert_eq!(json["field"], field, "{body}: {json}");
    }

    // A zero budget wins nothing; raising it lets the campaign buy.
    assert_eq!(burst(&ex, "adm-0".into(), 5).await, 0);
    let set = admin(&ex, "PUT", path, r#"{"budget": 50.0}"#, Some(TOKEN)).await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(set.json()["budget"].as_f64(), Some(50.0));
    let bought = eventually(Duration::from_secs(5), || async {
        burst(&ex, "adm-1".into(), 5).await > 0
    })
    .await;
    assert!(bought, "the raised budget never reached the node");

    let paused = admin(&ex, "PUT", path, r#"{"paused": true}"#, Some(TOKEN)).await;
    assert_eq!(paused.json()["paused"], true);
    let stopped = eventually(Duration::from_secs(5), || async {
        burst(&ex, "adm-2".into(), 5).await == 0
    })
    .await;
    assert!(stopped, "a paused campaign kept buying");

    let state = campaign(&ex, "adm-dsp").await;
    assert_eq!(state["budget_micros"], 50_000_000);
    let reported = eventually(Duration::from_secs(5), || async {
        campaign(&ex, "adm-dsp").await["spent"].as_f64().unwrap() > 0.0
    })
    .await;
    assert!(reported, "the spend never reached the store");
    let list = admin(&ex, "GET", "/admin/campaigns", "", Some(TOKEN))
        .await
        .json();
    assert!(list["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["cid"] == "small"));
    assert_eq!(
        admin(&ex, "GET", "/admin/campaigns/adm-dsp/nope", "", Some(TOKEN))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    ex.stop().await;

    // No token configured: the admin API is off altogether.
    let mut config = node_config(&dsp, None, 1.0);
    config.admin.token = None;
    let off = TestExchange::start(config).await;
    let answer = admin(&off, "GET", path, "", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].as_str().unwrap().contains("off"));
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_campaigns_follow_the_configured_policy() {
    let stranger = MockDsp::builder("pol-dsp")
        .price(Price::Fixed(2.0))
        .cids(["who"])
        .start()
        .await
        .unwrap();
    let mut config = node_config(&stranger, None, 1.0);
    config.budget.unknown_campaign = budget::UnknownPolicy::Allow;
    let allow = TestExchange::start(config.clone()).await;
    assert_eq!(
        burst(&allow, "pol-a".into(), 3).await,
        3,
        "allow: unknown campaigns buy unbudgeted"
    );
    allow.stop().await;

    config.budget.unknown_campaign = budget::UnknownPolicy::Reject;
    let reject = TestExchange::start(config).await;
    assert_eq!(
        burst(&reject, "pol-r".into(), 3).await,
        0,
        "reject: unknown campaigns do not buy"
    );
    assert_eq!(
        reject
            .metric(
                "budget_bids_dropped_total",
                &[("dsp", "pol-dsp"), ("reason", "unknown_campaign")]
            )
            .await,
        3.0
    );
    reject.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wins_never_rendered_are_credited_back_once_their_window_has_passed() {
    let redis = RedisServer::start().unwrap();
    let dsp = MockDsp::builder("rec-dsp")
        .price(Price::Fixed(2.0))
        .cids(["small"])
        .start()
        .await
        .unwrap();
    let short = |mut config: Config| {
        // Everything in hundreds of milliseconds instead of hours.
        config.tracking.secret = Some("reconcile-secret-0123456789".into());
        config.tracking.window_ms = 300;
        config.tracking.max_skew_ms = 50;
        config.tracking.replay_horizon_ms = 100;
        config.budget.settle_after_ms = 500;
        config.budget.reconcile_bucket_ms = 100;
        config.budget.reconcile_interval_ms = 50;
        config
    };
    let a = TestExchange::start(short(node_config(&dsp, Some(&redis), 1.0))).await;
    let b = TestExchange::start(short(node_config(&dsp, Some(&redis), 1.0))).await;

    // Four wins on node A; the publisher renders one of them, and its pixel lands on node B.
    let mut burls = Vec::new();
    for i in 0..4 {
        let answer = a.auction(banner_request(&format!("rec-{i}"), 1.99)).await;
        assert_eq!(answer.status, StatusCode::OK);
        burls.push(
            answer.json()["seatbid"][0]["bid"][0]["burl"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let rendered = &burls[0][burls[0].find("/event/").unwrap()..];
    assert_eq!(b.get(rendered).await.status, StatusCode::NO_CONTENT);

    // Once the window has passed, the three unrendered wins are credited back, once.
    let settled = eventually(Duration::from_secs(10), || async {
        campaign(&a, "rec-dsp").await["reconciliation"]["credited"] == 3 * COST
    })
    .await;
    let state = campaign(&a, "rec-dsp").await;
    assert!(settled, "never credited: {state}");
    let rec = &state["reconciliation"];
    assert_eq!(rec["charged"], 4 * COST, "{rec}");
    assert_eq!(rec["billed"], COST, "{rec}");
    assert_eq!(rec["billed_beyond_charged"], 0, "{rec}");
    // Only the rendered impression stays spent.
    let spent = eventually(Duration::from_secs(5), || async {
        campaign(&a, "rec-dsp").await["spent_micros"] == COST
    })
    .await;
    assert!(
        spent,
        "spent after the credit: {}",
        campaign(&a, "rec-dsp").await
    );
    // And it is not credited again later: once every count has reached the store and no
    // bucket is left open, no later round has anything to settle.
    let closed = eventually(Duration::from_secs(5), || async {
        let mut done = true;
        for node in [&a, &b] {
            let rec = &campaign(node, "rec-dsp").await["reconciliation"];
            done &= rec["open_buckets"] == 0
                && rec["unreported_charged"] == 0
                && rec["unreported_billed"] == 0;
        }
        done
    })
    .await;
    let rec = &campaign(&b, "rec-dsp").await["reconciliation"];
    assert!(closed, "buckets left open: {rec}");
    assert_eq!(rec["credited"], 3 * COST, "{rec}");
    a.stop().await;
    b.stop().await;
}

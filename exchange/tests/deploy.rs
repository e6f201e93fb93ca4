//! The deploy files (`deploy/grafana/exchange.json`, `deploy/prometheus/alerts.yml`) name only
//! metrics a real exchange exports.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use budget::UnknownPolicy;
use common::{banner_request, TestExchange};
use exchange::config::{CampaignConfig, DspConfig};
use exchange::Config;
use http::StatusCode;
use mockdsp::{MockDsp, Price};
use testkit::eventually;
use testkit::redis::RedisServer;

const PREFIXES: [&str; 3] = ["exchange_", "budget_", "impressions_"];
/// The series a histogram renders besides its family name.
const SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every identifier starting with one of [`PREFIXES`], a histogram's series suffix removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    identifiers(text)
        .iter()
        .map(|name| {
            SUFFIXES
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The histograms whose `_bucket` series a file reads (`histogram_quantile`).
fn bucket_names(text: &str) -> BTreeSet<String> {
    identifiers(text)
        .iter()
        .filter_map(|name| name.strip_suffix("_bucket"))
        .map(str::to_owned)
        .collect()
}

/// Every identifier starting with one of [`PREFIXES`], as written.
fn identifiers(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (start, _) in text.char_indices() {
        let rest = &text[start..];
        let after_ident = text[..start].chars().next_back().is_some_and(ident);
        if after_ident || !PREFIXES.iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        names.insert(rest[..end].to_owned());
    }
    names
}

/// The metric family names of a Prometheus text exposition: `# TYPE` lines and sample names.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(typed) => typed.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect()
}

/// An exchange with Redis, budgets, tracking and notices on, after one won auction (with a
/// bid dropped for budget reasons), its impression billed, and a budget sync failed (Redis killed): the series created on first use
/// exist by then.
async fn exposition() -> String {
    let mut redis = RedisServer::start().unwrap();
    let dsp = MockDsp::builder("deploy-dsp")
        .price(Price::Fixed(2.0))
        .cids(["c1"])
        .notices(true)
        .start()
        .await
        .unwrap();
    // Bids without a campaign, refused by the `reject` policy: `budget_bids_dropped_total`
    // exists once a bid was dropped.
    let no_cid = MockDsp::builder("deploy-no-cid")
        .price(Price::Fixed(1.5))
        .cids(Vec::<String>::new())
        .start()
        .await
        .unwrap();
    let mut config = Config {
        dsps: vec![
            DspConfig::new(dsp.name(), dsp.url()),
            DspConfig::new(no_cid.name(), no_cid.url()),
        ],
        ..Config::default()
    };
    config.auction.dsp_timeout_ms = 500;
    config.redis.url = Some(redis.url());
    config.tracking.secret = Some("tracking-secret-for-tests-0123456789".to_owned());
    config.budget.sync_interval_ms = 20;
    config.budget.full_sync_ms = 100;
    config.budget.unknown_campaign = UnknownPolicy::Reject;
    config.campaigns = vec![CampaignConfig {
        dsp: dsp.name().to_owned(),
        id: "c1".into(),
        budget: 100.0,
        paused: false,
        ..CampaignConfig::default()
    }];
    let ex = TestExchange::start(config).await;

    let answer = ex.auction(banner_request("deploy-1", 1.0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let burl = answer.json()["seatbid"][0]["bid"][0]["burl"]
        .as_str()
        .expect("a winning bid with a burl")
        .to_owned();
    let hit = ex.get(&burl[burl.find("/event/").unwrap()..]).await;
    assert!(hit.status.is_success(), "{}", hit.status);
    assert_eq!(
        ex.metric(
            "budget_bids_dropped_total",
            &[("dsp", "deploy-no-cid"), ("reason", "no_cid")]
        )
        .await,
        1.0
    );
    let spent = eventually(Duration::from_secs(10), || async {
        ex.metric("budget_spend_micros_total", &[("dsp", "deploy-dsp")])
            .await
            > 0.0
    })
    .await;
    assert!(spent, "the win's spend synced within 10 s");

    redis.kill();
    let failed = eventually(Duration::from_secs(10), || async {
        ex.metric("budget_sync_failures_total", &[]).await > 0.0
    })
    .await;
    assert!(
        failed,
        "a budget sync failed within 10 s of Redis going away"
    );

    let text = String::from_utf8(ex.get("/metrics").await.body.to_vec()).unwrap();
    ex.stop().await;
    text
}

fn missing(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.difference(exported).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let dashboard = deploy_file("grafana/exchange.json");
    let alerts = deploy_file("prometheus/alerts.yml");

    let model: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard parses");
    let panels = model["panels"].as_array().expect("a panels list");
    assert_eq!(panels.len(), 16);
    assert!(panels
        .iter()
        .all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty())));
    assert_eq!(model["__inputs"][0]["name"], "DS_PROMETHEUS");

    // No YAML crate in the workspace: check the shape by its lines, and every rule's
    // expression by the same scan as the whole file.
    assert_eq!(
        alerts.lines().find(|l| !l.starts_with('#')),
        Some("groups:"),
        "alerts.yml starts with `groups:`"
    );
    let rules = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(rules, 9);
    assert_eq!(alerts.matches("\n        expr:").count(), rules);

    let text = exposition().await;
    let exported = families(&text);
    let dashboard_names = metric_names(&dashboard);
    let alert_names = metric_names(&alerts);
    assert!(dashboard_names.len() >= 20, "{dashboard_names:?}");
    assert!(alert_names.len() >= 7, "{alert_names:?}");
    assert_eq!(
        missing(&dashboard_names, &exported),
        Vec::<String>::new(),
        "metrics the dashboard uses that the exchange does not export"
    );
    assert_eq!(
        missing(&alert_names, &exported),
        Vec::<String>::new(),
        "metrics the alerting rules use that the exchange does not export"
    );
    // The exporter renders a histogram as a summary unless it was given buckets: quantiles
    // over `_bucket` series need real buckets.
    let buckets = bucket_names(&dashboard);
    assert_eq!(
        buckets.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "exchange_auction_duration_seconds",
            "exchange_dsp_duration_seconds"
        ]
    );
    let not_histograms: Vec<&String> = buckets
        .iter()
        .filter(|name| !text.contains(&format!("# TYPE {name} histogram\n")))
        .collect();
    assert_eq!(
        not_histograms,
        Vec::<&String>::new(),
        "read as histograms, not exported as such"
    );
}

#[test]
fn the_scan_finds_names_and_strips_histogram_series() {
    let names = metric_names(
        r#"rate(exchange_a_seconds_bucket{x="budget_no"}[5m]) / sum(budget_b) xexchange_c impressions_d_count"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "budget_b",
            "budget_no",
            "exchange_a_seconds",
            "impressions_d"
        ]
    );
}

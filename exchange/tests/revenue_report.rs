//! The revenue report over a fleet: two nodes with their own event logs serve auctions for two
//! publishers, every impression is fired at both nodes, and `exchange report --by publisher`
//! over both logs counts each impression once with its exact gross, net and margin.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{config_for, TestExchange};
use exchange::Config;
use http::StatusCode;
use mockdsp::{MockDsp, MockDspHandle, Price};

const SECRET: &str = "revenue-report-secret-0123456789";

/// A directory of this test's own, so the event logs outlive the nodes that wrote them.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(dsp: &MockDspHandle, events: &Path) -> Config {
    let mut config = config_for(&[dsp]);
    // The same key on every node: a URL signed by one verifies on the other. No shared Redis:
    // each node dedups in its own memory, so an impression fired at both is billed by both,
    // and only the report's dedup across files keeps it from counting twice.
    config.tracking.secret = Some(SECRET.to_owned());
    config.events.file = Some(events.to_owned());
    // The site publisher pays the exchange's default margin, the app publisher its own.
    config.auction.default_margin = 0.10;
    let mut app = exchange::config::PublisherConfig::new("pub-app", "Game Studio");
    app.margin = Some(0.20);
    config.publishers = vec![app];
    config
}

/// A one-imp banner request from publisher `publisher`, on a site or in an app.
fn request(id: &str, publisher: &str, app: bool, floor: f64) -> String {
    let mut req = serde_json::json!({
        "id": id,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": floor}],
        "device": {"geo": {"country": if app { "USA" } else { "DEU" }}},
        "tmax": 200,
    });
    if app {
        req["app"] = serde_json::json!({
            "id": "app-1", "bundle": "com.example.game", "publisher": {"id": publisher}
        });
    } else {
        req["site"] = serde_json::json!({
            "id": "site-1", "domain": "news.example", "publisher": {"id": publisher}
        });
    }
    req.to_string()
}

/// Runs an auction and returns the path and query of its impression URL.
async fn sell(ex: &TestExchange, id: &str, publisher: &str, app: bool, floor: f64) -> String {
    let answer = ex.auction(request(id, publisher, app, floor)).await;
    assert_eq!(answer.status, StatusCode::OK, "auction {id}");
    let body = answer.json();
    let burl = body["seatbid"][0]["bid"][0]["burl"]
        .as_str()
        .expect("a winning bid")
        .to_owned();
    burl[burl.find("/event/imp").unwrap()..].to_owned()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_by_publisher_over_two_nodes_counts_each_impression_once() {
    let dir = Dir(std::env::temp_dir().join(format!(
        "exchange-revenue-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (log_a, log_b) = (dir.0.join("node-a.jsonl"), dir.0.join("node-b.jsonl"));
    let dsp = MockDsp::builder("rev-dsp")
        .price(Price::Fixed(2.0))
        .cids(["camp-1"])
        .start()
        .await
        .unwrap();
    let a = TestExchange::start(node(&dsp, &log_a)).await;
    let b = TestExchange::start(node(&dsp, &log_b)).await;

    // A lone bid clears at the floor plus the increment (0.01): 1.01 for the site publisher,
    // 1.51 for the app publisher. Each node sells twice to each publisher.
    let mut urls = Vec::new();
    for (ex, node) in [(&a, "a"), (&b, "b")] {
        for n in 0..2 {
            urls.push(sell(ex, &format!("{node}-site-{n}"), "pub-site", false, 1.0).await);
            urls.push(sell(ex, &format!("{node}-app-{n}"), "pub-app", true, 1.5).await);
        }
    }
    // Every impression fired at both nodes (each bills it once: they share no dedup store),
    // and once more at the first, which it dedups.
    for url in &urls {
        assert_eq!(a.get(url).await.status, StatusCode::NO_CONTENT);
        assert_eq!(b.get(url).await.status, StatusCode::NO_CONTENT);
        assert_eq!(a.get(url).await.status, StatusCode::NO_CONTENT);
    }
    a.stop().await;
    b.stop().await;

    // Each node's log: 8 billed impressions with the sale's fields and the split.
    for log in [&log_a, &log_b] {
        let events = lines(log);
        let billed: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["type"] == "impression")
            .collect();
        assert_eq!(billed.len(), 8, "{}", log.display());
        let site = billed
            .iter()
            .find(|e| e["publisher"] == "pub-site")
            .unwrap();
        assert_eq!(site["domain"], "news.example");
        assert!(site.get("bundle").is_none(), "{site}");
        assert_eq!(site["country"], "DEU");
        assert_eq!(site["media_type"], "banner");
        assert_eq!(site["price_micros"], 1_010_000);
        // 10%: the publisher is told 0.909 of the 1.01 the DSP pays.
        assert_eq!(site["net_price_micros"], 909_000);
        assert_eq!(
            (
                &site["gross_micros"],
                &site["net_micros"],
                &site["margin_micros"]
            ),
            (
                &serde_json::json!(1010),
                &serde_json::json!(909),
                &serde_json::json!(101)
            )
        );
        let app = billed.iter().find(|e| e["publisher"] == "pub-app").unwrap();
        assert_eq!(app["bundle"], "com.example.game");
        assert!(app.get("domain").is_none(), "{app}");
        assert_eq!(app["country"], "USA");
        assert_eq!(app["gross_micros"], 1510);
        // The publisher's own 20%: net floor(1 208 000 / 1000), the rest the exchange's.
        assert_eq!(app["net_micros"], 1208);
        assert_eq!(app["margin_micros"], 302);
        // Wins carry the sale too, so a report can count per publisher without billing data.
        let win = events
            .iter()
            .find(|e| e["type"] == "win" && e["publisher"] == "pub-app")
            .unwrap();
        assert_eq!(win["bundle"], "com.example.game");
        assert_eq!(win["media_type"], "banner");
        assert_eq!(win["net_price_micros"], 1_208_000);
    }
    assert_eq!(
        lines(&log_a)
            .iter()
            .filter(|e| e["type"] == "duplicate_impression")
            .count(),
        8
    );

    // The report function over both logs.
    let report =
        impressions::Report::from_files(&[&log_a, &log_b], &[impressions::Dimension::Publisher])
            .unwrap();
    assert_eq!(report.impressions, 8);
    assert_eq!(report.repeated_lines_ignored, 8, "node b's billing of each");
    assert_eq!(report.spend_micros["USD"], 4 * 1010 + 4 * 1510);
    let rows: Vec<(&str, &str, u64, u64, u64, u64)> = report
        .rows
        .iter()
        .map(|r| {
            let t = &r.totals;
            (
                r.key["publisher"].as_str(),
                r.currency.as_str(),
                t.impressions,
                t.spend_micros,
                t.payout_micros,
                t.margin_micros,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("pub-app", "USD", 4, 6040, 4832, 1208),
            ("pub-site", "USD", 4, 4040, 3636, 404),
        ]
    );

    // The binary, as an operator runs it: JSON for scripts, a table for people.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "report",
            "--events",
            log_a.to_str().unwrap(),
            "--events",
            log_b.to_str().unwrap(),
            "--by",
            "publisher",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_exchange"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(json["files"], 2);
    assert_eq!(json["impressions"], 8);
    assert_eq!(json["by"], serde_json::json!(["publisher"]));
    let row = &json["rows"][1];
    assert_eq!(row["publisher"], "pub-site");
    assert_eq!(row["impressions"], 4);
    assert_eq!(row["spend_micros"], 4040);
    assert_eq!(row["payout_micros"], 3636);
    assert_eq!(row["margin_micros"], 404);
    assert_eq!(row["ecpm_micros"], 1_010_000);
    let table = run(&[]);
    let line = table
        .lines()
        .find(|l| l.starts_with("pub-app"))
        .unwrap_or_else(|| panic!("no pub-app row in\n{table}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        [
            "pub-app", "USD", "4", "0", "0.00%", "0.006040", "0.004832", "0.001208", "1.510000",
            "1.208000"
        ]
    );
}

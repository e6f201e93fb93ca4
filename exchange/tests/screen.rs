//! Fraud screening through the real server: a screened bid request is answered 204 at once,
//! no DSP is called, and `exchange_screened_total{reason}` counts it; a clean request still
//! reaches the DSP and wins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{config_for, TestExchange};
use exchange::Config;
use mockdsp::{MockDsp, MockDspHandle, Price};
use serde_json::{json, Value};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A directory with one list of each kind.
struct Lists {
    dir: PathBuf,
}

impl Lists {
    fn write() -> Lists {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "screen-lists-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("datacentres.txt"),
            "# data centres\n198.51.100.0/24\n2001:db8:bad::/48 # a v6 hoster\n",
        )
        .unwrap();
        std::fs::write(dir.join("domains.txt"), "# MFA sites\nblocked.example\n").unwrap();
        std::fs::write(dir.join("apps.txt"), "com.blocked.app\n").unwrap();
        Lists { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A config for `dsp` with every list on.
    fn config(&self, dsp: &MockDspHandle) -> Config {
        let mut config = config_for(&[dsp]);
        config.fraud.ip_blocklist_files = vec![self.file("datacentres.txt")];
        config.fraud.domain_blocklist_files = vec![self.file("domains.txt")];
        config.fraud.app_blocklist_files = vec![self.file("apps.txt")];
        config
    }
}

impl Drop for Lists {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bid requests a mock received since this was taken (its counters never reset; warm-up
/// calls are not `POST /bid` and not counted).
struct Calls<'a> {
    dsp: &'a MockDspHandle,
    before: u64,
}

impl<'a> Calls<'a> {
    fn from(dsp: &'a MockDspHandle) -> Self {
        Calls {
            dsp,
            before: dsp.stats().requests,
        }
    }

    fn since(&self) -> u64 {
        self.dsp.stats().requests - self.before
    }
}

async fn bidder() -> MockDspHandle {
    MockDsp::builder("screen-dsp")
        .price(Price::Fixed(2.0))
        .start()
        .await
        .unwrap()
}

/// A one-imp banner request from a browser on `news.example`; `edit` changes it.
fn request(id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut req = json!({
        "id": id,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}],
        "site": {"id": "s1", "domain": "news.example", "page": "https://news.example/story"},
        "device": {"ip": "192.0.2.10", "ua": CHROME, "ifa": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
        "tmax": 200
    });
    edit(&mut req);
    req.to_string()
}

/// Sends `body` to a fresh exchange running `config` and checks it is screened for `reason`
/// exactly: 204, no DSP call, the one screen counted under that reason and no other. Then a
/// clean request still reaches the DSP and wins.
async fn check(case: &str, config: Config, dsp: &MockDspHandle, body: String, reason: &str) {
    let calls = Calls::from(dsp);
    let ex = TestExchange::start(config).await;
    let answer = ex.auction(body).await;
    assert_eq!(answer.status, 204, "{case}: screened requests get 204");
    assert_eq!(calls.since(), 0, "{case}: no DSP was called");
    assert_eq!(
        ex.metric("exchange_screened_total", &[("reason", reason)])
            .await,
        1.0,
        "{case}"
    );
    assert_eq!(
        ex.metric("exchange_screened_total", &[]).await,
        1.0,
        "{case}"
    );
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "screened")])
            .await,
        1.0,
        "{case}"
    );
    let clean = ex.auction(request(&format!("{case}-clean"), |_| {})).await;
    assert_eq!(clean.status, 200, "{case}: a clean request still wins");
    assert_eq!(calls.since(), 1, "{case}");
    assert_eq!(
        ex.metric("exchange_screened_total", &[]).await,
        1.0,
        "{case}"
    );
    ex.stop().await;
}

#[tokio::test]
async fn each_rule_screens_its_requests_before_any_dsp_is_called() {
    let lists = Lists::write();
    let dsp = bidder().await;
    let on = lists.config(&dsp);
    let strict = {
        let mut c = lists.config(&dsp);
        c.fraud.require_ip = true;
        c.fraud.require_ua = true;
        c
    };
    type Edit = fn(&mut Value);
    let cases: [(&str, &Config, Edit, &str); 12] = [
        (
            "ipv4 in a blocked range",
            &on,
            |r| r["device"]["ip"] = json!("198.51.100.77"),
            "ip_blocklist",
        ),
        (
            "ipv4 range start",
            &on,
            |r| r["device"]["ip"] = json!("198.51.100.0"),
            "ip_blocklist",
        ),
        (
            "ipv6 in a blocked range",
            &on,
            |r| {
                r["device"].as_object_mut().unwrap().remove("ip");
                r["device"]["ipv6"] = json!("2001:db8:bad:ffff::1");
            },
            "ip_blocklist",
        ),
        (
            "googlebot",
            &on,
            |r| r["device"]["ua"] = json!(GOOGLEBOT),
            "bot_ua",
        ),
        (
            "curl",
            &on,
            |r| r["device"]["ua"] = json!("curl/8.5.0"),
            "bot_ua",
        ),
        (
            "headless chrome",
            &on,
            |r| r["device"]["ua"] = json!(CHROME.replace("Chrome/", "HeadlessChrome/")),
            "bot_ua",
        ),
        (
            "listed domain",
            &on,
            |r| r["site"]["domain"] = json!("blocked.example"),
            "domain_blocklist",
        ),
        (
            "subdomain of a listed domain",
            &on,
            |r| r["site"]["domain"] = json!("WWW.Blocked.Example"),
            "domain_blocklist",
        ),
        (
            "page host under a listed domain",
            &on,
            |r| r["site"]["page"] = json!("https://ads.blocked.example:8443/x?y=1"),
            "domain_blocklist",
        ),
        (
            "listed app bundle",
            &on,
            |r| {
                let obj = r.as_object_mut().unwrap();
                obj.remove("site");
                obj.insert(
                    "app".into(),
                    json!({"id": "a1", "bundle": "com.blocked.app"}),
                );
            },
            "app_blocklist",
        ),
        (
            "no ip when required",
            &strict,
            |r| {
                r["device"].as_object_mut().unwrap().remove("ip");
            },
            "missing_ip",
        ),
        (
            "no ua when required",
            &strict,
            |r| {
                r["device"].as_object_mut().unwrap().remove("ua");
            },
            "missing_ua",
        ),
    ];
    for (case, config, edit, reason) in cases {
        check(case, config.clone(), &dsp, request(case, edit), reason).await;
    }
}

#[tokio::test]
async fn what_the_rules_do_not_cover_reaches_the_dsp() {
    let lists = Lists::write();
    let dsp = bidder().await;
    let mut config = lists.config(&dsp);
    let calls = Calls::from(&dsp);
    let ex = TestExchange::start(config.clone()).await;
    type Edit = fn(&mut Value);
    let open: [Edit; 5] = [
        |r| r["device"]["ip"] = json!("198.51.101.0"),
        |r| r["site"]["domain"] = json!("notblocked.example"),
        // Missing IP and UA are fine unless required.
        |r| {
            r.as_object_mut().unwrap().remove("device");
        },
        // DOOH has no browser: never screened for a missing one.
        |r| {
            let obj = r.as_object_mut().unwrap();
            obj.remove("site");
            obj.remove("device");
            obj.insert("dooh".into(), json!({"id": "d1"}));
        },
        |r| r["device"]["ifa"] = json!("00000000-0000-0000-0000-000000000000"),
    ];
    for (i, edit) in open.into_iter().enumerate() {
        let answer = ex.auction(request(&format!("open-{i}"), edit)).await;
        assert_eq!(answer.status, 200, "case {i}");
    }
    assert_eq!(calls.since(), 5);
    assert_eq!(ex.metric("exchange_screened_total", &[]).await, 0.0);
    ex.stop().await;

    // With bot_user_agents = false a bot's request is auctioned; strict DOOH still passes.
    let calls = Calls::from(&dsp);
    config.fraud.bot_user_agents = false;
    config.fraud.require_ip = true;
    config.fraud.require_ua = true;
    let ex = TestExchange::start(config).await;
    let bot = ex
        .auction(request("bot-ok", |r| r["device"]["ua"] = json!(GOOGLEBOT)))
        .await;
    assert_eq!(bot.status, 200);
    let dooh = ex
        .auction(request("dooh-ok", |r| {
            let obj = r.as_object_mut().unwrap();
            obj.remove("site");
            obj.remove("device");
            obj.insert("dooh".into(), json!({"id": "d1"}));
        }))
        .await;
    assert_eq!(dooh.status, 200);
    assert_eq!(calls.since(), 2);
    assert_eq!(ex.metric("exchange_screened_total", &[]).await, 0.0);
    ex.stop().await;
}

#[tokio::test]
async fn the_request_over_the_per_second_rate_of_an_ip_or_device_is_screened() {
    let dsp = bidder().await;
    type Edit = fn(&mut Value);
    // A limit of one per second: the second request within the second is over it, however
    // slow the machine (a GCRA admits N at once, then one per 1/N s).
    let mut by_ip = config_for(&[&dsp]);
    by_ip.fraud.max_requests_per_ip = Some(1);
    let mut by_device = config_for(&[&dsp]);
    by_device.fraud.max_requests_per_device = Some(1);
    let cases: [(&str, Config, Edit, &str); 2] = [
        (
            "ip",
            by_ip,
            |r| r["device"]["ip"] = json!("192.0.2.11"),
            "ip_rate",
        ),
        (
            "device",
            by_device,
            |r| r["device"]["ifa"] = json!("0f8fad5b-d9cb-469f-a165-70867728950e"),
            "device_rate",
        ),
    ];
    for (case, config, other, reason) in cases {
        let calls = Calls::from(&dsp);
        let ex = TestExchange::start(config).await;
        let first = ex.auction(request(&format!("{case}-1"), |_| {})).await;
        assert_eq!(first.status, 200, "{case}");
        let second = ex.auction(request(&format!("{case}-2"), |_| {})).await;
        assert_eq!(
            second.status, 204,
            "{case}: the second within a second is screened"
        );
        assert_eq!(calls.since(), 1, "{case}");
        assert_eq!(
            ex.metric("exchange_screened_total", &[("reason", reason)])
                .await,
            1.0,
            "{case}"
        );
        assert_eq!(
            ex.metric("exchange_screened_total", &[]).await,
            1.0,
            "{case}"
        );
        let another = ex.auction(request(&format!("{case}-3"), other)).await;
        assert_eq!(
            another.status, 200,
            "{case}: another {case} has its own count"
        );
        assert_eq!(calls.since(), 2, "{case}");
        ex.stop().await;
    }
}

#[tokio::test]
async fn bad_list_lines_stop_the_start_naming_file_and_line_and_a_reload_swaps_the_lists() {
    let lists = Lists::write();
    let bad = lists.file("bad.txt");
    std::fs::write(&bad, "192.0.2.0/24\n# fine\n300.1.2.3\n").unwrap();
    let dsp = bidder().await;
    let mut config = lists.config(&dsp);
    config.fraud.ip_blocklist_files.push(bad.clone());
    config
        .fraud
        .app_blocklist_files
        .push(lists.file("missing.txt"));
    config.fraud.max_requests_per_ip = Some(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = exchange::run(listener, config.clone(), std::future::pending()).await;
    let Err(exchange::Error::Config(errors)) = started else {
        panic!("a bad list must stop the start: {started:?}");
    };
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("fraud.max_requests_per_ip must be above 0"),
        "{errors:#?}"
    );
    assert_eq!(
        errors[1],
        format!(
            "fraud: {}:3: \"300.1.2.3\" is not an IP address or CIDR range",
            bad.display()
        )
    );
    assert!(
        errors[2].starts_with(&format!(
            "fraud: {}: cannot read",
            lists.file("missing.txt").display()
        )),
        "{errors:#?}"
    );

    // A running node with no lists takes them on reload; a bad list is refused and the
    // lists in force stay.
    let calls = Calls::from(&dsp);
    let ex = TestExchange::start(config_for(&[&dsp])).await;
    let blocked = |id: &str| request(id, |r| r["device"]["ip"] = json!("198.51.100.1"));
    assert_eq!(ex.auction(blocked("before")).await.status, 200);
    let mut listed = ex.config.clone();
    listed.fraud.ip_blocklist_files = vec![lists.file("datacentres.txt")];
    ex.reload.reload(Ok(listed.clone())).await.unwrap();
    assert_eq!(ex.auction(blocked("after")).await.status, 204);
    let mut broken = listed;
    broken.fraud.ip_blocklist_files.push(bad);
    assert!(ex.reload.reload(Ok(broken)).await.is_err());
    assert_eq!(ex.auction(blocked("kept")).await.status, 204);
    assert_eq!(
        ex.metric("exchange_screened_total", &[("reason", "ip_blocklist")])
            .await,
        2.0
    );
    assert_eq!(calls.since(), 1);
    ex.stop().await;
}

#[tokio::test]
async fn a_screened_test_auction_says_why_in_ext_debug() {
    let lists = Lists::write();
    let dsp = bidder().await;
    let calls = Calls::from(&dsp);
    let ex = TestExchange::start(lists.config(&dsp)).await;
    let answer = ex
        .auction(request("dbg-bot", |r| {
            r["device"]["ua"] = json!(GOOGLEBOT);
            r["test"] = json!(1);
        }))
        .await;
    assert_eq!(answer.status, 200, "a debugged answer is a 200");
    let body = answer.json();
    assert_eq!(body["seatbid"], json!([]));
    assert_eq!(
        body["ext"]["debug"]["screening"],
        json!({"screened": true, "reason": "bot_ua"})
    );
    assert_eq!(body["ext"]["debug"]["dsps"], json!([]));
    assert_eq!(calls.since(), 0, "no DSP was called");
    assert_eq!(
        ex.metric("exchange_screened_total", &[("reason", "bot_ua")])
            .await,
        1.0
    );
    ex.stop().await;
}

//! The generator, the baseline and the `loadtest run|surge|baseline|compare` binary over real
//! HTTP on loopback, with mock DSPs playing the bidders.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loadtest::baseline::{Baseline, BaselineConfig};
use loadtest::gen::{self, RunConfig};
use loadtest::mix::{Mix, Template};
use loadtest::plan::Plan;
use loadtest::stats::{Counts, RunReport};
use loadtest::target::Target;
use loadtest::Error;
use mockdsp::{Behavior, Latency, MockDsp, MockDspHandle};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn mock(name: &str, behavior: Behavior, latency: Latency) -> MockDspHandle {
    MockDsp::builder(name)
        .behavior(behavior)
        .latency(latency)
        .start()
        .await
        .unwrap()
}

async fn baseline(dsps: &[&MockDspHandle], timeout: Duration) -> Baseline {
    let urls: Vec<&str> = dsps.iter().map(|d| d.url()).collect();
    let config = BaselineConfig::new(urls, timeout, false).unwrap();
    Baseline::bind("127.0.0.1:0", config).await.unwrap()
}

/// One auction through the baseline: status, body, how long it took.
async fn auction(url: &str) -> (StatusCode, Bytes, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = serde_json::to_vec(&Template::Banner.request("t-1")).unwrap();
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let started = Instant::now();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body, started.elapsed())
}

fn config(url: &str, plan: Plan, connections: usize, queue: usize) -> RunConfig {
    RunConfig {
        targets: vec![Target::parse(url, false).unwrap()],
        plan,
        mix: Arc::new(Mix::standard()),
        connections,
        queue,
        timeout: Duration::from_secs(2),
        label: "test".to_owned(),
        mode: "run".to_owned(),
    }
}

/// Every scheduled request is accounted for exactly once, and nothing finished unsent.
fn assert_accounted(c: &Counts) {
    assert!(c.finished() <= c.sent, "finished more than sent: {c:?}");
    assert!(
        c.sent + c.dropped <= c.scheduled,
        "sent more than scheduled: {c:?}"
    );
    assert_eq!(
        c.dropped + c.finished() + c.unfinished,
        c.scheduled,
        "accounting: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_through_the_baseline_reaches_the_rate_and_writes_json_and_html() {
    let a = mock("alpha", Behavior::Bid, Latency::Fixed(ms(2))).await;
    let b = mock("beta", Behavior::Bid, Latency::Fixed(ms(2))).await;
    let proxy = baseline(&[&a, &b], ms(200)).await;
    let dir = std::env::temp_dir().join(format!("loadtest-it-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let out = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--url",
            proxy.url(),
            "--rate",
            "200",
            "--duration",
            "1s",
        ])
        .args([
            "--warmup",
            "200ms",
            "--connections",
            "8",
            "--json",
            "--report",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: RunReport = serde_json::from_slice(&out.stdout).expect("--json parses");
    let c = &report.counts;
    assert_eq!(c.scheduled, 200, "{c:?}");
    assert!(c.status_200 >= 190, "{c:?}");
    assert_eq!(c.status_4xx + c.status_5xx, 0, "{c:?}");
    assert!(c.bids >= c.status_200, "every 200 carries a bid: {c:?}");
    assert_accounted(c);
    assert!(
        (150.0..=260.0).contains(&report.achieved_rate),
        "achieved {}",
        report.achieved_rate
    );
    assert_eq!(report.target_rate, 200.0);
    assert!(report.latency.p50_us > 0 && report.latency.p50_us <= report.latency.max_us);
    assert!(!report.timeline.is_empty());
    assert!(!report.interrupted);
    // The generator only measures what it was asked to: warm-up traffic reached the DSPs too.
    assert!(proxy.stats().requests >= 230, "{:?}", proxy.stats());

    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<svg"), "the report draws charts");
    assert!(html.contains("Latency by percentile"));
    let saved: Vec<RunReport> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, vec![report]);

    // `compare` reads what `--report` saved.
    let cmp = tokio::process::Command::new(BIN)
        .arg("compare")
        .arg(dir.join("report.json"))
        .output()
        .await
        .unwrap();
    assert!(cmp.status.success());
    assert!(String::from_utf8_lossy(&cmp.stdout).contains("achieved rate"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_baseline_answers_the_first_bid() {
    let fast = mock("fast", Behavior::Bid, Latency::None).await;
    let slow = mock("slow", Behavior::Bid, Latency::Fixed(ms(1000))).await;
    let proxy = baseline(&[&slow, &fast], ms(3000)).await;
    let (status, body, took) = auction(proxy.url()).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["seatbid"][0]["seat"], "fast");
    assert_eq!(v["id"], "t-1");
    assert!(took < ms(900), "did not wait for the slow DSP: {took:?}");
    // The body each DSP got is the publisher's, untouched.
    let sent = serde_json::to_vec(&Template::Banner.request("t-1")).unwrap();
    assert_eq!(fast.received(), vec![Bytes::from(sent)]);
}

#[tokio::test]
async fn the_baseline_answers_204_when_nobody_bids() {
    let a = mock("a", Behavior::NoBid204, Latency::None).await;
    let b = mock("b", Behavior::Status(500), Latency::None).await;
    let proxy = baseline(&[&a, &b], ms(2000)).await;
    let (status, body, _) = auction(proxy.url()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    let s = proxy.stats();
    assert_eq!(
        (s.requests, s.bids, s.no_bids, s.dsp_timeouts),
        (1, 0, 1, 0)
    );
}

#[tokio::test]
async fn the_baseline_gives_up_on_a_hanging_dsp_at_its_timeout() {
    let hang = mock("hang", Behavior::Hang, Latency::None).await;
    let nobid = mock("nobid", Behavior::NoBid204, Latency::None).await;
    let proxy = baseline(&[&hang, &nobid], ms(150)).await;
    let (status, _, took) = auction(proxy.url()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(took >= ms(150), "answered before the deadline: {took:?}");
    assert!(took < ms(1500), "waited past the deadline: {took:?}");
    assert_eq!(proxy.stats().dsp_timeouts, 1);

    // A bidder next to the hanging DSP still wins, without waiting for it.
    let bidder = mock("bidder", Behavior::Bid, Latency::None).await;
    let proxy = baseline(&[&hang, &bidder], ms(2000)).await;
    let (status, _, took) = auction(proxy.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < ms(1500), "{took:?}");
}

#[tokio::test]
async fn non_loopback_targets_are_refused_without_allow_remote() {
    let run = tokio::process::Command::new(BIN)
        .args(["run", "--url", "http://192.0.2.1:8080/openrtb2/auction"])
        .args(["--rate", "10", "--duration", "1s", "--quiet"])
        .output()
        .await
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("--allow-remote"), "{err}");

    let proxy = tokio::process::Command::new(BIN)
        .args([
            "baseline",
            "--listen",
            "127.0.0.1:0",
            "--dsp",
            "http://example.com/bid",
        ])
        .output()
        .await
        .unwrap();
    assert!(!proxy.status.success());
    assert!(String::from_utf8_lossy(&proxy.stderr).contains("--allow-remote"));

    assert!(matches!(
        Target::parse("http://10.0.0.8/", false),
        Err(Error::RemoteTarget { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_shows_queueing_in_latency_instead_of_hiding_it() {
    // One connection to a DSP that takes 50 ms serves at most 20 requests/s; 100/s are asked.
    let slow = mock("slow", Behavior::Bid, Latency::Fixed(ms(50))).await;
    let plan = Plan::constant(100.0, ms(1000), Duration::ZERO).unwrap();
    let report = gen::run(
        config(slow.url(), plan.clone(), 1, 1000),
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    let c = &report.counts;
    assert_eq!(c.scheduled, 100);
    assert_eq!(c.dropped, 0);
    assert_accounted(c);
    // Measured from the actual send, every answer would take ~50 ms; from the intended send
    // time, the ones that waited in the queue show it.
    assert!(report.latency.p99_us >= 400_000, "{:?}", report.latency);
    assert!(report.achieved_rate < 60.0, "{}", report.achieved_rate);

    // With a short queue the generator drops instead of pushing the schedule back.
    let report = gen::run(
        config(slow.url(), plan, 1, 5),
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.counts.scheduled, 100);
    assert!(report.counts.dropped >= 40, "{:?}", report.counts);
    assert_accounted(&report.counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_shows_in_the_timeline() {
    let a = mock("a", Behavior::Bid, Latency::None).await;
    let proxy = baseline(&[&a], ms(500)).await;
    let plan = Plan::surge(20.0, 5.0, ms(1000), ms(1000), ms(1000), Duration::ZERO).unwrap();
    let mut seen = Vec::new();
    let report = gen::run(
        config(proxy.url(), plan, 4, 1000),
        |row| seen.push(row.t),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.counts.scheduled, 20 + 100 + 20);
    assert_accounted(&report.counts);
    let rows = &report.timeline;
    assert!(rows.len() >= 3, "{rows:?}");
    assert_eq!(seen, rows.iter().map(|r| r.t).collect::<Vec<_>>());
    assert_eq!(
        rows[..3].iter().map(|r| r.target_rate).collect::<Vec<_>>(),
        [20.0, 100.0, 20.0]
    );
    let sched: Vec<u64> = rows[..3].iter().map(|r| r.counts.scheduled).collect();
    assert!(
        sched[1] >= 3 * sched[0] && sched[1] >= 3 * sched[2],
        "{sched:?}"
    );
}

#[tokio::test]
async fn a_folder_of_requests_is_sent_byte_for_byte() {
    let dsp = mock("rec", Behavior::NoBid204, Latency::None).await;
    let dir = std::env::temp_dir().join(format!("loadtest-it-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = br#"{"id":"from-file",  "imp":[{"id":"1","banner":{"w":1,"h":1}}], "ext":{"x":1}}"#;
    std::fs::write(dir.join("one.json"), file).unwrap();
    // `localhost` may resolve to ::1 first; the mock listens on 127.0.0.1 only.
    let url = dsp.url().replace("127.0.0.1", "localhost");
    let mut cfg = config(
        &url,
        Plan::constant(20.0, ms(500), Duration::ZERO).unwrap(),
        2,
        100,
    );
    cfg.mix = Arc::new(Mix::from_dir(&dir).unwrap());
    let report = gen::run(cfg, |_| {}, std::future::pending()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.counts.status_204, 10);
    assert_eq!(report.counts.no_bids, 10);
    let received = dsp.received();
    assert_eq!(received.len(), 10);
    assert!(received.iter().all(|b| &b[..] == file));
}

#[tokio::test]
async fn a_fleet_shares_the_schedule_and_each_target_is_reported() {
    let nodes = [
        mock("n1", Behavior::NoBid204, Latency::None).await,
        mock("n2", Behavior::NoBid204, Latency::None).await,
        mock("n3", Behavior::NoBid204, Latency::None).await,
    ];
    let mut cfg = config(
        nodes[0].url(),
        Plan::constant(60.0, ms(500), Duration::ZERO).unwrap(),
        2,
        100,
    );
    cfg.targets = nodes
        .iter()
        .map(|n| Target::parse(n.url(), false).unwrap())
        .collect();
    let report = gen::run(cfg, |_| {}, std::future::pending()).await.unwrap();
    assert_eq!(report.counts.scheduled, 30);
    assert_eq!(report.counts.status_204, 30);
    assert_eq!(report.targets.len(), 3);
    for (t, node) in report.targets.iter().zip(&nodes) {
        assert_eq!(t.url, node.url());
        assert_eq!(t.counts.scheduled, 10, "{t:?}");
        assert_eq!(t.counts.status_204, 10, "{t:?}");
        assert_eq!(t.counts.unfinished, 0, "{t:?}");
        assert_eq!(t.latency.count, 10);
        assert_eq!(node.stats().requests, 10);
    }
    let urls: Vec<&str> = nodes.iter().map(|n| n.url()).collect();
    assert_eq!(report.url, urls.join(" "));
}

#[tokio::test]
async fn one_target_reports_no_per_target_list() {
    let node = mock("solo", Behavior::NoBid204, Latency::None).await;
    let cfg = config(
        node.url(),
        Plan::constant(20.0, ms(500), Duration::ZERO).unwrap(),
        2,
        100,
    );
    let report = gen::run(cfg, |_| {}, std::future::pending()).await.unwrap();
    assert_eq!(report.counts.status_204, 10);
    assert!(report.targets.is_empty());
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("\"targets\""), "{json}");
}

#[tokio::test]
async fn a_target_that_is_down_is_an_error_not_a_report() {
    let port = testkit::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/openrtb2/auction");
    let plan = Plan::constant(10.0, ms(500), Duration::ZERO).unwrap();
    let result = gen::run(config(&url, plan, 2, 10), |_| {}, std::future::pending()).await;
    assert!(matches!(result, Err(Error::Connect { .. })), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_run_with_a_partial_report() {
    let a = mock("a", Behavior::Bid, Latency::None).await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--url", a.url(), "--rate", "50", "--duration", "60s"])
        .args(["--warmup", "0", "--connections", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for the first progress line: the run is measuring.
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = progress
            .next_line()
            .await
            .unwrap()
            .expect("progress before exit");
        if line.starts_with("[   0s]") {
            break;
        }
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within the drain bound")
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let report: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.interrupted);
    assert!(report.counts.scheduled >= 50, "{:?}", report.counts);
    assert!(report.counts.scheduled < 50 * 30, "{:?}", report.counts);
    assert!(report.counts.status_200 > 0);
    assert_accounted(&report.counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_and_surge_subcommands_work_end_to_end() {
    let dsp = mock("dsp", Behavior::Bid, Latency::None).await;
    let mut proxy = tokio::process::Command::new(BIN)
        .args(["baseline", "--listen", "127.0.0.1:0", "--timeout-ms", "200"])
        .args(["--dsp", dsp.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.strip_prefix("listening on ").expect(&line).to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/openrtb2/auction"));

    let surge = tokio::process::Command::new(BIN)
        .args(["surge", "--url", &url, "--base-rate", "10", "--factor", "4"])
        .args([
            "--before", "1s", "--surge", "1s", "--after", "1s", "--warmup", "0",
        ])
        .args(["--connections", "4", "--quiet"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&surge.stdout);
    assert!(
        surge.status.success(),
        "{}",
        String::from_utf8_lossy(&surge.stderr)
    );
    assert!(
        text.lines()
            .next()
            .unwrap()
            .trim_start()
            .starts_with("t(s)"),
        "{text}"
    );
    assert!(
        text.contains("plan         10/s for 1.0 s, then 40/s for 1.0 s, then 10/s for 1.0 s"),
        "{text}"
    );
    assert!(text.contains("200: 60 "), "{text}");

    let pid = proxy.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(10), proxy.wait_with_output())
        .await
        .expect("the baseline stops on Ctrl-C")
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(stats.contains("requests=60 bids=60"), "{stats}");
}

//! The `exchange` binary as a newcomer runs it: no arguments but a free port, demo DSPs,
//! the README's example request.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `exchange` binary with `args` in `cwd` and returns it with the address it
/// printed and everything it printed before.
async fn spawn(cwd: &std::path::Path, args: &[&str]) -> (Child, String, String) {
    std::fs::create_dir_all(cwd).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_exchange"))
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (addr, before) = tokio::task::spawn_blocking(move || {
        let mut before = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("the exchange's stdout is readable");
            if let Some(addr) = line.split("listening on http://").nth(1) {
                return (addr.to_owned(), before);
            }
            before.push_str(&line);
            before.push('\n');
        }
        panic!("the exchange never printed its address; it printed:\n{before}")
    })
    .await
    .unwrap();
    (child, addr, before)
}

async fn post(addr: &str, body: Vec<u8>) -> (u16, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("http://{addr}/openrtb2/auction"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_crash_mid_write_leaves_a_log_the_report_reads_without_the_torn_line() {
    let cwd = std::env::temp_dir().join(format!("exchange-crash-{}", std::process::id()));
    let (mut child, addr, _) = spawn(&cwd, &["--listen", "127.0.0.1:0"]).await;
    let example = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/banner.json"
    ))
    .unwrap();
    let mut wins = 0;
    for _ in 0..20 {
        wins += u64::from(post(&addr, example.clone()).await.0 == 200);
    }
    assert!(wins > 0, "no demo DSP won in 20 auctions");
    // Once every win is in the log (the page cache survives a killed process), crash the
    // process and leave half a line behind, as a crash in the middle of a write would.
    let log = cwd.join("events.jsonl");
    let written = testkit::eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.matches(r#""type":"win""#).count() as u64 == wins)
    })
    .await;
    assert!(written, "the wins never reached {}", log.display());
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, br#"{"type":"impression","ts":17958181"#).unwrap();
    drop(file);

    let out = Command::new(env!("CARGO_BIN_EXE_exchange"))
        .args(["report", "--events", log.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wins"].as_u64(), Some(wins), "{report}");
    assert_eq!(
        report["impressions"], 0,
        "the torn line was read as an impression: {report}"
    );
    assert!(report["torn_tail_bytes"].as_u64().unwrap() > 0, "{report}");
    let table = Command::new(env!("CARGO_BIN_EXE_exchange"))
        .args(["report", "--events", log.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("wins") && table.contains("torn tail"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&cwd);
}

#[tokio::test]
async fn the_embedded_default_runs_a_real_auction_on_the_example_request() {
    // The embedded default keeps its event log and spool in the working directory.
    let cwd = std::env::temp_dir().join(format!("exchange-binary-{}", std::process::id()));
    let (mut child, addr, banner) = spawn(&cwd, &["--listen", "127.0.0.1:0"]).await;
    // It says loudly that it is a demo, with the demo bidders and their campaigns.
    assert!(banner.contains("DEMO MODE"), "{banner}");
    for line in [
        "demo dsp alpha",
        "demo dsp beta",
        "demo dsp gamma",
        "demo campaign alpha/alpha-cmp-2 budget 1000",
        "demo campaign gamma/gamma-cmp-1 budget 1000",
    ] {
        assert!(banner.contains(line), "no {line:?} in:\n{banner}");
    }

    let example = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/banner.json"
    ))
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // The demo DSPs bid about 80% of the time each, so a handful of tries is plenty.
    let mut won = None;
    for _ in 0..20 {
        let req = http::Request::post(format!("http://{addr}/openrtb2/auction"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(example.clone())))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .unwrap()
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(status == 200 || status == 204, "{status}");
        if status == 200 {
            won = Some(body);
            break;
        }
    }
    let body: serde_json::Value =
        serde_json::from_slice(&won.expect("no demo DSP ever won")).unwrap();
    assert_eq!(body["id"], "example-auction-1");
    let bid = &body["seatbid"][0]["bid"][0];
    assert!(
        bid["price"].as_f64().unwrap() >= 0.5,
        "the floor holds: {bid}"
    );
    assert!(["alpha", "beta", "gamma"].contains(&body["seatbid"][0]["seat"].as_str().unwrap()));
    // SIGTERM: a graceful stop flushes the event log; the win is where the embedded default
    // says it logs.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    testkit::eventually(Duration::from_secs(15), || {
        exited = child.0.try_wait().unwrap();
        std::future::ready(exited.is_some())
    })
    .await;
    let status = exited.expect("the exchange stopped within 15 s of SIGTERM");
    assert!(status.success(), "{status}");
    let events = std::fs::read_to_string(cwd.join("events.jsonl")).unwrap_or_default();
    assert!(
        events.contains(r#""type":"win""#),
        "no win event in {events:?}"
    );
    let _ = std::fs::remove_dir_all(&cwd);
}

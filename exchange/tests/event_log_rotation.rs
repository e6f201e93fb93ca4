//! The `exchange` binary's event log at production volume, with real processes and real
//! signals: SIGKILLed again and again while it rotates and compresses under a load of billed
//! impressions, it loses no billing line that was answered; SIGUSR1 after an external move
//! splits the log between the moved file and a new one, losing nothing.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use impressions::{BidRef, EventType, TrackingKey};

const SECRET: &str = "event-log-rotation-test-secret-0123456789";

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!(
        "exchange-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// Writes the config and starts the binary on it; returns it with its address.
async fn spawn(dir: &Path, events: &str) -> (Child, String) {
    let config = dir.join("exchange.toml");
    std::fs::write(
        &config,
        format!(
            "[tracking]\nsecret = \"{SECRET}\"\nspool_dir = \"{spool}\"\n\n[events]\nfile = \"{log}\"\n{events}",
            spool = dir.join("spool").display(),
            log = dir.join("events.jsonl").display(),
        ),
    )
    .unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_exchange"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            if let Some(addr) = line.unwrap().split("listening on http://").nth(1) {
                return addr.to_owned();
            }
        }
        panic!("the exchange never printed its address")
    })
    .await
    .unwrap();
    (child, addr)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A signed impression URL of its own for `auction`: each bills once.
fn impression_url(addr: &str, key: &TrackingKey, auction: &str) -> String {
    let bid = BidRef {
        auction_id: auction.to_owned(),
        imp_id: "1".into(),
        bid_id: "b".into(),
        dsp: "dsp".into(),
        seat: "seat".into(),
        campaign: "camp".into(),
        creative_id: "cr".into(),
        price_micros: 1_500_000,
        currency: "USD".into(),
        auction_ts_ms: now_ms(),
        ..BidRef::default()
    };
    impressions::sign::impression_url(&format!("http://{addr}/event/imp"), &bid, None, key)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`; the status, or `None` when the exchange did not answer (it was killed).
async fn hit(client: &HttpClient, url: &str) -> Option<u16> {
    let req = http::Request::get(url).body(Empty::new()).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(response)) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// Auction ids of the billed impressions in the whole log (every rotated file, plain or
/// gzip, then the live one), in order.
fn billed(log: &Path) -> Vec<String> {
    let mut out = Vec::new();
    impressions::read_log(log, |e| {
        if e.kind == EventType::Impression {
            out.push(e.auction_id);
        }
    })
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_rotation_under_load_loses_no_answered_billing_line() {
    let d = dir("rotate-kill");
    let log = d.0.join("events.jsonl");
    let key = TrackingKey::from_secret(SECRET).unwrap();
    // A rotation every eight lines or so, each closed file gzipped behind it: the kill lands
    // among renames, opens and compressions.
    let events = "rotate_bytes = 4096\ncompress = true\nretention_files = 0\nretention_age_s = 0\n";
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let sent = Arc::new(Mutex::new(HashSet::new()));
    const ROUNDS: u32 = 3;
    const WORKERS: u32 = 8;
    for round in 0..ROUNDS {
        let (mut child, addr) = spawn(&d.0, events).await;
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (addr, key, stop, count) = (addr.clone(), key.clone(), stop.clone(), count.clone());
            let (answered, sent) = (answered.clone(), sent.clone());
            workers.push(tokio::spawn(async move {
                let client = client();
                for i in 0u32.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let auction = format!("r{round}-w{w}-{i}");
                    let url = impression_url(&addr, &key, &auction);
                    sent.lock().unwrap().insert(auction.clone());
                    match hit(&client, &url).await {
                        Some(204) => {
                            answered.lock().unwrap().insert(auction);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(other) => panic!("{auction}: answered {other}"),
                        // Killed: the hits in flight may or may not have been logged.
                        None => return,
                    }
                }
            }));
        }
        // Well into the load (dozens of rotations), kill it with hits still in flight.
        let loaded = testkit::eventually(Duration::from_secs(20), || {
            std::future::ready(count.load(Ordering::SeqCst) >= 400)
        })
        .await;
        assert!(loaded, "round {round}: 400 impressions within 20 s");
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
    }

    let logged = billed(&log);
    let unique: HashSet<&String> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len(), "a billing line written twice");
    let answered = answered.lock().unwrap();
    let sent = sent.lock().unwrap();
    let lost: Vec<&String> = answered
        .iter()
        .filter(|a| !unique.contains(a))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "answered but not in the log ({} answered, {} logged): {lost:?}",
        answered.len(),
        logged.len()
    );
    assert!(unique.iter().all(|a| sent.contains(*a)));
    assert!(answered.len() >= (ROUNDS * 400) as usize);
    // It did rotate, many times, under the kills.
    let closed = std::fs::read_dir(&d.0)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.starts_with("events.") && name != "events.jsonl" && !name.ends_with(".tmp")
        })
        .count();
    assert!(closed >= 30, "only {closed} closed files");
    eprintln!(
        "{} hits sent, {} answered, {} billing lines logged, {closed} closed files",
        sent.len(),
        answered.len(),
        logged.len()
    );

    // The report reads the same, rotated and compressed files included.
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
    assert_eq!(report["impressions"].as_u64(), Some(logged.len() as u64));
    assert_eq!(report["repeated_lines_ignored"].as_u64(), Some(0));
}

#[tokio::test]
async fn sigusr1_after_a_move_splits_the_log_losing_nothing() {
    let d = dir("usr1");
    let log = d.0.join("events.jsonl");
    let key = TrackingKey::from_secret(SECRET).unwrap();
    let (mut child, addr) = spawn(
        &d.0,
        "rotate_bytes = 0\nrotate_interval_s = 0\ncompress = false\n",
    )
    .await;
    let client = client();
    for i in 0..5 {
        let url = impression_url(&addr, &key, &format!("before-{i}"));
        assert_eq!(hit(&client, &url).await, Some(204));
    }
    // logrotate's move, then its postrotate signal.
    let moved = d.0.join("events.jsonl.1");
    std::fs::rename(&log, &moved).unwrap();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    let reopened =
        testkit::eventually(Duration::from_secs(10), || std::future::ready(log.exists())).await;
    assert!(reopened, "no new {} after SIGUSR1", log.display());
    for i in 0..3 {
        let url = impression_url(&addr, &key, &format!("after-{i}"));
        assert_eq!(hit(&client, &url).await, Some(204));
    }
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
    assert!(exited.expect("stopped within 15 s of SIGTERM").success());
    let mut old = Vec::new();
    impressions::read_events(&moved, |e| old.push(e.auction_id)).unwrap();
    assert_eq!(
        old,
        ["before-0", "before-1", "before-2", "before-3", "before-4"]
    );
    assert_eq!(billed(&log), ["after-0", "after-1", "after-2"]);
}

//! The `loadtest dsp` subcommand: mock DSPs served from the command line until interrupted.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post(c: &HttpClient, url: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn first_bid(resp: &Value) -> &Value {
    &resp["seatbid"][0]["bid"][0]
}

#[tokio::test]
async fn the_dsp_subcommand_serves_until_interrupted() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "dsp",
            "--count",
            "2",
            "--base-port",
            "0",
            "--price",
            "3.25",
            "--behavior",
            "bid",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let c = client();
    for expected in ["dsp-1", "dsp-2"] {
        let line = lines.next_line().await.unwrap().unwrap();
        let (name, url) = line.split_once(' ').unwrap();
        assert_eq!(name, expected);
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/bid"),
            "{url}"
        );
        let request = json!({"id": "cli", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]});
        let (s, resp) = post(&c, url, request).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(first_bid(&resp)["price"], 3.25);
        assert!(
            first_bid(&resp)["nurl"].is_string(),
            "notices are on by default"
        );
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_dsp_subcommand_serves_https_and_writes_its_ca() {
    let dir = std::env::temp_dir().join(format!("loadtest-dsp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "dsp",
            "--count",
            "1",
            "--base-port",
            "0",
            "--tls",
            "--ca-out",
        ])
        .arg(&ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let (name, url) = line.split_once(' ').unwrap();
    assert_eq!(name, "dsp-1");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The URLs are printed after the CA is written: a client trusting that file gets a bid.
    let client = exchange::fanout::HttpClients::new(&exchange::config::TlsConfig {
        ca_files: vec![ca.clone()],
    })
    .unwrap()
    .auto;
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"id": "tls", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}).to_string(),
        )))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(first_bid(&body)["price"], 1.5);
    assert!(first_bid(&body)["nurl"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

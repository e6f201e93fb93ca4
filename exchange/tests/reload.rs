//! Live reload: SIGHUP to the real binary adds a DSP or is refused, and an auction running
//! when a reload lands finishes on the DSPs it started with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{banner_request, config_for, sample, TestExchange};
use exchange::config::DspConfig;
use http::StatusCode;
use mockdsp::{Latency, MockDsp, MockDspHandle, Price};
use testkit::eventually;

async fn bidder(name: &str, cpm: f64) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(cpm))
        .start()
        .await
        .unwrap()
}

/// The config file of the binary test: the given DSPs, everything else at its default but the
/// DSP deadline (a busy test machine is slower than the production 30 ms).
fn config_file(dsps: &[(&str, &str)]) -> String {
    let mut text = String::from("[auction]\ndsp_timeout_ms = 500\n");
    for (name, url) in dsps {
        text.push_str(&format!("\n[[dsp]]\nname = {name:?}\nurl = {url:?}\n"));
    }
    text
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plain HTTP to the binary: `(status, body)`.
async fn call(addr: &str, method: &str, path: &str, body: String) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The seat that won one auction, or "" for no bid.
async fn winner(addr: &str, id: &str) -> String {
    let (status, body) = call(addr, "POST", "/openrtb2/auction", banner_request(id, 0.5)).await;
    if status != 200 {
        return String::new();
    }
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["seatbid"][0]["seat"].as_str().unwrap_or("").to_owned()
}

async fn reloads(addr: &str, result: &str) -> f64 {
    let (_, text) = call(addr, "GET", "/metrics", String::new()).await;
    sample(
        &text,
        "exchange_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

fn hangup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_adds_a_dsp_and_an_invalid_config_is_refused() {
    let first = bidder("first", 1.0).await;
    let second = bidder("second", 3.0).await;
    let dir = std::env::temp_dir().join(format!("exchange-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("exchange.toml");
    std::fs::write(&file, config_file(&[("first", first.url())])).unwrap();

    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_exchange"))
            .args([
                "--config",
                file.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split("listening on http://").nth(1).map(str::to_owned))
            .expect("the exchange printed its address")
    })
    .await
    .unwrap();
    assert_eq!(winner(&addr, "before").await, "first");

    std::fs::write(
        &file,
        config_file(&[("first", first.url()), ("second", second.url())]),
    )
    .unwrap();
    hangup(&child);
    let mut n = 0;
    let switched = eventually(Duration::from_secs(10), || {
        n += 1;
        let addr = addr.clone();
        async move { winner(&addr, &format!("after-{n}")).await == "second" }
    })
    .await;
    assert!(switched, "the added dsp never won");
    assert_eq!(reloads(&addr, "ok").await, 1.0);
    assert_eq!(reloads(&addr, "refused").await, 0.0);

    // A DSP with no name: refused, and the two DSPs stay.
    std::fs::write(
        &file,
        config_file(&[("first", first.url()), ("", second.url())]),
    )
    .unwrap();
    hangup(&child);
    let refused = eventually(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { reloads(&addr, "refused").await == 1.0 }
    })
    .await;
    assert!(refused, "the invalid config was never refused");
    assert_eq!(reloads(&addr, "ok").await, 1.0);
    assert_eq!(winner(&addr, "kept").await, "second");
    let asked = second.stats().requests;
    assert_eq!(winner(&addr, "kept-2").await, "second");
    assert_eq!(second.stats().requests, asked + 1);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_auction_in_flight_finishes_on_the_dsps_it_started_with() {
    let slow = MockDsp::builder("slow")
        .price(Price::Fixed(1.0))
        .latency(Latency::Fixed(Duration::from_millis(400)))
        .start()
        .await
        .unwrap();
    let fresh = bidder("fresh", 3.0).await;
    let mut config = config_for(&[&slow]);
    config.auction.dsp_timeout_ms = 2000;
    let ex = TestExchange::start(config).await;
    let mut request: serde_json::Value =
        serde_json::from_str(&banner_request("in-flight", 0.5)).unwrap();
    request["tmax"] = 2000.into();

    let running = {
        let addr = ex.addr;
        let body = request.to_string();
        tokio::spawn(
            async move { call(&addr.to_string(), "POST", "/openrtb2/auction", body).await },
        )
    };
    let asked = eventually(Duration::from_secs(5), || {
        std::future::ready(slow.stats().requests == 1)
    })
    .await;
    assert!(asked, "the slow dsp was never called");

    let mut next = ex.config.clone();
    next.dsps = vec![DspConfig::new(fresh.name(), fresh.url())];
    ex.reload.reload(Ok(next)).await.unwrap();

    let (status, body) = running.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["seatbid"][0]["seat"], "slow", "{body}");
    assert_eq!(fresh.stats().requests, 0);

    let answer = ex.auction(banner_request("after", 0.5)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["seatbid"][0]["seat"], "fresh");
    assert_eq!(slow.stats().requests, 1);

    // A restart-only key changed: refused, naming it, and `fresh` stays.
    let mut moved = ex.config.clone();
    moved.dsps = vec![DspConfig::new(fresh.name(), fresh.url())];
    moved.redis.url = Some("redis://127.0.0.1:1".to_owned());
    let refused = ex.reload.reload(Ok(moved)).await.unwrap_err().to_string();
    assert!(refused.contains("redis.url"), "{refused}");
    assert_eq!(
        ex.metric("exchange_config_reloads_total", &[("result", "ok")])
            .await,
        1.0
    );
    assert_eq!(
        ex.metric("exchange_config_reloads_total", &[("result", "refused")])
            .await,
        1.0
    );
    let answer = ex.auction(banner_request("still", 0.5)).await;
    assert_eq!(answer.json()["seatbid"][0]["seat"], "fresh");
    ex.stop().await;
}

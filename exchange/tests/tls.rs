//! TLS through the real server: an HTTPS DSP trusted through `[tls] ca_files` wins, hears its
//! `https` nurl and, once the impression is fetched, its `https` burl; an untrusted one gets
//! nothing through; HTTP/2 by ALPN or forced; the pool warmed at start; publishers over HTTPS.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{banner_request, config_for, TestExchange};
use exchange::config::{HttpVersion, ServerTlsConfig, TlsConfig};
use exchange::fanout::HttpClients;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mockdsp::{MockDsp, MockDspHandle, NoticeKind, Price, TestCa};
use testkit::eventually;

/// Writes `text` to a fresh file under the temp dir and returns its path.
fn temp_file(name: &str, text: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "exchange-tls-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn tls_bidder(name: &str, ca: &TestCa) -> MockDspHandle {
    MockDsp::builder(name)
        .price(Price::Fixed(2.0))
        .notices(true)
        .tls(ca.clone())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_dsp_trusted_through_ca_files_wins_and_hears_its_https_notices() {
    let ca = TestCa::generate().unwrap();
    let dsp = tls_bidder("tls-dsp", &ca).await;
    assert!(dsp.url().starts_with("https://127.0.0.1:"), "{}", dsp.url());
    let mut config = config_for(&[&dsp]);
    config.tls.ca_files = vec![temp_file("ca.pem", ca.ca_pem())];
    let ex = TestExchange::start(config).await;

    let answer = ex.auction(banner_request("tls-1", 1.0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    let bid = &body["seatbid"][0]["bid"][0];
    assert_eq!(bid["price"], 1.01, "{body}");
    assert_eq!(body["seatbid"][0]["seat"], "tls-dsp");
    // The bid has markup, so the exchange fires its https nurl itself.
    assert!(
        eventually(Duration::from_secs(10), || async {
            dsp.stats().nurl_hits == 1
        })
        .await
    );
    let nurl = dsp
        .notices()
        .into_iter()
        .find(|n| n.kind == NoticeKind::Nurl)
        .unwrap();
    assert_eq!(nurl.param("price"), Some("1.01"));
    assert_eq!(nurl.param("auction"), Some("tls-1"));
    // Auto: the mock offers h2 by ALPN, so the bid request went over HTTP/2, on the
    // connection the warm-up opened before the auction.
    assert_eq!(dsp.stats().http2_requests, 1);
    assert_eq!(dsp.stats().other_methods, 1, "one warm-up request");

    // The impression pixel from the answer bills the win and fires the DSP's https burl.
    let burl = bid["burl"].as_str().unwrap();
    let imp = ex.get(&burl[burl.find("/event/").unwrap()..]).await;
    assert_eq!(imp.status, StatusCode::NO_CONTENT);
    assert!(
        eventually(Duration::from_secs(10), || async {
            dsp.stats().burl_hits == 1
        })
        .await
    );
    let billed = dsp
        .notices()
        .into_iter()
        .find(|n| n.kind == NoticeKind::Burl)
        .unwrap();
    assert_eq!(billed.param("price"), Some("1.01"));
    let labels = |kind| [("dsp", "tls-dsp"), ("kind", kind), ("result", "ok")];
    assert_eq!(
        ex.metric("exchange_notices_total", &labels("win")).await,
        1.0
    );
    assert_eq!(
        ex.metric("exchange_notices_total", &labels("billing"))
            .await,
        1.0
    );
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_tls_dsp_gets_no_bid_through_and_counts_an_error() {
    let ca = TestCa::generate().unwrap();
    let dsp = tls_bidder("untrusted", &ca).await;
    let ex = TestExchange::start(config_for(&[&dsp])).await;

    let answer = ex.auction(banner_request("untrusted-1", 1.0)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        ex.metric("exchange_dsp_errors_total", &[("dsp", "untrusted")])
            .await,
        1.0
    );
    assert_eq!(dsp.stats().requests, 0, "no request got past the handshake");
    assert_eq!(dsp.stats().connections, 0);
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_version_can_be_forced_per_dsp_and_pools_are_warmed() {
    let ca = TestCa::generate().unwrap();
    // No notices: they go through the notices' own client and would open connections of their own.
    let quiet = |name: &str| MockDsp::builder(name).tls(ca.clone()).start();
    let h1 = quiet("forced-h1").await.unwrap();
    let h2 = quiet("forced-h2").await.unwrap();
    let plain = MockDsp::builder("plain").start().await.unwrap();
    let mut config = config_for(&[&h1, &h2, &plain]);
    config.tls.ca_files = vec![temp_file("ca.pem", ca.ca_pem())];
    config.dsps[0].http = HttpVersion::Http1;
    config.dsps[0].warm_connections = 3;
    config.dsps[1].http = HttpVersion::Http2;
    let ex = TestExchange::start(config).await;
    // The server answers only once it has started, and it starts serving after the warm-up.
    assert_eq!(ex.get("/healthz").await.status, StatusCode::OK);
    // Warmed before the first auction: three HTTP/1.1 connections, one HTTP/2 connection,
    // and the plain DSP's one.
    assert_eq!(h1.stats().connections, 3);
    assert_eq!(h1.stats().other_methods, 3);
    assert_eq!(h2.stats().connections, 1);
    assert_eq!(plain.stats().connections, 1);

    for i in 0..3 {
        let answer = ex.auction(banner_request(&format!("v-{i}"), 0.5)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(h1.stats().requests, 3);
    assert_eq!(h1.stats().http2_requests, 0);
    assert_eq!(h2.stats().requests, 3);
    assert_eq!(h2.stats().http2_requests, 3);
    assert_eq!(plain.stats().http2_requests, 0, "plain http stays HTTP/1.1");
    // No handshake inside an auction: the warm connections carried them all.
    assert_eq!(h1.stats().connections, 3);
    assert_eq!(h2.stats().connections, 1);
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_can_reach_the_exchange_over_https() {
    let ca = TestCa::generate().unwrap();
    let dsp = MockDsp::builder("behind-tls").start().await.unwrap();
    let mut config = config_for(&[&dsp]);
    config.server.tls = Some(ServerTlsConfig {
        cert_file: temp_file("cert.pem", ca.cert_pem()),
        key_file: temp_file("key.pem", ca.key_pem()),
    });
    let ex = TestExchange::start(config).await;

    let ca_file = temp_file("ca.pem", ca.ca_pem());
    let client = HttpClients::new(&TlsConfig {
        ca_files: vec![ca_file],
    })
    .unwrap()
    .auto;
    let request = Request::post(format!(
        "https://127.0.0.1:{}/openrtb2/auction",
        ex.addr.port()
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(banner_request("pub-tls", 0.5))))
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["id"], "pub-tls");
    assert_eq!(body["seatbid"][0]["seat"], "behind-tls");
    ex.stop().await;
}

#[test]
fn unreadable_or_empty_ca_files_are_config_errors_listed_with_the_others() {
    let empty = temp_file("empty.pem", "");
    let text = format!(
        r#"
        [auction]
        currency = "usd"
        [tls]
        ca_files = ["/nonexistent/ca.pem", {empty:?}]
        [server.tls]
        cert_file = "/nonexistent/cert.pem"
        key_file = "/nonexistent/key.pem"
        [[dsp]]
        name = "secure"
        url = "https://127.0.0.1:1/bid"
        http = "http2"
        "#
    );
    let errors = match exchange::Config::from_toml(&text).and_then(|c| c.validate()) {
        Err(exchange::Error::Config(e)) => e,
        other => panic!("expected config errors, got {other:?}"),
    };
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].contains("auction.currency"), "{errors:#?}");
    assert!(
        errors[1].starts_with("tls.ca_files: /nonexistent/ca.pem"),
        "{errors:#?}"
    );
    assert!(
        errors[2].contains("empty.pem: no PEM certificate in it"),
        "{errors:#?}"
    );
    assert!(
        errors[3].starts_with("server.tls: /nonexistent/cert.pem"),
        "{errors:#?}"
    );
}

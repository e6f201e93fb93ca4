//! `[admin] listen` and `[metrics] listen`: the admin API and `/metrics` on addresses of their
//! own, and gone from the publisher-facing port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{banner_request, config_for, TestExchange};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mockdsp::MockDsp;

const TOKEN: &str = "operator-token-0123456789";

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testkit::free_port().unwrap()))
}

/// `GET http://{addr}{path}`, with the admin token: `(status, body)`.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn admin_and_metrics_move_to_their_own_addresses() {
    let dsp = MockDsp::builder("ops-dsp").start().await.unwrap();
    let (admin, metrics) = (free_addr(), free_addr());
    let mut config = config_for(&[&dsp]);
    config.admin.token = Some(TOKEN.to_owned());
    config.admin.listen = Some(admin);
    config.metrics.listen = Some(metrics);
    let ex = TestExchange::start(config).await;
    assert_eq!(
        ex.auction(banner_request("ops-1", 0.0)).await.status,
        StatusCode::OK
    );

    // The publisher-facing port no longer serves either.
    assert_eq!(get(ex.addr, "/metrics").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(ex.addr, "/admin/campaigns").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(ex.addr, "/healthz").await.0, StatusCode::OK);

    // Each is on its own address, and only there.
    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        common::sample(&text, "exchange_auctions_total", &[("outcome", "won")]),
        Some(1.0)
    );
    assert_eq!(
        get(metrics, "/admin/campaigns").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = get(admin, "/admin/campaigns").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(admin, "/metrics").await.0, StatusCode::NOT_FOUND);
    ex.stop().await;
}

#[tokio::test]
async fn one_operator_address_can_serve_both() {
    let dsp = MockDsp::builder("ops-both").start().await.unwrap();
    let ops = free_addr();
    let mut config = config_for(&[&dsp]);
    config.admin.token = Some(TOKEN.to_owned());
    config.admin.listen = Some(ops);
    config.metrics.listen = Some(ops);
    let ex = TestExchange::start(config).await;
    // The server binds its operator address before it answers anything on the main one.
    assert_eq!(ex.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(get(ops, "/metrics").await.0, StatusCode::OK);
    assert_eq!(get(ops, "/admin/campaigns").await.0, StatusCode::OK);
    assert_eq!(get(ex.addr, "/metrics").await.0, StatusCode::NOT_FOUND);
    ex.stop().await;
}

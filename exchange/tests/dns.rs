//! Name resolution through the real server: a DSP addressed by name is called, and its name is
//! looked up once at start, not per call.

// Tests fail loudly: unwrap and expect are the assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{banner_request, config_for, TestExchange};
use http::StatusCode;
use mockdsp::{MockDsp, Price};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsp_addressed_by_name_is_resolved_once_at_start() {
    let dsp = MockDsp::builder("named")
        .price(Price::Fixed(2.0))
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&dsp]);
    config.dsps[0].url = dsp.url().replace("127.0.0.1", "localhost");
    assert!(
        config.dsps[0].url.contains("//localhost:"),
        "{}",
        config.dsps[0].url
    );
    // Not warmed: the first auction opens the connection, through the cache.
    config.dsps[0].warm_connections = 0;
    let ex = TestExchange::start(config).await;
    for i in 0..5 {
        let answer = ex.auction(banner_request(&format!("n-{i}"), 0.5)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(dsp.stats().requests, 5);
    assert_eq!(dsp.stats().connections, 1);
    assert_eq!(ex.metric("exchange_dns_lookups_total", &[]).await, 1.0);
    assert_eq!(
        ex.metric(
            "exchange_dns_refresh_failures_total",
            &[("host", "localhost")]
        )
        .await,
        0.0
    );
    ex.stop().await;
}

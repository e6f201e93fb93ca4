//! Overload control through the real server: a runtime that never idles lowers the auction
//! bound, auctions over it are answered 204 at once and counted, and the bound comes back when
//! the runtime does. Its own test binary, because the overload gauges and the auction counters
//! are process-wide.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{banner_request, config_for, TestExchange};
use futures::future::join_all;
use http::StatusCode;
use mockdsp::{Latency, MockDsp, Price};
use testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_behind_sheds_at_once_and_recovers() {
    // The DSP takes its time, so admitted auctions stay in flight while the rest arrive.
    let dsp = MockDsp::builder("ov-dsp")
        .price(Price::Fixed(2.0))
        .latency(Latency::Fixed(Duration::from_millis(150)))
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&dsp]);
    config.auction.dsp_timeout_ms = 400;
    config.auction.default_tmax_ms = 1_000;
    config.overload.window_ms = 20;
    config.overload.target_lag_us = 500;
    config.overload.min_limit = 2;
    let ex = TestExchange::start(config).await;
    let overloaded = || ex.metric("exchange_auctions_total", &[("outcome", "overloaded")]);

    // Calm: ten auctions at once are all served.
    let calm =
        join_all((0..10).map(|i| ex.auction(banner_request(&format!("ov-a{i}"), 0.0)))).await;
    assert!(calm.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(overloaded().await, 0.0);

    // Both workers blocked 5 ms at a time: the probe waits behind them every time it yields.
    let hogging = Arc::new(AtomicBool::new(true));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let hogging = hogging.clone();
            tokio::spawn(async move {
                while hogging.load(Ordering::Relaxed) {
                    // The behaviour under test: a worker blocked, not a wait for something.
                    std::thread::sleep(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let lowered = eventually(Duration::from_secs(5), || async {
        ex.metric("exchange_overload_limit", &[]).await <= 2.0
    })
    .await;
    assert!(lowered, "the bound stayed up while the runtime was behind");

    let started = Instant::now();
    let busy =
        join_all((0..10).map(|i| ex.auction(banner_request(&format!("ov-b{i}"), 0.0)))).await;
    let shed = busy
        .iter()
        .filter(|a| a.status == StatusCode::NO_CONTENT)
        .count();
    let served = busy.iter().filter(|a| a.status == StatusCode::OK).count();
    assert!(shed >= 5, "only {shed} of 10 shed over a bound of 2");
    assert_eq!(shed + served, 10);
    assert_eq!(overloaded().await, shed as f64);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The runtime idles again: the bound climbs back and everything is served.
    hogging.store(false, Ordering::Relaxed);
    for hog in hogs {
        hog.await.unwrap();
    }
    let recovered = eventually(Duration::from_secs(10), || async {
        ex.metric("exchange_overload_limit", &[]).await >= 10.0
    })
    .await;
    assert!(recovered, "the bound did not come back");
    let after =
        join_all((0..10).map(|i| ex.auction(banner_request(&format!("ov-c{i}"), 0.0)))).await;
    assert!(after.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(overloaded().await, shed as f64);
    ex.stop().await;
}

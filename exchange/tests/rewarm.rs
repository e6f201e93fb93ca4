//! Keeping the DSP pools warm through the real server: with the warm-up run again more often
//! than the pool's idle timeout, a quiet DSP's warm connections outlive that timeout.

// Tests fail loudly: unwrap and expect are the assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{banner_request, config_for, TestExchange};
use http::StatusCode;
use mockdsp::{MockDsp, MockDspHandle, Price};
use testkit::eventually;

/// Starts an exchange whose one DSP keeps 3 warm connections, the pool closing idle ones after
/// 300 ms, rewarmed every `rewarm_ms`; waits until the DSP has seen `rounds` warm-ups (well
/// past the idle timeout), then runs one auction. Returns the DSP for its counts and how many
/// connections it had open after the auction.
async fn quiet_dsp_after(rewarm_ms: u64, rounds: u64) -> (MockDspHandle, u64) {
    let dsp = MockDsp::builder("quiet")
        .price(Price::Fixed(2.0))
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&dsp]);
    config.auction.pool_idle_timeout_ms = 300;
    config.dsps[0].warm_connections = 3;
    config.dsps[0].rewarm_ms = rewarm_ms;
    let ex = TestExchange::start(config).await;
    // The server answers only once it has started, and it starts serving after the warm-up.
    assert_eq!(ex.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(dsp.stats().connections, 3);
    let warmups = 3 * rounds;
    assert!(
        eventually(Duration::from_secs(10), || async {
            dsp.stats().other_methods >= warmups
        })
        .await,
        "{} warm-up requests, wanted {warmups}",
        dsp.stats().other_methods
    );
    let answer = ex.auction(banner_request("after-idle", 0.5)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let open = dsp.stats().open_connections;
    ex.stop().await;
    (dsp, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewarming_keeps_the_warm_connections_past_the_idle_timeout() {
    // 10 rounds at 100 ms: three times the 300 ms idle timeout.
    let (dsp, open) = quiet_dsp_after(100, 10).await;
    assert_eq!(dsp.stats().requests, 1);
    assert_eq!(open, 3);
    // The three connections of the start carried every warm-up and the auction: none was
    // closed for idling and opened again.
    assert_eq!(dsp.stats().connections, 3);
}

//! Through the real server: a DSP that hangs or answers 500 has its circuit opened, is then
//! skipped (each skip counted) except for probes, and gets its traffic back once it recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use common::{banner_request, config_for, TestExchange};
use mockdsp::{Behavior, MockDsp, MockDspHandle, Price};
use testkit::eventually;

/// Breaker keys for the DSP at `index` of `config`: opens after 5 calls that all failed.
fn breaker(config: &mut exchange::Config, index: usize, open_ms: u64) {
    let dsp = &mut config.dsps[index];
    dsp.breaker_min_calls = 5;
    dsp.breaker_window_ms = 60_000;
    dsp.breaker_failure_ratio = 0.5;
    dsp.breaker_open_ms = open_ms;
    dsp.breaker_probe_every_ms = 50;
    dsp.breaker_close_after = 3;
}

async fn healthy() -> MockDspHandle {
    MockDsp::builder("good")
        .price(Price::Fixed(1.0))
        .start()
        .await
        .unwrap()
}

/// `(requests sent to it, circuit_open skips, circuit gauge)` of one DSP.
async fn dsp_counts(ex: &TestExchange, dsp: &str) -> (f64, f64, f64) {
    (
        ex.metric("exchange_dsp_requests_total", &[("dsp", dsp)])
            .await,
        ex.metric(
            "exchange_dsp_skipped_total",
            &[("dsp", dsp), ("reason", "circuit_open")],
        )
        .await,
        ex.metric("exchange_dsp_circuit_open", &[("dsp", dsp)])
            .await,
    )
}

/// Runs one auction with `tmax` 1 000, so the wait is the DSP deadline (500 ms in
/// `config_for`); the healthy DSP always wins it.
async fn auction(ex: &TestExchange, id: &str) -> Duration {
    let started = Instant::now();
    let body = banner_request(id, 0.0).replace("\"tmax\":200", "\"tmax\":1000");
    assert!(body.contains("\"tmax\":1000"));
    let answer = ex.auction(body).await;
    assert_eq!(answer.status, 200, "{id}");
    started.elapsed()
}

#[tokio::test]
async fn a_hanging_dsp_is_cut_off_and_every_skip_is_counted() {
    let hang = MockDsp::builder("hang")
        .behavior(Behavior::Hang)
        .start()
        .await
        .unwrap();
    let good = healthy().await;
    let mut config = config_for(&[&hang, &good]);
    // No probe during the test: every call after opening is a skip.
    breaker(&mut config, 0, 600_000);
    let ex = TestExchange::start(config).await;

    // Each auction waits for the hanging DSP's 500 ms; the fifth timeout opens its circuit.
    for i in 0..5 {
        assert_eq!(
            dsp_counts(&ex, "hang").await.2,
            0.0,
            "closed before call {i}"
        );
        let took = auction(&ex, &format!("wait-{i}")).await;
        assert!(took >= Duration::from_millis(490), "{took:?}");
    }
    assert_eq!(dsp_counts(&ex, "hang").await, (5.0, 0.0, 1.0));
    assert_eq!(
        ex.metric("exchange_dsp_timeouts_total", &[("dsp", "hang")])
            .await,
        5.0
    );

    // Open: auctions no longer wait for it, and each one counts one skip.
    for i in 0..20 {
        let took = auction(&ex, &format!("open-{i}")).await;
        assert!(
            took < Duration::from_millis(400),
            "auction {i} took {took:?}"
        );
    }
    assert_eq!(dsp_counts(&ex, "hang").await, (5.0, 20.0, 1.0));
    assert_eq!(hang.stats().requests, 5);
    assert_eq!(good.stats().requests, 25);
    assert_eq!(
        ex.metric(
            "exchange_dsp_skipped_total",
            &[("dsp", "good"), ("reason", "circuit_open")]
        )
        .await,
        0.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn a_dsp_answering_500_is_cut_off_then_probed_back_in() {
    let broken = MockDsp::builder("broken")
        .behavior(Behavior::Status(500))
        .start()
        .await
        .unwrap();
    let good = healthy().await;
    let mut config = config_for(&[&broken, &good]);
    breaker(&mut config, 0, 300);
    let ex = TestExchange::start(config).await;

    for i in 0..5 {
        auction(&ex, &format!("fail-{i}")).await;
    }
    assert_eq!(dsp_counts(&ex, "broken").await, (5.0, 0.0, 1.0));
    assert_eq!(
        ex.metric(
            "exchange_bids_rejected_total",
            &[("dsp", "broken"), ("reason", "bad_status")]
        )
        .await,
        5.0
    );

    // Still broken: after open_ms one probe goes out, fails, and the circuit stays open.
    let sent = Cell::new(5u32);
    let run = |prefix: &'static str| {
        let sent = &sent;
        let ex = &ex;
        move || async move {
            auction(ex, &format!("{prefix}-{}", sent.get())).await;
            sent.set(sent.get() + 1);
            dsp_counts(ex, "broken").await.0 >= 6.0
        }
    };
    assert!(eventually(Duration::from_secs(10), run("probe")).await);
    let (requests, skipped, open) = dsp_counts(&ex, "broken").await;
    assert_eq!((requests, open), (6.0, 1.0));
    assert_eq!(
        requests + skipped,
        f64::from(sent.get()),
        "every auction called or skipped it"
    );
    assert_eq!(broken.stats().requests, 6);

    // Recovered: probes succeed and, after three in a row, it is called normally again.
    broken.set_behavior(Behavior::Bid).unwrap();
    let closed = |prefix: &'static str| {
        let sent = &sent;
        let ex = &ex;
        move || async move {
            auction(ex, &format!("{prefix}-{}", sent.get())).await;
            sent.set(sent.get() + 1);
            dsp_counts(ex, "broken").await.2 == 0.0
        }
    };
    assert!(eventually(Duration::from_secs(10), closed("recover")).await);
    let (requests, skipped, _) = dsp_counts(&ex, "broken").await;
    // The failed probe, then three successful ones.
    assert_eq!(requests, 9.0);
    assert_eq!(requests + skipped, f64::from(sent.get()));
    for i in 0..5 {
        auction(&ex, &format!("closed-{i}")).await;
    }
    assert_eq!(dsp_counts(&ex, "broken").await, (14.0, skipped, 0.0));
    assert_eq!(broken.stats().requests, 14);
    assert_eq!(good.stats().requests, u64::from(sent.get()) + 5);
    ex.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_the_circuit_of_a_dsp_it_leaves_alone() {
    let broken = MockDsp::builder("broken")
        .behavior(Behavior::Status(500))
        .start()
        .await
        .unwrap();
    let good = healthy().await;
    let other = healthy().await;
    let mut config = config_for(&[&broken, &good]);
    // Open for a minute: only a reload could let it be called again within the test.
    breaker(&mut config, 0, 60_000);
    let ex = TestExchange::start(config).await;
    for i in 0..5 {
        auction(&ex, &format!("fail-{i}")).await;
    }
    assert_eq!(dsp_counts(&ex, "broken").await, (5.0, 0.0, 1.0));

    // A reload that adds a DSP and leaves `broken` as it was: its circuit stays open.
    let mut added = ex.config.clone();
    added
        .dsps
        .push(exchange::config::DspConfig::new("other", other.url()));
    ex.reload.reload(Ok(added.clone())).await.unwrap();
    for i in 0..3 {
        auction(&ex, &format!("kept-{i}")).await;
    }
    assert_eq!(dsp_counts(&ex, "broken").await, (5.0, 3.0, 1.0));
    assert_eq!(broken.stats().requests, 5);
    assert_eq!(other.stats().requests, 3);

    // A reload that changes `broken` itself starts it afresh: called again.
    let mut changed = added;
    changed.dsps[0].breaker_open_ms = 59_000;
    ex.reload.reload(Ok(changed)).await.unwrap();
    auction(&ex, "fresh").await;
    assert_eq!(dsp_counts(&ex, "broken").await.0, 6.0);
    assert_eq!(broken.stats().requests, 6);
    ex.stop().await;
}

#[tokio::test]
async fn a_failure_every_dsp_shares_opens_no_breaker() {
    // Two DSPs nobody listens for: every call fails at once, for both.
    let ports = [testkit::free_port().unwrap(), testkit::free_port().unwrap()];
    let mut config = exchange::Config::default();
    config.auction.dsp_timeout_ms = 500;
    config.dsps = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            exchange::config::DspConfig::new(
                format!("down-{i}"),
                format!("http://127.0.0.1:{port}/bid"),
            )
        })
        .collect();
    breaker(&mut config, 0, 60_000);
    breaker(&mut config, 1, 60_000);
    let ex = TestExchange::start(config).await;
    for i in 0..8 {
        let answer = ex.auction(banner_request(&format!("down-{i}"), 0.0)).await;
        assert_eq!(answer.status, 204);
    }
    for dsp in ["down-0", "down-1"] {
        // Called every time, never cut off: the failure is not one DSP's.
        assert_eq!(dsp_counts(&ex, dsp).await, (8.0, 0.0, 0.0), "{dsp}");
        assert_eq!(
            ex.metric("exchange_dsp_failures_excused_total", &[("dsp", dsp)])
                .await,
            8.0,
            "{dsp}"
        );
    }
    ex.stop().await;
}

#[tokio::test]
async fn one_dsp_failing_beside_a_healthy_one_is_cut_off() {
    let port = testkit::free_port().unwrap();
    let good = healthy().await;
    let mut config = config_for(&[&good]);
    config.dsps.insert(
        0,
        exchange::config::DspConfig::new("down", format!("http://127.0.0.1:{port}/bid")),
    );
    breaker(&mut config, 0, 60_000);
    let ex = TestExchange::start(config).await;
    for i in 0..8 {
        auction(&ex, &format!("one-down-{i}")).await;
    }
    // Opened after five failures; the other three auctions skipped it.
    assert_eq!(dsp_counts(&ex, "down").await, (5.0, 3.0, 1.0));
    assert_eq!(
        ex.metric("exchange_dsp_failures_excused_total", &[("dsp", "down")])
            .await,
        0.0
    );
    ex.stop().await;
}

#[test]
fn a_status_the_mock_cannot_send_is_refused_at_runtime_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dsp = healthy().await;
        assert!(dsp.set_behavior(Behavior::Status(99)).is_err());
        assert!(dsp.set_behavior(Behavior::NoBid204).is_ok());
    });
}

//! Budget metrics go to the recorder each `Budgets` was handed, and count exactly: a bid the
//! lease cannot cover, a winner whose charge lost the race, a bid without a `cid`, and the
//! spend one sync round reports.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use budget::metrics::DropReason;
use budget::{Budgets, Lookup, MemoryStore};
use common::config;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn prometheus() -> (budget::metrics::SharedRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (Arc::new(recorder), handle)
}

/// The value of the sample `series` (name and labels as rendered), if present.
fn sample(handle: &PrometheusHandle, series: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[tokio::test]
async fn drops_and_spend_are_counted_exactly_on_the_instance_recorder() {
    let (recorder, handle) = prometheus();
    let (other_recorder, other) = prometheus();
    let cfg = config(10_000_000);
    let node = Budgets::new(cfg.clone(), Arc::new(MemoryStore::new()), recorder).unwrap();
    let bystander = Budgets::new(cfg, Arc::new(MemoryStore::new()), other_recorder).unwrap();
    node.seed().await.unwrap();
    node.sync_once().await.unwrap();
    let Lookup::Found(c) = node.lookup("acme", Some("c1")) else {
        panic!("seeded campaign is known");
    };
    let lease = c.available();
    assert!(lease > 100, "a lease after one sync: {lease}");

    assert!(!node.can_cover(&c, lease + 1));
    assert!(node.can_cover(&c, lease));
    // Another auction empties the lease between this one's check and its charge.
    assert!(c.try_charge(lease - 10));
    assert!(!node.try_charge(&c, lease));
    assert!(node.try_charge(&c, 10));
    node.record_drop("acme", None, DropReason::NoCid);
    node.record_drop("acme", None, DropReason::NoCid);
    node.sync_once().await.unwrap();

    let dropped = |reason: &str| {
        sample(
            &handle,
            &format!("budget_bids_dropped_total{{dsp=\"acme\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dropped("insufficient"), Some(1.0));
    assert_eq!(dropped("charge_race"), Some(1.0));
    assert_eq!(dropped("no_cid"), Some(2.0));
    assert_eq!(dropped("unknown_campaign"), None);
    assert_eq!(
        sample(&handle, "budget_spend_micros_total{dsp=\"acme\"}"),
        Some(lease as f64)
    );
    assert_eq!(sample(&handle, "budget_sync_campaigns"), Some(1.0));
    assert!(handle
        .render()
        .contains("# HELP budget_bids_dropped_total Bids dropped for budget reasons"));

    // Nothing reached the other instance's recorder.
    assert_eq!(bystander.local("acme", "c1").map(|l| l.available), Some(0));
    assert!(!other.render().contains("budget_bids_dropped_total{"));
    assert!(!other.render().contains("budget_spend_micros_total{"));
}

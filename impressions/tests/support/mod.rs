//! Test support: temporary directories, a hand-driven clock and URL helpers. The real
//! `redis-server` comes from `testkit::redis`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use impressions::Clock;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "impressions-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<AtomicU64>);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Arc::new(move || at.load(Ordering::SeqCst))
    }
}

/// The query string of a URL.
pub fn query(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, q)| q)
}

/// A recorder for tests that do not read metrics.
pub fn recorder() -> impressions::metrics::SharedRecorder {
    Arc::new(metrics::NoopRecorder)
}

/// A Prometheus recorder of this test's own, and the handle that renders it.
pub fn prometheus() -> (
    impressions::metrics::SharedRecorder,
    metrics_exporter_prometheus::PrometheusHandle,
) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (Arc::new(recorder), handle)
}

/// The value of the sample `series` (name and labels as rendered), if present.
pub fn sample(handle: &metrics_exporter_prometheus::PrometheusHandle, series: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

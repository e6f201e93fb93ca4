//! The tracker's metric handles, registered on the recorder its [`crate::Tracker`] was handed
//! (never the process-global one). Every label here comes from a closed set, so all handles
//! are registered up front, except the quarantine reason, registered when it happens.

use std::sync::Arc;

use metrics::{Counter, Key, KeyName, Label, Level, Metadata, Recorder, Unit};

use crate::events::EventType;
use crate::events_sample::{Sampler, SAMPLED};
use crate::sign::{Kind, Rejection};

/// The recorder a [`crate::Tracker`] registers its metrics on, e.g. one
/// `metrics_exporter_prometheus::PrometheusRecorder` per exchange instance.
pub type SharedRecorder = Arc<dyn Recorder + Send + Sync>;

/// Counter: tracking URLs refused, labelled `kind` and `reason`.
pub const REJECTED: &str = "impressions_rejected_total";
/// Counter: events spooled because the dedup store could not answer, labelled `kind`.
pub const SPOOLED: &str = "impressions_spooled_total";
/// Counter: impression and click events logged, labelled `type`.
pub const EVENTS: &str = "impressions_events_total";
/// Counter: spooled records set aside unbilled, labelled `reason`.
pub const QUARANTINED: &str = "impressions_quarantined_total";
/// Counter: failed or timed-out Redis calls, labelled `reason`.
pub const REDIS_ERRORS: &str = "impressions_redis_errors_total";
/// Counter: failed event log or spool file operations (each is retried).
pub const FILE_IO_ERRORS: &str = "impressions_file_io_errors_total";
/// Counter: claims refused because the in-memory dedup set was full.
pub const MEMORY_DEDUP_FULL: &str = "impressions_memory_dedup_full_total";
/// Counter: impressions and clicks of test auctions, answered and logged but never billed,
/// labelled `kind`.
pub const TEST_EVENTS: &str = "impressions_test_events_total";
/// Counter: events not mirrored to the Redis stream (the file still has them).
pub const STREAM_DROPPED: &str = "impressions_stream_dropped_total";
/// Counter: live event log files closed and renamed (by size or age).
pub const ROTATIONS: &str = "impressions_events_rotations_total";
/// Counter: the live event log file reopened on request (`SIGUSR1`).
pub const REOPENS: &str = "impressions_events_reopens_total";
/// Counter: closed event log files gzipped.
pub const FILES_COMPRESSED: &str = "impressions_events_files_compressed_total";
/// Counter: closed event log files deleted past the retention.
pub const FILES_REMOVED: &str = "impressions_events_files_removed_total";
/// Counter: closed event log files that could not be compressed or deleted (kept, retried).
pub const HOUSEKEEPING_FAILURES: &str = "impressions_events_housekeeping_failures_total";
/// Counter: win, loss and late events left out by sampling, labelled `type`.
pub const SAMPLED_OUT: &str = "impressions_events_sampled_out_total";

const REJECTIONS: [Rejection; 6] = [
    Rejection::MissingSignature,
    Rejection::BadSignature,
    Rejection::Malformed,
    Rejection::WrongKind,
    Rejection::Expired,
    Rejection::NotYetValid,
];

/// The event types an impression or click URL ends in (see `Inner::settle`).
const TRACKED: [EventType; 6] = [
    EventType::Impression,
    EventType::Click,
    EventType::DuplicateImpression,
    EventType::DuplicateClick,
    EventType::InvalidImpression,
    EventType::InvalidClick,
];

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One tracker's handles. Cheap to clone; [`TrackerMetrics::default`] records nothing (for the
/// parts used on their own, outside a tracker).
#[derive(Clone)]
pub(crate) struct TrackerMetrics {
    recorder: Option<SharedRecorder>,
    /// `[kind][reason]`, kinds in [`kind_index`] order, reasons in [`REJECTIONS`] order.
    rejected: [[Counter; 6]; 2],
    spooled: [Counter; 2],
    /// By kind, in [`kind_index`] order.
    test_events: [Counter; 2],
    /// In [`TRACKED`] order.
    events: [Counter; 6],
    pub redis_timeouts: Counter,
    pub redis_failures: Counter,
    pub file_io_errors: Counter,
    pub memory_dedup_full: Counter,
    pub stream_dropped: Counter,
    pub rotations: Counter,
    pub reopens: Counter,
    pub files_compressed: Counter,
    pub files_removed: Counter,
    pub housekeeping_failures: Counter,
    /// In [`crate::events_sample::SAMPLED`] order.
    sampled_out: [Counter; 3],
}

impl Default for TrackerMetrics {
    fn default() -> Self {
        TrackerMetrics {
            recorder: None,
            rejected: std::array::from_fn(|_| std::array::from_fn(|_| Counter::noop())),
            spooled: std::array::from_fn(|_| Counter::noop()),
            test_events: std::array::from_fn(|_| Counter::noop()),
            events: std::array::from_fn(|_| Counter::noop()),
            redis_timeouts: Counter::noop(),
            redis_failures: Counter::noop(),
            file_io_errors: Counter::noop(),
            memory_dedup_full: Counter::noop(),
            stream_dropped: Counter::noop(),
            rotations: Counter::noop(),
            reopens: Counter::noop(),
            files_compressed: Counter::noop(),
            files_removed: Counter::noop(),
            housekeeping_failures: Counter::noop(),
            sampled_out: std::array::from_fn(|_| Counter::noop()),
        }
    }
}

impl std::fmt::Debug for TrackerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerMetrics")
            .field("recording", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Impression => 0,
        Kind::Click => 1,
    }
}

impl TrackerMetrics {
    /// Describes the tracker's metrics on `recorder` and registers every handle.
    pub fn new(recorder: SharedRecorder) -> Self {
        let r = &*recorder;
        describe(r);
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            let labels: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::from_static_parts(k, v))
                .collect();
            r.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let kinds = [Kind::Impression, Kind::Click];
        TrackerMetrics {
            rejected: kinds.map(|k| {
                REJECTIONS
                    .map(|why| counter(REJECTED, &[("kind", k.as_str()), ("reason", why.as_str())]))
            }),
            spooled: kinds.map(|k| counter(SPOOLED, &[("kind", k.as_str())])),
            test_events: kinds.map(|k| counter(TEST_EVENTS, &[("kind", k.as_str())])),
            events: TRACKED.map(|t| counter(EVENTS, &[("type", t.as_str())])),
            redis_timeouts: counter(REDIS_ERRORS, &[("reason", "timeout")]),
            redis_failures: counter(REDIS_ERRORS, &[("reason", "error")]),
            file_io_errors: counter(FILE_IO_ERRORS, &[]),
            memory_dedup_full: counter(MEMORY_DEDUP_FULL, &[]),
            stream_dropped: counter(STREAM_DROPPED, &[]),
            rotations: counter(ROTATIONS, &[]),
            reopens: counter(REOPENS, &[]),
            files_compressed: counter(FILES_COMPRESSED, &[]),
            files_removed: counter(FILES_REMOVED, &[]),
            housekeeping_failures: counter(HOUSEKEEPING_FAILURES, &[]),
            sampled_out: SAMPLED.map(|t| counter(SAMPLED_OUT, &[("type", t.as_str())])),
            recorder: Some(recorder),
        }
    }

    pub fn rejected(&self, kind: Kind, why: Rejection) {
        let reason = REJECTIONS.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[kind_index(kind)][reason].increment(1);
    }

    pub fn spooled(&self, kind: Kind) {
        self.spooled[kind_index(kind)].increment(1);
    }

    pub fn test_event(&self, kind: Kind) {
        self.test_events[kind_index(kind)].increment(1);
    }

    pub fn event(&self, kind: EventType) {
        if let Some(i) = TRACKED.iter().position(|t| *t == kind) {
            self.events[i].increment(1);
        }
    }

    /// An event of `kind` (a win, loss or late answer) left out by sampling.
    pub fn sampled_out(&self, kind: EventType) {
        if let Some(i) = Sampler::index(kind) {
            self.sampled_out[i].increment(1);
        }
    }

    pub fn quarantined(&self, reason: &str) {
        if let Some(r) = &self.recorder {
            let labels = vec![Label::new("reason", reason.to_owned())];
            r.register_counter(&Key::from_parts(QUARANTINED, labels), &METADATA)
                .increment(1);
        }
    }
}

fn describe(r: &dyn Recorder) {
    for (name, text) in [
        (REJECTED, "Tracking URLs refused (403), by kind and reason"),
        (
            SPOOLED,
            "Events spooled while the dedup store could not answer",
        ),
        (EVENTS, "Impression and click events logged, by type"),
        (
            TEST_EVENTS,
            "Impressions and clicks of test auctions: logged, never billed",
        ),
        (QUARANTINED, "Spooled records set aside unbilled, by reason"),
        (
            REDIS_ERRORS,
            "Failed or timed-out Redis calls of the tracker",
        ),
        (
            FILE_IO_ERRORS,
            "Failed event log or spool file operations (retried)",
        ),
        (
            MEMORY_DEDUP_FULL,
            "Claims refused because the in-memory dedup set was full",
        ),
        (STREAM_DROPPED, "Events not mirrored to the Redis stream"),
        (
            ROTATIONS,
            "Live event log files closed and renamed (size or age)",
        ),
        (REOPENS, "Live event log file reopened on SIGUSR1"),
        (FILES_COMPRESSED, "Closed event log files gzipped"),
        (
            FILES_REMOVED,
            "Closed event log files deleted past the retention",
        ),
        (
            HOUSEKEEPING_FAILURES,
            "Closed event log files that could not be compressed or deleted (retried)",
        ),
        (
            SAMPLED_OUT,
            "Win, loss and late events left out by sampling, by type",
        ),
    ] {
        r.describe_counter(
            KeyName::from_const_str(name),
            Some(Unit::Count),
            text.into(),
        );
    }
}

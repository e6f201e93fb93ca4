//! The event log at production volume: rotation by size and by age (exact file names),
//! compression and retention of closed files (exactly which files remain), crash leftovers,
//! reopening after an external move, sampling of win/loss/late events (billing never), and
//! reading a rotated log back whole.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use impressions::{
    read_log, BidRef, Event, EventLog, EventLogConfig, EventType, Report, SampleRates, Tracker,
    TrackerConfig, TrackingKey,
};
use support::{query, ManualClock, TempDir};

/// 2026-12-07T03:00:00Z.
const T0: u64 = 1_796_612_400_000;
const DAY: u64 = 86_400_000;

fn bid(n: u32) -> BidRef {
    BidRef {
        auction_id: format!("auction-{n:04}"),
        imp_id: "1".into(),
        bid_id: "b".into(),
        dsp: "dsp-a".into(),
        seat: "seat".into(),
        campaign: "camp".into(),
        creative_id: "cr".into(),
        price_micros: 2_000_000,
        currency: "USD".into(),
        auction_ts_ms: T0,
        ..BidRef::default()
    }
}

fn billed(n: u32) -> Event {
    let mut e = Event::for_bid(EventType::Impression, &bid(n), T0);
    e.impression_id = Some(format!("imp-{n:04}"));
    e.cost_micros = Some(2000);
    e
}

/// The file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

fn auction_ids(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    read_log(path, |e| out.push(e.auction_id)).unwrap();
    out
}

fn tracker_config(dir: &TempDir) -> TrackerConfig {
    let mut c = TrackerConfig {
        key: TrackingKey::from_secret("event-log-files-test-secret-0123456789").unwrap(),
        spool_dir: dir.path().join("spool"),
        replay_interval: Duration::from_secs(3600),
        ..TrackerConfig::default()
    };
    c.events.file = Some(dir.path().join("log").join("events.jsonl"));
    c
}

#[tokio::test]
async fn size_rotation_names_compresses_and_reads_back_whole() {
    let dir = TempDir::new("rotate-size");
    let line = serde_json::to_vec(&billed(0)).unwrap().len() as u64 + 1;
    let mut config = tracker_config(&dir);
    // Every third line closes the file; each billing append is written alone.
    config.events.rotate_bytes = 3 * line;
    let (recorder, metrics) = support::prometheus();
    let clock = ManualClock::new(T0);
    let tracker = Tracker::start_with_clock(config, None, clock.clock(), recorder)
        .await
        .unwrap();
    for n in 0..10 {
        tracker.record_event(&billed(n)).await.unwrap();
    }
    tracker.flush().await.unwrap();
    let log = dir.path().join("log");
    let expected = [
        "events.2026-12-07T03-00-00Z.0001.jsonl.gz",
        "events.2026-12-07T03-00-00Z.0002.jsonl.gz",
        "events.2026-12-07T03-00-00Z.0003.jsonl.gz",
        "events.jsonl",
    ];
    let compressed = testkit::eventually(Duration::from_secs(10), || {
        std::future::ready(names(&log) == expected)
    })
    .await;
    assert!(compressed, "{:?}", names(&log));
    let ids = auction_ids(&log.join("events.jsonl"));
    let want: Vec<String> = (0..10).map(|n| format!("auction-{n:04}")).collect();
    assert_eq!(ids, want, "every line once, in write order");
    assert_eq!(
        auction_ids(&log.join("events.2026-12-07T03-00-00Z.0002.jsonl.gz")),
        want[3..6],
        "a closed file read alone"
    );
    let report = Report::from_file(&log.join("events.jsonl")).unwrap();
    assert_eq!(report.impressions, 10);
    assert_eq!(report.spend_micros["USD"], 20_000);
    assert_eq!(
        support::sample(&metrics, "impressions_events_rotations_total"),
        Some(3.0)
    );
    let gzipped = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(
            support::sample(&metrics, "impressions_events_files_compressed_total") == Some(3.0),
        )
    })
    .await;
    assert!(gzipped, "{}", metrics.render());
    tracker.shutdown().await.unwrap();
}

#[tokio::test]
async fn age_rotation_closes_on_the_clock_and_keeps_an_empty_file() {
    let dir = TempDir::new("rotate-age");
    let path = dir.path().join("events.jsonl");
    let clock = ManualClock::new(T0);
    let log = EventLog::open_file_with_clock(
        EventLogConfig {
            file: Some(path.clone()),
            rotate_interval: Duration::from_secs(60),
            compress: false,
            ..EventLogConfig::default()
        },
        clock.clock(),
    )
    .unwrap();
    log.append(&billed(0)).await.unwrap();
    clock.set(T0 + 59_999);
    log.append(&billed(1)).await.unwrap();
    log.flush().await.unwrap();
    assert_eq!(names(dir.path()), ["events.jsonl"]);
    // The next line belongs to the new period: the old file is closed before it goes in.
    clock.set(T0 + 60_000);
    log.append(&billed(2)).await.unwrap();
    log.flush().await.unwrap();
    assert_eq!(
        names(dir.path()),
        ["events.2026-12-07T03-01-00Z.0001.jsonl", "events.jsonl"]
    );
    // A file is due an interval after it was opened (T0 + 60 s), and closed by a flush too.
    clock.set(T0 + 120_000);
    log.flush().await.unwrap();
    // Empty, the new live file is kept however long it stays open.
    clock.set(T0 + 600_000);
    log.flush().await.unwrap();
    assert_eq!(
        names(dir.path()),
        [
            "events.2026-12-07T03-01-00Z.0001.jsonl",
            "events.2026-12-07T03-02-00Z.0001.jsonl",
            "events.jsonl"
        ]
    );
    assert_eq!(
        auction_ids(&dir.path().join("events.2026-12-07T03-01-00Z.0001.jsonl")),
        ["auction-0000", "auction-0001"]
    );
    assert_eq!(
        auction_ids(&path),
        ["auction-0000", "auction-0001", "auction-0002"]
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_file_is_closed_on_time_without_a_write() {
    let dir = TempDir::new("rotate-idle");
    let path = dir.path().join("events.jsonl");
    let log = EventLog::open_file(EventLogConfig {
        file: Some(path.clone()),
        rotate_interval: Duration::from_millis(50),
        compress: false,
        ..EventLogConfig::default()
    })
    .unwrap();
    log.append(&billed(0)).await.unwrap();
    // Nothing more is written: the writer's own timer closes the file.
    let closed = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(names(dir.path()).len() == 2)
    })
    .await;
    assert!(closed, "{:?}", names(dir.path()));
    let names = names(dir.path());
    assert!(
        names[0].starts_with("events.") && names[0].ends_with(".0001.jsonl"),
        "{names:?}"
    );
    assert_eq!(names[1], "events.jsonl");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(auction_ids(&path), ["auction-0000"]);
    log.shutdown().await.unwrap();
}

fn write_closed(dir: &Path, at_ms: u64, n: u32, gz: bool) -> String {
    let stamp = {
        let t = time_stamp(at_ms);
        format!("events.{t}.0001.jsonl")
    };
    let mut line = serde_json::to_vec(&billed(n)).unwrap();
    line.push(b'\n');
    if gz {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &line).unwrap();
        std::fs::write(dir.join(format!("{stamp}.gz")), enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(dir.join(&stamp), &line).unwrap();
    }
    stamp
}

/// `2026-12-07T03-00-00Z` for `ms`, as the writer names closed files.
fn time_stamp(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[tokio::test]
async fn retention_and_crash_leftovers_leave_exactly_the_kept_files() {
    let dir = TempDir::new("retention");
    let d = dir.path();
    write_closed(d, T0 - 10 * DAY, 1, false);
    write_closed(d, T0 - 4 * DAY, 2, true);
    // A crash between renaming the .gz into place and removing the plain file: both whole.
    let pair = write_closed(d, T0 - 3 * DAY, 3, false);
    write_closed(d, T0 - 3 * DAY, 3, true);
    let g4 = write_closed(d, T0 - 2 * DAY, 4, false);
    let g5 = write_closed(d, T0 - DAY, 5, false);
    // A compression cut short.
    std::fs::write(d.join(format!("{g5}.gz.tmp")), b"partial").unwrap();
    let path = d.join("events.jsonl");
    assert_eq!(
        auction_ids(&path),
        [
            "auction-0001",
            "auction-0002",
            "auction-0003",
            "auction-0004",
            "auction-0005"
        ],
        "the plain and .gz copies of one file are read once"
    );

    let clock = ManualClock::new(T0);
    let log = EventLog::open_file_with_clock(
        EventLogConfig {
            file: Some(path.clone()),
            rotate_bytes: 1 << 20,
            retention_files: 3,
            retention_age: Duration::from_secs(7 * 86_400),
            ..EventLogConfig::default()
        },
        clock.clock(),
    )
    .unwrap();
    // The start sweep runs in the background; whichever of it and this one runs first does
    // the work, the other finds it done.
    log.housekeep().await;
    assert_eq!(
        names(d),
        [
            format!("{pair}.gz"),
            format!("{g4}.gz"),
            format!("{g5}.gz"),
            "events.jsonl".to_owned()
        ]
    );
    assert_eq!(
        auction_ids(&path),
        ["auction-0003", "auction-0004", "auction-0005"]
    );
    // Age alone: five days on, the file closed at T0 - 3 d is past 7 days, the one closed at
    // T0 - 2 d is exactly 7 days old and stays.
    clock.set(T0 + 5 * DAY);
    let stats = log.housekeep().await;
    assert_eq!(stats.failures, 0);
    assert_eq!(
        names(d),
        [
            format!("{g4}.gz"),
            format!("{g5}.gz"),
            "events.jsonl".to_owned()
        ]
    );
    assert_eq!(auction_ids(&path), ["auction-0004", "auction-0005"]);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn reopen_after_an_external_move_splits_the_log_losing_nothing() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("events.jsonl");
    let log = EventLog::open_file(EventLogConfig {
        file: Some(path.clone()),
        ..EventLogConfig::default()
    })
    .unwrap();
    for n in 0..3 {
        log.append(&billed(n)).await.unwrap();
    }
    let moved = dir.path().join("events.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    // Written after the move, before the signal: it follows the file it was written to.
    log.append(&billed(3)).await.unwrap();
    log.reopen().await.unwrap();
    for n in 4..6 {
        log.append(&billed(n)).await.unwrap();
    }
    log.shutdown().await.unwrap();
    let mut old = Vec::new();
    impressions::read_events(&moved, |e| old.push(e.auction_id)).unwrap();
    assert_eq!(
        old,
        [
            "auction-0000",
            "auction-0001",
            "auction-0002",
            "auction-0003"
        ]
    );
    assert_eq!(auction_ids(&path), ["auction-0004", "auction-0005"]);
}

#[tokio::test]
async fn win_loss_and_late_are_sampled_and_billing_never() {
    let dir = TempDir::new("sample");
    let mut config = tracker_config(&dir);
    config.events.sample = SampleRates {
        win: 0.0,
        loss: 1.0,
        late: 0.0,
    };
    let (recorder, metrics) = support::prometheus();
    let clock = ManualClock::new(T0 + 1_000);
    let tracker = Tracker::start_with_clock(config, None, clock.clock(), recorder)
        .await
        .unwrap();
    for n in 0..20 {
        let b = bid(n);
        tracker.try_record_event(Event::win(&b, T0), 1_000).unwrap();
        tracker
            .try_record_event(Event::loss(&b, 102, T0), 1_000)
            .unwrap();
        tracker.record_event(&Event::late(&b, 5, T0)).await.unwrap();
    }
    // A billed impression through its signed URL, and the same hit again (a duplicate).
    let url = tracker.impression_url(&bid(99), None);
    for _ in 0..2 {
        tracker.record_impression(query(&url)).await.unwrap();
    }
    tracker.flush().await.unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    read_log(&dir.path().join("log").join("events.jsonl"), |e| {
        *kinds.entry(e.kind.as_str()).or_insert(0u32) += 1;
    })
    .unwrap();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [("duplicate_impression", 1), ("impression", 1), ("loss", 20)]
    );
    for (kind, out) in [("win", 20.0), ("loss", 0.0), ("late", 20.0)] {
        assert_eq!(
            support::sample(
                &metrics,
                &format!("impressions_events_sampled_out_total{{type=\"{kind}\"}}")
            ),
            Some(out),
            "{kind}"
        );
    }
    tracker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_sample_rate_out_of_range_is_refused() {
    let dir = TempDir::new("sample-bad");
    let err = EventLog::open_file(EventLogConfig {
        file: Some(dir.path().join("events.jsonl")),
        sample: SampleRates {
            win: 1.5,
            loss: -1.0,
            late: 1.0,
        },
        ..EventLogConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: events.sample.win must be within 0.0..=1.0, got 1.5; \
         events.sample.loss must be within 0.0..=1.0, got -1"
    );
}

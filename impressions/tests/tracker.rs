//! The tracker end to end without Redis (embedded default): decorated markup, impression and
//! click recording, dedup, the memory store's bound through the spool, the event file and the
//! report read from it, and the event file's torn tail.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use impressions::{
    read_events, AdFormat, BidRef, Billed, BilledHook, Error, Event, EventLog, EventLogConfig,
    EventType, Outcome, Rejection, Report, Tracker, TrackerConfig, TrackingKey,
};
use support::{query, ManualClock, TempDir};

const T0: u64 = 1_700_000_000_000;

fn bid(n: u32) -> BidRef {
    BidRef {
        auction_id: format!("req-{n}"),
        imp_id: "1".into(),
        bid_id: format!("bid-{n}"),
        dsp: if n & 1 == 0 {
            "dsp-a".into()
        } else {
            "dsp-b".into()
        },
        seat: "seat".into(),
        campaign: format!("camp-{}", n % 3),
        creative_id: "cr-1".into(),
        price_micros: 2_500_000,
        currency: "USD".into(),
        auction_ts_ms: T0,
        ..BidRef::default()
    }
}

fn config(dir: &TempDir) -> TrackerConfig {
    let mut c = TrackerConfig {
        public_url: "https://ex.test".into(),
        key: TrackingKey::from_secret("integration-test-secret-0123456789").unwrap(),
        spool_dir: dir.path().join("spool"),
        // Replays run when a test asks for them, so their effects are deterministic.
        replay_interval: Duration::from_secs(3600),
        ..TrackerConfig::default()
    };
    c.events.file = Some(dir.path().join("events.jsonl"));
    c.events.fsync_interval = Duration::from_millis(10);
    c
}

fn recording_hook() -> (BilledHook, Arc<Mutex<Vec<Billed>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (
        Arc::new(move |b: &Billed| sink.lock().unwrap().push(b.clone())),
        seen,
    )
}

fn events(dir: &TempDir) -> Vec<Event> {
    let mut out = Vec::new();
    read_events(&dir.path().join("events.jsonl"), |e| out.push(e)).unwrap();
    out
}

#[tokio::test]
async fn banner_impression_and_click_are_billed_once() {
    let dir = TempDir::new("e2e");
    let clock = ManualClock::new(T0 + 5_000);
    let (hook, billed) = recording_hook();
    let tracker =
        Tracker::start_with_clock(config(&dir), Some(hook), clock.clock(), support::recorder())
            .await
            .unwrap();

    let adm = r#"<html><body><a href="https://shop.test/p?id=7&amp;src=ad"><img src="https://cdn.test/b.png"></a></body></html>"#;
    let decorated = tracker.decorate(
        &bid(1),
        Some("https://dsp.test/bill?p=2.5"),
        adm,
        AdFormat::Banner,
    );
    assert!(decorated.burl.starts_with("https://ex.test/event/imp?"));
    let adm = decorated.adm.unwrap();
    let pixel = format!(r#"<img src="{}""#, decorated.burl.replace('&', "&amp;"));
    assert!(adm.contains(&pixel), "{adm}");
    let click_start = adm.find("https://ex.test/event/click?").unwrap();
    let click_url =
        adm[click_start..adm[click_start..].find('"').unwrap() + click_start].replace("&amp;", "&");

    // The burl and the pixel are the same URL: whichever fires first bills.
    let first = tracker
        .record_impression(query(&decorated.burl))
        .await
        .unwrap();
    let Outcome::Billed(event) = first else {
        panic!("first sighting not billed: {first:?}")
    };
    assert_eq!(event.kind, EventType::Impression);
    assert_eq!(event.cost_micros, Some(2_500));
    assert_eq!(event.price_micros, 2_500_000);
    assert_eq!(
        tracker
            .record_impression(query(&decorated.burl))
            .await
            .unwrap(),
        Outcome::Duplicate
    );

    let tampered = decorated.burl.replace("p=2500000", "p=9500000");
    assert_ne!(tampered, decorated.burl);
    assert!(matches!(
        tracker.record_impression(query(&tampered)).await,
        Err(Error::Rejected(Rejection::BadSignature))
    ));
    assert!(matches!(
        tracker.record_click(query(&decorated.burl)).await,
        Err(Error::Rejected(Rejection::WrongKind))
    ));

    let click = tracker.record_click(query(&click_url)).await.unwrap();
    assert_eq!(click.landing, "https://shop.test/p?id=7&src=ad");
    assert!(matches!(click.outcome, Outcome::Billed(ref e) if e.kind == EventType::Click));
    let again = tracker.record_click(query(&click_url)).await.unwrap();
    assert_eq!(
        (again.landing.as_str(), again.outcome),
        ("https://shop.test/p?id=7&src=ad", Outcome::Duplicate)
    );

    // Past the window the URL is refused.
    clock.set(T0 + 3_600_001);
    assert!(matches!(
        tracker.record_impression(query(&decorated.burl)).await,
        Err(Error::Rejected(Rejection::Expired))
    ));

    tracker
        .record_event(&Event::win(&bid(1), T0 + 1))
        .await
        .unwrap();
    tracker.shutdown().await.unwrap();
    assert!(matches!(
        tracker.record_impression(query(&decorated.burl)).await,
        Err(Error::Closed)
    ));

    let hook_calls = billed.lock().unwrap().clone();
    assert_eq!(hook_calls.len(), 1, "burl fired once");
    assert_eq!(
        hook_calls[0].burl.as_deref(),
        Some("https://dsp.test/bill?p=2.5")
    );

    let kinds: Vec<EventType> = events(&dir).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventType::Impression,
            EventType::DuplicateImpression,
            EventType::Click,
            EventType::DuplicateClick,
            EventType::Win
        ]
    );
    let all = events(&dir);
    assert_eq!(
        all[0].impression_id, all[2].impression_id,
        "a click carries its impression's id"
    );
    assert_eq!(all[0].auction_id, "req-1");
    assert_eq!(all[0].campaign, "camp-1");

    let report = Report::from_file(&dir.path().join("events.jsonl")).unwrap();
    assert_eq!(
        (
            report.impressions,
            report.clicks,
            report.duplicates_dropped,
            report.wins
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(report.spend_micros["USD"], 2_500);
    assert_eq!(report.ctr_bp, Some(10_000));
}

#[tokio::test]
async fn the_event_line_has_the_promised_fields() {
    let dir = TempDir::new("fields");
    let clock = ManualClock::new(T0 + 1);
    let tracker = Tracker::start_with_clock(config(&dir), None, clock.clock(), support::recorder())
        .await
        .unwrap();
    let url = tracker.impression_url(&bid(2), None);
    tracker.record_impression(query(&url)).await.unwrap();
    tracker.shutdown().await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for field in [
        "type",
        "ts",
        "auction_id",
        "imp_id",
        "bid_id",
        "dsp",
        "campaign",
        "price_micros",
        "currency",
        "impression_id",
    ] {
        assert!(line.get(field).is_some(), "missing {field} in {line}");
    }
    assert_eq!(line["type"], "impression");
    assert_eq!(line["ts"], T0 + 1);
    assert_eq!(line["price_micros"], 2_500_000);
}

#[tokio::test]
async fn a_billed_impression_carries_its_sale_and_splits_gross_into_net_and_margin() {
    let dir = TempDir::new("sale");
    let clock = ManualClock::new(T0 + 1);
    let tracker = Tracker::start_with_clock(config(&dir), None, clock.clock(), support::recorder())
        .await
        .unwrap();
    let sold = BidRef {
        publisher: "pub-7".into(),
        domain: "news.example".into(),
        country: "DEU".into(),
        media_type: Some(AdFormat::Video),
        // 2.50 gross, 15% margin: the publisher was told 2.125.
        net_price_micros: Some(2_125_000),
        ..bid(2)
    };
    let imp = tracker.impression_url(&sold, None);
    let click = tracker.click_url(&sold, "https://shop.test/").unwrap();
    tracker.record_impression(query(&imp)).await.unwrap();
    tracker.record_click(query(&click)).await.unwrap();
    // A URL of a bid without a net price (signed before net prices existed): no margin.
    let plain = tracker.impression_url(&bid(4), None);
    tracker.record_impression(query(&plain)).await.unwrap();
    tracker.shutdown().await.unwrap();

    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let billed = &lines[0];
    assert_eq!(billed["type"], "impression");
    assert_eq!(billed["publisher"], "pub-7");
    assert_eq!(billed["domain"], "news.example");
    assert!(billed.get("bundle").is_none(), "{billed}");
    assert_eq!(billed["country"], "DEU");
    assert_eq!(billed["media_type"], "video");
    assert_eq!(billed["net_price_micros"], 2_125_000);
    assert_eq!(billed["cost_micros"], 2500);
    assert_eq!(billed["gross_micros"], 2500);
    assert_eq!(billed["net_micros"], 2125);
    assert_eq!(billed["margin_micros"], 375);
    let clicked = &lines[1];
    assert_eq!(clicked["type"], "click");
    assert_eq!(clicked["publisher"], "pub-7");
    assert!(
        clicked.get("gross_micros").is_none(),
        "a click bills nothing"
    );
    let plain = &lines[2];
    assert!(plain.get("publisher").is_none(), "{plain}");
    assert_eq!(
        (
            &plain["gross_micros"],
            &plain["net_micros"],
            &plain["margin_micros"]
        ),
        (
            &serde_json::json!(2500),
            &serde_json::json!(2500),
            &serde_json::json!(0)
        )
    );

    let report = Report::from_files(
        &[dir.path().join("events.jsonl")],
        &[impressions::Dimension::Publisher],
    )
    .unwrap();
    let rows: Vec<(&str, u64, u64, u64, u64, u64)> = report
        .rows
        .iter()
        .map(|r| {
            let t = &r.totals;
            (
                r.key["publisher"].as_str(),
                t.impressions,
                t.clicks,
                t.spend_micros,
                t.payout_micros,
                t.margin_micros,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("", 1, 0, 2500, 2500, 0), ("pub-7", 1, 1, 2500, 2125, 375)]
    );
}

#[tokio::test]
async fn full_memory_store_spools_instead_of_forgetting_then_replays() {
    let dir = TempDir::new("full");
    let clock = ManualClock::new(T0);
    let (hook, billed) = recording_hook();
    let mut cfg = config(&dir);
    cfg.memory_capacity = 1;
    let ttl = cfg.dedup_ttl_ms();
    let tracker = Tracker::start_with_clock(cfg, Some(hook), clock.clock(), support::recorder())
        .await
        .unwrap();

    let a = tracker.impression_url(&bid(1), None);
    assert!(matches!(
        tracker.record_impression(query(&a)).await.unwrap(),
        Outcome::Billed(_)
    ));

    // Shortly before A's entry expires, B arrives: the store is full of live ids.
    let late = T0 + ttl - 2_000;
    clock.set(late);
    let b_bid = BidRef {
        auction_ts_ms: late - 1_000,
        ..bid(2)
    };
    let b = tracker.impression_url(&b_bid, Some("https://dsp.test/b2"));
    assert_eq!(
        tracker.record_impression(query(&b)).await.unwrap(),
        Outcome::Spooled
    );
    assert_eq!(
        tracker.record_impression(query(&b)).await.unwrap(),
        Outcome::Spooled
    );
    assert_eq!(tracker.spooled(), 2);

    // Still full: the replay keeps everything.
    let stats = tracker.replay_now().await.unwrap();
    assert_eq!((stats.billed, stats.remaining), (0, 2));

    clock.set(T0 + ttl + 1);
    let stats = tracker.replay_now().await.unwrap();
    assert_eq!(
        (
            stats.billed,
            stats.duplicates,
            stats.quarantined,
            stats.remaining
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(tracker.spooled(), 0);
    tracker.shutdown().await.unwrap();

    let hooks = billed.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].burl.as_deref(), Some("https://dsp.test/b2"));
    assert!(hooks[1].event.replayed);
    let report = Report::from_file(&dir.path().join("events.jsonl")).unwrap();
    assert_eq!((report.impressions, report.duplicates_dropped), (2, 1));
}

#[tokio::test]
async fn spooled_events_past_the_dedup_horizon_are_quarantined_not_billed() {
    let dir = TempDir::new("horizon");
    let clock = ManualClock::new(T0);
    let mut cfg = config(&dir);
    cfg.memory_capacity = 1;
    let ttl = cfg.dedup_ttl_ms();
    let tracker = Tracker::start_with_clock(cfg, None, clock.clock(), support::recorder())
        .await
        .unwrap();
    let a = tracker.impression_url(&bid(1), None);
    tracker.record_impression(query(&a)).await.unwrap();
    let b = tracker.impression_url(&bid(2), None);
    assert_eq!(
        tracker.record_impression(query(&b)).await.unwrap(),
        Outcome::Spooled
    );

    // By now an entry written for B on another node could have expired: B cannot be checked.
    clock.set(T0 + ttl + 1);
    let stats = tracker.replay_now().await.unwrap();
    assert_eq!(
        (stats.billed, stats.quarantined, stats.remaining),
        (0, 1, 0)
    );
    tracker.shutdown().await.unwrap();

    let kept = std::fs::read_to_string(dir.path().join("spool/unverifiable.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(kept.trim()).unwrap();
    assert_eq!(line["reason"], "past_dedup_horizon");
    assert_eq!(line["record"]["data"]["bid"]["auction_id"], "req-2");
    assert_eq!(
        Report::from_file(&dir.path().join("events.jsonl"))
            .unwrap()
            .impressions,
        1
    );
}

#[tokio::test]
async fn spool_survives_a_restart_of_the_tracker() {
    let dir = TempDir::new("restart");
    let clock = ManualClock::new(T0);
    let mut cfg = config(&dir);
    cfg.memory_capacity = 1;
    let ttl = cfg.dedup_ttl_ms();
    {
        let tracker =
            Tracker::start_with_clock(cfg.clone(), None, clock.clock(), support::recorder())
                .await
                .unwrap();
        tracker
            .record_impression(query(&tracker.impression_url(&bid(1), None)))
            .await
            .unwrap();
        let b = tracker.impression_url(
            &BidRef {
                auction_ts_ms: T0 + ttl / 2,
                ..bid(2)
            },
            None,
        );
        clock.set(T0 + ttl / 2);
        assert_eq!(
            tracker.record_impression(query(&b)).await.unwrap(),
            Outcome::Spooled
        );
        // Dropped without shutdown, as a crash would leave it.
    }
    let tracker = Tracker::start_with_clock(cfg, None, clock.clock(), support::recorder())
        .await
        .unwrap();
    assert_eq!(tracker.spooled(), 1);
    let stats = tracker.replay_now().await.unwrap();
    assert_eq!((stats.billed, stats.remaining), (1, 0));
    tracker.shutdown().await.unwrap();
}

#[tokio::test]
async fn event_file_torn_tail_is_skipped_and_reported() {
    let dir = TempDir::new("torn");
    let path = dir.path().join("events.jsonl");
    let open = || {
        EventLog::open_file(EventLogConfig {
            file: Some(path.clone()),
            fsync_interval: Duration::from_millis(5),
            ..EventLogConfig::default()
        })
        .unwrap()
    };
    let log = open();
    for n in 0..10 {
        log.append(&Event::win(&bid(n), T0 + u64::from(n)))
            .await
            .unwrap();
    }
    log.shutdown().await.unwrap();
    assert!(matches!(
        log.append(&Event::win(&bid(0), T0)).await,
        Err(Error::Closed)
    ));

    // A crash mid-line: the last line is cut in the middle.
    let full = std::fs::read(&path).unwrap();
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&path, &full[..last_start + 20]).unwrap();
    let mut read = Vec::new();
    let stats = read_events(&path, |e| read.push(e)).unwrap();
    assert_eq!(read.len(), 9, "everything before the torn line is read");
    assert_eq!(read[8].auction_id, "req-8");
    assert_eq!((stats.torn_tail_bytes, stats.bad_lines), (20, 0));

    // Garbage appended without a newline is a torn tail too.
    std::fs::write(&path, &full).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"\x00\x00{\"type\":\"imp")
        .unwrap();
    let mut read = Vec::new();
    let stats = read_events(&path, |e| read.push(e)).unwrap();
    assert_eq!((read.len(), stats.torn_tail_bytes), (10, 14));

    // A log reopened after the crash cuts the torn tail, so new events do not fuse with it.
    let log = open();
    log.append(&Event::loss(&bid(99), 102, T0)).await.unwrap();
    log.shutdown().await.unwrap();
    let mut read = Vec::new();
    let stats = read_events(&path, |e| read.push(e)).unwrap();
    assert_eq!(
        (read.len(), stats.torn_tail_bytes, stats.bad_lines),
        (11, 0, 0)
    );
    assert_eq!(read[10].kind, EventType::Loss);
    assert_eq!(read[10].loss_reason, Some(102));
}

#[tokio::test]
async fn flush_makes_events_readable_without_shutdown() {
    let dir = TempDir::new("flush");
    let path = dir.path().join("events.jsonl");
    let log = EventLog::open_file(EventLogConfig {
        file: Some(path.clone()),
        fsync_interval: Duration::from_secs(3600),
        ..EventLogConfig::default()
    })
    .unwrap();
    for n in 0..1000 {
        log.append(&Event::late(&bid(n), 7, T0)).await.unwrap();
    }
    log.flush().await.unwrap();
    let mut count = 0;
    read_events(&path, |e| {
        assert_eq!(e.late_ms, Some(7));
        count += 1;
    })
    .unwrap();
    assert_eq!(count, 1000);
}

/// Counts the lines of the event file as written so far (without a flush).
fn lines_written(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[tokio::test]
async fn non_billing_events_are_bounded_batched_and_never_lost_to_shutdown() {
    let dir = TempDir::new("try-append");
    let path = dir.path().join("events.jsonl");
    let log = EventLog::open_file(EventLogConfig {
        file: Some(path.clone()),
        fsync_interval: Duration::from_secs(3600),
        // Long enough that nothing lingering is written before the test looks.
        linger: Duration::from_secs(30),
        queue: 64,
        ..EventLogConfig::default()
    })
    .unwrap();

    // A current-thread runtime: the writer cannot run before this loop yields, so the queue
    // fills to the bound exactly.
    let results: Vec<_> = (0..40)
        .map(|n| log.try_append(Event::win(&bid(n), T0), 32))
        .collect();
    assert!(results[..32].iter().all(Result::is_ok));
    assert!(results[32..].iter().all(|r| matches!(r, Err(Error::Busy))));

    // Lingering: read, not yet written. The writer has taken all 32 off the queue once a
    // queue bound of 1 admits one more event (a loss, which lingers with them).
    let taken = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(log.try_append(Event::loss(&bid(50), 2, T0), 1).is_ok())
    })
    .await;
    assert!(taken, "the writer never read the queue");
    assert_eq!(lines_written(&path), 0);

    // A billing event ends the wait: it and every lingering event are written at once.
    let mut billed = Event::for_bid(EventType::Impression, &bid(99), T0);
    billed.cost_micros = Some(2_500);
    log.append(&billed).await.unwrap();
    let written = testkit::eventually(Duration::from_secs(2), || {
        std::future::ready(lines_written(&path) >= 34)
    })
    .await;
    assert!(written, "only {} lines written", lines_written(&path));
    assert_eq!(lines_written(&path), 34);

    // Accepted before shutdown: written by it, though still lingering.
    log.try_append(Event::late(&bid(7), 12, T0), 32).unwrap();
    log.shutdown().await.unwrap();
    assert!(matches!(
        log.try_append(Event::win(&bid(8), T0), 32),
        Err(Error::Closed)
    ));
    let mut read = Vec::new();
    read_events(&path, |e| read.push(e)).unwrap();
    assert_eq!(read.len(), 35);
    assert!(read[..32].iter().all(|e| e.kind == EventType::Win));
    assert_eq!(read[32].kind, EventType::Loss);
    assert_eq!(read[33].kind, EventType::Impression);
    assert_eq!(read[34].late_ms, Some(12));
}

#[tokio::test]
async fn config_problems_are_reported() {
    let dir = TempDir::new("cfg");
    let mut cfg = config(&dir);
    cfg.public_url = "ex.test".into();
    cfg.time_bucket_ms = 0;
    let err = Tracker::start(cfg, None, support::recorder())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("public_url") && err.contains("time_bucket_ms"),
        "{err}"
    );
    let mut cfg = config(&dir);
    cfg.redis = Some(impressions::RedisConfig::new(
        "redis://user:hunter2@127.0.0.1:6379/0",
    ));
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("integration-test-secret"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("redis://<redacted>@127.0.0.1:6379/0"),
        "{shown}"
    );
}

#[tokio::test]
async fn metrics_count_exactly_on_the_tracker_own_recorder() {
    let dir = TempDir::new("metrics");
    let other_dir = TempDir::new("metrics-other");
    let clock = ManualClock::new(T0 + 5_000);
    let (recorder, handle) = support::prometheus();
    let (other_recorder, other) = support::prometheus();
    let tracker = Tracker::start_with_clock(config(&dir), None, clock.clock(), recorder)
        .await
        .unwrap();
    let bystander =
        Tracker::start_with_clock(config(&other_dir), None, clock.clock(), other_recorder)
            .await
            .unwrap();

    let burl = tracker.impression_url(&bid(1), None);
    let click = tracker
        .click_url(&bid(1), "https://shop.test/landing")
        .unwrap();
    for _ in 0..3 {
        tracker.record_impression(query(&burl)).await.unwrap();
    }
    tracker.record_click(query(&click)).await.unwrap();
    let tampered = burl.replace("p=2500000", "p=9500000");
    for _ in 0..2 {
        assert!(tracker.record_impression(query(&tampered)).await.is_err());
    }
    assert!(tracker.record_impression(query(&click)).await.is_err());

    let count = |series: &str| support::sample(&handle, series);
    assert_eq!(
        count(r#"impressions_events_total{type="impression"}"#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"impressions_events_total{type="duplicate_impression"}"#),
        Some(2.0)
    );
    assert_eq!(
        count(r#"impressions_events_total{type="click"}"#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"impressions_rejected_total{kind="imp",reason="bad_signature"}"#),
        Some(2.0)
    );
    assert_eq!(
        count(r#"impressions_rejected_total{kind="imp",reason="wrong_kind"}"#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"impressions_rejected_total{kind="click",reason="bad_signature"}"#),
        Some(0.0)
    );
    assert_eq!(count(r#"impressions_spooled_total{kind="imp"}"#), Some(0.0));
    // The other instance saw none of it.
    assert_eq!(
        support::sample(&other, r#"impressions_events_total{type="impression"}"#),
        Some(0.0)
    );
    tracker.shutdown().await.unwrap();
    bystander.shutdown().await.unwrap();
}

//! A small run, recorded through the real [`Recorder`], that the report tests render.

use std::time::Duration;

use crate::stats::{Outcome, PhaseSummary, Recorder, RunReport};

/// Three seconds at 100/s: a quarter of the answers are `204`s, latencies from 0.5 ms rising
/// by 1 ms each second.
pub(super) fn sample_report(label: &str) -> RunReport {
    let mut rec = Recorder::new();
    for t in 0..3u32 {
        for i in 0..100u64 {
            rec.current.scheduled();
            rec.current.sent(1);
            let status = if i % 4 == 0 { 204 } else { 200 };
            let bids = u32::from(status == 200);
            rec.current.record(
                Duration::from_micros(500 + i * 20 + u64::from(t) * 1000),
                Outcome::Answered { status, bids },
            );
        }
        rec.rotate(t, 100.0);
    }
    let (total, timeline) = rec.finish();
    RunReport {
        label: label.to_owned(),
        mode: "run".to_owned(),
        url: "http://127.0.0.1:8080/openrtb2/auction".to_owned(),
        target_rate: 100.0,
        plan: vec![
            PhaseSummary {
                rate: 100.0,
                duration_s: 1.0,
                measured: false,
            },
            PhaseSummary {
                rate: 100.0,
                duration_s: 3.0,
                measured: true,
            },
        ],
        warmup_s: 1.0,
        planned_s: 3.0,
        elapsed_s: 3.0,
        connections: 8,
        sent_rate: 100.0,
        achieved_rate: 100.0,
        counts: total.counts.clone(),
        latency: total.latency(),
        split: total.split(),
        percentiles: total.curve(),
        timeline,
        ..RunReport::default()
    }
}

//! The text reports for a terminal: the summary table of a run, the per-second progress line
//! and timeline, and several runs side by side.

use std::fmt::Write as _;

use crate::stats::{Counts, LatencySummary, RunReport, SecondReport};

/// Milliseconds from microseconds, with the precision the magnitude deserves.
pub fn fmt_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub(super) fn fmt_rate(r: f64) -> String {
    if r >= 100.0 || r == r.trunc() {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// One line per second, for the progress printed while a run goes on.
pub fn progress_line(row: &SecondReport) -> String {
    let c = &row.counts;
    let l = &row.latency;
    format!(
        "[{:>4}s] target {:>8}  sent {:>8}  answered {:>8}  p50 {:>9}  p99 {:>9}  max {:>9}  \
         200:{} 204:{} 4xx:{} 5xx:{} timeout:{} error:{} dropped:{}",
        row.t,
        fmt_rate(row.target_rate),
        fmt_rate(c.sent as f64),
        fmt_rate(c.answered as f64),
        fmt_ms(l.p50_us),
        fmt_ms(l.p99_us),
        fmt_ms(l.max_us),
        c.status_200,
        c.status_204,
        c.status_4xx,
        c.status_5xx,
        c.timeouts,
        c.errors,
        c.dropped,
    )
}

/// The summary table of one run.
pub fn render_table(r: &RunReport) -> String {
    let mut out = String::new();
    let c = &r.counts;
    let l = &r.latency;
    let _ = writeln!(out, "loadtest {}  {}", r.mode, r.url);
    if r.label != r.url && !r.label.is_empty() {
        let _ = writeln!(out, "  label        {}", r.label);
    }
    let _ = writeln!(
        out,
        "  plan         {} (warm-up {:.1} s), {} connections",
        describe_plan(r),
        r.warmup_s,
        r.connections
    );
    let interrupted = if r.interrupted {
        format!("  [interrupted after {:.1} s]", r.elapsed_s)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  achieved     {} answered, {} sent, over {:.2} s{interrupted}",
        fmt_rate(r.achieved_rate),
        fmt_rate(r.sent_rate),
        r.elapsed_s
    );
    let _ = writeln!(
        out,
        "  latency      p50 {}   p90 {}   p99 {}   p99.9 {}   max {}   (mean {}, from intended send time)",
        fmt_ms(l.p50_us),
        fmt_ms(l.p90_us),
        fmt_ms(l.p99_us),
        fmt_ms(l.p999_us),
        fmt_ms(l.max_us),
        fmt_ms(l.mean_us.round() as u64),
    );
    let sp = &r.split;
    if sp.queue_wait.count > 0 {
        let _ = writeln!(
            out,
            "  split        queue wait p99 {}   200s p99 {} (from intended)   204s p99 {} p99.9 {} (from send)",
            fmt_ms(sp.queue_wait.p99_us),
            fmt_ms(sp.served.p99_us),
            fmt_ms(sp.no_content.p99_us),
            fmt_ms(sp.no_content.p999_us),
        );
    }
    let _ = writeln!(
        out,
        "  answers      200: {}   204: {}   4xx: {}   5xx: {}   other: {}",
        c.status_200, c.status_204, c.status_4xx, c.status_5xx, c.status_other
    );
    let _ = writeln!(
        out,
        "  failures     timeouts: {}   errors: {}   dropped by generator: {}   unfinished: {}",
        c.timeouts, c.errors, c.dropped, c.unfinished
    );
    let _ = writeln!(
        out,
        "  bids         {} bids in {} answers, {} no-bids",
        c.bids, c.status_200, c.no_bids
    );
    for t in &r.targets {
        let _ = writeln!(
            out,
            "  target       {}: {} answered, p50 {}, p99 {}, 200: {}, 204: {}, errors {}, timeouts {}, dropped {}",
            t.url,
            fmt_rate(t.achieved_rate),
            fmt_ms(t.latency.p50_us),
            fmt_ms(t.latency.p99_us),
            t.counts.status_200,
            t.counts.status_204,
            t.counts.errors,
            t.counts.timeouts,
            t.counts.dropped,
        );
    }
    out
}

/// `200/s for 10.0 s, then 2000/s for 5.0 s, ...` over the measured phases.
pub fn describe_plan(r: &RunReport) -> String {
    let phases: Vec<String> = r
        .plan
        .iter()
        .filter(|p| p.measured)
        .map(|p| format!("{} for {:.1} s", fmt_rate(p.rate), p.duration_s))
        .collect();
    if phases.is_empty() {
        format!("{} for {:.1} s", fmt_rate(r.target_rate), r.planned_s)
    } else {
        phases.join(", then ")
    }
}

/// The per-second timeline as a table (the surge's main output).
pub fn render_timeline(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>5} {:>5} {:>6} {:>6} {:>7}",
        "t(s)", "target/s", "sent/s", "answer/s", "p50", "p90", "p99", "max", "200", "204", "4xx",
        "5xx", "t/o", "err", "dropped"
    );
    for row in &r.timeline {
        let c = &row.counts;
        let l = &row.latency;
        let _ = writeln!(
            out,
            "{:>5} {:>9.0} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>5} {:>5} {:>6} {:>6} {:>7}",
            row.t,
            row.target_rate,
            c.sent,
            c.answered,
            fmt_ms(l.p50_us),
            fmt_ms(l.p90_us),
            fmt_ms(l.p99_us),
            fmt_ms(l.max_us),
            c.status_200,
            c.status_204,
            c.status_4xx,
            c.status_5xx,
            c.timeouts,
            c.errors,
            c.dropped
        );
    }
    out
}

/// Several runs side by side (e.g. the exchange against the baseline).
pub fn render_comparison(reports: &[RunReport]) -> String {
    let rows = summary_rows(reports);
    let label_w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut col_w = vec![0usize; reports.len()];
    for (_, cells) in &rows {
        for (w, cell) in col_w.iter_mut().zip(cells) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for (key, cells) in &rows {
        let _ = write!(out, "{key:<label_w$}");
        for (cell, w) in cells.iter().zip(&col_w) {
            let _ = write!(out, "  {cell:>w$}");
        }
        out.push('\n');
    }
    out
}

/// `(row name, one cell per run)` for the comparison table and the HTML summary.
pub(super) fn summary_rows(reports: &[RunReport]) -> Vec<(&'static str, Vec<String>)> {
    let col = |f: &dyn Fn(&RunReport) -> String| reports.iter().map(f).collect::<Vec<_>>();
    let lat = |f: fn(&LatencySummary) -> u64| col(&|r: &RunReport| fmt_ms(f(&r.latency)));
    let count = |f: fn(&Counts) -> u64| col(&|r: &RunReport| f(&r.counts).to_string());
    vec![
        ("run", col(&|r| r.label.clone())),
        ("mode", col(&|r| r.mode.clone())),
        ("plan", col(&|r| describe_plan(r))),
        ("target rate", col(&|r| fmt_rate(r.target_rate))),
        ("achieved rate", col(&|r| fmt_rate(r.achieved_rate))),
        ("sent rate", col(&|r| fmt_rate(r.sent_rate))),
        ("measured", col(&|r| format!("{:.1} s", r.elapsed_s))),
        ("connections", col(&|r| r.connections.to_string())),
        ("p50", lat(|l| l.p50_us)),
        ("p90", lat(|l| l.p90_us)),
        ("p99", lat(|l| l.p99_us)),
        ("p99.9", lat(|l| l.p999_us)),
        ("max", lat(|l| l.max_us)),
        ("200", count(|c| c.status_200)),
        ("204", count(|c| c.status_204)),
        ("4xx", count(|c| c.status_4xx)),
        ("5xx", count(|c| c.status_5xx)),
        ("timeouts", count(|c| c.timeouts)),
        ("errors", count(|c| c.errors)),
        ("dropped by generator", count(|c| c.dropped)),
        ("unfinished", count(|c| c.unfinished)),
        ("bids", count(|c| c.bids)),
        ("no-bids", count(|c| c.no_bids)),
        (
            "interrupted",
            col(&|r| if r.interrupted { "yes" } else { "no" }.to_owned()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::sample_report;
    use crate::stats::PhaseSummary;

    #[test]
    fn milliseconds_are_shown_with_sensible_precision() {
        assert_eq!(fmt_ms(1234), "1.23 ms");
        assert_eq!(fmt_ms(12_340), "12.3 ms");
        assert_eq!(fmt_ms(123_400), "123 ms");
        assert_eq!(fmt_ms(0), "0.00 ms");
    }

    #[test]
    fn the_table_carries_every_headline_figure() {
        let r = sample_report("exchange");
        let t = render_table(&r);
        for needle in [
            "plan         100/s for 3.0 s (warm-up 1.0 s), 8 connections",
            "100/s answered",
            "p50 ",
            "p90 ",
            "p99 ",
            "p99.9 ",
            "max ",
            "200: 225",
            "204: 75",
            "4xx: 0",
            "5xx: 0",
            "dropped by generator: 0",
            "225 bids in 225 answers, 75 no-bids",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        let line = progress_line(&r.timeline[1]);
        assert!(line.starts_with("[   1s]"), "{line}");
        assert!(line.contains("200:75 204:25"), "{line}");
        assert!(line.contains("sent    100/s"), "{line}");
        let timeline = render_timeline(&r);
        assert_eq!(timeline.lines().count(), 1 + 3);
    }

    #[test]
    fn a_surge_plan_reads_phase_by_phase() {
        let mut r = sample_report("s");
        r.plan = [
            (500.0, 1.0, false),
            (500.0, 10.0, true),
            (5000.0, 5.0, true),
        ]
        .map(|(rate, duration_s, measured)| PhaseSummary {
            rate,
            duration_s,
            measured,
        })
        .to_vec();
        assert_eq!(describe_plan(&r), "500/s for 10.0 s, then 5000/s for 5.0 s");
        r.plan.clear();
        assert_eq!(describe_plan(&r), "100/s for 3.0 s");
    }

    #[test]
    fn the_comparison_has_one_column_per_run() {
        let text = render_comparison(&[sample_report("exchange"), sample_report("baseline")]);
        let first = text.lines().next().unwrap();
        assert!(
            first.contains("exchange") && first.contains("baseline"),
            "{first}"
        );
        assert!(text.lines().any(|l| l.starts_with("p99 ")));
    }
}

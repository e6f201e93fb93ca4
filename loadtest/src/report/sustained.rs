//! Which of several runs at stepped rates each target kept up with: the highest sustained rate
//! per label, and its ratio to the baseline's.

use std::fmt::Write as _;

use super::text::{fmt_ms, fmt_rate};
use crate::stats::RunReport;

/// The highest rate one target kept up with among several runs at stepped rates.
#[derive(Clone, Debug, PartialEq)]
pub struct Sustained {
    pub label: String,
    /// The highest target rate it sustained; `None` when it sustained none of them.
    pub rate: Option<f64>,
    /// Runs of this label considered.
    pub runs: usize,
}

/// For each label (in order of first appearance), the highest target rate of a `run` it
/// sustained: not interrupted, nothing dropped, failed or unfinished, p99 within
/// `p99_bound_us`, and at least 97% of the planned requests answered `200` with a bid. Counting
/// only bids matters: a target that sheds load with fast `204`s keeps its latency low without
/// doing the work, so against mocks that always bid, a `204` is work not done.
pub fn sustained(reports: &[RunReport], p99_bound_us: u64) -> Vec<Sustained> {
    let mut out: Vec<Sustained> = Vec::new();
    for r in reports.iter().filter(|r| r.mode == "run") {
        let planned = r.target_rate * r.planned_s;
        let c = &r.counts;
        let kept_up = !r.interrupted
            && c.dropped + c.errors + c.timeouts + c.unfinished + c.status_5xx == 0
            && r.latency.p99_us <= p99_bound_us
            && planned > 0.0
            && c.bids as f64 >= 0.97 * planned;
        let i = match out.iter().position(|s| s.label == r.label) {
            Some(i) => i,
            None => {
                out.push(Sustained {
                    label: r.label.clone(),
                    rate: None,
                    runs: 0,
                });
                out.len() - 1
            }
        };
        let entry = &mut out[i];
        entry.runs += 1;
        if kept_up && entry.rate.is_none_or(|best| r.target_rate > best) {
            entry.rate = Some(r.target_rate);
        }
    }
    out
}

/// The sustained rates as text, with each label's ratio to the one named `baseline`.
pub fn render_sustained(sustained: &[Sustained], p99_bound_us: u64) -> String {
    let mut out = format!(
        "sustained rate (p99 <= {}, >= 97% of requests answered with a bid):\n",
        fmt_ms(p99_bound_us)
    );
    let baseline = sustained
        .iter()
        .find(|s| s.label == "baseline")
        .and_then(|s| s.rate);
    for s in sustained {
        let rate = s.rate.map_or("none of the rates".to_owned(), fmt_rate);
        let _ = write!(out, "  {:<12} {rate} (of {} runs)", s.label, s.runs);
        if let (Some(rate), Some(base), false) = (s.rate, baseline, s.label == "baseline") {
            let _ = write!(out, "  {:.2} of the baseline", rate / base);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::sample_report;
    use crate::stats::Counts;

    /// A run of `label` at `rate` with `bids` bids and the given p99, otherwise clean.
    fn stepped(label: &str, rate: f64, bids: u64, p99_us: u64) -> RunReport {
        let mut r = sample_report(label);
        r.target_rate = rate;
        r.planned_s = 3.0;
        r.counts = Counts {
            bids,
            dropped: 0,
            errors: 0,
            timeouts: 0,
            unfinished: 0,
            status_5xx: 0,
            ..r.counts
        };
        r.latency.p99_us = p99_us;
        r
    }

    #[test]
    fn sustained_is_the_highest_rate_kept_up_with() {
        let ms = 1000;
        let runs = vec![
            stepped("exchange", 1000.0, 3000, 5 * ms),
            stepped("baseline", 1000.0, 3000, 4 * ms),
            // Answers fast but sheds: too few bids.
            stepped("exchange", 2000.0, 4000, 3 * ms),
            stepped("baseline", 2000.0, 6000, 6 * ms),
            // Every bid, but queueing shows in the p99.
            stepped("exchange", 3000.0, 9000, 900 * ms),
            stepped("baseline", 3000.0, 8800, 20 * ms),
            {
                let mut dropped = stepped("baseline", 4000.0, 12_000, 5 * ms);
                dropped.counts.dropped = 1;
                dropped
            },
        ];
        let got = sustained(&runs, 50 * ms);
        let rate = |label: &str| got.iter().find(|s| s.label == label).and_then(|s| s.rate);
        assert_eq!(got.len(), 2);
        assert_eq!(rate("exchange"), Some(1000.0));
        assert_eq!(rate("baseline"), Some(3000.0));
        assert_eq!(got[1].runs, 4);
        let text = render_sustained(&got, 50 * ms);
        assert!(text.contains("0.33 of the baseline"), "{text}");
        assert!(sustained(&runs, ms).iter().all(|s| s.rate.is_none()));
    }
}

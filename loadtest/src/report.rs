//! Reports: the human table, the per-second progress line, and the HTML page with hand-made
//! SVG charts (latency by percentile, and the rate and latency timeline).
//!
//! Rendering is pure string building from [`RunReport`]s; only [`write_html`] touches the disk.
//! Every text that comes from outside (labels, URLs, file names) is escaped before it lands in
//! the page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::stats::{Counts, LatencySummary, RunReport, SecondReport};
use crate::Error;

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

fn fmt_rate(r: f64) -> String {
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

/// `(row name, one cell per run)` for the comparison table and the HTML summary.
fn summary_rows(reports: &[RunReport]) -> Vec<(&'static str, Vec<String>)> {
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

/// Writes `index.html` (the page) and `report.json` (the reports) into `dir`, creating it.
/// Returns the page's path.
pub fn write_html(dir: &Path, reports: &[RunReport]) -> Result<PathBuf, Error> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let page = dir.join("index.html");
    std::fs::write(&page, render_html(reports)).map_err(err(&page))?;
    let json = dir.join("report.json");
    let text = serde_json::to_string_pretty(reports).map_err(|e| Error::File {
        path: json.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&json, text).map_err(err(&json))?;
    Ok(page)
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The whole page: summary table, latency percentile curve of every run, and each run's
/// timeline.
pub fn render_html(reports: &[RunReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loadtest report</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
         table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}\
         th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
         svg{background:#fff;border:1px solid #ddd;margin:0.5em 0}\
         .note{color:#666;font-size:90%}\
         </style></head><body>\n<h1>loadtest report</h1>\n",
    );
    out.push_str(
        "<p class=\"note\">Latency is measured from each request's intended send time \
         (open loop, no coordinated omission): time spent queued behind a busy connection \
         counts.</p>\n",
    );

    out.push_str("<h2>Summary</h2>\n<table>\n");
    for (key, cells) in summary_rows(reports) {
        let tag = if key == "run" { "th" } else { "td" };
        let _ = write!(out, "<tr><{tag}>{}</{tag}>", escape(key));
        for cell in cells {
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    for r in reports {
        let mix: Vec<String> = r
            .mix
            .iter()
            .map(|m| format!("{}={}", m.name, m.weight))
            .collect();
        let _ = writeln!(
            out,
            "<p class=\"note\">{}: {} {}, mix {}</p>",
            escape(&r.label),
            escape(&r.mode),
            escape(&r.url),
            escape(&mix.join(", "))
        );
    }

    out.push_str("<h2>Latency by percentile</h2>\n");
    out.push_str(&percentile_chart(reports));

    for r in reports {
        if r.timeline.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h2>Timeline: {}</h2>", escape(&r.label));
        out.push_str(&rate_chart(r));
        out.push_str(&latency_timeline_chart(r));
    }
    out.push_str("</body></html>\n");
    out
}

/// Where percentile `p` sits on the curve's x axis: decades of "nines" (90% is 1, 99% is 2).
/// 100% (the max) is drawn half a decade right of 99.999%.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        5.5
    } else {
        (-(1.0 - p / 100.0).log10()).clamp(0.0, 5.0)
    }
}

fn percentile_chart(reports: &[RunReport]) -> String {
    let series = reports
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: r.label.clone(),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            points: r
                .percentiles
                .iter()
                .map(|p| (nines(p.percentile), p.latency_us as f64 / 1000.0))
                .collect(),
        })
        .collect();
    let ticks = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
        (5.5, "max"),
    ]
    .map(|(x, s)| (x, s.to_owned()))
    .to_vec();
    line_chart(&Chart {
        title: "Latency by percentile (from intended send time)".to_owned(),
        auto_log_y: true,
        x_label: "percentile".to_owned(),
        y_label: "latency (ms)".to_owned(),
        x_range: (0.0, 5.5),
        x_ticks: Some(ticks),
        series,
    })
}

fn rate_chart(r: &RunReport) -> String {
    let points = |f: &dyn Fn(&SecondReport) -> f64| {
        r.timeline
            .iter()
            .map(|row| (f64::from(row.t) + 0.5, f(row)))
            .collect::<Vec<_>>()
    };
    let series = vec![
        Series {
            name: "target".to_owned(),
            color: "#999999",
            dashed: true,
            // The target changes at second boundaries: draw it as steps.
            points: r
                .timeline
                .iter()
                .flat_map(|row| {
                    let t = f64::from(row.t);
                    [(t, row.target_rate), (t + 1.0, row.target_rate)]
                })
                .collect(),
        },
        Series {
            name: "sent".to_owned(),
            color: PALETTE[0],
            dashed: false,
            points: points(&|row| row.counts.sent as f64),
        },
        Series {
            name: "answered".to_owned(),
            color: PALETTE[2],
            dashed: false,
            points: points(&|row| row.counts.answered as f64),
        },
        Series {
            name: "not answered".to_owned(),
            color: PALETTE[1],
            dashed: false,
            points: points(&|row| {
                (row.counts.dropped + row.counts.timeouts + row.counts.errors) as f64
            }),
        },
    ];
    line_chart(&Chart {
        title: format!("Rate per second: {}", r.label),
        auto_log_y: false,
        x_label: "seconds".to_owned(),
        y_label: "requests per second".to_owned(),
        x_range: (0.0, timeline_end(r)),
        x_ticks: None,
        series,
    })
}

fn latency_timeline_chart(r: &RunReport) -> String {
    let points = |f: fn(&LatencySummary) -> u64| {
        r.timeline
            .iter()
            .filter(|row| row.latency.count > 0)
            .map(|row| (f64::from(row.t) + 0.5, f(&row.latency) as f64 / 1000.0))
            .collect::<Vec<_>>()
    };
    let series = vec![
        Series {
            name: "p50".to_owned(),
            color: PALETTE[0],
            dashed: false,
            points: points(|l| l.p50_us),
        },
        Series {
            name: "p90".to_owned(),
            color: PALETTE[2],
            dashed: false,
            points: points(|l| l.p90_us),
        },
        Series {
            name: "p99".to_owned(),
            color: PALETTE[3],
            dashed: false,
            points: points(|l| l.p99_us),
        },
        Series {
            name: "max".to_owned(),
            color: PALETTE[1],
            dashed: true,
            points: points(|l| l.max_us),
        },
    ];
    line_chart(&Chart {
        title: format!("Latency per second: {}", r.label),
        auto_log_y: true,
        x_label: "seconds".to_owned(),
        y_label: "latency (ms)".to_owned(),
        x_range: (0.0, timeline_end(r)),
        x_ticks: None,
        series,
    })
}

fn timeline_end(r: &RunReport) -> f64 {
    r.timeline.last().map_or(1.0, |row| f64::from(row.t) + 1.0)
}

struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// The vertical scale: linear from 0, or decades between two powers of ten.
enum YAxis {
    Linear {
        max: f64,
        step: f64,
    },
    /// Powers of ten: `10^lo` at the bottom, `10^hi` at the top.
    Log {
        lo: i32,
        hi: i32,
    },
}

impl YAxis {
    fn linear(max_data: f64) -> Self {
        let step = nice_step(if max_data > 0.0 { max_data } else { 1.0 }, 5.0);
        let max = ((max_data / step).ceil() * step).max(step);
        Self::Linear { max, step }
    }

    fn log(min_positive: f64, max_data: f64) -> Self {
        // Latencies are at least 1 µs (0.001 ms) and at most an hour: the exponents are small.
        let lo = min_positive.log10().floor().clamp(-9.0, 9.0) as i32;
        let hi = (max_data.log10().ceil().clamp(-9.0, 9.0) as i32).max(lo + 1);
        Self::Log { lo, hi }
    }

    /// Where `y` sits, 0 at the bottom to 1 at the top.
    fn fraction(&self, y: f64) -> f64 {
        match *self {
            Self::Linear { max, .. } => y.clamp(0.0, max) / max,
            Self::Log { lo, hi } => {
                let (lo, hi) = (f64::from(lo), f64::from(hi));
                let exp = if y > 0.0 { y.log10() } else { lo };
                (exp.clamp(lo, hi) - lo) / (hi - lo)
            }
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Self::Linear { max, step } => {
                let mut ticks = Vec::new();
                let mut y = 0.0;
                while y <= max + step * 1e-9 && ticks.len() < 100 {
                    ticks.push(y);
                    y += step;
                }
                ticks
            }
            Self::Log { lo, hi } => (lo..=hi).map(|e| 10f64.powi(e)).collect(),
        }
    }
}

struct Chart {
    title: String,
    /// Latency charts switch to a log scale when their values span orders of magnitude.
    auto_log_y: bool,
    x_label: String,
    y_label: String,
    x_range: (f64, f64),
    /// Fixed ticks; `None` picks round numbers over the range.
    x_ticks: Option<Vec<(f64, String)>>,
    series: Vec<Series>,
}

/// A step of 1, 2 or 5 times a power of ten that cuts `span` into about `target` pieces.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

fn line_chart(c: &Chart) -> String {
    const W: f64 = 960.0;
    const H: f64 = 340.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 210.0;
    const TOP: f64 = 34.0;
    const BOTTOM: f64 = 50.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;

    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let values = || {
        c.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| finite(p.1)))
    };
    let y_max_data = values().fold(0.0, f64::max);
    let y_min_positive = values().filter(|&v| v > 0.0).fold(f64::INFINITY, f64::min);
    // Latency spanning orders of magnitude (a few ms before a surge, seconds during it) is
    // unreadable on a linear axis: switch to decades.
    let log = c.auto_log_y && y_min_positive.is_finite() && y_max_data / y_min_positive > 50.0;
    let y_axis = if log {
        YAxis::log(y_min_positive, y_max_data)
    } else {
        YAxis::linear(y_max_data)
    };
    let (x0, x1) = c.x_range;
    let x_span = if x1 > x0 { x1 - x0 } else { 1.0 };
    let sx = |x: f64| LEFT + (finite(x) - x0).clamp(0.0, x_span) / x_span * plot_w;
    let sy = |y: f64| TOP + plot_h - y_axis.fraction(finite(y)) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(&c.title)
    );
    // Horizontal grid and y labels.
    for y in y_axis.ticks() {
        let py = sy(y);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            fmt_tick(y)
        );
    }
    // X ticks.
    let ticks: Vec<(f64, String)> = match &c.x_ticks {
        Some(t) => t.clone(),
        None => {
            let step = nice_step(x_span, 10.0);
            let mut v = Vec::new();
            let mut x = (x0 / step).ceil() * step;
            while x <= x1 + step * 1e-9 && v.len() < 100 {
                v.push((x, fmt_tick(x)));
                x += step;
            }
            v
        }
    };
    for (x, label) in &ticks {
        let px = sx(*x);
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#f0f0f0\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 16.0,
            escape(label)
        );
    }
    // Axes and their names.
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        H - 12.0,
        escape(&c.x_label),
        TOP + plot_h / 2.0,
        escape(&if log {
            format!("{}, log scale", c.y_label)
        } else {
            c.y_label.clone()
        })
    );
    // Series and legend.
    for (i, series) in c.series.iter().enumerate() {
        let dash = if series.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        if !series.points.is_empty() {
            let pts: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                series.color,
                pts.join(" ")
            );
            if series.points.len() <= 40 {
                for &(x, y) in &series.points {
                    let _ = write!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
                        sx(x),
                        sy(y),
                        series.color
                    );
                }
                s.push('\n');
            }
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 22.0,
            series.color,
            lx + 28.0,
            ly + 4.0,
            escape(&truncate(&series.name, 28))
        );
    }
    s.push_str("</svg>\n");
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Outcome, PhaseSummary, Recorder};
    use std::time::Duration;

    fn sample_report(label: &str) -> RunReport {
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
            percentiles: total.curve(),
            timeline,
            ..RunReport::default()
        }
    }

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

    #[test]
    fn the_page_has_both_charts_and_escapes_what_it_quotes() {
        let page = render_html(&[sample_report("<script>x</script>"), sample_report("b")]);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("Latency by percentile"));
        assert!(page.contains("Rate per second"));
        assert!(page.contains("Latency per second"));
        // One percentile chart plus two charts per run.
        assert_eq!(page.matches("<svg").count(), 5);
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert!(page.contains("<polyline"));
        assert!(!page.contains("NaN") && !page.contains("inf,") && !page.contains(",inf"));
    }

    #[test]
    fn an_empty_run_still_renders() {
        let page = render_html(&[RunReport::default()]);
        assert_eq!(page.matches("<svg").count(), 1);
        assert!(!page.contains("NaN"));
        let _ = render_table(&RunReport::default());
    }

    #[test]
    fn percentiles_map_to_decades_of_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 5.5);
    }

    #[test]
    fn latency_spanning_decades_goes_log_and_stays_linear_otherwise() {
        let axis = YAxis::log(0.8, 4500.0);
        assert_eq!(axis.ticks(), [0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0]);
        assert_eq!(axis.fraction(0.1), 0.0);
        assert_eq!(axis.fraction(10_000.0), 1.0);
        assert!((axis.fraction(10.0) - 0.4).abs() < 1e-9);
        assert_eq!(axis.fraction(0.0), 0.0);
        let axis = YAxis::linear(7.0);
        assert_eq!(axis.ticks(), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(axis.fraction(4.0), 0.5);

        let mut surge = sample_report("s");
        surge.timeline[2].latency.max_us = 5_000_000;
        let page = render_html(&[surge]);
        assert!(page.contains("latency (ms), log scale"));
        let calm = render_html(&[sample_report("c")]);
        assert!(!calm.contains("log scale"));
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(1000.0, 10.0), 100.0);
        assert_eq!(nice_step(0.3, 5.0), 0.1);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(nice_step(f64::NAN, 5.0), 1.0);
    }

    #[test]
    fn the_report_folder_holds_the_page_and_the_json() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        let page = write_html(&dir, &[sample_report("a")]).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("<svg"));
        let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
        let back: Vec<RunReport> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![sample_report("a")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

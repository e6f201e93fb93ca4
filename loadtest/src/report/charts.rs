//! The SVG charts of the HTML report, drawn with `plotters`: latency by percentile for every
//! run, and each run's rate and latency per second. This file decides what is drawn (series,
//! axes, when latency goes to a log scale); plotters draws it.

use std::ops::Range;

use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::html::escape;
use crate::stats::{LatencySummary, RunReport, SecondReport};

const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];
const TARGET_GREY: RGBColor = RGBColor(0x99, 0x99, 0x99);
const GRID: RGBColor = RGBColor(0xe5, 0xe5, 0xe5);
const FONT: &str = "sans-serif";
/// The whole chart, and the strip on its right that holds the legend.
const SIZE: (u32, u32) = (960, 340);
const LEGEND_W: u32 = 210;
/// Series with more points than this are drawn as a bare line: dots would merge into it.
const MAX_DOTTED_POINTS: usize = 40;

/// Latency by percentile of every run, on one chart.
pub(super) fn percentile(reports: &[RunReport]) -> String {
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
    render(&Chart {
        title: "Latency by percentile (from intended send time)".to_owned(),
        auto_log_y: true,
        x_label: "percentile".to_owned(),
        y_label: "latency (ms)".to_owned(),
        x_range: (0.0, 5.5),
        x_ticks: Some(ticks),
        series,
    })
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

/// The rates of one run per second: target, sent, answered and not answered.
pub(super) fn rate(r: &RunReport) -> String {
    let points = |f: &dyn Fn(&SecondReport) -> f64| {
        r.timeline
            .iter()
            .map(|row| (f64::from(row.t) + 0.5, f(row)))
            .collect::<Vec<_>>()
    };
    let series = vec![
        Series {
            name: "target".to_owned(),
            color: TARGET_GREY,
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
    render(&Chart {
        title: format!("Rate per second: {}", r.label),
        auto_log_y: false,
        x_label: "seconds".to_owned(),
        y_label: "requests per second".to_owned(),
        x_range: (0.0, timeline_end(r)),
        x_ticks: None,
        series,
    })
}

/// The latency percentiles of one run per second.
pub(super) fn latency_timeline(r: &RunReport) -> String {
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
    render(&Chart {
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
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

struct Chart {
    title: String,
    /// Latency charts switch to a log scale when their values span orders of magnitude.
    auto_log_y: bool,
    x_label: String,
    y_label: String,
    x_range: (f64, f64),
    /// Fixed ticks with their labels; `None` lets plotters pick round numbers.
    x_ticks: Option<Vec<(f64, String)>>,
    series: Vec<Series>,
}

/// The vertical scale: linear from 0, or whole decades between two powers of ten.
#[derive(Clone, Copy, Debug, PartialEq)]
enum YScale {
    Linear {
        max: f64,
    },
    /// `10^lo` at the bottom, `10^hi` at the top.
    Log {
        lo: i32,
        hi: i32,
    },
}

impl YScale {
    /// Latency spanning orders of magnitude (a few ms before a surge, seconds during it) is
    /// unreadable on a linear axis: past a ratio of 50 between the largest and the smallest
    /// positive value, `auto_log` charts switch to decades.
    fn pick(auto_log: bool, values: impl Iterator<Item = f64>) -> Self {
        let (mut max, mut min_positive) = (0.0_f64, f64::INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            max = max.max(v);
            if v > 0.0 {
                min_positive = min_positive.min(v);
            }
        }
        if auto_log && min_positive.is_finite() && max / min_positive > 50.0 {
            // Latencies are at least 1 µs (0.001 ms) and at most an hour: the exponents are
            // small.
            let lo = min_positive.log10().floor().clamp(-9.0, 9.0) as i32;
            let hi = (max.log10().ceil().clamp(-9.0, 9.0) as i32).max(lo + 1);
            Self::Log { lo, hi }
        } else {
            // Headroom so the highest point does not sit on the frame.
            let max = if max > 0.0 { max * 1.05 } else { 1.0 };
            Self::Linear { max }
        }
    }

    fn range(self) -> Range<f64> {
        match self {
            Self::Linear { max } => 0.0..max,
            Self::Log { lo, hi } => 10f64.powi(lo)..10f64.powi(hi),
        }
    }

    /// `y` pulled into the range, so an outlier or a zero on a log scale stays on the frame.
    fn clamp(self, y: f64) -> f64 {
        let Range { start, end } = self.range();
        if y.is_finite() {
            y.max(start).min(end)
        } else {
            start
        }
    }
}

/// An axis with the ticks the chart names, mapped by a plotters axis. Plotters picks its
/// own ticks otherwise: on a log axis it loses the bottom decade to rounding (`ln(0.1)/ln(10)`
/// comes out above -1), and its `with_key_points` wrapper has no label formatter, so the mesh
/// refuses it.
struct Ticked<R> {
    axis: R,
    ticks: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.axis.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines at the named ticks only: none between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.axis.range()
    }
}

/// The chart as an SVG element, or a note saying why it could not be drawn (plotters'
/// string backend has no way to fail today, but the page is worth more than a panic).
fn render(c: &Chart) -> String {
    match draw(c) {
        Ok(svg) => svg,
        Err(e) => format!(
            "<p class=\"note\">{}: not drawn: {}</p>\n",
            escape(&c.title),
            escape(&e.to_string())
        ),
    }
}

type Drawn<T = ()> = Result<T, DrawingAreaErrorKind<std::io::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw(c: &Chart) -> Drawn<String> {
    let values = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let scale = YScale::pick(c.auto_log_y, values);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_W);
        let (x0, x1) = c.x_range;
        match &c.x_ticks {
            Some(ticks) => {
                let x = Ticked {
                    axis: RangedCoordf64::from(x0..x1),
                    ticks: ticks.iter().map(|t| t.0).collect(),
                };
                plot_on_scale(c, &plot_area, scale, x)?;
            }
            None => plot_on_scale(c, &plot_area, scale, x0..x1)?,
        }
        legend(c, &legend_area)?;
        root.present()?;
    }
    svg.push('\n');
    Ok(svg)
}

fn plot_on_scale<X>(c: &Chart, area: &Area, scale: YScale, x: X) -> Drawn
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    match scale {
        YScale::Linear { .. } => plot(c, area, scale, x, scale.range()),
        YScale::Log { lo, hi } => {
            let y = Ticked {
                axis: LogCoord::from(scale.range().log_scale()),
                ticks: (lo..=hi).map(|e| 10f64.powi(e)).collect(),
            };
            plot(c, area, scale, x, y)
        }
    }
}

fn plot<X, Y>(c: &Chart, area: &Area, scale: YScale, x: X, y: Y) -> Drawn
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let x_label = |v: &f64| match &c.x_ticks {
        Some(ticks) => ticks
            .iter()
            .find(|t| (t.0 - v).abs() < 1e-9)
            .map_or_else(|| fmt_tick(*v), |t| t.1.clone()),
        None => fmt_tick(*v),
    };
    let y_label = |v: &f64| fmt_tick(*v);
    let y_desc = match scale {
        YScale::Log { .. } => format!("{}, log scale", c.y_label),
        YScale::Linear { .. } => c.y_label.clone(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, (FONT, 17).into_font().style(FontStyle::Bold))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(GRID)
        .max_light_lines(0)
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 15))
        .x_desc(c.x_label.as_str())
        .y_desc(y_desc)
        .draw()?;
    let (x0, x1) = c.x_range;
    for s in c.series.iter().filter(|s| !s.points.is_empty()) {
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y)| {
                (
                    if x.is_finite() { x.max(x0).min(x1) } else { x0 },
                    scale.clamp(y),
                )
            })
            .collect();
        let line = s.color.stroke_width(2);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, line))?;
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), line))?;
        }
        if points.len() <= MAX_DOTTED_POINTS {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, s.color.filled())))?;
        }
    }
    Ok(())
}

/// One line per series beside the plot, in the series' colour and dash.
fn legend(c: &Chart, area: &Area) -> Drawn {
    for (i, s) in (0i32..).zip(&c.series) {
        let y = 44 + i * 18;
        let line = s.color.stroke_width(2);
        let sample = vec![(12, y), (34, y)];
        if s.dashed {
            area.draw(&DashedPathElement::new(sample, 6, 4, line))?;
        } else {
            area.draw(&PathElement::new(sample, line))?;
        }
        area.draw(&Text::new(truncate(&s.name, 28), (40, y - 7), (FONT, 15)))?;
    }
    Ok(())
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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::sample_report;
    use crate::report::render_html;

    #[test]
    fn percentiles_map_to_decades_of_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 5.5);
    }

    #[test]
    fn latency_spanning_decades_goes_log_and_stays_linear_otherwise() {
        let scale = YScale::pick(true, [0.8, 4500.0, 0.0].into_iter());
        assert_eq!(scale, YScale::Log { lo: -1, hi: 4 });
        // The ticks and positions plotters draws on that scale: whole decades, evenly spaced.
        // Where plotters puts values on that scale: decades evenly spaced.
        let log = LogCoord::from(scale.range().log_scale());
        assert_eq!(log.map(&0.1, (0, 1000)), 0);
        assert_eq!(log.map(&10.0, (0, 1000)), 400);
        assert_eq!(log.map(&10_000.0, (0, 1000)), 1000);
        // A zero sits on the bottom of the frame.
        assert_eq!(scale.clamp(0.0), 0.1);
        let svg = latency_timeline(&{
            let mut surge = sample_report("s");
            surge.timeline[2].latency.max_us = 5_000_000;
            surge
        });
        for tick in ["1", "10", "100", "1000", "10000"] {
            assert!(
                svg.contains(&format!(">\n{tick}\n<")),
                "no tick {tick} in {svg}"
            );
        }

        let scale = YScale::pick(true, [3.0, 7.0].into_iter());
        assert_eq!(scale, YScale::Linear { max: 7.0 * 1.05 });
        let linear = RangedCoordf64::from(scale.range());
        assert_eq!(linear.key_points(5), [0.0, 2.0, 4.0, 6.0]);
        assert_eq!(
            YScale::pick(false, [0.8, 4500.0].into_iter()).range(),
            0.0..4725.0
        );
        assert_eq!(YScale::pick(true, std::iter::empty()).range(), 0.0..1.0);

        let mut surge = sample_report("s");
        surge.timeline[2].latency.max_us = 5_000_000;
        let page = render_html(&[surge]);
        assert!(page.contains("latency (ms), log scale"));
        let calm = render_html(&[sample_report("c")]);
        assert!(!calm.contains("log scale"));
    }

    #[test]
    fn the_percentile_axis_names_its_nines() {
        let svg = percentile(&[sample_report("a")]);
        for label in ["0%", "90%", "99.9%", "99.999%", "max"] {
            let text = format!(">\n{label}\n<");
            assert!(svg.contains(&text), "missing {label} in {svg}");
        }
    }

    #[test]
    fn each_series_is_a_line_with_its_legend() {
        let svg = rate(&sample_report("a"));
        for name in ["target", "sent", "answered", "not answered"] {
            let text = format!(">\n{name}\n<");
            assert!(svg.contains(&text), "missing {name} in {svg}");
        }
        // Three solid lines, and the dashed target in pieces.
        assert!(svg.matches("<polyline").count() > 3, "{svg}");
        // Three seconds: a dot per second on each solid series, two per step on the target.
        assert_eq!(svg.matches("<circle").count(), 3 * 3 + 6, "{svg}");
    }
}

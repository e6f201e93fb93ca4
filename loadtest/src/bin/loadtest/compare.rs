//! `loadtest compare`: several saved JSON reports side by side, and one HTML page with all of
//! them (their latency curves on one chart).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use loadtest::report;
use loadtest::stats::RunReport;

/// The largest report file read.
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub(crate) struct CompareArgs {
    /// Reports written by `--json` (one report) or `--report` (its report.json).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Write an HTML page with every run into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// With runs of the same labels at stepped rates (`scripts/bench-vs-baseline` with several
    /// rates), also print each label's highest sustained rate: p99 within this many ms and at
    /// least 97% of requests answered with a bid.
    #[arg(long, value_name = "MS")]
    sustained_p99_ms: Option<u64>,
}

pub(crate) fn run(args: CompareArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for path in &args.files {
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_REPORT_BYTES,
            "{} is {len} bytes, above the {MAX_REPORT_BYTES}-byte bound",
            path.display()
        );
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed: Result<Vec<RunReport>, _> = serde_json::from_str(&text);
        match parsed {
            Ok(many) => reports.extend(many),
            Err(_) => reports.push(
                serde_json::from_str::<RunReport>(&text)
                    .with_context(|| format!("{} is not a loadtest report", path.display()))?,
            ),
        }
    }
    print!("{}", report::render_comparison(&reports));
    if let Some(ms) = args.sustained_p99_ms {
        let bound_us = ms.saturating_mul(1000);
        print!(
            "\n{}",
            report::render_sustained(&report::sustained(&reports, bound_us), bound_us)
        );
    }
    if let Some(dir) = &args.report {
        let page = report::write_html(dir, &reports)?;
        eprintln!("report: {}", page.display());
    }
    Ok(())
}

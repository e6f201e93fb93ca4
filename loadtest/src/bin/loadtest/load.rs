//! `loadtest run` and `loadtest surge`: the options they share, and running a plan with
//! progress, Ctrl-C, the table, `--json` and `--report`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use loadtest::gen::{self, RunConfig};
use loadtest::mix::Mix;
use loadtest::plan::{parse_duration, Plan};
use loadtest::report;
use loadtest::target::Target;

#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// Where to send bid requests. Loopback only unless --allow-remote. Repeat it for a fleet:
    /// the schedule is spread over the targets in turn, each with its own connections, and
    /// the report shows each target and the total.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080/openrtb2/auction")]
    urls: Vec<String>,
    /// Keep-alive connections to each target.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Requests that may wait for a free connection; past it they are dropped by the generator.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queue: u32,
    /// How long one request may take once sent, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout_ms: u64,
    /// Warm-up before measuring (sent at the starting rate, not counted): 500ms, 2s, 1m...
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Template mix, e.g. `banner=5,video=2,native,multi,app,deal` (default: banner 40,
    /// video 15, native 10, multi 15, app 15, deal 5).
    #[arg(long, conflicts_with = "requests")]
    mix: Option<String>,
    /// A folder of JSON bid requests, sent byte for byte in turn instead of templates.
    #[arg(long, value_name = "DIR")]
    requests: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write an HTML report with SVG charts (index.html) and report.json into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// A name for this run in reports (default: the URL).
    #[arg(long)]
    label: Option<String>,
    /// No progress line per second on stderr.
    #[arg(long)]
    quiet: bool,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Requests per second, sent on a fixed schedule whatever the answers do.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to measure: 500ms, 10s, 2m...
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
pub(crate) struct SurgeArgs {
    /// The normal rate, requests per second.
    #[arg(long, default_value_t = 500.0)]
    base_rate: f64,
    /// The surge multiplies the base rate by this.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// Time at the base rate before the surge.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    before: Duration,
    /// How long the surge lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    surge: Duration,
    /// Time at the base rate after the surge.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    after: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = Plan::constant(args.rate, args.duration, args.load.warmup)?;
    execute(args.load, plan, "run").await
}

pub(crate) async fn surge(args: SurgeArgs) -> anyhow::Result<()> {
    let plan = Plan::surge(
        args.base_rate,
        args.factor,
        args.before,
        args.surge,
        args.after,
        args.load.warmup,
    )?;
    execute(args.load, plan, "surge").await
}

async fn execute(load: LoadArgs, plan: Plan, mode: &str) -> anyhow::Result<()> {
    let targets = load
        .urls
        .iter()
        .map(|url| Target::parse(url, load.allow_remote))
        .collect::<Result<Vec<_>, _>>()?;
    let urls = load.urls.join(" ");
    // Installed before anything is announced, so a Ctrl-C is never lost (see stop_signal).
    let stop = crate::stop_signal()?;
    let mix = match (&load.requests, &load.mix) {
        (Some(dir), _) => Mix::from_dir(dir)?,
        (None, Some(spec)) => Mix::from_spec(spec)?,
        (None, None) => Mix::standard(),
    };
    let config = RunConfig {
        targets,
        plan: plan.clone(),
        mix: Arc::new(mix),
        // Bounded by clap to 1..=10 000 and 1..=1 000 000: both fit any usize.
        connections: load.connections as usize,
        queue: load.queue as usize,
        timeout: Duration::from_millis(load.timeout_ms),
        label: load.label.clone().unwrap_or_else(|| urls.clone()),
        mode: mode.to_owned(),
    };
    if !load.quiet {
        let warmup = plan.warmup();
        eprintln!(
            "loadtest {mode}: {} requests to {} over {:.1} s ({} connections){}",
            plan.total_requests(),
            urls,
            plan.total_duration().as_secs_f64(),
            load.connections,
            if warmup.is_zero() {
                String::new()
            } else {
                format!(", the first {:.1} s are warm-up", warmup.as_secs_f64())
            }
        );
    }
    let quiet = load.quiet;
    let result = gen::run(
        config,
        |row| {
            if !quiet {
                eprintln!("{}", report::progress_line(row));
            }
        },
        stop,
    )
    .await?;
    if let Some(dir) = &load.report {
        let page = report::write_html(dir, std::slice::from_ref(&result))?;
        if !quiet {
            eprintln!("report: {}", page.display());
        }
    }
    if load.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        if mode == "surge" {
            print!("{}", report::render_timeline(&result));
            println!();
        }
        print!("{}", report::render_table(&result));
    }
    Ok(())
}

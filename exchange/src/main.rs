//! The `exchange` binary: reads the config (or uses the embedded default with demo DSPs),
//! binds the listener, and serves until Ctrl-C or SIGTERM; SIGHUP reloads the config file,
//! SIGUSR1 reopens the event log file (after `logrotate` moved it).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use exchange::config::{CampaignConfig, DspConfig};
use exchange::Config;
use mockdsp::MockFleet;
use tokio::net::TcpListener;

/// An auction allocates a few hundred small objects across two threads (request parse, DSP
/// answers, hyper's buffers); mimalloc's per-thread free lists cost about 13% less CPU per
/// auction than glibc's arenas here (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OpenRTB 2.5/2.6 ad exchange.
///
/// With no arguments it runs the embedded default: in-memory stores and three demo DSPs on
/// loopback, listening on 127.0.0.1:8080.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML config file (see the README's config reference).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address; overrides `server.listen` and EXCHANGE_LISTEN.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reads event logs (one per node) and prints impressions, clicks, CTR, gross spend,
    /// publisher payout, margin and eCPM, per campaign and per DSP or per `--by` key, and
    /// duplicates dropped. A billed impression or click is counted once across all files. A
    /// torn last line (a crash mid-write) is skipped and reported, never read as an event.
    Report {
        /// A JSON-lines event log (`events.file`); repeat it for every node's log. Its rotated
        /// files beside it (`events.<time>.<seq>.jsonl`, plain or `.gz`) are read first, in
        /// order; a rotated or `.gz` file given here is read alone.
        #[arg(long, required = true)]
        events: Vec<PathBuf>,
        /// Rows keyed by publisher, dsp, campaign, day (UTC, of the auction time), country,
        /// media_type or property (site domain or app bundle); combine them with commas
        /// (`--by publisher,day`) or by repeating `--by`.
        #[arg(long, value_delimiter = ',')]
        by: Vec<impressions::Dimension>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    if let Some(Command::Report { events, by, json }) = &args.command {
        let report =
            impressions::Report::from_files(events, by).context("reading the event logs")?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{report}");
        }
        return Ok(());
    }

    let (mut config, demo) = match &args.config {
        Some(path) => (Config::from_file(path)?, None),
        None => {
            let (config, fleet) = demo().await?;
            (config, Some(fleet))
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.validate()?;

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    if demo.is_some() {
        announce_demo(&config);
    }
    // The signal handlers are in place before the address is announced: a SIGHUP or SIGUSR1
    // (logrotate's) that arrives once the node looks started must never meet the default
    // action, which ends the process.
    let (reload, reloads) = exchange::reload::reload_channel();
    let on_usr1 = tokio::spawn(reopen_on_usr1(reload.clone()));
    let on_hup = tokio::spawn(reload_on_hangup(args.config.clone(), args.listen, reload));
    // The last line at start: scripts and tests read the address from it.
    println!("listening on http://{}", listener.local_addr()?);
    exchange::run_with(listener, config, shutdown_signal(), reloads).await?;
    on_hup.abort();
    on_usr1.abort();
    if let Some(fleet) = demo {
        fleet.shutdown().await;
    }
    Ok(())
}

/// The embedded default: the demo bidders on loopback and budgets for the campaigns they bid
/// for, both from `mockdsp::demo`, in-memory stores, every other setting at its default
/// (environment overrides apply).
async fn demo() -> anyhow::Result<(Config, MockFleet)> {
    let fleet = MockFleet::start(mockdsp::demo::fleet())
        .await
        .context("starting the demo DSPs")?;
    let mut config = Config::default();
    config.apply_env(|k| std::env::var(k).ok())?;
    for (name, url) in fleet.endpoints() {
        config.dsps.push(DspConfig::new(name, url));
    }
    // The demo campaigns get budgets, so the budget path runs from the first request (and
    // shows in GET /admin/campaigns with EXCHANGE_ADMIN_TOKEN set).
    for campaign in mockdsp::demo::campaigns() {
        config.campaigns.push(CampaignConfig {
            dsp: campaign.dsp,
            id: campaign.id,
            budget: DEMO_BUDGET,
            paused: false,
            ..CampaignConfig::default()
        });
    }
    Ok((config, fleet))
}

/// Each demo campaign's budget, in the currency's units.
const DEMO_BUDGET: f64 = 1000.0;

/// Says loudly, on stdout and in the log, that this is a demo: nobody should mistake its
/// made-up bidders and budgets for a configured exchange.
fn announce_demo(config: &Config) {
    let rule = "=".repeat(76);
    println!("{rule}");
    println!("  DEMO MODE: no --config given, so this exchange runs the embedded demo.");
    println!("  Its bidders are mock DSPs inside this process, answering on loopback with");
    println!("  made-up bids, and its campaigns and budgets are made up too: nothing here is");
    println!("  real money. Run with --config FILE to bid out to real DSPs.");
    if config.redis.url.is_none() {
        println!("  Budgets and impression dedup live in this process's memory (no Redis).");
    }
    for dsp in &config.dsps {
        println!("    demo dsp {:<6} {}", dsp.name, dsp.url);
    }
    for c in &config.campaigns {
        println!("    demo campaign {}/{} budget {}", c.dsp, c.id, c.budget);
    }
    println!("{rule}");
    tracing::warn!(
        dsps = config.dsps.len(),
        campaigns = config.campaigns.len(),
        "DEMO MODE: no --config given; serving auctions to built-in mock DSPs with made-up \
         bids and budgets (pass --config FILE for a real exchange)"
    );
}

/// Logs go to stderr, human-readable by default; `EXCHANGE_LOG_FORMAT=json` gives one JSON
/// object per line for log pipelines, and `RUST_LOG` filters as usual.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("EXCHANGE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Re-reads `path` on each SIGHUP (with the same `--listen` override) and hands it to the
/// server, which logs and counts the outcome. Without a config file there is nothing to
/// re-read: the signal is logged and ignored.
/// The handler is registered when this is called, not when the task first runs.
fn reload_on_hangup(
    path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    reload: exchange::reload::ReloadHandle,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hup = match hup {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; live reload is off");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                let Some(path) = &path else {
                    tracing::warn!(
                        "SIGHUP ignored: no --config file to reload (the embedded demo)"
                    );
                    continue;
                };
                tracing::info!(file = %path.display(), "SIGHUP: reloading the config");
                let config = Config::from_file(path).map(|mut config| {
                    if let Some(listen) = listen {
                        config.server.listen = listen;
                    }
                    config
                });
                // The server has logged and counted a refusal already.
                let _ = reload.reload(config).await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (path, listen, reload);
        }
    }
}

/// Reopens the event log file on each SIGUSR1: `logrotate` (or any tool) moves the file away,
/// then signals; events written before the signal are in the moved file, the rest in a new
/// one at `events.file`. The outcome is logged (and counted by the tracker).
/// The handler is registered when this is called, not when the task first runs.
fn reopen_on_usr1(reload: exchange::reload::ReloadHandle) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
    async move {
        #[cfg(unix)]
        {
            let mut usr1 = match usr1 {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGUSR1; the event log cannot be reopened on a signal");
                    return;
                }
            };
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening the event log");
                if let Err(e) = reload.reopen_event_log().await {
                    tracing::error!(error = %e, "could not reopen the event log; still writing the old file");
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    eprintln!("shutting down");
}

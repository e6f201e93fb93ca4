//! The `loadtest` command line: one subcommand per tool (`dsp`, `run`, `surge`, `baseline`,
//! `compare`).

mod baseline;
mod compare;
mod dsp;
mod load;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load-testing tools for the exchange"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run mock DSPs on consecutive loopback ports until Ctrl-C.
    Dsp(dsp::DspArgs),
    /// Open-loop load at a fixed rate; latency from each request's intended send time.
    Run(load::RunArgs),
    /// A base rate, a jump to N times it, back down; a per-second timeline.
    Surge(load::SurgeArgs),
    /// A bare fan-out proxy (no parsing, no auction): the limit the exchange is measured against.
    Baseline(baseline::BaselineArgs),
    /// Saved JSON reports side by side, optionally as one HTML page.
    Compare(compare::CompareArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Dsp(args) => dsp::run(args).await,
            Command::Run(args) => load::run(args).await,
            Command::Surge(args) => load::surge(args).await,
            Command::Baseline(args) => baseline::run(args).await,
            Command::Compare(args) => compare::run(args),
        }
    })
}

/// Resolves on Ctrl-C, or SIGTERM where there is one (containers stop with it).
pub(crate) async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

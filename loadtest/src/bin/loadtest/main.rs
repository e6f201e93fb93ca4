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

/// Installs the Ctrl-C (and, where there is one, SIGTERM: containers stop with it) handlers
/// now, and returns a future that resolves on the first of them. Installing before a tool
/// announces itself matters: a signal that arrives between "listening on" and the first poll
/// must not be lost (a shell starts background jobs with SIGINT ignored).
pub(crate) fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            // Without a handler there is nothing to wait for: never resolve.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

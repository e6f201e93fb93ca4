//! The `loadtest` command line: one subcommand per tool (`dsp` now; `run`, `surge` and
//! `baseline` will join it).

mod dsp;

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

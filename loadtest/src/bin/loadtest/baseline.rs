//! `loadtest baseline`: the bare fan-out proxy, until Ctrl-C.

use std::time::Duration;

use clap::Args;
use loadtest::baseline::{Baseline, BaselineConfig};

#[derive(Args, Debug)]
pub(crate) struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// A DSP bid endpoint; repeat for each DSP. Loopback only unless --allow-remote.
    #[arg(long = "dsp", value_name = "URL", required = true)]
    dsps: Vec<String>,
    /// The per-auction deadline, as the exchange's `auction.dsp_timeout_ms`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout_ms: u64,
    /// Auctions at once; one more is answered 204 at once.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Allow DSP URLs that are not loopback addresses.
    #[arg(long)]
    allow_remote: bool,
}

pub(crate) async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let mut config = BaselineConfig::new(
        &args.dsps,
        Duration::from_millis(args.timeout_ms),
        args.allow_remote,
    )?;
    // u32 always fits a usize on the targets this builds for (32 and 64 bits).
    config.max_in_flight = args.max_in_flight as usize;
    let stop = crate::stop_signal()?;
    let baseline = Baseline::bind(&args.listen, config).await?;
    println!("listening on {}", baseline.url());
    stop.await;
    let s = baseline.stats();
    eprintln!(
        "baseline: requests={} bids={} no_bids={} overloaded={} bad_requests={} dsp_calls={} \
         dsp_timeouts={} dsp_errors={} late_abandoned={}",
        s.requests,
        s.bids,
        s.no_bids,
        s.overloaded,
        s.bad_requests,
        s.dsp_calls,
        s.dsp_timeouts,
        s.dsp_errors,
        s.late_abandoned
    );
    baseline.shutdown().await;
    Ok(())
}

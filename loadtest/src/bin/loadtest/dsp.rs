//! `loadtest dsp`: mock DSPs on consecutive ports, one URL per line on stdout.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use mockdsp::{Behavior, Latency, MockDsp, MockFleet, Price, TestCa};

#[derive(Args, Debug)]
pub(crate) struct DspArgs {
    /// How many mocks to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    count: u16,
    /// Port of the first mock; the others take the next ones. 0 picks free ports.
    #[arg(long, default_value_t = 9001)]
    base_port: u16,
    /// Address to listen on. Loopback unless you mean it.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Fixed wait before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Bid price, CPM.
    #[arg(long, default_value_t = 1.5)]
    price: f64,
    /// Chance of bidding on each imp, 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    bid_probability: f64,
    /// How the mocks answer.
    #[arg(long, value_enum, default_value_t = CliBehavior::Bid)]
    behavior: CliBehavior,
    /// The `nbr` code sent by `--behavior nbr`.
    #[arg(long, default_value_t = 0)]
    nbr: u32,
    /// The HTTP status sent by `--behavior error`.
    #[arg(long, default_value_t = 500)]
    status: u16,
    /// Gap between body bytes for `--behavior slow`, in milliseconds.
    #[arg(long, default_value_t = 5)]
    trickle_ms: u64,
    /// Leave nurl/burl/lurl out of bids.
    #[arg(long)]
    no_notices: bool,
    /// Serve over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a certificate for 127.0.0.1, ::1
    /// and localhost, signed by a CA generated at start.
    #[arg(long)]
    tls: bool,
    /// With --tls: write that CA's certificate (PEM) here, for the exchange's
    /// `[tls] ca_files`.
    #[arg(long, requires = "tls")]
    ca_out: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CliBehavior {
    /// Bid on each imp with --bid-probability.
    Bid,
    /// 204 No Content.
    #[value(alias = "nobid204")]
    Nobid,
    /// 200 `{}`.
    Empty,
    /// 200 `{"id":..,"nbr":<--nbr>}`.
    Nbr,
    /// HTTP <--status> with a short body.
    #[value(alias = "status")]
    Error,
    /// 200 with bytes that are not JSON.
    Garbage,
    /// A bid answer whose id is not the request's.
    WrongId,
    /// Read the request, never answer.
    Hang,
    /// Headers, then the body one byte every --trickle-ms.
    #[value(alias = "trickle")]
    Slow,
}

impl DspArgs {
    fn behavior(&self) -> Behavior {
        match self.behavior {
            CliBehavior::Bid => Behavior::Bid,
            CliBehavior::Nobid => Behavior::NoBid204,
            CliBehavior::Empty => Behavior::EmptyObject,
            CliBehavior::Nbr => Behavior::Nbr(self.nbr),
            CliBehavior::Error => Behavior::Status(self.status),
            CliBehavior::Garbage => Behavior::Garbage,
            CliBehavior::WrongId => Behavior::WrongId,
            CliBehavior::Hang => Behavior::Hang,
            CliBehavior::Slow => Behavior::Trickle,
        }
    }
}

pub(crate) async fn run(args: DspArgs) -> anyhow::Result<()> {
    let latency = match args.latency_ms {
        0 => Latency::None,
        ms => Latency::Fixed(Duration::from_millis(ms)),
    };
    let ca = args.tls.then(TestCa::generate).transpose()?;
    if let (Some(ca), Some(path)) = (&ca, &args.ca_out) {
        ca.write_ca(path)
            .with_context(|| format!("--ca-out {}", path.display()))?;
    }
    let mut builders = Vec::with_capacity(usize::from(args.count));
    for i in 0..args.count {
        let port = if args.base_port == 0 {
            0
        } else {
            args.base_port.checked_add(i).with_context(|| {
                format!(
                    "--base-port {} + --count {} runs past port 65535",
                    args.base_port, args.count
                )
            })?
        };
        let builder = MockDsp::builder(format!("dsp-{}", i + 1));
        let builder = match &ca {
            Some(ca) => builder.tls(ca.clone()),
            None => builder,
        };
        builders.push(
            builder
                .behavior(args.behavior())
                .price(Price::Fixed(args.price))
                .bid_probability(args.bid_probability)
                .latency(latency)
                .trickle_every(Duration::from_millis(args.trickle_ms))
                .notices(!args.no_notices)
                // A long-running mock has no test reading what it recorded.
                .record(0)
                .bind(std::net::SocketAddr::new(args.ip, port).to_string()),
        );
    }
    let stop = crate::stop_signal()?;
    let fleet = MockFleet::start(builders).await?;
    for dsp in fleet.dsps() {
        println!("{} {}", dsp.name(), dsp.url());
    }
    stop.await;
    for dsp in fleet.dsps() {
        let s = dsp.stats();
        eprintln!(
            "{}: requests={} bids_sent={} no_bids={} bad_requests={} nurl={} burl={} lurl={}",
            dsp.name(),
            s.requests,
            s.bids_sent,
            s.no_bids,
            s.bad_requests,
            s.nurl_hits,
            s.burl_hits,
            s.lurl_hits
        );
    }
    fleet.shutdown().await;
    Ok(())
}

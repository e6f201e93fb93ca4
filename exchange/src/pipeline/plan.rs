//! The auction's plan, made once the request is parsed: its one deadline and its type.

use std::time::Duration;

use auction::AuctionType;
use openrtb::request::BidRequest;
use tokio::time::Instant;

use crate::config::AuctionConfig;
use crate::metrics::AuctionOutcome;

/// What every later stage of one auction shares.
pub(crate) struct Plan {
    /// When the wait for DSPs ends, computed once: `start + min(auction.dsp_timeout_ms,
    /// tmax - auction.reserve_ms)`. Each DSP's own deadline is never later.
    pub deadline: Instant,
    pub at: AuctionType,
}

/// Plans the auction of `req`, which arrived at `start`; an auction that cannot run is
/// answered at once, counted with the returned outcome. One that can no longer give its DSPs
/// `min_wait` before its own deadline is shed as `late`: its answer would come too late to
/// be used, and the node's time is better spent on requests that can still be served.
pub(crate) fn plan(
    cfg: &AuctionConfig,
    req: &BidRequest<'_>,
    start: Instant,
    min_wait: Duration,
    have_dsps: bool,
) -> Result<Plan, AuctionOutcome> {
    let tmax_ms = req.tmax().map_or(cfg.default_tmax_ms, |t| t.max(0) as u64);
    let wait_ms = tmax_ms
        .saturating_sub(cfg.reserve_ms)
        .min(cfg.dsp_timeout_ms);
    if wait_ms == 0 {
        return Err(AuctionOutcome::NoTime);
    }
    if !have_dsps {
        return Err(AuctionOutcome::NoBid);
    }
    let at = req
        .at()
        .and_then(AuctionType::from_openrtb)
        .or_else(|| AuctionType::from_openrtb(i64::from(cfg.default_at)))
        .unwrap_or(AuctionType::SecondPrice);
    let deadline = start + Duration::from_millis(wait_ms);
    if deadline.saturating_duration_since(Instant::now()) < min_wait {
        return Err(AuctionOutcome::Late);
    }
    Ok(Plan { deadline, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(tmax, ms since arrival, min_wait ms) -> DSP wait left in ms, or the outcome`.
    fn check(cases: &[(u64, u64, u64, Result<u64, AuctionOutcome>)]) {
        let cfg = AuctionConfig::default();
        for &(tmax, waited, min_wait, ref want) in cases {
            let body = format!(r#"{{"id":"r","imp":[{{"id":"1","banner":{{}}}}],"tmax":{tmax}}}"#);
            let req = openrtb::request::parse(body.as_bytes()).unwrap();
            let now = Instant::now();
            let arrival = now - Duration::from_millis(waited);
            let got = plan(&cfg, &req, arrival, Duration::from_millis(min_wait), true)
                .map(|p| (p.deadline - arrival).as_millis() as u64);
            assert_eq!(
                &got, want,
                "tmax {tmax}, waited {waited} ms, min wait {min_wait} ms"
            );
        }
    }

    #[test]
    fn a_request_is_planned_from_its_arrival_and_shed_when_it_cannot_afford_a_dsp() {
        let reserve = AuctionConfig::default().reserve_ms;
        let timeout = AuctionConfig::default().dsp_timeout_ms;
        check(&[
            // Plenty of time: the DSP timeout bounds the wait.
            (1_000, 0, 5, Ok(timeout)),
            // A short tmax bounds it instead.
            (reserve + 20, 0, 5, Ok(20)),
            // It waited 10 ms before its handler ran: 10 ms is left of 20, enough.
            (reserve + 20, 10, 5, Ok(20)),
            // It waited 18 ms: 2 ms left is less than a DSP needs.
            (reserve + 20, 18, 5, Err(AuctionOutcome::Late)),
            // With the rule off, it still runs.
            (reserve + 20, 18, 0, Ok(20)),
            // No time at all is a request that could never run.
            (reserve, 0, 5, Err(AuctionOutcome::NoTime)),
        ]);
    }
}

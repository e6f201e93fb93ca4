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

/// Plans the auction of `req`, whose head arrived at `start`; an auction that cannot run is
/// answered at once, counted with the returned outcome.
pub(crate) fn plan(
    cfg: &AuctionConfig,
    req: &BidRequest<'_>,
    start: Instant,
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
    Ok(Plan {
        deadline: start + Duration::from_millis(wait_ms),
        at,
    })
}

//! The money side of one auction: the floors DSPs must meet (the request's own, converted,
//! and the `[[floor]]` rules), the rates everything is converted with, the currency the
//! publisher is answered in, and the exchange's margin. The arithmetic and its rounding live
//! in the `money` crate; this module decides which rule applies where.

pub(crate) mod floors;
pub(crate) mod rates;

use money::{CpmMicros, Margin, Rate, Round};
use openrtb::forward::ImpFloor;
use openrtb::request::BidRequest;

use crate::config::Config;
use crate::metrics::Registry;
use crate::publishers::Publisher;
use crate::reload::Live;
use crate::Error;
use floors::{FloorRules, Placement};
use rates::{RateTable, Rates};

/// A floor no bid can meet: the floor of an imp whose floor currency has no rate.
pub(crate) const UNREACHABLE: CpmMicros = CpmMicros::new(u64::MAX);

/// The money settings of one config, with the live rates.
pub(crate) struct Pricing {
    pub floors: FloorRules,
    /// `auction.default_margin`.
    pub default_margin: Margin,
    pub rates: Rates,
    /// Floors (imp or deal) in a currency without a rate: those imps or deals are unsellable.
    floor_no_rate: metrics::Counter,
}

impl Pricing {
    /// The pricing of a validated `config`; reads `currency.rates_file` and starts its
    /// refresh (which stops when this is dropped).
    pub fn start(config: &Config, registry: &Registry) -> Result<Pricing, Error> {
        Ok(Pricing {
            floors: FloorRules::new(&config.floors),
            default_margin: Margin::from_fraction(config.auction.default_margin)
                .unwrap_or(Margin::ZERO),
            rates: Rates::start(&config.currency, &config.auction.currency, registry)?,
            floor_no_rate: registry.counter("exchange_floor_no_rate_total", &[]),
        })
    }
}

/// The exchange's margin on this auction's clearing prices.
///
/// The one place a margin is chosen: a publisher's own `[[publisher]] margin` takes over
/// here, before `auction.default_margin`.
pub(crate) fn margin_for(live: &Live, publisher: Option<&Publisher>) -> Margin {
    publisher
        .and_then(|p| p.margin)
        .unwrap_or(live.pricing.default_margin)
}

/// The currency the publisher's answer is in: the first of the request's `cur` the exchange
/// has a rate for (the auction currency has rate 1), else the auction currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AnswerCurrency {
    code: [u8; 3],
    pub rate: Rate,
}

impl AnswerCurrency {
    pub fn of(req: &BidRequest<'_>, table: &RateTable, auction: &str) -> AnswerCurrency {
        let code = |c: &str| {
            <[u8; 3]>::try_from(c.as_bytes())
                .ok()
                .map(|c| c.map(|b| b.to_ascii_uppercase()))
        };
        req.cur()
            .iter()
            .find_map(|c| {
                Some(AnswerCurrency {
                    code: code(c)?,
                    rate: table.rate(c)?,
                })
            })
            .or_else(|| {
                Some(AnswerCurrency {
                    code: code(auction)?,
                    rate: Rate::ONE,
                })
            })
            .unwrap_or(AnswerCurrency {
                code: *b"USD",
                rate: Rate::ONE,
            })
    }

    pub fn as_str(&self) -> &str {
        // Three uppercase ASCII letters: checked when the table or the config was read.
        std::str::from_utf8(&self.code).unwrap_or("USD")
    }
}

/// The floors of one auction, in the auction currency.
pub(crate) struct Floors {
    /// Per imp, in request order: the highest of its own floor (converted) and its rules'.
    pub imps: Vec<CpmMicros>,
    /// The imps whose floor DSPs must be told anew (raised by a rule or converted).
    pub forward: Vec<ImpFloor>,
}

/// Every imp's effective floor: its own `bidfloor` in `bidfloorcur` (absent: USD, as the
/// spec says) converted into `auction` rounding UP, raised to the highest matching rule. A
/// floor currency without a rate makes the imp unsellable (counted), as no guess is made.
pub(crate) fn floors(
    pricing: &Pricing,
    req: &BidRequest<'_>,
    table: &RateTable,
    auction: &str,
) -> Floors {
    let at = Placement::of(req);
    let mut forward = Vec::new();
    let imps = req
        .imp
        .iter()
        .enumerate()
        .map(|(i, imp)| {
            let value = imp.bidfloor.as_ref().and_then(|f| f.value);
            let cur = imp.bidfloorcur.as_deref();
            let own = convert_floor(pricing, value, cur, table);
            if own == UNREACHABLE {
                return own;
            }
            let ruled = if pricing.floors.is_empty() {
                CpmMicros::ZERO
            } else {
                pricing.floors.floor(&at, imp)
            };
            let effective = own.max(ruled);
            let sent_as_is = value
                .filter(|v| *v > 0.0)
                .is_none_or(|_| cur.unwrap_or("USD").eq_ignore_ascii_case(auction))
                && effective == own;
            if !sent_as_is && effective > CpmMicros::ZERO {
                forward.push(ImpFloor {
                    imp: i,
                    floor: effective,
                });
            }
            effective
        })
        .collect();
    Floors { imps, forward }
}

/// A floor as the request writes it (`bidfloor`, `bidfloorcur`; deals too) in the auction
/// currency, rounded UP; [`UNREACHABLE`] (and counted) when its currency has no rate.
pub(crate) fn convert_floor(
    pricing: &Pricing,
    value: Option<f64>,
    cur: Option<&str>,
    table: &RateTable,
) -> CpmMicros {
    let Some(value) = value.filter(|f| *f > 0.0) else {
        return CpmMicros::ZERO;
    };
    let Some(price) = CpmMicros::from_cpm(value) else {
        return UNREACHABLE;
    };
    match table.rate(cur.filter(|c| !c.is_empty()).unwrap_or("USD")) {
        Some(rate) => rate.to_auction(price, Round::Up),
        None => {
            pricing.floor_no_rate.increment(1);
            UNREACHABLE
        }
    }
}

/// How one auction's winners are paid out: the margin taken and the publisher's currency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Terms {
    pub margin: Margin,
    pub answer: AnswerCurrency,
}

/// One winner's gross clearing price split for the publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Payout {
    /// What the publisher earns, auction currency: the gross less the margin, rounded down.
    pub net: CpmMicros,
    /// The exchange's part, auction currency: gross − net, so the two add up exactly.
    pub margin: CpmMicros,
    /// `net` in the answer currency, rounded down: the publisher's `price`.
    pub told: CpmMicros,
}

impl Terms {
    pub fn payout(&self, gross: CpmMicros) -> Payout {
        let (net, margin) = self.margin.split(gross);
        Payout {
            net,
            margin,
            told: self.answer.rate.from_auction(net, Round::Down),
        }
    }
}

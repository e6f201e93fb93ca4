//! Reading the DSPs' answers: no-bids and rejections counted per DSP, and every accepted bid
//! turned into an offer that carries its DSP, its imp and its campaign.

use std::borrow::Borrow;
use std::sync::Arc;

use auction::Candidate;
use budget::{BudgetView, Budgets};
use money::{Rate, Round};
use openrtb::macros::MacroValues;
use openrtb::response::{read_answer, AcceptedBid, Answer, Expect};

use super::ledger::Spend;
use super::notify;
use crate::fanout::{Call, CallOutcome, Dsp};
use crate::notices::Notice;
use crate::pricing::rates::RateTable;

/// One DSP's answer that came in time, read.
pub(crate) struct Answered<'d, 'b> {
    pub dsp: &'d Arc<Dsp>,
    pub answer: Answer<'b>,
}

/// Reads every answer that came in time, counting no-bids and rejections per DSP. A bid
/// rejected for its own faults still hears why (its loss code), if it left an `lurl`.
pub(crate) fn read<'d, 'b>(
    calls: &'b [Call<'d>],
    expect: &Expect<'_>,
    notices: &mut Vec<Notice>,
) -> Vec<Answered<'d, 'b>> {
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        let CallOutcome::Answered { status, body } = &call.outcome else {
            continue;
        };
        let dsp = call.dsp;
        let answer = read_answer(*status, body, expect);
        // A bad status or an unreadable answer counts against the DSP's breaker.
        dsp.record(call.admission, !matches!(answer, Answer::Rejected(_)));
        match &answer {
            Answer::NoBid(_) => dsp.metrics.no_bids.increment(1),
            Answer::Rejected(why) => {
                dsp.metrics.rejected(why.as_str());
                tracing::debug!(dsp = %dsp.name, reason = why.as_str(), "dsp answer rejected");
            }
            Answer::Bids {
                accepted, rejected, ..
            } => {
                dsp.metrics.bids.increment(accepted.len() as u64);
                for r in rejected {
                    dsp.metrics.rejected(r.reason.as_str());
                    let values = MacroValues {
                        auction_id: Some(expect.request_id),
                        bid_id: r.bid_id.as_deref(),
                        imp_id: r.imp_id.as_deref(),
                        seat_id: Some(r.seat.as_deref().unwrap_or(&dsp.name)),
                        ad_id: r.adid.as_deref(),
                        currency: Some(expect.currency),
                        loss: Some(r.reason.loss_code()),
                        ..MacroValues::default()
                    };
                    notify::loss(dsp, r.lurl, &values, notices);
                }
            }
        }
        answers.push(Answered { dsp, answer });
    }
    answers
}

/// An accepted bid with everything the later stages need of where it came from.
pub(crate) struct Offer<'o> {
    pub dsp: &'o Arc<Dsp>,
    /// `BidResponse.bidid` of the answer the bid came in.
    pub response_bidid: Option<&'o str>,
    pub bid: &'o AcceptedBid<'o>,
    /// The currency the DSP bid in (`BidResponse.cur`, absent: USD): its notices and markup
    /// are told prices in it.
    pub currency: &'o str,
    /// That currency's rate from the auction currency.
    pub rate: Rate,
    /// The auction's view of the bid: its imp's index, price (converted into the auction
    /// currency rounding down, then adjusted), seat, campaign.
    pub candidate: Candidate<'o, Spend<'o>>,
}

impl<'o> Borrow<Candidate<'o, Spend<'o>>> for Offer<'o> {
    fn borrow(&self) -> &Candidate<'o, Spend<'o>> {
        &self.candidate
    }
}

impl Offer<'_> {
    /// The seat the bid speaks for; a DSP that names none bids as itself.
    pub fn seat(&self) -> &str {
        self.candidate.seat
    }

    /// A price in the auction currency as this DSP is told it, in its own currency: rounded
    /// down and never above its bid (a clearing price), or rounded up (a minimum to win, so a
    /// bid at it would have done).
    pub fn in_bid_currency(&self, price: money::CpmMicros, round: Round) -> money::CpmMicros {
        let told = self.rate.from_auction(price, round);
        match round {
            Round::Down => told.min(self.bid.price),
            Round::Up => told,
        }
    }

    /// The macro values every notice and markup of this bid shares, in the DSP's currency;
    /// price, loss code and minimum to win depend on how it did and are filled in by the
    /// caller.
    pub fn macro_values<'v>(&'v self, auction_id: &'v str) -> MacroValues<'v> {
        let currency = self.currency;
        let bid = &self.bid.bid;
        MacroValues {
            auction_id: Some(auction_id),
            // The spec's source is BidResponse.bidid; many DSPs send none, so the bid id.
            bid_id: Some(self.response_bidid.unwrap_or(&bid.id)),
            imp_id: Some(&bid.impid),
            seat_id: Some(self.seat()),
            ad_id: bid.adid.as_deref(),
            currency: Some(currency),
            ..MacroValues::default()
        }
    }
}

/// Every accepted bid of `answers` as an offer, its campaign looked up in the node's budget
/// index (immutable, swapped atomically: no lock, no IO), its price converted into the
/// auction currency with `table` (rounding down) and multiplied by its DSP's
/// `bid_adjustment` (rounding down), capped at what it bid when adjusted.
pub(crate) fn offers<'o>(
    answers: &'o [Answered<'o, 'o>],
    budgets: &Budgets,
    view: &'o BudgetView<'o>,
    table: &RateTable,
) -> Vec<Offer<'o>> {
    let mut offers = Vec::new();
    for answered in answers {
        let Answer::Bids {
            response, accepted, ..
        } = &answered.answer
        else {
            continue;
        };
        let dsp = answered.dsp;
        let currency = response
            .cur
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or("USD");
        // Reading the answer checked its currency against this same table.
        let Some(rate) = table.rate(currency) else {
            dsp.metrics.rejected("wrong_currency");
            continue;
        };
        for bid in accepted {
            let wire = &bid.bid;
            let converted = rate.to_auction(bid.price, Round::Down);
            if converted == money::CpmMicros::ZERO {
                // Under one micro of the auction currency: no price at all.
                dsp.metrics.rejected("bad_price");
                continue;
            }
            let adjusted = dsp.bid_adjustment.apply(converted);
            if adjusted == money::CpmMicros::ZERO {
                dsp.metrics.rejected("bad_price");
                continue;
            }
            let cid = wire.cid.as_deref();
            let found = view.lookup(&dsp.name, cid);
            offers.push(Offer {
                dsp,
                response_bidid: response.bidid.as_deref(),
                bid,
                currency,
                rate,
                candidate: Candidate {
                    imp: bid.imp,
                    bidder: dsp.index,
                    seat: bid.seat.as_deref().unwrap_or(&dsp.name),
                    price: adjusted,
                    pay_cap: (adjusted > converted).then_some(converted),
                    deal_id: wire.dealid.as_deref(),
                    adomain: &wire.adomain,
                    cat: &wire.cat,
                    attr: &wire.attr,
                    bundle: wire.bundle.as_deref(),
                    campaign: Spend::of(budgets, found, &dsp.name, cid),
                },
            });
        }
    }
    offers
}

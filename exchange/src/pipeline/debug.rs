//! Debugging one auction: who may ask (`test = 1`, or the `x-exchange-debug` header carrying
//! `debug.token`), and `ext.debug`, read from the typed stages once the auction is settled.
//!
//! Nothing here runs unless debugging was asked for and granted: the normal path only looks
//! the header up (no allocation) and carries a `None`.

use std::sync::Arc;

use auction::{AuctionType, BidResult, LossReason};
use http::HeaderMap;
use money::CpmMicros;
use openrtb::answer::Winning;
use openrtb::response::Answer;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::offers::Answered;
use super::settle::Auctioned;
use crate::fanout::{Call, CallOutcome};
use crate::metrics::ServerMetrics;

/// The header that asks for `ext.debug`; its value must equal `debug.token`.
pub(crate) const HEADER: &str = "x-exchange-debug";

/// What a request's `x-exchange-debug` header asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// No header.
    Nothing,
    /// The configured token.
    Granted,
    /// Another value, or no token is configured: treated as no header, and counted.
    Refused,
}

/// Reads the header against `token`, in constant time for a value of the token's length (a
/// token's length is not the secret).
pub(crate) fn asked(token: Option<&str>, headers: &HeaderMap) -> Asked {
    let Some(sent) = headers.get(HEADER) else {
        return Asked::Nothing;
    };
    match token {
        Some(token) if bool::from(sent.as_bytes().ct_eq(token.as_bytes())) => Asked::Granted,
        _ => Asked::Refused,
    }
}

/// One auction's debug record while it runs: started only when debugging is on.
pub(crate) struct DebugLog {
    test: bool,
    /// The fraud screen's findings for this auction (issue 11's screen fills it in); `null`
    /// until then.
    pub screening: serde_json::Value,
    /// What privacy scrubbing removed and the supply chain it wrote (issue 11's privacy step
    /// fills it in); `null` until then.
    pub scrubbing: serde_json::Value,
}

/// Starts the record when a test auction or a granted header asks for one, and counts how
/// the header was taken.
pub(crate) fn start(metrics: &ServerMetrics, test: bool, asked: Asked) -> Option<DebugLog> {
    if asked == Asked::Refused {
        metrics.debug_refused.increment(1);
    }
    (test || asked == Asked::Granted).then(|| {
        metrics.debug_answers.increment(1);
        DebugLog {
            test,
            screening: serde_json::Value::Null,
            scrubbing: serde_json::Value::Null,
        }
    })
}

/// The stages' outputs `ext.debug` is read from.
pub(crate) struct Stages<'s, 'o> {
    pub calls: &'s [Call<'o>],
    pub answers: &'s [Answered<'o, 'o>],
    pub sale: &'s auction::Request<'s>,
    pub auctioned: &'s Auctioned<'o>,
    pub rules: &'s auction::Rules,
}

impl DebugLog {
    /// The publisher's answer with `ext.debug`: 200 even when nothing won (`"seatbid":[]`).
    pub fn write(
        self,
        id: &str,
        currency: &str,
        winners: &[Winning<'_>],
        stages: &Stages<'_, '_>,
    ) -> Vec<u8> {
        answer(id, currency, winners, self.report(stages))
    }

    /// The answer to a request the fraud screen stopped: 200, `"seatbid":[]`, and
    /// `ext.debug.screening` naming the rule; no DSP was called.
    pub fn write_screened(mut self, id: &str, currency: &str, reason: &str) -> Vec<u8> {
        self.screening = serde_json::json!({ "screened": true, "reason": reason });
        let report = Report {
            test: self.test,
            dsps: Vec::new(),
            imps: Vec::new(),
            screening: self.screening,
            scrubbing: self.scrubbing,
        };
        answer(id, currency, &[], report)
    }

    fn report<'s>(self, stages: &Stages<'s, '_>) -> Report<'s> {
        let Stages {
            calls,
            answers,
            sale,
            auctioned,
            rules,
        } = *stages;
        let dsps = calls
            .iter()
            .map(|call| {
                let answer = answers
                    .iter()
                    .find(|a| Arc::ptr_eq(a.dsp, call.dsp))
                    .map(|a| &a.answer);
                dsp_call(call, answer, auctioned)
            })
            .collect();
        let imps = sale
            .imps
            .iter()
            .zip(&auctioned.outcome.imps)
            .enumerate()
            .map(|(i, (imp, result))| clearing(i, imp, result, sale, auctioned, rules, self.test))
            .collect();
        Report {
            test: self.test,
            dsps,
            imps,
            screening: self.screening,
            scrubbing: self.scrubbing,
        }
    }
}

/// The publisher's answer with `report` as its `ext.debug`.
fn answer(id: &str, currency: &str, winners: &[Winning<'_>], report: Report<'_>) -> Vec<u8> {
    // Plain structs of strings and finite numbers always serialize; should one not, the
    // answer still goes out, saying so.
    let ext = serde_json::to_vec(&Ext { debug: report })
        .unwrap_or_else(|_| br#"{"debug":{"error":"not serializable"}}"#.to_vec());
    openrtb::answer::write_with_ext(id, currency, winners, &ext)
}

fn dsp_call<'s>(
    call: &'s Call<'_>,
    answer: Option<&'s Answer<'s>>,
    auctioned: &'s Auctioned<'_>,
) -> DspCall<'s> {
    let mut out = DspCall {
        dsp: &call.dsp.name,
        called: true,
        skipped: None,
        status: None,
        latency_ms: Some(call.latency.as_micros() as f64 / 1e3),
        result: "",
        reason: None,
        bids: Vec::new(),
    };
    match &call.outcome {
        CallOutcome::Skipped(skip) => {
            out.called = false;
            out.skipped = Some(skip.label());
            out.latency_ms = None;
            out.result = "skipped";
        }
        CallOutcome::TimedOut => out.result = "timed_out",
        CallOutcome::Failed(e) => {
            out.result = "failed";
            out.reason = Some(e.label());
        }
        CallOutcome::Answered { status, .. } => {
            out.status = Some(*status);
            match answer {
                Some(Answer::NoBid(kind)) => {
                    out.result = "no_bid";
                    out.reason = Some(kind.as_str());
                }
                Some(Answer::Rejected(why)) => {
                    out.result = "rejected";
                    out.reason = Some(why.as_str());
                }
                Some(Answer::Bids { rejected, .. }) => {
                    out.result = "bids";
                    out.bids = auctioned
                        .results()
                        .filter(|(offer, _)| Arc::ptr_eq(offer.dsp, call.dsp))
                        .map(|(offer, result)| {
                            let bid = &offer.bid.bid;
                            let (outcome, reason, clearing) = match result {
                                BidResult::Won { clearing } => ("won", None, Some(cpm(clearing))),
                                BidResult::Lost { reason, .. } => {
                                    ("lost", Some(reason.as_str()), None)
                                }
                            };
                            BidDebug {
                                id: Some(&bid.id),
                                impid: Some(&bid.impid),
                                price: Some(cpm(offer.candidate.price)),
                                seat: Some(offer.seat()),
                                cid: bid.cid.as_deref(),
                                crid: bid.crid.as_deref(),
                                outcome,
                                loss_code: result.loss_code(),
                                reason,
                                clearing,
                            }
                        })
                        .chain(rejected.iter().map(|r| BidDebug {
                            id: r.bid_id.as_deref(),
                            impid: r.imp_id.as_deref(),
                            price: None,
                            seat: r.seat.as_deref(),
                            cid: None,
                            crid: None,
                            outcome: "rejected",
                            loss_code: r.reason.loss_code(),
                            reason: Some(r.reason.as_str()),
                            clearing: None,
                        }))
                        .collect();
                }
                // Every answered call was read; a missing reading is not worth failing over.
                None => out.result = "unread",
            }
        }
    }
    out
}

/// How imp `i` cleared: its floor (the winner's class's), the runner-up in that class, the
/// price to beat (runner-up or floor), the increment and what the winner pays.
fn clearing<'s>(
    i: usize,
    imp: &'s auction::Imp<'s>,
    result: &auction::ImpResult,
    sale: &auction::Request<'_>,
    auctioned: &'s Auctioned<'_>,
    rules: &auction::Rules,
    test: bool,
) -> ImpClearing<'s> {
    let mine = || {
        auctioned
            .results()
            .filter(move |(offer, _)| offer.candidate.imp == i)
    };
    let deal = result.deal.and_then(|k| imp.deals.get(k));
    let at = deal.and_then(|d| d.at).unwrap_or(sale.at);
    let winner = result
        .winner
        .and_then(|w| auctioned.offers.get(w))
        .map(|offer| Winner {
            dsp: &offer.dsp.name,
            bid: &offer.bid.bid.id,
        });
    // The winner's race: the bids outbid in it (a deal's race when a deal won).
    let runner_up = mine()
        .filter(|(_, r)| {
            matches!(
                r,
                BidResult::Lost {
                    reason: LossReason::LostToHigherBid,
                    ..
                }
            )
        })
        .map(|(offer, _)| offer.candidate.price)
        .max();
    let sold = winner.is_some();
    ImpClearing {
        id: imp.id,
        at: at.to_openrtb(),
        deal: deal.map(|d| d.id),
        bids: mine().count(),
        floor: cpm(deal.map_or(imp.floor, |d| d.floor)),
        runner_up: runner_up.filter(|_| sold).map(cpm),
        second_price: sold.then(|| cpm(result.min_to_win)),
        increment: match at {
            AuctionType::SecondPrice => Some(cpm(rules.increment)),
            _ => None,
        },
        clearing: sold.then(|| cpm(result.clearing)),
        // A test auction debits nothing, whatever the engine was told.
        charged_micros: if test { 0 } else { result.charged.get() },
        winner,
    }
}

/// A CPM as the wire writes prices. Exact for what matters here: a micros count divided by
/// 1e6 is the double nearest the decimal, which serde_json prints back as that decimal.
fn cpm(price: CpmMicros) -> f64 {
    price.get() as f64 / 1e6
}

#[derive(Serialize)]
struct Ext<'s> {
    debug: Report<'s>,
}

/// `ext.debug`.
#[derive(Serialize)]
struct Report<'s> {
    test: bool,
    /// Every configured DSP, in configuration order.
    dsps: Vec<DspCall<'s>>,
    /// Every imp, in request order.
    imps: Vec<ImpClearing<'s>>,
    screening: serde_json::Value,
    scrubbing: serde_json::Value,
}

#[derive(Serialize)]
struct DspCall<'s> {
    dsp: &'s str,
    called: bool,
    /// Why it was not called: `targeting`, `circuit_open`, `qps`, `in_flight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// `skipped`, `timed_out`, `failed`, `no_bid`, `rejected` or `bids`.
    result: &'static str,
    /// The no-bid kind, the answer's rejection or the failure, by its metric label.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bids: Vec<BidDebug<'s>>,
}

#[derive(Serialize)]
struct BidDebug<'s> {
    id: Option<&'s str>,
    impid: Option<&'s str>,
    /// CPM as read (rounded to the micro); absent for a bid the reader refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
    seat: Option<&'s str>,
    cid: Option<&'s str>,
    crid: Option<&'s str>,
    /// `won`, `lost` (by the auction) or `rejected` (by the reader, before the auction).
    outcome: &'static str,
    /// OpenRTB loss reason code; 0 for the winner.
    loss_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clearing: Option<f64>,
}

#[derive(Serialize)]
struct ImpClearing<'s> {
    id: &'s str,
    /// The auction type the winner's class cleared under (1, 2, 3).
    at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deal: Option<&'s str>,
    /// Bids that reached the auction for this imp.
    bids: usize,
    floor: f64,
    runner_up: Option<f64>,
    /// The price to beat: the runner-up or the floor, whichever is higher.
    second_price: Option<f64>,
    increment: Option<f64>,
    clearing: Option<f64>,
    charged_micros: u64,
    winner: Option<Winner<'s>>,
}

#[derive(Serialize)]
struct Winner<'s> {
    dsp: &'s str,
    bid: &'s str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(HEADER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_configured_token_grants_debugging() {
        let token = Some("debug-token-0123456789");
        assert_eq!(asked(token, &headers(None)), Asked::Nothing);
        assert_eq!(
            asked(token, &headers(Some("debug-token-0123456789"))),
            Asked::Granted
        );
        assert_eq!(
            asked(token, &headers(Some("debug-token-0123456780"))),
            Asked::Refused
        );
        assert_eq!(asked(token, &headers(Some("debug"))), Asked::Refused);
        assert_eq!(
            asked(None, &headers(Some("debug-token-0123456789"))),
            Asked::Refused
        );
    }

    #[test]
    fn prices_print_as_the_decimal_they_are() {
        let text = serde_json::to_string(&[
            cpm(CpmMicros::new(1_510_000)),
            cpm(CpmMicros::new(2_000_000)),
            cpm(CpmMicros::new(10_000)),
            cpm(CpmMicros::new(1_234_567)),
        ])
        .unwrap();
        assert_eq!(text, "[1.51,2.0,0.01,1.234567]");
    }
}

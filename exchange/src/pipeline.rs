//! One auction, from a request body to the publisher's answer: deadline, fan-out, reading
//! the DSP answers, the auction, the winning bids rewritten, and the notices.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use auction::{AuctionType, BidResult, Candidate, LossReason, Outcome};
use budget::metrics::DropReason;
use budget::Lookup;
use bytes::Bytes;
use http::{Response, StatusCode};
use impressions::Event;
use openrtb::forward::Outbound;
use openrtb::json::{self, JsonStr};
use openrtb::macros::{expand, expand_url, MacroValues};
use openrtb::request::{BidRequest, Imp};
use openrtb::response::{read_answer, AcceptedBid, Answer, BidEdits, BidResponse, Expect};
use tokio::time::Instant;

use crate::fanout::{CallOutcome, Dsp};
use crate::metrics::AuctionOutcome;
use crate::notices::{Notice, NoticeKind};
use crate::server::{error, json as json_response, no_bid, App, Body};
use crate::tracking;

/// Runs the auction for `body` and builds the answer. The auction clock started at `start`,
/// when the request head arrived.
pub(crate) async fn run_auction(app: &App, start: Instant, body: &[u8]) -> Response<Body> {
    let req = match openrtb::request::parse(body) {
        Ok(req) => req,
        Err(e) => {
            app.metrics.outcome(AuctionOutcome::Invalid);
            return error(StatusCode::BAD_REQUEST, &e.message, &e.field);
        }
    };
    let cfg = &app.config.auction;

    // One deadline per auction, computed once; each DSP's own is never later.
    let tmax_ms = req.tmax().map_or(cfg.default_tmax_ms, |t| t.max(0) as u64);
    let wait_ms = tmax_ms
        .saturating_sub(cfg.reserve_ms)
        .min(cfg.dsp_timeout_ms);
    if wait_ms == 0 {
        app.metrics.outcome(AuctionOutcome::NoTime);
        return no_bid();
    }
    if app.dsps.is_empty() {
        app.metrics.outcome(AuctionOutcome::NoBid);
        return no_bid();
    }
    let deadline = start + Duration::from_millis(wait_ms);
    let at = req
        .at()
        .and_then(AuctionType::from_openrtb)
        .or_else(|| AuctionType::from_openrtb(i64::from(cfg.default_at)))
        .unwrap_or(AuctionType::SecondPrice);

    let outbound = Outbound::new(body, &req, at.to_openrtb() as u8, &cfg.currency);
    let calls = app
        .fanout
        .call_all(&req.id, &app.dsps, start, deadline, |tmax| {
            let mut out = Vec::with_capacity(outbound.len_hint() + 8);
            outbound.render(tmax, &mut out);
            Bytes::from(out)
        })
        .await;

    let imp_ids: Vec<&str> = req.imp.iter().map(|imp| imp.id.as_ref()).collect();
    let expect = Expect {
        request_id: &req.id,
        imp_ids: &imp_ids,
        currency: &cfg.currency,
    };
    let mut notices = Vec::new();
    let answers = read_answers(app, &calls, &expect, &mut notices);

    // The auction's view of the request and of every accepted bid, borrowing from both.
    let battrs: Vec<Vec<i64>> = req.imp.iter().map(blocked_attributes).collect();
    let areq = auction_request(&req, &battrs, at, &cfg.currency, rand::random());
    let bids: Vec<Entry<'_, '_>> = answers
        .iter()
        .filter_map(|(dsp, answer)| match answer {
            Answer::Bids {
                response, accepted, ..
            } => Some((&app.dsps[*dsp], response, accepted)),
            _ => None,
        })
        .flat_map(|(dsp, response, accepted)| {
            accepted.iter().map(move |bid| Entry { dsp, response, bid })
        })
        .collect();
    let attrs: Vec<Vec<i64>> = bids
        .iter()
        .map(|e| e.bid.bid.attr.iter().map(|&a| i64::from(a)).collect())
        .collect();
    // Budgets: local atomics only, no IO. The view lives until the end of this function,
    // past the last await, so no lock or guard is held across one.
    let view = app.budgets.view();
    let policy = app.budgets.unknown_policy();
    let candidates: Vec<Candidate<'_, Spend<'_>>> = bids
        .iter()
        .zip(&attrs)
        .map(|(e, attr)| Candidate {
            // read_answer accepted only bids for an imp of this request.
            imp: imp_ids
                .iter()
                .position(|id| *id == e.bid.bid.impid)
                .unwrap_or(usize::MAX),
            bidder: e.dsp.index,
            seat: e.seat(),
            price_micros: e.bid.price_micros,
            deal_id: e.bid.bid.dealid.as_deref(),
            adomain: &e.bid.bid.adomain,
            cat: &e.bid.bid.cat,
            attr,
            bundle: e.bid.bid.bundle.as_deref(),
            campaign: match view.lookup(&e.dsp.name, e.bid.bid.cid.as_deref()) {
                Lookup::Found(campaign) => Some(Spend::Budget(campaign)),
                // Allowed without a budget: takes part, never charged.
                _ if policy.allows() => None,
                Lookup::NoCid => Some(Spend::Refused(DropReason::NoCid)),
                Lookup::Unknown => Some(Spend::Refused(DropReason::UnknownCampaign)),
            },
        })
        .collect();
    let outcome = auction::run(&areq, &candidates, &app.rules, &BudgetLedger::default());
    record_budget_drops(app, &bids, &candidates, &outcome);

    let mut events = Vec::new();
    let answer = write_answer(app, &req, &bids, &outcome, &mut notices, &mut events);
    app.notifier.fire(notices);
    app.events.emit(events);
    match answer {
        Some(body) => {
            app.metrics.outcome(AuctionOutcome::Won);
            json_response(StatusCode::OK, body)
        }
        None => {
            app.metrics.outcome(AuctionOutcome::NoBid);
            no_bid()
        }
    }
}

/// The campaign behind a bid, as the auction's ledger sees it.
#[derive(Clone, Copy)]
enum Spend<'v> {
    /// A budgeted campaign: its lease decides.
    Budget(&'v budget::Campaign),
    /// No campaign the exchange knows, and the policy is `reject`: the bid loses with the
    /// exchange's "campaign inactive" reason.
    Refused(DropReason),
}

/// Charges winners against the node's local leases: atomics, never IO.
#[derive(Default)]
struct BudgetLedger<'v>(std::marker::PhantomData<&'v ()>);

impl<'v> auction::Ledger for BudgetLedger<'v> {
    type Campaign = Spend<'v>;

    fn can_cover(&self, campaign: &Spend<'v>, cost_micros: u64) -> bool {
        matches!(campaign, Spend::Budget(c) if c.can_cover(cost_micros))
    }

    fn try_charge(&self, campaign: &Spend<'v>, cost_micros: u64) -> bool {
        matches!(campaign, Spend::Budget(c) if c.try_charge(cost_micros))
    }

    fn is_active(&self, campaign: &Spend<'v>) -> bool {
        matches!(campaign, Spend::Budget(_))
    }
}

/// Counts the bids the budgets kept out of the auction, by reason.
fn record_budget_drops(
    app: &App,
    bids: &[Entry<'_, '_>],
    candidates: &[Candidate<'_, Spend<'_>>],
    outcome: &Outcome,
) {
    for ((entry, candidate), result) in bids.iter().zip(candidates).zip(&outcome.bids) {
        let reason = match (result, candidate.campaign) {
            (
                BidResult::Lost {
                    reason: LossReason::CampaignBudgetExhausted,
                    ..
                },
                Some(Spend::Budget(_)),
            ) => DropReason::Insufficient,
            (BidResult::Lost { .. }, Some(Spend::Refused(reason))) => reason,
            _ => continue,
        };
        app.budgets
            .record_drop(&entry.dsp.name, entry.bid.bid.cid.as_deref(), reason);
    }
}

/// An accepted bid with where it came from.
struct Entry<'d, 'a> {
    dsp: &'d Arc<Dsp>,
    response: &'d BidResponse<'a>,
    bid: &'d AcceptedBid<'a>,
}

impl Entry<'_, '_> {
    /// The seat the bid speaks for; a DSP that names none bids as itself.
    fn seat(&self) -> &str {
        self.bid.seat.as_deref().unwrap_or(&self.dsp.name)
    }

    /// The macro values every notice and markup of this bid shares; price, loss code and
    /// minimum to win depend on how it did and are filled in by the caller.
    fn macro_values<'v>(&'v self, req: &'v BidRequest<'_>, currency: &'v str) -> MacroValues<'v> {
        MacroValues {
            auction_id: Some(&req.id),
            // The spec's source is BidResponse.bidid; many DSPs send none, so the bid id.
            bid_id: Some(self.response.bidid.as_deref().unwrap_or(&self.bid.bid.id)),
            imp_id: Some(&self.bid.bid.impid),
            seat_id: Some(self.seat()),
            ad_id: self.bid.bid.adid.as_deref(),
            currency: Some(currency),
            ..MacroValues::default()
        }
    }
}

/// Reads every answer that came in time, counting no-bids and rejections per DSP.
/// A bid rejected for its own faults still hears why (its loss code), if it left an `lurl`.
fn read_answers<'b>(
    app: &App,
    calls: &'b [CallOutcome],
    expect: &Expect<'_>,
    notices: &mut Vec<Notice>,
) -> Vec<(usize, Answer<'b>)> {
    let mut answers = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let CallOutcome::Answered { status, body } = call else {
            continue;
        };
        let dsp = &app.dsps[i];
        let answer = read_answer(*status, body, expect);
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
                    queue_loss_notice(dsp, r.lurl, &values, notices);
                }
            }
        }
        answers.push((i, answer));
    }
    answers
}

/// The union of the imp's blocked creative attributes over its media objects.
fn blocked_attributes(imp: &Imp<'_>) -> Vec<i64> {
    let mut all: Vec<i64> = [
        imp.banner.as_ref().map(|b| &b.battr[..]),
        imp.video.as_ref().map(|v| &v.battr[..]),
        imp.audio.as_ref().map(|a| &a.battr[..]),
        imp.native.as_ref().map(|n| &n.battr[..]),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .map(|&a| i64::from(a))
    .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A floor in a currency other than the auction's cannot be compared with bids until
/// currency conversion exists, so such an imp is not sold below an unknown floor: its floor
/// becomes unreachable and every bid on it loses with "below floor".
fn floor_micros(value: Option<f64>, floor_currency: Option<&str>, currency: &str) -> u64 {
    let Some(floor) = value.filter(|f| *f > 0.0) else {
        return 0;
    };
    if floor_currency.is_some_and(|c| !c.eq_ignore_ascii_case(currency)) {
        return u64::MAX;
    }
    json::cpm_to_micros(floor).unwrap_or(u64::MAX)
}

fn auction_request<'r>(
    req: &'r BidRequest<'r>,
    battrs: &'r [Vec<i64>],
    at: AuctionType,
    currency: &str,
    tie_seed: u64,
) -> auction::Request<'r> {
    let imps = req
        .imp
        .iter()
        .zip(battrs)
        .map(|(imp, battr)| {
            let imp_floor_cur = imp.bidfloorcur.as_deref();
            let deals = imp
                .pmp
                .as_ref()
                .map(|pmp| {
                    pmp.deals
                        .iter()
                        .map(|d| auction::Deal {
                            id: &d.id,
                            floor_micros: floor_micros(
                                d.bidfloor,
                                d.bidfloorcur.as_deref().or(imp_floor_cur),
                                currency,
                            ),
                            at: d.at.and_then(AuctionType::from_openrtb),
                            wseat: &d.wseat,
                        })
                        .collect()
                })
                .unwrap_or_default();
            auction::Imp {
                id: &imp.id,
                floor_micros: floor_micros(
                    imp.bidfloor.as_ref().and_then(|f| f.value),
                    imp_floor_cur,
                    currency,
                ),
                deals,
                private_auction: imp.pmp.as_ref().and_then(|p| p.private_auction) == Some(1),
                battr,
            }
        })
        .collect();
    auction::Request {
        at,
        imps,
        bcat: &req.bcat,
        badv: &req.badv,
        bapp: &req.bapp,
        wseat: &req.wseat,
        bseat: &req.bseat,
        tie_seed,
    }
}

/// Writes the BidResponse, one seatbid per winning DSP seat, or `None` when nothing won.
/// Collects the win notices the exchange fires itself and the loss notices.
fn write_answer(
    app: &App,
    req: &BidRequest<'_>,
    bids: &[Entry<'_, '_>],
    outcome: &Outcome,
    notices: &mut Vec<Notice>,
    events: &mut Vec<Event>,
) -> Option<Vec<u8>> {
    let currency = app.config.auction.currency.as_str();
    let auction_ts = tracking::now_ms();
    let mut winners: Vec<usize> = outcome.imps.iter().filter_map(|imp| imp.winner).collect();

    for (i, (entry, result)) in bids.iter().zip(&outcome.bids).enumerate() {
        match *result {
            BidResult::Won { .. } => entry.dsp.metrics.wins.increment(1),
            BidResult::Lost {
                reason,
                min_to_win_micros,
            } => {
                entry.dsp.metrics.lost(reason);
                let fired = loss_notice(
                    req,
                    entry,
                    result.loss_code(),
                    min_to_win_micros,
                    currency,
                    notices,
                );
                if fired {
                    let bid = tracking::bid_ref(
                        &req.id,
                        &entry.bid.bid,
                        &entry.dsp.name,
                        entry.seat(),
                        entry.bid.price_micros,
                        currency,
                        auction_ts,
                    );
                    events.push(Event::loss(&bid, u32::from(result.loss_code()), auction_ts));
                }
                debug_assert!(!winners.contains(&i));
            }
        }
    }
    if winners.is_empty() {
        return None;
    }
    // Group by DSP and seat: one seatbid per winning seat.
    winners.sort_by(|&a, &b| {
        (bids[a].dsp.index, bids[a].seat()).cmp(&(bids[b].dsp.index, bids[b].seat()))
    });

    let mut out = Vec::with_capacity(512 + winners.len() * 1024);
    out.extend_from_slice(b"{\"id\":");
    json::write_str(&mut out, &req.id);
    out.extend_from_slice(b",\"seatbid\":[");
    let mut current: Option<(u32, &str)> = None;
    for &w in &winners {
        let entry = &bids[w];
        let key = (entry.dsp.index, entry.seat());
        if current != Some(key) {
            if current.is_some() {
                out.extend_from_slice(b"]},");
            }
            out.extend_from_slice(b"{\"seat\":");
            json::write_str(&mut out, key.1);
            out.extend_from_slice(b",\"bid\":[");
            current = Some(key);
        } else {
            out.push(b',');
        }
        let BidResult::Won { clearing_micros } = outcome.bids[w] else {
            continue;
        };
        let imp_result = outcome.imps.iter().find(|imp| imp.winner == Some(w));
        let values = MacroValues {
            price_cpm_micros: Some(clearing_micros),
            loss: Some(0),
            min_to_win_cpm_micros: imp_result.map(|i| i.min_to_win_micros),
            ..entry.macro_values(req, currency)
        };
        let bid = &entry.bid.bid;
        let [adm, nurl, burl] = [bid.adm, bid.nurl, bid.burl].map(|s| s.map(|s| s.decode()));
        let adm = adm.as_deref().map(|adm| expand(adm, &values));
        let nurl = nurl.as_deref().map(|nurl| expand_url(nurl, &values));
        let burl = burl.as_deref().map(|burl| expand_url(burl, &values));
        // Tracking: the bid's burl becomes the exchange's signed impression URL (which carries
        // the DSP's own burl, fired once the impression is billed), and the markup gets the
        // same URL as a pixel or tracker, with its clicks sent through the exchange.
        let billing = tracking::bid_ref(
            &req.id,
            bid,
            &entry.dsp.name,
            entry.seat(),
            clearing_micros,
            currency,
            auction_ts,
        );
        let imp = req.imp.iter().find(|imp| imp.id == bid.impid);
        let (burl, adm) = match (&adm, imp) {
            (Some(markup), Some(imp)) => {
                let format = tracking::ad_format(bid.mtype, imp);
                let decorated = app
                    .tracker
                    .decorate(&billing, burl.as_deref(), markup, format);
                (decorated.burl, decorated.adm.map(Cow::Owned).or(adm))
            }
            _ => (app.tracker.impression_url(&billing, burl.as_deref()), adm),
        };
        events.push(Event::for_owned_bid(
            impressions::EventType::Win,
            billing,
            auction_ts,
        ));
        // Charged at win time: counted per auction-time bucket so the reconciliation can credit
        // back wins that are never rendered (same timestamp as the signed impression URL).
        let charged = imp_result.map_or(0, |i| i.charged_micros);
        if let (true, Some(cid)) = (charged > 0, bid.cid.as_deref()) {
            app.budgets
                .record_charge(&entry.dsp.name, cid, auction_ts, charged);
        }
        // With markup in hand the exchange fires the win notice itself and keeps it from
        // the publisher, so the win is not notified twice; without markup, the publisher
        // fetches it from the nurl, and that fetch is the win notice.
        let fire_nurl = adm.is_some() && nurl.is_some();
        if let (true, Some(nurl)) = (fire_nurl, &nurl) {
            notices.push(Notice {
                dsp: entry.dsp.clone(),
                kind: NoticeKind::Win,
                url: nurl.clone().into_owned(),
            });
        }
        bid.rewrite(
            &BidEdits {
                price_micros: clearing_micros,
                adm: adm.as_deref(),
                nurl: nurl.as_deref(),
                burl: Some(&burl),
                lurl: None,
                drop_nurl: fire_nurl,
            },
            &mut out,
        );
    }
    out.extend_from_slice(b"]}],\"cur\":");
    json::write_str(&mut out, currency);
    out.push(b'}');
    Some(out)
}

/// Queues the loss notice of a losing bid, if it has an `lurl` and its DSP wants them;
/// true when one was queued.
fn loss_notice(
    req: &BidRequest<'_>,
    entry: &Entry<'_, '_>,
    code: u16,
    min_to_win: Option<u64>,
    currency: &str,
    notices: &mut Vec<Notice>,
) -> bool {
    let values = MacroValues {
        loss: Some(code),
        min_to_win_cpm_micros: min_to_win,
        ..entry.macro_values(req, currency)
    };
    queue_loss_notice(entry.dsp, entry.bid.bid.lurl, &values, notices)
}

/// Queues `lurl` with `values` substituted, unless the DSP turned loss notices off or this
/// one falls outside its sample; true when queued.
fn queue_loss_notice(
    dsp: &Arc<Dsp>,
    lurl: Option<JsonStr<'_>>,
    values: &MacroValues<'_>,
    notices: &mut Vec<Notice>,
) -> bool {
    let Some(lurl) = lurl.map(|l| l.decode()) else {
        return false;
    };
    if !dsp.loss_notices
        || (dsp.loss_notice_sample < 1.0 && rand::random::<f64>() >= dsp.loss_notice_sample)
    {
        return false;
    }
    notices.push(Notice {
        dsp: dsp.clone(),
        kind: NoticeKind::Loss,
        url: expand_url(&lurl, values).into_owned(),
    });
    true
}

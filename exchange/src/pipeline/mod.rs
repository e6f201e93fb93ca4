//! One auction, from a request body to the publisher's answer, as typed stages: parsed,
//! planned, fanned out, bids read, auctioned (and charged), settled, written. Each stage takes
//! what the one before produced; none finds a bid again by position or by string.

mod ledger;
mod notify;
mod offers;
mod plan;
mod sale;
mod settle;

pub(crate) use offers::Offer;

use http::{Response, StatusCode};
use openrtb::response::Expect;
use tokio::time::Instant;

use crate::dsp_filter::RequestTraits;
use crate::metrics::AuctionOutcome;
use crate::privacy::Bodies;
use crate::reload::Live;
use crate::server::{error, json as json_response, no_bid, App, Body};
use crate::tracking;
use ledger::BudgetLedger;
use settle::Auctioned;

/// Runs the auction for `body` and builds the answer. The auction clock started at `start`,
/// when the request head arrived.
pub(crate) async fn run_auction(
    app: &App,
    live: &Live,
    start: Instant,
    body: &[u8],
) -> Response<Body> {
    // Parsed.
    let req = match openrtb::request::parse(body) {
        Ok(req) => req,
        Err(e) => {
            app.metrics.outcome(AuctionOutcome::Invalid);
            return error(StatusCode::BAD_REQUEST, &e.message, &e.field);
        }
    };
    let cfg = &live.config.auction;
    // Planned: one deadline per auction, computed once.
    let plan = match plan::plan(cfg, &req, start, !live.dsps.is_empty()) {
        Ok(plan) => plan,
        Err(outcome) => {
            app.metrics.outcome(outcome);
            return no_bid();
        }
    };

    // Fanned out: each DSP's body is the publisher's bytes with the exchange's fields, its
    // supply-chain node, and what the privacy rules let that DSP see.
    let bodies = Bodies::new(
        body,
        &req,
        plan.at.to_openrtb() as u8,
        &cfg.currency,
        live.config.supply_chain.as_ref(),
    );
    let traits = RequestTraits::of(&req);
    let calls = live
        .fanout
        .call_all(
            &req.id,
            &live.dsps,
            &traits,
            start,
            plan.deadline,
            |dsp, tmax| bodies.render(dsp, tmax),
        )
        .await;

    // Bids read.
    let imp_ids: Vec<&str> = req.imp.iter().map(|imp| imp.id.as_ref()).collect();
    let expect = Expect {
        request_id: &req.id,
        imp_ids: &imp_ids,
        currency: &cfg.currency,
    };
    let mut notices = Vec::new();
    let answers = offers::read(&calls, &expect, &mut notices);
    // The view lives until the end of this function, past the last await: no lock or guard
    // is held across one.
    let view = app.budgets.view();
    let offers = offers::offers(&answers, &app.budgets, &view);

    // Auctioned: winners are charged by the ledger, at the time their tracking URLs carry.
    let auction_ts_ms = tracking::now_ms();
    let battrs = sale::blocked_attributes(&req);
    let sale = sale::request(&req, &battrs, plan.at, &cfg.currency, rand::random());
    let ledger = BudgetLedger {
        budgets: &app.budgets,
        auction_ts_ms,
    };
    let outcome = auction::run(&sale, &offers, &live.rules, &ledger);
    let auctioned = Auctioned { offers, outcome };

    // Settled.
    let mut events = Vec::new();
    let wins = settle::settle(
        app,
        &req,
        &auctioned,
        auction_ts_ms,
        &mut notices,
        &mut events,
    );

    // Written.
    let winning: Vec<_> = wins.iter().map(settle::Win::winning).collect();
    let answer = openrtb::answer::write(&req.id, &cfg.currency, &winning);
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

//! One auction, from a request body to the publisher's answer, as typed stages: parsed,
//! planned, fanned out, bids read, auctioned (and charged), settled, written. Each stage takes
//! what the one before produced; none finds a bid again by position or by string.

pub(crate) mod debug;
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
use crate::pricing;
use crate::privacy::Bodies;
use crate::reload::Live;
use crate::server::{error, json as json_response, no_bid, App, Body};
use crate::tracking;
use ledger::BudgetLedger;
use settle::Auctioned;

/// Runs the auction for `body` and builds the answer. The auction clock started at `start`,
/// when the request head arrived; `asked` is what its debug header asked for, and
/// `authorization` its `Authorization` header.
pub(crate) async fn run_auction(
    app: &App,
    live: &Live,
    start: Instant,
    body: &[u8],
    asked: debug::Asked,
    authorization: Option<&http::HeaderValue>,
) -> Response<Body> {
    // Parsed.
    let req = match openrtb::request::parse(body) {
        Ok(req) => req,
        Err(e) => {
            app.metrics.outcome(AuctionOutcome::Invalid);
            return error(StatusCode::BAD_REQUEST, &e.message, &e.field);
        }
    };
    // Admitted: the publisher the request claims, its token checked, before anything else
    // is spent on it and long before any DSP is called. `publisher` is the auction's
    // account (`None`: not a configured one) for the stages below, e.g. its `margin`.
    let publisher = match live.publishers.admit(&req, authorization) {
        Ok(publisher) => publisher,
        Err(refused) => {
            app.metrics.refused(refused.reason);
            return refused.response();
        }
    };
    let cfg = &live.config.auction;
    let test = req.is_test();
    if test {
        app.metrics.test_auctions.increment(1);
    }
    let debug = debug::start(&app.metrics, test, asked);
    // Planned: one deadline per auction, computed once, from when the request is estimated
    // to have arrived: a busy node polls a request that became readable only after its lag.
    let arrival = start
        .checked_sub(app.governor.queue_estimate())
        .unwrap_or(start);
    let min_wait = live.config.overload.min_dsp_wait();
    let plan = match plan::plan(cfg, &req, arrival, min_wait, !live.dsps.is_empty()) {
        Ok(plan) => plan,
        Err(outcome) => {
            app.metrics.outcome(outcome);
            return no_bid();
        }
    };

    // Screened: fraud rules, before any DSP is called.
    let mut debug = debug;
    if let Some(reason) = live.screen.check(&req, start.into_std()) {
        app.metrics.screened(reason);
        return match debug {
            Some(log) => json_response(
                StatusCode::OK,
                log.write_screened(&req.id, &cfg.currency, reason.label()),
            ),
            None => no_bid(),
        };
    }
    if let Some(log) = &mut debug {
        log.screening = serde_json::json!({ "screened": false });
    }

    // Priced: one rate table for the whole auction; every imp's effective floor.
    let rates = live.pricing.rates.load();
    let floors = pricing::floors(&live.pricing, &req, &rates, &cfg.currency);

    // Fanned out: each DSP's body is the publisher's bytes with the exchange's fields, its
    // supply-chain node, the effective floors, and what the privacy rules let that DSP see.
    let mut bodies = Bodies::new(
        body,
        &req,
        plan.at.to_openrtb() as u8,
        &cfg.currency,
        live.config.supply_chain.as_ref(),
    );
    bodies.set_floors(&floors.forward);
    if let Some(log) = &mut debug {
        log.scrubbing = bodies.debug(&live.dsps);
    }
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
        rated: rates.codes(),
    };
    let mut notices = Vec::new();
    let answers = offers::read(&calls, &expect, &mut notices);
    // The view lives until the end of this function, past the last await: no lock or guard
    // is held across one.
    let view = app.budgets.view();
    let offers = offers::offers(&answers, &app.budgets, &view, &rates);

    // Auctioned: winners are charged by the ledger, at the time their tracking URLs carry.
    let auction_ts_ms = tracking::now_ms();
    let battrs = sale::blocked_attributes(&req);
    let prices = sale::Prices {
        floors: &floors.imps,
        pricing: &live.pricing,
        table: &rates,
    };
    let sale = sale::request(&req, &battrs, plan.at, &prices, rand::random());
    let ledger = BudgetLedger {
        budgets: &app.budgets,
        auction_ts_ms,
        test,
    };
    let outcome = auction::run(&sale, &offers, &live.rules, &ledger);
    let auctioned = Auctioned { offers, outcome };

    // Settled: the DSPs told their gross, the publisher its net.
    let terms = pricing::Terms {
        margin: pricing::margin_for(live, publisher),
        answer: pricing::AnswerCurrency::of(&req, &rates, &cfg.currency),
    };
    let mut events = Vec::new();
    let wins = settle::settle(
        app,
        &req,
        &auctioned,
        &terms,
        auction_ts_ms,
        test,
        &mut notices,
        &mut events,
    );

    // Only auctions that waited for a DSP teach the overload control what serving costs.
    if calls.iter().any(|c| c.went_out()) {
        app.governor.served(start.elapsed());
    }

    // Written.
    let winning: Vec<_> = wins.iter().map(settle::Win::winning).collect();
    let answer = match debug {
        None => openrtb::answer::write(&req.id, terms.answer.as_str(), &winning),
        Some(log) => {
            let stages = debug::Stages {
                calls: &calls,
                answers: &answers,
                sale: &sale,
                auctioned: &auctioned,
                rules: &live.rules,
            };
            Some(log.write(&req.id, terms.answer.as_str(), &winning, &stages))
        }
    };
    app.notifier.fire(notices);
    app.events.emit(events);
    app.metrics.outcome(if winning.is_empty() {
        AuctionOutcome::NoBid
    } else {
        AuctionOutcome::Won
    });
    match answer {
        Some(body) => json_response(StatusCode::OK, body),
        None => no_bid(),
    }
}

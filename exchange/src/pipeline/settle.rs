//! Settling an auction: every bid's result counted, losers told, winners rewritten for the
//! publisher (clearing price, macros, tracking) and their notices and events queued.

use std::borrow::Cow;

use auction::{BidResult, Outcome};
use impressions::{Event, EventType};
use money::{CpmMicros, Round};
use openrtb::answer::Winning;
use openrtb::macros::{expand, expand_url, MacroValues};
use openrtb::request::BidRequest;
use openrtb::response::BidEdits;

use super::notify;
use super::offers::Offer;
use crate::notices::{Notice, NoticeKind};
use crate::pricing::{Payout, Terms};
use crate::server::App;
use crate::tracking;

/// The offers and what the auction decided for them.
pub(crate) struct Auctioned<'o> {
    pub offers: Vec<Offer<'o>>,
    pub outcome: Outcome,
}

impl<'o> Auctioned<'o> {
    /// Each offer with its result. `auction::run` answers per bid in the order it was given
    /// the offers; this is the one place that order is relied on.
    pub(super) fn results(&self) -> impl Iterator<Item = (&Offer<'o>, BidResult)> + '_ {
        debug_assert_eq!(self.offers.len(), self.outcome.bids.len());
        self.offers.iter().zip(self.outcome.bids.iter().copied())
    }
}

/// A winning bid with its final text: what the publisher's answer carries.
pub(crate) struct Win<'o> {
    offer: &'o Offer<'o>,
    /// Net, margin and the publisher's price (`crate::pricing::Terms::payout`).
    payout: Payout,
    adm: Option<String>,
    nurl: Option<String>,
    burl: String,
    /// The exchange fires the `nurl` itself, so the publisher's answer leaves it out.
    nurl_fired: bool,
}

impl Win<'_> {
    /// The bid as [`openrtb::answer::write`] takes it: priced at the publisher's net, in the
    /// answer's currency.
    pub fn winning(&self) -> Winning<'_> {
        Winning {
            bidder: self.offer.dsp.index,
            seat: self.offer.seat(),
            bid: &self.offer.bid.bid,
            edits: BidEdits {
                price: self.payout.told,
                adm: self.adm.as_deref(),
                nurl: self.nurl.as_deref(),
                burl: Some(&self.burl),
                lurl: None,
                drop_nurl: self.nurl_fired,
            },
        }
    }
}

/// Settles every bid of `auctioned` for the auction at `auction_ts_ms`: counts wins and
/// losses per DSP, queues loss and win notices and events, and returns the winners. Charges
/// were made by the auction's ledger; nothing here touches money. In a `test` auction the
/// tracking URLs carry the signed test flag (their hits bill nothing and fire no `burl`) and
/// every event says `"test": true`; win and loss notices go out as usual, since the DSP was
/// told `test = 1` in the request it bid on. Each DSP is told prices in its own bid
/// currency; the publisher's price follows `terms`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle<'o>(
    app: &App,
    req: &BidRequest<'_>,
    auctioned: &'o Auctioned<'o>,
    terms: &Terms,
    auction_ts_ms: u64,
    test: bool,
    notices: &mut Vec<Notice>,
    events: &mut Vec<Event>,
) -> Vec<Win<'o>> {
    let currency = app.config.auction.currency.as_str();
    let mut wins = Vec::new();
    for (offer, result) in auctioned.results() {
        match result {
            BidResult::Won { clearing } => {
                offer.dsp.metrics.wins.increment(1);
                let imp = auctioned.outcome.imps.get(offer.candidate.imp);
                let min_to_win = imp.map(|i| i.min_to_win);
                wins.push(win(
                    app,
                    req,
                    offer,
                    Priced {
                        clearing,
                        payout: terms.payout(clearing),
                        min_to_win,
                        auction_ts_ms,
                        test,
                    },
                    notices,
                    events,
                ));
            }
            BidResult::Lost { reason, min_to_win } => {
                offer.dsp.metrics.lost(reason);
                let values = MacroValues {
                    loss: Some(result.loss_code()),
                    min_to_win: min_to_win.map(|m| offer.in_bid_currency(m, Round::Up)),
                    ..offer.macro_values(&req.id)
                };
                if notify::loss(offer.dsp, offer.bid.bid.lurl, &values, notices) {
                    let bid = tracking::bid_ref(
                        req,
                        offer,
                        offer.candidate.price,
                        currency,
                        auction_ts_ms,
                    );
                    events.push(
                        Event::loss(&bid, u32::from(result.loss_code()), auction_ts_ms)
                            .with_test(test),
                    );
                }
            }
        }
    }
    wins
}

/// How a winner came out of its auction.
struct Priced {
    clearing: CpmMicros,
    payout: Payout,
    min_to_win: Option<CpmMicros>,
    auction_ts_ms: u64,
    test: bool,
}

/// One winner: macros substituted, tracking added (the bid's `burl` becomes the exchange's
/// signed impression URL, which carries the DSP's own `burl` to fire once billed; the markup
/// gets the same URL as a pixel or tracker, its clicks sent through the exchange), the win
/// notice and event queued.
fn win<'o>(
    app: &App,
    req: &BidRequest<'_>,
    offer: &'o Offer<'o>,
    priced: Priced,
    notices: &mut Vec<Notice>,
    events: &mut Vec<Event>,
) -> Win<'o> {
    let Priced {
        clearing,
        payout,
        min_to_win,
        auction_ts_ms,
        test,
    } = priced;
    let currency = app.config.auction.currency.as_str();
    // The DSP's notices and its markup (its own pixels) hear the gross it pays, in the
    // currency it bid in, never above its bid; the publisher's `price` is the net.
    let values = MacroValues {
        price: Some(offer.in_bid_currency(clearing, Round::Down)),
        loss: Some(0),
        min_to_win: min_to_win.map(|m| offer.in_bid_currency(m, Round::Up)),
        ..offer.macro_values(&req.id)
    };
    let bid = &offer.bid.bid;
    let [adm, nurl, burl] = [bid.adm, bid.nurl, bid.burl].map(|s| s.map(|s| s.decode()));
    let adm = adm.as_deref().map(|adm| expand(adm, &values));
    let nurl = nurl
        .as_deref()
        .map(|nurl| expand_url(nurl, &values).into_owned());
    let burl = burl.as_deref().map(|burl| expand_url(burl, &values));
    let mut billing = tracking::bid_ref(req, offer, clearing, currency, auction_ts_ms);
    // What the publisher is paid (gross − margin), signed into the tracking URLs and logged
    // with the win, so any node bills the split this auction made.
    billing.net_price_micros = Some(payout.net.get());
    let (burl, adm) = match (adm, req.imp.get(offer.candidate.imp)) {
        (Some(markup), Some(imp)) => {
            let format = tracking::ad_format(bid.mtype, imp);
            let decorated =
                app.tracker
                    .decorate_for(&billing, burl.as_deref(), &markup, format, test);
            let adm = decorated.adm.unwrap_or_else(|| markup.into_owned());
            (decorated.burl, Some(adm))
        }
        (adm, _) => (
            app.tracker
                .impression_url_for(&billing, burl.as_deref(), test),
            adm.map(Cow::into_owned),
        ),
    };
    events.push(Event::for_owned_bid(EventType::Win, billing, auction_ts_ms).with_test(test));
    // With markup in hand the exchange fires the win notice itself and keeps it from the
    // publisher, so the win is not notified twice; without markup, the publisher fetches it
    // from the nurl, and that fetch is the win notice.
    let nurl_fired = adm.is_some() && nurl.is_some();
    if let (true, Some(url)) = (nurl_fired, &nurl) {
        notices.push(Notice {
            dsp: offer.dsp.clone(),
            kind: NoticeKind::Win,
            url: url.clone(),
        });
    }
    Win {
        offer,
        payout,
        adm,
        nurl,
        burl,
        nurl_fired,
    }
}

//! A DSP's answer (OpenRTB 2.6 §4.2) as the exchange reads it: the types an answer is
//! sorted into, with the parts that produce and use them in submodules.
//!
//! [`read_answer`] (in `read`) sorts every HTTP answer into one of three outcomes: a
//! no-bid, an answer rejected as a whole, or a set of bids of which each is accepted or
//! rejected on its own. Bids are parsed one by one from their raw text, so one broken bid
//! never takes its siblings down with it.
//!
//! An accepted [`Bid`] keeps the exact text the DSP sent for it, plus where `price`,
//! `adm`, `nurl`, `burl` and `lurl` sit in that text. [`Bid::rewrite`] (in `rewrite`)
//! writes the bid back out with only those values changed, so every other field (`ext`,
//! fields newer than this code, number formatting, key order) reaches the publisher byte
//! for byte. Why an answer or a bid was refused, and the loss code that goes with it, is
//! in `loss`; the currencies an answer may name are in `currency`.
//!
//! Strictness: the required fields and the fields the exchange acts on must have their
//! spec types; a bid with `"w": "300"` is malformed. `null` is read as "absent"
//! everywhere, since many encoders write `null` for an unset optional field.

use std::borrow::Cow;

use money::CpmMicros;
use serde_json::value::RawValue;

use crate::json::JsonStr;
use crate::span::Span;

mod currency;
mod loss;
mod read;
mod rewrite;

pub use currency::is_currency_code;
pub use loss::{AnswerRejection, BidRejection, NoBidKind};
pub use read::read_answer;
pub use rewrite::BidEdits;

/// What the exchange asked the DSP, to check its answer against.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'e> {
    /// `BidRequest.id` of the request the DSP received.
    pub request_id: &'e str,
    /// Every `imp.id` in that request. Searched linearly: requests carry few imps.
    pub imp_ids: &'e [&'e str],
    /// The auction currency (ISO-4217, any case): bids in it are taken as they are.
    pub currency: &'e str,
    /// The other currencies the exchange has a rate for, uppercase and sorted: bids in one
    /// of them are accepted for the caller to convert. Empty: only `currency`.
    pub rated: &'e [[u8; 3]],
}

/// The outcome of reading one DSP answer.
#[derive(Debug)]
pub enum Answer<'a> {
    /// The DSP declined to bid, in one of the ways OpenRTB allows.
    NoBid(NoBidKind),
    /// The answer as a whole is unusable; nothing in it is looked at further.
    Rejected(AnswerRejection),
    /// The answer carried bids. `accepted` and `rejected` together hold every entry of
    /// every `seatbid[].bid[]`, in answer order; `accepted` may be empty.
    Bids {
        response: BidResponse<'a>,
        accepted: Vec<AcceptedBid<'a>>,
        rejected: Vec<RejectedBid<'a>>,
    },
}

/// The top level of an answer that carried bids (OpenRTB 2.6 §4.2.1).
#[derive(Clone, Debug)]
pub struct BidResponse<'a> {
    /// Equal to [`Expect::request_id`] (checked).
    pub id: Cow<'a, str>,
    pub seatbid: Vec<SeatBid<'a>>,
    /// The DSP's response id: the spec's source for `${AUCTION_BID_ID}`.
    pub bidid: Option<Cow<'a, str>>,
    /// As sent; `None` means USD. [`Expect::currency`] or one of [`Expect::rated`] (checked).
    pub cur: Option<Cow<'a, str>>,
    pub customdata: Option<Cow<'a, str>>,
    pub nbr: Option<u32>,
    pub ext: Option<&'a RawValue>,
}

/// One seat's bids (OpenRTB 2.6 §4.2.2).
#[derive(Clone, Debug)]
pub struct SeatBid<'a> {
    pub seat: Option<Cow<'a, str>>,
    /// 1 = the seat's bids must be won or lost as a group.
    pub group: u8,
    /// Each bid object exactly as sent; the parsed ones are in `Answer::Bids`.
    pub bid: Vec<&'a RawValue>,
    pub ext: Option<&'a RawValue>,
}

/// One bid (OpenRTB 2.6 §4.2.3), borrowed from the answer, plus its raw text.
#[derive(Clone, Debug)]
pub struct Bid<'a> {
    pub id: Cow<'a, str>,
    pub impid: Cow<'a, str>,
    /// The CPM as the DSP wrote it. Money is [`AcceptedBid::price`].
    pub price: f64,
    /// The four values the exchange rewrites are kept undecoded: markup is most of an
    /// answer and only the winners' is ever needed. `.decode()` when you need the text.
    pub nurl: Option<JsonStr<'a>>,
    pub burl: Option<JsonStr<'a>>,
    pub lurl: Option<JsonStr<'a>>,
    pub adm: Option<JsonStr<'a>>,
    pub adid: Option<Cow<'a, str>>,
    pub adomain: Vec<Cow<'a, str>>,
    pub bundle: Option<Cow<'a, str>>,
    pub iurl: Option<Cow<'a, str>>,
    pub cid: Option<Cow<'a, str>>,
    pub crid: Option<Cow<'a, str>>,
    pub tactic: Option<Cow<'a, str>>,
    pub cattax: Option<u32>,
    pub cat: Vec<Cow<'a, str>>,
    pub attr: Vec<u32>,
    pub apis: Vec<u32>,
    pub api: Option<u32>,
    pub protocol: Option<u32>,
    pub qagmediarating: Option<u32>,
    pub language: Option<Cow<'a, str>>,
    pub langb: Option<Cow<'a, str>>,
    pub dealid: Option<Cow<'a, str>>,
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub wratio: Option<u32>,
    pub hratio: Option<u32>,
    pub exp: Option<u32>,
    pub dur: Option<u32>,
    /// 1 banner, 2 video, 3 audio, 4 native (checked when present).
    pub mtype: Option<u32>,
    pub slotinpod: Option<i32>,
    pub ext: Option<&'a RawValue>,
    raw: &'a str,
    spans: Spans,
}

/// Where the rewritable values sit inside [`Bid::raw`]. A field sent as `null` has a
/// span too, so that rewriting replaces it instead of adding a duplicate key.
#[derive(Clone, Copy, Debug)]
struct Spans {
    price: Span,
    adm: Option<Span>,
    nurl: Option<Span>,
    burl: Option<Span>,
    lurl: Option<Span>,
}

/// A bid that passed every check.
#[derive(Clone, Debug)]
pub struct AcceptedBid<'a> {
    /// Index into `BidResponse::seatbid` (for `group`, `ext`).
    pub seatbid_index: usize,
    /// Index into that seat's `bid` array.
    pub bid_index: usize,
    /// `SeatBid.seat`, which may be absent.
    pub seat: Option<Cow<'a, str>>,
    pub bid: Bid<'a>,
    /// Index into [`Expect::imp_ids`] of the imp the bid is for (its `impid`).
    pub imp: usize,
    /// The bid's CPM, rounded to the nearest micro; never zero.
    pub price: CpmMicros,
}

/// A bid that was refused, with whatever could be read of it: enough to count it and
/// to fire its loss notice (`lurl` with [`BidRejection::loss_code`]).
#[derive(Clone, Debug)]
pub struct RejectedBid<'a> {
    pub reason: BidRejection,
    pub seatbid_index: usize,
    pub bid_index: usize,
    pub seat: Option<Cow<'a, str>>,
    pub bid_id: Option<Cow<'a, str>>,
    pub imp_id: Option<Cow<'a, str>>,
    pub adid: Option<Cow<'a, str>>,
    pub lurl: Option<JsonStr<'a>>,
}

impl<'a> Bid<'a> {
    /// The bid object exactly as the DSP sent it.
    pub fn raw(&self) -> &'a str {
        self.raw
    }
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Answers and helpers the submodules' tests share.
#[cfg(test)]
mod fixtures {
    use super::*;

    pub(super) const EXPECT: Expect<'static> = Expect {
        request_id: "req-1",
        imp_ids: &["imp-1", "imp-2"],
        currency: "USD",
        rated: &[],
    };

    pub(super) fn bids(
        answer: Answer<'_>,
    ) -> (BidResponse<'_>, Vec<AcceptedBid<'_>>, Vec<RejectedBid<'_>>) {
        match answer {
            Answer::Bids {
                response,
                accepted,
                rejected,
            } => (response, accepted, rejected),
            other => panic!("expected bids, got {other:?}"),
        }
    }

    pub(super) fn text(s: Option<JsonStr<'_>>) -> Option<String> {
        s.map(|s| s.decode().into_owned())
    }

    pub(super) fn read(body: &str) -> Answer<'_> {
        read_answer(200, body.as_bytes(), &EXPECT)
    }

    pub(super) fn rejection(body: &str) -> Option<AnswerRejection> {
        match read(body) {
            Answer::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// An answer holding the given bid objects in one seat.
    pub(super) fn answer_with(bid_objects: &[&str]) -> String {
        format!(
            r#"{{"id":"req-1","cur":"USD","seatbid":[{{"seat":"s1","bid":[{}]}}]}}"#,
            bid_objects.join(",")
        )
    }

    pub(super) const GOOD_BID: &str =
        r#"{"id":"b1","impid":"imp-1","price":1.5,"adm":"<div>${AUCTION_PRICE}</div>"}"#;

    pub(super) fn only_bid_rejection(bid: &str) -> BidRejection {
        let body = answer_with(&[bid]);
        let (_, accepted, rejected) = bids(read(&body));
        assert!(accepted.is_empty(), "{bid}");
        assert_eq!(rejected.len(), 1, "{bid}");
        rejected[0].reason
    }

    impl Answer<'_> {
        pub(super) fn rejection(&self) -> Option<AnswerRejection> {
            match self {
                Answer::Rejected(r) => Some(*r),
                _ => None,
            }
        }
    }
}

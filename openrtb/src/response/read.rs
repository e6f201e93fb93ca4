//! Reading one DSP answer: the status and body sorted into a no-bid, a rejected answer,
//! or bids that are each accepted or rejected on their own.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use money::CpmMicros;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    is_currency_code, is_json_whitespace, AcceptedBid, Answer, AnswerRejection, Bid, BidRejection,
    BidResponse, Expect, NoBidKind, RejectedBid, SeatBid, Spans,
};
use crate::de::{List, Str, Strs};
use crate::json::JsonStr;
use crate::span::Span;

/// Reads one DSP answer: the HTTP status and the (already inflated) body.
pub fn read_answer<'a>(status: u16, body: &'a [u8], expect: &Expect<'_>) -> Answer<'a> {
    match status {
        204 => return Answer::NoBid(NoBidKind::NoContent),
        200 => {}
        other => return Answer::Rejected(AnswerRejection::BadStatus(other)),
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Answer::Rejected(AnswerRejection::MalformedJson);
    };
    let start = text.trim_start_matches(is_json_whitespace);
    if start.is_empty() {
        return Answer::NoBid(NoBidKind::EmptyBody);
    }
    // serde would also read a JSON array into a struct, field by field; an answer must
    // be an object, so anything else is refused before it gets that far.
    if !start.starts_with('{') {
        return Answer::Rejected(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => AnswerRejection::NotAnObject,
            Err(_) => AnswerRejection::MalformedJson,
        });
    }
    let wire: WireResponse<'a> = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(e) if e.is_data() => return Answer::Rejected(AnswerRejection::InvalidResponse),
        Err(_) => return Answer::Rejected(AnswerRejection::MalformedJson),
    };
    let seatbid: Vec<SeatBid<'a>> = wire
        .seatbid
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.0)
        .collect();

    // A no-bid is a no-bid whatever else the answer says: its id and currency matter
    // only when there is something to buy.
    if seatbid.iter().all(|s| s.bid.is_empty()) {
        return Answer::NoBid(match wire.nbr {
            Some(nbr) => NoBidKind::Declined { nbr },
            None => NoBidKind::NoBids,
        });
    }
    let id = match wire.id {
        Some(id) if id == expect.request_id => id.0,
        _ => return Answer::Rejected(AnswerRejection::WrongId),
    };
    // An empty `cur` is read as absent: some encoders write "" for an unset string.
    let cur = wire
        .cur
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or("USD");
    if !is_currency_code(cur) {
        return Answer::Rejected(AnswerRejection::UnknownCurrency);
    }
    let upper = <[u8; 3]>::try_from(cur.as_bytes()).map(|c| c.map(|b| b.to_ascii_uppercase()));
    let rated = upper.is_ok_and(|c| expect.rated.binary_search(&c).is_ok());
    if !cur.eq_ignore_ascii_case(expect.currency) && !rated {
        return Answer::Rejected(AnswerRejection::WrongCurrency);
    }

    // Bids are large; sized up front, the usual all-accepted answer never reallocates.
    let total: usize = seatbid.iter().map(|s| s.bid.len()).sum();
    let mut accepted = Vec::with_capacity(total);
    let mut rejected = Vec::new();
    for (seatbid_index, seat) in seatbid.iter().enumerate() {
        for (bid_index, raw) in seat.bid.iter().enumerate() {
            match read_bid(raw.get(), expect.imp_ids) {
                Ok(Read { bid, imp, price }) => accepted.push(AcceptedBid {
                    seatbid_index,
                    bid_index,
                    seat: seat.seat.clone(),
                    bid,
                    imp,
                    price,
                }),
                Err((reason, context)) => rejected.push(RejectedBid {
                    reason,
                    seatbid_index,
                    bid_index,
                    seat: seat.seat.clone(),
                    bid_id: context.id,
                    imp_id: context.impid,
                    adid: context.adid,
                    lurl: context.lurl,
                }),
            }
        }
    }
    let response = BidResponse {
        id,
        seatbid,
        bidid: wire.bidid.map(Cow::from),
        cur: wire.cur.map(Cow::from),
        customdata: wire.customdata.map(Cow::from),
        nbr: wire.nbr,
        ext: wire.ext,
    };
    Answer::Bids {
        response,
        accepted,
        rejected,
    }
}

/// What a rejected bid still tells us.
#[derive(Default)]
struct BidContext<'a> {
    id: Option<Cow<'a, str>>,
    impid: Option<Cow<'a, str>>,
    adid: Option<Cow<'a, str>>,
    lurl: Option<JsonStr<'a>>,
}

/// A bid that passed every check, with what the checks found out.
struct Read<'a> {
    bid: Bid<'a>,
    /// Index into `Expect::imp_ids`.
    imp: usize,
    price: CpmMicros,
}

type BidResult<'a> = Result<Read<'a>, (BidRejection, BidContext<'a>)>;

fn read_bid<'a>(raw: &'a str, imp_ids: &[&str]) -> BidResult<'a> {
    let malformed = || (BidRejection::Malformed, salvage_context(raw));
    if !raw.starts_with('{') {
        return Err(malformed());
    }
    let Ok(wire) = serde_json::from_str::<WireBid<'a>>(raw) else {
        return Err(malformed());
    };
    let fields = [wire.adm, wire.nurl, wire.burl, wire.lurl].map(|v| rewritable(raw, v));
    let [Ok((adm, adm_span)), Ok((nurl, nurl_span)), Ok((burl, burl_span)), Ok((lurl, lurl_span))] =
        fields
    else {
        return Err(malformed());
    };
    let wire_id: Option<Cow<'a, str>> = wire.id.map(Cow::from);
    let wire_impid: Option<Cow<'a, str>> = wire.impid.map(Cow::from);
    let adid: Option<Cow<'a, str>> = wire.adid.map(Cow::from);
    let reject = |reason| {
        Err((
            reason,
            BidContext {
                id: wire_id.clone(),
                impid: wire_impid.clone(),
                adid: adid.clone(),
                lurl,
            },
        ))
    };

    let id = match &wire_id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => return reject(BidRejection::MissingId),
    };
    let impid = match &wire_impid {
        Some(impid) if !impid.is_empty() => impid.clone(),
        _ => return reject(BidRejection::MissingImpId),
    };
    let Some(imp) = imp_ids.iter().position(|known| *known == impid) else {
        return reject(BidRejection::UnknownImp);
    };
    let (price_raw, price_span) = match wire.price {
        Some(value) if value.get() != "null" => (value, Span::of_str(raw.as_bytes(), value.get())),
        _ => return reject(BidRejection::MissingPrice),
    };
    let Ok(price_f64) = serde_json::from_str::<f64>(price_raw.get()) else {
        return reject(BidRejection::BadPrice);
    };
    // A price that rounds to zero micros is no bid, though zero is a valid floor.
    let Some(price) = CpmMicros::from_cpm(price_f64).filter(|p| *p > CpmMicros::ZERO) else {
        return reject(BidRejection::BadPrice);
    };
    // The value was parsed out of `raw`, so its span always resolves.
    let Some(price_span) = price_span else {
        return Err(malformed());
    };
    let has = |s: Option<JsonStr<'_>>| s.is_some_and(|s| !s.is_empty());
    if !has(adm) && !has(nurl) {
        return reject(BidRejection::NoMarkup);
    }
    if wire.mtype.is_some_and(|m| !(1..=4).contains(&m)) {
        return reject(BidRejection::BadMtype);
    }

    let bid = Bid {
        id,
        impid,
        price: price_f64,
        nurl,
        burl,
        lurl,
        adm,
        adid,
        adomain: wire.adomain.0,
        bundle: wire.bundle.map(Cow::from),
        iurl: wire.iurl.map(Cow::from),
        cid: wire.cid.map(Cow::from),
        crid: wire.crid.map(Cow::from),
        tactic: wire.tactic.map(Cow::from),
        cattax: wire.cattax,
        cat: wire.cat.0,
        attr: wire.attr.0,
        apis: wire.apis.0,
        api: wire.api,
        protocol: wire.protocol,
        qagmediarating: wire.qagmediarating,
        language: wire.language.map(Cow::from),
        langb: wire.langb.map(Cow::from),
        dealid: wire.dealid.map(Cow::from),
        w: wire.w,
        h: wire.h,
        wratio: wire.wratio,
        hratio: wire.hratio,
        exp: wire.exp,
        dur: wire.dur,
        mtype: wire.mtype,
        slotinpod: wire.slotinpod,
        ext: wire.ext,
        raw,
        spans: Spans {
            price: price_span,
            adm: adm_span,
            nurl: nurl_span,
            burl: burl_span,
            lurl: lurl_span,
        },
    };
    Ok(Read { bid, imp, price })
}

/// The ids of a bid too broken to parse, read leniently so the rejection can still be
/// attributed (and its loss notice fired). Only runs on the failure path.
fn salvage_context<'a>(raw: &'a str) -> BidContext<'a> {
    #[derive(Deserialize)]
    struct Loose<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        impid: Option<&'a RawValue>,
        #[serde(borrow, default)]
        adid: Option<&'a RawValue>,
        #[serde(borrow, default)]
        lurl: Option<&'a RawValue>,
    }
    if !raw.starts_with('{') {
        return BidContext::default();
    }
    let Ok(loose) = serde_json::from_str::<Loose<'a>>(raw) else {
        return BidContext::default();
    };
    let literal = |v: Option<&'a RawValue>| v.and_then(|v| JsonStr::from_literal(v.get()));
    BidContext {
        id: literal(loose.id).map(|s| s.decode()),
        impid: literal(loose.impid).map(|s| s.decode()),
        adid: literal(loose.adid).map(|s| s.decode()),
        lurl: literal(loose.lurl),
    }
}

/// One of the values `Bid::rewrite` replaces: its string and where it sits in `raw`.
/// A `null` value has no string but keeps its span.
type Rewritable<'a> = (Option<JsonStr<'a>>, Option<Span>);

fn rewritable<'a>(raw: &'a str, value: Option<&'a RawValue>) -> Result<Rewritable<'a>, ()> {
    let Some(value) = value else {
        return Ok((None, None));
    };
    // The value was parsed out of `raw`, so its span always resolves.
    let span = Span::of_str(raw.as_bytes(), value.get()).ok_or(())?;
    Ok((raw_literal(value)?, Some(span)))
}

/// A raw JSON value that must be a string: `null` is `None`, anything else an error.
fn raw_literal(raw: &RawValue) -> Result<Option<JsonStr<'_>>, ()> {
    match raw.get() {
        "null" => Ok(None),
        text => JsonStr::from_literal(text).map(Some).ok_or(()),
    }
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    seatbid: Option<Vec<WireSeatBid<'a>>>,
    bidid: Option<Str<'a>>,
    cur: Option<Str<'a>>,
    customdata: Option<Str<'a>>,
    nbr: Option<u32>,
    #[serde(borrow, default)]
    ext: Option<&'a RawValue>,
}

/// A `SeatBid` read only from a JSON object (see the note in [`read_answer`]).
struct WireSeatBid<'a>(SeatBid<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireSeatBid<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SeatBidVisitor(PhantomData))
    }
}

struct SeatBidVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for SeatBidVisitor<'a> {
    type Value = WireSeatBid<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SeatBid object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seat = SeatBid {
            seat: None,
            group: 0,
            bid: Vec::new(),
            ext: None,
        };
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let slot = match &*key.0 {
                "seat" => 0,
                "group" => 1,
                "bid" => 2,
                "ext" => 3,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom(format_args!(
                    "duplicate field `{}`",
                    key.0
                )));
            }
            match slot {
                0 => seat.seat = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                1 => seat.group = map.next_value::<Option<u8>>()?.unwrap_or(0),
                2 => {
                    seat.bid = map
                        .next_value::<Option<Vec<&'de RawValue>>>()?
                        .unwrap_or_default()
                }
                _ => seat.ext = map.next_value::<Option<&'de RawValue>>()?,
            }
        }
        Ok(WireSeatBid(seat))
    }
}

#[derive(Deserialize)]
struct WireBid<'a> {
    id: Option<Str<'a>>,
    impid: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    price: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    nurl: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    burl: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    lurl: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    adm: Option<&'a RawValue>,
    adid: Option<Str<'a>>,
    adomain: Strs<'a>,
    bundle: Option<Str<'a>>,
    iurl: Option<Str<'a>>,
    cid: Option<Str<'a>>,
    crid: Option<Str<'a>>,
    tactic: Option<Str<'a>>,
    cattax: Option<u32>,
    cat: Strs<'a>,
    attr: List<u32>,
    apis: List<u32>,
    api: Option<u32>,
    protocol: Option<u32>,
    qagmediarating: Option<u32>,
    language: Option<Str<'a>>,
    langb: Option<Str<'a>>,
    dealid: Option<Str<'a>>,
    w: Option<u32>,
    h: Option<u32>,
    wratio: Option<u32>,
    hratio: Option<u32>,
    exp: Option<u32>,
    dur: Option<u32>,
    mtype: Option<u32>,
    slotinpod: Option<i32>,
    #[serde(borrow, default)]
    ext: Option<&'a RawValue>,
}

/// Keeps a present value's raw text even when it is `null`, so its span is known.
fn raw_even_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::value::RawValue;

    use money::CpmMicros;

    use super::super::fixtures::*;
    use super::super::*;

    #[test]
    fn no_bids_in_every_form_the_spec_allows() {
        assert!(matches!(
            read_answer(204, b"", &EXPECT),
            Answer::NoBid(NoBidKind::NoContent)
        ));
        assert!(matches!(
            read_answer(204, b"{junk", &EXPECT),
            Answer::NoBid(NoBidKind::NoContent)
        ));
        assert!(matches!(read(""), Answer::NoBid(NoBidKind::EmptyBody)));
        assert!(matches!(
            read(" \r\n\t"),
            Answer::NoBid(NoBidKind::EmptyBody)
        ));
        for body in [
            "{}",
            " {} ",
            r#"{"id":"req-1"}"#,
            r#"{"id":"req-1","seatbid":[]}"#,
            r#"{"id":"req-1","seatbid":null,"bidid":null,"cur":null}"#,
            r#"{"id":"req-1","seatbid":[{"seat":"a","bid":[]},{"seat":"b"}]}"#,
            // Without bids, a foreign id or currency does not matter.
            r#"{"id":"other","cur":"EUR","seatbid":[]}"#,
        ] {
            assert!(
                matches!(read(body), Answer::NoBid(NoBidKind::NoBids)),
                "{body}"
            );
        }
        assert!(matches!(
            read(r#"{"id":"req-1","seatbid":[],"nbr":2}"#),
            Answer::NoBid(NoBidKind::Declined { nbr: 2 })
        ));
    }

    #[test]
    fn broken_answers_are_rejected_whole() {
        for status in [201, 400, 404, 500, 503] {
            let body = answer_with(&[GOOD_BID]);
            let answer = read_answer(status, body.as_bytes(), &EXPECT);
            assert!(
                matches!(answer, Answer::Rejected(AnswerRejection::BadStatus(s)) if s == status)
            );
        }
        for body in [
            "{",
            "{\"id\":test}",
            "<html></html>",
            "<VAST/>",
            "{} {}",
            "{\"id\":\"req-1\"",
            "nul",
        ] {
            assert_eq!(
                rejection(body),
                Some(AnswerRejection::MalformedJson),
                "{body}"
            );
        }
        assert_eq!(
            read_answer(200, b"{\"id\":\"\xff\"}", &EXPECT).rejection(),
            Some(AnswerRejection::MalformedJson)
        );
        for body in [
            "null",
            "\"imnotyourfather\"",
            "42",
            "[]",
            r#"["req-1",[]]"#,
            "true",
        ] {
            assert_eq!(
                rejection(body),
                Some(AnswerRejection::NotAnObject),
                "{body}"
            );
        }
        for body in [
            r#"{"id":"req-1","seatbid":{}}"#,
            r#"{"id":"req-1","seatbid":[1]}"#,
            r#"{"id":"req-1","seatbid":[["s",0,[]]]}"#,
            r#"{"id":"req-1","seatbid":[{"bid":{}}]}"#,
            r#"{"id":"req-1","seatbid":[{"bid":[],"bid":[]}]}"#,
            r#"{"id":7,"seatbid":[]}"#,
            r#"{"id":"req-1","cur":5,"seatbid":[]}"#,
            r#"{"id":"req-1","id":"req-1"}"#,
        ] {
            assert_eq!(
                rejection(body),
                Some(AnswerRejection::InvalidResponse),
                "{body}"
            );
        }
    }

    #[test]
    fn the_answer_must_be_for_our_request_in_our_currency() {
        let with = |id: &str, cur: &str| {
            format!(r#"{{"id":{id},{cur}"seatbid":[{{"bid":[{GOOD_BID}]}}]}}"#)
        };
        assert_eq!(
            rejection(&with("\"req-2\"", "")),
            Some(AnswerRejection::WrongId)
        );
        assert_eq!(
            rejection(&with("\"REQ-1\"", "")),
            Some(AnswerRejection::WrongId)
        );
        assert_eq!(rejection(&with("null", "")), Some(AnswerRejection::WrongId));
        assert_eq!(
            rejection(&with("\"req-1\"", r#""cur":"EUR","#)),
            Some(AnswerRejection::WrongCurrency)
        );
        assert_eq!(
            rejection(&with("\"req-1\"", r#""cur":"TYR","#)),
            Some(AnswerRejection::UnknownCurrency)
        );
        assert_eq!(
            rejection(&with("\"req-1\"", r#""cur":"US","#)),
            Some(AnswerRejection::UnknownCurrency)
        );
        for cur in [
            "",
            r#""cur":"USD","#,
            r#""cur":"usd","#,
            r#""cur":"","#,
            r#""cur":null,"#,
        ] {
            let body = with("\"req-1\"", cur);
            let (response, accepted, _) = bids(read_answer(200, body.as_bytes(), &EXPECT));
            assert_eq!(accepted.len(), 1, "{cur}");
            assert_eq!(response.id, "req-1");
        }
        let eur = Expect {
            currency: "eur",
            rated: &[],
            ..EXPECT
        };
        let body = with("\"req-1\"", r#""cur":"EUR","#);
        let answer = read_answer(200, body.as_bytes(), &eur);
        assert_eq!(bids(answer).1.len(), 1);
        let body = with("\"req-1\"", "");
        let answer = read_answer(200, body.as_bytes(), &eur);
        assert_eq!(
            answer.rejection(),
            Some(AnswerRejection::WrongCurrency),
            "absent cur means USD"
        ); // A currency with a rate is let through for the caller to convert; others are not.
        let rated = Expect {
            rated: &[*b"EUR", *b"GBP"],
            ..EXPECT
        };
        for (cur, accepted) in [("gbp", true), ("EUR", true), ("JPY", false), ("USD", true)] {
            let body = with("\"req-1\"", &format!(r#""cur":"{cur}","#));
            let answer = read_answer(200, body.as_bytes(), &rated);
            assert_eq!(answer.rejection().is_none(), accepted, "{cur}");
        }
    }

    #[test]
    fn a_bad_bid_never_rejects_its_siblings() {
        let body = answer_with(&[
            GOOD_BID,
            "[\"b2\",\"imp-1\",2.0]",
            r#"{"id":"b3","impid":"imp-1","price":2,"adm":"x","w":"300"}"#,
            r#"{"id":"b4","impid":"nope","price":2,"adm":"x","lurl":"https://l/?r=${AUCTION_LOSS}"}"#,
            "7",
            r#"{"id":"b6","impid":"imp-2","price":0.01,"nurl":"https://win"}"#,
        ]);
        let (response, accepted, rejected) = bids(read(&body));
        let accepted_ids: Vec<_> = accepted
            .iter()
            .map(|a| (a.bid.id.as_ref(), a.bid_index))
            .collect();
        assert_eq!(accepted_ids, [("b1", 0), ("b6", 5)]);
        assert_eq!(accepted[0].price, CpmMicros::new(1_500_000));
        assert_eq!(accepted[1].price, CpmMicros::new(10_000));
        // b1 is for imp-1, b6 for imp-2: indexes into `EXPECT.imp_ids`.
        assert_eq!((accepted[0].imp, accepted[1].imp), (0, 1));
        assert_eq!(accepted[0].seat.as_deref(), Some("s1"));
        let reasons: Vec<_> = rejected
            .iter()
            .map(|r| (r.bid_index, r.reason, r.bid_id.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, BidRejection::Malformed, None),
                (2, BidRejection::Malformed, Some("b3")),
                (3, BidRejection::UnknownImp, Some("b4")),
                (4, BidRejection::Malformed, None),
            ]
        );
        assert_eq!(
            text(rejected[2].lurl).as_deref(),
            Some("https://l/?r=${AUCTION_LOSS}")
        );
        assert_eq!(rejected[2].imp_id.as_deref(), Some("nope"));
        assert_eq!(rejected[2].seat.as_deref(), Some("s1"));
        assert_eq!(response.seatbid[0].bid.len(), 6);
    }

    #[test]
    fn each_bid_check_has_its_reason() {
        use BidRejection::*;
        for (bid, reason) in [
            (r#"{"impid":"imp-1","price":1,"adm":"x"}"#, MissingId),
            (
                r#"{"id":"","impid":"imp-1","price":1,"adm":"x"}"#,
                MissingId,
            ),
            (
                r#"{"id":null,"impid":"imp-1","price":1,"adm":"x"}"#,
                MissingId,
            ),
            (
                r#"{"id":123,"impid":"imp-1","price":1,"adm":"x"}"#,
                Malformed,
            ),
            (r#"{"id":"b","price":1,"adm":"x"}"#, MissingImpId),
            (r#"{"id":"b","impid":"","price":1,"adm":"x"}"#, MissingImpId),
            (
                r#"{"id":"b","impid":"imp-3","price":1,"adm":"x"}"#,
                UnknownImp,
            ),
            (r#"{"id":"b","impid":"imp-1","adm":"x"}"#, MissingPrice),
            (
                r#"{"id":"b","impid":"imp-1","price":null,"adm":"x"}"#,
                MissingPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":"1.5","adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":-1,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":0,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":-0.0,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1e-9,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":0.0000004,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1e400,"adm":"x"}"#,
                BadPrice,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1000000.5,"adm":"x"}"#,
                BadPrice,
            ),
            (r#"{"id":"b","impid":"imp-1","price":1}"#, NoMarkup),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"","nurl":null}"#,
                NoMarkup,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":{"native":{}}}"#,
                Malformed,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","mtype":99}"#,
                BadMtype,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","mtype":0}"#,
                BadMtype,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","mtype":"video"}"#,
                Malformed,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","mtype":-1}"#,
                Malformed,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","price":2}"#,
                Malformed,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","attr":[1,"2"]}"#,
                Malformed,
            ),
            (
                r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","adomain":"a.com"}"#,
                Malformed,
            ),
        ] {
            assert_eq!(only_bid_rejection(bid), reason, "{bid}");
        }
    }

    #[test]
    fn every_field_is_read_and_plain_strings_are_borrowed() {
        let bid = r#"{"id":"b1","impid":"imp-2","price":2.25,"nurl":"https://n","burl":"https://b",
            "lurl":"https://l","adm":"<a href=\"x\">","adid":"ad9","adomain":["a.com","b.com"],
            "bundle":"com.x","iurl":"https://i","cid":"c1","crid":"cr1","tactic":"t","cattax":2,
            "cat":["IAB1"],"attr":[1,2],"apis":[3],"api":5,"protocol":2,"qagmediarating":1,
            "language":"en","langb":"en-GB","dealid":"d1","w":300,"h":250,"wratio":4,"hratio":3,
            "exp":30,"dur":15,"mtype":1,"slotinpod":-1,"ext":{"k":[1,{"z":null}]},"newfield":{"x":1}}"#;
        let body = answer_with(&[bid]);
        let (_, accepted, rejected) = bids(read(&body));
        assert!(rejected.is_empty());
        let b = &accepted[0].bid;
        assert_eq!(
            (b.id.as_ref(), b.impid.as_ref(), b.price),
            ("b1", "imp-2", 2.25)
        );
        assert_eq!(accepted[0].price, CpmMicros::new(2_250_000));
        assert_eq!(accepted[0].imp, 1, "imp-2 is the second imp");
        assert_eq!(text(b.adm).as_deref(), Some("<a href=\"x\">"));
        assert!(
            matches!(b.adm.map(|s| s.decode()), Some(Cow::Owned(_))),
            "escaped strings are decoded"
        );
        assert!(matches!(
            b.nurl.map(|s| s.decode()),
            Some(Cow::Borrowed("https://n"))
        ));
        assert_eq!(b.adm.map(|s| s.raw()), Some(r#""<a href=\"x\">""#));
        assert!(matches!(
            b.adomain[..],
            [Cow::Borrowed("a.com"), Cow::Borrowed("b.com")]
        ));
        assert!(matches!(b.crid, Some(Cow::Borrowed("cr1"))));
        assert_eq!(
            (text(b.burl).as_deref(), text(b.lurl).as_deref()),
            (Some("https://b"), Some("https://l"))
        );
        assert_eq!(
            (b.adid.as_deref(), b.bundle.as_deref(), b.iurl.as_deref()),
            (Some("ad9"), Some("com.x"), Some("https://i"))
        );
        assert_eq!(
            (b.cid.as_deref(), b.tactic.as_deref(), b.dealid.as_deref()),
            (Some("c1"), Some("t"), Some("d1"))
        );
        assert_eq!(
            (b.language.as_deref(), b.langb.as_deref()),
            (Some("en"), Some("en-GB"))
        );
        assert_eq!(
            (b.cattax, b.cat.len(), b.attr.as_slice(), b.apis.as_slice()),
            (Some(2), 1, &[1, 2][..], &[3][..])
        );
        assert_eq!(
            (b.api, b.protocol, b.qagmediarating),
            (Some(5), Some(2), Some(1))
        );
        assert_eq!(
            (b.w, b.h, b.wratio, b.hratio),
            (Some(300), Some(250), Some(4), Some(3))
        );
        assert_eq!(
            (b.exp, b.dur, b.mtype, b.slotinpod),
            (Some(30), Some(15), Some(1), Some(-1))
        );
        assert_eq!(b.ext.map(RawValue::get), Some(r#"{"k":[1,{"z":null}]}"#));
        assert_eq!(b.raw(), bid);
    }

    #[test]
    fn the_response_level_fields_are_kept() {
        let body = r#"{"id":"req-1","bidid":"resp-7","cur":"usd","customdata":"cd","nbr":0,"ext":{"x":1},
            "seatbid":[{"seat":"s\u0031","group":1,"ext":{"y":2},"bid":[{"id":"b","impid":"imp-1","price":1,"adm":"a"}]}]}"#;
        let (response, accepted, _) = bids(read(body));
        assert_eq!(response.bidid.as_deref(), Some("resp-7"));
        assert_eq!(response.cur.as_deref(), Some("usd"));
        assert_eq!(response.customdata.as_deref(), Some("cd"));
        assert_eq!(response.nbr, Some(0));
        assert_eq!(response.ext.map(RawValue::get), Some(r#"{"x":1}"#));
        let seat = &response.seatbid[0];
        assert_eq!((seat.seat.as_deref(), seat.group), (Some("s1"), 1));
        assert_eq!(seat.ext.map(RawValue::get), Some(r#"{"y":2}"#));
        assert_eq!(accepted[0].seat.as_deref(), Some("s1"));
    }

    #[test]
    fn truncated_answers_never_panic_and_never_yield_bids() {
        let body = answer_with(&[
            GOOD_BID,
            r#"{"id":"b2","impid":"imp-2","price":0.5,"nurl":"n","ext":{"a":"\u00e9"}}"#,
        ]);
        assert_eq!(bids(read(&body)).1.len(), 2);
        for cut in 0..body.len() {
            let Some(prefix) = body.get(..cut) else {
                continue;
            };
            let answer = read(prefix);
            assert!(
                matches!(
                    answer,
                    Answer::Rejected(AnswerRejection::MalformedJson)
                        | Answer::NoBid(NoBidKind::EmptyBody)
                ),
                "{prefix}: {answer:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_reader(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = read_answer(200, &body, &EXPECT);
        }

        #[test]
        fn mangled_answers_never_panic_or_accept_a_bid_they_should_not(
            at in 0usize..200,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut body = answer_with(&[GOOD_BID, r#"{"id":"b2","impid":"imp-2","price":0.5,"nurl":"n"}"#]).into_bytes();
            let at = at % body.len();
            body[at] = byte;
            if let Answer::Bids { accepted, .. } = read_answer(200, &body, &EXPECT) {
                for a in &accepted {
                    proptest::prop_assert!(a.price > CpmMicros::ZERO && a.price <= money::MAX_CPM);
                    proptest::prop_assert_eq!(EXPECT.imp_ids[a.imp], a.bid.impid.as_ref());
                    proptest::prop_assert!(!a.bid.id.is_empty());
                }
            }
        }
    }
}

//! Reading a DSP's answer (OpenRTB 2.6 §4.2) and re-emitting its winning bids.
//!
//! [`read_answer`] sorts every HTTP answer into one of three outcomes: a no-bid, an
//! answer rejected as a whole, or a set of bids of which each is accepted or rejected
//! on its own. Bids are parsed one by one from their raw text, so one broken bid never
//! takes its siblings down with it.
//!
//! An accepted [`Bid`] keeps the exact text the DSP sent for it, plus where `price`,
//! `adm`, `nurl`, `burl` and `lurl` sit in that text. [`Bid::rewrite`] writes the bid back
//! out with only those values changed, so every other field (`ext`, fields newer than
//! this code, number formatting, key order) reaches the publisher byte for byte.
//!
//! Strictness: the required fields and the fields the exchange acts on must have their
//! spec types; a bid with `"w": "300"` is malformed. `null` is read as "absent"
//! everywhere, since many encoders write `null` for an unset optional field.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{self, CowStr, JsonStr};
use crate::span::Span;

/// What the exchange asked the DSP, to check its answer against.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'e> {
    /// `BidRequest.id` of the request the DSP received.
    pub request_id: &'e str,
    /// Every `imp.id` in that request. Searched linearly: requests carry few imps.
    pub imp_ids: &'e [&'e str],
    /// The one currency the exchange accepts bids in (ISO-4217, any case).
    pub currency: &'e str,
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

/// How a DSP said "no bid".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBidKind {
    /// HTTP 204, the spec's preferred no-bid.
    NoContent,
    /// HTTP 200 with an empty (or all-whitespace) body.
    EmptyBody,
    /// A JSON answer without a single bid (`{}`, no or empty `seatbid`) and no reason.
    NoBids,
    /// A JSON answer without bids that gives a no-bid reason code (`nbr`).
    Declined { nbr: u32 },
}

impl NoBidKind {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoBidKind::NoContent => "no_content",
            NoBidKind::EmptyBody => "empty_body",
            NoBidKind::NoBids => "no_bids",
            NoBidKind::Declined { .. } => "declined",
        }
    }
}

/// Why a whole answer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerRejection {
    /// An HTTP status other than 200 and 204.
    BadStatus(u16),
    /// Not JSON: a syntax error, truncation, trailing bytes, invalid UTF-8.
    MalformedJson,
    /// JSON, but not an object (`null`, a string, an array...).
    NotAnObject,
    /// A JSON object whose top-level or `seatbid` fields have the wrong types
    /// (`"seatbid": {}`, a `seatbid` entry that is not an object, `"cur": 5`...).
    InvalidResponse,
    /// `id` missing or not the id of the request the DSP received.
    WrongId,
    /// `cur` (absent = USD) is a real currency, but not the one the exchange trades in.
    WrongCurrency,
    /// `cur` is not an ISO-4217 code at all.
    UnknownCurrency,
}

impl AnswerRejection {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnswerRejection::BadStatus(_) => "bad_status",
            AnswerRejection::MalformedJson => "malformed_json",
            AnswerRejection::NotAnObject => "not_an_object",
            AnswerRejection::InvalidResponse => "invalid_response",
            AnswerRejection::WrongId => "wrong_id",
            AnswerRejection::WrongCurrency => "wrong_currency",
            AnswerRejection::UnknownCurrency => "unknown_currency",
        }
    }

    /// The OpenRTB loss reason code that fits: 5 (invalid auction ID) for a wrong id,
    /// 3 (invalid bid response) for everything else.
    pub fn loss_code(&self) -> u16 {
        match self {
            AnswerRejection::WrongId => LOSS_INVALID_AUCTION_ID,
            _ => LOSS_INVALID_BID_RESPONSE,
        }
    }
}

/// Why one bid was refused while its siblings were still considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidRejection {
    /// Not a JSON object, or a field has the wrong type (`"w": "300"`, `"id": 7`,
    /// `"mtype": "video"`) or appears twice.
    Malformed,
    /// `id` absent or empty.
    MissingId,
    /// `impid` absent or empty.
    MissingImpId,
    /// `impid` names no imp of the request.
    UnknownImp,
    /// `price` absent or `null`.
    MissingPrice,
    /// `price` not a number, not positive, under one micro, or above
    /// [`json::MAX_CPM_MICROS`].
    BadPrice,
    /// Neither `adm` nor `nurl` (non-empty): nothing to serve.
    NoMarkup,
    /// `mtype` outside 1..=4 (banner, video, audio, native).
    BadMtype,
}

impl BidRejection {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            BidRejection::Malformed => "malformed_bid",
            BidRejection::MissingId => "missing_bid_id",
            BidRejection::MissingImpId => "missing_imp_id",
            BidRejection::UnknownImp => "unknown_imp",
            BidRejection::MissingPrice => "missing_price",
            BidRejection::BadPrice => "bad_price",
            BidRejection::NoMarkup => "no_markup",
            BidRejection::BadMtype => "bad_mtype",
        }
    }

    /// The OpenRTB 2.6 loss reason code for `${AUCTION_LOSS}` in this bid's `lurl`:
    /// 7 missing markup, 9 missing bid price, 3 invalid bid response otherwise.
    pub fn loss_code(&self) -> u16 {
        match self {
            BidRejection::NoMarkup => LOSS_MISSING_MARKUP,
            BidRejection::MissingPrice => LOSS_MISSING_BID_PRICE,
            _ => LOSS_INVALID_BID_RESPONSE,
        }
    }
}

impl fmt::Display for NoBidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AnswerRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for BidRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// OpenRTB 2.6 loss reason codes (AdCOM list), the ones a broken answer maps to.
const LOSS_INVALID_BID_RESPONSE: u16 = 3;
const LOSS_INVALID_AUCTION_ID: u16 = 5;
const LOSS_MISSING_MARKUP: u16 = 7;
const LOSS_MISSING_BID_PRICE: u16 = 9;

/// The top level of an answer that carried bids (OpenRTB 2.6 §4.2.1).
#[derive(Clone, Debug)]
pub struct BidResponse<'a> {
    /// Equal to [`Expect::request_id`] (checked).
    pub id: Cow<'a, str>,
    pub seatbid: Vec<SeatBid<'a>>,
    /// The DSP's response id: the spec's source for `${AUCTION_BID_ID}`.
    pub bidid: Option<Cow<'a, str>>,
    /// As sent; `None` means USD. Matches [`Expect::currency`] (checked).
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
    /// The CPM as the DSP wrote it. Money is [`AcceptedBid::price_micros`].
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
    /// The bid's CPM in micros, rounded to the nearest micro.
    pub price_micros: u64,
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

/// The values to change when re-emitting a winning bid. The strings are final text
/// (macros already substituted); they are JSON-escaped on output.
#[derive(Clone, Copy, Debug)]
pub struct BidEdits<'e> {
    /// The clearing price, CPM micros.
    pub price_micros: u64,
    pub adm: Option<&'e str>,
    pub nurl: Option<&'e str>,
    pub burl: Option<&'e str>,
    pub lurl: Option<&'e str>,
    /// Leave `nurl` out of the bid altogether: when the exchange fires the win notice
    /// itself, a publisher that fired it too would count the win twice. Wins over `nurl`.
    pub drop_nurl: bool,
}

impl<'a> Bid<'a> {
    /// The bid object exactly as the DSP sent it.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Appends the bid object to `out` as sent, except that `price` becomes
    /// `edits.price_micros` and each of `adm`, `nurl`, `burl`, `lurl` given in `edits`
    /// replaces the DSP's value (or is added before the closing brace when the DSP sent
    /// none). Everything else is copied byte for byte.
    pub fn rewrite(&self, edits: &BidEdits<'_>, out: &mut Vec<u8>) {
        #[derive(Clone, Copy)]
        enum Value<'e> {
            Price(u64),
            Str(&'e str),
            Remove,
        }
        let nurl = if edits.drop_nurl { None } else { edits.nurl };
        let strings = [
            ("adm", self.spans.adm, edits.adm),
            ("nurl", self.spans.nurl, nurl),
            ("burl", self.spans.burl, edits.burl),
            ("lurl", self.spans.lurl, edits.lurl),
        ];
        let extra: usize = strings.iter().filter_map(|(_, _, e)| e.map(str::len)).sum();
        out.reserve(self.raw.len() + extra + 64);

        let mut splices = [None; 5];
        splices[0] = Some((self.spans.price, Value::Price(edits.price_micros)));
        for (slot, (_, span, edit)) in splices[1..].iter_mut().zip(strings) {
            if let (Some(span), Some(text)) = (span, edit) {
                *slot = Some((span, Value::Str(text)));
            }
        }
        if edits.drop_nurl {
            if let Some(member) = self.spans.nurl.and_then(|v| member_span(self.raw, v)) {
                splices[2] = Some((member, Value::Remove));
            }
        }
        splices.sort_unstable_by_key(|s| s.map_or(usize::MAX, |(span, _)| span.start));

        let raw = self.raw.as_bytes();
        let mut copied = 0;
        for (span, value) in splices.iter().flatten() {
            out.extend_from_slice(&raw[copied..span.start]);
            match *value {
                Value::Price(micros) => json::write_cpm(out, micros),
                Value::Str(text) => json::write_str(out, text),
                Value::Remove => {}
            }
            copied = span.end;
        }
        // A bid always holds at least `id`, `impid` and `price`, so added fields follow
        // a member and take a leading comma.
        let close = self.raw.rfind('}').unwrap_or(raw.len());
        out.extend_from_slice(&raw[copied..close]);
        for (name, span, edit) in strings {
            if let (None, Some(text)) = (span, edit) {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                json::write_str(out, text);
            }
        }
        out.extend_from_slice(&raw[close..]);
    }
}

/// The span of the whole object member whose value sits at `value`, with the comma that
/// separates it from its neighbour, so that cutting it out leaves valid JSON. `None` when
/// the key is not written plainly (an escaped key is legal but rare; the member then stays).
fn member_span(raw: &str, value: Span) -> Option<Span> {
    let b = raw.as_bytes();
    let back = |mut i: usize| {
        while i > 0 && is_json_whitespace(b[i - 1] as char) {
            i -= 1;
        }
        i
    };
    let colon = back(value.start);
    if colon == 0 || b[colon - 1] != b':' {
        return None;
    }
    let key_end = back(colon - 1);
    if key_end == 0 || b[key_end - 1] != b'"' {
        return None;
    }
    let key_start = raw[..key_end - 1].rfind('"')?;
    if raw[key_start + 1..key_end - 1].contains('\\') {
        return None;
    }
    let before = back(key_start);
    match b.get(before.checked_sub(1)?) {
        Some(b',') => Some(Span {
            start: before - 1,
            end: value.end,
        }),
        Some(b'{') => {
            let mut end = value.end;
            while end < b.len() && is_json_whitespace(b[end] as char) {
                end += 1;
            }
            if b.get(end) == Some(&b',') {
                end += 1;
            }
            Some(Span {
                start: key_start,
                end,
            })
        }
        _ => None,
    }
}

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
        Some(id) if id == expect.request_id => id,
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
    if !cur.eq_ignore_ascii_case(expect.currency) {
        return Answer::Rejected(AnswerRejection::WrongCurrency);
    }

    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for (seatbid_index, seat) in seatbid.iter().enumerate() {
        for (bid_index, raw) in seat.bid.iter().enumerate() {
            match read_bid(raw.get(), expect.imp_ids) {
                Ok((bid, price_micros)) => accepted.push(AcceptedBid {
                    seatbid_index,
                    bid_index,
                    seat: seat.seat.clone(),
                    bid,
                    price_micros,
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
        bidid: wire.bidid,
        cur: wire.cur,
        customdata: wire.customdata,
        nbr: wire.nbr,
        ext: wire.ext,
    };
    Answer::Bids {
        response,
        accepted,
        rejected,
    }
}

/// Whether `code` is an ISO-4217 currency code (any case), current or recently
/// replaced. Precious metals, bond units and the test/no-currency codes are not:
/// nothing is priced in them.
pub fn is_currency_code(code: &str) -> bool {
    let Ok(bytes) = <[u8; 3]>::try_from(code.as_bytes()) else {
        return false;
    };
    ISO_4217
        .binary_search(&bytes.map(|b| b.to_ascii_uppercase()))
        .is_ok()
}

/// Sorted, for binary search.
const ISO_4217: [[u8; 3]; 170] = [
    *b"AED", *b"AFN", *b"ALL", *b"AMD", *b"ANG", *b"AOA", *b"ARS", *b"AUD", *b"AWG", *b"AZN",
    *b"BAM", *b"BBD", *b"BDT", *b"BGN", *b"BHD", *b"BIF", *b"BMD", *b"BND", *b"BOB", *b"BOV",
    *b"BRL", *b"BSD", *b"BTN", *b"BWP", *b"BYN", *b"BZD", *b"CAD", *b"CDF", *b"CHE", *b"CHF",
    *b"CHW", *b"CLF", *b"CLP", *b"CNY", *b"COP", *b"COU", *b"CRC", *b"CUC", *b"CUP", *b"CVE",
    *b"CZK", *b"DJF", *b"DKK", *b"DOP", *b"DZD", *b"EGP", *b"ERN", *b"ETB", *b"EUR", *b"FJD",
    *b"FKP", *b"GBP", *b"GEL", *b"GHS", *b"GIP", *b"GMD", *b"GNF", *b"GTQ", *b"GYD", *b"HKD",
    *b"HNL", *b"HRK", *b"HTG", *b"HUF", *b"IDR", *b"ILS", *b"INR", *b"IQD", *b"IRR", *b"ISK",
    *b"JMD", *b"JOD", *b"JPY", *b"KES", *b"KGS", *b"KHR", *b"KMF", *b"KPW", *b"KRW", *b"KWD",
    *b"KYD", *b"KZT", *b"LAK", *b"LBP", *b"LKR", *b"LRD", *b"LSL", *b"LYD", *b"MAD", *b"MDL",
    *b"MGA", *b"MKD", *b"MMK", *b"MNT", *b"MOP", *b"MRU", *b"MUR", *b"MVR", *b"MWK", *b"MXN",
    *b"MXV", *b"MYR", *b"MZN", *b"NAD", *b"NGN", *b"NIO", *b"NOK", *b"NPR", *b"NZD", *b"OMR",
    *b"PAB", *b"PEN", *b"PGK", *b"PHP", *b"PKR", *b"PLN", *b"PYG", *b"QAR", *b"RON", *b"RSD",
    *b"RUB", *b"RWF", *b"SAR", *b"SBD", *b"SCR", *b"SDG", *b"SEK", *b"SGD", *b"SHP", *b"SLE",
    *b"SLL", *b"SOS", *b"SRD", *b"SSP", *b"STN", *b"SVC", *b"SYP", *b"SZL", *b"THB", *b"TJS",
    *b"TMT", *b"TND", *b"TOP", *b"TRY", *b"TTD", *b"TWD", *b"TZS", *b"UAH", *b"UGX", *b"USD",
    *b"USN", *b"UYI", *b"UYU", *b"UYW", *b"UZS", *b"VED", *b"VES", *b"VND", *b"VUV", *b"WST",
    *b"XAF", *b"XCD", *b"XCG", *b"XOF", *b"XPF", *b"YER", *b"ZAR", *b"ZMW", *b"ZWG", *b"ZWL",
];

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// What a rejected bid still tells us.
#[derive(Default)]
struct BidContext<'a> {
    id: Option<Cow<'a, str>>,
    impid: Option<Cow<'a, str>>,
    adid: Option<Cow<'a, str>>,
    lurl: Option<JsonStr<'a>>,
}

type BidResult<'a> = Result<(Bid<'a>, u64), (BidRejection, BidContext<'a>)>;

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
    let context = |id: &Option<Cow<'a, str>>, impid: &Option<Cow<'a, str>>| BidContext {
        id: id.clone(),
        impid: impid.clone(),
        adid: wire.adid.clone(),
        lurl,
    };
    let reject = |reason| Err((reason, context(&wire.id, &wire.impid)));

    let id = match &wire.id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => return reject(BidRejection::MissingId),
    };
    let impid = match &wire.impid {
        Some(impid) if !impid.is_empty() => impid.clone(),
        _ => return reject(BidRejection::MissingImpId),
    };
    if !imp_ids.iter().any(|known| *known == impid) {
        return reject(BidRejection::UnknownImp);
    }
    let (price_raw, price_span) = match wire.price {
        Some(value) if value.get() != "null" => (value, Span::of_str(raw.as_bytes(), value.get())),
        _ => return reject(BidRejection::MissingPrice),
    };
    let Ok(price) = serde_json::from_str::<f64>(price_raw.get()) else {
        return reject(BidRejection::BadPrice);
    };
    let Some(price_micros) = json::cpm_to_micros(price) else {
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
        price,
        nurl,
        burl,
        lurl,
        adm,
        adid: wire.adid,
        adomain: wire.adomain,
        bundle: wire.bundle,
        iurl: wire.iurl,
        cid: wire.cid,
        crid: wire.crid,
        tactic: wire.tactic,
        cattax: wire.cattax,
        cat: wire.cat,
        attr: wire.attr,
        apis: wire.apis,
        api: wire.api,
        protocol: wire.protocol,
        qagmediarating: wire.qagmediarating,
        language: wire.language,
        langb: wire.langb,
        dealid: wire.dealid,
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
    Ok((bid, price_micros))
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
    #[serde(borrow, default, deserialize_with = "opt_str")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    seatbid: Option<Vec<WireSeatBid<'a>>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    bidid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    cur: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    customdata: Option<Cow<'a, str>>,
    #[serde(default)]
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
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
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
                0 => seat.seat = map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0),
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
    #[serde(borrow, default, deserialize_with = "opt_str")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    impid: Option<Cow<'a, str>>,
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
    #[serde(borrow, default, deserialize_with = "opt_str")]
    adid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "vec_str")]
    adomain: Vec<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    bundle: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    iurl: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    cid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    crid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    tactic: Option<Cow<'a, str>>,
    #[serde(default)]
    cattax: Option<u32>,
    #[serde(borrow, default, deserialize_with = "vec_str")]
    cat: Vec<Cow<'a, str>>,
    #[serde(default, deserialize_with = "null_default")]
    attr: Vec<u32>,
    #[serde(default, deserialize_with = "null_default")]
    apis: Vec<u32>,
    #[serde(default)]
    api: Option<u32>,
    #[serde(default)]
    protocol: Option<u32>,
    #[serde(default)]
    qagmediarating: Option<u32>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    language: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    langb: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    dealid: Option<Cow<'a, str>>,
    #[serde(default)]
    w: Option<u32>,
    #[serde(default)]
    h: Option<u32>,
    #[serde(default)]
    wratio: Option<u32>,
    #[serde(default)]
    hratio: Option<u32>,
    #[serde(default)]
    exp: Option<u32>,
    #[serde(default)]
    dur: Option<u32>,
    #[serde(default)]
    mtype: Option<u32>,
    #[serde(default)]
    slotinpod: Option<i32>,
    #[serde(borrow, default)]
    ext: Option<&'a RawValue>,
}

fn opt_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<CowStr<'de>>::deserialize(d)?.map(|s| s.0))
}

fn vec_str<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cow<'de, str>>, D::Error> {
    let strings = Option::<Vec<CowStr<'de>>>::deserialize(d)?.unwrap_or_default();
    Ok(strings.into_iter().map(|s| s.0).collect())
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Keeps a present value's raw text even when it is `null`, so its span is known.
fn raw_even_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECT: Expect<'static> = Expect {
        request_id: "req-1",
        imp_ids: &["imp-1", "imp-2"],
        currency: "USD",
    };

    fn bids(answer: Answer<'_>) -> (BidResponse<'_>, Vec<AcceptedBid<'_>>, Vec<RejectedBid<'_>>) {
        match answer {
            Answer::Bids {
                response,
                accepted,
                rejected,
            } => (response, accepted, rejected),
            other => panic!("expected bids, got {other:?}"),
        }
    }

    fn text(s: Option<JsonStr<'_>>) -> Option<String> {
        s.map(|s| s.decode().into_owned())
    }

    fn read(body: &str) -> Answer<'_> {
        read_answer(200, body.as_bytes(), &EXPECT)
    }

    fn rejection(body: &str) -> Option<AnswerRejection> {
        match read(body) {
            Answer::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// An answer holding the given bid objects in one seat.
    fn answer_with(bid_objects: &[&str]) -> String {
        format!(
            r#"{{"id":"req-1","cur":"USD","seatbid":[{{"seat":"s1","bid":[{}]}}]}}"#,
            bid_objects.join(",")
        )
    }

    const GOOD_BID: &str =
        r#"{"id":"b1","impid":"imp-1","price":1.5,"adm":"<div>${AUCTION_PRICE}</div>"}"#;

    fn only_bid_rejection(bid: &str) -> BidRejection {
        let body = answer_with(&[bid]);
        let (_, accepted, rejected) = bids(read(&body));
        assert!(accepted.is_empty(), "{bid}");
        assert_eq!(rejected.len(), 1, "{bid}");
        rejected[0].reason
    }

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
        );
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
        assert_eq!(accepted[0].price_micros, 1_500_000);
        assert_eq!(accepted[1].price_micros, 10_000);
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
                r#"{"id":"b","impid":"imp-1","price":1e-9,"adm":"x"}"#,
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
    fn rejection_labels_and_loss_codes() {
        assert_eq!(BidRejection::NoMarkup.loss_code(), 7);
        assert_eq!(BidRejection::MissingPrice.loss_code(), 9);
        assert_eq!(BidRejection::UnknownImp.loss_code(), 3);
        assert_eq!(AnswerRejection::WrongId.loss_code(), 5);
        assert_eq!(AnswerRejection::MalformedJson.loss_code(), 3);
        assert_eq!(AnswerRejection::BadStatus(500).as_str(), "bad_status");
        assert_eq!(NoBidKind::Declined { nbr: 1 }.to_string(), "declined");
        let labels = [
            BidRejection::Malformed,
            BidRejection::MissingId,
            BidRejection::MissingImpId,
            BidRejection::UnknownImp,
            BidRejection::MissingPrice,
            BidRejection::BadPrice,
            BidRejection::NoMarkup,
            BidRejection::BadMtype,
        ]
        .map(|r| r.as_str());
        let mut unique = labels.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
        assert!(labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
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
        assert_eq!(accepted[0].price_micros, 2_250_000);
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

    fn rewritten(bid_text: &str, edits: &BidEdits<'_>) -> String {
        let body = answer_with(&[bid_text]);
        let (_, accepted, rejected) = bids(read(&body));
        assert!(rejected.is_empty(), "{rejected:?}");
        let mut out = Vec::new();
        accepted[0].bid.rewrite(edits, &mut out);
        let text = String::from_utf8(out).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        text
    }

    #[test]
    fn dropping_nurl_cuts_the_member_wherever_it_stands() {
        for (raw, want) in [
            (
                r#"{"id":"b","impid":"1","price":1,"nurl":"http://n"}"#,
                r#"{"id":"b","impid":"1","price":1.5}"#,
            ),
            (
                r#"{"nurl" : "http://n" , "id":"b","impid":"1","price":1}"#,
                r#"{ "id":"b","impid":"1","price":1.5}"#,
            ),
            (
                r#"{"id":"b","nurl":"http://n","impid":"1","price":1,"ext":{"nurl":"x"}}"#,
                r#"{"id":"b","impid":"1","price":1.5,"ext":{"nurl":"x"}}"#,
            ),
            (
                r#"{"id":"b","impid":"1","price":1}"#,
                r#"{"id":"b","impid":"1","price":1.5}"#,
            ),
        ] {
            let body = format!(r#"{{"id":"r","seatbid":[{{"bid":[{raw}]}}]}}"#);
            let expect = Expect {
                request_id: "r",
                imp_ids: &["1"],
                currency: "USD",
            };
            // Every case gets markup, so the one without nurl is accepted too.
            let body = body.replace(r#""price":1"#, r#""price":1,"adm":"<a/>""#);
            let Answer::Bids { accepted, .. } = read_answer(200, body.as_bytes(), &expect) else {
                panic!("{raw}: not read as bids")
            };
            let mut out = Vec::new();
            accepted[0].bid.rewrite(
                &BidEdits {
                    drop_nurl: true,
                    price_micros: 1_500_000,
                    ..NO_EDITS
                },
                &mut out,
            );
            let want = want.replace(r#""price":1.5"#, r#""price":1.5,"adm":"<a/>""#);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{raw}");
        }
    }

    const NO_EDITS: BidEdits<'static> = BidEdits {
        price_micros: 1_000_000,
        adm: None,
        nurl: None,
        burl: None,
        lurl: None,
        drop_nurl: false,
    };

    #[test]
    fn rewriting_changes_only_the_edited_values() {
        let bid = r#"{ "id" : "b1", "ext": {"price": 9, "adm": "keep", "n": 1.50},
            "impid":"imp-1", "price" : 2.500 , "adm": "<p>${AUCTION_PRICE}</p>",
            "nurl":"https://n/?p=${AUCTION_PRICE}", "future_field": [1, 2.0, "é"] }"#;
        let out = rewritten(
            bid,
            &BidEdits {
                price_micros: 1_234_500,
                adm: Some("<p>1.2345</p>"),
                nurl: Some("https://n/?p=1.2345"),
                ..NO_EDITS
            },
        );
        let expected = bid
            .replace("2.500", "1.2345")
            .replace("\"<p>${AUCTION_PRICE}</p>\"", "\"<p>1.2345</p>\"")
            .replace(
                "\"https://n/?p=${AUCTION_PRICE}\"",
                "\"https://n/?p=1.2345\"",
            );
        assert_eq!(out, expected);

        // Only the price: everything else byte for byte.
        assert_eq!(rewritten(bid, &NO_EDITS), bid.replace("2.500", "1"));
    }

    #[test]
    fn rewriting_adds_absent_fields_and_replaces_null_ones() {
        let bid = "{\"id\":\"b1\",\"impid\":\"imp-1\",\"price\":3,\"adm\":\"a\",\"burl\":null\n}";
        let out = rewritten(
            bid,
            &BidEdits {
                price_micros: 2_000_000,
                adm: Some("quote \" and \\ and\nnewline"),
                burl: Some("https://b"),
                lurl: Some("https://l/?x=1&y=\u{e9}"),
                nurl: Some("https://n"),
                drop_nurl: false,
            },
        );
        assert_eq!(
            out,
            "{\"id\":\"b1\",\"impid\":\"imp-1\",\"price\":2,\"adm\":\"quote \\\" and \\\\ and\\nnewline\",\
             \"burl\":\"https://b\"\n,\"nurl\":\"https://n\",\"lurl\":\"https://l/?x=1&y=\u{e9}\"}"
        );
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["adm"], "quote \" and \\ and\nnewline");
        assert_eq!(value["price"], 2);
    }

    #[test]
    fn a_rewritten_bid_reads_back_as_the_same_bid_at_the_new_price() {
        let bid = r#"{"id":"b1","impid":"imp-2","price":5,"adm":"x","lurl":"l","crid":"c","ext":{"a":[]}}"#;
        let out = rewritten(
            bid,
            &BidEdits {
                price_micros: 10_000,
                adm: Some("y"),
                ..NO_EDITS
            },
        );
        let body = answer_with(&[&out]);
        let (_, accepted, _) = bids(read(&body));
        let again = &accepted[0];
        assert_eq!(again.price_micros, 10_000);
        assert_eq!(text(again.bid.adm).as_deref(), Some("y"));
        assert_eq!(text(again.bid.lurl).as_deref(), Some("l"));
        assert_eq!(again.bid.crid.as_deref(), Some("c"));
        assert_eq!(again.bid.ext.map(RawValue::get), Some(r#"{"a":[]}"#));
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

    #[test]
    fn the_currency_table_is_sorted_uppercase_iso_codes() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217.iter().flatten().all(u8::is_ascii_uppercase));
        for code in [
            "USD", "eur", "Gbp", "JPY", "PLN", "TRY", "MXN", "CHF", "BRL", "XOF",
        ] {
            assert!(is_currency_code(code), "{code}");
        }
        for code in ["", "US", "USDT", "TYR", "XXX", "XAU", "€", "ÜSD"] {
            assert!(!is_currency_code(code), "{code}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_edit_survives_a_rewrite_and_a_re_read(
            adm in proptest::prelude::any::<String>(),
            nurl in proptest::option::of(proptest::prelude::any::<String>()),
            micros in 1..=json::MAX_CPM_MICROS,
        ) {
            let bid = r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","ext":{"q":"\u00e9"}}"#;
            let body = answer_with(&[bid]);
            let (_, accepted, _) = bids(read(&body));
            let mut out = Vec::new();
            let edits = BidEdits { price_micros: micros, adm: Some(&adm), nurl: nurl.as_deref(), ..NO_EDITS };
            accepted[0].bid.rewrite(&edits, &mut out);
            let out = String::from_utf8(out).unwrap();
            let body = answer_with(&[&out]);
            let (_, again, rejected) = bids(read(&body));
            let again = match (again.first(), rejected.first()) {
                (Some(a), _) => a,
                // An empty adm with no nurl is, rightly, nothing to serve.
                (None, Some(r)) => {
                    proptest::prop_assert!(adm.is_empty() && nurl.as_deref().is_none_or(str::is_empty));
                    proptest::prop_assert_eq!(r.reason, BidRejection::NoMarkup);
                    return Ok(());
                }
                (None, None) => unreachable!("one bid in, one bid out"),
            };
            proptest::prop_assert_eq!(again.price_micros, micros);
            proptest::prop_assert_eq!(text(again.bid.adm), Some(adm));
            proptest::prop_assert_eq!(text(again.bid.nurl), nurl);
            proptest::prop_assert_eq!(again.bid.ext.map(RawValue::get), Some(r#"{"q":"\u00e9"}"#));
        }

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
                    proptest::prop_assert!(a.price_micros > 0 && a.price_micros <= json::MAX_CPM_MICROS);
                    proptest::prop_assert!(EXPECT.imp_ids.contains(&a.bid.impid.as_ref()));
                    proptest::prop_assert!(!a.bid.id.is_empty());
                }
            }
        }
    }

    impl Answer<'_> {
        fn rejection(&self) -> Option<AnswerRejection> {
            match self {
                Answer::Rejected(r) => Some(*r),
                _ => None,
            }
        }
    }
}

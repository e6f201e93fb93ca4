//! Reads every DSP answer of the shared OpenRTB corpus through `response::read_answer`
//! and re-emits every accepted bid through `Bid::rewrite`.
//!
//! The corpus is the repository's `testdata/openrtb` (see its PROVENANCE.md), plus the folder
//! `OPENRTB_CORPUS` names when set (an added corpus, held to the generic rules). Each file's
//! outcome is printed (`cargo test -- --nocapture`) so a failure can be traced to it.
//!
//! Most third-party answers come from Prebid Server adapter tests, whose mock DSPs do not
//! echo the request id and whose host converts currencies. So each of them is read twice:
//! once exactly as the DSP's request was ("literal": its id, imps and currency), where a
//! foreign id or currency must be refused as a whole, and once with the id and currency
//! aligned to the answer ("aligned"), which exercises the per-bid checks on every file.
//! serde_json::Value is used here only to read the fixtures independently.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use money::CpmMicros;
use openrtb::macros::{self, MacroValues};
use openrtb::response::{
    read_answer, Answer, AnswerRejection, BidEdits, BidRejection, Expect, NoBidKind,
};
use serde_json::Value;

/// The files directly in `sub` of every corpus whose names end with `suffix`.
fn files(sub: &str, suffix: &str) -> Vec<PathBuf> {
    testkit::corpus::files(sub, suffix)
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// What an Expect is built from, owned so that it can outlive the fixture's Value.
struct Request {
    id: String,
    imp_ids: Vec<String>,
    currency: String,
}

impl Request {
    fn with<R>(&self, f: impl FnOnce(&Expect<'_>) -> R) -> R {
        let imp_ids: Vec<&str> = self.imp_ids.iter().map(String::as_str).collect();
        f(&Expect {
            request_id: &self.id,
            imp_ids: &imp_ids,
            currency: &self.currency,
            rated: &[],
        })
    }
}

/// A paired request file, read the way the DSP saw it.
fn request_of(path: &Path) -> Request {
    let v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    Request {
        id: v["id"].as_str().unwrap().to_owned(),
        imp_ids: v["imp"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect(),
        currency: v["cur"][0].as_str().unwrap_or("USD").to_owned(),
    }
}

/// Every bid object of an answer that parses as JSON (empty when it does not).
fn bid_objects(body: &[u8]) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let seats = v
        .get("seatbid")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    seats
        .iter()
        .filter_map(|s| s.get("bid").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect()
}

/// The request an answer claims to answer: its own id and currency, and `imp_ids`.
fn aligned_to(body: &[u8], imp_ids: Vec<String>, fallback_id: &str) -> Request {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Request {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(fallback_id)
            .to_owned(),
        imp_ids,
        currency: v
            .get("cur")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .unwrap_or("USD")
            .to_owned(),
    }
}

fn describe(answer: &Answer<'_>) -> String {
    match answer {
        Answer::NoBid(kind) => format!("no-bid ({kind})"),
        Answer::Rejected(why) => format!("rejected whole ({why})"),
        Answer::Bids {
            accepted, rejected, ..
        } => {
            let reasons: Vec<String> = rejected
                .iter()
                .map(|r| format!("{}:{}", r.bid_index, r.reason))
                .collect();
            format!(
                "{} accepted, {} rejected {reasons:?}",
                accepted.len(),
                rejected.len()
            )
        }
    }
}

/// Re-emits every accepted bid at a new price with macros substituted and checks that
/// the result is the same bid with only those values changed.
/// The clearing price every rewrite writes.
const PRICE: CpmMicros = CpmMicros::new(1_234_567);

fn check_rewrites(file: &str, answer: &Answer<'_>, originals: &[Value]) {
    let Answer::Bids {
        accepted, response, ..
    } = answer
    else {
        return;
    };
    for accepted_bid in accepted {
        let bid = &accepted_bid.bid;
        let values = MacroValues {
            auction_id: Some(&response.id),
            bid_id: response.bidid.as_deref().or(Some(&bid.id)),
            imp_id: Some(&bid.impid),
            seat_id: accepted_bid.seat.as_deref(),
            ad_id: bid.adid.as_deref(),
            price: Some(PRICE),
            currency: Some(response.cur.as_deref().unwrap_or("USD")),
            loss: Some(0),
            ..MacroValues::default()
        };
        let templates = [bid.adm, bid.nurl, bid.burl, bid.lurl].map(|s| s.map(|s| s.decode()));
        let [adm, nurl, burl, lurl] = &templates;
        let adm = adm.as_deref().map(|t| macros::expand(t, &values));
        let nurl = nurl.as_deref().map(|t| macros::expand_url(t, &values));
        let burl = burl.as_deref().map(|t| macros::expand_url(t, &values));
        let lurl = lurl.as_deref().map(|t| macros::expand_url(t, &values));
        let edits = BidEdits {
            price: PRICE,
            adm: adm.as_deref(),
            nurl: nurl.as_deref(),
            burl: burl.as_deref(),
            lurl: lurl.as_deref(),
            drop_nurl: false,
        };
        let mut out = Vec::new();
        bid.rewrite(&edits, &mut out);
        let text = String::from_utf8(out).unwrap();
        let got: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{file}: rewrite is not JSON ({e}): {text}"));
        let original: Value = serde_json::from_str(bid.raw()).unwrap();
        assert!(
            originals.contains(&original),
            "{file}: Bid::raw is not one of the answer's bids"
        );

        let (got, mut want) = (
            got.as_object().unwrap(),
            original.as_object().unwrap().clone(),
        );
        want.insert("price".into(), serde_json::json!(1.234567));
        for (key, value) in [
            ("adm", &adm),
            ("nurl", &nurl),
            ("burl", &burl),
            ("lurl", &lurl),
        ] {
            if let Some(value) = value {
                assert!(
                    !value.contains("${AUCTION_PRICE}"),
                    "{file}: {key} still has the price macro"
                );
                want.insert(key.into(), Value::String(value.to_string()));
            }
        }
        assert_eq!(
            got, &want,
            "{file}: rewrite changed more than price and markup"
        );
        if let Some(ext) = bid.ext {
            assert!(
                text.contains(ext.get()),
                "{file}: ext was not copied byte for byte"
            );
        }

        // Dropping the win notice removes exactly that member and keeps the JSON valid.
        let mut dropped = Vec::new();
        bid.rewrite(
            &BidEdits {
                drop_nurl: true,
                ..edits
            },
            &mut dropped,
        );
        let dropped: Value = serde_json::from_slice(&dropped)
            .unwrap_or_else(|e| panic!("{file}: rewrite without nurl is not JSON ({e})"));
        want.remove("nurl");
        assert_eq!(
            dropped.as_object().unwrap(),
            &want,
            "{file}: dropping nurl changed more than nurl"
        );
    }
}

#[test]
fn iab_example_answers_are_read_as_published() {
    for path in files("iab/responses", ".json") {
        let file = name(&path);
        let body = fs::read(&path).unwrap();
        let bids = bid_objects(&body);
        let imp_ids = bids
            .iter()
            .filter_map(|b| b["impid"].as_str())
            .map(str::to_owned)
            .collect();
        let request = aligned_to(&body, imp_ids, "");
        let answer = request.with(|expect| read_answer(200, &body, expect));
        println!("{file}: {}", describe(&answer));
        match &answer {
            Answer::NoBid(kind) => {
                assert!(file.contains("nobid"), "{file}: unexpected no-bid");
                let want = if file.contains("nbr") {
                    NoBidKind::Declined { nbr: 2 }
                } else {
                    NoBidKind::NoBids
                };
                assert_eq!(*kind, want, "{file}");
            }
            // The DOOH banner example carries its creative in a `banner.img` object that
            // OpenRTB 2.6 does not define, with neither `adm` nor `nurl`: there is nothing
            // the exchange could serve.
            Answer::Bids {
                accepted, rejected, ..
            } if file.contains("dooh_banner") => {
                assert!(accepted.is_empty(), "{file}");
                let reasons: Vec<_> = rejected.iter().map(|r| r.reason).collect();
                assert_eq!(reasons, [BidRejection::NoMarkup], "{file}");
            }
            Answer::Bids {
                accepted, rejected, ..
            } => {
                assert!(rejected.is_empty(), "{file}: {rejected:?}");
                assert_eq!(accepted.len(), bids.len(), "{file}");
            }
            Answer::Rejected(why) => panic!("{file}: rejected as {why}"),
        }
        check_rewrites(&file, &answer, &bids);
    }
}

#[test]
fn iab_examples_published_as_broken_json_are_refused() {
    for path in files("iab/unparseable_original", ".txt") {
        let file = name(&path);
        let body = fs::read(&path).unwrap();
        let request = Request {
            id: "1234567890".into(),
            imp_ids: vec!["102".into()],
            currency: "GBP".into(),
        };
        let answer = request.with(|expect| read_answer(200, &body, expect));
        println!("{file}: {}", describe(&answer));
        assert!(
            matches!(answer, Answer::Rejected(AnswerRejection::MalformedJson)),
            "{file}"
        );
    }
}

/// What reading each `malformed__*` answer must give once its id and currency are
/// aligned (see the module docs), with the `.reason.txt` it answers to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expected {
    NoBid(NoBidKind),
    Whole(AnswerRejection),
    EveryBid(BidRejection),
}

fn malformed_expectations() -> BTreeMap<&'static str, Expected> {
    use Expected::*;
    BTreeMap::from([
        // seatbid/bidid/cur are null: read as absent, which makes an ordinary no-bid
        // (the reason file: "tolerated as no-bid").
        ("adf__nobid-response", NoBid(NoBidKind::NoBids)),
        // An empty 200 is counted as a no-bid of its own kind.
        ("adf__unparsable-response", NoBid(NoBidKind::EmptyBody)),
        (
            "adkernel__single-banner-impression",
            Whole(AnswerRejection::UnknownCurrency),
        ),
        (
            "admatic__response-200-without-body",
            Whole(AnswerRejection::NotAnObject),
        ),
        (
            "adtarget__wrong-impression-mapping",
            EveryBid(BidRejection::UnknownImp),
        ),
        (
            "aduptech__broken-response",
            EveryBid(BidRejection::Malformed),
        ),
        (
            "algorix__bad_response",
            Whole(AnswerRejection::MalformedJson),
        ),
        (
            "alliance_gravity__invalid-bid-response",
            Whole(AnswerRejection::InvalidResponse),
        ),
        (
            "apacdex__invalid-response-unmarshall-error",
            EveryBid(BidRejection::Malformed),
        ),
        ("blue__bad_response", Whole(AnswerRejection::MalformedJson)),
        (
            "exco__app-single-imp-video",
            EveryBid(BidRejection::MissingImpId),
        ),
        ("grid__bad_response", Whole(AnswerRejection::MalformedJson)),
        (
            "impactify__negative_price",
            EveryBid(BidRejection::BadPrice),
        ),
        ("ix__bad-imp-id", EveryBid(BidRejection::UnknownImp)),
        (
            "lemmadigital__invalid-response",
            Whole(AnswerRejection::MalformedJson),
        ),
        (
            "proxistore__unsupported-mtype",
            EveryBid(BidRejection::BadMtype),
        ),
        // The reason file is about the native adm; the bid's impid also names no imp of
        // the paired request, which is checked first.
        (
            "pubmatic__native_invalid_adm",
            EveryBid(BidRejection::UnknownImp),
        ),
        (
            "pulsepoint__bad-bid-data",
            EveryBid(BidRejection::Malformed),
        ),
        (
            "relevantdigital__invalidBidType",
            EveryBid(BidRejection::MissingId),
        ),
        (
            "seedtag__response_unmarshal_error",
            EveryBid(BidRejection::Malformed),
        ),
        (
            "smartrtb__invalid-bid-json",
            Whole(AnswerRejection::NotAnObject),
        ),
        (
            "thetradedesk__invalid-mtype",
            Whole(AnswerRejection::WrongId),
        ),
        ("visx__simple-banner", Whole(AnswerRejection::WrongId)),
    ])
}

fn outcome(answer: &Answer<'_>) -> Option<Expected> {
    match answer {
        Answer::NoBid(kind) => Some(Expected::NoBid(*kind)),
        Answer::Rejected(why) => Some(Expected::Whole(*why)),
        Answer::Bids {
            accepted, rejected, ..
        } => {
            let first = rejected.first()?.reason;
            (accepted.is_empty() && rejected.iter().all(|r| r.reason == first))
                .then_some(Expected::EveryBid(first))
        }
    }
}

#[test]
fn third_party_answers_are_accepted_or_refused_as_their_notes_say() {
    let mut expectations = malformed_expectations();
    for path in files("thirdparty/bid_responses", ".json") {
        let file = name(&path);
        let dir = path.parent().unwrap();
        let stem = file.trim_end_matches(".json");
        let body = fs::read(&path).unwrap();
        let bids = bid_objects(&body);
        let paired = dir
            .join("paired_requests")
            .join(format!("{stem}.request.json"));
        let literal = if paired.is_file() {
            request_of(&paired)
        } else {
            // Fixtures without a paired request (bsm/openrtb) are checked against the
            // request they say they answer.
            let imp_ids = bids
                .iter()
                .filter_map(|b| b["impid"].as_str())
                .map(str::to_owned)
                .collect();
            aligned_to(&body, imp_ids, "")
        };
        let aligned = aligned_to(&body, literal.imp_ids.clone(), &literal.id);

        let answer = literal.with(|expect| read_answer(200, &body, expect));
        println!("{file} [literal]: {}", describe(&answer));
        let answer_aligned = aligned.with(|expect| read_answer(200, &body, expect));
        println!("{file} [aligned]: {}", describe(&answer_aligned));

        if let Some(short) = stem.strip_prefix("malformed__pbs_adapter_") {
            assert!(
                dir.join(format!("{stem}.reason.txt")).is_file(),
                "{file} has no reason file"
            );
            // An added corpus's malformed answers have no listed outcome: yielding no bid
            // (checked below) is what they must do.
            if testkit::corpus::is_bundled(&path) {
                let want = expectations
                    .remove(short)
                    .unwrap_or_else(|| panic!("{file}: add it to malformed_expectations"));
                assert_eq!(outcome(&answer_aligned), Some(want), "{file}");
            }
            for a in [&answer, &answer_aligned] {
                if let Answer::Bids { accepted, .. } = a {
                    assert!(
                        accepted.is_empty(),
                        "{file}: a malformed answer yielded a bid"
                    );
                }
            }
            continue;
        }

        assert!(
            stem.starts_with("valid__"),
            "{file}: neither valid__ nor malformed__"
        );
        if bids.is_empty() {
            assert!(matches!(answer, Answer::NoBid(NoBidKind::NoBids)), "{file}");
            assert!(
                matches!(answer_aligned, Answer::NoBid(NoBidKind::NoBids)),
                "{file}"
            );
            continue;
        }
        // As the DSP's request was: only our own id and currency are acceptable.
        let answered_id = aligned.id != literal.id;
        let answered_cur = !aligned.currency.eq_ignore_ascii_case(&literal.currency);
        match &answer {
            Answer::Rejected(AnswerRejection::WrongId) => assert!(answered_id, "{file}"),
            Answer::Rejected(AnswerRejection::WrongCurrency) => {
                assert!(!answered_id && answered_cur, "{file}")
            }
            Answer::Bids { .. } => assert!(!answered_id && !answered_cur, "{file}"),
            other => panic!("{file}: {other:?}"),
        }
        // Aligned: every bid of a valid answer is accepted.
        match &answer_aligned {
            Answer::Bids {
                accepted, rejected, ..
            } => {
                assert!(rejected.is_empty(), "{file}: {rejected:?}");
                assert_eq!(accepted.len(), bids.len(), "{file}");
            }
            other => panic!("{file}: {other:?}"),
        }
        check_rewrites(&file, &answer_aligned, &bids);
    }
    assert!(
        expectations.is_empty(),
        "no corpus file for {:?}",
        expectations.keys()
    );
}

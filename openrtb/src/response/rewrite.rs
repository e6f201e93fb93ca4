//! Re-emitting a winning bid: the DSP's bytes with only the price, markup and notice URLs
//! replaced.

use money::CpmMicros;

use super::{is_json_whitespace, Bid};
use crate::json;
use crate::span::Span;

/// The values to change when re-emitting a winning bid. The strings are final text
/// (macros already substituted); they are JSON-escaped on output.
#[derive(Clone, Copy, Debug)]
pub struct BidEdits<'e> {
    /// The clearing price.
    pub price: CpmMicros,
    pub adm: Option<&'e str>,
    pub nurl: Option<&'e str>,
    pub burl: Option<&'e str>,
    pub lurl: Option<&'e str>,
    /// Leave `nurl` out of the bid altogether: when the exchange fires the win notice
    /// itself, a publisher that fired it too would count the win twice. Wins over `nurl`.
    pub drop_nurl: bool,
}

impl Bid<'_> {
    /// Appends the bid object to `out` as sent, except that `price` becomes
    /// `edits.price` and each of `adm`, `nurl`, `burl`, `lurl` given in `edits`
    /// replaces the DSP's value (or is added before the closing brace when the DSP sent
    /// none). Everything else is copied byte for byte.
    pub fn rewrite(&self, edits: &BidEdits<'_>, out: &mut Vec<u8>) {
        #[derive(Clone, Copy)]
        enum Value<'e> {
            Price(CpmMicros),
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
        splices[0] = Some((self.spans.price, Value::Price(edits.price)));
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
                Value::Price(price) => price.write_decimal(out),
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

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use money::{CpmMicros, MAX_CPM};

    use super::super::fixtures::*;
    use super::super::*;

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
                rated: &[],
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
                    price: CpmMicros::new(1_500_000),
                    ..NO_EDITS
                },
                &mut out,
            );
            let want = want.replace(r#""price":1.5"#, r#""price":1.5,"adm":"<a/>""#);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{raw}");
        }
    }

    const NO_EDITS: BidEdits<'static> = BidEdits {
        price: CpmMicros::new(1_000_000),
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
                price: CpmMicros::new(1_234_500),
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
                price: CpmMicros::new(2_000_000),
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
                price: CpmMicros::new(10_000),
                adm: Some("y"),
                ..NO_EDITS
            },
        );
        let body = answer_with(&[&out]);
        let (_, accepted, _) = bids(read(&body));
        let again = &accepted[0];
        assert_eq!(again.price, CpmMicros::new(10_000));
        assert_eq!(text(again.bid.adm).as_deref(), Some("y"));
        assert_eq!(text(again.bid.lurl).as_deref(), Some("l"));
        assert_eq!(again.bid.crid.as_deref(), Some("c"));
        assert_eq!(again.bid.ext.map(RawValue::get), Some(r#"{"a":[]}"#));
    }

    proptest::proptest! {
        #[test]
        fn any_edit_survives_a_rewrite_and_a_re_read(
            adm in proptest::prelude::any::<String>(),
            nurl in proptest::option::of(proptest::prelude::any::<String>()),
            micros in 1..=MAX_CPM.get(),
        ) {
            let bid = r#"{"id":"b","impid":"imp-1","price":1,"adm":"x","ext":{"q":"\u00e9"}}"#;
            let body = answer_with(&[bid]);
            let (_, accepted, _) = bids(read(&body));
            let mut out = Vec::new();
            let edits = BidEdits { price: CpmMicros::new(micros), adm: Some(&adm), nurl: nurl.as_deref(), ..NO_EDITS };
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
            proptest::prop_assert_eq!(again.price, CpmMicros::new(micros));
            proptest::prop_assert_eq!(text(again.bid.adm), Some(adm));
            proptest::prop_assert_eq!(text(again.bid.nurl), nurl);
            proptest::prop_assert_eq!(again.bid.ext.map(RawValue::get), Some(r#"{"q":"\u00e9"}"#));
        }
    }
}

//! The body each DSP receives: the publisher's bytes, with only the exchange-owned
//! top-level fields (`tmax`, `at`, `cur`) rewritten, and, where the exchange must, its own
//! supply-chain node added (`schain`) or the user's identifiers scrubbed (`scrub`).
//!
//! Everything else (unknown fields, every `ext`, whitespace, key order, number spelling)
//! passes through byte for byte, because the output is spliced from the input instead of
//! re-serialised: a scrub, a supply chain or a raised floor rebuilds only the objects it
//! changes (`device`, `user`, `source`, one `imp`) from their members' own bytes (`object`). The splice is prepared once per
//! auction and kind of body; since only `tmax` differs per DSP, rendering is two copies
//! around a formatted integer.

mod floors;
mod object;
pub mod schain;
pub mod scrub;

use crate::request::BidRequest;
use crate::span::Span;

pub use floors::ImpFloor;
pub use schain::Node;
pub use scrub::Scrub;

/// A prepared outbound body. Owns its bytes, so it can be shared across fan-out tasks.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The whole body with `at` and `cur` already set and the `tmax` value cut out.
    bytes: Vec<u8>,
    /// Where the `tmax` value goes; `None` only for a body that is not a JSON object.
    split: Option<usize>,
}

/// One replaced stretch of the publisher's bytes.
#[derive(Clone, Debug)]
pub(crate) struct Edit {
    pub span: Span,
    pub text: Vec<u8>,
}

/// Changes to a body beyond the exchange-owned fields: replaced values of top-level members
/// and whole top-level members added. Splices of different kinds combine with [`Splice::and`]
/// as long as they touch different members, which `scrub` (`device`, `user`) and `schain`
/// (`source`) do.
#[derive(Clone, Debug, Default)]
pub struct Splice {
    pub(crate) edits: Vec<Edit>,
    /// `"key":value` texts inserted after the opening brace.
    pub(crate) members: Vec<Vec<u8>>,
}

impl Splice {
    /// Whether this splice changes nothing.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty() && self.members.is_empty()
    }

    /// Both splices.
    pub fn and(mut self, other: &Splice) -> Splice {
        self.edits.extend(other.edits.iter().cloned());
        self.members.extend(other.members.iter().cloned());
        self
    }
}

/// A body's top-level members, read once per auction when a splice is needed (never on the
/// plain path).
pub struct Document<'b> {
    body: &'b [u8],
    top: Vec<object::Member<'b>>,
}

impl<'b> Document<'b> {
    /// `None` when `body` is not one JSON object, which parsing refuses anyway.
    pub fn read(body: &'b [u8]) -> Option<Document<'b>> {
        Some(Document {
            body,
            top: object::top_level(body)?,
        })
    }

    /// The splice that appends `node` to the supply chain (see [`schain::splice`]).
    pub fn schain(&self, node: Node<'_>) -> Splice {
        schain::splice(self.body, &self.top, node)
    }

    /// The splice that sets each imp of `floors` to its floor in `currency` (see
    /// [`floors`]). Combines with the others: it touches only elements of `imp`.
    pub fn floors(&self, floors: &[ImpFloor], currency: &str) -> Splice {
        Splice {
            edits: floors::edits(self.body, &self.top, floors, currency),
            members: Vec::new(),
        }
    }

    /// The splice that scrubs the body at `level` (see [`Scrub`]).
    pub fn scrub(&self, level: Scrub) -> Splice {
        Splice {
            edits: scrub::edits(self.body, &self.top, level),
            members: Vec::new(),
        }
    }
}

/// The three fields the exchange owns, in the order they are inserted when absent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owned {
    Tmax,
    At,
    Cur,
}

/// What goes in place of a value.
enum Replace<'s> {
    Owned(Owned),
    Text(&'s [u8]),
}

impl Outbound {
    /// Prepares the body for `req`, which must have been parsed from `body`: the values of
    /// `at` and `cur` become `at` and `[cur]`, and `tmax` is left for [`Outbound::render`].
    /// A field the publisher left out is inserted right after the opening `{`.
    pub fn new(body: &[u8], req: &BidRequest<'_>, at: u8, cur: &str) -> Outbound {
        Self::with_splice(body, req, at, cur, &Splice::default())
    }

    /// As [`Outbound::new`], with `splice` applied too. `splice` must come from a
    /// [`Document`] of `body`.
    pub fn with_splice(
        body: &[u8],
        req: &BidRequest<'_>,
        at: u8,
        cur: &str,
        splice: &Splice,
    ) -> Outbound {
        let spans = match located_spans(body, req) {
            Some(spans) => spans,
            // `req` came from other bytes than `body` (a caller bug): find the fields in
            // `body` itself rather than splice at wrong offsets.
            None => reparse_spans(body),
        };
        Self::from_spans(body, spans, at, cur, splice)
    }

    fn from_spans(
        body: &[u8],
        spans: [Option<Span>; 3],
        at: u8,
        cur: &str,
        splice: &Splice,
    ) -> Outbound {
        let mut at_text = itoa::Buffer::new();
        let at_text = at_text.format(at).as_bytes();
        let mut cur_text = Vec::with_capacity(cur.len() + 4);
        cur_text.push(b'[');
        // Writing a &str into a Vec cannot fail; escaping keeps odd configs valid JSON.
        let _ = serde_json::to_writer(&mut cur_text, cur);
        cur_text.push(b']');

        let extra: usize = splice.edits.iter().map(|e| e.text.len()).sum::<usize>()
            + splice.members.iter().map(|m| m.len() + 1).sum::<usize>();
        let mut bytes = Vec::with_capacity(body.len() + 48 + extra);
        let mut split = None;
        let open = body
            .iter()
            .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            .filter(|i| body[*i] == b'{');
        let Some(open) = open else {
            // Not an object: there is nothing to rewrite. Parsing refuses such bodies.
            return Outbound {
                bytes: body.to_vec(),
                split: None,
            };
        };
        bytes.extend_from_slice(&body[..=open]);

        // Insert the absent fields, in a fixed order, right after the brace.
        let mut inserted = false;
        for (field, span) in [Owned::Tmax, Owned::At, Owned::Cur].into_iter().zip(spans) {
            if span.is_some() {
                continue;
            }
            if inserted {
                bytes.push(b',');
            }
            inserted = true;
            match field {
                Owned::Tmax => {
                    bytes.extend_from_slice(b"\"tmax\":");
                    split = Some(bytes.len());
                }
                Owned::At => {
                    bytes.extend_from_slice(b"\"at\":");
                    bytes.extend_from_slice(at_text);
                }
                Owned::Cur => {
                    bytes.extend_from_slice(b"\"cur\":");
                    bytes.extend_from_slice(&cur_text);
                }
            }
        }
        for member in &splice.members {
            if inserted {
                bytes.push(b',');
            }
            inserted = true;
            bytes.extend_from_slice(member);
        }
        let rest = &body[open + 1..];
        let empty_object = rest
            .iter()
            .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            == Some(&b'}');
        if inserted && !empty_object {
            bytes.push(b',');
        }

        // Replace the present values and the splice's, in body order.
        let mut present: Vec<(Span, Replace<'_>)> = [Owned::Tmax, Owned::At, Owned::Cur]
            .into_iter()
            .zip(spans)
            .filter_map(|(field, span)| Some((span?, Replace::Owned(field))))
            .chain(
                splice
                    .edits
                    .iter()
                    .map(|e| (e.span, Replace::Text(&e.text))),
            )
            .filter(|(span, _)| span.start > open && span.end <= body.len())
            .collect();
        present.sort_unstable_by_key(|(span, _)| span.start);
        let mut pos = open + 1;
        for (span, replace) in present {
            if span.start < pos {
                // Values of distinct keys of one object never overlap.
                continue;
            }
            bytes.extend_from_slice(&body[pos..span.start]);
            match replace {
                Replace::Owned(Owned::Tmax) => split = Some(bytes.len()),
                Replace::Owned(Owned::At) => bytes.extend_from_slice(at_text),
                Replace::Owned(Owned::Cur) => bytes.extend_from_slice(&cur_text),
                Replace::Text(text) => bytes.extend_from_slice(text),
            }
            pos = span.end;
        }
        bytes.extend_from_slice(&body[pos..]);
        Outbound { bytes, split }
    }

    /// Appends the body for one DSP, with `tmax` set to `tmax_ms`.
    pub fn render(&self, tmax_ms: u32, out: &mut Vec<u8>) {
        let Some(split) = self.split else {
            out.extend_from_slice(&self.bytes);
            return;
        };
        let mut tmax = itoa::Buffer::new();
        out.reserve(self.len_hint());
        out.extend_from_slice(&self.bytes[..split]);
        out.extend_from_slice(tmax.format(tmax_ms).as_bytes());
        out.extend_from_slice(&self.bytes[split..]);
    }

    /// An upper bound on the length of a rendered body.
    pub fn len_hint(&self) -> usize {
        // u32::MAX has ten digits.
        self.bytes.len() + 10
    }
}

/// The spans of `tmax`, `at` and `cur` recorded while parsing; `None` if any of them does
/// not point into `body`.
fn located_spans(body: &[u8], req: &BidRequest<'_>) -> Option<[Option<Span>; 3]> {
    let span = |raw: Option<&serde_json::value::RawValue>| match raw {
        None => Some(None),
        Some(raw) => Span::of(body, raw).map(Some),
    };
    Some([
        span(req.tmax.as_ref().map(|l| l.raw))?,
        span(req.at.as_ref().map(|l| l.raw))?,
        span(req.cur.as_ref().map(|l| l.raw))?,
    ])
}

fn reparse_spans(body: &[u8]) -> [Option<Span>; 3] {
    #[derive(serde::Deserialize)]
    struct TopLevel<'a> {
        #[serde(borrow)]
        tmax: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        at: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        cur: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_slice::<TopLevel<'_>>(body) {
        Ok(o) => [o.tmax, o.at, o.cur].map(|raw| raw.and_then(|raw| Span::of(body, raw))),
        Err(_) => [None; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse;
    use serde_json::Value;

    fn render(body: &str, tmax: u32, at: u8, cur: &str) -> String {
        let req = parse(body.as_bytes()).unwrap();
        let outbound = Outbound::new(body.as_bytes(), &req, at, cur);
        let mut out = Vec::new();
        outbound.render(tmax, &mut out);
        assert!(out.len() <= outbound.len_hint());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replaces_present_values_in_place() {
        let body =
            r#"{"id":"r","tmax":500,"imp":[{"id":"1","banner":{}}],"at":1,"cur":["EUR","USD"]}"#;
        assert_eq!(
            render(body, 87, 2, "USD"),
            r#"{"id":"r","tmax":87,"imp":[{"id":"1","banner":{}}],"at":2,"cur":["USD"]}"#
        );
    }

    #[test]
    fn inserts_absent_fields_after_the_brace() {
        let body = r#"  {"id":"r","imp":[{"id":"1","banner":{}}]}"#;
        assert_eq!(
            render(body, 120, 1, "USD"),
            r#"  {"tmax":120,"at":1,"cur":["USD"],"id":"r","imp":[{"id":"1","banner":{}}]}"#
        );
        let body = r#"{"cur":["USD"],"id":"r","imp":[{"id":"1","banner":{}}],"tmax":9}"#;
        assert_eq!(
            render(body, 5, 2, "GBP"),
            r#"{"at":2,"cur":["GBP"],"id":"r","imp":[{"id":"1","banner":{}}],"tmax":5}"#
        );
    }

    #[test]
    fn null_values_are_replaced_not_duplicated() {
        let body = r#"{"id":"r","tmax":null,"at":null,"cur":null,"imp":[{"id":"1","banner":{}}]}"#;
        assert_eq!(
            render(body, 7, 2, "USD"),
            r#"{"id":"r","tmax":7,"at":2,"cur":["USD"],"imp":[{"id":"1","banner":{}}]}"#
        );
    }

    #[test]
    fn keeps_every_other_byte_including_spacing_and_escapes() {
        let body = "{ \"id\" : \"a\\u00e9\\\"b\" ,\n\t\"tmax\"\t:\t 1000 ,\"imp\":[ {\"id\":\"1\" , \"banner\":{ }, \"ext\":{\"k\":\"\\/x\\n\"}} ],\r\n \"at\" :2, \"cur\" : [ \"USD\" ] , \"x\": 1.50e+2 }";
        let out = render(body, 42, 1, "EUR");
        let expected = "{ \"id\" : \"a\\u00e9\\\"b\" ,\n\t\"tmax\"\t:\t 42 ,\"imp\":[ {\"id\":\"1\" , \"banner\":{ }, \"ext\":{\"k\":\"\\/x\\n\"}} ],\r\n \"at\" :1, \"cur\" : [\"EUR\"] , \"x\": 1.50e+2 }";
        assert_eq!(out, expected);
    }

    #[test]
    fn renders_each_tmax_from_one_preparation() {
        let body = r#"{"id":"r","imp":[{"id":"1","banner":{}}],"tmax":300}"#;
        let req = parse(body.as_bytes()).unwrap();
        let outbound = Outbound::new(body.as_bytes(), &req, 2, "USD");
        for tmax in [0, 9, 250, u32::MAX] {
            let mut out = b"prefix".to_vec();
            outbound.render(tmax, &mut out);
            let v: Value = serde_json::from_slice(&out[6..]).unwrap();
            assert_eq!(v["tmax"], u64::from(tmax));
            assert_eq!(v["at"], 2);
            assert_eq!(v["cur"], serde_json::json!(["USD"]));
        }
    }

    #[test]
    fn escapes_an_odd_currency() {
        let body = r#"{"id":"r","imp":[{"id":"1","banner":{}}]}"#;
        let out = render(body, 1, 1, "U\"S");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cur"][0], "U\"S");
    }

    #[test]
    fn a_request_from_other_bytes_still_splices_correctly() {
        let parsed_from =
            r#"{"id":"r","imp":[{"id":"1","banner":{}}],"tmax":300,"at":1}"#.to_owned();
        let req = parse(parsed_from.as_bytes()).unwrap();
        let body = r#"{"at":1, "id":"r","imp":[{"id":"1","banner":{}}],"tmax":300}"#;
        let mut out = Vec::new();
        Outbound::new(body.as_bytes(), &req, 2, "USD").render(10, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"cur":["USD"],"at":2, "id":"r","imp":[{"id":"1","banner":{}}],"tmax":10}"#
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_passes_through_untouched() {
        let body = br#" [{"tmax":1}]"#;
        let out = Outbound::from_spans(body, reparse_spans(body), 1, "USD", &Splice::default());
        let mut rendered = Vec::new();
        out.render(5, &mut rendered);
        assert_eq!(rendered, body);
    }

    #[test]
    fn an_empty_object_gets_no_dangling_comma() {
        let spans = reparse_spans(b"{ }");
        let out = Outbound::from_spans(b"{ }", spans, 1, "USD", &Splice::default());
        let mut rendered = Vec::new();
        out.render(5, &mut rendered);
        assert_eq!(rendered, br#"{"tmax":5,"at":1,"cur":["USD"] }"#);
    }
}

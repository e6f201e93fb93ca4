//! The members of a JSON object inside the publisher's bytes, each with where its key and
//! value sit, and rebuilding such an object with some members cut, replaced or added, so an
//! edit touches one object and every other byte of the body is still spliced.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::de::Str;
use crate::span::Span;

/// One `"key": value` of an object, as it sits in the body.
#[derive(Clone, Debug)]
pub(crate) struct Member<'a> {
    pub key: Cow<'a, str>,
    pub raw: &'a RawValue,
    /// From the key's opening quote to the end of the value.
    pub whole: Span,
    /// The value alone.
    pub value: Span,
}

impl Member<'_> {
    /// The value's text.
    pub fn text(&self) -> &str {
        self.raw.get()
    }

    /// Whether the value is a JSON object.
    pub fn is_object(&self) -> bool {
        self.text().starts_with('{')
    }
}

/// The members of the object `text` (a slice of `body`) in order, duplicates included; `None`
/// when `text` is not an object inside `body`.
pub(crate) fn members<'a>(body: &'a [u8], text: &'a str) -> Option<Vec<Member<'a>>> {
    struct Entries<'a>(PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for Entries<'a> {
        type Value = Vec<(Cow<'a, str>, &'a RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
            while let Some((key, value)) = map.next_entry::<Str<'a>, &'a RawValue>()? {
                out.push((key.0, value));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de.deserialize_map(Entries(PhantomData)).ok()?;
    de.end().ok()?;
    entries
        .into_iter()
        .map(|(key, raw)| {
            let value = Span::of(body, raw)?;
            let start = key_start(body, value.start)?;
            Some(Member {
                key,
                raw,
                whole: Span {
                    start,
                    end: value.end,
                },
                value,
            })
        })
        .collect()
}

/// Where the key of the value starting at `value_start` opens: back over the `:`, the
/// blanks around it, and the key's string, whose opening quote is the first `"` not escaped.
fn key_start(body: &[u8], value_start: usize) -> Option<usize> {
    let blank = |b: &u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    let before = &body[..value_start];
    let colon = before.iter().rposition(|b| !blank(b))?;
    (before[colon] == b':').then_some(())?;
    let close = before[..colon].iter().rposition(|b| !blank(b))?;
    (before[close] == b'"').then_some(())?;
    let mut i = close;
    loop {
        i = before[..i].iter().rposition(|b| *b == b'"')?;
        let backslashes = before[..i]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(i);
        }
    }
}

/// What becomes of one member when its object is rebuilt.
pub(crate) enum Keep {
    /// Copied byte for byte.
    As,
    /// Left out.
    Drop,
    /// The key copied, the value replaced by this JSON text.
    Value(Vec<u8>),
}

/// Writes the object made of `members` (each as `decide` says) followed by `added` (whole
/// `"key":value` texts). Members keep their bytes; only the blanks between them change.
/// Returns whether anything differs from copying every member.
pub(crate) fn rebuild(
    out: &mut Vec<u8>,
    body: &[u8],
    members: &[Member<'_>],
    added: &[Vec<u8>],
    mut decide: impl FnMut(&Member<'_>) -> Keep,
) -> bool {
    let mut changed = !added.is_empty();
    let mut first = true;
    out.push(b'{');
    let mut comma = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for m in members {
        match decide(m) {
            Keep::As => {
                comma(out);
                out.extend_from_slice(&body[m.whole.start..m.whole.end]);
            }
            Keep::Drop => changed = true,
            Keep::Value(text) => {
                comma(out);
                out.extend_from_slice(&body[m.whole.start..m.value.start]);
                out.extend_from_slice(&text);
                changed = true;
            }
        }
    }
    for text in added {
        comma(out);
        out.extend_from_slice(text);
    }
    out.push(b'}');
    changed
}

/// The members of the whole body, which parsing already proved to be one JSON object.
pub(crate) fn top_level(body: &[u8]) -> Option<Vec<Member<'_>>> {
    members(
        body,
        std::str::from_utf8(body)
            .ok()?
            .trim_matches([' ', '\n', '\r', '\t']),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &[u8], s: Span) -> &str {
        std::str::from_utf8(&body[s.start..s.end]).unwrap()
    }

    #[test]
    fn members_locate_keys_and_values_even_with_escapes_and_duplicates() {
        let body = br#" {"a" : 1, "k\"\\" :{"x":[1]},"\u0062":"s","a":null} "#;
        let m = top_level(body).unwrap();
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_ref()).collect();
        assert_eq!(keys, ["a", "k\"\\", "b", "a"]);
        assert_eq!(text(body, m[0].whole), r#""a" : 1"#);
        assert_eq!(text(body, m[1].whole), r#""k\"\\" :{"x":[1]}"#);
        assert_eq!(text(body, m[1].value), r#"{"x":[1]}"#);
        assert_eq!(text(body, m[2].whole), r#""\u0062":"s""#);
        assert!(m[1].is_object() && !m[3].is_object());
    }

    #[test]
    fn rebuild_cuts_replaces_and_adds() {
        let body = br#"{"a":1, "b" : 2,"c":{"d":3}}"#;
        let m = top_level(body).unwrap();
        let mut out = Vec::new();
        let changed = rebuild(&mut out, body, &m, &[br#""e":5"#.to_vec()], |m| {
            match m.key.as_ref() {
                "a" => Keep::Drop,
                "c" => Keep::Value(b"0".to_vec()),
                _ => Keep::As,
            }
        });
        assert!(changed);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"b" : 2,"c":0,"e":5}"#
        );
        let mut out = Vec::new();
        assert!(!rebuild(&mut out, body, &m, &[], |_| Keep::As));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a":1,"b" : 2,"c":{"d":3}}"#
        );
        let mut out = Vec::new();
        rebuild(&mut out, body, &m, &[], |_| Keep::Drop);
        assert_eq!(out, b"{}");
    }

    #[test]
    fn not_an_object_has_no_members() {
        assert!(top_level(b"[1]").is_none());
        assert!(top_level(b"{\"a\":1} x").is_none());
    }
}

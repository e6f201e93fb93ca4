//! Hand-written JSON for the hot path: escaped strings going out, and string values
//! coming in that are only decoded when someone needs them.
//!
//! The exchange builds its answers by splicing the bytes DSPs sent, so it only ever
//! needs to *write* two kinds of JSON values itself: strings (substituted markup and
//! notice URLs) and prices. Going through `serde_json::Value` for that would allocate
//! a tree per bid; [`write_str`] appends straight into the output buffer. Prices are
//! [`money::CpmMicros`], written by [`money::CpmMicros::write_decimal`].

use std::borrow::Cow;

/// Appends `s` as a quoted JSON string, escaping what RFC 8259 requires.
///
/// Only `"`, `\` and control characters are escaped; everything else, including
/// non-ASCII text, is copied as UTF-8. Runs of plain bytes are copied in one go.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// A JSON string value exactly as it appeared in a parsed document, quotes and escapes
/// included, decoded only on demand.
///
/// Ad markup is the bulk of a DSP's answer and usually full of escapes (`\"` in HTML,
/// `\u003c` from Go encoders); only the winners' markup is ever needed, so losing bids
/// never pay for decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonStr<'a>(&'a str);

impl<'a> JsonStr<'a> {
    /// Wraps a string literal (`"..."`) taken from a document serde_json already
    /// validated; `None` when `literal` is not a string literal.
    pub(crate) fn from_literal(literal: &'a str) -> Option<Self> {
        let quoted = literal.len() >= 2 && literal.starts_with('"') && literal.ends_with('"');
        quoted.then_some(JsonStr(literal))
    }

    /// The literal as sent: quotes and escapes included.
    pub fn raw(&self) -> &'a str {
        self.0
    }

    /// Whether the decoded string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 2
    }

    /// The decoded string, borrowed from the document when it holds no escape.
    pub fn decode(&self) -> Cow<'a, str> {
        unescape(&self.0[1..self.0.len() - 1])
    }
}

/// Decodes the escapes of a JSON string's content. The content was validated by
/// serde_json, so every escape is well formed; a lone UTF-16 surrogate (which JSON's
/// grammar lets through) becomes U+FFFD rather than an error.
fn unescape(content: &str) -> Cow<'_, str> {
    let Some(first) = content.find('\\') else {
        return Cow::Borrowed(content);
    };
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    let mut at = first;
    loop {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let (decoded, len) = match escape.as_bytes().get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => unicode_escape(escape),
            // Unreachable for validated input; keeping the backslash loses nothing.
            _ => ('\\', 1),
        };
        out.push(decoded);
        rest = &escape[len..];
        match rest.find('\\') {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes `\uXXXX` (or a `\uXXXX\uXXXX` surrogate pair) at the start of `escape`,
/// returning the character and how many bytes it took.
fn unicode_escape(escape: &str) -> (char, usize) {
    let hex = |range: std::ops::Range<usize>| {
        escape
            .get(range)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let Some(unit) = hex(2..6) else {
        return ('\\', 1);
    };
    if (0xD800..0xDC00).contains(&unit) && escape.get(6..8) == Some("\\u") {
        if let Some(low @ 0xDC00..=0xDFFF) = hex(8..12) {
            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return (
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER),
                12,
            );
        }
    }
    (
        char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
        6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_what_json_requires_and_nothing_else() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("plain text"), r#""plain text""#);
        assert_eq!(quoted(r#"a "quoted" \ path"#), r#""a \"quoted\" \\ path""#);
        assert_eq!(quoted("l1\nl2\r\t\u{8}\u{c}"), r#""l1\nl2\r\t\b\f""#);
        assert_eq!(quoted("\u{0}\u{1f}"), r#""\u0000\u001f""#);
        assert_eq!(
            quoted("<a href='/x'>é ☃ 😀</a>"),
            "\"<a href='/x'>é ☃ 😀</a>\""
        );
    }

    fn literal(text: &str) -> JsonStr<'_> {
        JsonStr::from_literal(text).unwrap()
    }

    #[test]
    fn string_values_decode_on_demand() {
        assert!(JsonStr::from_literal("x").is_none());
        assert!(JsonStr::from_literal("\"").is_none());
        assert!(JsonStr::from_literal("12").is_none());
        assert!(literal(r#""""#).is_empty());
        assert!(!literal(r#"" ""#).is_empty());
        assert!(matches!(
            literal(r#""<a href='x'>""#).decode(),
            Cow::Borrowed("<a href='x'>")
        ));
        assert_eq!(
            literal(r#""a\"b\\c\/d\b\f\n\r\te""#).decode(),
            "a\"b\\c/d\u{8}\u{c}\n\r\te"
        );
        assert_eq!(literal(r#""\u003cp\u003e\u00e9\u2603""#).decode(), "<p>é☃");
        assert_eq!(literal(r#""\ud83d\ude00!""#).decode(), "😀!");
        assert_eq!(
            literal(r#""\ud83d""#).decode(),
            "\u{fffd}",
            "lone high surrogate"
        );
        assert_eq!(
            literal(r#""\ude00x""#).decode(),
            "\u{fffd}x",
            "lone low surrogate"
        );
        assert_eq!(
            literal(r#""\ud83d\u0041""#).decode(),
            "\u{fffd}A",
            "high surrogate then non-low"
        );
        assert_eq!(literal(r#""é\n""#).raw(), r#""é\n""#);
    }

    /// Escapes every character as `\uXXXX` (surrogate pairs above the BMP), the way
    /// ASCII-only encoders do.
    fn escape_all(s: &str) -> String {
        let mut out = String::from("\"");
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn decoding_agrees_with_serde(s in any::<String>()) {
            let plain = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(literal(&plain).decode(), s.as_str());
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            prop_assert_eq!(literal(std::str::from_utf8(&ours).unwrap()).decode(), s.as_str());
            let escaped = escape_all(&s);
            prop_assert_eq!(serde_json::from_str::<String>(&escaped).unwrap(), s.clone());
            prop_assert_eq!(literal(&escaped).decode(), s.as_str());
        }

        #[test]
        fn any_string_round_trips_through_serde(s in any::<String>()) {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}

//! Hand-written JSON for the hot path: escaped strings and CPM prices going out, and
//! string values coming in that are only decoded when someone needs them.
//!
//! The exchange builds its answers by splicing the bytes DSPs sent, so it only ever
//! needs to *write* two kinds of JSON values itself: strings (substituted markup and
//! notice URLs) and prices. Going through `serde_json::Value` for that would allocate
//! a tree per bid; these writers append straight into the output buffer.
//!
//! Prices travel as integer CPM micros everywhere inside the exchange. They become
//! floats only here, at the JSON edge, and they are written as exact decimals
//! (`1_500_000` -> `1.5`) rather than through a float formatter, so the number a DSP
//! reads back is exactly the number we charged.

use std::borrow::Cow;

/// The largest CPM we accept from a DSP, in micros: 1,000,000 CPM.
///
/// No real bid is anywhere near this in any currency (even in currencies where one US
/// dollar is worth tens of thousands of units), while a typo or a unit mix-up (a price
/// sent in micros, say) lands far above it.
pub const MAX_CPM_MICROS: u64 = 1_000_000 * MICROS_PER_UNIT;

/// Micros in one currency unit.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

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

/// Appends a CPM price given in micros as the shortest exact decimal:
/// `1_500_000` -> `1.5`, `2_000_000` -> `2`, `10_000` -> `0.01`.
pub fn write_cpm(out: &mut Vec<u8>, cpm_micros: u64) {
    let mut buf = [0u8; CPM_BUF];
    out.extend_from_slice(cpm_digits(cpm_micros, &mut buf).as_bytes());
}

/// Like [`write_cpm`], appending to a `String` (macro values are built as text).
pub fn push_cpm(out: &mut String, cpm_micros: u64) {
    let mut buf = [0u8; CPM_BUF];
    out.push_str(cpm_digits(cpm_micros, &mut buf));
}

/// A CPM price in micros as the shortest exact decimal, see [`write_cpm`].
pub fn format_cpm(cpm_micros: u64) -> String {
    let mut buf = [0u8; CPM_BUF];
    cpm_digits(cpm_micros, &mut buf).to_owned()
}

/// A DSP's CPM price as integer micros, rounded to the nearest micro.
///
/// `None` when the price cannot be a bid: not finite, not positive, so small that it
/// rounds to zero micros, or above [`MAX_CPM_MICROS`]. The float comes straight from
/// the DSP's JSON; this is the one place it is turned into money.
pub fn cpm_to_micros(price: f64) -> Option<u64> {
    if !price.is_finite() || price <= 0.0 {
        return None;
    }
    let micros = (price * MICROS_PER_UNIT as f64).round();
    // Comparing as floats before casting keeps the cast exact: every value that passes
    // is an integer below 2^53.
    if micros < 1.0 || micros > MAX_CPM_MICROS as f64 {
        return None;
    }
    Some(micros as u64)
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

/// `u64::MAX` micros is 20 integer digits, a point and 6 decimals: 27 bytes.
const CPM_BUF: usize = 32;

fn cpm_digits(cpm_micros: u64, buf: &mut [u8; CPM_BUF]) -> &str {
    let units = cpm_micros / MICROS_PER_UNIT;
    let mut frac = cpm_micros % MICROS_PER_UNIT;
    let mut itoa_buf = itoa::Buffer::new();
    let int_digits = itoa_buf.format(units).as_bytes();
    let mut len = int_digits.len();
    buf[..len].copy_from_slice(int_digits);
    if frac != 0 {
        buf[len] = b'.';
        for slot in buf[len + 1..len + 7].iter_mut().rev() {
            // `frac % 10` is a single digit, so the cast cannot truncate.
            *slot = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += 7;
        // The fraction was not zero, so this stops at a nonzero digit before the point.
        while buf[len - 1] == b'0' {
            len -= 1;
        }
    }
    // Only ASCII digits and '.' were written.
    std::str::from_utf8(&buf[..len]).unwrap_or("0")
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

    #[test]
    fn cpm_is_the_shortest_exact_decimal() {
        for (micros, text) in [
            (1_500_000, "1.5"),
            (1_234_567, "1.234567"),
            (2_000_000, "2"),
            (10_000, "0.01"),
            (1, "0.000001"),
            (0, "0"),
            (100_000_000, "100"),
            (1_000_100, "1.0001"),
            (u64::MAX, "18446744073709.551615"),
        ] {
            assert_eq!(format_cpm(micros), text, "{micros}");
            let mut bytes = Vec::new();
            write_cpm(&mut bytes, micros);
            assert_eq!(bytes, text.as_bytes());
            let mut s = String::from("p=");
            push_cpm(&mut s, micros);
            assert_eq!(s, format!("p={text}"));
        }
    }

    #[test]
    fn prices_round_to_the_nearest_micro() {
        assert_eq!(cpm_to_micros(1.5), Some(1_500_000));
        assert_eq!(cpm_to_micros(1.028428), Some(1_028_428));
        assert_eq!(cpm_to_micros(0.1 + 0.2), Some(300_000));
        assert_eq!(cpm_to_micros(15.64434783), Some(15_644_348));
        assert_eq!(cpm_to_micros(0.0000004), None, "rounds to zero micros");
        assert_eq!(cpm_to_micros(0.0000005), Some(1));
        assert_eq!(cpm_to_micros(1_000_000.0), Some(MAX_CPM_MICROS));
        assert_eq!(cpm_to_micros(1_000_000.1), None);
        assert_eq!(cpm_to_micros(0.0), None);
        assert_eq!(cpm_to_micros(-0.0), None);
        assert_eq!(cpm_to_micros(-1.0), None);
        assert_eq!(cpm_to_micros(f64::NAN), None);
        assert_eq!(cpm_to_micros(f64::INFINITY), None);
        assert_eq!(cpm_to_micros(1e300), None);
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

        #[test]
        fn written_prices_read_back_as_the_same_micros(micros in 1..=MAX_CPM_MICROS) {
            let text = format_cpm(micros);
            let price: f64 = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(cpm_to_micros(price), Some(micros));
        }
    }
}

//! OpenRTB 2.6 §4.4 substitution macros (`${AUCTION_PRICE}` and friends) in markup and
//! notice URLs.
//!
//! Substitution is one left-to-right pass with no regex and no backtracking:
//!
//! - a recognised macro is replaced by its value, or by the empty string when the value
//!   is unknown (the spec: "the macro will simply be removed");
//! - an unrecognised `${NAME}` is copied as is: it may be the DSP's own macro, meant for
//!   a later hop. That includes the spec's encoded form `${AUCTION_PRICE:B64}`, since we
//!   agree no encodings with DSPs;
//! - a `${` without its closing brace is copied verbatim.
//!
//! Values are inserted raw into markup (`adm`), as the spec prescribes ("simple
//! substitution, without regard for syntax correctness"): the markup's author put the
//! macro there and knows its context, and escaping for one context (HTML attribute,
//! JavaScript string, VAST CDATA, URL inside any of those) would be wrong in the others.
//! In notice URLs (`nurl`, `burl`, `lurl`) the exchange itself makes the HTTP call, so
//! values are percent-encoded there ([`substitute_url`]): ids come from publishers and
//! DSPs and may hold `&`, `#`, spaces or worse, which would otherwise change the URL's
//! structure. Prices, codes and timestamps are plain ASCII digits either way.

use std::borrow::Cow;
use std::fmt::Write as _;

use money::CpmMicros;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What the exchange knows when it substitutes macros for one bid. `None` means "not
/// known or not disclosed" and substitutes the empty string.
#[derive(Clone, Copy, Debug, Default)]
pub struct MacroValues<'a> {
    /// `${AUCTION_ID}`: the publisher's `BidRequest.id`.
    pub auction_id: Option<&'a str>,
    /// `${AUCTION_BID_ID}`: the DSP's `BidResponse.bidid` (the spec's source), falling
    /// back to `bid.id` is the caller's choice.
    pub bid_id: Option<&'a str>,
    /// `${AUCTION_IMP_ID}`: the `imp.id` the bid was for.
    pub imp_id: Option<&'a str>,
    /// `${AUCTION_SEAT_ID}`: `SeatBid.seat`.
    pub seat_id: Option<&'a str>,
    /// `${AUCTION_AD_ID}`: `bid.adid`.
    pub ad_id: Option<&'a str>,
    /// `${AUCTION_PRICE}`: the clearing price (CPM) in the bid's currency. Leave it `None`
    /// in loss notices unless clearing prices are disclosed to losing bidders.
    pub price: Option<CpmMicros>,
    /// `${AUCTION_CURRENCY}`: the bid's currency (explicit or implied USD).
    pub currency: Option<&'a str>,
    /// `${AUCTION_LOSS}`: the OpenRTB loss reason code (0 = won).
    pub loss: Option<u16>,
    /// `${AUCTION_MIN_TO_WIN}`: a CPM, see OpenRTB 2.6 §4.4.1.
    pub min_to_win: Option<CpmMicros>,
    /// `${AUCTION_MULTIPLIER}`: DOOH impression multiplier, as the decimal text to send.
    pub multiplier: Option<&'a str>,
    /// `${AUCTION_IMP_TS}`: when the impression was fulfilled, Unix milliseconds.
    pub imp_ts_ms: Option<u64>,
}

/// Substitutes macros in markup (`adm`), inserting values raw. See the module docs.
pub fn substitute(template: &str, values: &MacroValues<'_>, out: &mut String) {
    run(template, values, Target::Markup, out);
}

/// Substitutes macros in a notice URL (`nurl`, `burl`, `lurl`), percent-encoding every
/// value byte outside RFC 3986's unreserved set.
pub fn substitute_url(template: &str, values: &MacroValues<'_>, out: &mut String) {
    run(template, values, Target::Url, out);
}

/// [`substitute`] into a new string, or the template itself when it holds no `${`.
pub fn expand<'t>(template: &'t str, values: &MacroValues<'_>) -> Cow<'t, str> {
    expand_for(template, values, Target::Markup)
}

/// [`substitute_url`] into a new string, or the template itself when it holds no `${`.
pub fn expand_url<'t>(template: &'t str, values: &MacroValues<'_>) -> Cow<'t, str> {
    expand_for(template, values, Target::Url)
}

#[derive(Clone, Copy)]
enum Target {
    Markup,
    Url,
}

fn expand_for<'t>(template: &'t str, values: &MacroValues<'_>, target: Target) -> Cow<'t, str> {
    if !template.contains("${") {
        return Cow::Borrowed(template);
    }
    let mut out = String::with_capacity(template.len() + 32);
    run(template, values, target, &mut out);
    Cow::Owned(out)
}

fn run(template: &str, values: &MacroValues<'_>, target: Target, out: &mut String) {
    out.reserve(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("${") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        // Macro names are `[A-Z0-9_]`; `:` admits the spec's `${NAME:ENC}` form so that
        // it is recognised as one (unknown) token and copied whole.
        let name_len = after
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
            .unwrap_or(after.len());
        if after.as_bytes().get(name_len) != Some(&b'}') {
            // Not a macro: keep the `${` and whatever followed; a `${` further on is
            // still looked at, since the scan resumes right after this one.
            out.push_str("${");
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        if !write_value(name, values, target, out) {
            out.push_str("${");
            out.push_str(name);
            out.push('}');
        }
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
}

/// Writes the value of macro `name`; `false` when `name` is not an OpenRTB macro.
fn write_value(name: &str, v: &MacroValues<'_>, target: Target, out: &mut String) -> bool {
    let text = match name {
        "AUCTION_ID" => v.auction_id,
        "AUCTION_BID_ID" => v.bid_id,
        "AUCTION_IMP_ID" => v.imp_id,
        "AUCTION_SEAT_ID" => v.seat_id,
        "AUCTION_AD_ID" => v.ad_id,
        "AUCTION_CURRENCY" => v.currency,
        "AUCTION_MULTIPLIER" => v.multiplier,
        // The market bid ratio would tell every DSP how far above the clearing price it
        // bid; the exchange does not disclose it, which the spec allows.
        "AUCTION_MBR" => None,
        "AUCTION_PRICE" => {
            push_price(v.price, out);
            return true;
        }
        "AUCTION_MIN_TO_WIN" => {
            push_price(v.min_to_win, out);
            return true;
        }
        "AUCTION_LOSS" => {
            if let Some(code) = v.loss {
                out.push_str(itoa::Buffer::new().format(code));
            }
            return true;
        }
        "AUCTION_IMP_TS" => {
            if let Some(ts) = v.imp_ts_ms {
                out.push_str(itoa::Buffer::new().format(ts));
            }
            return true;
        }
        _ => return false,
    };
    if let Some(text) = text {
        match target {
            Target::Markup => out.push_str(text),
            Target::Url => percent_encode(text, out),
        }
    }
    true
}

/// Digits and '.' only, so nothing to encode in either target.
fn push_price(price: Option<CpmMicros>, out: &mut String) {
    if let Some(price) = price {
        // Writing into a `String` cannot fail.
        let _ = write!(out, "{price}");
    }
}

/// RFC 3986's unreserved characters stay as they are; every other byte is encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(text: &str, out: &mut String) {
    for chunk in utf8_percent_encode(text, NOT_UNRESERVED) {
        out.push_str(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> MacroValues<'static> {
        MacroValues {
            auction_id: Some("req-1"),
            bid_id: Some("bidresp-9"),
            imp_id: Some("imp-2"),
            seat_id: Some("seat-3"),
            ad_id: Some("ad-4"),
            price: Some(CpmMicros::new(1_234_500)),
            currency: Some("USD"),
            loss: Some(102),
            min_to_win: Some(CpmMicros::new(1_000_000)),
            multiplier: Some("2.5"),
            imp_ts_ms: Some(1_700_000_000_123),
        }
    }

    fn markup(template: &str, values: &MacroValues<'_>) -> String {
        let mut out = String::new();
        substitute(template, values, &mut out);
        out
    }

    fn url(template: &str, values: &MacroValues<'_>) -> String {
        let mut out = String::new();
        substitute_url(template, values, &mut out);
        out
    }

    #[test]
    fn every_macro_is_substituted() {
        let t = "a=${AUCTION_ID}&b=${AUCTION_BID_ID}&i=${AUCTION_IMP_ID}&s=${AUCTION_SEAT_ID}\
                 &ad=${AUCTION_AD_ID}&p=${AUCTION_PRICE}&c=${AUCTION_CURRENCY}&m=${AUCTION_MBR}\
                 &l=${AUCTION_LOSS}&w=${AUCTION_MIN_TO_WIN}&x=${AUCTION_MULTIPLIER}&t=${AUCTION_IMP_TS}";
        assert_eq!(
            markup(t, &all()),
            "a=req-1&b=bidresp-9&i=imp-2&s=seat-3&ad=ad-4&p=1.2345&c=USD&m=&l=102&w=1\
             &x=2.5&t=1700000000123"
        );
    }

    #[test]
    fn unknown_values_become_empty() {
        let t = "${AUCTION_ID}|${AUCTION_PRICE}|${AUCTION_LOSS}|${AUCTION_MIN_TO_WIN}|${AUCTION_IMP_TS}|${AUCTION_SEAT_ID}";
        assert_eq!(markup(t, &MacroValues::default()), "|||||");
    }

    #[test]
    fn foreign_and_broken_macros_are_left_alone() {
        let v = all();
        assert_eq!(markup("${DSP_CLICK}x", &v), "${DSP_CLICK}x");
        assert_eq!(markup("${AUCTION_PRICE:B64}", &v), "${AUCTION_PRICE:B64}");
        assert_eq!(markup("${auction_price}", &v), "${auction_price}");
        assert_eq!(markup("p=${AUCTION_PRICE", &v), "p=${AUCTION_PRICE");
        assert_eq!(markup("tail ${", &v), "tail ${");
        assert_eq!(markup("$$ {AUCTION_ID} $", &v), "$$ {AUCTION_ID} $");
        assert_eq!(markup("${}", &v), "${}");
        assert_eq!(markup("${A B}", &v), "${A B}");
        // A broken opener does not swallow the real macro right after it.
        assert_eq!(markup("${${AUCTION_ID}", &v), "${req-1");
        assert_eq!(
            markup("${AUCTION_ID${AUCTION_IMP_ID}}", &v),
            "${AUCTION_IDimp-2}"
        );
    }

    #[test]
    fn text_around_macros_is_kept_byte_for_byte() {
        let v = all();
        assert_eq!(markup("", &v), "");
        assert_eq!(
            markup("é${AUCTION_ID}☃${AUCTION_ID}😀", &v),
            "éreq-1☃req-1😀"
        );
        assert_eq!(markup("${AUCTION_ID}${AUCTION_ID}", &v), "req-1req-1");
    }

    #[test]
    fn url_values_are_percent_encoded_but_markup_values_are_not() {
        let v = MacroValues {
            auction_id: Some("a b&c=d/é#"),
            price: Some(CpmMicros::new(500_000)),
            ..MacroValues::default()
        };
        let t = "https://dsp.example/win?id=${AUCTION_ID}&p=${AUCTION_PRICE}";
        assert_eq!(
            url(t, &v),
            "https://dsp.example/win?id=a%20b%26c%3Dd%2F%C3%A9%23&p=0.5"
        );
        assert_eq!(markup(t, &v), "https://dsp.example/win?id=a b&c=d/é#&p=0.5");
        assert_eq!(
            url(
                "${AUCTION_ID}",
                &MacroValues {
                    auction_id: Some("Az09-._~"),
                    ..v
                }
            ),
            "Az09-._~"
        );
    }

    #[test]
    fn expand_borrows_when_there_is_nothing_to_do() {
        let v = all();
        assert!(matches!(
            expand("no macros $ here {}", &v),
            Cow::Borrowed(_)
        ));
        assert!(matches!(expand_url("https://x/?a=1", &v), Cow::Borrowed(_)));
        assert_eq!(expand("p=${AUCTION_PRICE}", &v), "p=1.2345");
        assert_eq!(expand_url("i=${AUCTION_SEAT_ID}", &v), "i=seat-3");
    }
}

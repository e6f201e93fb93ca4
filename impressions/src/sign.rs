//! Signed tracking URLs: the HMAC-SHA256 over every field that matters for billing, the URL
//! encoding of those fields, and their verification. Pure: time is an argument.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Error;

type HmacSha256 = Hmac<Sha256>;

/// Bound into every MAC so that a signature made for another purpose (or another version of
/// this encoding) with the same key never verifies here.
const DOMAIN: &[u8] = b"exchange-tracking/v1\0";

/// The secret tracking URLs are signed with. `Debug` never shows it and it has no `Display`,
/// so it cannot reach a log line by accident.
#[derive(Clone)]
pub struct TrackingKey {
    bytes: Box<[u8]>,
}

impl TrackingKey {
    /// Shortest secret accepted: below 128 bits an HMAC key can be searched for.
    pub const MIN_LEN: usize = 16;

    /// A key from raw secret bytes (at least [`Self::MIN_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::Config(format!(
                "tracking secret must be at least {} bytes",
                Self::MIN_LEN
            )));
        }
        Ok(Self {
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// A key from a secret as written in a config file or an environment variable; the
    /// string's bytes are the key.
    pub fn from_secret(secret: &str) -> Result<Self, Error> {
        Self::new(secret.as_bytes().to_vec())
    }

    /// The key in environment variable `var`, if set.
    pub fn from_env(var: &str) -> Result<Option<Self>, Error> {
        match std::env::var(var) {
            Ok(secret) => Self::from_secret(&secret).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Config(format!("{var} is not valid UTF-8")))
            }
        }
    }

    /// A fresh 256-bit key from the thread CSPRNG: the embedded default, valid for one process
    /// only (URLs signed before a restart stop verifying, so multi-node or restarting setups
    /// must configure a shared secret).
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self {
            bytes: Box::new(bytes),
        }
    }

    fn mac(&self) -> HmacSha256 {
        match HmacSha256::new_from_slice(&self.bytes) {
            Ok(mac) => mac,
            // HMAC accepts keys of any length (long ones are hashed first), so this arm is
            // unreachable; it is spelled out rather than unwrapped to keep the crate panic-free.
            Err(_) => HmacSha256::new(&Default::default()),
        }
    }
}

impl fmt::Debug for TrackingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrackingKey(<redacted>)")
    }
}

/// Which endpoint a URL belongs to. Part of the MAC, so an impression URL can never be
/// replayed as a click or the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Impression,
    Click,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Impression => "imp",
            Kind::Click => "click",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Kind::Impression => 1,
            Kind::Click => 2,
        }
    }
}

/// The billing identity of one winning bid: everything an impression or click is billed on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRef {
    /// The BidRequest `id`.
    pub auction_id: String,
    pub imp_id: String,
    pub bid_id: String,
    pub dsp: String,
    pub seat: String,
    pub campaign: String,
    pub creative_id: String,
    /// Clearing price, CPM micros (what `${AUCTION_PRICE}` was substituted with).
    pub price_micros: u64,
    pub currency: String,
    /// When the auction ran, ms since the Unix epoch.
    pub auction_ts_ms: u64,
}

/// What a tracking URL carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingData {
    pub bid: BidRef,
    pub kind: Kind,
    /// Click URLs only: where the click redirects to. Signed, so it is never an address an
    /// attacker chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing: Option<String>,
    /// Impression URLs only: the DSP's own billing notice URL (macros already substituted),
    /// fired by the exchange once the impression is billed. Signed, so the exchange can never
    /// be made to call an address an attacker chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burl: Option<String>,
}

impl TrackingData {
    pub fn impression(bid: BidRef, burl: Option<String>) -> Self {
        Self {
            bid,
            kind: Kind::Impression,
            landing: None,
            burl,
        }
    }

    pub fn click(bid: BidRef, landing: String) -> Self {
        Self {
            bid,
            kind: Kind::Click,
            landing: Some(landing),
            burl: None,
        }
    }
}

/// How long a signed URL stays valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Age past the auction time after which a URL is expired. Default 1 hour.
    pub window_ms: u64,
    /// How far an auction time may lie in the future of the verifying node's clock (nodes'
    /// clocks differ). Default 30 s.
    pub max_skew_ms: u64,
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            window_ms: 3_600_000,
            max_skew_ms: 30_000,
        }
    }
}

/// Why a tracking URL was refused (the endpoint answers 403 and bills nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    MissingSignature,
    /// The MAC does not match: a field or the signature was changed or truncated.
    BadSignature,
    /// A field is missing, repeated, badly encoded or out of range.
    Malformed,
    /// A valid URL for the other endpoint.
    WrongKind,
    Expired,
    /// The auction time lies further in the future than clock skew explains.
    NotYetValid,
}

impl Rejection {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::Malformed => "malformed",
            Rejection::WrongKind => "wrong_kind",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `url` may be a click landing page: an absolute http(s) URL of printable ASCII only,
/// so the redirect can never become `javascript:`, a header injection or a relative path.
pub fn is_valid_landing(url: &str) -> bool {
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"));
    matches!(rest, Some(host) if !host.is_empty() && !host.starts_with('/'))
        && url.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The impression URL for `bid`: `base_url` (e.g. `https://x.example/event/imp`) with the
/// signed fields as query parameters.
pub fn impression_url(
    base_url: &str,
    bid: &BidRef,
    burl: Option<&str>,
    key: &TrackingKey,
) -> String {
    let data = TrackingData::impression(bid.clone(), burl.map(str::to_owned));
    encode(base_url, &data, key)
}

/// The click URL for `bid` redirecting to `landing`; refused for a landing that is not an
/// absolute http(s) URL.
pub fn click_url(
    base_url: &str,
    bid: &BidRef,
    landing: &str,
    key: &TrackingKey,
) -> Result<String, Error> {
    if !is_valid_landing(landing) {
        return Err(Error::Config(
            "click landing must be an absolute http(s) URL".into(),
        ));
    }
    let data = TrackingData::click(bid.clone(), landing.to_owned());
    Ok(encode(base_url, &data, key))
}

/// `base_url` with `data` and its signature as query parameters.
pub fn encode(base_url: &str, data: &TrackingData, key: &TrackingKey) -> String {
    let b = &data.bid;
    let mut out = String::with_capacity(base_url.len() + 256);
    out.push_str(base_url);
    out.push(if base_url.contains('?') { '&' } else { '?' });
    let price = b.price_micros.to_string();
    let ts = b.auction_ts_ms.to_string();
    let fields: [(&str, &str); 11] = [
        ("a", &b.auction_id),
        ("i", &b.imp_id),
        ("b", &b.bid_id),
        ("d", &b.dsp),
        ("s", &b.seat),
        ("c", &b.campaign),
        ("cr", &b.creative_id),
        ("p", &price),
        ("cur", &b.currency),
        ("t", &ts),
        ("k", data.kind.as_str()),
    ];
    for (name, value) in fields {
        push_param(&mut out, name, value);
    }
    if let Some(landing) = &data.landing {
        push_param(&mut out, "l", landing);
    }
    if let Some(burl) = &data.burl {
        push_param(&mut out, "u", burl);
    }
    out.push_str("sig=");
    out.push_str(&base64url(&sign(data, key)));
    out
}

fn push_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('=');
    percent_encode_into(out, value);
    out.push('&');
}

/// The MAC over a canonical encoding: a domain tag, then every field in a fixed order, strings
/// length-prefixed and numbers fixed-width, so no byte can move from one field to another
/// without changing the MAC.
fn sign(data: &TrackingData, key: &TrackingKey) -> [u8; 32] {
    let mut mac = key.mac();
    feed(&mut mac, data);
    mac.finalize().into_bytes().into()
}

fn feed(mac: &mut HmacSha256, data: &TrackingData) {
    let b = &data.bid;
    mac.update(DOMAIN);
    mac.update(&[data.kind.tag()]);
    for s in [
        &b.auction_id,
        &b.imp_id,
        &b.bid_id,
        &b.dsp,
        &b.seat,
        &b.campaign,
        &b.creative_id,
    ] {
        feed_str(mac, s);
    }
    mac.update(&b.price_micros.to_be_bytes());
    feed_str(mac, &b.currency);
    mac.update(&b.auction_ts_ms.to_be_bytes());
    for opt in [&data.landing, &data.burl] {
        match opt {
            Some(s) => {
                mac.update(&[1]);
                feed_str(mac, s);
            }
            None => mac.update(&[0]),
        }
    }
}

fn feed_str(mac: &mut HmacSha256, s: &str) {
    mac.update(&(s.len() as u64).to_be_bytes());
    mac.update(s.as_bytes());
}

/// Checks a tracking URL's query string (without the leading `?`) and returns what it carries.
/// The MAC is compared in constant time before any field is trusted.
pub fn verify(
    query: &str,
    key: &TrackingKey,
    expected: Kind,
    now_ms: u64,
    validity: &Validity,
) -> Result<TrackingData, Rejection> {
    let q = Query::parse(query)?;
    let sig = q.sig.as_deref().ok_or(Rejection::MissingSignature)?;
    let sig = base64url_decode(sig).ok_or(Rejection::BadSignature)?;
    if sig.len() != 32 {
        return Err(Rejection::BadSignature);
    }
    let data = q.into_data()?;
    let mut mac = key.mac();
    feed(&mut mac, &data);
    mac.verify_slice(&sig)
        .map_err(|_| Rejection::BadSignature)?;
    if data.kind != expected {
        return Err(Rejection::WrongKind);
    }
    let ts = data.bid.auction_ts_ms;
    if ts > now_ms.saturating_add(validity.max_skew_ms) {
        return Err(Rejection::NotYetValid);
    }
    if now_ms > ts.saturating_add(validity.window_ms) {
        return Err(Rejection::Expired);
    }
    match (data.kind, &data.landing, &data.burl) {
        (Kind::Click, Some(landing), None) if is_valid_landing(landing) => Ok(data),
        (Kind::Impression, None, _) => Ok(data),
        _ => Err(Rejection::Malformed),
    }
}

#[derive(Default)]
struct Query {
    fields: [Option<String>; 13],
    sig: Option<String>,
}

const NAMES: [&str; 13] = [
    "a", "i", "b", "d", "s", "c", "cr", "p", "cur", "t", "k", "l", "u",
];

impl Query {
    fn parse(query: &str) -> Result<Self, Rejection> {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).ok_or(Rejection::Malformed)?;
            let slot = if name == "sig" {
                &mut q.sig
            } else if let Some(i) = NAMES.iter().position(|n| *n == name) {
                &mut q.fields[i]
            } else {
                // Cache busters and the like that a page may append are not billing data.
                continue;
            };
            if slot.is_some() {
                // A repeated parameter could make two readers disagree on its value.
                return Err(Rejection::Malformed);
            }
            *slot = Some(percent_decode(value).ok_or(Rejection::Malformed)?);
        }
        Ok(q)
    }

    fn into_data(self) -> Result<TrackingData, Rejection> {
        let [a, i, b, d, s, c, cr, p, cur, t, k, l, u] = self.fields;
        let req = |v: Option<String>| v.ok_or(Rejection::Malformed);
        let num = |v: Option<String>| -> Result<u64, Rejection> {
            let v = v.ok_or(Rejection::Malformed)?;
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(Rejection::Malformed);
            }
            v.parse().map_err(|_| Rejection::Malformed)
        };
        let kind = match k.as_deref() {
            Some("imp") => Kind::Impression,
            Some("click") => Kind::Click,
            _ => return Err(Rejection::Malformed),
        };
        Ok(TrackingData {
            bid: BidRef {
                auction_id: req(a)?,
                imp_id: req(i)?,
                bid_id: req(b)?,
                dsp: req(d)?,
                seat: req(s)?,
                campaign: req(c)?,
                creative_id: req(cr)?,
                price_micros: num(p)?,
                currency: req(cur)?,
                auction_ts_ms: num(t)?,
            },
            kind,
            landing: l,
            burl: u,
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the result is safe in a
/// query value, an HTML attribute and an XML CDATA section alike.
pub(crate) fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in s.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        }
    }
}

/// Decodes `%XX` escapes and `+` (form encoding's space); `None` for a bad escape or a result
/// that is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Inverse of [`base64url`]; `None` for any character or length it cannot have produced.
pub(crate) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|&b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // Bits below the last full byte must be zero, or two strings would decode alike.
        let used_bits = 8 * (chunk.len() - 1);
        if n & ((1 << (24 - used_bits)) - 1) != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn key() -> TrackingKey {
        TrackingKey::from_secret("0123456789abcdef-test-secret").unwrap()
    }

    fn bid() -> BidRef {
        BidRef {
            auction_id: "req-1".into(),
            imp_id: "1".into(),
            bid_id: "bid&9=x".into(),
            dsp: "dsp-a".into(),
            seat: "seat 1".into(),
            campaign: "camp-1".into(),
            creative_id: "cr/7".into(),
            price_micros: 1_234_567,
            currency: "USD".into(),
            auction_ts_ms: NOW - 1_000,
        }
    }

    fn query(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    fn check(url: &str, kind: Kind) -> Result<TrackingData, Rejection> {
        verify(query(url), &key(), kind, NOW, &Validity::default())
    }

    fn replace_param(url: &str, name: &str, value: &str) -> String {
        let (base, q) = url.split_once('?').unwrap();
        let q: Vec<String> = q
            .split('&')
            .map(|p| {
                if p.starts_with(&format!("{name}=")) {
                    format!("{name}={value}")
                } else {
                    p.to_owned()
                }
            })
            .collect();
        format!("{base}?{}", q.join("&"))
    }

    fn param<'a>(url: &'a str, name: &str) -> &'a str {
        query(url)
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
    }

    #[test]
    fn impression_round_trip_keeps_every_field() {
        let url = impression_url(
            "https://x.test/event/imp",
            &bid(),
            Some("https://dsp.test/b?p=1&x=2"),
            &key(),
        );
        let data = check(&url, Kind::Impression).unwrap();
        assert_eq!(data.bid, bid());
        assert_eq!(data.kind, Kind::Impression);
        assert_eq!(data.burl.as_deref(), Some("https://dsp.test/b?p=1&x=2"));
        assert_eq!(data.landing, None);
    }

    #[test]
    fn click_round_trip_carries_landing() {
        let url = click_url(
            "https://x.test/event/click",
            &bid(),
            "https://shop.test/p?q=a%20b&r=1",
            &key(),
        )
        .unwrap();
        let data = check(&url, Kind::Click).unwrap();
        assert_eq!(
            data.landing.as_deref(),
            Some("https://shop.test/p?q=a%20b&r=1")
        );
        assert_eq!(data.bid, bid());
    }

    #[test]
    fn tampered_price_is_refused() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        let forged = replace_param(&url, "p", "9234567");
        assert_eq!(
            check(&forged, Kind::Impression),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn swapped_campaign_is_refused() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        let forged = replace_param(&url, "c", "camp-2");
        assert_eq!(
            check(&forged, Kind::Impression),
            Err(Rejection::BadSignature)
        );
        // Moving bytes between neighbouring fields keeps their concatenation but not the MAC.
        let mut shifted = bid();
        shifted.campaign = "camp-1c".into();
        shifted.creative_id = "r/7".into();
        let a = encode(
            "https://x.test/i",
            &TrackingData::impression(bid(), None),
            &key(),
        );
        let b = encode(
            "https://x.test/i",
            &TrackingData::impression(shifted, None),
            &key(),
        );
        assert_ne!(param(&a, "sig"), param(&b, "sig"));
        let spliced = replace_param(&replace_param(&a, "c", "camp-1c"), "cr", "r%2F7");
        assert_eq!(
            check(&spliced, Kind::Impression),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn truncated_or_missing_signature_is_refused() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        let sig = param(&url, "sig");
        assert_eq!(
            check(
                &replace_param(&url, "sig", &sig[..sig.len() - 1]),
                Kind::Impression
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(&replace_param(&url, "sig", &sig[..20]), Kind::Impression),
            Err(Rejection::BadSignature)
        );
        let without = url.rsplit_once("&sig=").unwrap().0;
        assert_eq!(
            check(without, Kind::Impression),
            Err(Rejection::MissingSignature)
        );
        assert_eq!(
            verify("", &key(), Kind::Impression, NOW, &Validity::default()),
            Err(Rejection::MissingSignature)
        );
    }

    #[test]
    fn other_key_is_refused() {
        let url = impression_url("https://x.test/i", &bid(), None, &TrackingKey::random());
        assert_eq!(check(&url, Kind::Impression), Err(Rejection::BadSignature));
    }

    #[test]
    fn expiry_and_future_timestamps() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        let v = Validity {
            window_ms: 60_000,
            max_skew_ms: 5_000,
        };
        let ts = bid().auction_ts_ms;
        assert!(verify(query(&url), &key(), Kind::Impression, ts + 60_000, &v).is_ok());
        assert_eq!(
            verify(query(&url), &key(), Kind::Impression, ts + 60_001, &v),
            Err(Rejection::Expired)
        );
        assert!(verify(query(&url), &key(), Kind::Impression, ts - 5_000, &v).is_ok());
        assert_eq!(
            verify(query(&url), &key(), Kind::Impression, ts - 5_001, &v),
            Err(Rejection::NotYetValid)
        );
        // The timestamp itself is signed: moving it forward breaks the MAC.
        let later = replace_param(&url, "t", &(ts + 10_000_000).to_string());
        assert_eq!(
            verify(query(&later), &key(), Kind::Impression, ts + 120_000, &v),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn click_landing_cannot_be_changed_or_dropped() {
        let url = click_url("https://x.test/c", &bid(), "https://shop.test/", &key()).unwrap();
        let evil = replace_param(&url, "l", "https%3A%2F%2Fevil.test%2F");
        assert_eq!(check(&evil, Kind::Click), Err(Rejection::BadSignature));
        let (base, rest) = url.split_once("&l=").unwrap();
        let dropped = format!("{base}&{}", rest.split_once('&').unwrap().1);
        assert_eq!(check(&dropped, Kind::Click), Err(Rejection::BadSignature));
    }

    #[test]
    fn kinds_cannot_be_swapped() {
        let imp = impression_url("https://x.test/i", &bid(), None, &key());
        assert_eq!(check(&imp, Kind::Click), Err(Rejection::WrongKind));
        let relabelled = replace_param(&imp, "k", "click");
        assert_eq!(
            check(&relabelled, Kind::Click),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn repeated_and_broken_parameters_are_malformed() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        assert_eq!(
            check(&format!("{url}&p=1"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&replace_param(&url, "a", "%zz"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&replace_param(&url, "p", "-1"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&replace_param(&url, "k", "view"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        // Parameters that are not billing data (cache busters) are ignored.
        assert!(check(&format!("{url}&cb=12345"), Kind::Impression).is_ok());
    }

    #[test]
    fn landing_must_be_http() {
        assert!(click_url("https://x.test/c", &bid(), "javascript:alert(1)", &key()).is_err());
        assert!(click_url(
            "https://x.test/c",
            &bid(),
            "https://a.test/\r\nSet-Cookie: x",
            &key()
        )
        .is_err());
        assert!(click_url("https://x.test/c", &bid(), "https://", &key()).is_err());
        assert!(click_url("https://x.test/c", &bid(), "https://shop.test/é", &key()).is_err());
        assert!(is_valid_landing("HTTPS://Shop.test/x"));
    }

    #[test]
    fn base_url_with_query_gets_ampersand() {
        let url = impression_url("https://x.test/i?pub=1", &bid(), None, &key());
        assert!(url.starts_with("https://x.test/i?pub=1&a=req-1&"));
        assert!(check(&url, Kind::Impression).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", key());
        assert_eq!(shown, "TrackingKey(<redacted>)");
        assert!(!shown.contains("0123456789abcdef"));
        assert!(TrackingKey::from_secret("short").is_err());
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = base64url(&bytes);
            assert!(!enc.contains('=') && !enc.contains('+') && !enc.contains('/'));
            assert_eq!(base64url_decode(&enc).unwrap(), bytes);
        }
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("AB"), None, "non-zero trailing bits");
        assert_eq!(base64url_decode("A*"), None);
    }

    #[test]
    fn percent_encoding_round_trips() {
        let s = "a b&c=d/é?#+%]]>\"'<";
        let mut enc = String::new();
        percent_encode_into(&mut enc, s);
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        assert_eq!(percent_decode(&enc).unwrap(), s);
        assert_eq!(percent_decode("a+b").unwrap(), "a b");
        assert_eq!(percent_decode("%e9"), None, "lone byte is not UTF-8");
        assert_eq!(percent_decode("%4"), None);
    }
}

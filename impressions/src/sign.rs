//! Signed tracking URLs: the HMAC-SHA256 over every field that matters for billing, the URL
//! encoding of those fields, and their verification. Pure: time is an argument.
//!
//! A winning bid's fields come first in the signed encoding and each URL's own part (kind,
//! landing or DSP `burl`) after them, so [`BidSigner`] absorbs the bid into the keyed MAC once
//! and finishes a copy per URL: every URL still carries a full HMAC over everything it
//! claims, at the cost of one pass over the bid for all of a bid's URLs.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::markup::AdFormat;
use crate::Error;

type HmacSha256 = Hmac<Sha256>;

/// Bound into every MAC so that a signature made for another purpose (or another version of
/// this encoding) with the same key never verifies here.
const DOMAIN: &[u8] = b"exchange-tracking/v3\0";

/// The second encoding: the v3 fields without the sale's (publisher, property, country,
/// media type, net price). URLs signed with it are still accepted, and vouch for no sale
/// field, so that an upgrade does not refuse impressions already served; drop it once every
/// node has run the v3 signer for longer than `validity.window_ms`.
const DOMAIN_V2: &[u8] = b"exchange-tracking/v2\0";

/// The first encoding (kind before the bid's fields). URLs signed with it are still accepted
/// so that an upgrade does not refuse impressions already served; drop it once every node has
/// run the v2 signer for longer than `validity.window_ms`.
const DOMAIN_V1: &[u8] = b"exchange-tracking/v1\0";

/// Everything but RFC 3986 unreserved characters is escaped, so an encoded value is safe in a
/// query value, an HTML attribute and an XML CDATA section alike.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The secret tracking URLs are signed with. `Debug` never shows it and it has no `Display`,
/// so it cannot reach a log line by accident.
#[derive(Clone)]
pub struct TrackingKey {
    /// The MAC with the key already absorbed: each signature clones it instead of hashing the
    /// key's two pads again.
    keyed: HmacSha256,
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
        Self::keyed(&bytes)
    }

    fn keyed(bytes: &[u8]) -> Result<Self, Error> {
        // HMAC accepts keys of any length (long ones are hashed first), so this never fails.
        let keyed = HmacSha256::new_from_slice(bytes)
            .map_err(|e| Error::Config(format!("tracking secret: {e}")))?;
        Ok(Self { keyed })
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

    /// A fresh 512-bit key from the thread CSPRNG: the embedded default, valid for one process
    /// only (URLs signed before a restart stop verifying, so multi-node or restarting setups
    /// must configure a shared secret).
    pub fn random() -> Self {
        // One block of key (512 bits) is what HMAC-SHA256 uses as is, with nothing to fail.
        let mut bytes = hmac::digest::Key::<HmacSha256>::default();
        rand::fill(&mut bytes[..]);
        Self {
            keyed: <HmacSha256 as hmac::digest::KeyInit>::new(&bytes),
        }
    }

    /// The signer of every tracking URL of `bid`.
    pub fn bid_signer(&self, bid: &BidRef) -> BidSigner {
        BidSigner::new(self, bid)
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
    /// The publisher id of the request (`site.publisher.id`, `app.publisher.id` or
    /// `dooh.publisher.id`); empty when it named none or in URLs signed before it existed.
    #[serde(default)]
    pub publisher: String,
    /// `site.domain` (or `dooh.domain`) of the request; empty for an app or when absent.
    #[serde(default)]
    pub domain: String,
    /// `app.bundle` of the request; empty for a site or when absent.
    #[serde(default)]
    pub bundle: String,
    /// `device.geo.country` of the request as sent (ISO-3166-1 alpha-3 in OpenRTB).
    #[serde(default)]
    pub country: String,
    /// The winning bid's media type: its `mtype`, else its imp's only format; `None` for a
    /// multi-format imp won by a bid without `mtype` (not guessed).
    #[serde(default)]
    pub media_type: Option<AdFormat>,
    /// What the publisher is paid for the bid, CPM micros in `currency`: the clearing price
    /// less the exchange's margin, never above `price_micros`. `None` in URLs signed before
    /// it existed, which pay the publisher the clearing price (no margin).
    #[serde(default)]
    pub net_price_micros: Option<u64>,
}

impl BidRef {
    /// Whether any field of the sale (publisher, property, country, media type, net price)
    /// is set: a v1 or v2 signature never vouches for one.
    fn has_sale(&self) -> bool {
        !(self.publisher.is_empty()
            && self.domain.is_empty()
            && self.bundle.is_empty()
            && self.country.is_empty()
            && self.media_type.is_none()
            && self.net_price_micros.is_none())
    }

    /// The publisher's price, CPM micros: the signed net price, or the clearing price for a
    /// URL signed before net prices existed.
    pub fn net_price(&self) -> u64 {
        self.net_price_micros.unwrap_or(self.price_micros)
    }
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
    /// The URL of a test auction (`BidRequest.test = 1`): answered as usual, billed never.
    /// Signed, so it can be neither added to a real URL nor stripped from a test one; absent
    /// from every URL signed before the flag existed, which stay real.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

impl TrackingData {
    pub fn impression(bid: BidRef, burl: Option<String>) -> Self {
        Self {
            bid,
            kind: Kind::Impression,
            landing: None,
            burl,
            test: false,
        }
    }

    pub fn click(bid: BidRef, landing: String) -> Self {
        Self {
            bid,
            kind: Kind::Click,
            landing: Some(landing),
            burl: None,
            test: false,
        }
    }

    /// The same URL's data, marked as a test auction's.
    pub fn for_test(self) -> Self {
        Self { test: true, ..self }
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
    key.bid_signer(bid).impression_url(base_url, burl)
}

/// The click URL for `bid` redirecting to `landing`; refused for a landing that is not an
/// absolute http(s) URL.
pub fn click_url(
    base_url: &str,
    bid: &BidRef,
    landing: &str,
    key: &TrackingKey,
) -> Result<String, Error> {
    key.bid_signer(bid).click_url(base_url, landing)
}

/// `base_url` with `data` and its signature as query parameters.
pub fn encode(base_url: &str, data: &TrackingData, key: &TrackingKey) -> String {
    key.bid_signer(&data.bid).test(data.test).url(
        base_url,
        data.kind,
        data.landing.as_deref(),
        data.burl.as_deref(),
    )
}

/// One winning bid's fields, signed and encoded once for all of its tracking URLs: the keyed
/// MAC after the bid's fields, and their query parameters.
#[derive(Clone)]
pub struct BidSigner {
    mac: HmacSha256,
    /// `a=..&i=..&...&t=..&`: the bid's fields, percent-encoded.
    query: String,
    /// The bid won a test auction: its URLs say so, under the MAC.
    test: bool,
}

impl fmt::Debug for BidSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BidSigner")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl BidSigner {
    fn new(key: &TrackingKey, bid: &BidRef) -> Self {
        let mut mac = key.keyed.clone();
        feed_bid(&mut mac, bid);
        let mut query = String::with_capacity(256);
        let mut price = itoa::Buffer::new();
        let mut ts = itoa::Buffer::new();
        let fields: [(&str, &str); 10] = [
            ("a", &bid.auction_id),
            ("i", &bid.imp_id),
            ("b", &bid.bid_id),
            ("d", &bid.dsp),
            ("s", &bid.seat),
            ("c", &bid.campaign),
            ("cr", &bid.creative_id),
            ("p", price.format(bid.price_micros)),
            ("cur", &bid.currency),
            ("t", ts.format(bid.auction_ts_ms)),
        ];
        for (name, value) in fields {
            push_param(&mut query, name, value);
        }
        // The sale's fields are left out when empty (absent reads back as empty), which keeps
        // URLs short; the MAC covers them either way.
        let mut net = itoa::Buffer::new();
        let mut mtype = itoa::Buffer::new();
        let sale: [(&str, &str); 6] = [
            ("pb", &bid.publisher),
            ("dm", &bid.domain),
            ("bn", &bid.bundle),
            ("cc", &bid.country),
            ("mt", bid.media_type.map_or("", |m| mtype.format(m.mtype()))),
            ("np", bid.net_price_micros.map_or("", |n| net.format(n))),
        ];
        for (name, value) in sale {
            if !value.is_empty() {
                push_param(&mut query, name, value);
            }
        }
        Self {
            mac,
            query,
            test: false,
        }
    }

    /// Marks every URL this signer makes as a test auction's when `test` (see
    /// [`TrackingData::test`]).
    pub fn test(mut self, test: bool) -> Self {
        self.test = test;
        self
    }

    /// The impression URL; `burl` is the DSP's own billing URL, fired once it is billed.
    pub fn impression_url(&self, base_url: &str, burl: Option<&str>) -> String {
        self.url(base_url, Kind::Impression, None, burl)
    }

    /// The click URL redirecting to `landing`; refused for a landing that is not an absolute
    /// http(s) URL.
    pub fn click_url(&self, base_url: &str, landing: &str) -> Result<String, Error> {
        if !is_valid_landing(landing) {
            return Err(Error::Config(
                "click landing must be an absolute http(s) URL".into(),
            ));
        }
        Ok(self.url(base_url, Kind::Click, Some(landing), None))
    }

    fn url(&self, base_url: &str, kind: Kind, landing: Option<&str>, burl: Option<&str>) -> String {
        let mut mac = self.mac.clone();
        feed_tail(&mut mac, kind, landing, burl);
        feed_test(&mut mac, self.test);
        let sig: [u8; 32] = mac.finalize().into_bytes().into();
        let extra = landing.or(burl).map_or(0, |s| s.len() * 3 + 3);
        let mut out = String::with_capacity(base_url.len() + self.query.len() + extra + 64);
        out.push_str(base_url);
        out.push(if base_url.contains('?') { '&' } else { '?' });
        out.push_str(&self.query);
        push_param(&mut out, "k", kind.as_str());
        if let Some(landing) = landing {
            push_param(&mut out, "l", landing);
        }
        if let Some(burl) = burl {
            push_param(&mut out, "u", burl);
        }
        if self.test {
            push_param(&mut out, "test", "1");
        }
        out.push_str("sig=");
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        out
    }
}

fn push_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('=');
    percent_encode_into(out, value);
    out.push('&');
}

/// The MAC's canonical encoding, bid part: a domain tag, then every field of the bid in a
/// fixed order, strings length-prefixed and numbers fixed-width, so no byte can move from one
/// field to another without changing the MAC.
fn feed_bid(mac: &mut HmacSha256, b: &BidRef) {
    mac.update(DOMAIN);
    feed_fields(mac, b);
    feed_sale(mac, b);
}

/// The sale's fields (v3 on): strings length-prefixed, the media type as its `mtype` code (0
/// for none), the net price present-flagged.
fn feed_sale(mac: &mut HmacSha256, b: &BidRef) {
    for s in [&b.publisher, &b.domain, &b.bundle, &b.country] {
        feed_str(mac, s);
    }
    mac.update(&[b.media_type.map_or(0, AdFormat::mtype)]);
    match b.net_price_micros {
        Some(net) => {
            mac.update(&[1]);
            mac.update(&net.to_be_bytes());
        }
        None => mac.update(&[0]),
    }
}

/// Every field of the bid in a fixed order, strings length-prefixed, numbers fixed-width.
fn feed_fields(mac: &mut HmacSha256, b: &BidRef) {
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
}

/// The MAC's canonical encoding, URL part: the kind (so neither URL can stand in for the
/// other) and the landing or `burl`, each present-flagged.
fn feed_tail(mac: &mut HmacSha256, kind: Kind, landing: Option<&str>, burl: Option<&str>) {
    mac.update(&[kind.tag()]);
    feed_opts(mac, landing, burl);
}

/// The test flag, after everything else and only when set: a real URL's MAC is the one it
/// always was, so URLs signed before the flag existed still verify. The encoding before it is
/// self-delimiting, so the trailing tag cannot be read as part of another message.
fn feed_test(mac: &mut HmacSha256, test: bool) {
    if test {
        mac.update(TEST_TAG);
    }
}

/// Appended to the MAC input of a test auction's URL.
const TEST_TAG: &[u8] = b"\x01test";

fn feed_opts(mac: &mut HmacSha256, landing: Option<&str>, burl: Option<&str>) {
    for opt in [landing, burl] {
        match opt {
            Some(s) => {
                mac.update(&[1]);
                feed_str(mac, s);
            }
            None => mac.update(&[0]),
        }
    }
}

/// The v2 encoding (see [`DOMAIN_V2`]): v3 without the sale's fields.
fn feed_v2(mac: &mut HmacSha256, data: &TrackingData) {
    mac.update(DOMAIN_V2);
    feed_fields(mac, &data.bid);
    feed_tail(
        mac,
        data.kind,
        data.landing.as_deref(),
        data.burl.as_deref(),
    );
    feed_test(mac, data.test);
}

/// The v1 encoding (see [`DOMAIN_V1`]): the v2 fields, the kind first.
fn feed_v1(mac: &mut HmacSha256, data: &TrackingData) {
    let b = &data.bid;
    mac.update(DOMAIN_V1);
    mac.update(&[data.kind.tag()]);
    feed_fields(mac, b);
    feed_opts(mac, data.landing.as_deref(), data.burl.as_deref());
}

fn feed_str(mac: &mut HmacSha256, s: &str) {
    mac.update(&(s.len() as u64).to_be_bytes());
    mac.update(s.as_bytes());
}

/// Whether `sig` is `data`'s MAC under `key`, compared in constant time; older encodings are
/// tried only when v3 does not match, and only for data they could have signed.
fn signature_matches(data: &TrackingData, key: &TrackingKey, sig: &[u8]) -> bool {
    let mut mac = key.keyed.clone();
    feed_bid(&mut mac, &data.bid);
    feed_tail(
        &mut mac,
        data.kind,
        data.landing.as_deref(),
        data.burl.as_deref(),
    );
    feed_test(&mut mac, data.test);
    if bool::from(mac.finalize().into_bytes().as_slice().ct_eq(sig)) {
        return true;
    }
    // v2 and v1 predate the sale's fields: they cannot vouch for any.
    if data.bid.has_sale() {
        return false;
    }
    let mut v2 = key.keyed.clone();
    feed_v2(&mut v2, data);
    if bool::from(v2.finalize().into_bytes().as_slice().ct_eq(sig)) {
        return true;
    }
    // v1 predates the test flag: it cannot vouch for one.
    if data.test {
        return false;
    }
    let mut v1 = key.keyed.clone();
    feed_v1(&mut v1, data);
    bool::from(v1.finalize().into_bytes().as_slice().ct_eq(sig))
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
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Rejection::BadSignature)?;
    if sig.len() != 32 {
        return Err(Rejection::BadSignature);
    }
    let data = q.into_data()?;
    if !signature_matches(&data, key, &sig) {
        return Err(Rejection::BadSignature);
    }
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
    // The exchange never pays a publisher more than the buyer pays it.
    if data.bid.net_price_micros > Some(data.bid.price_micros) {
        return Err(Rejection::Malformed);
    }
    match (data.kind, &data.landing, &data.burl) {
        (Kind::Click, Some(landing), None) if is_valid_landing(landing) => Ok(data),
        (Kind::Impression, None, _) => Ok(data),
        _ => Err(Rejection::Malformed),
    }
}

#[derive(Default)]
struct Query {
    fields: [Option<String>; 20],
    sig: Option<String>,
}

const NAMES: [&str; 20] = [
    "a", "i", "b", "d", "s", "c", "cr", "p", "cur", "t", "k", "l", "u", "test", "pb", "dm", "bn",
    "cc", "mt", "np",
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
            *slot = Some(
                percent_decode(value)
                    .ok_or(Rejection::Malformed)?
                    .into_owned(),
            );
        }
        Ok(q)
    }

    fn into_data(self) -> Result<TrackingData, Rejection> {
        let [a, i, b, d, s, c, cr, p, cur, t, k, l, u, test, pb, dm, bn, cc, mt, np] = self.fields;
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
        // Only the signer's one spelling: two spellings of one flag would be two URLs.
        let test = match test.as_deref() {
            None => false,
            Some("1") => true,
            Some(_) => return Err(Rejection::Malformed),
        };
        let media_type = match mt {
            None => None,
            Some(m) => match m.as_bytes() {
                [d @ b'1'..=b'4'] => AdFormat::from_mtype(u64::from(d - b'0')),
                _ => return Err(Rejection::Malformed),
            },
        };
        let net_price_micros = match np {
            None => None,
            np => Some(num(np)?),
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
                publisher: pb.unwrap_or_default(),
                domain: dm.unwrap_or_default(),
                bundle: bn.unwrap_or_default(),
                country: cc.unwrap_or_default(),
                media_type,
                net_price_micros,
            },
            kind,
            landing: l,
            burl: u,
            test,
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (see [`QUERY_VALUE`]).
pub(crate) fn percent_encode_into(out: &mut String, s: &str) {
    out.extend(utf8_percent_encode(s, QUERY_VALUE));
}

/// Decodes a query value: `+` is a space (form encoding, as browsers write queries), then
/// `%XX` escapes; `None` for a broken escape (which `percent-encoding` would pass through as
/// text) or a result that is not UTF-8. Borrows when there is nothing to decode.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let escapes_whole = s.match_indices('%').all(|(i, _)| {
        s.get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !escapes_whole {
        return None;
    }
    let spaced = s.replace('+', " ");
    let decoded = percent_decode_str(&spaced).decode_utf8().ok()?;
    Some(Cow::Owned(decoded.into_owned()))
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
            ..BidRef::default()
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
    fn signatures_are_unpadded_base64url_and_decoded_strictly() {
        let url = impression_url("https://x.test/i", &bid(), None, &key());
        let sig = param(&url, "sig");
        assert_eq!(sig.len(), 43);
        assert!(sig
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // The last character carries 4 unused bits; any other value of them is refused, so
        // one signature has one spelling.
        let last = sig.as_bytes()[42];
        let mut other = sig[..42].to_owned();
        other.push(if last == b'A' { 'B' } else { 'A' });
        assert_eq!(
            check(&replace_param(&url, "sig", &other), Kind::Impression),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(
                &replace_param(&url, "sig", &format!("{sig}=")),
                Kind::Impression
            ),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn both_urls_of_a_bid_come_from_one_signer_and_stay_apart() {
        let signer = key().bid_signer(&bid());
        let imp = signer.impression_url("https://x.test/i", None);
        let click = signer
            .click_url("https://x.test/c", "https://shop.test/")
            .unwrap();
        assert_eq!(
            imp,
            impression_url("https://x.test/i", &bid(), None, &key())
        );
        assert_eq!(check(&imp, Kind::Impression).unwrap().bid, bid());
        assert_eq!(check(&click, Kind::Click).unwrap().bid, bid());
        assert_eq!(check(&click, Kind::Impression), Err(Rejection::WrongKind));
        assert_eq!(check(&imp, Kind::Click), Err(Rejection::WrongKind));
        // The click's signature on the impression's fields (or the reverse) is refused.
        let swapped = replace_param(&imp, "sig", param(&click, "sig"));
        assert_eq!(
            check(&swapped, Kind::Impression),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn v1_signatures_still_verify() {
        let data = TrackingData::impression(bid(), Some("https://dsp.test/b".into()));
        let mut mac = key().keyed.clone();
        feed_v1(&mut mac, &data);
        let v1 = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let url = encode("https://x.test/i", &data, &key());
        let old = replace_param(&url, "sig", &v1);
        assert_ne!(old, url);
        assert_eq!(check(&old, Kind::Impression), Ok(data));
    }

    #[test]
    fn the_test_flag_is_signed_and_old_urls_stay_real() {
        let real = impression_url(
            "https://x.test/i",
            &bid(),
            Some("https://dsp.test/b"),
            &key(),
        );
        let test = key()
            .bid_signer(&bid())
            .test(true)
            .impression_url("https://x.test/i", Some("https://dsp.test/b"));
        assert!(!real.contains("test="), "{real}");
        assert!(test.contains("&test=1&sig="), "{test}");
        assert!(!check(&real, Kind::Impression).unwrap().test);
        let data = check(&test, Kind::Impression).unwrap();
        assert!(data.test);
        assert_eq!(data.bid, bid());
        assert_eq!(
            encode("https://x.test/i", &data, &key()),
            test,
            "encode keeps the flag"
        );
        // Adding the flag to a real URL, or stripping it from a test one, breaks the MAC.
        let added = real.replace("&sig=", "&test=1&sig=");
        assert_eq!(
            check(&added, Kind::Impression),
            Err(Rejection::BadSignature)
        );
        let stripped = test.replace("&test=1", "");
        assert_eq!(
            check(&stripped, Kind::Impression),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(&test.replace("test=1", "test=true"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        // A v1 signature predates the flag, so it never vouches for one.
        let plain = TrackingData::impression(bid(), Some("https://dsp.test/b".into()));
        let mut mac = key().keyed.clone();
        feed_v1(&mut mac, &plain);
        let v1 = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(
            check(&replace_param(&test, "sig", &v1), Kind::Impression),
            Err(Rejection::BadSignature)
        );
        assert!(check(&replace_param(&real, "sig", &v1), Kind::Impression).is_ok());
        // Clicks carry it the same way.
        let click = key()
            .bid_signer(&bid())
            .test(true)
            .click_url("https://x.test/c", "https://shop.test/")
            .unwrap();
        assert!(check(&click, Kind::Click).unwrap().test);
    }

    fn sold() -> BidRef {
        BidRef {
            publisher: "pub 1/ü".into(),
            domain: "news.example".into(),
            bundle: String::new(),
            country: "DEU".into(),
            media_type: Some(AdFormat::Native),
            net_price_micros: Some(1_049_382),
            ..bid()
        }
    }

    /// `data` signed with the v2 encoding, as a node before the sale's fields signed it.
    fn v2_url(data: &TrackingData) -> String {
        let mut mac = key().keyed.clone();
        feed_v2(&mut mac, data);
        let v2 = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        replace_param(&encode("https://x.test/i", data, &key()), "sig", &v2)
    }

    #[test]
    fn the_sale_round_trips_under_the_signature() {
        let url = impression_url("https://x.test/i", &sold(), None, &key());
        assert!(
            url.contains("&pb=pub%201%2F%C3%BC&dm=news.example&cc=DEU&mt=4&np=1049382&"),
            "{url}"
        );
        assert!(!url.contains("bn="), "empty fields stay out: {url}");
        assert_eq!(check(&url, Kind::Impression).unwrap().bid, sold());
        let click = click_url("https://x.test/c", &sold(), "https://shop.test/", &key()).unwrap();
        assert_eq!(check(&click, Kind::Click).unwrap().bid, sold());
        // Every one of them is signed: changed, added or dropped, the MAC breaks.
        for (name, value) in [
            ("pb", "pub-2"),
            ("dm", "evil.example"),
            ("cc", "USA"),
            ("mt", "1"),
            ("np", "1234567"),
            ("np", "1049383"),
        ] {
            assert_eq!(
                check(&replace_param(&url, name, value), Kind::Impression),
                Err(Rejection::BadSignature),
                "{name}={value}"
            );
        }
        let added = url.replace("&sig=", "&bn=com.evil&sig=");
        assert_eq!(
            check(&added, Kind::Impression),
            Err(Rejection::BadSignature)
        );
        let dropped = url.replace("&np=1049382", "");
        assert_eq!(
            check(&dropped, Kind::Impression),
            Err(Rejection::BadSignature)
        );
        // Neither a media type outside 1-4 nor a net price above the clearing price is read.
        assert_eq!(
            check(&replace_param(&url, "mt", "5"), Kind::Impression),
            Err(Rejection::Malformed)
        );
        let greedy = BidRef {
            net_price_micros: Some(bid().price_micros + 1),
            ..sold()
        };
        let url = impression_url("https://x.test/i", &greedy, None, &key());
        assert_eq!(check(&url, Kind::Impression), Err(Rejection::Malformed));
    }

    #[test]
    fn v2_urls_still_verify_and_vouch_for_no_sale() {
        let data = TrackingData::impression(bid(), Some("https://dsp.test/b".into()));
        let old = v2_url(&data);
        assert_ne!(old, encode("https://x.test/i", &data, &key()));
        let read = check(&old, Kind::Impression).unwrap();
        assert_eq!(read, data);
        assert_eq!(read.bid.net_price(), bid().price_micros, "no margin");
        // A sale's field added to an old URL is not covered by its signature.
        for extra in [
            "pb=pub-2",
            "dm=x.example",
            "bn=com.x",
            "cc=USA",
            "mt=1",
            "np=1",
        ] {
            let forged = old.replace("&sig=", &format!("&{extra}&sig="));
            assert_eq!(
                check(&forged, Kind::Impression),
                Err(Rejection::BadSignature),
                "{extra}"
            );
        }
        // Nor does a v2 signature of a sale's URL verify.
        let sale = TrackingData::impression(sold(), None);
        assert_eq!(
            check(&v2_url(&sale), Kind::Impression),
            Err(Rejection::BadSignature)
        );
        // Test URLs of v2 keep their flag.
        let test = TrackingData::impression(bid(), None).for_test();
        assert!(check(&v2_url(&test), Kind::Impression).unwrap().test);
    }

    #[test]
    fn spooled_records_from_before_the_sale_still_read() {
        let old = r#"{"auction_id":"a","imp_id":"1","bid_id":"b","dsp":"d","seat":"s","campaign":"c","creative_id":"cr","price_micros":2000000,"currency":"USD","auction_ts_ms":5}"#;
        let bid: BidRef = serde_json::from_str(old).unwrap();
        assert!(!bid.has_sale());
        assert_eq!(bid.net_price(), 2_000_000);
        let round: BidRef = serde_json::from_str(&serde_json::to_string(&sold()).unwrap()).unwrap();
        assert_eq!(round, sold());
    }

    #[test]
    fn a_full_impression_url_stays_short() {
        let url = impression_url(
            "https://exchange.example.com/event/imp",
            &sold(),
            Some("https://dsp.example.com/win?price=1.234567&auction=req-1"),
            &key(),
        );
        assert!(url.len() < 500, "{} bytes: {url}", url.len());
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
        assert_eq!(percent_decode("a%2Bb").unwrap(), "a+b");
        assert_eq!(percent_decode("%e9"), None, "lone byte is not UTF-8");
        assert_eq!(percent_decode("%4"), None);
    }
}

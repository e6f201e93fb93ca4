//! OpenRTB 2.5/2.6 bid requests, parsed in one pass into types that borrow from the body.
//!
//! Only the fields the exchange reads are modelled; everything else is skipped by serde and
//! still reaches the DSPs, because `forward` splices the publisher's bytes instead of
//! re-serialising these types. Strings borrow from the body unless the JSON escaped them;
//! `ext` objects and other opaque blobs stay raw text pointing into the body. The field
//! types that make serde read OpenRTB this way are in [`crate::de`].
//!
//! Where 2.5 and 2.6 put the same signal in different places (`regs.ext.gdpr` and
//! `regs.gdpr`, `user.ext.eids` and `user.eids`, ...), both are read and the accessors on
//! [`BidRequest`] return one normalised answer, preferring the 2.6 location.

use std::borrow::Cow;

use money::CpmMicros;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::de::{self, List, RawArray, RawObject, Str, Strs};
use crate::span::Span;
use crate::InvalidRequest;

/// A value whose position in the body matters because the exchange may rewrite it in place
/// (`tmax`, `at`, `cur`, `imp[].bidfloor`).
///
/// The key was present. `value` is `None` when the publisher sent `null`: the field then
/// means "unset", but its bytes still have to be replaced rather than duplicated.
#[derive(Clone, Copy, Debug)]
pub struct Located<'a, T> {
    pub value: Option<T>,
    /// The value's JSON text exactly as it sits in the body.
    pub raw: &'a RawValue,
}

impl<T> Located<'_, T> {
    /// Where the value sits in `body`; `None` when this was not parsed from `body`.
    pub fn span(&self, body: &[u8]) -> Option<Span> {
        Span::of(body, self.raw)
    }
}

/// Currency codes as sent in the top-level `cur` array.
pub type Currencies<'a> = Vec<Cow<'a, str>>;

/// The top-level BidRequest object (OpenRTB 2.6 §3.2.1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct BidRequest<'a> {
    /// Empty when the publisher left it out; validation refuses that.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    pub imp: List<Imp<'a>>,
    // The large objects are boxed: serde moves a struct several times while building it,
    // and inline they made `BidRequest` 2.4 KB and `Imp` 1.6 KB. Boxed, the IAB banner
    // example parses about a quarter faster (benches/benches/openrtb.rs).
    pub site: Option<Box<Site<'a>>>,
    pub app: Option<Box<App<'a>>>,
    pub dooh: Option<Box<Dooh<'a>>>,
    pub device: Option<Box<Device<'a>>>,
    pub user: Option<Box<User<'a>>>,
    pub regs: Option<Box<Regs<'a>>>,
    pub source: Option<Source<'a>>,
    /// Milliseconds the publisher waits; exchange-owned, rewritten per DSP.
    #[serde(borrow, default, deserialize_with = "de::located_int")]
    pub tmax: Option<Located<'a, i64>>,
    /// Auction type; exchange-owned, rewritten for the DSPs.
    #[serde(borrow, default, deserialize_with = "de::located_int")]
    pub at: Option<Located<'a, i64>>,
    /// Allowed bid currencies; exchange-owned, rewritten for the DSPs.
    #[serde(borrow, default, deserialize_with = "de::located_strs")]
    pub cur: Option<Located<'a, Currencies<'a>>>,
    pub wseat: Strs<'a>,
    pub bseat: Strs<'a>,
    pub wlang: Strs<'a>,
    pub wlangb: Strs<'a>,
    pub bcat: Strs<'a>,
    pub cattax: Option<i32>,
    pub badv: Strs<'a>,
    pub bapp: Strs<'a>,
    pub test: Option<i32>,
    pub allimps: Option<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// An impression on offer (§3.2.4).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Imp<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    pub metric: List<Metric<'a>>,
    /// Boxed, like the objects of [`BidRequest`].
    pub banner: Option<Box<Banner<'a>>>,
    pub video: Option<Box<Video<'a>>>,
    pub audio: Option<Box<Audio<'a>>>,
    pub native: Option<Box<Native<'a>>>,
    pub pmp: Option<Pmp<'a>>,
    pub displaymanager: Option<Str<'a>>,
    pub displaymanagerver: Option<Str<'a>>,
    pub instl: Option<i32>,
    pub tagid: Option<Str<'a>>,
    /// CPM floor; kept with its position because the floors feature rewrites it.
    #[serde(borrow, default, deserialize_with = "de::located_float")]
    pub bidfloor: Option<Located<'a, f64>>,
    pub bidfloorcur: Option<Str<'a>>,
    pub clickbrowser: Option<i32>,
    pub secure: Option<i32>,
    pub rwdd: Option<i32>,
    pub ssai: Option<i32>,
    pub exp: Option<i64>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.5.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Metric<'a> {
    #[serde(rename = "type")]
    pub kind: Option<Str<'a>>,
    pub value: Option<f64>,
    pub vendor: Option<Str<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.6.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Banner<'a> {
    pub format: List<Format<'a>>,
    pub w: Option<i64>,
    pub h: Option<i64>,
    pub btype: List<i32>,
    pub battr: List<u32>,
    pub pos: Option<i32>,
    pub mimes: Strs<'a>,
    pub topframe: Option<i32>,
    pub expdir: List<i32>,
    pub api: List<i32>,
    pub id: Option<Str<'a>>,
    pub vcm: Option<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.10: an allowed size, absolute (`w`/`h`) or flexible (`wratio`/`hratio`/`wmin`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Format<'a> {
    pub w: Option<i64>,
    pub h: Option<i64>,
    pub wratio: Option<i64>,
    pub hratio: Option<i64>,
    pub wmin: Option<i64>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.7.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Video<'a> {
    /// Required by 2.6; empty when missing, which validation refuses.
    pub mimes: Strs<'a>,
    pub minduration: Option<i64>,
    pub maxduration: Option<i64>,
    pub startdelay: Option<i64>,
    pub maxseq: Option<i64>,
    pub poddur: Option<i64>,
    pub protocols: List<i32>,
    /// Deprecated single-protocol field from 2.2.
    pub protocol: Option<i32>,
    pub w: Option<i64>,
    pub h: Option<i64>,
    pub podid: Option<Str<'a>>,
    pub podseq: Option<i32>,
    pub rqddurs: List<i64>,
    pub placement: Option<i32>,
    pub plcmt: Option<i32>,
    pub linearity: Option<i32>,
    pub skip: Option<i32>,
    pub skipmin: Option<i64>,
    pub skipafter: Option<i64>,
    pub sequence: Option<i64>,
    pub slotinpod: Option<i32>,
    pub mincpmpersec: Option<f64>,
    pub battr: List<u32>,
    pub maxextended: Option<i64>,
    pub minbitrate: Option<i64>,
    pub maxbitrate: Option<i64>,
    pub boxingallowed: Option<i32>,
    pub playbackmethod: List<i32>,
    pub playbackend: Option<i32>,
    pub delivery: List<i32>,
    pub pos: Option<i32>,
    pub api: List<i32>,
    pub companiontype: List<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.8.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Audio<'a> {
    /// Required by 2.6; empty when missing, which validation refuses.
    pub mimes: Strs<'a>,
    pub minduration: Option<i64>,
    pub maxduration: Option<i64>,
    pub poddur: Option<i64>,
    pub protocols: List<i32>,
    pub startdelay: Option<i64>,
    pub rqddurs: List<i64>,
    pub podid: Option<Str<'a>>,
    pub podseq: Option<i32>,
    pub sequence: Option<i64>,
    pub slotinpod: Option<i32>,
    pub mincpmpersec: Option<f64>,
    pub battr: List<u32>,
    pub maxextended: Option<i64>,
    pub minbitrate: Option<i64>,
    pub maxbitrate: Option<i64>,
    pub delivery: List<i32>,
    pub api: List<i32>,
    pub companiontype: List<i32>,
    pub maxseq: Option<i64>,
    pub feed: Option<i32>,
    pub stitched: Option<i32>,
    pub nvol: Option<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.9. `request` is the Native Ads payload as a JSON string; [`crate::native`] reads it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Native<'a> {
    /// Empty when the publisher left it out; validation refuses that. Always owned in
    /// practice, since JSON inside a JSON string has its quotes escaped.
    #[serde(borrow, default)]
    pub request: Cow<'a, str>,
    pub ver: Option<Str<'a>>,
    pub api: List<i32>,
    pub battr: List<u32>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.11.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Pmp<'a> {
    pub private_auction: Option<i32>,
    pub deals: List<Deal<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.12.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Deal<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    pub bidfloor: Option<f64>,
    pub bidfloorcur: Option<Str<'a>>,
    pub at: Option<i64>,
    pub wseat: Strs<'a>,
    pub wadomain: Strs<'a>,
    pub guar: Option<i32>,
    pub mincpmpersec: Option<f64>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.13.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Site<'a> {
    pub id: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub domain: Option<Str<'a>>,
    pub page: Option<Str<'a>>,
    #[serde(rename = "ref")]
    pub referrer: Option<Str<'a>>,
    pub cat: Strs<'a>,
    pub publisher: Option<Publisher<'a>>,
    pub mobile: Option<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.14.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct App<'a> {
    pub id: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub bundle: Option<Str<'a>>,
    pub domain: Option<Str<'a>>,
    pub storeurl: Option<Str<'a>>,
    pub cat: Strs<'a>,
    pub ver: Option<Str<'a>>,
    pub publisher: Option<Publisher<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.32: a digital out-of-home screen.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Dooh<'a> {
    pub id: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub domain: Option<Str<'a>>,
    pub publisher: Option<Publisher<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.15.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Publisher<'a> {
    pub id: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub domain: Option<Str<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.18.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Device<'a> {
    pub ua: Option<Str<'a>>,
    pub ip: Option<Str<'a>>,
    pub ipv6: Option<Str<'a>>,
    pub geo: Option<Box<Geo<'a>>>,
    pub dnt: Option<i32>,
    pub lmt: Option<i32>,
    pub devicetype: Option<i32>,
    pub make: Option<Str<'a>>,
    pub model: Option<Str<'a>>,
    pub os: Option<Str<'a>>,
    pub osv: Option<Str<'a>>,
    pub w: Option<i64>,
    pub h: Option<i64>,
    pub ppi: Option<i64>,
    pub pxratio: Option<f64>,
    pub js: Option<i32>,
    pub language: Option<Str<'a>>,
    pub carrier: Option<Str<'a>>,
    pub connectiontype: Option<i32>,
    pub ifa: Option<Str<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.19.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Geo<'a> {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    #[serde(rename = "type")]
    pub kind: Option<i32>,
    /// Metres.
    pub accuracy: Option<i64>,
    pub lastfix: Option<i64>,
    pub ipservice: Option<i32>,
    pub country: Option<Str<'a>>,
    pub region: Option<Str<'a>>,
    pub metro: Option<Str<'a>>,
    pub city: Option<Str<'a>>,
    pub zip: Option<Str<'a>>,
    pub utcoffset: Option<i64>,
    pub ext: Option<RawObject<'a>>,
}

/// §3.2.20. Use [`BidRequest::privacy`] and [`BidRequest::eids`] rather than `consent`,
/// `eids` and `ext` directly: they also read the 2.5 `ext` locations.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct User<'a> {
    pub id: Option<Str<'a>>,
    pub buyeruid: Option<Str<'a>>,
    pub yob: Option<i32>,
    pub gender: Option<Str<'a>>,
    pub consent: Option<Str<'a>>,
    pub geo: Option<Box<Geo<'a>>>,
    /// Data segments (§3.2.21), opaque.
    pub data: Option<RawArray<'a>>,
    /// Extended identifiers (2.6 location), opaque.
    pub eids: Option<RawArray<'a>>,
    pub ext: Option<UserExt<'a>>,
}

/// The parts of `user.ext` the exchange reads; other keys are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct UserExt<'a> {
    pub consent: Option<Str<'a>>,
    pub eids: Option<RawArray<'a>>,
}

/// §3.2.3. Use [`BidRequest::privacy`] rather than these fields directly.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Regs<'a> {
    pub coppa: Option<i64>,
    /// 0 or 1 (validated).
    pub gdpr: Option<i64>,
    pub us_privacy: Option<Str<'a>>,
    pub gpp: Option<Str<'a>>,
    pub gpp_sid: List<i32>,
    pub ext: Option<RegsExt<'a>>,
}

/// The parts of `regs.ext` the exchange reads (the 2.5-era locations); other keys are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct RegsExt<'a> {
    pub coppa: Option<i64>,
    pub gdpr: Option<i64>,
    pub us_privacy: Option<Str<'a>>,
    pub gpp: Option<Str<'a>>,
    pub gpp_sid: List<i32>,
}

/// §3.2.2. Use [`BidRequest::schain`] rather than `schain`/`ext` directly.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Source<'a> {
    pub fd: Option<i32>,
    pub tid: Option<Str<'a>>,
    pub pchain: Option<Str<'a>>,
    /// Supply chain (2.6 location), opaque.
    pub schain: Option<RawObject<'a>>,
    pub ext: Option<SourceExt<'a>>,
}

/// The parts of `source.ext` the exchange reads; other keys are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct SourceExt<'a> {
    pub schain: Option<RawObject<'a>>,
}

de::objects_only!(
    BidRequest, Imp, Metric, Banner, Format, Video, Audio, Native, Pmp, Deal, Site, App, Dooh,
    Publisher, Device, Geo, User, UserExt, Regs, RegsExt, Source, SourceExt,
);

/// The privacy signals of a request, wherever the publisher put them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privacy<'r> {
    /// `None` when the publisher did not say whether GDPR applies.
    pub gdpr: Option<bool>,
    /// The TCF consent string.
    pub consent: Option<&'r str>,
    /// The CCPA string.
    pub us_privacy: Option<&'r str>,
    pub gpp: Option<&'r str>,
    pub gpp_sid: &'r [i32],
    pub coppa: bool,
}

impl<'a> BidRequest<'a> {
    /// The publisher's `tmax` in milliseconds, if it sent one.
    pub fn tmax(&self) -> Option<i64> {
        self.tmax.as_ref().and_then(|t| t.value)
    }

    /// The publisher's auction type, if it sent one.
    pub fn at(&self) -> Option<i64> {
        self.at.as_ref().and_then(|a| a.value)
    }

    /// The currencies the publisher accepts; empty means the spec default (USD).
    pub fn cur(&self) -> &[Cow<'a, str>] {
        self.cur
            .as_ref()
            .and_then(|c| c.value.as_deref())
            .unwrap_or_default()
    }

    pub fn is_test(&self) -> bool {
        self.test == Some(1)
    }

    /// Privacy signals, 2.6 locations first, then the 2.5 `ext` ones.
    pub fn privacy(&self) -> Privacy<'_> {
        let regs = self.regs.as_ref();
        let regs_ext = regs.and_then(|r| r.ext.as_ref());
        let user = self.user.as_ref();
        let gdpr = regs
            .and_then(|r| r.gdpr)
            .or_else(|| regs_ext.and_then(|e| e.gdpr));
        let coppa = regs
            .and_then(|r| r.coppa)
            .or_else(|| regs_ext.and_then(|e| e.coppa));
        let gpp_sid = match regs {
            Some(r) if !r.gpp_sid.is_empty() => &r.gpp_sid[..],
            _ => regs_ext.map(|e| &e.gpp_sid[..]).unwrap_or_default(),
        };
        Privacy {
            gdpr: gdpr.map(|g| g == 1),
            consent: user
                .and_then(|u| u.consent.as_deref())
                .or_else(|| user.and_then(|u| u.ext.as_ref()?.consent.as_deref())),
            us_privacy: regs
                .and_then(|r| r.us_privacy.as_deref())
                .or_else(|| regs_ext.and_then(|e| e.us_privacy.as_deref())),
            gpp: regs
                .and_then(|r| r.gpp.as_deref())
                .or_else(|| regs_ext.and_then(|e| e.gpp.as_deref())),
            gpp_sid,
            coppa: coppa == Some(1),
        }
    }

    /// The supply chain object: `source.schain`, else `source.ext.schain`.
    pub fn schain(&self) -> Option<&'a RawValue> {
        let source = self.source.as_ref()?;
        source
            .schain
            .or_else(|| source.ext.as_ref().and_then(|e| e.schain))
            .map(|o| o.0)
    }

    /// The extended user ids array: `user.eids`, else `user.ext.eids`.
    pub fn eids(&self) -> Option<&'a RawValue> {
        let user = self.user.as_ref()?;
        user.eids
            .or_else(|| user.ext.as_ref().and_then(|e| e.eids))
            .map(|a| a.0)
    }
}

impl Imp<'_> {
    /// The floor in CPM; 0 when absent or null.
    pub fn bidfloor(&self) -> f64 {
        self.bidfloor.as_ref().and_then(|f| f.value).unwrap_or(0.0)
    }

    /// The floor rounded to the nearest micro; `None` above [`money::MAX_CPM`], a floor no
    /// bid can meet. Validation keeps floors non-negative and finite.
    pub fn bidfloor_cpm(&self) -> Option<CpmMicros> {
        CpmMicros::from_cpm(self.bidfloor())
    }

    /// The floor's currency; the spec default is USD.
    pub fn bidfloorcur(&self) -> &str {
        self.bidfloorcur.as_deref().unwrap_or("USD")
    }
}

/// Parses and validates a bid request body in one pass over the bytes.
///
/// The common case is a single `serde_json::from_slice`. Only when that fails is the body
/// parsed again, with path tracking, to tell the publisher which field is wrong.
pub fn parse(body: &[u8]) -> Result<BidRequest<'_>, InvalidRequest> {
    // serde derive also accepts a JSON array for a struct (fields by position), so the
    // top-level shape is checked by hand.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => InvalidRequest::new("", "body must be a JSON object"),
                Err(e) => not_json(&e),
            },
        );
    }
    // Checking UTF-8 once over the whole body is cheaper than serde_json checking each
    // string on its own (`from_slice`); a body that is not UTF-8 takes the slow path,
    // which says where it breaks.
    let fast = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str::<BidRequest<'_>>(text),
        Err(_) => serde_json::from_slice::<BidRequest<'_>>(body),
    };
    let req = match fast {
        Ok(req) => req,
        Err(e) => return Err(explain(body, e)),
    };
    crate::validate::validate(&req)?;
    Ok(req)
}

fn not_json(e: &serde_json::Error) -> InvalidRequest {
    InvalidRequest::new("", format!("body is not valid JSON: {e}"))
}

/// Turns a failed fast parse into an error naming the field.
fn explain(body: &[u8], fast: serde_json::Error) -> InvalidRequest {
    use serde_json::error::Category;
    if matches!(
        fast.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return not_json(&fast);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, BidRequest<'_>>(&mut de) {
        Err(e) => tracked_error(&e),
        // Cannot happen for the same bytes; fall back to the fast error without a path.
        Ok(_) => InvalidRequest::new("", fast.to_string()),
    }
}

/// Builds the error for a failed path-tracking parse.
///
/// The path points at the value being read when serde gave up. A duplicate key is only
/// noticed once its object is being assembled, so the key itself is added to the path.
/// `serde_path_to_error` writes the root as "."; our convention for it is "".
pub(crate) fn tracked_error(e: &serde_path_to_error::Error<serde_json::Error>) -> InvalidRequest {
    let message = e.inner().to_string();
    let mut field = e.path().to_string();
    if field == "." {
        field.clear();
    }
    let duplicate = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    if let Some(key) = duplicate {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(key);
    }
    InvalidRequest::new(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &str = r#"{
        "id": "req-1", "at": 1, "cur": ["USD"], "tmax": 120,
        "imp": [{"id": "1", "bidfloor": 0.03, "banner": {"w": 300, "h": 250, "pos": 0}}],
        "site": {"id": "102855", "page": "http://www.foobar.com/1234.html",
                 "publisher": {"id": "8953"}},
        "user": {"id": "55816b39"}
    }"#;

    #[test]
    fn parses_a_banner_request_borrowing_its_strings() {
        let req = parse(BANNER.as_bytes()).unwrap();
        assert_eq!(req.id, "req-1");
        assert!(matches!(req.id, Cow::Borrowed(_)));
        assert_eq!(req.tmax(), Some(120));
        assert_eq!(req.at(), Some(1));
        assert_eq!(req.cur(), ["USD"]);
        assert!(matches!(req.cur()[0], Cow::Borrowed(_)));
        let imp = &req.imp[0];
        assert_eq!(imp.bidfloor(), 0.03);
        assert_eq!(imp.bidfloor_cpm(), Some(CpmMicros::new(30_000)));
        assert_eq!(imp.bidfloorcur(), "USD");
        let banner = imp.banner.as_ref().unwrap();
        assert_eq!((banner.w, banner.h), (Some(300), Some(250)));
        let site = req.site.as_ref().unwrap();
        assert!(matches!(site.page, Some(Str(Cow::Borrowed(_)))));
        assert_eq!(site.publisher.as_ref().unwrap().id.as_deref(), Some("8953"));
    }

    #[test]
    fn spans_point_at_the_exchange_owned_values() {
        let body = BANNER.as_bytes();
        let req = parse(body).unwrap();
        let at = |s: Span| std::str::from_utf8(&body[s.start..s.end]).unwrap();
        assert_eq!(at(req.tmax.unwrap().span(body).unwrap()), "120");
        assert_eq!(at(req.at.unwrap().span(body).unwrap()), "1");
        assert_eq!(
            at(req.cur.as_ref().unwrap().span(body).unwrap()),
            r#"["USD"]"#
        );
        let floor = req.imp[0].bidfloor.unwrap();
        assert_eq!(at(floor.span(body).unwrap()), "0.03");
    }

    #[test]
    fn escaped_strings_are_owned_and_unescaped() {
        let body = br#"{"id":"a\"b","imp":[{"id":"1","banner":{}}],"cur":["U\u0053D"]}"#;
        let req = parse(body).unwrap();
        assert_eq!(req.id, "a\"b");
        assert!(matches!(req.id, Cow::Owned(_)));
        assert_eq!(req.cur(), ["USD"]);
    }

    #[test]
    fn null_exchange_fields_are_located_but_unset() {
        let body = br#"{"id":"r","tmax":null,"at":null,"cur":null,"imp":[{"id":"1","banner":{},"bidfloor":null}]}"#;
        let req = parse(body).unwrap();
        assert_eq!(req.tmax(), None);
        assert_eq!(req.at(), None);
        assert!(req.cur().is_empty());
        assert!(req.tmax.is_some() && req.at.is_some() && req.cur.is_some());
        assert_eq!(req.imp[0].bidfloor(), 0.0);
        assert_eq!(req.imp[0].bidfloor_cpm(), Some(CpmMicros::ZERO));
    }

    #[test]
    fn privacy_prefers_26_locations_and_falls_back_to_ext() {
        let body = br#"{"id":"r","imp":[{"id":"1","banner":{}}],
            "regs":{"gdpr":1,"us_privacy":"1YNN","ext":{"gdpr":0,"us_privacy":"1---","gpp":"G","gpp_sid":[2,6]}},
            "user":{"ext":{"consent":"CONSENT","eids":[{"source":"x"}]}},
            "source":{"schain":{"ver":"1.0"},"ext":{"schain":{"ver":"0.9"}}}}"#;
        let req = parse(body).unwrap();
        let p = req.privacy();
        assert_eq!(p.gdpr, Some(true));
        assert_eq!(p.us_privacy, Some("1YNN"));
        assert_eq!(p.gpp, Some("G"));
        assert_eq!(p.gpp_sid, [2, 6]);
        assert_eq!(p.consent, Some("CONSENT"));
        assert!(!p.coppa);
        assert_eq!(req.eids().unwrap().get(), r#"[{"source":"x"}]"#);
        assert_eq!(req.schain().unwrap().get(), r#"{"ver":"1.0"}"#);

        let body = br#"{"id":"r","imp":[{"id":"1","banner":{}}],
            "regs":{"coppa":1,"ext":{"gdpr":1}},"user":{"consent":"C26","eids":[],"ext":{"consent":"C25","eids":[1]}},
            "source":{"ext":{"schain":{"ver":"0.9"}}}}"#;
        let req = parse(body).unwrap();
        let p = req.privacy();
        assert_eq!(p.gdpr, Some(true));
        assert!(p.coppa);
        assert_eq!(p.consent, Some("C26"));
        assert_eq!(req.eids().unwrap().get(), "[]");
        assert_eq!(req.schain().unwrap().get(), r#"{"ver":"0.9"}"#);
        assert_eq!(
            parse(BANNER.as_bytes()).unwrap().privacy(),
            Privacy::default()
        );
    }

    #[test]
    fn unknown_fields_and_nulls_are_tolerated() {
        let body = br#"{"id":"r","foo":{"bar":[1,2,{"x":null}]},"bcat":null,
            "imp":[{"id":"1","banner":null,"video":{"mimes":["video/mp4"],"apis":[1]},"whatever":true}],
            "device":{"geo":null,"sua":{"mobile":1}}}"#;
        let req = parse(body).unwrap();
        assert!(req.bcat.is_empty());
        assert!(req.imp[0].banner.is_none());
        assert!(req.device.as_ref().unwrap().geo.is_none());
    }

    fn err(body: &str) -> InvalidRequest {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn not_json_and_not_objects_are_refused_without_a_field() {
        let e = err("malformed");
        assert_eq!(e.field, "");
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = err(r#"{"id":"r","imp":[}"#);
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = err(r#"{"id":"r","imp":[{"id":"1","banner":{}}]} trailing"#);
        assert!(e.message.contains("not valid JSON"), "{e}");
        for body in ["null", " [1,2]", "\"x\"", "12", "[]"] {
            let e = err(body);
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                ("", "body must be a JSON object")
            );
        }
        assert!(err("").message.contains("not valid JSON"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let cases = [
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{"w":"300"}}]}"#,
                "imp[0].banner.w",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{"format":[{"w":1},{"h":1.5}]}}]}"#,
                "imp[0].banner.format[1].h",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"regs":{"ext":"malformed"}}"#,
                "regs.ext",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"regs":{"ext":[]}}"#,
                "regs.ext",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"site":{"ext":[1]}}"#,
                "site.ext",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{},"ext":"x"}]}"#,
                "imp[0].ext",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"site":[]}"#,
                "site",
            ),
            (r#"{"id":"r","imp":[["1"]]}"#, "imp[0]"),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"tmax":1.5}"#,
                "tmax",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"tmax":"100"}"#,
                "tmax",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"at":true}"#,
                "at",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"cur":"USD"}"#,
                "cur",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"cur":[1]}"#,
                "cur",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":"1"}]}"#,
                "imp[0].bidfloor",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":1e999}]}"#,
                "imp[0].bidfloor",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","native":{"request":{"assets":[]}}}]}"#,
                "imp[0].native.request",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"user":{"eids":{}}}"#,
                "user.eids",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":{"schain":[]}}"#,
                "source.schain",
            ),
            (r#"{"id":7,"imp":[{"id":"1","banner":{}}]}"#, "id"),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{"battr":[1,-3]}}]}"#,
                "imp[0].banner.battr[1]",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","video":{"mimes":["v"],"battr":[-1]}}]}"#,
                "imp[0].video.battr[0]",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","native":{"request":"{}","battr":["1"]}}]}"#,
                "imp[0].native.battr[0]",
            ),
        ];
        for (body, field) in cases {
            let e = err(body);
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn a_negative_creative_attribute_is_refused_by_name() {
        let e = err(r#"{"id":"r","imp":[{"id":"1","audio":{"mimes":["a"],"battr":[4,-2]}}]}"#);
        assert_eq!(e.field, "imp[0].audio.battr[1]");
        assert_eq!(
            e.message,
            "invalid value: integer `-2`, expected u32 at line 1 column 63"
        );
        let req = parse(br#"{"id":"r","imp":[{"id":"1","banner":{"battr":[1,17]}}]}"#).unwrap();
        assert_eq!(*req.imp[0].banner.as_ref().unwrap().battr, [1, 17]);
    }

    #[test]
    fn duplicate_exchange_owned_keys_are_refused() {
        let cases = [
            (
                r#"{"id":"r","tmax":100,"imp":[{"id":"1","banner":{}}],"tmax":200}"#,
                "tmax",
            ),
            (
                r#"{"id":"r","cur":["USD"],"imp":[{"id":"1","banner":{}}],"c\u0075r":["EUR"]}"#,
                "cur",
            ),
            (
                r#"{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":1,"bidfloor":2}]}"#,
                "imp[0].bidfloor",
            ),
        ];
        for (body, field) in cases {
            let e = err(body);
            assert!(e.message.contains("duplicate field"), "{body}: {e}");
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }
}

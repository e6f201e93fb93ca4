//! Privacy scrubbing of the body a DSP receives: the user's and device's identifiers cut,
//! the IP truncated and precise geo cut or coarsened, as edits of the `device` and `user`
//! objects only, so the rest of the body is still the publisher's bytes.
//!
//! Which requests and DSPs need it is the exchange's decision (`exchange::privacy`); this
//! file only knows what each level removes.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::object::{members, rebuild, Keep, Member};
use super::Edit;

/// How much a body is scrubbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scrub {
    /// GDPR without consent, a US opt-out of sale or sharing: identifiers cut, IPv4 to /24,
    /// IPv6 to /56, `lat`/`lon` rounded to two decimals (about 1 km), `metro`, `city`, `zip`
    /// cut.
    Restricted,
    /// COPPA: as `Restricted`, but `lat` and `lon` are cut too.
    Coppa,
}

/// `device` members that identify the device, cut at every level.
const DEVICE_IDS: [&str; 7] = [
    "ifa", "dpidsha1", "dpidmd5", "didsha1", "didmd5", "macsha1", "macmd5",
];
/// `user` members that identify the user (or, as `yob` and `gender`, narrow one down).
const USER_IDS: [&str; 5] = ["id", "buyeruid", "yob", "gender", "eids"];
/// `geo` members finer than a region.
const GEO_PRECISE: [&str; 3] = ["metro", "city", "zip"];

/// The edits that scrub `top` (the body's top-level members) at `level`: `device` and
/// `user` rebuilt without what `level` removes. Empty when neither holds anything to remove.
pub(crate) fn edits(body: &[u8], top: &[Member<'_>], level: Scrub) -> Vec<Edit> {
    let mut edits = Vec::new();
    for m in top.iter().filter(|m| m.is_object()) {
        let scrub: fn(&[u8], &Member<'_>, Scrub) -> Keep = match m.key.as_ref() {
            "device" => device,
            "user" => user,
            _ => continue,
        };
        if let Keep::Value(text) = scrub(body, m, level) {
            edits.push(Edit {
                span: m.value,
                text,
            });
        }
    }
    edits
}

/// Rebuilds the object `m` with `decide`; `Keep::As` when nothing changed, and `Keep::Drop`
/// when its members cannot be read (then the whole object goes rather than leak).
fn object(body: &[u8], m: &Member<'_>, decide: impl FnMut(&Member<'_>) -> Keep) -> Keep {
    let Some(inner) = members(body, m.text()) else {
        return Keep::Drop;
    };
    let mut out = Vec::with_capacity(m.value.len());
    if rebuild(&mut out, body, &inner, &[], decide) {
        Keep::Value(out)
    } else {
        Keep::As
    }
}

fn device(body: &[u8], m: &Member<'_>, level: Scrub) -> Keep {
    object(body, m, |d| match d.key.as_ref() {
        k if DEVICE_IDS.contains(&k) => Keep::Drop,
        "ip" => ip(d, |t| {
            t.parse::<Ipv4Addr>().ok().map(|a| v4_24(a).to_string())
        }),
        "ipv6" => ip(d, |t| {
            t.parse::<Ipv6Addr>().ok().map(|a| v6_56(a).to_string())
        }),
        "geo" if d.is_object() => geo(body, d, level),
        _ => Keep::As,
    })
}

fn user(body: &[u8], m: &Member<'_>, level: Scrub) -> Keep {
    object(body, m, |u| match u.key.as_ref() {
        k if USER_IDS.contains(&k) => Keep::Drop,
        "geo" if u.is_object() => geo(body, u, level),
        // `ext` carries ids under many names (`eids`, `buyeruids`, `digitrust`, ...): only
        // the consent string, a signal rather than an identifier, stays.
        "ext" if u.is_object() => object(body, u, |e| match e.key.as_ref() {
            "consent" => Keep::As,
            _ => Keep::Drop,
        }),
        _ => Keep::As,
    })
}

fn geo(body: &[u8], m: &Member<'_>, level: Scrub) -> Keep {
    object(body, m, |g| match g.key.as_ref() {
        k if GEO_PRECISE.contains(&k) => Keep::Drop,
        "lat" | "lon" => match level {
            Scrub::Coppa => Keep::Drop,
            Scrub::Restricted => match g.text().parse::<f64>() {
                Ok(v) => Keep::Value(format!("{:.2}", v).into_bytes()),
                Err(_) => Keep::Drop,
            },
        },
        _ => Keep::As,
    })
}

/// An address member truncated by `truncate`, or cut when it is not a string `truncate`
/// reads (an unknown spelling is not sent on whole).
fn ip(m: &Member<'_>, truncate: impl FnOnce(&str) -> Option<String>) -> Keep {
    let text = serde_json::from_str::<&str>(m.text())
        .ok()
        .and_then(truncate);
    match text {
        Some(short) => {
            let mut out = Vec::with_capacity(short.len() + 2);
            crate::json::write_str(&mut out, &short);
            Keep::Value(out)
        }
        None => Keep::Drop,
    }
}

/// The /24 network of an IPv4 address: the last octet zeroed.
pub fn v4_24(a: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a) & 0xffff_ff00)
}

/// The /56 network of an IPv6 address: the low 72 bits zeroed.
pub fn v6_56(a: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) & !((1u128 << 72) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{object::top_level, Outbound, Splice};
    use crate::request::parse;
    use serde_json::{json, Value};

    fn scrubbed(body: &str, level: Scrub) -> Value {
        let req = parse(body.as_bytes()).unwrap();
        let top = top_level(body.as_bytes()).unwrap();
        let splice = Splice {
            edits: edits(body.as_bytes(), &top, level),
            members: Vec::new(),
        };
        let mut out = Vec::new();
        Outbound::with_splice(body.as_bytes(), &req, 1, "USD", &splice).render(50, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    const FULL: &str = r#"{"id":"r","imp":[{"id":"1","banner":{}}],"tmax":100,
        "device":{"ua":"UA","ip":"92.154.6.77","ipv6":"2001:0db8:85a3:12ab:8a2e:0370:7334:1",
          "ifa":"IFA","dpidsha1":"a","dpidmd5":"b","didsha1":"c","didmd5":"d","macsha1":"e","macmd5":"f",
          "geo":{"lat":51.499488,"lon":-0.128953,"country":"GBR","region":"ENG","metro":"m","city":"London","zip":"SW1","type":2},
          "ext":{"keep":1}},
        "user":{"id":"U","buyeruid":"B","yob":1980,"gender":"F","keywords":"k","eids":[{"source":"s"}],
          "geo":{"lat":1.005,"zip":"z"},"data":[{"id":"d"}],"consent":"C",
          "ext":{"consent":"C25","eids":[{"source":"x"}],"prebid":{"buyeruids":{"a":"b"}}}},
        "site":{"id":"s"}}"#;

    #[test]
    fn coppa_cuts_identifiers_and_precise_geo() {
        let v = scrubbed(FULL, Scrub::Coppa);
        assert_eq!(
            v["device"],
            json!({"ua":"UA","ip":"92.154.6.0","ipv6":"2001:db8:85a3:1200::",
                   "geo":{"country":"GBR","region":"ENG","type":2},"ext":{"keep":1}})
        );
        assert_eq!(
            v["user"],
            json!({"keywords":"k","geo":{},"data":[{"id":"d"}],"consent":"C",
                   "ext":{"consent":"C25"}})
        );
        assert_eq!(v["tmax"], 50);
        assert_eq!(v["site"], json!({"id":"s"}));
    }

    #[test]
    fn restricted_rounds_lat_lon_instead() {
        let v = scrubbed(FULL, Scrub::Restricted);
        assert_eq!(
            v["device"]["geo"],
            json!({"lat":51.50,"lon":-0.13,"country":"GBR","region":"ENG","type":2})
        );
        assert_eq!(v["user"]["geo"], json!({"lat":1.0}));
        assert!(v["device"].get("ifa").is_none());
    }

    #[test]
    fn nothing_to_remove_means_no_edit() {
        let body = r#"{"id":"r","imp":[{"id":"1","banner":{}}],"device":{"ua":"x","geo":{"country":"FRA"}},"user":{"keywords":"k"}}"#;
        let top = top_level(body.as_bytes()).unwrap();
        assert!(edits(body.as_bytes(), &top, Scrub::Coppa).is_empty());
    }

    #[test]
    fn unreadable_addresses_are_cut_not_forwarded() {
        let body = r#"{"id":"r","imp":[{"id":"1","banner":{}}],"device":{"ip":"ip","ipv6":"::g"}}"#;
        assert_eq!(scrubbed(body, Scrub::Restricted)["device"], json!({}));
    }

    #[test]
    fn networks() {
        assert_eq!(v4_24(Ipv4Addr::new(1, 2, 3, 4)), Ipv4Addr::new(1, 2, 3, 0));
        let a: Ipv6Addr = "2001:0000:130F:0000:0000:09C0:876A:130B".parse().unwrap();
        assert_eq!(v6_56(a).to_string(), "2001:0:130f::");
        let a: Ipv6Addr = "5165:6c58:9bc0:bb13:8b4f:01a1:2c55:ddb2".parse().unwrap();
        assert_eq!(v6_56(a).to_string(), "5165:6c58:9bc0:bb00::");
    }
}

//! Campaign identity (DSP name + `cid`) and its reversible encoding into Redis key names.

use serde::ser::SerializeStruct;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// A campaign: the DSP's configured name and the `cid` its bids carry.
///
/// Both parts are shared strings so keys are cheap to clone in the sync loop; the request path
/// never builds one (lookups take `&str`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignKey {
    /// The DSP's configured name.
    pub dsp: Arc<str>,
    /// The campaign id within that DSP.
    pub cid: Arc<str>,
}

impl CampaignKey {
    /// Builds a key from its two parts.
    pub fn new(dsp: &str, cid: &str) -> Self {
        CampaignKey {
            dsp: Arc::from(dsp),
            cid: Arc::from(cid),
        }
    }

    /// The Redis hash holding this campaign: `{prefix}:{dsp}:{cid}` with `%`, `:`, `{` and `}`
    /// percent-encoded in both parts, so the name splits back unambiguously and no part can
    /// form a cluster hash tag by accident.
    pub(crate) fn redis_key(&self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + self.dsp.len() + self.cid.len() + 2);
        out.push_str(prefix);
        out.push(':');
        escape_into(&self.dsp, &mut out);
        out.push(':');
        escape_into(&self.cid, &mut out);
        out
    }

    /// The Redis hash of one reconciliation bucket of this campaign:
    /// `{prefix}:recon:b:{dsp}:{cid}:{bucket_start_ms}`, parts escaped as in
    /// [`CampaignKey::redis_key`]. It has five separators after the prefix, a campaign hash
    /// exactly two, so the two never collide whatever the names.
    pub(crate) fn bucket_key(&self, prefix: &str, bucket_start_ms: u64) -> String {
        let mut out = String::with_capacity(prefix.len() + self.dsp.len() + self.cid.len() + 32);
        out.push_str(prefix);
        out.push_str(":recon:b:");
        escape_into(&self.dsp, &mut out);
        out.push(':');
        escape_into(&self.cid, &mut out);
        out.push(':');
        out.push_str(&bucket_start_ms.to_string());
        out
    }

    /// Inverse of [`CampaignKey::redis_key`]; `None` for a name this crate did not write.
    pub(crate) fn from_redis_key(prefix: &str, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(':')?;
        let (dsp, cid) = rest.split_once(':')?;
        if cid.contains(':') {
            return None;
        }
        Some(CampaignKey {
            dsp: Arc::from(unescape(dsp)?.as_str()),
            cid: Arc::from(unescape(cid)?.as_str()),
        })
    }
}

impl fmt::Display for CampaignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dsp, self.cid)
    }
}

impl Serialize for CampaignKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CampaignKey", 2)?;
        s.serialize_field("dsp", &*self.dsp)?;
        s.serialize_field("cid", &*self.cid)?;
        s.end()
    }
}

fn escape_into(part: &str, out: &mut String) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "3A" => ':',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_key_round_trips_awkward_names() {
        for (dsp, cid) in [
            ("acme", "c1"),
            ("a:b", "c:d:e"),
            ("100%", "{tag}"),
            ("%3A", "%%"),
            ("ünï", "€"),
            ("", ""),
        ] {
            let key = CampaignKey::new(dsp, cid);
            let name = key.redis_key("budget");
            assert_eq!(name.matches(':').count(), 2, "{name}");
            assert!(!name.contains('{') && !name.contains('}'));
            assert_eq!(CampaignKey::from_redis_key("budget", &name), Some(key));
        }
    }

    #[test]
    fn foreign_names_are_refused() {
        assert_eq!(CampaignKey::from_redis_key("budget", "other:a:b"), None);
        assert_eq!(CampaignKey::from_redis_key("budget", "budget:a"), None);
        assert_eq!(CampaignKey::from_redis_key("budget", "budget:a:b:c"), None);
        assert_eq!(CampaignKey::from_redis_key("budget", "budget:a%zz:b"), None);
        assert_eq!(CampaignKey::from_redis_key("budget", "budget:a%2:b"), None);
    }

    #[test]
    fn bucket_keys_never_look_like_campaign_keys() {
        let key = CampaignKey::new("recon", "b:x");
        let name = key.bucket_key("budget", 120_000);
        assert_eq!(name, "budget:recon:b:recon:b%3Ax:120000");
        assert_eq!(CampaignKey::from_redis_key("budget", &name), None);
        assert_ne!(
            CampaignKey::new("a:b", "c").bucket_key("p", 1),
            CampaignKey::new("a", "b:c").bucket_key("p", 1)
        );
    }

    #[test]
    fn serializes_as_two_strings() {
        let json = serde_json::to_string(&CampaignKey::new("acme", "c1")).unwrap();
        assert_eq!(json, r#"{"dsp":"acme","cid":"c1"}"#);
    }
}

//! Campaign identity (DSP name + `cid`), its group (the cluster hash tag its keys share) and
//! its reversible encoding into Redis key names.

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

    /// The campaign's group: CRC16 (the Redis Cluster slot hash) of the escaped `dsp:cid`,
    /// mod [`GROUPS`]. Every key a script touches for the campaign carries the group's hash
    /// tag, so it lives in one cluster slot with the others of its group.
    pub(crate) fn group(&self) -> u16 {
        let mut name = String::with_capacity(self.dsp.len() + self.cid.len() + 1);
        escape_into(&self.dsp, &mut name);
        name.push(':');
        escape_into(&self.cid, &mut name);
        crc16::State::<crc16::XMODEM>::calculate(name.as_bytes()) % GROUPS
    }

    /// The Redis hash holding this campaign: `{prefix}:{gNNNN}:{dsp}:{cid}` with `%`, `:`,
    /// `{` and `}` percent-encoded in both parts, so the name splits back unambiguously and
    /// no part can form a cluster hash tag by accident. Exactly two separators follow the
    /// group tag; every other key under a group tag has one, or three and more.
    pub(crate) fn redis_key(&self, prefix: &str) -> String {
        let mut out = group_prefix(prefix, self.group());
        escape_into(&self.dsp, &mut out);
        out.push(':');
        escape_into(&self.cid, &mut out);
        out
    }

    /// The campaign hash as the layout before hash tags named it (`{prefix}:{dsp}:{cid}`):
    /// only for migrating such a store.
    #[cfg(test)]
    pub(crate) fn legacy_redis_key(&self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + self.dsp.len() + self.cid.len() + 2);
        out.push_str(prefix);
        out.push(':');
        escape_into(&self.dsp, &mut out);
        out.push(':');
        escape_into(&self.cid, &mut out);
        out
    }

    /// The Redis hash of one reconciliation bucket of this campaign:
    /// `{prefix}:{gNNNN}:recon:b:{dsp}:{cid}:{bucket_start_ms}`, parts escaped as in
    /// [`CampaignKey::redis_key`]: five separators after the group tag, so it is never taken
    /// for a campaign hash.
    pub(crate) fn bucket_key(&self, prefix: &str, bucket_start_ms: u64) -> String {
        let mut out = group_prefix(prefix, self.group());
        out.push_str("recon:b:");
        escape_into(&self.dsp, &mut out);
        out.push(':');
        escape_into(&self.cid, &mut out);
        out.push(':');
        out.push_str(&bucket_start_ms.to_string());
        out
    }

    /// The campaign's field in the tracker's durable billed hashes: the DSP name's byte
    /// length, a colon, the DSP name, then the cid (`4:acmec1`), unambiguous whatever the
    /// names. The tracker writes the same (see the cluster layout in the README).
    pub(crate) fn billed_field(&self) -> String {
        format!("{}:{}{}", self.dsp.len(), self.dsp, self.cid)
    }

    /// Inverse of [`CampaignKey::redis_key`]; `None` for a name this crate did not write.
    pub(crate) fn from_redis_key(prefix: &str, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(":{g")?;
        let (_group, rest) = rest.split_once("}:")?;
        let key = split_pair(rest)?;
        (name == key.redis_key(prefix)).then_some(key)
    }

    /// Inverse of [`CampaignKey::legacy_redis_key`].
    pub(crate) fn from_legacy_redis_key(prefix: &str, name: &str) -> Option<Self> {
        split_pair(name.strip_prefix(prefix)?.strip_prefix(':')?)
    }

    /// Inverse of [`CampaignKey::bucket_key`]: the campaign and the bucket start.
    pub(crate) fn from_bucket_key(prefix: &str, name: &str) -> Option<(Self, u64)> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(":{g")?;
        let (_group, rest) = rest.split_once("}:recon:b:")?;
        let (pair, start) = rest.rsplit_once(':')?;
        let key = split_pair(pair)?;
        let start: u64 = start.parse().ok()?;
        (name == key.bucket_key(prefix, start)).then_some((key, start))
    }

    /// Inverse of the legacy bucket name `{prefix}:recon:b:{dsp}:{cid}:{start}`.
    pub(crate) fn from_legacy_bucket_key(prefix: &str, name: &str) -> Option<(Self, u64)> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(":recon:b:")?;
        let (pair, start) = rest.rsplit_once(':')?;
        Some((split_pair(pair)?, start.parse().ok()?))
    }
}

/// Campaign groups: 1024, so a cluster of up to 1024 masters can spread them over every shard
/// while a sync touches at most 1024 slots whatever the number of campaigns.
pub(crate) const GROUPS: u16 = 1024;

/// `{prefix}:{gNNNN}:`, the start of every key of group `group`.
pub(crate) fn group_prefix(prefix: &str, group: u16) -> String {
    let mut out = String::with_capacity(prefix.len() + 48);
    out.push_str(prefix);
    out.push_str(&format!(":{{g{group:04}}}:"));
    out
}

/// A session's name escaped for use inside a hash tag (no braces, no separators).
pub(crate) fn escape_session(session: &str) -> String {
    let mut out = String::with_capacity(session.len());
    escape_into(session, &mut out);
    out
}

fn split_pair(rest: &str) -> Option<CampaignKey> {
    let (dsp, cid) = rest.split_once(':')?;
    if cid.contains(':') {
        return None;
    }
    Some(CampaignKey {
        dsp: Arc::from(unescape(dsp)?.as_str()),
        cid: Arc::from(unescape(cid)?.as_str()),
    })
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
            let tag = format!("{{g{:04}}}", key.group());
            assert!(name.starts_with(&format!("budget:{tag}:")), "{name}");
            assert_eq!(name.matches(':').count(), 3, "{name}");
            assert_eq!(name.matches('{').count(), 1, "only the group tag: {name}");
            assert_eq!(
                CampaignKey::from_redis_key("budget", &name),
                Some(key.clone())
            );
            let legacy = key.legacy_redis_key("budget");
            assert_eq!(
                CampaignKey::from_legacy_redis_key("budget", &legacy),
                Some(key)
            );
        }
    }

    #[test]
    fn groups_follow_the_cluster_slot_hash() {
        // Redis Cluster: CLUSTER KEYSLOT "acme:c1" = 15837 (crc16 mod 16384); 1024 divides 16384.
        let key = CampaignKey::new("acme", "c1");
        assert_eq!(key.group(), 15837 % 1024);
        assert!(key.redis_key("p").starts_with("p:{g0477}:"));
        assert_eq!(CampaignKey::new("acme", "c1").billed_field(), "4:acmec1");
    }

    #[test]
    fn foreign_names_are_refused() {
        assert_eq!(
            CampaignKey::from_redis_key("budget", "other:{g0001}:a:b"),
            None
        );
        assert_eq!(CampaignKey::from_redis_key("budget", "budget:a:b"), None);
        assert_eq!(
            CampaignKey::from_redis_key("budget", "budget:{g0001}:a"),
            None
        );
        assert_eq!(
            CampaignKey::from_redis_key("budget", "budget:{g0001}:a:b:c"),
            None
        );
        // Right shape, wrong group for the name.
        let key = CampaignKey::new("a", "b");
        let wrong = (key.group() + 1) % GROUPS;
        let name = format!("budget:{{g{wrong:04}}}:a:b");
        assert_eq!(CampaignKey::from_redis_key("budget", &name), None);
        assert_eq!(
            CampaignKey::from_legacy_redis_key("budget", "budget:a%zz:b"),
            None
        );
        assert_eq!(
            CampaignKey::from_legacy_redis_key("budget", "budget:a%2:b"),
            None
        );
    }

    #[test]
    fn bucket_keys_never_look_like_campaign_keys() {
        let key = CampaignKey::new("recon", "b:x");
        let name = key.bucket_key("budget", 120_000);
        assert!(name.ends_with(":recon:b:recon:b%3Ax:120000"), "{name}");
        assert_eq!(CampaignKey::from_redis_key("budget", &name), None);
        assert_eq!(
            CampaignKey::from_bucket_key("budget", &name),
            Some((key.clone(), 120_000))
        );
        assert_eq!(
            CampaignKey::from_legacy_bucket_key("budget", "budget:recon:b:recon:b%3Ax:120000"),
            Some((key, 120_000))
        );
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

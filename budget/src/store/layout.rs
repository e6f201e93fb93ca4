//! The Redis key layout: every key name the Redis store reads or writes, in one place.
//!
//! Hash tags (the part in `{}`) decide a key's cluster slot. Everything a script touches for
//! a campaign lives under its group's tag `{gNNNN}` (see `CampaignKey::group`), so every
//! script call and pipeline stays in one slot; keys shared by the whole store are single keys
//! read and written by commands of their own. P is `budget.key_prefix`.
//!
//! Per campaign group `{g}`: campaign hashes `P:{g}:dsp:cid`, reconciliation buckets
//! `P:{g}:recon:b:dsp:cid:start`, the open-bucket set `P:{g}:recon:open:buckets`, a session's
//! last applied batch `P:{g}:recon:seq:SESSION` and the bucket size `P:{g}:recon:conf:bucket_ms`
//! (three or more separators after the tag, so none is ever taken for a campaign hash, which
//! has exactly two).
//!
//! Store-wide: the catalog `P:catalog` (campaign hash names), `P:recon:groups` (groups that
//! ever had an open bucket), `P:nodes` (sessions seen), `P:node:{SESSION}` (presence, with a
//! TTL) and `P:node:{SESSION}:reaped` (death marker), `P:store:id:current` and
//! `P:store:id:fence` (identity). Durable billed counts, written by the tracker under its own
//! prefix: `T:billed:{iNN}:BUCKET_START`, field `LEN:DSPCID`.
//!
//! The layout before hash tags (`P:dsp:cid`, catalog `P:campaigns`) is recognised by its
//! catalog and migrated once (see `migrate.rs`).

use crate::key::{escape_session, group_prefix, CampaignKey};

/// Impression groups of the durable billed counts: the first byte of the impression id.
pub(crate) const IMPRESSION_GROUPS: u16 = 256;

/// Key names for one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub prefix: String,
    /// The tracker's prefix for the durable billed counts.
    pub billed_prefix: String,
    pub catalog: String,
    pub recon_groups: String,
    pub nodes: String,
    pub identity: String,
    pub fence: String,
    pub legacy_catalog: String,
    pub legacy_open: String,
    pub legacy_size: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.to_owned(),
            billed_prefix: prefix.to_owned(),
            catalog: format!("{prefix}:catalog"),
            recon_groups: format!("{prefix}:recon:groups"),
            nodes: format!("{prefix}:nodes"),
            identity: format!("{prefix}:store:id:current"),
            fence: format!("{prefix}:store:id:fence"),
            legacy_catalog: format!("{prefix}:campaigns"),
            legacy_open: format!("{prefix}:recon:open:buckets"),
            legacy_size: format!("{prefix}:recon:conf:bucket_ms"),
        }
    }

    pub(crate) fn campaign(&self, key: &CampaignKey) -> String {
        key.redis_key(&self.prefix)
    }

    pub(crate) fn bucket(&self, key: &CampaignKey, start: u64) -> String {
        key.bucket_key(&self.prefix, start)
    }

    pub(crate) fn open_set(&self, group: u16) -> String {
        group_prefix(&self.prefix, group) + "recon:open:buckets"
    }

    pub(crate) fn bucket_size(&self, group: u16) -> String {
        group_prefix(&self.prefix, group) + "recon:conf:bucket_ms"
    }

    pub(crate) fn seq(&self, group: u16, session: &str) -> String {
        group_prefix(&self.prefix, group) + "recon:seq:" + session
    }

    pub(crate) fn presence(&self, session: &str) -> String {
        format!("{}:node:{{{}}}", self.prefix, escape_session(session))
    }

    pub(crate) fn death(&self, session: &str) -> String {
        self.presence(session) + ":reaped"
    }

    /// The tracker's durable billed hash of impression group `group` and one bucket.
    pub(crate) fn billed(&self, group: u16, bucket_start_ms: u64) -> String {
        format!(
            "{}:billed:{{i{group:02x}}}:{bucket_start_ms}",
            self.billed_prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = Layout::new("budget");
        let key = CampaignKey::new("acme", "c1");
        assert_eq!(l.campaign(&key), "budget:{g0477}:acme:c1");
        assert_eq!(l.open_set(477), "budget:{g0477}:recon:open:buckets");
        assert_eq!(l.seq(7, "n-1"), "budget:{g0007}:recon:seq:n-1");
        assert_eq!(l.presence("a{b}-1"), "budget:node:{a%7Bb%7D-1}");
        assert_eq!(l.death("n-1"), "budget:node:{n-1}:reaped");
        assert_eq!(l.billed(0x7f, 60_000), "budget:billed:{i7f}:60000");
        assert_eq!(
            CampaignKey::from_redis_key("budget", &l.open_set(477)),
            None
        );
    }
}

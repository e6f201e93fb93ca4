//! The Redis key layout of tracking, shared by every node and read by the budget crate's
//! reconciliation: dedup keys, the durable billed counts, all under one key prefix and spread
//! over 256 hash tags so a Redis Cluster places them on every shard.
//!
//! `P` is the tracker's key prefix (`[tracking] key_prefix`, default `budget.key_prefix`).
//! - impression dedup: `P:imp:{iNN}:ID`, click dedup: `P:clk:{iNN}:ID`, where `ID` is the
//!   32-hex-digit [`EventId`] and `NN` its first two hex digits (a SHA-256 byte: uniform);
//! - billed counts: hash `P:billed:{iNN}:BUCKET_START`, field [`billed_field`] (`LEN:DSPCID`),
//!   value = micros billed for auctions in the bucket `[BUCKET_START, + reconcile_bucket_ms)`,
//!   incremented by the same script that claims the impression (`lua/claim.lua`).

use std::fmt::Write;

use crate::dedup::EventId;
use crate::sign::Kind;

/// How many impression groups (hash tags) there are: one per value of the id's first byte.
pub const GROUPS: u16 = 256;

/// The hash tag of an event id: `i` and the id's first byte in two hex digits, e.g. `i7f`.
pub fn group_of(id: &EventId) -> u8 {
    id.first_byte()
}

/// The dedup key of `id`: `P:imp:{iNN}:ID` or `P:clk:{iNN}:ID`.
pub fn dedup_key(prefix: &str, kind: Kind, id: &EventId) -> String {
    let what = match kind {
        Kind::Impression => "imp",
        Kind::Click => "clk",
    };
    let mut key = String::with_capacity(prefix.len() + 48);
    // Writing into a String cannot fail.
    let _ = write!(key, "{prefix}:{what}:{{i{:02x}}}:{id}", group_of(id));
    key
}

/// The billed-count hash of impression group `group` and the reconciliation bucket starting
/// at `bucket_start_ms`: `P:billed:{iNN}:BUCKET_START`. Reconciliation sums a campaign's
/// field over all [`GROUPS`] groups.
pub fn billed_key(prefix: &str, group: u8, bucket_start_ms: u64) -> String {
    format!("{prefix}:billed:{{i{group:02x}}}:{bucket_start_ms}")
}

/// The field of campaign `(dsp, cid)` in a billed-count hash: the DSP name's byte length in
/// decimal, `:`, the DSP name, then the cid (`4:acmec1` for `acme`, `c1`). Unambiguous
/// whatever the names hold.
pub fn billed_field(dsp: &str, cid: &str) -> String {
    format!("{}:{dsp}{cid}", dsp.len())
}

/// The start of the reconciliation bucket holding `auction_ts_ms`.
pub fn bucket_start(auction_ts_ms: u64, bucket_ms: u64) -> u64 {
    let bucket_ms = bucket_ms.max(1);
    auction_ts_ms - auction_ts_ms % bucket_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::BidRef;

    #[test]
    fn layout() {
        assert_eq!(billed_field("acme", "c1"), "4:acmec1");
        assert_eq!(billed_field("ac", "mec1"), "2:acmec1");
        assert_eq!(
            billed_key("budget", 0x7f, 120_000),
            "budget:billed:{i7f}:120000"
        );
        assert_eq!(bucket_start(125_999, 60_000), 120_000);
        let id = EventId::new(&BidRef::default(), 60_000);
        let hex = id.to_string();
        let key = dedup_key("p", Kind::Impression, &id);
        assert_eq!(key, format!("p:imp:{{i{}}}:{hex}", &hex[..2]));
        assert!(dedup_key("p", Kind::Click, &id).starts_with("p:clk:{i"));
        assert_eq!(
            u16::from(group_of(&id)),
            u16::from_str_radix(&hex[..2], 16).unwrap()
        );
    }
}

//! Impression and click dedup: the stable event id, and the stores that remember which ids were
//! billed — Redis (`SET NX`, shared by every node, a single server or a cluster; an impression's
//! claim also counts its cost durably, see `keys.rs`) and a bounded in-memory set (one node).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use sha2::{Digest, Sha256};

use crate::keys;
use crate::metrics::TrackerMetrics;
use crate::redis_conn::RedisHandle;
use crate::sign::{BidRef, Kind};

/// The stable id of one impression (or of the click on it): a hash of the request id, imp id,
/// creative id and the auction's time bucket. Every copy of one tracking URL, fired from any
/// node, maps to the same id; the bucket keeps a request id that a publisher reuses much later
/// from colliding with the first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EventId([u8; 16]);

impl EventId {
    pub fn new(bid: &BidRef, bucket_ms: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"impression-id/v1\0");
        for s in [&bid.auction_id, &bid.imp_id, &bid.creative_id] {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        h.update((bid.auction_ts_ms / bucket_ms.max(1)).to_be_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// The id's first byte: its impression group (see `keys.rs`).
    pub fn first_byte(&self) -> u8 {
        self.0[0]
    }

    fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One claim on an event id: the event id, its kind, and the token of this sighting. The token
/// is random per sighting and travels with it into the spool; a store answers `First` again
/// for the same token, so a claim whose reply was lost (Redis applied it, then timed out) is
/// still billed when it is retried, and never mistaken for a duplicate of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimKey {
    pub id: EventId,
    pub kind: Kind,
    pub token: u128,
    /// What a new claim bills, counted durably by the Redis store in the same step as the
    /// claim. `None` for clicks and for impressions without a campaign or cost.
    pub bill: Option<Bill>,
}

/// The cost of one billable impression, for the durable billed counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    /// When its auction ran (the signed URL's time): picks the reconciliation bucket.
    pub auction_ts_ms: u64,
    /// The campaign's field, [`keys::billed_field`].
    pub field: String,
    pub micros: u64,
}

impl Bill {
    /// What an impression of `bid` bills: its clearing price for one impression, to its
    /// campaign; `None` without a campaign or cost (nothing a budget could reconcile).
    pub fn of(bid: &BidRef) -> Option<Self> {
        let micros = money::CpmMicros::new(bid.price_micros).cost_of_one().get();
        (micros > 0 && !bid.campaign.is_empty()).then(|| Bill {
            auction_ts_ms: bid.auction_ts_ms,
            field: keys::billed_field(&bid.dsp, &bid.campaign),
            micros,
        })
    }
}

/// Where and how long the Redis store keeps the durable billed counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BilledCounts {
    /// `budget.reconcile_bucket_ms`: the width of a count's auction-time bucket.
    pub bucket_ms: u64,
    /// How long a bucket's counts live after its last increment: `budget.settle_after_ms` +
    /// `budget.reconcile_retain_ms`, so settlement (after `settle_after_ms`) still finds them.
    pub retain_ms: u64,
}

impl Default for BilledCounts {
    /// The budget crate's defaults: 60 s buckets, kept 2 h 1 min + 24 h.
    fn default() -> Self {
        Self {
            bucket_ms: 60_000,
            retain_ms: 7_260_000 + 86_400_000,
        }
    }
}

/// The answer of a dedup store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sighting (or a retry of the first sighting's own token): bill it.
    First,
    /// Seen before: count it, bill nothing.
    Duplicate,
    /// The store cannot tell: the event is spooled, never guessed at.
    Unavailable,
}

/// Remembers billed event ids for `ttl`. Object-safe so the tracker holds either store.
pub trait DedupStore: Send + Sync {
    /// Claims one id at time `now_ms` (ms since the epoch; the memory store's clock).
    fn claim(&self, key: ClaimKey, now_ms: u64) -> BoxFuture<'_, Claim>;

    /// Claims several ids in one round trip; the answers are in `keys` order.
    fn claim_many<'a>(&'a self, keys: &'a [ClaimKey], now_ms: u64) -> BoxFuture<'a, Vec<Claim>>;

    /// Whether the store answers; also closes a store's breaker when it does.
    fn ping(&self) -> BoxFuture<'_, bool>;
}

/// Dedup in Redis (a single server or a cluster): `SET P:imp:{iNN}:ID token NX GET EX ttl`
/// (see `keys.rs`), and for a billable impression the same `SET` inside one script
/// (`lua/claim.lua`) that also adds its cost to `P:billed:{iNN}:BUCKET_START` on a new claim.
/// Needs Redis 7.0 or later (`NX` together with `GET`). Concurrent calls share one
/// multiplexed connection per node, which pipelines them on the wire; `claim_many` issues its
/// claims concurrently (a pipeline would cross slots on a cluster).
#[derive(Debug, Clone)]
pub struct RedisDedup {
    redis: RedisHandle,
    ttl_secs: u64,
    prefix: String,
    billed: BilledCounts,
    script: std::sync::Arc<redis::Script>,
}

impl RedisDedup {
    pub(crate) fn new(
        redis: RedisHandle,
        ttl_secs: u64,
        prefix: &str,
        billed: BilledCounts,
    ) -> Self {
        Self {
            redis,
            ttl_secs: ttl_secs.max(1),
            prefix: prefix.to_owned(),
            billed,
            script: std::sync::Arc::new(redis::Script::new(include_str!("lua/claim.lua"))),
        }
    }

    /// A store on `target` (connected lazily), every call bounded by `timeout`, entries kept
    /// `ttl_secs`, keys under `prefix`, billed counts as `billed` says.
    pub fn connect(
        target: &redislink::Target,
        timeout: std::time::Duration,
        ttl_secs: u64,
        prefix: &str,
        billed: BilledCounts,
    ) -> Result<Self, crate::Error> {
        let handle = RedisHandle::new(target, timeout, TrackerMetrics::default())?;
        Ok(Self::new(handle, ttl_secs, prefix, billed))
    }

    /// One claim, unguarded: the script for a billable impression, else a plain `SET NX`.
    async fn claim_raw(
        &self,
        mut conn: redislink::RedisConn,
        key: &ClaimKey,
    ) -> redis::RedisResult<Option<String>> {
        let dedup_key = keys::dedup_key(&self.prefix, key.kind, &key.id);
        match (&key.bill, key.kind) {
            (Some(bill), Kind::Impression) => {
                let start = keys::bucket_start(bill.auction_ts_ms, self.billed.bucket_ms);
                let billed_key = keys::billed_key(&self.prefix, keys::group_of(&key.id), start);
                self.script
                    .key(dedup_key)
                    .key(billed_key)
                    .arg(token_hex(key.token))
                    .arg(self.ttl_secs)
                    .arg(&bill.field)
                    .arg(bill.micros)
                    .arg(self.billed.retain_ms.div_ceil(1000).max(1))
                    .invoke_async(&mut conn)
                    .await
            }
            _ => {
                redis::cmd("SET")
                    .arg(dedup_key)
                    .arg(token_hex(key.token))
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(self.ttl_secs)
                    .query_async(&mut conn)
                    .await
            }
        }
    }
}

fn token_hex(token: u128) -> String {
    format!("{token:032x}")
}

/// `SET ... NX GET` answers nil when it set the key, else the value already there.
fn interpret(key: &ClaimKey, previous: Option<String>) -> Claim {
    match previous {
        None => Claim::First,
        Some(v) if v == token_hex(key.token) => Claim::First,
        Some(_) => Claim::Duplicate,
    }
}

impl DedupStore for RedisDedup {
    fn claim(&self, key: ClaimKey, _now_ms: u64) -> BoxFuture<'_, Claim> {
        async move {
            if !self.redis.is_healthy() {
                return Claim::Unavailable;
            }
            match self
                .redis
                .guard(self.claim_raw(self.redis.conn(), &key))
                .await
            {
                Ok(prev) => interpret(&key, prev),
                Err(_) => Claim::Unavailable,
            }
        }
        .boxed()
    }

    fn claim_many<'a>(&'a self, keys: &'a [ClaimKey], _now_ms: u64) -> BoxFuture<'a, Vec<Claim>> {
        async move {
            if keys.is_empty() {
                return Vec::new();
            }
            if !self.redis.is_healthy() {
                return vec![Claim::Unavailable; keys.len()];
            }
            // Concurrent calls on the multiplexed connection(s): pipelined on the wire, and
            // each routed to its own slot's node on a cluster. One timeout bounds them all.
            let conn = self.redis.conn();
            let all =
                futures::future::join_all(keys.iter().map(|k| self.claim_raw(conn.clone(), k)));
            match self.redis.guard(all.map(Ok::<_, redis::RedisError>)).await {
                Ok(answers) => keys
                    .iter()
                    .zip(answers)
                    .map(|(k, a)| match a {
                        Ok(prev) => interpret(k, prev),
                        Err(e) => {
                            tracing::warn!(error = %e, "redis claim failed");
                            Claim::Unavailable
                        }
                    })
                    .collect(),
                Err(_) => vec![Claim::Unavailable; keys.len()],
            }
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        self.redis.ping().boxed()
    }
}

/// Dedup on one node: a bounded set with TTL, sharded to keep lock hold times short. When full
/// of live entries it answers `Unavailable` rather than forgetting a live id (which could bill
/// a duplicate): the event is spooled and replayed once entries expire.
#[derive(Debug)]
pub struct MemoryDedup {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    ttl_ms: u64,
    /// Counts claims refused for a full set.
    full: metrics::Counter,
}

#[derive(Debug, Default)]
struct Shard {
    /// (kind tag, id) -> (expiry ms, token).
    live: HashMap<(u8, u128), (u64, u128)>,
    /// Insertion order with the expiry each entry had then; expiries only grow with insertion
    /// time, so expired entries are always at the front.
    order: VecDeque<((u8, u128), u64)>,
}

impl MemoryDedup {
    /// At most `capacity` live ids, each remembered for `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self::with_shards(capacity, ttl_ms, 64)
    }

    pub fn with_shards(capacity: usize, ttl_ms: u64, shards: usize) -> Self {
        let shards = shards.clamp(1, capacity.max(1));
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity.max(1).div_ceil(shards),
            ttl_ms,
            full: metrics::Counter::noop(),
        }
    }

    /// Counts refusals for a full set on `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: &TrackerMetrics) -> Self {
        self.full = metrics.memory_dedup_full.clone();
        self
    }

    /// Live entries (for metrics and tests); expired ones still held count until purged.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.live.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synchronous claim behind the trait.
    pub fn claim_now(&self, key: ClaimKey, now_ms: u64) -> Claim {
        let tag = match key.kind {
            Kind::Impression => 1u8,
            Kind::Click => 2u8,
        };
        let id = (tag, key.id.as_u128());
        // The low bits of a SHA-256 prefix are uniform, so they spread ids over the shards.
        let idx = (key.id.as_u128() % self.shards.len() as u128) as usize;
        let Ok(mut shard) = self.shards[idx].lock() else {
            // A poisoned lock means a panic elsewhere mid-update; the set cannot be trusted.
            return Claim::Unavailable;
        };
        shard.purge(now_ms);
        match shard.live.get(&id) {
            Some(&(expiry, token)) if expiry > now_ms => {
                return if token == key.token {
                    Claim::First
                } else {
                    Claim::Duplicate
                };
            }
            _ => {}
        }
        if shard.live.len() >= self.shard_capacity && !shard.live.contains_key(&id) {
            self.full.increment(1);
            return Claim::Unavailable;
        }
        let expiry = now_ms.saturating_add(self.ttl_ms);
        shard.live.insert(id, (expiry, key.token));
        shard.order.push_back((id, expiry));
        Claim::First
    }
}

impl Shard {
    fn purge(&mut self, now_ms: u64) {
        while let Some(&(id, expiry)) = self.order.front() {
            if expiry > now_ms {
                break;
            }
            self.order.pop_front();
            // The id may have been claimed again after expiring; only the entry this order
            // record describes is removed.
            if self.live.get(&id).is_some_and(|&(e, _)| e == expiry) {
                self.live.remove(&id);
            }
        }
    }
}

impl DedupStore for MemoryDedup {
    fn claim(&self, key: ClaimKey, now_ms: u64) -> BoxFuture<'_, Claim> {
        let claim = self.claim_now(key, now_ms);
        async move { claim }.boxed()
    }

    fn claim_many<'a>(&'a self, keys: &'a [ClaimKey], now_ms: u64) -> BoxFuture<'a, Vec<Claim>> {
        let claims = keys
            .iter()
            .map(|k| self.claim_now(k.clone(), now_ms))
            .collect();
        async move { claims }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(n: u32) -> BidRef {
        BidRef {
            auction_id: format!("req-{n}"),
            imp_id: "1".into(),
            creative_id: "cr".into(),
            auction_ts_ms: 1_000_000,
            ..BidRef::default()
        }
    }

    fn key(n: u32, token: u128) -> ClaimKey {
        ClaimKey {
            id: EventId::new(&bid(n), 60_000),
            kind: Kind::Impression,
            token,
            bill: None,
        }
    }

    #[test]
    fn id_is_stable_and_depends_on_what_it_should() {
        let a = bid(1);
        assert_eq!(EventId::new(&a, 60_000), EventId::new(&a.clone(), 60_000));
        let mut other_price = a.clone();
        other_price.price_micros = 5;
        other_price.auction_ts_ms += 1;
        assert_eq!(EventId::new(&a, 60_000), EventId::new(&other_price, 60_000));
        let mut later = a.clone();
        later.auction_ts_ms += 60_000;
        assert_ne!(EventId::new(&a, 60_000), EventId::new(&later, 60_000));
        let mut shifted = a.clone();
        shifted.auction_id = "req-".into();
        shifted.imp_id = "11".into();
        assert_ne!(EventId::new(&a, 60_000), EventId::new(&shifted, 60_000));
        assert_eq!(EventId::new(&a, 60_000).to_string().len(), 32);
    }

    #[test]
    fn memory_dedup_ttl() {
        let d = MemoryDedup::new(1000, 10_000);
        assert_eq!(d.claim_now(key(1, 1), 0), Claim::First);
        assert_eq!(d.claim_now(key(1, 2), 9_999), Claim::Duplicate);
        assert_eq!(
            d.claim_now(key(1, 1), 9_999),
            Claim::First,
            "own token is idempotent"
        );
        assert_eq!(
            d.claim_now(key(1, 3), 10_000),
            Claim::First,
            "expired entry is forgotten"
        );
        assert_eq!(d.claim_now(key(1, 4), 19_999), Claim::Duplicate);
        let click = ClaimKey {
            kind: Kind::Click,
            ..key(1, 9)
        };
        assert_eq!(
            d.claim_now(click.clone(), 19_999),
            Claim::First,
            "clicks have their own keys"
        );
    }

    #[test]
    fn memory_dedup_bound_refuses_instead_of_forgetting() {
        let d = MemoryDedup::with_shards(100, 10_000, 1);
        for n in 0..100 {
            assert_eq!(d.claim_now(key(n, 1), 1_000), Claim::First);
        }
        assert_eq!(d.len(), 100);
        assert_eq!(d.claim_now(key(100, 1), 2_000), Claim::Unavailable);
        // Live ids are still remembered while full.
        assert_eq!(d.claim_now(key(5, 2), 2_000), Claim::Duplicate);
        // Once they expire there is room again, and the bound still holds.
        assert_eq!(d.claim_now(key(100, 1), 11_000), Claim::First);
        assert_eq!(d.len(), 1);
        assert_eq!(d.claim_now(key(5, 2), 11_000), Claim::First);
    }

    #[test]
    fn memory_dedup_bound_holds_across_shards() {
        let d = MemoryDedup::new(256, 10_000);
        let firsts = (0..10_000)
            .filter(|&n| d.claim_now(key(n, 1), 0) == Claim::First)
            .count();
        assert!(firsts <= 256, "{firsts} ids held for a bound of 256");
        assert!(d.len() <= 256);
    }
}

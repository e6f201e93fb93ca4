//! Redis store: one hash per campaign, Lua scripts for every change, every call under a timeout.
//!
//! Layout (prefix `budget` by default): `budget:{dsp}:{cid}` is a hash with `budget`, `spent`,
//! `held`, `paused`, the daily fields `daily` (absent: no daily cap), `pacing`, `tz`, `day`
//! (`yyyymmdd`) and `day_spent`, and per session `node:{session}:granted|spent|returned|reclaimed`; the set
//! `budget:campaigns` lists the campaign hashes. A node's sync is one pipeline of `EVALSHA sync`
//! (one script per 256 campaigns, usually one), so one round trip per node and interval.
//! The script touches several campaign hashes, which Redis Cluster refuses across hash slots;
//! the rule inside is per campaign, so a cluster port only has to group keys by slot.
//!
//! Reconciliation (see `recon.rs`) adds, all with three or more separators after the prefix so
//! no name can be taken for a campaign hash: `budget:recon:b:{dsp}:{cid}:{start}` per bucket
//! (`c` the campaign hash, `charged`, `billed`, `settled`; expires `retain_ms` after it is
//! settled), the sorted set `budget:recon:open:buckets` of open buckets by start,
//! `budget:recon:seq:{session}` (last batch applied, expires after `retain_ms`) and
//! `budget:recon:conf:bucket_ms`. Campaign totals are `rc:*` fields of the campaign hash, so
//! the credit to `spent` and the totals change in one script.
//!
//! The store's identity (see `identity.rs`) is `budget:store:id:current` (a random id and the
//! creation time, written once with `SET NX`), and `budget:store:id:fence` is set by the first
//! node that finds the data lost; `adopt.lua` rewrites both with the stated campaigns.

use super::recon::{
    bucket_mismatch, BatchOutcome, BatchReply, ReconArgs, ReconBatch, ReconReply, ReconTotals,
    SettleReply,
};
use super::{
    CampaignState, Grant, NodeHold, StatedCampaign, Store, StoreIdentity, SyncItem, MAX_MICROS,
};
use crate::daily::{DailyChange, DailySettings, DayWindow, Pacing, DEFAULT_TIMEZONE};
use crate::key::CampaignKey;
use crate::Error;
use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, Script, ServerErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

/// Campaigns per script call: bounds how long one script keeps Redis busy.
const KEYS_PER_SCRIPT: usize = 256;

/// The reconciliation fields of a campaign hash, in [`ReconTotals`] order.
const RECON_FIELDS: [&str; 11] = [
    "rc:charged",
    "rc:billed",
    "rc:s_charged",
    "rc:s_billed",
    "rc:credited",
    "rc:uncredited",
    "rc:over",
    "rc:open",
    "rc:settled",
    "rc:late_charged",
    "rc:late_billed",
];

/// Budgets in Redis, shared by every node pointed at it.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    catalog: String,
    timeout: Duration,
    sync: Script,
    end_session: Script,
    budget: Script,
    daily: Script,
    pause: Script,
    reclaim: Script,
    recon_report: Script,
    recon_settle: Script,
    recon_open: String,
    recon_size: String,
    adopt: Script,
    identity_key: String,
    fence_key: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://host:port/db`). Connects lazily: a node starts while Redis is
    /// down and its calls fail within `timeout` until Redis answers. Connect and response are
    /// bounded by `timeout` too, and the manager retries a lost connection at most twice before
    /// the next call tries again, so a dead Redis never holds a call past its timeout.
    /// Must be called inside a tokio runtime (the connection manager spawns a task).
    pub fn open(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "RedisStore::open must be called inside a tokio runtime".to_owned(),
            ));
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisStore {
            conn,
            prefix: key_prefix.to_owned(),
            catalog: format!("{key_prefix}:campaigns"),
            timeout,
            sync: Script::new(include_str!("lua/sync.lua")),
            end_session: Script::new(include_str!("lua/end_session.lua")),
            budget: Script::new(include_str!("lua/budget.lua")),
            daily: Script::new(include_str!("lua/daily.lua")),
            pause: Script::new(include_str!("lua/pause.lua")),
            reclaim: Script::new(include_str!("lua/reclaim.lua")),
            recon_report: Script::new(include_str!("lua/recon_report.lua")),
            recon_settle: Script::new(include_str!("lua/recon_settle.lua")),
            recon_open: format!("{key_prefix}:recon:open:buckets"),
            recon_size: format!("{key_prefix}:recon:conf:bucket_ms"),
            adopt: Script::new(include_str!("lua/adopt.lua")),
            identity_key: format!("{key_prefix}:store:id:current"),
            fence_key: format!("{key_prefix}:store:id:fence"),
        })
    }

    /// Runs one call under the store's timeout.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    async fn sync_pipeline(
        &self,
        session: &str,
        items: &[SyncItem],
    ) -> Result<Vec<Vec<Vec<redis::Value>>>, Error> {
        let mut pipe = redis::pipe();
        for chunk in items.chunks(KEYS_PER_SCRIPT) {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.sync.get_hash())
                .arg(chunk.len());
            for item in chunk {
                cmd.arg(item.key.redis_key(&self.prefix));
            }
            cmd.arg(session);
            for item in chunk {
                cmd.arg(item.granted)
                    .arg(item.spent)
                    .arg(item.returned)
                    .arg(item.want);
                match &item.day {
                    Some(d) => cmd
                        .arg(&*d.tz)
                        .arg(d.id)
                        .arg(d.start_ms)
                        .arg(d.end_ms)
                        .arg(d.now_ms),
                    None => cmd.arg("").arg(0).arg(0).arg(0).arg(0),
                };
            }
        }
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Ok(replies) => Ok(replies),
            // Redis restarted or flushed its script cache: load and send again. Replaying the
            // whole pipeline is safe because every report is cumulative.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.sync.load_async(&mut conn).await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The batches, then the settlement, as one pipeline. Replies: one `{code, absent, late}`
    /// per batch, then `{settled, credited, uncredited, over, more}` if settling was asked.
    async fn reconcile_pipeline(
        &self,
        session: &str,
        batches: &[ReconBatch],
        args: &ReconArgs,
    ) -> Result<Vec<Vec<i64>>, Error> {
        let mut pipe = redis::pipe();
        let seq_key = format!("{}:recon:seq:{session}", self.prefix);
        let mut prev = 0;
        for batch in batches {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.recon_report.get_hash())
                .arg(3 + 2 * batch.items.len())
                .arg(&seq_key)
                .arg(&self.recon_size)
                .arg(&self.recon_open);
            for item in &batch.items {
                cmd.arg(item.key.redis_key(&self.prefix))
                    .arg(item.key.bucket_key(&self.prefix, item.bucket_start_ms));
            }
            cmd.arg(batch.seq)
                .arg(prev)
                .arg(args.bucket_ms)
                .arg(args.settle_after_ms)
                .arg(args.retain_ms)
                .arg(args.now_ms);
            for item in &batch.items {
                cmd.arg(item.bucket_start_ms)
                    .arg(item.charged)
                    .arg(item.billed);
            }
            prev = batch.seq;
        }
        let cutoff = args.settle_cutoff().filter(|_| args.max_settle > 0);
        if batches.is_empty() && cutoff.is_none() {
            return Ok(Vec::new());
        }
        if let Some(cutoff) = cutoff {
            pipe.cmd("EVALSHA")
                .arg(self.recon_settle.get_hash())
                .arg(1)
                .arg(&self.recon_open)
                .arg(cutoff)
                .arg(args.max_settle)
                .arg(args.retain_ms);
        }
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Ok(replies) => Ok(replies),
            // Replaying the whole pipeline is safe: batches apply once, settling is idempotent.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.recon_report.load_async(&mut conn).await?;
                self.recon_settle.load_async(&mut conn).await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn change_budget(
        &self,
        key: &CampaignKey,
        mode: &str,
        amount: u64,
        paused: bool,
        daily: &DailySettings,
    ) -> Result<i64, Error> {
        let mut conn = self.conn.clone();
        let reply: (i64, i64) = self
            .budget
            .key(key.redis_key(&self.prefix))
            .key(&self.catalog)
            .arg(mode)
            .arg(amount)
            .arg(if paused { "1" } else { "0" })
            .arg(MAX_MICROS)
            .arg(
                daily
                    .daily_budget_micros
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            )
            .arg(daily.pacing.as_str())
            .arg(&daily.timezone)
            .invoke_async(&mut conn)
            .await?;
        match reply {
            (code @ (0 | 1), _) => Ok(code),
            (-1, budget) => Err(Error::TooLarge(to_u64(budget))),
            (-2, committed) => Err(Error::BelowCommitted {
                budget: amount,
                committed: to_u64(committed),
            }),
            (code, _) => Err(Error::Protocol(format!("budget script answered {code}"))),
        }
    }

    async fn read_state(&self, key: &CampaignKey) -> Result<Option<CampaignState>, Error> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key.redis_key(&self.prefix))
            .query_async(&mut conn)
            .await?;
        parse_state(key, &fields)
    }

    async fn changed_state(&self, key: &CampaignKey) -> Result<CampaignState, Error> {
        self.read_state(key)
            .await?
            .ok_or_else(|| Error::NotFound(key.clone()))
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn parse_u64(fields: &HashMap<String, String>, name: &str) -> Result<u64, Error> {
    match fields.get(name) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| Error::Protocol(format!("field {name} holds {v:?}"))),
    }
}

fn parse_state(
    key: &CampaignKey,
    fields: &HashMap<String, String>,
) -> Result<Option<CampaignState>, Error> {
    if !fields.contains_key("budget") {
        return Ok(None);
    }
    let mut nodes: BTreeMap<&str, NodeHold> = BTreeMap::new();
    for (field, value) in fields {
        let Some(rest) = field.strip_prefix("node:") else {
            continue;
        };
        let Some((session, what)) = rest.rsplit_once(':') else {
            continue;
        };
        let hold = nodes.entry(session).or_insert_with(|| NodeHold {
            session: session.to_owned(),
            granted: 0,
            spent: 0,
            returned: 0,
            held: 0,
            reclaimed: false,
        });
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| Error::Protocol(format!("field {field} holds {value:?}")))
        };
        match what {
            "granted" => hold.granted = number()?,
            "spent" => hold.spent = number()?,
            "returned" => hold.returned = number()?,
            "reclaimed" => hold.reclaimed = value == "1",
            _ => {}
        }
    }
    Ok(Some(CampaignState {
        key: key.clone(),
        budget: parse_u64(fields, "budget")?,
        spent: parse_u64(fields, "spent")?,
        held: parse_u64(fields, "held")?,
        paused: fields.get("paused").is_some_and(|p| p == "1"),
        daily_budget: fields
            .contains_key("daily")
            .then(|| parse_u64(fields, "daily"))
            .transpose()?,
        pacing: Pacing::parse(fields.get("pacing").map_or("", String::as_str)),
        timezone: fields
            .get("tz")
            .cloned()
            .unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned()),
        day: parse_u64(fields, "day")?,
        day_spent: parse_u64(fields, "day_spent")?,
        nodes: nodes
            .into_values()
            .map(|mut n| {
                n.held = n.granted.saturating_sub(n.spent).saturating_sub(n.returned);
                n
            })
            .collect(),
    }))
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn parse_batch(reply: &[i64], bucket_ms: u64) -> Result<BatchReply, Error> {
    let outcome = match *reply {
        [1, ..] => BatchOutcome::Applied,
        [0, ..] => BatchOutcome::Duplicate,
        [-1, ..] => BatchOutcome::Blocked,
        [-2, size, _] => return Err(bucket_mismatch(bucket_ms, to_u64(size))),
        _ => return Err(Error::Protocol(format!("recon script answered {reply:?}"))),
    };
    match *reply {
        [_, absent, late] => Ok(BatchReply {
            outcome,
            absent: count(absent),
            late: count(late),
        }),
        _ => Err(Error::Protocol(format!("recon script answered {reply:?}"))),
    }
}

fn parse_settle(reply: &[i64]) -> Result<SettleReply, Error> {
    match *reply {
        [settled, credited, uncredited, over, more] => Ok(SettleReply {
            settled: count(settled),
            credited: to_u64(credited),
            uncredited: to_u64(uncredited),
            billed_beyond_charged: to_u64(over),
            more: more == 1,
        }),
        _ => Err(Error::Protocol(format!("settle script answered {reply:?}"))),
    }
}

fn parse_recon(values: &[Option<String>]) -> Result<ReconTotals, Error> {
    let mut n = [0u64; RECON_FIELDS.len()];
    for ((slot, value), name) in n.iter_mut().zip(values).zip(RECON_FIELDS) {
        if let Some(v) = value {
            // HINCRBY keeps signed integers; a hand-edited negative reads as zero.
            let parsed: i64 = v
                .parse()
                .map_err(|_| Error::Protocol(format!("field {name} holds {v:?}")))?;
            *slot = to_u64(parsed);
        }
    }
    let [charged, billed, settled_charged, settled_billed, credited, uncredited, over, open, settled, late_charged, late_billed] =
        n;
    Ok(ReconTotals {
        charged,
        billed,
        settled_charged,
        settled_billed,
        credited,
        uncredited,
        billed_beyond_charged: over,
        open_buckets: open,
        settled_buckets: settled,
        late_charged,
        late_billed,
    })
}

fn parse_grant(reply: &[redis::Value]) -> Result<Option<Grant>, Error> {
    let bad = || Error::Protocol(format!("sync script answered {reply:?}"));
    let n = |i: usize| -> Result<i64, Error> {
        reply
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
            .ok_or_else(bad)
    };
    match n(0)? {
        0 => return Ok(None),
        1 if reply.len() == 12 => {}
        _ => return Err(bad()),
    }
    let timezone = redis::from_redis_value_ref::<String>(&reply[11]).map_err(|_| bad())?;
    let daily = n(7)?;
    Ok(Some(Grant {
        granted: to_u64(n(1)?),
        budget: to_u64(n(2)?),
        spent: to_u64(n(3)?),
        held: to_u64(n(4)?),
        paused: n(5)? == 1,
        room: to_u64(n(6)?),
        daily_budget: (daily >= 0).then(|| to_u64(daily)),
        day: to_u64(n(8)?),
        day_spent: to_u64(n(9)?),
        pacing: if n(10)? == 1 {
            Pacing::Even
        } else {
            Pacing::Asap
        },
        timezone,
    }))
}

impl Store for RedisStore {
    fn sync<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, Result<Vec<Option<Grant>>, Error>> {
        self.timed(async move {
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let replies = self.sync_pipeline(session, items).await?;
            let grants = replies
                .iter()
                .flatten()
                .map(|r| parse_grant(r))
                .collect::<Result<Vec<_>, _>>()?;
            if grants.len() != items.len() {
                return Err(Error::Protocol(format!(
                    "{} answers for {} campaigns",
                    grants.len(),
                    items.len()
                )));
            }
            Ok(grants)
        })
        .boxed()
    }

    fn end_session<'a>(
        &'a self,
        session: &'a str,
        keys: &'a [CampaignKey],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            for chunk in keys.chunks(KEYS_PER_SCRIPT) {
                let mut call = self.end_session.prepare_invoke();
                for key in chunk {
                    call.key(key.redis_key(&self.prefix));
                }
                let _removed: i64 = call.arg(session).invoke_async(&mut conn).await?;
            }
            Ok(())
        })
        .boxed()
    }

    fn campaigns(&self) -> BoxFuture<'_, Result<Vec<CampaignKey>, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let names: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&self.catalog)
                .query_async(&mut conn)
                .await?;
            Ok(names
                .iter()
                .filter_map(|n| CampaignKey::from_redis_key(&self.prefix, n))
                .collect())
        })
        .boxed()
    }

    fn seed_if_absent<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
        paused: bool,
        daily: &'a DailySettings,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.timed(async move {
            if let Some(d) = daily.daily_budget_micros.filter(|d| *d > MAX_MICROS) {
                return Err(Error::TooLarge(d));
            }
            Ok(self
                .change_budget(key, "seed", budget, paused, daily)
                .await?
                == 1)
        })
        .boxed()
    }

    fn set_daily<'a>(
        &'a self,
        key: &'a CampaignKey,
        change: &'a DailyChange,
        day: &'a DayWindow,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let reply: (i64, i64) = self
                .daily
                .key(key.redis_key(&self.prefix))
                .arg(if change.daily_budget_micros.is_some() {
                    "1"
                } else {
                    "0"
                })
                .arg(
                    change
                        .daily_budget_micros
                        .flatten()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                )
                .arg(change.pacing.map_or("", Pacing::as_str))
                .arg(change.timezone.as_deref().unwrap_or(""))
                .arg(&*day.tz)
                .arg(day.id)
                .arg(MAX_MICROS)
                .invoke_async(&mut conn)
                .await?;
            match reply {
                (1, _) => self.changed_state(key).await,
                (0, _) => Err(Error::NotFound(key.clone())),
                (-1, daily) => Err(Error::TooLarge(to_u64(daily))),
                (-2, committed) => Err(Error::DailyBelowCommitted {
                    daily: change.daily_budget_micros.flatten().unwrap_or(0),
                    committed: to_u64(committed),
                }),
                (code, _) => Err(Error::Protocol(format!("daily script answered {code}"))),
            }
        })
        .boxed()
    }

    fn set_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        self.timed(async move {
            self.change_budget(key, "set", budget, false, &DailySettings::default())
                .await?;
            self.changed_state(key).await
        })
        .boxed()
    }

    fn add_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        micros: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        self.timed(async move {
            if micros > MAX_MICROS {
                return Err(Error::TooLarge(micros));
            }
            self.change_budget(key, "add", micros, false, &DailySettings::default())
                .await?;
            self.changed_state(key).await
        })
        .boxed()
    }

    fn set_paused<'a>(
        &'a self,
        key: &'a CampaignKey,
        paused: bool,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .pause
                .key(key.redis_key(&self.prefix))
                .arg(if paused { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await?;
            if done != 1 {
                return Err(Error::NotFound(key.clone()));
            }
            self.changed_state(key).await
        })
        .boxed()
    }

    fn state<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<CampaignState>, Error>> {
        self.timed(self.read_state(key)).boxed()
    }

    fn reclaim<'a>(
        &'a self,
        key: &'a CampaignKey,
        session: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let released: i64 = self
                .reclaim
                .key(key.redis_key(&self.prefix))
                .arg(session)
                .invoke_async(&mut conn)
                .await?;
            if released < 0 {
                return Err(Error::NotFound(key.clone()));
            }
            Ok(to_u64(released))
        })
        .boxed()
    }

    fn reconcile<'a>(
        &'a self,
        session: &'a str,
        batches: &'a [ReconBatch],
        args: &'a ReconArgs,
    ) -> BoxFuture<'a, Result<ReconReply, Error>> {
        self.timed(async move {
            args.check()?;
            let replies = self.reconcile_pipeline(session, batches, args).await?;
            let settling = replies.len() > batches.len();
            if replies.len() != batches.len() + usize::from(settling) {
                return Err(Error::Protocol(format!(
                    "{} answers for {} batches",
                    replies.len(),
                    batches.len()
                )));
            }
            let batches = replies[..batches.len()]
                .iter()
                .map(|r| parse_batch(r, args.bucket_ms))
                .collect::<Result<Vec<_>, _>>()?;
            let settle = match replies.last().filter(|_| settling) {
                Some(r) => parse_settle(r)?,
                None => SettleReply::default(),
            };
            Ok(ReconReply { batches, settle })
        })
        .boxed()
    }

    fn reconciliation<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<ReconTotals>, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let mut fields: Vec<&str> = vec!["budget"];
            fields.extend(RECON_FIELDS);
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(key.redis_key(&self.prefix))
                .arg(&fields)
                .query_async(&mut conn)
                .await?;
            match values.split_first() {
                Some((Some(_budget), rest)) => Ok(Some(parse_recon(rest)?)),
                Some((None, _)) => Ok(None),
                None => Err(Error::Protocol("HMGET answered nothing".to_owned())),
            }
        })
        .boxed()
    }

    fn identity(&self) -> BoxFuture<'_, Result<StoreIdentity, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let (id, fence): (Option<String>, Option<String>) = redis::cmd("MGET")
                .arg(&self.identity_key)
                .arg(&self.fence_key)
                .query_async(&mut conn)
                .await?;
            Ok(StoreIdentity {
                id,
                fenced: fence.is_some(),
            })
        })
        .boxed()
    }

    fn init_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let (held,): (Option<String>,) = redis::pipe()
                .cmd("SET")
                .arg(&self.identity_key)
                .arg(id)
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&self.identity_key)
                .query_async(&mut conn)
                .await?;
            held.ok_or_else(|| Error::Protocol("the identity vanished as it was written".into()))
        })
        .boxed()
    }

    fn fence<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let _: Option<String> = redis::cmd("SET")
                .arg(&self.fence_key)
                .arg(reason)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .boxed()
    }

    fn adopt<'a>(
        &'a self,
        id: &'a str,
        campaigns: &'a [StatedCampaign],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.timed(async move {
            let mut conn = self.conn.clone();
            let mut call = self.adopt.prepare_invoke();
            call.key(&self.identity_key)
                .key(&self.fence_key)
                .key(&self.catalog)
                .key(&self.recon_open)
                .arg(id);
            for c in campaigns {
                if c.budget > MAX_MICROS || c.spent > MAX_MICROS {
                    return Err(Error::TooLarge(c.budget.max(c.spent)));
                }
                call.key(c.key.redis_key(&self.prefix))
                    .arg(c.budget)
                    .arg(c.spent)
                    .arg(if c.paused { "1" } else { "0" })
                    .arg(
                        c.daily
                            .daily_budget_micros
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                    )
                    .arg(c.daily.pacing.as_str())
                    .arg(&c.daily.timezone);
            }
            let written: i64 = call.invoke_async(&mut conn).await?;
            if usize::try_from(written).ok() != Some(campaigns.len()) {
                return Err(Error::Protocol(format!(
                    "adopt wrote {written} of {} campaigns",
                    campaigns.len()
                )));
            }
            Ok(())
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_campaign_hash() {
        let fields: HashMap<String, String> = [
            ("budget", "1000"),
            ("spent", "200"),
            ("held", "300"),
            ("paused", "0"),
            ("node:a:b-1:granted", "500"),
            ("node:a:b-1:spent", "200"),
            ("node:a:b-1:returned", "0"),
            ("node:x-2:granted", "0"),
            ("node:x-2:reclaimed", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let key = CampaignKey::new("d", "c");
        let state = parse_state(&key, &fields).unwrap().unwrap();
        assert_eq!((state.budget, state.spent, state.held), (1000, 200, 300));
        assert_eq!(state.nodes.len(), 2);
        assert_eq!(state.nodes[0].session, "a:b-1");
        assert_eq!(state.nodes[0].held, 300);
        assert!(state.nodes[1].reclaimed);
        assert!(parse_state(&key, &HashMap::new()).unwrap().is_none());
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let opened = RedisStore::open("redis://127.0.0.1:1", "budget", Duration::from_millis(10));
        assert!(matches!(opened, Err(Error::Config(_))));
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        let fields: HashMap<String, String> = [("budget", "1e+15")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let key = CampaignKey::new("d", "c");
        assert!(matches!(
            parse_state(&key, &fields),
            Err(Error::Protocol(_))
        ));
        let int = redis::Value::Int;
        assert!(parse_grant(&[int(1), int(2)]).is_err());
        assert_eq!(parse_grant(&[int(0)]).unwrap(), None);
    }

    #[test]
    fn reconcile_replies_parse_or_fail_cleanly() {
        let r = parse_batch(&[1, 2, 3], 60_000).unwrap();
        assert_eq!((r.outcome, r.absent, r.late), (BatchOutcome::Applied, 2, 3));
        assert_eq!(
            parse_batch(&[0, 0, 0], 60_000).unwrap().outcome,
            BatchOutcome::Duplicate
        );
        assert_eq!(
            parse_batch(&[-1, 0, 0], 60_000).unwrap().outcome,
            BatchOutcome::Blocked
        );
        assert!(matches!(
            parse_batch(&[-2, 30_000, 0], 60_000),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            parse_batch(&[7, 0, 0], 1),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(parse_batch(&[1], 1), Err(Error::Protocol(_))));
        let s = parse_settle(&[2, 500, 0, 7, 1]).unwrap();
        assert_eq!(
            (s.settled, s.credited, s.billed_beyond_charged),
            (2, 500, 7)
        );
        assert!(s.more);
        assert!(parse_settle(&[1, 2]).is_err());

        let mut values: Vec<Option<String>> = vec![None; RECON_FIELDS.len()];
        values[0] = Some("700".to_owned());
        values[2] = Some("300".to_owned());
        values[7] = Some("-1".to_owned());
        let t = parse_recon(&values).unwrap();
        assert_eq!(
            (t.charged, t.pending_charged(), t.open_buckets),
            (700, 400, 0)
        );
        values[1] = Some("1e+15".to_owned());
        assert!(matches!(parse_recon(&values), Err(Error::Protocol(_))));
    }
}

//! Redis store: one hash per campaign, Lua scripts for every change, every call under a
//! timeout, over a single Redis or a Redis Cluster through the same code.
//!
//! The key layout is in `layout.rs`: a campaign's keys share its group's hash tag, so every
//! script call stays in one slot. A campaign hash holds `budget`, `spent`, `held`, `paused`,
//! the daily fields `daily` (absent: no daily cap), `pacing`, `tz`, `day` (`yyyymmdd`) and
//! `day_spent`,
//! per session `node:{session}:granted|spent|returned|reclaimed` and the reconciliation totals
//! (`rc:*`). A node's sync is one `EVALSHA sync` per group with campaigns to sync (at most 256
//! campaigns per call), every group's call issued at once, each under its own timeout: a group
//! that fails keeps its counts for the next round. Reconciliation is in `redis_recon.rs`, node
//! presence and the reaping of dead sessions in `redis_presence.rs`, the one-time move of a
//! store written before hash tags in `migrate.rs`.
//!
//! The store's identity (see `identity.rs`) is `P:store:id:current` (a random id and the
//! creation time, written once with `SET NX`), and `P:store:id:fence` is set by the first node
//! that finds the data lost; an adoption rewrites every group, then the identity, and lifts the
//! fence last.

use super::layout::Layout;
use super::recon::{
    bucket_mismatch, BatchOutcome, BatchReply, ReconArgs, ReconBatch, ReconReply, ReconTotals,
    SettleReply,
};
use super::{
    CampaignState, Grant, NodeHold, PartialSync, Presence, Reap, StatedCampaign, Store,
    StoreIdentity, SyncAnswer, SyncItem, MAX_MICROS,
};
use crate::daily::{DailyChange, DailySettings, DayWindow, Pacing, DEFAULT_TIMEZONE};
use crate::key::CampaignKey;
use crate::Error;
use futures::future::{join_all, BoxFuture, FutureExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, Pipeline, Script, ScriptInvocation, ServerErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Campaigns per script call: bounds how long one script keeps Redis busy.
pub(crate) const KEYS_PER_SCRIPT: usize = 256;

/// The reconciliation fields of a campaign hash, in [`ReconTotals`] order.
pub(crate) const RECON_FIELDS: [&str; 11] = [
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

/// The scripts, loaded lazily per Redis (`EVALSHA`, then `SCRIPT LOAD` on `NOSCRIPT`).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub sync: Script,
    pub end_session: Script,
    pub budget: Script,
    pub daily: Script,
    pub pause: Script,
    pub reclaim: Script,
    pub recon_report: Script,
    pub recon_settle: Script,
    pub adopt: Script,
    pub presence: Script,
    pub reap_mark: Script,
    pub reap: Script,
    pub migrate: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            sync: Script::new(include_str!("lua/sync.lua")),
            end_session: Script::new(include_str!("lua/end_session.lua")),
            budget: Script::new(include_str!("lua/budget.lua")),
            daily: Script::new(include_str!("lua/daily.lua")),
            pause: Script::new(include_str!("lua/pause.lua")),
            reclaim: Script::new(include_str!("lua/reclaim.lua")),
            recon_report: Script::new(include_str!("lua/recon_report.lua")),
            recon_settle: Script::new(include_str!("lua/recon_settle.lua")),
            adopt: Script::new(include_str!("lua/adopt.lua")),
            presence: Script::new(include_str!("lua/presence.lua")),
            reap_mark: Script::new(include_str!("lua/reap_mark.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            migrate: Script::new(include_str!("lua/migrate.lua")),
        }
    }
}

/// Budgets in Redis, shared by every node pointed at it, over any async Redis connection:
/// a single server's [`ConnectionManager`] ([`RedisStore::open`]) or a cluster connection
/// ([`RedisStore::with_connection`]).
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    pub(crate) conn: C,
    pub(crate) keys: Arc<Layout>,
    pub(crate) timeout: Duration,
    pub(crate) scripts: Arc<Scripts>,
    /// Set once the store's layout was checked (and an old one migrated).
    pub(crate) layout_checked: Arc<tokio::sync::OnceCell<()>>,
    /// Groups this store value listed in `P:recon:groups`, and when (see `redis_recon.rs`).
    pub(crate) listed_groups: Arc<std::sync::Mutex<HashMap<u16, std::time::Instant>>>,
}

impl<C> std::fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore<ConnectionManager> {
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
        Ok(RedisStore::with_connection(conn, key_prefix, timeout))
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store over `conn` (a single server's or a cluster's connection), keys under
    /// `key_prefix`, every call bounded by `timeout` whatever the connection's own settings.
    pub fn with_connection(conn: C, key_prefix: &str, timeout: Duration) -> Self {
        RedisStore {
            conn,
            keys: Arc::new(Layout::new(key_prefix)),
            timeout,
            scripts: Arc::new(Scripts::new()),
            layout_checked: Arc::new(tokio::sync::OnceCell::new()),
            listed_groups: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Reads the tracker's durable billed counts under `prefix` (the tracker's key prefix)
    /// instead of this store's own prefix.
    pub fn with_billed_prefix(mut self, prefix: &str) -> Self {
        let mut keys = (*self.keys).clone();
        keys.billed_prefix = prefix.to_owned();
        self.keys = Arc::new(keys);
        self
    }

    /// Runs one call under the store's timeout.
    pub(crate) async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// One command under the timeout.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.timed(async {
            let mut conn = self.conn.clone();
            Ok(cmd.query_async(&mut conn).await?)
        })
        .await
    }

    /// One script call under the timeout (loaded on `NOSCRIPT` and sent again).
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.timed(async {
            let mut conn = self.conn.clone();
            Ok(call.invoke_async(&mut conn).await?)
        })
        .await
    }

    /// One pipeline (all in one slot) under the timeout; on `NOSCRIPT` the scripts it uses
    /// are loaded and the whole pipeline is sent again, which every caller makes safe (reports
    /// are cumulative or numbered, settling is idempotent).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        uses: &[&Script],
    ) -> Result<T, Error> {
        self.timed(async {
            let mut conn = self.conn.clone();
            match pipe.query_async(&mut conn).await {
                Ok(replies) => Ok(replies),
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    for script in uses {
                        script.load_async(&mut conn).await?;
                    }
                    Ok(pipe.query_async(&mut conn).await?)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Item indexes by campaign group, in chunks of at most [`KEYS_PER_SCRIPT`].
    fn by_group<'i>(keys: impl Iterator<Item = &'i CampaignKey>) -> Vec<(u16, Vec<usize>)> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            groups.entry(key.group()).or_default().push(i);
        }
        let mut out = Vec::with_capacity(groups.len());
        for (group, idx) in groups {
            for chunk in idx.chunks(KEYS_PER_SCRIPT) {
                out.push((group, chunk.to_vec()));
            }
        }
        out
    }

    /// One group's sync call: the campaigns at `idx`.
    async fn sync_group(
        &self,
        session: &str,
        items: &[SyncItem],
        idx: &[usize],
    ) -> Result<Vec<Vec<redis::Value>>, Error> {
        let mut call = self.scripts.sync.prepare_invoke();
        for &i in idx {
            call.key(self.keys.campaign(&items[i].key));
        }
        call.arg(session);
        for &i in idx {
            let item = &items[i];
            call.arg(item.granted)
                .arg(item.spent)
                .arg(item.returned)
                .arg(item.want);
            match &item.day {
                Some(d) => call
                    .arg(&*d.tz)
                    .arg(d.id)
                    .arg(d.start_ms)
                    .arg(d.end_ms)
                    .arg(d.now_ms),
                None => call.arg("").arg(0).arg(0).arg(0).arg(0),
            };
        }
        self.eval(&call).await
    }

    async fn sync_all(&self, session: &str, items: &[SyncItem]) -> PartialSync {
        let groups = Self::by_group(items.iter().map(|i| &i.key));
        let calls = groups
            .iter()
            .map(|(_, idx)| self.sync_group(session, items, idx));
        let replies = join_all(calls).await;
        let mut answers = vec![SyncAnswer::Unanswered; items.len()];
        let mut error = None;
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let parsed = reply.and_then(|rows| {
                if rows.len() != idx.len() {
                    return Err(Error::Protocol(format!(
                        "{} answers for {} campaigns",
                        rows.len(),
                        idx.len()
                    )));
                }
                rows.iter()
                    .map(|r| parse_grant(r))
                    .collect::<Result<Vec<_>, _>>()
            });
            match parsed {
                Ok(grants) => {
                    for (&i, grant) in idx.iter().zip(grants) {
                        answers[i] = grant.map_or(SyncAnswer::Absent, SyncAnswer::Granted);
                    }
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        PartialSync { answers, error }
    }

    async fn change_budget(
        &self,
        key: &CampaignKey,
        mode: &str,
        amount: u64,
        paused: bool,
        daily: &DailySettings,
    ) -> Result<i64, Error> {
        let name = self.keys.campaign(key);
        let mut call = self.scripts.budget.prepare_invoke();
        call.key(&name)
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
            .arg(&daily.timezone);
        let reply: (i64, i64) = self.eval(&call).await?;
        let code = match reply {
            (code @ (0 | 1), _) => code,
            (-1, budget) => return Err(Error::TooLarge(to_u64(budget))),
            (-2, committed) => {
                return Err(Error::BelowCommitted {
                    budget: amount,
                    committed: to_u64(committed),
                })
            }
            (code, _) => return Err(Error::Protocol(format!("budget script answered {code}"))),
        };
        // The catalog is another slot on a cluster: listed after the campaign exists, every
        // time, so a listing lost to a failure is made good by the next change or seed.
        let _: i64 = self
            .query(redis::cmd("SADD").arg(&self.keys.catalog).arg(&name))
            .await?;
        Ok(code)
    }

    async fn read_state(&self, key: &CampaignKey) -> Result<Option<CampaignState>, Error> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.campaign(key)))
            .await?;
        parse_state(key, &fields)
    }

    async fn changed_state(&self, key: &CampaignKey) -> Result<CampaignState, Error> {
        self.read_state(key)
            .await?
            .ok_or_else(|| Error::NotFound(key.clone()))
    }

    /// Every campaign in the catalog.
    pub(crate) async fn catalog(&self) -> Result<Vec<CampaignKey>, Error> {
        let names: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&self.keys.catalog))
            .await?;
        Ok(names
            .iter()
            .filter_map(|n| CampaignKey::from_redis_key(&self.keys.prefix, n))
            .collect())
    }

    async fn adopt_all(&self, id: &str, campaigns: &[StatedCampaign]) -> Result<(), Error> {
        for c in campaigns {
            if c.budget > MAX_MICROS || c.spent > MAX_MICROS {
                return Err(Error::TooLarge(c.budget.max(c.spent)));
            }
        }
        let existing = self.catalog().await?;
        let open: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&self.keys.recon_groups))
            .await?;
        let mut groups: BTreeMap<u16, (Vec<&CampaignKey>, Vec<&StatedCampaign>)> = BTreeMap::new();
        for key in &existing {
            groups.entry(key.group()).or_default().0.push(key);
        }
        for c in campaigns {
            groups.entry(c.key.group()).or_default().1.push(c);
        }
        for g in open.iter().filter_map(|g| g.parse::<u16>().ok()) {
            groups.entry(g).or_default();
        }
        let calls = groups.iter().map(|(&group, (drop, stated))| async move {
            let mut call = self.scripts.adopt.prepare_invoke();
            call.key(self.keys.open_set(group)).arg(drop.len());
            for key in drop {
                call.key(self.keys.campaign(key));
            }
            for c in stated {
                call.key(self.keys.campaign(&c.key))
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
            let written: i64 = self.eval(&call).await?;
            if usize::try_from(written).ok() != Some(stated.len()) {
                return Err(Error::Protocol(format!(
                    "adopt wrote {written} of {} campaigns",
                    stated.len()
                )));
            }
            Ok(())
        });
        for result in join_all(calls).await {
            result?;
        }
        let mut catalog = redis::pipe();
        catalog.cmd("DEL").arg(&self.keys.catalog).ignore();
        if !campaigns.is_empty() {
            let cmd = catalog.cmd("SADD").arg(&self.keys.catalog);
            for c in campaigns {
                cmd.arg(self.keys.campaign(&c.key));
            }
            cmd.ignore();
        }
        let () = self.pipeline(&catalog, &[]).await?;
        let () = self
            .query(redis::cmd("SET").arg(&self.keys.identity).arg(id))
            .await?;
        // Last: until here every node stays fenced.
        let _: i64 = self.query(redis::cmd("DEL").arg(&self.keys.fence)).await?;
        Ok(())
    }
}

/// Whether a fence holds against the store's current identity `id`: a fence names the identity
/// its node saw (`id=ID;...`), and one naming another identity was set on a stale read, after
/// an adoption replaced it (the adoption is not undone by it). A fence naming none holds.
fn fences(fence: &str, id: Option<&str>) -> bool {
    let Some(named) = fence
        .strip_prefix(crate::identity::FENCE_SEEN)
        .and_then(|rest| rest.split_once(';'))
        .map(|(named, _)| named)
    else {
        return true;
    };
    named == id.unwrap_or("-")
}

pub(crate) fn to_u64(n: i64) -> u64 {
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

pub(crate) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

pub(crate) fn parse_batch(reply: &[i64], bucket_ms: u64) -> Result<BatchReply, Error> {
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

pub(crate) fn parse_settle(reply: &[i64]) -> Result<SettleReply, Error> {
    match *reply {
        [settled, credited, uncredited, over] => Ok(SettleReply {
            settled: count(settled),
            credited: to_u64(credited),
            uncredited: to_u64(uncredited),
            billed_beyond_charged: to_u64(over),
            more: false,
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

impl<C> Store for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn sync<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, Result<Vec<Option<Grant>>, Error>> {
        async move {
            let partial = self.sync_all(session, items).await;
            if let Some(e) = partial.error {
                return Err(e);
            }
            partial
                .answers
                .into_iter()
                .map(|a| match a {
                    SyncAnswer::Granted(g) => Ok(Some(g)),
                    SyncAnswer::Absent => Ok(None),
                    SyncAnswer::Unanswered => {
                        Err(Error::Protocol("a campaign was left unanswered".to_owned()))
                    }
                })
                .collect()
        }
        .boxed()
    }

    fn sync_partial<'a>(
        &'a self,
        session: &'a str,
        items: &'a [SyncItem],
    ) -> BoxFuture<'a, PartialSync> {
        self.sync_all(session, items).boxed()
    }

    fn end_session<'a>(
        &'a self,
        session: &'a str,
        keys: &'a [CampaignKey],
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let groups = Self::by_group(keys.iter());
            let calls = groups.iter().map(|(_, idx)| async move {
                let mut call = self.scripts.end_session.prepare_invoke();
                for &i in idx {
                    call.key(self.keys.campaign(&keys[i]));
                }
                call.arg(session);
                let _removed: i64 = self.eval(&call).await?;
                Ok::<(), Error>(())
            });
            for result in join_all(calls).await {
                result?;
            }
            Ok(())
        }
        .boxed()
    }

    fn campaigns(&self) -> BoxFuture<'_, Result<Vec<CampaignKey>, Error>> {
        self.catalog().boxed()
    }

    fn seed_if_absent<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
        paused: bool,
        daily: &'a DailySettings,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        async move {
            if let Some(d) = daily.daily_budget_micros.filter(|d| *d > MAX_MICROS) {
                return Err(Error::TooLarge(d));
            }
            Ok(self
                .change_budget(key, "seed", budget, paused, daily)
                .await?
                == 1)
        }
        .boxed()
    }

    fn set_daily<'a>(
        &'a self,
        key: &'a CampaignKey,
        change: &'a DailyChange,
        day: &'a DayWindow,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        async move {
            let mut call = self.scripts.daily.prepare_invoke();
            call.key(self.keys.campaign(key))
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
                .arg(MAX_MICROS);
            let reply: (i64, i64) = self.eval(&call).await?;
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
        }
        .boxed()
    }

    fn set_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        async move {
            self.change_budget(key, "set", budget, false, &DailySettings::default())
                .await?;
            self.changed_state(key).await
        }
        .boxed()
    }

    fn add_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        micros: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        async move {
            if micros > MAX_MICROS {
                return Err(Error::TooLarge(micros));
            }
            self.change_budget(key, "add", micros, false, &DailySettings::default())
                .await?;
            self.changed_state(key).await
        }
        .boxed()
    }

    fn set_paused<'a>(
        &'a self,
        key: &'a CampaignKey,
        paused: bool,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        async move {
            let mut call = self.scripts.pause.prepare_invoke();
            call.key(self.keys.campaign(key))
                .arg(if paused { "1" } else { "0" });
            let done: i64 = self.eval(&call).await?;
            if done != 1 {
                return Err(Error::NotFound(key.clone()));
            }
            self.changed_state(key).await
        }
        .boxed()
    }

    fn state<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<CampaignState>, Error>> {
        self.read_state(key).boxed()
    }

    fn reclaim<'a>(
        &'a self,
        key: &'a CampaignKey,
        session: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        async move {
            let mut call = self.scripts.reclaim.prepare_invoke();
            call.key(self.keys.campaign(key)).arg(session);
            let released: i64 = self.eval(&call).await?;
            if released < 0 {
                return Err(Error::NotFound(key.clone()));
            }
            Ok(to_u64(released))
        }
        .boxed()
    }

    fn reconcile<'a>(
        &'a self,
        session: &'a str,
        batches: &'a [ReconBatch],
        args: &'a ReconArgs,
    ) -> BoxFuture<'a, Result<ReconReply, Error>> {
        self.reconcile_groups(session, batches, args).boxed()
    }

    fn reconciliation<'a>(
        &'a self,
        key: &'a CampaignKey,
    ) -> BoxFuture<'a, Result<Option<ReconTotals>, Error>> {
        async move {
            let mut fields: Vec<&str> = vec!["budget"];
            fields.extend(RECON_FIELDS);
            let values: Vec<Option<String>> = self
                .query(
                    redis::cmd("HMGET")
                        .arg(self.keys.campaign(key))
                        .arg(&fields),
                )
                .await?;
            match values.split_first() {
                Some((Some(_budget), rest)) => Ok(Some(parse_recon(rest)?)),
                Some((None, _)) => Ok(None),
                None => Err(Error::Protocol("HMGET answered nothing".to_owned())),
            }
        }
        .boxed()
    }

    fn identity(&self) -> BoxFuture<'_, Result<StoreIdentity, Error>> {
        async move {
            self.check_layout().await?;
            // Two keys, two slots on a cluster: two GETs, sent together.
            let (mut get_id, mut get_fence) = (redis::cmd("GET"), redis::cmd("GET"));
            get_id.arg(&self.keys.identity);
            get_fence.arg(&self.keys.fence);
            let (id, fence) = futures::join!(
                self.query::<Option<String>>(&get_id),
                self.query::<Option<String>>(&get_fence),
            );
            let id = id?;
            let fenced = fence?.is_some_and(|f| fences(&f, id.as_deref()));
            Ok(StoreIdentity { id, fenced })
        }
        .boxed()
    }

    fn init_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, Error>> {
        async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&self.keys.identity)
                .arg(id)
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&self.keys.identity);
            let (held,): (Option<String>,) = self.pipeline(&pipe, &[]).await?;
            held.ok_or_else(|| Error::Protocol("the identity vanished as it was written".into()))
        }
        .boxed()
    }

    fn fence<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let _: Option<String> = self
                .query(
                    redis::cmd("SET")
                        .arg(&self.keys.fence)
                        .arg(reason)
                        .arg("NX"),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn adopt<'a>(
        &'a self,
        id: &'a str,
        campaigns: &'a [StatedCampaign],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.adopt_all(id, campaigns).boxed()
    }

    fn heartbeat<'a>(
        &'a self,
        session: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Presence, Error>> {
        self.renew_presence(session, ttl_ms).boxed()
    }

    fn sessions(&self) -> BoxFuture<'_, Result<Vec<String>, Error>> {
        async move {
            self.query(redis::cmd("SMEMBERS").arg(&self.keys.nodes))
                .await
        }
        .boxed()
    }

    fn reap<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Reap, Error>> {
        self.reap_session(session).boxed()
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
    fn a_fence_set_on_a_stale_read_fences_nothing() {
        assert!(fences("id=-;vanished", None));
        assert!(fences("id=created-1;changed", Some("created-1")));
        assert!(!fences("id=-;vanished", Some("adopted-2")));
        assert!(!fences("id=created-1;changed", Some("adopted-2")));
        assert!(fences("written by an older version", Some("adopted-2")));
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let opened = RedisStore::<ConnectionManager>::open(
            "redis://127.0.0.1:1",
            "budget",
            Duration::from_millis(10),
        );
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
        let s = parse_settle(&[2, 500, 0, 7]).unwrap();
        assert_eq!(
            (s.settled, s.credited, s.billed_beyond_charged),
            (2, 500, 7)
        );
        assert!(!s.more);
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

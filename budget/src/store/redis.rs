//! Redis store: one hash per campaign, Lua scripts for every change, every call under a timeout.
//!
//! Layout (prefix `budget` by default): `budget:{dsp}:{cid}` is a hash with `budget`, `spent`,
//! `held`, `paused` and per session `node:{session}:granted|spent|returned|reclaimed`; the set
//! `budget:campaigns` lists the campaign hashes. A node's sync is one pipeline of `EVALSHA sync`
//! (one script per 256 campaigns, usually one), so one round trip per node and interval.
//! The script touches several campaign hashes, which Redis Cluster refuses across hash slots;
//! the rule inside is per campaign, so a cluster port only has to group keys by slot.

use super::{CampaignState, Grant, NodeHold, Store, SyncItem, MAX_MICROS};
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
    pause: Script,
    reclaim: Script,
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
            pause: Script::new(include_str!("lua/pause.lua")),
            reclaim: Script::new(include_str!("lua/reclaim.lua")),
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
    ) -> Result<Vec<Vec<Vec<i64>>>, Error> {
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

    async fn change_budget(
        &self,
        key: &CampaignKey,
        mode: &str,
        amount: u64,
        paused: bool,
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
        nodes: nodes
            .into_values()
            .map(|mut n| {
                n.held = n.granted.saturating_sub(n.spent).saturating_sub(n.returned);
                n
            })
            .collect(),
    }))
}

fn parse_grant(reply: &[i64]) -> Result<Option<Grant>, Error> {
    match *reply {
        [0, ..] => Ok(None),
        [1, granted, budget, spent, held, paused] => Ok(Some(Grant {
            granted: to_u64(granted),
            budget: to_u64(budget),
            spent: to_u64(spent),
            held: to_u64(held),
            paused: paused == 1,
        })),
        _ => Err(Error::Protocol(format!("sync script answered {reply:?}"))),
    }
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
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.timed(async move { Ok(self.change_budget(key, "seed", budget, paused).await? == 1) })
            .boxed()
    }

    fn set_budget<'a>(
        &'a self,
        key: &'a CampaignKey,
        budget: u64,
    ) -> BoxFuture<'a, Result<CampaignState, Error>> {
        self.timed(async move {
            self.change_budget(key, "set", budget, false).await?;
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
            self.change_budget(key, "add", micros, false).await?;
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
        assert!(parse_grant(&[1, 2]).is_err());
        assert_eq!(parse_grant(&[0, 0, 0, 0, 0, 0]).unwrap(), None);
    }
}

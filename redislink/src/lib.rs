//! One Redis connection over either a single server or a Redis Cluster, with every call
//! bounded by one timeout.
//!
//! Owns: choosing and opening the connection ([`Target`], [`open`]), the client settings that
//! keep a call from waiting past its timeout (no long internal retries), the refusal of a
//! target that cannot work (an empty seed list, a bad URL, `rediss://` mixed with `redis://`),
//! and the health check of either kind ([`RedisConn::ping`]: every master of a cluster).
//!
//! Must never: block a node's start on Redis (both kinds connect lazily); let a call wait on
//! an unreachable Redis past its timeout; hide which kind of Redis a caller talks to when that
//! matters (a multi-key script or pipeline on a cluster must keep its keys in one hash slot:
//! redis-rs refuses a pipeline whose keys cross slots, Redis refuses such a script).
//!
//! TLS: `rediss://` works on both kinds (redis-rs over tokio-rustls with the ring provider,
//! installed as the process default by [`open`] if none is),
//! trusting the operating system's certificate store (`rustls-native-certs`), where a private
//! CA for an internal Redis is normally installed. `rediss://host:port/#insecure` skips
//! certificate checks (tests only).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Value};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target cannot work; found before any connection is tried.
    #[error("redis target: {0}")]
    Target(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`).
    Single(String),
    /// Seed nodes of a Redis Cluster; the client learns the rest from them.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A URL may carry a password.
        match self {
            Target::Single(url) => f.debug_tuple("Single").field(&redact(url)).finish(),
            Target::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// `url` with any password replaced by `<redacted>`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<redacted>{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl Target {
    /// Every reason this target cannot work, one line each (empty when it can): an empty seed
    /// list, a URL that does not parse or is not `redis://`/`rediss://`, a database other than
    /// 0 on a cluster (Redis Cluster has only database 0), `rediss://` mixed with `redis://`.
    /// `what` names the setting in the messages (e.g. `redis.cluster`).
    pub fn problems(&self, what: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let urls: Vec<(String, &String)> = match self {
            Target::Single(url) => vec![(what.to_owned(), url)],
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    problems.push(format!("{what}: the seed list is empty"));
                }
                urls.iter()
                    .enumerate()
                    .map(|(i, u)| (format!("{what}[{i}]"), u))
                    .collect()
            }
        };
        let mut tls = Vec::new();
        for (name, url) in &urls {
            let scheme_tls = if url.starts_with("rediss://") {
                true
            } else if url.starts_with("redis://") {
                false
            } else {
                problems.push(format!(
                    "{name}: {:?} is not a redis:// or rediss:// URL",
                    redact(url)
                ));
                continue;
            };
            tls.push(scheme_tls);
            match url.as_str().into_connection_info() {
                Err(e) => problems.push(format!(
                    "{name}: {:?} is not a valid Redis URL ({e})",
                    redact(url)
                )),
                Ok(info) => {
                    if matches!(self, Target::Cluster(_)) && info.redis_settings().db() != 0 {
                        problems.push(format!(
                            "{name}: {:?} selects database {}; Redis Cluster has only database 0",
                            redact(url),
                            info.redis_settings().db()
                        ));
                    }
                }
            }
        }
        if tls.iter().any(|t| *t) && tls.iter().any(|t| !*t) {
            problems.push(format!(
                "{what}: mixes rediss:// and redis:// seeds; use one scheme for every node"
            ));
        }
        problems
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Whether it is reached over TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Target::Single(url) => url.starts_with("rediss://"),
            Target::Cluster(urls) => urls.iter().any(|u| u.starts_with("rediss://")),
        }
    }
}

/// A connection to a single server or a cluster. Cheap to clone: clones share the same
/// multiplexed connection(s), so concurrent calls pipeline on the wire.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterLink),
}

/// A cluster connection that [`RedisConn::ping`] can rebuild from the seeds. redis-rs follows
/// a failover for keyed commands (a MOVED rebuilds its slot map), but a health check that
/// sends no keyed command (the tracker's breaker sends only checks while open) never triggers
/// that rebuild, and would keep asking the dead master; a failed check therefore reconnects
/// from the seeds.
#[derive(Clone)]
pub struct ClusterLink {
    client: Arc<ClusterClient>,
    config: ClusterConfig,
    current: Arc<RwLock<ClusterConnection>>,
}

impl ClusterLink {
    /// The current connection.
    pub fn connection(&self) -> ClusterConnection {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the connection with a fresh one, connecting (lazily) from the seeds.
    fn reconnect(&self) {
        let fresh = self
            .client
            .get_pending_async_connection_with_config(self.config.clone());
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

/// Opens a connection to `target` without waiting for Redis: the first call connects (a
/// node starts while Redis is down). Every call is bounded by `timeout` inside the client
/// (connecting included): no retry on a single server, at most three on a cluster (to follow a
/// failover), all within the same bound. Callers still wrap their calls in
/// `tokio::time::timeout` (or use [`RedisConn::query`]). Must run inside a tokio runtime.
pub fn open(target: &Target, timeout: Duration) -> Result<RedisConn, Error> {
    let problems = target.problems("redis");
    if !problems.is_empty() {
        return Err(Error::Target(problems.join("; ")));
    }
    if target.is_tls() {
        // redis-rs asks rustls for the process-wide provider, which panics when none was
        // chosen; ring is the workspace's provider. Already installed (by us or the host
        // program): keep that one.
        #[allow(deprecated)] // ring: see exchange/src/tls.rs
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match target {
        Target::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            // The manager's own retries would make one call wait through several reconnect
            // attempts (a ~9.5 s stall while Redis is down); one attempt per call keeps every
            // call within `timeout`.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_max_delay(timeout);
            Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                client, config,
            )?))
        }
        Target::Cluster(seeds) => {
            let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // After a failover a call may meet the dead node, then a MOVED: a few retries
                // let it follow the new master, and the overall bound below caps the whole
                // request, retries included, at `timeout`.
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
                .overall_response_timeout(Some(timeout))
                .build()?;
            // Connects in the background; the first call waits for it under its own timeout.
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let conn = client.get_pending_async_connection_with_config(config.clone());
            Ok(RedisConn::Cluster(ClusterLink {
                client: Arc::new(client),
                config,
                current: Arc::new(RwLock::new(conn)),
            }))
        }
    }
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Runs `cmd` under `timeout`.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd, timeout: Duration) -> Result<T, Error> {
        let mut conn = self.clone();
        match tokio::time::timeout(timeout, cmd.query_async(&mut conn)).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Runs `pipe` under `timeout`. On a cluster every key of the pipeline must hash to one
    /// slot (redis-rs refuses it otherwise).
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, Error> {
        let mut conn = self.clone();
        match tokio::time::timeout(timeout, pipe.query_async(&mut conn)).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Whether Redis answers, under `timeout`: a PING to the server, or to every master that
    /// serves slots in a cluster, each by its address. (redis-rs's own fan-out PING lets a
    /// replica answer for a dead master, so it cannot tell.) A master the cluster flags as
    /// failing fails the check. A failed cluster check reconnects from the seeds (see
    /// [`ClusterLink`]), so the next check sees the new masters after a failover.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        match self {
            RedisConn::Single(_) => self.query::<()>(&redis::cmd("PING"), timeout).await,
            RedisConn::Cluster(link) => {
                let conn = link.connection();
                let res = match tokio::time::timeout(timeout, ping_masters(conn)).await {
                    Ok(res) => res,
                    Err(_) => Err(Error::Timeout(timeout)),
                };
                if res.is_err() {
                    link.reconnect();
                }
                res
            }
        }
    }
}

/// PINGs every slot-serving master of the cluster `CLUSTER NODES` describes, by address.
async fn ping_masters(mut conn: ClusterConnection) -> Result<(), Error> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let nodes = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let nodes: String = redis::from_redis_value(nodes).map_err(redis::RedisError::from)?;
    let masters = slot_masters(&nodes)?;
    let pings = masters.into_iter().map(|(host, port)| {
        let mut conn = conn.clone();
        async move {
            conn.route_command(
                redis::cmd("PING"),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
            )
            .await
        }
    });
    for res in futures::future::join_all(pings).await {
        res?;
    }
    Ok(())
}

/// The `(host, port)` of every master serving slots in a `CLUSTER NODES` reply; an error when
/// one of them is flagged failing (`fail` or `fail?`), or when none serves any.
fn slot_masters(nodes: &str) -> Result<Vec<(String, u16)>, Error> {
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // id addr flags master ping pong epoch link slot...
        if fields.len() < 9 {
            continue;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if !flags.contains(&"master") {
            continue;
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        if flags.iter().any(|f| *f == "fail" || *f == "fail?") {
            return Err(Error::Target(format!("cluster master {addr} is failing")));
        }
        let parsed = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)));
        match parsed {
            Some(hp) => masters.push(hp),
            None => return Err(Error::Target(format!("CLUSTER NODES address {addr:?}"))),
        }
    }
    if masters.is_empty() {
        return Err(Error::Target("no cluster master serves any slot".into()));
    }
    Ok(masters)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(link) => {
                let mut c = link.connection();
                Box::pin(async move { c.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(link) => {
                let mut c = link.connection();
                Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            // Redis Cluster has only database 0.
            RedisConn::Cluster(_) => 0,
        }
    }
}

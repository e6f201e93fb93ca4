//! The one Redis connection of a tracker (a single server or a cluster, through `redislink`):
//! every call under its own timeout, and a breaker that answers "unavailable" at once while
//! Redis is known to be down, so no request waits on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline};
use redislink::{RedisConn, Target};

use crate::metrics::TrackerMetrics;
use crate::Error;

/// Why a Redis call produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// The breaker is open: an earlier call failed and no ping has succeeded since.
    Down,
    Timeout,
    Failed,
}

#[derive(Clone)]
pub(crate) struct RedisHandle {
    conn: RedisConn,
    timeout: Duration,
    healthy: Arc<AtomicBool>,
    metrics: TrackerMetrics,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password; the manager's own Debug prints the client.
        f.debug_struct("RedisHandle")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisHandle {
    /// A handle to `target`, connecting lazily: a tracker starts while Redis is down and
    /// spools until it answers. The client makes no long retries (see `redislink::open`); the
    /// outer `tokio::time::timeout` in [`Self::guard`] is the guarantee.
    pub(crate) fn new(
        target: &Target,
        timeout: Duration,
        metrics: TrackerMetrics,
    ) -> Result<Self, Error> {
        let conn = redislink::open(target, timeout)?;
        Ok(Self {
            conn,
            timeout,
            healthy: Arc::new(AtomicBool::new(true)),
            metrics,
        })
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs `cmd` unless the breaker is open.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Unavailable> {
        if !self.is_healthy() {
            return Err(Unavailable::Down);
        }
        let mut conn = self.conn.clone();
        self.guard(cmd.query_async(&mut conn)).await
    }

    /// A clone of the connection, for calls that [`Self::guard`] bounds as one.
    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Runs `pipe` unless the breaker is open. On a cluster its keys must share one slot.
    pub(crate) async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, Unavailable> {
        if !self.is_healthy() {
            return Err(Unavailable::Down);
        }
        let mut conn = self.conn.clone();
        self.guard(pipe.query_async(&mut conn)).await
    }

    /// Asks Redis whether it answers (on a cluster: every master), whatever the breaker says,
    /// and closes or opens the breaker accordingly.
    pub(crate) async fn ping(&self) -> bool {
        let mut up = false;
        // A connection that failed while Redis was down answers its error once more; that
        // failure starts the reconnect the second attempt uses.
        for _ in 0..2 {
            match self.conn.ping(self.timeout).await {
                Ok(()) => {
                    up = true;
                    break;
                }
                Err(redislink::Error::Timeout(_)) => self.failed(Unavailable::Timeout),
                Err(e) => {
                    tracing::warn!(error = %e, "redis ping failed");
                    self.failed(Unavailable::Failed);
                }
            }
        }
        if up && !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("redis answers again");
        }
        up
    }

    /// Bounds `fut` by the timeout; a failure opens the breaker.
    pub(crate) async fn guard<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        let err = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis call failed");
                Unavailable::Failed
            }
            Err(_) => Unavailable::Timeout,
        };
        self.failed(err);
        Err(err)
    }

    /// Counts a failed call and opens the breaker.
    fn failed(&self, err: Unavailable) {
        match err {
            Unavailable::Timeout => self.metrics.redis_timeouts.increment(1),
            _ => self.metrics.redis_failures.increment(1),
        }
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                ?err,
                "redis unavailable; billing events go to the spool until it answers"
            );
        }
    }
}

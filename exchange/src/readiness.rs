//! `GET /readyz`: whether this node should get traffic. Ready once start-up has finished
//! (the DSP clients are built; pool warm-up hooks in where `mark_started` is called) and,
//! with Redis configured, once Redis answers a PING: the server, or every master of a Redis
//! Cluster (a master down and not yet replaced leaves its slots unserved, so the node is not
//! ready). `/healthz` stays liveness only.
//!
//! The PING is made by a `/readyz` call, never by an auction, at most once per
//! [`REDIS_CHECK_EVERY`] (others read the cached answer meanwhile), under its own timeout, on
//! a `redislink` connection that reconnects by itself (a cluster's from its seeds after a
//! failed check), so a restarted Redis or a failed-over cluster is seen at the next check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a Redis answer (or its absence) is trusted.
pub const REDIS_CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Readiness {
    started: AtomicBool,
    redis: Option<RedisCheck>,
}

struct RedisCheck {
    conn: redislink::RedisConn,
    timeout: Duration,
    epoch: Instant,
    /// When the last check ended, ms after `epoch` plus one; 0 before the first.
    checked_at: AtomicU64,
    ok: AtomicBool,
    /// A check is running: others use the cached answer.
    checking: AtomicBool,
}

impl Readiness {
    /// `redis` is `[redis] url` or `[redis] cluster`; an invalid one was refused by the
    /// config validation. Connects lazily: call it inside the runtime.
    pub fn new(redis: Option<&redislink::Target>, timeout: Duration) -> Result<Self, crate::Error> {
        let redis = match redis {
            None => None,
            Some(target) => Some(RedisCheck {
                conn: redislink::open(target, timeout)
                    .map_err(|e| crate::Error::Config(vec![e.to_string()]))?,
                timeout,
                epoch: Instant::now(),
                checked_at: AtomicU64::new(0),
                ok: AtomicBool::new(false),
                checking: AtomicBool::new(false),
            }),
        };
        Ok(Self {
            started: AtomicBool::new(false),
            redis,
        })
    }

    /// Start-up is over: the DSP pools are ready for auctions.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// What is not ready (`starting`, `redis`); empty when ready.
    pub async fn not_ready(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.started.load(Ordering::Acquire) {
            missing.push("starting");
        }
        if let Some(redis) = &self.redis {
            if !redis.answers().await {
                missing.push("redis");
            }
        }
        missing
    }
}

impl RedisCheck {
    async fn answers(&self) -> bool {
        let now_ms = |epoch: Instant| epoch.elapsed().as_millis() as u64 + 1;
        let checked_at = self.checked_at.load(Ordering::Acquire);
        let fresh = checked_at != 0
            && now_ms(self.epoch) - checked_at < REDIS_CHECK_EVERY.as_millis() as u64;
        if fresh
            || self
                .checking
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return self.ok.load(Ordering::Acquire);
        }
        let ok = self.conn.ping(self.timeout).await.is_ok();
        self.ok.store(ok, Ordering::Release);
        self.checked_at.store(now_ms(self.epoch), Ordering::Release);
        self.checking.store(false, Ordering::Release);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_what_is_not_ready() {
        let plain = Readiness::new(None, Duration::from_millis(100)).unwrap();
        assert_eq!(plain.not_ready().await, ["starting"]);
        plain.mark_started();
        assert!(plain.not_ready().await.is_empty());

        // Nothing listens on a free loopback port: refused at once.
        let port = testkit::free_port().unwrap();
        let url = format!("redis://127.0.0.1:{port}/");
        let target = redislink::Target::Single(url);
        let with_redis = Readiness::new(Some(&target), Duration::from_millis(100)).unwrap();
        assert_eq!(with_redis.not_ready().await, ["starting", "redis"]);
        with_redis.mark_started();
        assert_eq!(with_redis.not_ready().await, ["redis"]);
    }

    /// On a cluster every master must answer: ready, then not once a master is killed, then
    /// ready again once its replica has taken over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_is_ready_when_every_master_answers() {
        let mut cluster = testkit::RedisCluster::start(3, 1).unwrap();
        let target = redislink::Target::Cluster(cluster.seeds());
        let ready = Readiness::new(Some(&target), Duration::from_millis(300)).unwrap();
        ready.mark_started();
        assert!(ready.not_ready().await.is_empty());
        let victim = cluster.master_ports()[0];
        cluster.kill(victim);
        // Checks are cached for REDIS_CHECK_EVERY; poll until the dead master shows.
        assert!(
            testkit::eventually(Duration::from_secs(10), || async {
                ready.not_ready().await == ["redis"]
            })
            .await
        );
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.wait_ok().unwrap();
            cluster
        })
        .await
        .unwrap();
        assert!(
            testkit::eventually(Duration::from_secs(30), || async {
                ready.not_ready().await.is_empty()
            })
            .await
        );
        drop(cluster);
    }
}

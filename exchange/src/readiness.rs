//! `GET /readyz`: whether this node should get traffic. Ready once start-up has finished
//! (the DSP clients are built; pool warm-up hooks in where `mark_started` is called) and,
//! with Redis configured, once Redis answers a PING. `/healthz` stays liveness only.
//!
//! The PING is made by a `/readyz` call, never by an auction, at most once per
//! [`REDIS_CHECK_EVERY`] (others read the cached answer meanwhile), each on a fresh
//! connection under its own timeout, so a restarted Redis is seen at the next check.

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
    client: redis::Client,
    timeout: Duration,
    epoch: Instant,
    /// When the last check ended, ms after `epoch` plus one; 0 before the first.
    checked_at: AtomicU64,
    ok: AtomicBool,
    /// A check is running: others use the cached answer.
    checking: AtomicBool,
}

impl Readiness {
    /// `redis_url` is `[redis] url`; an invalid one was refused by the config validation,
    /// and is reported here as never ready.
    pub fn new(redis_url: Option<&str>, timeout: Duration) -> Result<Self, crate::Error> {
        let redis = match redis_url {
            None => None,
            Some(url) => Some(RedisCheck {
                client: redis::Client::open(url)
                    .map_err(|e| crate::Error::Config(vec![format!("redis.url: {e}")]))?,
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
        let ok = tokio::time::timeout(self.timeout, self.ping())
            .await
            .is_ok_and(|pong| pong.is_ok());
        self.ok.store(ok, Ordering::Release);
        self.checked_at.store(now_ms(self.epoch), Ordering::Release);
        self.checking.store(false, Ordering::Release);
        ok
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await
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
        let with_redis = Readiness::new(Some(&url), Duration::from_millis(100)).unwrap();
        assert_eq!(with_redis.not_ready().await, ["starting", "redis"]);
        with_redis.mark_started();
        assert_eq!(with_redis.not_ready().await, ["redis"]);
    }
}

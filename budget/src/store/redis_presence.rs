//! Node presence in Redis and the reaping of dead sessions.
//!
//! A node renews `P:node:{SESSION}` (a TTL of `node_ttl_ms`) every sync round and lists its
//! session in `P:nodes`. A live node that finds a listed session without presence declares it
//! dead with `reap_mark.lua` (atomic against the renewal in `presence.lua`: a session marked
//! dead never renews, so it never spends again), returns its unspent leases with `reap.lua`
//! per campaign group (exactly once, by each campaign's `reclaimed` flag), then unlists it.
//! If a step fails the session stays listed and the next look finishes the job: marking and
//! returning are both idempotent.

use super::redis::{to_u64, RedisStore};
use super::{Presence, Reap};
use crate::Error;
use futures::future::join_all;
use redis::aio::ConnectionLike;
use std::collections::BTreeMap;

/// How long a death marker is kept: a session paused longer than this and then resumed would
/// renew as if alive (its campaigns still refuse it grants through their `reclaimed` flags).
const DEATH_MARKER_MS: u64 = 7 * 24 * 3_600_000;

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub(crate) async fn renew_presence(
        &self,
        session: &str,
        ttl_ms: u64,
    ) -> Result<Presence, Error> {
        let mut call = self.scripts.presence.prepare_invoke();
        call.key(self.keys.presence(session))
            .key(self.keys.death(session))
            .arg(ttl_ms);
        let renewed: i64 = self.eval(&call).await?;
        if renewed != 1 {
            return Ok(Presence::Reaped);
        }
        // Listed after its presence exists, so a listed session is one that can be found dead.
        let _: i64 = self
            .query(redis::cmd("SADD").arg(&self.keys.nodes).arg(session))
            .await?;
        Ok(Presence::Alive)
    }

    pub(crate) async fn reap_session(&self, session: &str) -> Result<Reap, Error> {
        let mut mark = self.scripts.reap_mark.prepare_invoke();
        mark.key(self.keys.presence(session))
            .key(self.keys.death(session))
            .arg(DEATH_MARKER_MS);
        let (code, left): (i64, i64) = self.eval(&mark).await?;
        let first = match code {
            0 => {
                return Ok(Reap::Alive {
                    expires_in_ms: to_u64(left),
                })
            }
            1 => true,
            2 => false,
            other => return Err(Error::Protocol(format!("reap mark answered {other}"))),
        };
        let campaigns = self.catalog().await?;
        let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for key in &campaigns {
            groups
                .entry(key.group())
                .or_default()
                .push(self.keys.campaign(key));
        }
        let calls = groups.values().flat_map(|names| {
            names
                .chunks(super::redis::KEYS_PER_SCRIPT)
                .map(|chunk| async move {
                    let mut call = self.scripts.reap.prepare_invoke();
                    for name in chunk {
                        call.key(name);
                    }
                    call.arg(session);
                    self.eval::<i64>(&call).await
                })
        });
        let mut micros = 0u64;
        for result in join_all(calls).await {
            micros = micros.saturating_add(to_u64(result?));
        }
        let _: i64 = self
            .query(redis::cmd("SREM").arg(&self.keys.nodes).arg(session))
            .await?;
        Ok(Reap::Reaped { first, micros })
    }
}

//! The one-time move of a store written before hash tags (campaign hashes `P:dsp:cid`,
//! catalog `P:campaigns`, buckets `P:recon:b:dsp:cid:start`) to the grouped layout, run by
//! the first node that reads the store's identity. Only a single Redis can hold such a store
//! (its scripts touched keys of many slots) and only a single Redis can move it (`RENAME`
//! across slots); on a cluster the call fails with a clear error.
//!
//! Every node of the old version must be stopped first: an old node still running would keep
//! writing the old names. The old nodes' sessions are listed as nodes so their leases come
//! back through the usual reaping.

use super::redis::RedisStore;
use crate::key::CampaignKey;
use crate::Error;
use redis::aio::ConnectionLike;
use std::collections::HashSet;

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Checks the layout once per store value: migrates an old-layout store (see the module).
    pub(crate) async fn check_layout(&self) -> Result<(), Error> {
        self.layout_checked
            .get_or_try_init(|| async {
                let old: i64 = self
                    .query(redis::cmd("EXISTS").arg(&self.keys.legacy_catalog))
                    .await?;
                if old == 1 {
                    self.migrate().await?;
                }
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), Error> {
        let refused = |e: Error| {
            Error::Config(format!(
                "the budget store at prefix {:?} uses the layout before hash tags and could not be moved ({e}); stop every exchange node, run the new version against a single Redis holding that data once (it moves the keys itself), or adopt the store (POST /admin/store/adopt)",
                self.keys.prefix
            ))
        };
        let prefix = &self.keys.prefix;
        let names: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&self.keys.legacy_catalog))
            .await?;
        let campaigns: Vec<(String, CampaignKey)> = names
            .into_iter()
            .filter_map(|n| CampaignKey::from_legacy_redis_key(prefix, &n).map(|k| (n, k)))
            .collect();
        let open: Vec<(String, u64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(&self.keys.legacy_open)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let open_names: HashSet<&str> = open.iter().map(|(n, _)| n.as_str()).collect();
        let buckets = self
            .scan(&format!("{}:recon:b:*", glob_escape(prefix)))
            .await?;
        let mut call = self.scripts.migrate.prepare_invoke();
        call.key(&self.keys.legacy_catalog)
            .key(&self.keys.legacy_open)
            .key(&self.keys.catalog)
            .key(&self.keys.nodes)
            .key(&self.keys.recon_groups)
            .key(&self.keys.legacy_size)
            .arg(campaigns.len());
        for (old, key) in &campaigns {
            call.key(old).key(self.keys.campaign(key));
        }
        let parsed: Vec<(&String, CampaignKey, u64)> = buckets
            .iter()
            .filter_map(|n| CampaignKey::from_legacy_bucket_key(prefix, n).map(|(k, s)| (n, k, s)))
            .collect();
        call.arg(parsed.len());
        for (old, key, start) in &parsed {
            let group = key.group();
            call.key(*old)
                .key(self.keys.bucket(key, *start))
                .key(self.keys.campaign(key))
                .key(self.keys.open_set(group))
                .key(self.keys.bucket_size(group))
                .arg(*start)
                .arg(if open_names.contains(old.as_str()) {
                    "1"
                } else {
                    "0"
                })
                .arg(group);
        }
        let moved: i64 = self.eval(&call).await.map_err(refused)?;
        if moved >= 0 {
            tracing::warn!(
                prefix = %prefix,
                campaigns = moved,
                buckets = parsed.len(),
                "budget store moved to the hash-tagged layout"
            );
        }
        Ok(())
    }

    /// Every key matching `pattern` (a single Redis).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, Error> {
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

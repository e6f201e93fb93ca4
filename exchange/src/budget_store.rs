//! Which budget store a node opens: the shared Redis of `[redis] url`, a Redis Cluster of
//! `[redis] cluster`, or (neither) one process's memory.

use std::sync::Arc;

use crate::config::Config;
use crate::Error;
use redislink::Target;

/// The budget store `config` asks for. Call it inside the runtime that runs the sync loop.
/// Settlement reads the tracker's durable billed counts, so the store is told the tracker's
/// key prefix.
pub(crate) fn open(config: &Config) -> Result<Arc<dyn budget::Store>, Error> {
    let cfg = config.budget_config();
    let billed = config.tracking_key_prefix();
    Ok(match config.redis_target() {
        Some(Target::Single(url)) => Arc::new(
            budget::RedisStore::open(&url, &cfg.key_prefix, cfg.redis_timeout())?
                .with_billed_prefix(billed),
        ),
        Some(target @ Target::Cluster(_)) => {
            let conn = redislink::open(&target, cfg.redis_timeout())
                .map_err(|e| Error::Config(vec![format!("redis.cluster: {e}")]))?;
            Arc::new(
                budget::RedisStore::with_connection(conn, &cfg.key_prefix, cfg.redis_timeout())
                    .with_billed_prefix(billed),
            )
        }
        None => budget::open_store(&cfg)?,
    })
}

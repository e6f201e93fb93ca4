//! Which budget store a node opens: the shared Redis of `[redis] url`, a Redis Cluster of
//! `[redis] cluster`, or (neither) one process's memory.

use std::sync::Arc;

use crate::config::Config;
use crate::Error;

/// The budget store `config` asks for. Call it inside the runtime that runs the sync loop.
pub(crate) fn open(config: &Config) -> Result<Arc<dyn budget::Store>, Error> {
    if config.redis.url.is_none() && config.redis.cluster.is_some() {
        // cluster-budget: the budget crate's cluster store plugs in here at merge:
        //   let cfg = config.budget_config();
        //   let target = config.redis_target() (a Target::Cluster);
        //   let conn = redislink::open(&target, cfg.redis_timeout())?;
        //   return Ok(Arc::new(budget::RedisStore::with_connection(conn, &cfg.key_prefix,
        //       cfg.redis_timeout())));
        // Until then a cluster is refused at start: budgets in each process's memory would
        // let a fleet spend past them.
        return Err(Error::Config(vec![
            "redis.cluster: the budget store does not run on Redis Cluster in this build; \
             use [redis] url"
                .to_owned(),
        ]));
    }
    Ok(budget::open_store(&config.budget_config())?)
}

//! Environment overrides of the configuration file, applied after the file is read.

use super::Config;
use crate::Error;

/// Environment variables that override the file, applied after it is read.
pub const ENV_LISTEN: &str = "EXCHANGE_LISTEN";
pub const ENV_REDIS_URL: &str = "EXCHANGE_REDIS_URL";
/// Comma-separated seed nodes of a Redis Cluster (`[redis] cluster`).
pub const ENV_REDIS_CLUSTER: &str = "EXCHANGE_REDIS_CLUSTER";
pub const ENV_ADMIN_TOKEN: &str = "EXCHANGE_ADMIN_TOKEN";
pub const ENV_TRACKING_SECRET: &str = "EXCHANGE_TRACKING_SECRET";
pub const ENV_DEBUG_TOKEN: &str = "EXCHANGE_DEBUG_TOKEN";

impl Config {
    /// Applies environment overrides read through `var` (a parameter so tests need not touch
    /// the process environment).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        if let Some(listen) = var(ENV_LISTEN) {
            self.server.listen = listen
                .parse()
                .map_err(|e| Error::Config(vec![format!("{ENV_LISTEN}={listen:?}: {e}")]))?;
        }
        if let Some(url) = var(ENV_REDIS_URL).filter(|u| !u.is_empty()) {
            self.redis.url = Some(url);
        }
        if let Some(seeds) = var(ENV_REDIS_CLUSTER).filter(|u| !u.is_empty()) {
            self.redis.cluster = Some(
                seeds
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        if let Some(token) = var(ENV_ADMIN_TOKEN).filter(|t| !t.is_empty()) {
            self.admin.token = Some(token);
        }
        if let Some(secret) = var(ENV_TRACKING_SECRET).filter(|t| !t.is_empty()) {
            self.tracking.secret = Some(secret);
        }
        if let Some(token) = var(ENV_DEBUG_TOKEN).filter(|t| !t.is_empty()) {
            self.debug.token = Some(token);
        }
        self.apply_publisher_env(&var);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_listen_address() {
        let mut c = Config::default();
        c.apply_env(|k| (k == ENV_LISTEN).then(|| "0.0.0.0:9999".to_owned()))
            .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9999".parse().unwrap());
        assert!(c.apply_env(|_| Some("nonsense".into())).is_err());
    }

    #[test]
    fn environment_sets_the_cluster_seeds() {
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == ENV_REDIS_CLUSTER).then(|| "redis://10.0.0.1:7000, redis://10.0.0.2:7000,".into())
        })
        .unwrap();
        assert_eq!(
            c.redis.cluster,
            Some(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7000".to_owned()
            ])
        );
    }
}

//! Live reload: the config and DSP set one auction runs on (`Live`), the handle that asks the
//! server to swap in a new config (or to reopen its event log), and the keys that only a
//! restart can change.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::fanout::{Dsp, FanOut};
use crate::Error;

/// What one auction runs on, loaded once at its start: a reload swaps in a new `Live`
/// whole, and auctions already running keep the one they loaded.
pub(crate) struct Live {
    pub config: Config,
    /// The enabled DSPs, rebuilt on every reload. One whose settings did not change keeps
    /// its breaker, QPS window and in-flight bound (`Dsp::keep_state_of`); the metrics of a
    /// DSP of the same name carry on, as the registry keys them by name.
    pub dsps: Vec<Arc<Dsp>>,
    pub fanout: FanOut,
    pub rules: auction::Rules,
    /// The `[fraud]` rules, lists loaded: a reload swaps them with the rest.
    pub screen: crate::screen::Screen,
    /// `server.trusted_proxies`.
    pub trusted: crate::client_ip::TrustedProxies,
    /// `[[publisher]]`, `[auction] unknown_publisher` and the sellers.json they make: a
    /// reload swaps them with the rest.
    pub publishers: crate::publishers::Publishers,
    /// Floor rules, rates (refreshed from `currency.rates_file` while this config is in
    /// force) and the default margin.
    pub pricing: crate::pricing::Pricing,
}

/// What a [`ReloadHandle`] asks of the server.
pub(crate) enum Request {
    /// Swap in this config (boxed: a config is large, and the channel holds a few requests).
    Config(
        Box<Result<Config, Error>>,
        oneshot::Sender<Result<(), Error>>,
    ),
    /// Reopen the event log's file (after an external tool moved it; `SIGUSR1`).
    ReopenEventLog(oneshot::Sender<Result<(), Error>>),
}

/// Asks a running server ([`crate::server::run_with`]) to reload. Cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Request>);

/// The server's end of [`reload_channel`].
pub struct Reloads(Option<mpsc::Receiver<Request>>);

/// A handle to give callers and the receiver to give [`crate::server::run_with`].
pub fn reload_channel() -> (ReloadHandle, Reloads) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadHandle(tx), Reloads(Some(rx)))
}

impl Reloads {
    /// No reloads: the server runs on its start config.
    pub fn none() -> Self {
        Reloads(None)
    }

    pub(crate) async fn next(&mut self) -> Option<Request> {
        match &mut self.0 {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

impl ReloadHandle {
    /// Swaps `config` in, or refuses it and keeps the old one. An `Err` passed in (a config
    /// file that did not read or parse) is refused and counted like an invalid config.
    /// Returns once the server has decided, with the reasons for a refusal.
    pub async fn reload(&self, config: Result<Config, Error>) -> Result<(), Error> {
        let gone = || Error::Config(vec!["the server is not running".to_owned()]);
        let (done, answer) = oneshot::channel();
        self.0
            .send(Request::Config(Box::new(config), done))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Has the server close its event log file and open `events.file` anew, so a tool that
    /// moved the file away (`logrotate` without `copytruncate`) gets it whole: every event
    /// logged before the call is in the moved file, every one after in the new one. Returns
    /// once done.
    pub async fn reopen_event_log(&self) -> Result<(), Error> {
        let gone = || Error::Config(vec!["the server is not running".to_owned()]);
        let (done, answer) = oneshot::channel();
        self.0
            .send(Request::ReopenEventLog(done))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The keys read once at start (listeners, stores, background services) that differ between
/// `old` and `new`. A reload that changes any of them is refused rather than half applied.
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.tracking, &new.tracking);
    let changed = [
        ("server.listen", old.server.listen != new.server.listen),
        ("server.tls", old.server.tls != new.server.tls),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
        (
            "server.header_read_timeout_ms",
            old.server.header_read_timeout_ms != new.server.header_read_timeout_ms,
        ),
        (
            "server.shutdown_grace_ms",
            old.server.shutdown_grace_ms != new.server.shutdown_grace_ms,
        ),
        (
            "server.max_in_flight_auctions",
            old.server.max_in_flight_auctions != new.server.max_in_flight_auctions,
        ),
        ("redis.url", old.redis.url != new.redis.url),
        ("redis.cluster", old.redis.cluster != new.redis.cluster),
        ("tracking.key_prefix", o.key_prefix != n.key_prefix),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
        (
            "budget or campaigns",
            old.budget_config() != new.budget_config(),
        ),
        ("tracking.secret", o.secret != n.secret),
        (
            "tracking",
            o.base_url != n.base_url
                || o.window_ms != n.window_ms
                || o.max_skew_ms != n.max_skew_ms
                || o.replay_horizon_ms != n.replay_horizon_ms
                || o.spool_dir != n.spool_dir
                || o.replay_interval_ms != n.replay_interval_ms
                || o.redis_timeout_ms != n.redis_timeout_ms
                || o.memory_capacity != n.memory_capacity,
        ),
        ("events", old.events != new.events),
        ("notices", old.notices != new.notices),
        ("overload", old.overload != new.overload),
        ("tls", old.tls != new.tls),
        ("dns", old.dns != new.dns),
        // Budgets and billed prices are in it.
        (
            "auction.currency",
            old.auction.currency != new.auction.currency,
        ),
        (
            "auction.pool_idle_timeout_ms",
            old.auction.pool_idle_timeout_ms != new.auction.pool_idle_timeout_ms,
        ),
    ];
    changed
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
}

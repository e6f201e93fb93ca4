//! Typed configuration: the sections of the TOML file with their documented defaults, how a
//! file is loaded, and what the other crates' configurations are built from it.
//!
//! Environment overrides ([`Config::apply_env`]) live in `env.rs`, the rules
//! ([`Config::validate`]) in `validate.rs`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::Error;

mod env;
mod pricing;
mod publisher;
mod validate;

pub use env::{ENV_ADMIN_TOKEN, ENV_DEBUG_TOKEN, ENV_LISTEN, ENV_REDIS_URL, ENV_TRACKING_SECRET};
pub(crate) use pricing::parse_size;
pub use pricing::{CurrencyConfig, FloorRule};
pub use publisher::{
    PublisherConfig, SellerType, SellersConfig, SellersIdentifier, UnknownPublisher,
};

/// The whole configuration of one exchange node. Every field has a default, so an empty
/// file is a valid configuration (an exchange with no DSPs, which answers 204 to everything).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auction: AuctionConfig,
    pub notices: NoticeConfig,
    #[serde(rename = "dsp")]
    pub dsps: Vec<DspConfig>,
    pub redis: RedisConfig,
    /// Budget sync and policy; see the `budget` crate for each key.
    pub budget: budget::BudgetConfig,
    pub admin: AdminConfig,
    /// Where `/metrics` is served.
    pub metrics: MetricsConfig,
    /// Campaign budgets seeded at start (in Redis only where the campaign is absent there).
    #[serde(rename = "campaign")]
    pub campaigns: Vec<CampaignConfig>,
    pub tracking: TrackingConfig,
    pub events: EventsConfig,
    pub overload: OverloadConfig,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub debug: DebugConfig,
    /// Fraud screening before the fan-out (`crate::screen`) and of tracking hits.
    pub fraud: FraudConfig,
    /// The exchange's node in `source.schain`. Absent (the default): the chain is forwarded
    /// as the publisher sent it.
    pub supply_chain: Option<SupplyChainConfig>,
    /// The publishers the exchange sells for (`crate::publishers`). Default none.
    #[serde(rename = "publisher")]
    pub publishers: Vec<PublisherConfig>,
    /// The exchange's own fields of `GET /sellers.json`.
    pub sellers: SellersConfig,
    /// Exchange rates from the auction currency (`config/pricing.rs`).
    pub currency: CurrencyConfig,
    /// Floor rules (`config/pricing.rs`), applied to every imp they match.
    #[serde(rename = "floor")]
    pub floors: Vec<FloorRule>,
}

/// Debugging one auction: who may see `ext.debug` in an answer besides test auctions.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// A request whose `x-exchange-debug` header equals this token (compared in constant time)
    /// gets `ext.debug` in its answer; any other value is ignored and counted. At least 16
    /// characters. Absent (the default): only test auctions (`test = 1`) get it. Also
    /// EXCHANGE_DEBUG_TOKEN. A reload may change it.
    pub token: Option<String>,
}

impl std::fmt::Debug for DebugConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("DebugConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[fraud]`: which bid requests are answered 204 without calling any DSP, and which tracking
/// hits are logged as invalid instead of billed. Every list is loaded at start and on each
/// reload; a bad line stops the start (or refuses the reload) naming its file and line.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Files of IPv4/IPv6 addresses and CIDR ranges, one per line, `#` comments (e.g. data
    /// centre ranges). A request whose `device.ip` or `device.ipv6` is in one is screened
    /// (`ip_blocklist`); so is a tracking hit from such a client IP. Default none.
    pub ip_blocklist_files: Vec<std::path::PathBuf>,
    /// Screen requests (and tracking hits) whose user agent is a known bot, crawler, HTTP
    /// library or headless browser (`bot_ua`; the `isbot` list). Default true.
    pub bot_user_agents: bool,
    /// Files of domains, one per line: a request whose `site.domain` or `site.page` host is
    /// a listed domain or a subdomain of one is screened (`domain_blocklist`). Default none.
    pub domain_blocklist_files: Vec<std::path::PathBuf>,
    /// Files of app bundles, one per line: a request whose `app.bundle` is listed (whole,
    /// ignoring case) is screened (`app_blocklist`). Default none.
    pub app_blocklist_files: Vec<std::path::PathBuf>,
    /// More requests than this from one `device.ip` (IPv6: one /64) within a second are
    /// screened (`ip_rate`). Default none (off).
    pub max_requests_per_ip: Option<u32>,
    /// More requests than this from one `device.ifa` within a second are screened
    /// (`device_rate`); the all-zero IFA is never counted. Default none (off).
    pub max_requests_per_device: Option<u32>,
    /// Counter cells of each rate limit (rounded up to a power of two), 8 bytes each: the
    /// memory bound whatever the number of IPs or devices. Default 262 144 (2 MiB).
    pub rate_table_slots: usize,
    /// Screen site and app requests without a parsable `device.ip` or `device.ipv6`
    /// (`missing_ip`). Default false.
    pub require_ip: bool,
    /// Screen site and app requests without a `device.ua` (`missing_ua`). Default false.
    pub require_ua: bool,
}

impl Default for FraudConfig {
    fn default() -> Self {
        Self {
            ip_blocklist_files: Vec::new(),
            bot_user_agents: true,
            domain_blocklist_files: Vec::new(),
            app_blocklist_files: Vec::new(),
            max_requests_per_ip: None,
            max_requests_per_device: None,
            rate_table_slots: 262_144,
            require_ip: false,
            require_ua: false,
        }
    }
}

/// `[supply_chain]`: the node the exchange appends to every request's supply chain.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplyChainConfig {
    /// The exchange's canonical domain, as in the publishers' ads.txt and its sellers.json,
    /// e.g. `"your-exchange.example"`.
    pub asi: String,
}

/// Name resolution of outbound calls (`crate::dns`): DSP hosts are looked up at start and
/// refreshed in the background, other names on demand.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// How often DSP host names are looked up again, and how long another name's answer is
    /// used. Default 30 000 ms.
    pub refresh_ms: u64,
    /// Names cached at most (DSP hosts always are). Default 10 000.
    pub max_hosts: usize,
    /// Bound on one lookup. Default 1 000 ms.
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            refresh_ms: 30_000,
            max_hosts: 10_000,
            timeout_ms: 1_000,
        }
    }
}

/// Outbound TLS: what every HTTPS call (bid requests and notices) trusts.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files whose certificates are trusted in addition to the bundled web roots
    /// (`webpki-roots`, Mozilla's set): a private CA, or a test one. Default empty.
    pub ca_files: Vec<std::path::PathBuf>,
}

/// Publisher-side TLS: `[server.tls]`. Absent, the exchange serves plain HTTP.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: std::path::PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// Overload control (see `overload.rs`): the bound on auctions in flight follows the node's
/// scheduler lag, and auctions over it are answered 204 at once.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Off: only `server.max_in_flight_auctions` bounds auctions. Default on.
    pub enabled: bool,
    /// The scheduler lag a node may show all through a window before it sheds. Default
    /// 1 000 µs.
    pub target_lag_us: u64,
    /// The mean scheduler lag a node may show over a window before it sheds: every task that
    /// wakes waits this long on average, several times per auction. Default 1 000 µs; 0 turns
    /// this reading off.
    pub target_mean_lag_us: u64,
    /// How often the lag is sampled. Default 2 ms.
    pub probe_interval_ms: u64,
    /// How long a window is: the bound changes at most once per window. Default 100 ms.
    pub window_ms: u64,
    /// The bound never goes below this. Default 16.
    pub min_limit: usize,
    /// A request arriving on a connection less than this after its previous answer left was
    /// waiting at the client. Default 5 000 µs; 0 turns this signal off.
    pub back_to_back_us: u64,
    /// An auction that can no longer give its DSPs this long before its own deadline (its
    /// `tmax` less `auction.reserve_ms`, counted from its estimated arrival) is answered 204 at
    /// once and counted as `late`. Default 5 ms; 0 turns this off.
    pub min_dsp_wait_ms: u64,
}

impl OverloadConfig {
    /// `min_dsp_wait_ms`, or nothing with overload control off.
    pub fn min_dsp_wait(&self) -> std::time::Duration {
        if self.enabled {
            std::time::Duration::from_millis(self.min_dsp_wait_ms)
        } else {
            std::time::Duration::ZERO
        }
    }
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            target_lag_us: 1_000,
            target_mean_lag_us: 1_000,
            probe_interval_ms: 2,
            window_ms: 100,
            min_limit: 16,
            back_to_back_us: 5_000,
            min_dsp_wait_ms: 5,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// HMAC secret of tracking URLs, at least 16 bytes; every node of a fleet needs the same.
    /// Also EXCHANGE_TRACKING_SECRET. Absent: a random one per process (fine for one node that
    /// never restarts; the exchange says so at start).
    pub secret: Option<String>,
    /// The public address tracking URLs point at, e.g. `https://rtb.example.com`. Default
    /// `http://` + `server.listen`.
    pub base_url: Option<String>,
    /// How long a tracking URL stays valid after its auction. Default 3 600 000 ms (1 hour).
    pub window_ms: u64,
    /// How far an auction time in a tracking URL may lie ahead of this node's clock (nodes'
    /// clocks differ). Default 30 000 ms.
    pub max_skew_ms: u64,
    /// How long events spooled during a Redis outage stay replayable past that window.
    /// Default 3 600 000 ms.
    pub replay_horizon_ms: u64,
    /// Where impressions and clicks wait while Redis cannot be asked. One per node: never
    /// shared by two processes. Default `spool`.
    pub spool_dir: std::path::PathBuf,
    /// How often the spool is replayed. Default 1 000 ms.
    pub replay_interval_ms: u64,
    /// Bound on every Redis call of the tracker. Default 250 ms.
    pub redis_timeout_ms: u64,
    /// Impression ids remembered without Redis (one node). Default 1 000 000.
    pub memory_capacity: usize,
    /// Prefix of the tracking keys in Redis (dedup keys and billed counts), so two exchanges
    /// can share one Redis or cluster. Default: `budget.key_prefix`.
    pub key_prefix: Option<String>,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            secret: None,
            base_url: None,
            window_ms: 3_600_000,
            max_skew_ms: 30_000,
            replay_horizon_ms: 3_600_000,
            spool_dir: "spool".into(),
            replay_interval_ms: 1_000,
            redis_timeout_ms: 250,
            memory_capacity: 1_000_000,
            key_prefix: None,
        }
    }
}

impl std::fmt::Debug for TrackingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret signs billing events: never in logs.
        f.debug_struct("TrackingConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("window_ms", &self.window_ms)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Append-only JSON-lines event log. Default `events.jsonl`; set to "" to turn it off.
    pub file: Option<std::path::PathBuf>,
    /// Also `XADD` every event to this Redis Stream (needs `[redis] url`). Default none.
    pub redis_stream: Option<String>,
    /// `MAXLEN ~` of that stream. Default 1 000 000.
    pub stream_maxlen: u64,
    /// Beside the file: events the stream has not taken yet (Redis down, a failover), kept
    /// and retried oldest first, at most; past it the oldest are dropped and counted.
    /// Default 100 000.
    pub stream_backlog: usize,
    /// Longest time a written event waits for its fsync. Default 200 ms.
    pub fsync_interval_ms: u64,
    /// Win, loss and late-answer events waiting to be written, at most; past it they are
    /// dropped and counted (billing events are never dropped). Default 65 536.
    pub max_pending: usize,
    /// How long the writer waits after a win, loss or late event for more to write with it,
    /// so a busy node writes a batch per interval instead of a line per auction. Billing
    /// events are written without waiting. 0 writes each batch as soon as it is read.
    /// Default 5 ms.
    pub linger_ms: u64,
    /// Close the live file once it holds this many bytes, renamed
    /// `events.<UTC close time>.<seq>.jsonl`. 0: never by size. Default 1 GiB.
    pub rotate_bytes: u64,
    /// Close a live file holding anything once it has been open this long, seconds.
    /// 0: never by age. Default 3600.
    pub rotate_interval_s: u64,
    /// Gzip closed files in the background (`….jsonl.gz`). Default true.
    pub compress: bool,
    /// Keep at most this many closed files, deleting the oldest. 0: no limit. Default 168.
    pub retention_files: usize,
    /// Delete closed files closed longer ago than this, seconds. 0: no limit. Default
    /// 604 800 (7 days).
    pub retention_age_s: u64,
    /// Share of win, loss and late events written (`[events.sample]`); billing events are
    /// never sampled.
    pub sample: EventSampleConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            file: Some("events.jsonl".into()),
            redis_stream: None,
            stream_maxlen: 1_000_000,
            stream_backlog: 100_000,
            fsync_interval_ms: 200,
            max_pending: 65_536,
            linger_ms: 5,
            rotate_bytes: 1 << 30,
            rotate_interval_s: 3600,
            compress: true,
            retention_files: 168,
            retention_age_s: 7 * 86_400,
            sample: EventSampleConfig::default(),
        }
    }
}

/// `[events.sample]`: the share of each informational event type written, `0.0..=1.0`. An
/// auction is kept or left out whole (by a hash of its id), so its win, losses and late
/// answers stay together. Impressions, clicks, their duplicates and invalid hits (everything
/// billing or an audit of it needs) are always written.
#[derive(Clone, Copy, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSampleConfig {
    /// Default 1.0 (all).
    pub win: f64,
    /// Default 1.0 (all).
    pub loss: f64,
    /// Default 1.0 (all).
    pub late: f64,
}

impl Default for EventSampleConfig {
    fn default() -> Self {
        Self {
            win: 1.0,
            loss: 1.0,
            late: 1.0,
        }
    }
}

impl EventSampleConfig {
    pub(crate) fn rates(&self) -> impressions::SampleRates {
        impressions::SampleRates {
            win: self.win,
            loss: self.loss,
            late: self.late,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS) shared by every node of a fleet.
    /// Absent (the default): budgets and dedup live in process, for one node. Also
    /// EXCHANGE_REDIS_URL.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (`["redis://host:port", ...]`, all `redis://` or all
    /// `rediss://`), instead of `url`: the two are exclusive. Also EXCHANGE_REDIS_CLUSTER
    /// (comma-separated).
    pub cluster: Option<Vec<String>>,
}

impl Config {
    /// The Redis the stores share: `[redis] url`, or `[redis] cluster`; none without either
    /// (both set is refused by the validation; `url` wins here).
    pub fn redis_target(&self) -> Option<redislink::Target> {
        match (&self.redis.url, &self.redis.cluster) {
            (Some(url), _) => Some(redislink::Target::Single(url.clone())),
            (None, Some(seeds)) => Some(redislink::Target::Cluster(seeds.clone())),
            (None, None) => None,
        }
    }

    /// The tracker's key prefix: `[tracking] key_prefix`, else `budget.key_prefix`.
    pub fn tracking_key_prefix(&self) -> &str {
        self.tracking
            .key_prefix
            .as_deref()
            .unwrap_or(&self.budget.key_prefix)
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of the admin API; absent (the default) turns the API off. Also
    /// EXCHANGE_ADMIN_TOKEN.
    pub token: Option<String>,
    /// Serve the admin API on this address of its own, and not on `server.listen`. Absent
    /// (the default): on `server.listen`. A restart changes it.
    pub listen: Option<SocketAddr>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .finish()
    }
}

/// `[metrics]`: where the Prometheus scrape endpoint listens.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this address of its own, and not on `server.listen`. It may be
    /// the same as `admin.listen`. Absent (the default): on `server.listen`. A restart changes
    /// it.
    pub listen: Option<SocketAddr>,
}

/// A campaign budget from the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The DSP's configured name.
    pub dsp: String,
    /// The `cid` the DSP's bids carry.
    pub id: String,
    /// Total budget in the auction currency (not CPM).
    pub budget: f64,
    /// Created paused. Default false.
    #[serde(default)]
    pub paused: bool,
    /// At most this much spent per day, in the auction currency. Absent: no daily cap.
    #[serde(default)]
    pub daily_budget: Option<f64>,
    /// IANA zone whose midnight starts the campaign's day. Default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `asap` (default) or `even`: spend the daily budget along a straight line over the day.
    #[serde(default)]
    pub pacing: budget::Pacing,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the publisher endpoint listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, after gzip inflation too. Default 256 KiB; above it: 413.
    pub max_body_bytes: usize,
    /// Auctions running at once on this node; one more is answered 204 at once, because a
    /// late answer is worth nothing to a publisher. Default 20 000.
    pub max_in_flight_auctions: usize,
    /// Open publisher connections; further ones wait in the kernel backlog. Default 20 000.
    pub max_connections: usize,
    /// How long a client may take to send a request head. Default 10 000 ms.
    pub header_read_timeout_ms: u64,
    /// How long shutdown waits for open connections to finish. Default 10 000 ms.
    pub shutdown_grace_ms: u64,
    /// Serve publishers over HTTPS with this certificate. Default none: plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client of a
    /// tracking hit: the right-most address in it that is not itself a trusted proxy. From
    /// any other peer the header is ignored and the peer is the client. Default none.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
            max_in_flight_auctions: 20_000,
            max_connections: 20_000,
            header_read_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuctionConfig {
    /// The longest any DSP is waited for. Default 30 ms.
    pub dsp_timeout_ms: u64,
    /// The `tmax` assumed when a request has none. Default 100 ms.
    pub default_tmax_ms: u64,
    /// Time kept back from `tmax` for the exchange's own work and the trip back to the
    /// publisher. Default 5 ms.
    pub reserve_ms: u64,
    /// Second-price increment, CPM. Default 0.01.
    pub price_increment: f64,
    /// The auction currency (ISO-4217): floors, bids and budgets are compared and charged in
    /// it; bids in another currency are converted with `[currency]` rates (rejected without
    /// one). Default USD.
    pub currency: String,
    /// Auction type when the request has no `at`: 1 first price, 2 second price plus. Default 2.
    pub default_at: u8,
    /// Largest DSP answer read, in bytes; a larger one is rejected. Default 1 MiB.
    pub max_response_bytes: usize,
    /// How long a DSP call that missed its deadline may still run in the background so its
    /// lateness can be measured (and its pooled connection kept). Default 1 000 ms.
    pub late_grace_ms: u64,
    /// Late calls allowed to run in the background at once; past it they are abandoned and
    /// counted. Default 10 000.
    pub max_late_in_flight: usize,
    /// How much earlier than its deadline the wait for a DSP ends (and how much less `tmax` the
    /// DSP is told): tokio's timers fire up to 2 ms late, since the timer wheel and `epoll_wait`
    /// each round up to a whole millisecond. 0 gives DSPs their whole timeout and lets the
    /// auction end up to ~2 ms past its deadline. Default 2 ms.
    pub timer_slack_ms: u64,
    /// How long a pooled DSP connection may stay idle before it is closed. Default 90 000 ms.
    pub pool_idle_timeout_ms: u64,
    /// A request whose publisher id is no `[[publisher]]` (or that has none): `allow`
    /// (default) runs it, `reject` answers 403 naming the field.
    pub unknown_publisher: UnknownPublisher,
    /// The exchange's take of every clearing price, 0 to 1: the publisher is told and paid
    /// the gross less this (`crate::pricing::margin_for`). Default 0.
    pub default_margin: f64,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        Self {
            dsp_timeout_ms: 30,
            default_tmax_ms: 100,
            reserve_ms: 5,
            price_increment: 0.01,
            currency: "USD".to_owned(),
            default_at: 2,
            max_response_bytes: 1024 * 1024,
            late_grace_ms: 1_000,
            max_late_in_flight: 10_000,
            timer_slack_ms: 2,
            pool_idle_timeout_ms: 90_000,
            unknown_publisher: UnknownPublisher::Allow,
            default_margin: 0.0,
        }
    }
}

#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticeConfig {
    /// Timeout of one win or loss notice call. Default 2 000 ms.
    pub timeout_ms: u64,
    /// Notice calls in flight at once across all DSPs; past it notices are dropped and
    /// counted rather than queued without bound. Default 4 096.
    pub max_in_flight: usize,
    /// Hosts a notice may reach even when they are or resolve to a loopback, private,
    /// link-local or unspecified address, written as in the notice URL (no port). The host
    /// of every configured DSP endpoint is allowed without being listed. Default empty.
    pub allow_hosts: Vec<String>,
}

impl Default for NoticeConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 2_000,
            max_in_flight: 4_096,
            allow_hosts: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DspConfig {
    /// Unique name; used in metrics, logs and as the default seat.
    pub name: String,
    /// Bid endpoint, `http://host:port/path` or `https://host:port/path`.
    pub url: String,
    /// HTTP version: `auto` (HTTP/2 when the DSP offers it by ALPN over https, HTTP/1.1
    /// otherwise, and always HTTP/1.1 over plain http), `http1`, or `http2` (over plain http:
    /// h2c with prior knowledge). Default `auto`.
    #[serde(default)]
    pub http: HttpVersion,
    /// Connections (TCP and TLS handshake) opened to this DSP at start, before the first
    /// auction. Default 1; 0 opens none.
    #[serde(default = "one_connection")]
    pub warm_connections: usize,
    /// How often the warm-up runs again, so the warm connections never sit idle long enough
    /// to be closed (`auction.pool_idle_timeout_ms`). Default 30 000 ms; 0 turns it off.
    #[serde(default = "default_rewarm_ms")]
    pub rewarm_ms: u64,
    /// This DSP's own timeout; never above `auction.dsp_timeout_ms` (the default).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Calls to this DSP in flight at once; past it the DSP is skipped for that auction and
    /// the skip is counted. Default 1 024.
    #[serde(default = "default_dsp_max_in_flight")]
    pub max_in_flight: usize,
    /// Fire this DSP's loss notices (`lurl`). Default true.
    #[serde(default = "yes")]
    pub loss_notices: bool,
    /// Fraction of loss notices fired, 0.0–1.0, since they multiply outbound traffic.
    /// Default 1.0.
    #[serde(default = "one")]
    pub loss_notice_sample: f64,
    /// A disabled DSP stays configured but gets no traffic. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls per second at most (GCRA, bursts of up to one second's worth); over it the DSP
    /// is skipped for that auction and the skip is counted. Default none (no cap).
    #[serde(default)]
    pub qps: Option<u32>,
    /// Called only for requests with an imp of one of these: `banner`, `video`, `audio`,
    /// `native`. Default empty: any.
    #[serde(default)]
    pub media_types: Vec<String>,
    /// Called only for requests from one of these: `site`, `app`, `dooh`. Default empty: any.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Called only for requests whose `device.geo.country` is one of these ISO-3166 alpha-3
    /// codes; a request without a country does not match. Default empty: any.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Called only for requests whose `device.devicetype` is one of these OpenRTB codes; a
    /// request without one does not match. Default empty: any.
    #[serde(default)]
    pub device_types: Vec<i32>,
    /// The DSP's vendor id in the IAB Global Vendor List. Where GDPR applies, the DSP gets the
    /// user's and device's identifiers and precise geo only when the TCF v2 consent string
    /// gives purpose 1 and this vendor consent. Default none: treated as without consent.
    #[serde(default)]
    pub gvl_id: Option<u16>,
    /// The circuit breaker: past `breaker_failure_ratio` failed calls (timeouts, transport
    /// errors, statuses other than 200/204, unreadable answers) among at least
    /// `breaker_min_calls` over the last `breaker_window_ms`, the DSP gets only probe calls.
    /// Default true.
    #[serde(default = "yes")]
    pub breaker: bool,
    /// The sliding window the failure ratio is taken over. Default 1 000.
    #[serde(default = "default_breaker_window_ms")]
    pub breaker_window_ms: u64,
    /// Calls in the window below which the breaker never opens. Default 20.
    #[serde(default = "default_breaker_min_calls")]
    pub breaker_min_calls: u32,
    /// Failed share of the window's calls that opens the breaker, above 0.0 and at most 1.0.
    /// Default 0.5.
    #[serde(default = "half")]
    pub breaker_failure_ratio: f64,
    /// Time from opening (or a failed probe) to the first probe. Default 1 000.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// At most one probe call per this many ms while open. Default 100.
    #[serde(default = "default_breaker_probe_every_ms")]
    pub breaker_probe_every_ms: u64,
    /// Successful probes in a row that close the breaker again. Default 3.
    #[serde(default = "default_breaker_close_after")]
    pub breaker_close_after: u32,
    /// This DSP's bids are multiplied by it before the auction (e.g. 0.9 for a DSP known to
    /// bid gross of a 10% fee); it never pays more than it bid. Above 0, at most 1000.
    /// Default 1.0.
    #[serde(default = "one")]
    pub bid_adjustment: f64,
}

fn default_breaker_window_ms() -> u64 {
    1000
}
fn default_breaker_min_calls() -> u32 {
    20
}
fn half() -> f64 {
    0.5
}
fn default_breaker_open_ms() -> u64 {
    1000
}
fn default_breaker_probe_every_ms() -> u64 {
    100
}
fn default_breaker_close_after() -> u32 {
    3
}

/// The HTTP version spoken to one DSP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    #[default]
    Auto,
    Http1,
    Http2,
}

fn one_connection() -> usize {
    1
}
fn default_dsp_max_in_flight() -> usize {
    1024
}
fn default_rewarm_ms() -> u64 {
    30_000
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl DspConfig {
    /// A DSP with every optional key at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            http: HttpVersion::Auto,
            warm_connections: one_connection(),
            rewarm_ms: default_rewarm_ms(),
            timeout_ms: None,
            max_in_flight: default_dsp_max_in_flight(),
            loss_notices: true,
            loss_notice_sample: 1.0,
            enabled: true,
            qps: None,
            media_types: Vec::new(),
            channels: Vec::new(),
            countries: Vec::new(),
            device_types: Vec::new(),
            gvl_id: None,
            breaker: true,
            breaker_window_ms: default_breaker_window_ms(),
            breaker_min_calls: default_breaker_min_calls(),
            breaker_failure_ratio: half(),
            breaker_open_ms: default_breaker_open_ms(),
            breaker_probe_every_ms: default_breaker_probe_every_ms(),
            breaker_close_after: default_breaker_close_after(),
            bid_adjustment: 1.0,
        }
    }
}

impl Config {
    /// Reads a TOML file, applies the environment overrides and validates the result.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(vec![format!("cannot read {}: {e}", path.display())]))?;
        let mut config = Config::from_toml(&text)?;
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::Config(vec![e.to_string()]))
    }

    /// The tracker's configuration; tracking URLs default to `local`, the address actually
    /// bound. Without a secret a random key is made, which only one node that never restarts
    /// can live with: the second value says so.
    pub fn tracker_config(
        &self,
        local: SocketAddr,
    ) -> Result<(impressions::TrackerConfig, bool), Error> {
        let t = &self.tracking;
        let (key, random_key) = match &t.secret {
            Some(secret) => (
                impressions::TrackingKey::from_secret(secret)
                    .map_err(|e| Error::Config(vec![format!("tracking.secret: {e}")]))?,
                false,
            ),
            None => (impressions::TrackingKey::random(), true),
        };
        let redis = self.redis_target().map(|target| impressions::RedisConfig {
            target,
            timeout: std::time::Duration::from_millis(t.redis_timeout_ms),
            stream: self.events.redis_stream.is_some(),
        });
        let defaults = impressions::EventLogConfig::default();
        let events = impressions::EventLogConfig {
            file: self
                .events
                .file
                .clone()
                .filter(|f| !f.as_os_str().is_empty()),
            stream_key: self
                .events
                .redis_stream
                .clone()
                .unwrap_or(defaults.stream_key.clone()),
            stream_maxlen: self.events.stream_maxlen,
            stream_backlog: self.events.stream_backlog,
            fsync_interval: std::time::Duration::from_millis(self.events.fsync_interval_ms),
            linger: std::time::Duration::from_millis(self.events.linger_ms),
            // Non-billing events may fill half the queue at most; billing events always
            // find room in the other half.
            queue: self.events.max_pending.saturating_mul(2),
            rotate_bytes: self.events.rotate_bytes,
            rotate_interval: std::time::Duration::from_secs(self.events.rotate_interval_s),
            compress: self.events.compress,
            retention_files: self.events.retention_files,
            retention_age: std::time::Duration::from_secs(self.events.retention_age_s),
            sample: self.events.sample.rates(),
            ..defaults
        };
        let config = impressions::TrackerConfig {
            public_url: t
                .base_url
                .clone()
                .unwrap_or_else(|| format!("http://{local}"))
                .trim_end_matches('/')
                .to_owned(),
            key,
            validity: impressions::Validity {
                window_ms: t.window_ms,
                ..Default::default()
            },
            replay_horizon_ms: t.replay_horizon_ms,
            memory_capacity: t.memory_capacity,
            redis,
            key_prefix: self.tracking_key_prefix().to_owned(),
            // Counted in the budget's reconciliation buckets, and kept until settlement
            // (settle_after_ms) has read them, plus the budget's own retention.
            billed: impressions::BilledCounts {
                bucket_ms: self.budget.reconcile_bucket_ms,
                retain_ms: self
                    .budget
                    .settle_after_ms
                    .saturating_add(self.budget.reconcile_retain_ms),
            },
            events,
            spool_dir: t.spool_dir.clone(),
            replay_interval: std::time::Duration::from_millis(t.replay_interval_ms),
            ..impressions::TrackerConfig::default()
        };
        Ok((config, random_key))
    }

    /// The budget crate's configuration: `[budget]` plus the shared Redis URL, the
    /// `[[campaign]]` seeds in micros and, with Redis, `state_file` defaulting to
    /// `{tracking.spool_dir}/budget-store-identity`.
    pub fn budget_config(&self) -> budget::BudgetConfig {
        let mut cfg = self.budget.clone();
        cfg.redis_url = self.redis.url.clone();
        // Beside the tracking spool: already one per node and kept across restarts.
        let shared = cfg.redis_url.is_some() || self.redis.cluster.is_some();
        if shared && cfg.state_file.is_none() {
            cfg.state_file = Some(self.tracking.spool_dir.join("budget-store-identity"));
        }
        cfg.campaigns = self
            .campaigns
            .iter()
            .map(|c| budget::CampaignSeed {
                paused: c.paused,
                daily_budget_micros: c.daily_budget.map(|d| money_to_micros(d).unwrap_or(0)),
                pacing: c.pacing,
                timezone: c
                    .timezone
                    .clone()
                    .unwrap_or_else(|| budget::DEFAULT_TIMEZONE.to_owned()),
                ..budget::CampaignSeed::new(&c.dsp, &c.id, money_to_micros(c.budget).unwrap_or(0))
            })
            .collect();
        cfg
    }

    /// The timeout of DSP `dsp`: its own, or the auction-wide one.
    pub fn dsp_timeout_ms(&self, dsp: &DspConfig) -> u64 {
        dsp.timeout_ms
            .unwrap_or(self.auction.dsp_timeout_ms)
            .min(self.auction.dsp_timeout_ms)
    }
}

/// An amount of money in currency units as integer micros, or `None` when it is negative, not
/// finite, or beyond what the stores keep exactly (2^53 micros).
pub fn money_to_micros(amount: f64) -> Option<u64> {
    money::Micros::from_units(amount)
        .map(money::Micros::get)
        .filter(|m| *m <= budget::MAX_MICROS)
}

/// A DSP endpoint: `http://` or `https://`, with a host.
pub(crate) fn parse_dsp_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with http:// or https://".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_documented_default() {
        let c = Config::from_toml("").unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.auction.dsp_timeout_ms, 30);
        assert_eq!(c.auction.default_tmax_ms, 100);
        assert_eq!(c.auction.price_increment, 0.01);
        assert_eq!(c.auction.currency, "USD");
        assert!(c.dsps.is_empty());
    }

    #[test]
    fn the_issue_example_parses() {
        let c = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:8080"
            [auction]
            dsp_timeout_ms = 30
            default_tmax_ms = 100
            price_increment = 0.01
            currency = "USD"
            [[dsp]]
            name = "alpha"
            url = "http://127.0.0.1:9001/bid"
            timeout_ms = 30
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.dsps.len(), 1);
        assert_eq!(c.dsp_timeout_ms(&c.dsps[0]), 30);
        assert!(c.dsps[0].loss_notices);
    }
}

//! Impression and click tracking for the exchange: signed tracking URLs and the markup that
//! carries them, dedup of every impression and click (Redis or one node's memory), the spool
//! that keeps events while Redis is down, the event log, the revenue split of a billed impression
//! (gross, net, margin), and the report read from one or more nodes' logs.
//!
//! Owns: everything an exchange needs to bill per impression, minus HTTP routing. The exchange
//! handler for `GET /event/imp` calls [`Tracker::record_impression`] (403 on
//! [`Error::Rejected`], else 204), the one for `GET /event/click` calls
//! [`Tracker::record_click`] (302 to the returned landing).
//!
//! Must never: bill an event twice or lose a billable one; trust a field that the MAC does not
//! cover; guess whether an event is a duplicate when the store cannot say (it is spooled);
//! wait on Redis without a timeout; let the tracking secret reach a log.

pub mod dedup;
pub mod events;
pub mod events_files;
mod events_housekeep;
mod events_rotate;
mod events_sample;
mod events_stream;
mod journal;
pub mod keys;
pub mod markup;
pub mod metrics;
mod redis_conn;
pub mod report;
pub mod revenue;
pub mod sign;
mod spool;
pub mod streams;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use dedup::{
    Bill, BilledCounts, Claim, ClaimKey, DedupStore, EventId, MemoryDedup, RedisDedup,
};
pub use events::{read_events, Event, EventLog, EventLogConfig, EventType, ReadStats};
pub use events_files::{log_files, read_log};
pub use events_housekeep::SweepStats;
pub use events_sample::SampleRates;
pub use keys::{billed_field, billed_key};
pub use markup::AdFormat;
pub use redislink::{RedisConn, Target};
pub use report::{Dimension, Report};
pub use revenue::Split;
pub use sign::{BidRef, BidSigner, Kind, Rejection, TrackingData, TrackingKey, Validity};
pub use spool::SpoolRecord;
pub use streams::read_streams;

use crate::metrics::{SharedRecorder, TrackerMetrics};
use redis_conn::RedisHandle;
use spool::{Replayed, Spool};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tracking URL was refused: answer 403, bill nothing.
    #[error("tracking URL rejected: {0}")]
    Rejected(Rejection),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Link(#[from] redislink::Error),
    #[error("encoding: {0}")]
    Encode(String),
    /// An events file given to the report could not be read.
    #[error("{path}: {source}")]
    EventsFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The tracker (or its event log or spool) is shut down.
    #[error("the tracker is shut down")]
    Closed,
    /// The event log's queue holds as many non-billing events as it may: this one is dropped.
    #[error("the event log queue is full")]
    Busy,
}

impl Error {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Error::Io { what, source }
    }
}

/// Redis settings of a tracker.
#[derive(Clone)]
pub struct RedisConfig {
    /// A single server (`redis://[user:password@]host:port[/db]`, or `rediss://`) or the seed
    /// nodes of a Redis Cluster.
    pub target: Target,
    /// Bound on every Redis call, connecting included. Default 250 ms.
    pub timeout: Duration,
    /// Mirror the event log into this node's Redis Stream (`events.stream_key:SESSION`, see
    /// [`streams`], `MAXLEN ~ events.stream_maxlen`). Default false.
    pub stream: bool,
}

impl RedisConfig {
    /// One Redis server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_target(Target::Single(url.into()))
    }

    /// A Redis Cluster reached through `seeds`.
    pub fn cluster(seeds: Vec<String>) -> Self {
        Self::with_target(Target::Cluster(seeds))
    }

    pub fn with_target(target: Target) -> Self {
        Self {
            target,
            timeout: Duration::from_millis(250),
            stream: false,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Target's Debug redacts passwords.
        f.debug_struct("RedisConfig")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("stream", &self.stream)
            .finish()
    }
}

/// How a [`Tracker`] is set up. Every field has a documented default.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Public base URL of this exchange's event endpoints: tracking URLs are
    /// `{public_url}/event/imp` and `{public_url}/event/click`. Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Signing secret. Default: random per process (one node that never restarts).
    pub key: TrackingKey,
    /// How long signed URLs stay valid. Default 1 hour, 30 s clock skew.
    pub validity: Validity,
    /// How long a spooled event stays checkable after its URL expires: dedup entries live
    /// `validity.window_ms + validity.max_skew_ms + replay_horizon_ms`, so a Redis outage up to
    /// this long is replayed exactly. Older spooled events are quarantined, not guessed at.
    /// Default 1 hour.
    pub replay_horizon_ms: u64,
    /// Width of the auction time bucket in the impression id. Default 60 s.
    pub time_bucket_ms: u64,
    /// Ids the in-memory dedup holds (without Redis). Default 1 000 000.
    pub memory_capacity: usize,
    /// Redis for dedup across nodes (and optionally the event stream). Default none: one node,
    /// in-memory dedup.
    pub redis: Option<RedisConfig>,
    /// Prefix of every tracking key in Redis (see [`keys`]), so two exchanges can share one
    /// Redis or cluster. Default `budget` (the exchange passes `[tracking] key_prefix`, which
    /// defaults to `budget.key_prefix`).
    pub key_prefix: String,
    /// The durable billed counts written with each impression claim in Redis (none without
    /// Redis). Default: the budget crate's default bucket and retention.
    pub billed: BilledCounts,
    /// Event sinks. Default: `events.jsonl` in the working directory.
    pub events: EventLogConfig,
    /// Directory of the spool. Default `spool`.
    pub spool_dir: PathBuf,
    /// How often the spool is replayed (and a down Redis probed). Default 1 s.
    pub replay_interval: Duration,
    /// Spooled events claimed per Redis round trip during a replay. Default 512.
    pub replay_batch: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".to_owned(),
            key: TrackingKey::random(),
            validity: Validity::default(),
            replay_horizon_ms: 3_600_000,
            time_bucket_ms: 60_000,
            memory_capacity: 1_000_000,
            redis: None,
            key_prefix: "budget".to_owned(),
            billed: BilledCounts::default(),
            events: EventLogConfig {
                file: Some(PathBuf::from("events.jsonl")),
                ..EventLogConfig::default()
            },
            spool_dir: PathBuf::from("spool"),
            replay_interval: Duration::from_secs(1),
            replay_batch: 512,
        }
    }
}

impl TrackerConfig {
    /// How long a dedup entry lives, ms.
    pub fn dedup_ttl_ms(&self) -> u64 {
        self.validity
            .window_ms
            .saturating_add(self.validity.max_skew_ms)
            .saturating_add(self.replay_horizon_ms)
    }

    fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            problems.push("public_url must be an absolute http(s) URL");
        }
        if self.validity.window_ms == 0 {
            problems.push("validity.window_ms must be above 0");
        }
        if self.time_bucket_ms == 0 {
            problems.push("time_bucket_ms must be above 0");
        }
        if self.memory_capacity == 0 {
            problems.push("memory_capacity must be above 0");
        }
        if self.replay_batch == 0 {
            problems.push("replay_batch must be above 0");
        }
        if self.replay_interval.is_zero() {
            problems.push("replay_interval must be above 0");
        }
        if self.key_prefix.is_empty() {
            problems.push("key_prefix must be non-empty");
        }
        if self.billed.bucket_ms == 0 {
            problems.push("billed.bucket_ms must be above 0");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

/// A billed impression, handed to the [`BilledHook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Billed {
    pub event: Event,
    /// The DSP's own billing URL (macros substituted when the bid was rewritten), to be fired
    /// once now that the impression is billed.
    pub burl: Option<String>,
}

/// Called exactly once per billed impression, whether billed when it arrived or when the spool
/// was replayed; the exchange fires the DSP's `burl` from it. It runs inline, so it must only
/// hand the work off (e.g. queue a notice), never block.
pub type BilledHook = Arc<dyn Fn(&Billed) + Send + Sync>;

/// Time source, ms since the Unix epoch; tests pass their own.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// What became of one impression or click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// First sighting: billed, with the event that was logged.
    Billed(Box<Event>),
    /// Seen before: counted, not billed.
    Duplicate,
    /// The dedup store could not answer: kept in the spool, billed (or not) on replay.
    Spooled,
    /// A test auction's URL: answered as usual and logged (the event carries `"test": true`),
    /// never billed. It is not claimed in the dedup store (nothing is billed, so there is no
    /// second billing to prevent) and never spooled, so test traffic costs Redis nothing and
    /// each hit of the URL is logged.
    Test(Box<Event>),
}

/// A recorded click: where to redirect (always the signed landing URL) and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickOutcome {
    pub landing: String,
    pub outcome: Outcome,
}

/// An impression or click hit the exchange judged invalid (a blocklisted client IP, a known
/// bot): its signature was checked and it was logged, but it bills nothing, fires no `burl` and
/// leaves the impression id unclaimed, so a later valid hit of the same impression still bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHit {
    /// The `invalid_impression` or `invalid_click` event that was logged.
    pub event: Event,
    /// For a click, where to redirect all the same.
    pub landing: Option<String>,
}

/// A winning bid's tracking: the URL that replaces its `burl`, and its markup with the
/// impression tracker and click redirects added (`None` when the markup could not carry them
/// and is left as it was).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decorated {
    pub burl: String,
    pub adm: Option<String>,
}

/// What one replay pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub billed: u64,
    pub duplicates: u64,
    /// Too old to check, or corrupt: kept in `unverifiable.jsonl`, not billed.
    pub quarantined: u64,
    /// Still spooled (the store went away again, or it never answered).
    pub remaining: u64,
}

/// The tracking service of one exchange node. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    key: TrackingKey,
    validity: Validity,
    imp_base: String,
    click_base: String,
    time_bucket_ms: u64,
    /// This tracker's own event stream, when it mirrors events into Redis.
    stream_key: Option<String>,
    dedup_ttl_ms: u64,
    replay_batch: usize,
    dedup: Box<dyn DedupStore>,
    redis: Option<RedisHandle>,
    log: EventLog,
    spool: Spool,
    hook: Option<BilledHook>,
    clock: Clock,
    replay_lock: Mutex<()>,
    closed: AtomicBool,
    /// Held (shared) by every call that may log or spool; shutdown takes it exclusively after
    /// setting `closed`, so it waits for calls in flight instead of cutting one off between
    /// its claim and its event.
    in_flight: tokio::sync::RwLock<()>,
    replayer: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: TrackerMetrics,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("imp_base", &self.inner.imp_base)
            .field("redis", &self.inner.redis.is_some())
            .field("spooled", &self.inner.spool.pending())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Opens the event log and the spool, connects to Redis lazily (a tracker starts while
    /// Redis is down, spooling until it answers) and starts the replay loop. Its metrics are
    /// registered (and described) on `recorder`, never on the process-global one.
    pub async fn start(
        config: TrackerConfig,
        hook: Option<BilledHook>,
        recorder: SharedRecorder,
    ) -> Result<Self, Error> {
        Self::start_with_clock(config, hook, system_clock(), recorder).await
    }

    /// [`Tracker::start`] with a given clock.
    pub async fn start_with_clock(
        config: TrackerConfig,
        hook: Option<BilledHook>,
        clock: Clock,
        recorder: SharedRecorder,
    ) -> Result<Self, Error> {
        config.validate()?;
        let metrics = TrackerMetrics::new(recorder);
        let dedup_ttl_ms = config.dedup_ttl_ms();
        let redis = match &config.redis {
            Some(r) => Some(RedisHandle::new(&r.target, r.timeout, metrics.clone())?),
            None => None,
        };
        let dedup: Box<dyn DedupStore> = match &redis {
            Some(handle) => Box::new(RedisDedup::new(
                handle.clone(),
                dedup_ttl_ms.div_ceil(1000),
                &config.key_prefix,
                config.billed,
            )),
            None => Box::new(
                MemoryDedup::new(config.memory_capacity, dedup_ttl_ms).with_metrics(&metrics),
            ),
        };
        let stream = match (&config.redis, &redis) {
            (Some(r), Some(handle)) if r.stream => Some(handle.clone()),
            _ => None,
        };
        let spool = Spool::open(&config.spool_dir, metrics.clone()).await?;
        // One stream per tracker (see `streams.rs`): one stream key is one cluster shard.
        let mut events = config.events.clone();
        let stream_key = stream.as_ref().map(|_| {
            events.stream_key = streams::node_stream(&config.events.stream_key);
            events.stream_registry = Some(streams::registry(&config.events.stream_key));
            events.stream_key.clone()
        });
        let log = EventLog::open(events, stream, metrics.clone(), clock.clone())?;
        let base = config.public_url.trim_end_matches('/');
        let inner = Arc::new(Inner {
            key: config.key.clone(),
            validity: config.validity,
            imp_base: format!("{base}/event/imp"),
            click_base: format!("{base}/event/click"),
            time_bucket_ms: config.time_bucket_ms,
            stream_key,
            dedup_ttl_ms,
            replay_batch: config.replay_batch,
            dedup,
            redis,
            log,
            spool,
            hook,
            clock,
            replay_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            in_flight: tokio::sync::RwLock::new(()),
            replayer: std::sync::Mutex::new(None),
            metrics,
        });
        let task = tokio::spawn(replay_loop(Arc::downgrade(&inner), config.replay_interval));
        if let Ok(mut slot) = inner.replayer.lock() {
            *slot = Some(task);
        }
        Ok(Self { inner })
    }

    /// The impression URL that replaces a winning bid's `burl`; `dsp_burl` is the DSP's own
    /// (macro-substituted) `burl`, fired once the impression is billed.
    pub fn impression_url(&self, bid: &BidRef, dsp_burl: Option<&str>) -> String {
        sign::impression_url(&self.inner.imp_base, bid, dsp_burl, &self.inner.key)
    }

    /// [`Self::impression_url`] for a bid of a test auction when `test`: the URL carries the
    /// signed test flag, so its hits are logged and never billed, and `dsp_burl` never fires.
    pub fn impression_url_for(&self, bid: &BidRef, dsp_burl: Option<&str>, test: bool) -> String {
        self.inner
            .key
            .bid_signer(bid)
            .test(test)
            .impression_url(&self.inner.imp_base, dsp_burl)
    }

    /// The click URL redirecting to `landing` (an absolute http(s) URL).
    pub fn click_url(&self, bid: &BidRef, landing: &str) -> Result<String, Error> {
        sign::click_url(&self.inner.click_base, bid, landing, &self.inner.key)
    }

    /// A winning bid's tracking in one call: its new `burl`, and `adm` with the impression
    /// tracker added and its click-throughs sent through the click URL.
    pub fn decorate(
        &self,
        bid: &BidRef,
        dsp_burl: Option<&str>,
        adm: &str,
        format: AdFormat,
    ) -> Decorated {
        self.decorate_for(bid, dsp_burl, adm, format, false)
    }

    /// [`Self::decorate`], every URL marked as a test auction's when `test` (see
    /// [`Self::impression_url_for`]).
    pub fn decorate_for(
        &self,
        bid: &BidRef,
        dsp_burl: Option<&str>,
        adm: &str,
        format: AdFormat,
        test: bool,
    ) -> Decorated {
        // One pass over the bid's fields signs the impression URL and every click URL.
        let signer = self.inner.key.bid_signer(bid).test(test);
        let burl = signer.impression_url(&self.inner.imp_base, dsp_burl);
        let with_clicks = markup::wrap_clicks(adm, format, |landing| {
            signer.click_url(&self.inner.click_base, landing).ok()
        });
        let current = with_clicks.as_deref().unwrap_or(adm);
        let adm = markup::add_impression_tracker(current, format, &burl).or(with_clicks);
        Decorated { burl, adm }
    }

    /// Verifies and records an impression from the query string of `GET /event/imp`.
    pub async fn record_impression(&self, query: &str) -> Result<Outcome, Error> {
        Ok(self.record(query, Kind::Impression).await?.0)
    }

    /// Verifies and records a click from the query string of `GET /event/click`; the answer
    /// holds the landing URL to redirect to, duplicate or not.
    pub async fn record_click(&self, query: &str) -> Result<ClickOutcome, Error> {
        match self.record(query, Kind::Click).await? {
            (outcome, Some(landing)) => Ok(ClickOutcome { landing, outcome }),
            // `verify` accepts no click URL without a landing.
            (_, None) => Err(Error::Rejected(Rejection::Malformed)),
        }
    }

    /// Verifies an impression or click judged invalid by the caller and logs it as
    /// `invalid_impression` / `invalid_click` with `reason`. Nothing is claimed or billed and
    /// no hook runs: for finance the safe rule is that an invalid hit neither bills nor uses up
    /// the impression id. A forged or expired URL is refused as in [`Self::record_impression`].
    pub async fn record_invalid(
        &self,
        query: &str,
        kind: Kind,
        reason: &str,
    ) -> Result<InvalidHit, Error> {
        let inner = &self.inner;
        let (_in_flight, now, data) = self.open_hit(query, kind).await?;
        if kind == Kind::Click && data.landing.is_none() {
            return Err(Error::Rejected(Rejection::Malformed));
        }
        let event_type = match kind {
            Kind::Impression => EventType::InvalidImpression,
            Kind::Click => EventType::InvalidClick,
        };
        let mut event = Event::for_bid(event_type, &data.bid, now);
        event.impression_id = Some(EventId::new(&data.bid, inner.time_bucket_ms).to_string());
        event.invalid_reason = Some(reason.to_owned());
        inner.log.append(&event).await?;
        inner.metrics.event(event_type);
        Ok(InvalidHit {
            event,
            landing: data.landing,
        })
    }

    /// Logs a win, loss or late-answer event (or any other event) as it is.
    pub async fn record_event(&self, event: &Event) -> Result<(), Error> {
        let _in_flight = self.inner.in_flight.read().await;
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.inner.log.append(event).await
    }

    /// Logs a non-billing event (win, loss, late answer) without waiting: past `max_pending`
    /// queued events it is dropped with [`Error::Busy`] rather than slowing the caller down.
    /// An event accepted before [`Self::shutdown`] is written by it; one after fails with
    /// [`Error::Closed`].
    pub fn try_record_event(&self, event: Event, max_pending: usize) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.inner.log.try_append(event, max_pending)
    }

    /// Returns once every event logged so far is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.log.flush().await
    }

    /// Reopens the event log's file (see [`EventLog::reopen`]): the exchange does it on
    /// `SIGUSR1`, after an external tool moved the file away.
    pub async fn reopen_event_log(&self) -> Result<(), Error> {
        self.inner.log.reopen().await
    }

    /// This tracker's own Redis Stream (`BASE:SESSION`, listed in `BASE:streams`), when it
    /// mirrors events into Redis.
    pub fn stream_key(&self) -> Option<&str> {
        self.inner.stream_key.as_deref()
    }

    /// Spooled events not yet replayed.
    pub fn spooled(&self) -> u64 {
        self.inner.spool.pending()
    }

    /// Replays the spool now if the dedup store answers (the replay loop also does this every
    /// `replay_interval`).
    pub async fn replay_now(&self) -> Result<ReplayStats, Error> {
        self.inner.replay().await
    }

    /// Stops the replay loop, then writes and fsyncs every accepted event. Call it after the
    /// HTTP server stopped taking event requests; later calls fail with [`Error::Closed`].
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.closed.store(true, Ordering::SeqCst);
        drop(self.inner.in_flight.write().await);
        let task = self.inner.replayer.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            // The loop only awaits between replay passes or inside one; a pass holds the
            // replay lock, taken below, so aborting never cuts one short mid-commit.
            let _guard = self.inner.replay_lock.lock().await;
            task.abort();
        }
        let _guard = self.inner.replay_lock.lock().await;
        self.inner.spool.shutdown().await;
        self.inner.log.shutdown().await
    }

    /// Opens one tracking hit: holds off shutdown while it runs (the guard), refuses it once
    /// the tracker is closed, and verifies its URL at the tracker's time (a forged, tampered or
    /// expired one is counted and refused).
    async fn open_hit(
        &self,
        query: &str,
        kind: Kind,
    ) -> Result<
        (
            tokio::sync::RwLockReadGuard<'_, ()>,
            u64,
            sign::TrackingData,
        ),
        Error,
    > {
        let inner = &self.inner;
        let in_flight = inner.in_flight.read().await;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let now = (inner.clock)();
        match sign::verify(query, &inner.key, kind, now, &inner.validity) {
            Ok(data) => Ok((in_flight, now, data)),
            Err(rejection) => {
                inner.metrics.rejected(kind, rejection);
                Err(Error::Rejected(rejection))
            }
        }
    }

    async fn record(&self, query: &str, kind: Kind) -> Result<(Outcome, Option<String>), Error> {
        let inner = &self.inner;
        let (_in_flight, now, data) = self.open_hit(query, kind).await?;
        if data.test {
            let event = inner.log_test(&data, kind, now).await?;
            return Ok((Outcome::Test(Box::new(event)), data.landing));
        }
        let token: u128 = rand::random();
        let key = inner.claim_key(&data, token);
        let claim = inner.dedup.claim(key.clone(), now).await;
        let landing = data.landing.clone();
        let outcome = match claim {
            Claim::Unavailable => {
                let record = SpoolRecord {
                    token: format!("{token:032x}"),
                    received_ms: now,
                    data,
                };
                inner.spool.append(&record).await?;
                inner.metrics.spooled(kind);
                Outcome::Spooled
            }
            claim => {
                let (outcome, billed) = inner.settle(&data, key, claim, now, false).await?;
                if let Some(billed) = billed {
                    inner.fire_hook(&billed);
                }
                outcome
            }
        };
        Ok((outcome, landing))
    }
}

impl Inner {
    /// The claim of one sighting: an impression carries what it bills (counted durably with
    /// the claim in Redis), a click bills nothing.
    fn claim_key(&self, data: &TrackingData, token: u128) -> ClaimKey {
        ClaimKey {
            id: EventId::new(&data.bid, self.time_bucket_ms),
            kind: data.kind,
            token,
            bill: match data.kind {
                Kind::Impression => Bill::of(&data.bid),
                Kind::Click => None,
            },
        }
    }

    /// Logs a test auction's impression or click as it is: no claim, no cost, no hook. It
    /// goes through the same waiting append as billing lines, so a test hit is as durable as
    /// a real one; test traffic is small enough that the room it takes does not matter.
    async fn log_test(&self, data: &TrackingData, kind: Kind, now: u64) -> Result<Event, Error> {
        let event_type = match kind {
            Kind::Impression => EventType::Impression,
            Kind::Click => EventType::Click,
        };
        let mut event = Event::for_bid(event_type, &data.bid, now).with_test(true);
        event.impression_id = Some(EventId::new(&data.bid, self.time_bucket_ms).to_string());
        self.log.append(&event).await?;
        self.metrics.test_event(kind);
        Ok(event)
    }

    /// Logs a claimed event: billed or duplicate. Returns the hook's argument for a billed
    /// impression; the caller fires it once the event is logged (for a replay: durable).
    async fn settle(
        &self,
        data: &TrackingData,
        key: ClaimKey,
        claim: Claim,
        now: u64,
        replayed: bool,
    ) -> Result<(Outcome, Option<Billed>), Error> {
        let kind = match (data.kind, claim) {
            (Kind::Impression, Claim::First) => EventType::Impression,
            (Kind::Click, Claim::First) => EventType::Click,
            (Kind::Impression, _) => EventType::DuplicateImpression,
            (Kind::Click, _) => EventType::DuplicateClick,
        };
        let mut event = Event::for_bid(kind, &data.bid, now);
        event.impression_id = Some(key.id.to_string());
        event.replayed = replayed;
        if kind == EventType::Impression {
            // One impression at the signed clearing and net prices, through the one
            // CPM-to-cost rule and the one split rule.
            event = event.billing(Split::of_bid(&data.bid));
        }
        self.log.append(&event).await?;
        self.metrics.event(kind);
        Ok(match kind {
            EventType::Impression => {
                let billed = Billed {
                    event: event.clone(),
                    burl: data.burl.clone(),
                };
                (Outcome::Billed(Box::new(event)), Some(billed))
            }
            EventType::Click => (Outcome::Billed(Box::new(event)), None),
            _ => (Outcome::Duplicate, None),
        })
    }

    fn fire_hook(&self, billed: &Billed) {
        if let Some(hook) = &self.hook {
            hook(billed);
        }
    }

    /// Whether a dedup entry written for this event when it first arrived is certainly still
    /// alive: it was written no earlier than `auction_ts - skew` (by a clock up to `skew` off
    /// ours) and lives `dedup_ttl_ms`.
    fn still_checkable(&self, bid: &BidRef, now: u64) -> bool {
        let skew = self.validity.max_skew_ms;
        now.saturating_add(skew.saturating_mul(2))
            < bid.auction_ts_ms.saturating_add(self.dedup_ttl_ms)
    }

    async fn replay(&self) -> Result<ReplayStats, Error> {
        let _guard = self.replay_lock.lock().await;
        let mut stats = ReplayStats::default();
        if self.spool.pending() == 0 || !self.dedup.ping().await {
            stats.remaining = self.spool.pending();
            return Ok(stats);
        }
        while self.spool.begin_replay().await? {
            let mut offset = self.spool.replay_offset().await?;
            loop {
                let batch = self.spool.read_replay(offset, self.replay_batch).await?;
                if batch.is_empty() {
                    self.spool.finish_replay().await?;
                    break;
                }
                let (next, stopped) = self.replay_batch(offset, &batch, &mut stats).await?;
                offset = next;
                if stopped {
                    stats.remaining = self.spool.pending();
                    return Ok(stats);
                }
            }
        }
        stats.remaining = self.spool.pending();
        if stats.billed + stats.duplicates + stats.quarantined > 0 {
            tracing::info!(?stats, "replayed the spool");
        }
        Ok(stats)
    }

    /// Claims and settles one batch in order, stopping at the first record the store cannot
    /// answer for. Returns the confirmed offset and whether it stopped early.
    async fn replay_batch(
        &self,
        start: u64,
        batch: &[(Replayed, u64)],
        stats: &mut ReplayStats,
    ) -> Result<(u64, bool), Error> {
        let now = (self.clock)();
        let mut keys = Vec::with_capacity(batch.len());
        for (item, _) in batch {
            if let Replayed::Record(record) = item {
                if let (Some(token), true) =
                    (record.token(), self.still_checkable(&record.data.bid, now))
                {
                    keys.push(self.claim_key(&record.data, token));
                }
            }
        }
        let claims = self.dedup.claim_many(&keys, now).await;
        let mut claims = keys.iter().zip(claims);
        let mut confirmed = None;
        let mut count = 0u64;
        let mut billed = Vec::new();
        let mut stopped = false;
        for (item, end) in batch {
            match item {
                Replayed::Corrupt(raw) => {
                    self.spool
                        .quarantine("corrupt", serde_json::Value::String(raw.clone()))
                        .await?;
                    stats.quarantined += 1;
                }
                Replayed::Record(record)
                    if record.token().is_none() || !self.still_checkable(&record.data.bid, now) =>
                {
                    let value =
                        serde_json::to_value(record).map_err(|e| Error::Encode(e.to_string()))?;
                    self.spool.quarantine("past_dedup_horizon", value).await?;
                    stats.quarantined += 1;
                }
                Replayed::Record(record) => {
                    let Some((key, claim)) = claims.next() else {
                        // Every checkable record got a key above, so this cannot happen; stop
                        // rather than settle a record without its claim.
                        stopped = true;
                        break;
                    };
                    if claim == Claim::Unavailable {
                        stopped = true;
                        break;
                    }
                    let (outcome, hook) = self
                        .settle(&record.data, key.clone(), claim, now, true)
                        .await?;
                    match outcome {
                        Outcome::Billed(_) => stats.billed += 1,
                        _ => stats.duplicates += 1,
                    }
                    billed.extend(hook);
                }
            }
            confirmed = Some(*end);
            count += 1;
        }
        let Some(offset) = confirmed else {
            return Ok((start, true));
        };
        // Billing is durable before the spool forgets the records and before any burl fires.
        self.log.flush().await?;
        self.spool.commit(offset, count).await?;
        for b in &billed {
            self.fire_hook(b);
        }
        Ok((offset, stopped))
    }
}

/// Replays the spool every `interval` while the tracker lives, and probes a Redis whose breaker
/// is open so online events go to Redis again as soon as it answers.
async fn replay_loop(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(redis) = &inner.redis {
            if !redis.is_healthy() {
                redis.ping().await;
            }
        }
        if inner.spool.pending() > 0 {
            if let Err(e) = inner.replay().await {
                tracing::error!(error = %e, "spool replay failed; retrying next round");
            }
        }
    }
}

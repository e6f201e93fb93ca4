//! The event log: every billed impression and click, every duplicate dropped, every win, loss
//! notice and late DSP answer, as one JSON line in an append-only file (batched, fsynced on a
//! bounded interval, on `flush` and at shutdown) and/or an entry in a Redis Stream.
//!
//! Billing events are never dropped: the queue in front of the writer is bounded, and a full
//! queue makes `append` wait (backpressure reaches the event endpoints, which have their own
//! in-flight bound) instead of discarding. A failed file write is cut back and retried until it
//! succeeds. The stream mirrors the file when both are on: a batch Redis does not take waits
//! in a bounded backlog and is retried without holding up the file (`events_stream`), and
//! only events pushed out of a full backlog are dropped, counted in
//! `impressions_stream_dropped_total`; when the stream is the only sink it is retried instead.
//!
//! The file is rotated by size and age between batches (`events_rotate`), closed files are
//! compressed and kept to a retention off the writer's path (`events_housekeep`), and
//! [`crate::events_files::read_log`] reads a rotated log back whole. A billing event's
//! `append` returns once its line is written to the file (in the page cache, so a killed
//! process loses none of them; an OS crash may lose up to `fsync_interval`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::events_files::open_lines;
use crate::events_housekeep::{Housekeeper, Retention, SweepStats};
use crate::events_rotate::{RotatePolicy, Rotated, Rotation};
pub use crate::events_sample::SampleRates;
use crate::events_sample::Sampler;
use crate::events_stream::{StreamSide, StreamSink};
use crate::journal::{retry_blocking, scan_lines, AppendFile, Line};
use crate::markup::AdFormat;
use crate::metrics::TrackerMetrics;
use crate::redis_conn::RedisHandle;
use crate::revenue::Split;
use crate::sign::BidRef;
use crate::{Clock, Error};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A billed impression (first sighting of its impression id).
    Impression,
    /// A billed click (first sighting of its click id).
    Click,
    /// A repeat of a billed impression: counted, not billed.
    DuplicateImpression,
    DuplicateClick,
    Win,
    Loss,
    /// A DSP answer that arrived after the auction deadline.
    Late,
    /// An impression hit from a blocklisted client IP or a known bot: logged, never billed,
    /// and it does not claim the impression id.
    InvalidImpression,
    /// A click hit from a blocklisted client IP or a known bot: redirected, never billed.
    InvalidClick,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Impression => "impression",
            EventType::Click => "click",
            EventType::DuplicateImpression => "duplicate_impression",
            EventType::DuplicateClick => "duplicate_click",
            EventType::Win => "win",
            EventType::Loss => "loss",
            EventType::Late => "late",
            EventType::InvalidImpression => "invalid_impression",
            EventType::InvalidClick => "invalid_click",
        }
    }
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the event was recorded, ms since the Unix epoch.
    pub ts: u64,
    pub auction_id: String,
    pub imp_id: String,
    pub bid_id: String,
    pub dsp: String,
    pub seat: String,
    pub campaign: String,
    pub creative_id: String,
    /// Clearing price, CPM micros.
    pub price_micros: u64,
    pub currency: String,
    /// When the auction ran, ms since the Unix epoch.
    pub auction_ts: u64,
    /// The request's publisher id (see [`BidRef::publisher`]); absent when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub publisher: String,
    /// The request's `site.domain` (or `dooh.domain`); absent when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// The request's `app.bundle`; absent when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle: String,
    /// The request's `device.geo.country`; absent when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
    /// The winning bid's media type (see [`BidRef::media_type`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<AdFormat>,
    /// The publisher's price, CPM micros (see [`BidRef::net_price_micros`]): on wins and on
    /// impressions and clicks of URLs that carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_price_micros: Option<u64>,
    /// What this event bills, micros: `ceil(price_micros / 1000)` for a billed impression,
    /// absent otherwise. The same as `gross_micros`, kept for readers of older logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
    /// Billed impressions: what the DSP pays, micros (`ceil(price_micros / 1000)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_micros: Option<u64>,
    /// Billed impressions: what the publisher is paid, micros (`floor(net price / 1000)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_micros: Option<u64>,
    /// Billed impressions: what the exchange keeps, micros (`gross_micros − net_micros`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_micros: Option<u64>,
    /// The dedup id, for impressions and clicks (billed or duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impression_id: Option<String>,
    /// OpenRTB loss reason code, for losses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_reason: Option<u32>,
    /// How far past its deadline a late answer came, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<u64>,
    /// Billed when the spool was replayed after a Redis outage, not when it arrived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// About a test auction (`BidRequest.test = 1`): nothing in it was charged or billed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Why an invalid impression or click was not billed (e.g. `ip_blocklist`, `bot_ua`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
}

impl Event {
    /// An event about `bid` with no optional fields.
    pub fn for_bid(kind: EventType, bid: &BidRef, ts: u64) -> Self {
        Self::for_owned_bid(kind, bid.clone(), ts)
    }

    /// [`Self::for_bid`] taking the reference by value: no string is copied.
    pub fn for_owned_bid(kind: EventType, bid: BidRef, ts: u64) -> Self {
        Self {
            kind,
            ts,
            auction_id: bid.auction_id,
            imp_id: bid.imp_id,
            bid_id: bid.bid_id,
            dsp: bid.dsp,
            seat: bid.seat,
            campaign: bid.campaign,
            creative_id: bid.creative_id,
            price_micros: bid.price_micros,
            currency: bid.currency,
            auction_ts: bid.auction_ts_ms,
            publisher: bid.publisher,
            domain: bid.domain,
            bundle: bid.bundle,
            country: bid.country,
            media_type: bid.media_type,
            net_price_micros: bid.net_price_micros,
            cost_micros: None,
            gross_micros: None,
            net_micros: None,
            margin_micros: None,
            impression_id: None,
            loss_reason: None,
            late_ms: None,
            replayed: false,
            test: false,
            invalid_reason: None,
        }
    }

    /// The same event billing `split`: `cost_micros` and `gross_micros` are its gross.
    pub fn billing(self, split: Split) -> Self {
        Self {
            cost_micros: Some(split.gross.get()),
            gross_micros: Some(split.gross.get()),
            net_micros: Some(split.net.get()),
            margin_micros: Some(split.margin.get()),
            ..self
        }
    }

    /// The same event, marked as a test auction's when `test`.
    pub fn with_test(self, test: bool) -> Self {
        Self { test, ..self }
    }

    /// A won auction (the win, not yet an impression: it bills nothing).
    pub fn win(bid: &BidRef, ts: u64) -> Self {
        Self::for_bid(EventType::Win, bid, ts)
    }

    /// A loss notice, with its OpenRTB loss reason code.
    pub fn loss(bid: &BidRef, reason: u32, ts: u64) -> Self {
        Self {
            loss_reason: Some(reason),
            ..Self::for_bid(EventType::Loss, bid, ts)
        }
    }

    /// A DSP answer `late_ms` past its deadline. `bid` carries what is known (auction id, DSP,
    /// and the bid's fields if the answer held one).
    pub fn late(bid: &BidRef, late_ms: u64, ts: u64) -> Self {
        Self {
            late_ms: Some(late_ms),
            ..Self::for_bid(EventType::Late, bid, ts)
        }
    }
}

/// Where events go.
#[derive(Clone, Debug)]
pub struct EventLogConfig {
    /// JSON-lines file; created if missing, appended to otherwise.
    pub file: Option<PathBuf>,
    /// Redis Stream key (used when the log is given a Redis connection). A tracker sets it to
    /// its own stream, `BASE:SESSION` (see `streams.rs`).
    pub stream_key: String,
    /// A set the stream key is added to (`SADD`) before the first write, so a reader finds
    /// every node's stream. Default none.
    pub stream_registry: Option<String>,
    /// `XADD ... MAXLEN ~ cap`.
    pub stream_maxlen: u64,
    /// Beside a file: events Redis has not taken yet, kept and retried oldest first, at
    /// most; past it the oldest are dropped (counted). Default 100 000.
    pub stream_backlog: usize,
    /// Events waiting for the writer; `append` waits when it is full. Default 65 536.
    pub queue: usize,
    /// Most events written in one batch. Default 4 096.
    pub batch_max: usize,
    /// Longest time a written event waits for its fsync. Default 200 ms.
    pub fsync_interval: Duration,
    /// How long the writer waits after a non-billing event for more to batch with it. Under
    /// load this turns one write (and one blocking-pool handoff) per auction into one per
    /// interval; a billing event, a flush or a full batch ends the wait at once. Default 5 ms.
    pub linger: Duration,
    /// Close the live file once it holds this many bytes (it may pass it by one batch).
    /// 0 (the default here; the exchange's is 1 GiB): never by size.
    pub rotate_bytes: u64,
    /// Close a live file holding anything once it has been open this long. Zero (the default
    /// here; the exchange's is 1 h): never by age.
    pub rotate_interval: Duration,
    /// Gzip closed files (off the writer's path). Default true.
    pub compress: bool,
    /// Keep at most this many closed files, deleting the oldest. 0 (the default): no limit.
    pub retention_files: usize,
    /// Delete closed files closed longer ago than this. Zero (the default): no limit.
    pub retention_age: Duration,
    /// Share of win, loss and late events written; billing events are always written.
    /// Default: all.
    pub sample: SampleRates,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        Self {
            file: None,
            stream_key: "exchange:events".to_owned(),
            stream_registry: None,
            stream_maxlen: 1_000_000,
            stream_backlog: 100_000,
            queue: 65_536,
            batch_max: 4_096,
            fsync_interval: Duration::from_millis(200),
            linger: Duration::from_millis(5),
            rotate_bytes: 0,
            rotate_interval: Duration::ZERO,
            compress: true,
            retention_files: 0,
            retention_age: Duration::ZERO,
            sample: SampleRates::default(),
        }
    }
}

impl EventLogConfig {
    fn rotate_policy(&self) -> RotatePolicy {
        RotatePolicy {
            bytes: self.rotate_bytes,
            interval: self.rotate_interval,
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            files: self.retention_files,
            age: self.retention_age,
        }
    }
}

enum Cmd {
    /// Serialized by the caller (billing events, written as they were when accepted);
    /// `written` is answered once the line is in the file (or, without one, the stream).
    Json {
        kind: EventType,
        json: Vec<u8>,
        written: oneshot::Sender<()>,
    },
    /// Serialized by the writer, straight into its batch buffer.
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
    /// Open the live file's path anew (after an external tool moved the file away).
    Reopen(oneshot::Sender<Result<(), Error>>),
    Shutdown(oneshot::Sender<()>),
}

/// The event log handle; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EventLog {
    tx: mpsc::Sender<Cmd>,
    queue: usize,
    task: Mutex<Option<JoinHandle<()>>>,
    sampler: Sampler,
    metrics: TrackerMetrics,
    /// Compression and retention of closed files, when there is a file.
    housekeeper: Option<Arc<Housekeeper>>,
}

impl EventLog {
    /// Opens the sinks and starts the writer task. `redis` enables the stream sink.
    pub(crate) fn open(
        config: EventLogConfig,
        redis: Option<RedisHandle>,
        metrics: TrackerMetrics,
        clock: Clock,
    ) -> Result<Self, Error> {
        let problems = config.sample.problems();
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        let now = clock();
        let (file, rotation) = match &config.file {
            Some(path) => {
                let file = AppendFile::open(path)
                    .map_err(|e| Error::io("opening the event log", e))?
                    .0;
                let policy = config.rotate_policy();
                let rotation = if policy.is_off() {
                    None
                } else {
                    Some(
                        Rotation::new(path, policy, now)
                            .map_err(|e| Error::io("listing the event log's closed files", e))?,
                    )
                };
                (Some(file), rotation)
            }
            None => (None, None),
        };
        if file.is_none() && redis.is_none() {
            return Err(Error::Config(
                "the event log needs a file or a Redis stream".into(),
            ));
        }
        let housekeeper = config.file.as_ref().map(|path| {
            Arc::new(Housekeeper::new(
                path.clone(),
                config.compress,
                config.retention(),
                clock.clone(),
                metrics.clone(),
            ))
        });
        // One pending signal is enough: a sweep handles every closed file it finds.
        let (sweeps, sweep_rx) = mpsc::channel(1);
        if let Some(keeper) = &housekeeper {
            tokio::spawn(crate::events_housekeep::run(keeper.clone(), sweep_rx));
        }
        let queue = config.queue.max(1);
        let (tx, rx) = mpsc::channel(queue);
        let stream = redis.map(|redis| {
            let sink = StreamSink::new(
                redis,
                config.stream_key.clone(),
                config.stream_maxlen,
                config.stream_registry.clone(),
                metrics.clone(),
            );
            StreamSide::new(sink, file.is_some(), config.stream_backlog, clock.clone())
        });
        let sampler = Sampler::new(config.sample);
        let writer = Writer {
            rx,
            file,
            stream,
            config,
            metrics: metrics.clone(),
            rotation,
            sweeps,
            clock,
        };
        let task = tokio::spawn(writer.run());
        Ok(Self {
            tx,
            queue,
            task: Mutex::new(Some(task)),
            sampler,
            metrics,
            housekeeper,
        })
    }

    /// Opens a file-only log.
    pub fn open_file(config: EventLogConfig) -> Result<Self, Error> {
        Self::open_file_with_clock(config, crate::system_clock())
    }

    /// [`Self::open_file`] with a given clock (it dates rotations and ages closed files).
    pub fn open_file_with_clock(config: EventLogConfig, clock: Clock) -> Result<Self, Error> {
        Self::open(config, None, TrackerMetrics::default(), clock)
    }

    /// Whether `event` is written or left out by sampling (counted).
    fn sampled_in(&self, event: &Event) -> bool {
        let keep = self.sampler.keep(event.kind, &event.auction_id);
        if !keep {
            self.metrics.sampled_out(event.kind);
        }
        keep
    }

    /// Writes `event`: waits while the queue is full, and returns once its line is in the
    /// file (a killed process loses none), so a billing event is written before the hit is
    /// answered. Durable against an OS crash at the next fsync (at most `fsync_interval`
    /// later) or when a later `flush` returns. A win, loss or late event may be left out by
    /// sampling (then it returns at once).
    pub async fn append(&self, event: &Event) -> Result<(), Error> {
        if !self.sampled_in(event) {
            return Ok(());
        }
        let json = serde_json::to_vec(event).map_err(|e| Error::Encode(e.to_string()))?;
        let (written, done) = oneshot::channel();
        self.tx
            .send(Cmd::Json {
                kind: event.kind,
                json,
                written,
            })
            .await
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)
    }

    /// Queues `event` without waiting, for events that inform rather than bill (wins, losses,
    /// late answers): fails with [`Error::Busy`] once `max_pending` events are already
    /// waiting, so they can never take the room billing events need.
    pub fn try_append(&self, event: Event, max_pending: usize) -> Result<(), Error> {
        if !self.sampled_in(&event) {
            return Ok(());
        }
        let pending = self.queue - self.tx.capacity();
        if pending >= max_pending {
            return Err(Error::Busy);
        }
        self.tx
            .try_send(Cmd::Event(Box::new(event)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Busy,
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            })
    }

    /// Returns once every event appended before it is durable in the file (and, without a
    /// file, in the stream). Beside a file, events Redis did not take may still wait in the
    /// stream's backlog.
    pub async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(ack))
            .await
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)
    }

    /// Closes the live file and opens its path anew, for an external tool that moved the file
    /// away (`logrotate` without `copytruncate`, then `SIGUSR1`). Every event appended before
    /// the call is in the old file, fsynced; every one after it in the new file. Without a
    /// move it reopens the same file.
    pub async fn reopen(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Reopen(ack))
            .await
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)?
    }

    /// Deletes closed files past the retention and compresses the rest now, as happens in
    /// the background at start and after every rotation; returns once done.
    pub async fn housekeep(&self) -> SweepStats {
        match &self.housekeeper {
            Some(keeper) => keeper.sweep().await,
            None => SweepStats::default(),
        }
    }

    /// Writes and fsyncs everything accepted so far and stops the writer. An `append` racing
    /// with it either lands before the final fsync or fails with [`Error::Closed`]; none is
    /// accepted and then dropped.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let Some(task) = self.task.lock().await.take() else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let sent = self.tx.send(Cmd::Shutdown(ack)).await.is_ok();
        let acked = sent && done.await.is_ok();
        let _ = task.await;
        if let Some(keeper) = &self.housekeeper {
            // A compression cut short leaves its plain file, finished at the next start.
            keeper.cancel();
        }
        if acked {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }
}

/// Events on their way to the sinks: the file's bytes (one JSON line each) and where each
/// line is, for the stream.
#[derive(Default)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    lines: Vec<(EventType, std::ops::Range<usize>)>,
    /// Holds a billing event: written without lingering.
    urgent: bool,
}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn push_json(&mut self, kind: EventType, json: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(json);
        self.end_line(kind, start);
        self.urgent = true;
    }

    fn push_event(&mut self, event: &Event) {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, event) {
            // Strings and integers only: serde_json cannot fail on them, but a half-written
            // line must not stay in the file either way.
            self.buf.truncate(start);
            tracing::warn!(error = %e, "could not encode an event; dropped");
            return;
        }
        self.end_line(event.kind, start);
    }

    fn end_line(&mut self, kind: EventType, start: usize) {
        self.lines.push((kind, start..self.buf.len()));
        self.buf.push(b'\n');
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = (EventType, &[u8])> {
        self.lines
            .iter()
            .map(|(kind, range)| (*kind, &self.buf[range.clone()]))
    }
}

struct Writer {
    rx: mpsc::Receiver<Cmd>,
    file: Option<AppendFile>,
    stream: Option<StreamSide>,
    config: EventLogConfig,
    metrics: TrackerMetrics,
    /// Some when the file rotates by size or age.
    rotation: Option<Rotation>,
    /// Asks the housekeeper for a sweep after a rotation.
    sweeps: mpsc::Sender<()>,
    clock: Clock,
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Writer {
    async fn run(mut self) {
        let mut unsynced_since: Option<Instant> = None;
        let mut closing: Option<oneshot::Sender<()>> = None;
        loop {
            let first = if closing.is_none() {
                let sync_at = unsynced_since.map(|since| since + self.config.fsync_interval);
                let rotate_at = self.rotation_wait().map(|wait| Instant::now() + wait);
                tokio::select! {
                    cmd = self.rx.recv() => cmd,
                    _ = sleep_until_some(sync_at) => {
                        self.sync_file().await;
                        unsynced_since = None;
                        continue;
                    }
                    _ = sleep_until_some(rotate_at) => {
                        self.rotate_if_due(&mut unsynced_since).await;
                        continue;
                    }
                }
            } else {
                self.rx.recv().await
            };
            let Some(first) = first else {
                // Every handle is gone, or shutdown drained the queue: make what was written
                // durable and stop.
                self.sync_file().await;
                if let Some(stream) = &mut self.stream {
                    stream.close().await;
                }
                if let Some(ack) = closing {
                    let _ = ack.send(());
                }
                return;
            };
            let mut batch = Batch::default();
            let mut acks = Vec::new();
            let mut written = Vec::new();
            let mut reopen = None;
            let linger_until = Instant::now() + self.config.linger;
            let mut cmd = Some(first);
            loop {
                while let Some(c) = cmd.take() {
                    match c {
                        Cmd::Json {
                            kind,
                            json,
                            written: ack,
                        } => {
                            batch.push_json(kind, &json);
                            written.push(ack);
                        }
                        Cmd::Event(event) => batch.push_event(&event),
                        Cmd::Flush(ack) => acks.push(ack),
                        Cmd::Reopen(ack) => reopen = Some(ack),
                        Cmd::Shutdown(ack) => {
                            // No new events from here on; the ones already queued are still read.
                            self.rx.close();
                            closing = Some(ack);
                        }
                    }
                    // A reopen ends the batch: what came before it goes to the old file.
                    if batch.len() < self.config.batch_max && reopen.is_none() {
                        cmd = self.rx.try_recv().ok();
                    }
                }
                let linger = !batch.urgent
                    && !batch.is_empty()
                    && acks.is_empty()
                    && reopen.is_none()
                    && closing.is_none()
                    && batch.len() < self.config.batch_max;
                if !linger {
                    break;
                }
                tokio::select! {
                    next = self.rx.recv() => match next {
                        Some(next) => cmd = Some(next),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(linger_until) => break,
                }
            }
            if !batch.is_empty() {
                // A file past its age is closed before lines of the new period go in.
                self.rotate_if_due(&mut unsynced_since).await;
                let batch = Arc::new(batch);
                self.write_file(&batch).await;
                if self.file.is_some() {
                    for ack in written.drain(..) {
                        let _ = ack.send(());
                    }
                }
                self.write_stream(batch).await;
                for ack in written {
                    let _ = ack.send(());
                }
                unsynced_since.get_or_insert_with(Instant::now);
            }
            self.rotate_if_due(&mut unsynced_since).await;
            let due = unsynced_since.is_some_and(|s| s.elapsed() >= self.config.fsync_interval);
            if !acks.is_empty() || due {
                self.sync_file().await;
                unsynced_since = None;
            }
            if let Some(ack) = reopen {
                let _ = ack.send(self.reopen_file(&mut unsynced_since).await);
            }
            for ack in acks {
                let _ = ack.send(());
            }
        }
    }

    /// How long until the live file is due by age, when it holds anything.
    fn rotation_wait(&self) -> Option<Duration> {
        let (rotation, file) = (self.rotation.as_ref()?, self.file.as_ref()?);
        if file.len() == 0 {
            return None;
        }
        rotation.wait((self.clock)())
    }

    /// Closes the live file and opens a new one if it is due by size or age. On an error
    /// the old file stays live (nothing is lost) and the rotation is tried again later.
    async fn rotate_if_due(&mut self, unsynced_since: &mut Option<Instant>) {
        let now = (self.clock)();
        let (Some(rotation), Some(file)) = (&mut self.rotation, &self.file) else {
            return;
        };
        if !rotation.due(now, file.len()) {
            return;
        }
        let closed = rotation.next_name(file.path(), now);
        let Some(file) = self.file.take() else { return };
        let live = file.path().to_owned();
        let target = closed.clone();
        let joined =
            tokio::task::spawn_blocking(move || crate::events_rotate::rotate(file, &target)).await;
        match joined {
            Ok(Ok((file, outcome))) => {
                self.file = Some(file);
                rotation.opened(now);
                *unsynced_since = None;
                self.metrics.rotations.increment(1);
                if outcome == Rotated::Closed {
                    tracing::info!(closed = %closed.display(), "rotated the event log");
                    let _ = self.sweeps.try_send(());
                }
            }
            Ok(Err((file, e))) => {
                self.file = Some(file);
                rotation.failed(now);
                self.metrics.file_io_errors.increment(1);
                tracing::error!(error = %e, path = %live.display(), "could not rotate the event log; it stays live, retried in a second");
            }
            Err(e) => {
                // Only a panic (there is none) or a runtime going away gets here.
                tracing::error!(error = %e, path = %live.display(), "the event log rotation did not finish; reopening");
                self.file = Some(reopen_until_done(&live, &self.metrics).await);
                rotation.failed(now);
            }
        }
    }

    /// Runs a requested reopen: the old file is fsynced and closed, its path opened anew.
    async fn reopen_file(&mut self, unsynced_since: &mut Option<Instant>) -> Result<(), Error> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let live = file.path().to_owned();
        match tokio::task::spawn_blocking(move || crate::events_rotate::reopen(file)).await {
            Ok(Ok(file)) => {
                self.file = Some(file);
                *unsynced_since = None;
                if let Some(rotation) = &mut self.rotation {
                    rotation.opened((self.clock)());
                }
                self.metrics.reopens.increment(1);
                tracing::info!(path = %live.display(), "reopened the event log");
                Ok(())
            }
            Ok(Err((file, e))) => {
                self.file = Some(file);
                self.metrics.file_io_errors.increment(1);
                tracing::error!(error = %e, path = %live.display(), "could not reopen the event log; still writing the old file");
                Err(Error::io("reopening the event log", e))
            }
            Err(e) => {
                tracing::error!(error = %e, path = %live.display(), "the event log reopen did not finish; reopening");
                self.file = Some(reopen_until_done(&live, &self.metrics).await);
                Ok(())
            }
        }
    }

    async fn write_file(&mut self, batch: &Arc<Batch>) {
        let Some(file) = self.file.take() else { return };
        let batch = batch.clone();
        let file = retry_blocking(
            file,
            "writing the event log",
            &self.metrics.file_io_errors,
            move |f| f.write(&batch.buf),
        )
        .await;
        self.file = Some(file);
    }

    async fn sync_file(&mut self) {
        let Some(file) = self.file.take() else { return };
        self.file = Some(
            retry_blocking(
                file,
                "syncing the event log",
                &self.metrics.file_io_errors,
                |f| f.sync(),
            )
            .await,
        );
    }

    async fn write_stream(&mut self, batch: Arc<Batch>) {
        if let Some(stream) = &mut self.stream {
            stream.write(batch).await;
        }
    }
}

/// Opens `path` until it works: the writer must have a file to put accepted events in.
async fn reopen_until_done(path: &Path, errors: &TrackerMetrics) -> AppendFile {
    let mut backoff = Duration::from_millis(50);
    loop {
        let p = path.to_owned();
        match tokio::task::spawn_blocking(move || AppendFile::open(&p)).await {
            Ok(Ok((file, _))) => return file,
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %path.display(), "cannot open the event log; retrying")
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot open the event log; retrying")
            }
        }
        errors.file_io_errors.increment(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The result of reading an events file.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Complete lines that did not parse as an event (skipped).
    pub bad_lines: u64,
    /// Bytes at the end without a final newline: a write torn by a crash (skipped).
    pub torn_tail_bytes: u64,
}

/// Reads every event of `path` (a plain or, ending in `.gz`, a gzip file) in order, calling
/// `f` for each; a torn tail or a line that is not an event is skipped with a log line and
/// counted. [`crate::events_files::read_log`] reads a rotated log's files together.
pub fn read_events(path: &std::path::Path, mut f: impl FnMut(Event)) -> Result<ReadStats, Error> {
    let file = open_lines(path).map_err(|e| Error::io("opening an events file", e))?;
    let mut stats = ReadStats::default();
    let mut line_no = 0u64;
    scan_lines(file, 0, |line| {
        line_no += 1;
        match line {
            Line::Complete([], _) => {}
            Line::Complete(bytes, _) => match serde_json::from_slice::<Event>(bytes) {
                Ok(event) => f(event),
                Err(e) => {
                    stats.bad_lines += 1;
                    tracing::warn!(path = %path.display(), line = line_no, error = %e, "skipped a line that is not an event");
                }
            },
            Line::TornTail(n) => {
                stats.torn_tail_bytes = n as u64;
                tracing::warn!(path = %path.display(), line = line_no, bytes = n, "skipped a torn last line (crash mid-write)");
            }
        }
        true
    })
    .map_err(|e| Error::io("reading an events file", e))?;
    Ok(stats)
}

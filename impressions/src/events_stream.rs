//! The Redis Stream sink of the event log: every event gets an explicit, strictly increasing
//! entry id once, when its batch is formed, so a resend adds only what is missing; beside the
//! file, batches Redis did not take wait in a bounded backlog, retried oldest first.
//!
//! A tracker owns its stream alone (`BASE:SESSION`, see `streams.rs`), so it can pick the
//! ids: `MS-SEQ` with `MS = max(now, last MS)` and `SEQ` counting within one `MS`. Redis
//! refuses an `XADD` whose id is not above the stream's last ("equal or smaller than the
//! target stream top item"); for a resend that refusal means "already there", so a batch
//! whose reply was lost, or a pipeline cut midway by a failover, is sent again whole and
//! lands once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::events::Batch;
use crate::metrics::TrackerMetrics;
use crate::redis_conn::RedisHandle;
use crate::Clock;

/// First wait after a failed write; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What Redis answers to an `XADD` whose id is not above the stream's last entry.
const NOT_ABOVE_TOP: &str = "equal or smaller than the target stream top item";

/// The last id given out, `MS-SEQ`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LastId {
    ms: u64,
    seq: u64,
}

/// A batch on its way to the stream: its entries are `ms-(seq0 + i)`; the first `done` are
/// known to be in the stream (or given up).
pub(crate) struct Pending {
    batch: Arc<Batch>,
    ms: u64,
    seq0: u64,
    done: usize,
}

impl Pending {
    fn left(&self) -> usize {
        self.batch.len() - self.done
    }

    /// The id of entry `i` of the batch.
    pub(crate) fn id(&self, i: usize) -> String {
        format!("{}-{}", self.ms, self.seq0 + i as u64)
    }
}

/// Batches waiting for Redis, oldest first, holding at most `cap` events: a push past it
/// gives up the oldest events.
struct Backlog {
    queue: VecDeque<Pending>,
    events: usize,
    cap: usize,
}

impl Backlog {
    fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            events: 0,
            cap: cap.max(1),
        }
    }

    /// Adds `pending` at the back; returns how many of the oldest events it pushed out.
    fn push(&mut self, pending: Pending) -> usize {
        self.events += pending.left();
        self.queue.push_back(pending);
        self.trim()
    }

    /// Gives up the oldest events past the cap; returns how many.
    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.events > self.cap {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let n = front.left().min(self.events - self.cap);
            front.done += n;
            self.events -= n;
            dropped += n;
            if front.left() == 0 {
                self.queue.pop_front();
            }
        }
        dropped
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        self.events -= p.left();
        Some(p)
    }

    fn push_front(&mut self, pending: Pending) {
        self.events += pending.left();
        self.queue.push_front(pending);
    }

    /// Empties the queue; returns how many events it held.
    fn take_all(&mut self) -> usize {
        self.queue.clear();
        std::mem::take(&mut self.events)
    }
}

/// Gives out the entry ids.
#[derive(Debug, Default)]
pub(crate) struct StreamIds {
    last: LastId,
}

impl StreamIds {
    /// Gives `batch`'s events their ids (`now_ms` is the writer's clock).
    pub(crate) fn stamp(&mut self, batch: Arc<Batch>, now_ms: u64) -> Pending {
        let (ms, seq0) = if now_ms > self.last.ms {
            // `0-0` is not a valid entry id.
            (now_ms, u64::from(now_ms == 0))
        } else {
            (self.last.ms, self.last.seq + 1)
        };
        let n = batch.len().max(1) as u64;
        self.last = LastId {
            ms,
            seq: seq0 + n - 1,
        };
        Pending {
            batch,
            ms,
            seq0,
            done: 0,
        }
    }
}

/// The stream side of the event writer: the sink itself when it is the only one, else a
/// task of its own that mirrors the file from a bounded backlog, so the writer never waits
/// on Redis.
pub(crate) struct StreamSide {
    ids: StreamIds,
    clock: Clock,
    mode: Mode,
}

enum Mode {
    Only(Box<StreamSink>),
    Beside {
        shared: Arc<Shared>,
        task: Option<JoinHandle<()>>,
    },
}

/// What the writer and the mirror task share.
struct Shared {
    backlog: Mutex<Backlog>,
    /// A batch was queued, or the writer is closing.
    wake: Notify,
    closing: AtomicBool,
    metrics: TrackerMetrics,
    key: String,
}

impl Shared {
    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // A panic while holding it (there is none) leaves a consistent queue: use it.
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `pending` at the back (a new batch) or the front (a retry), giving up the
    /// oldest events past the cap.
    fn queue(&self, pending: Pending, front: bool) {
        let dropped = {
            let mut backlog = self.backlog();
            if front {
                backlog.push_front(pending);
                backlog.trim()
            } else {
                backlog.push(pending)
            }
        };
        count_dropped(
            &self.metrics,
            &self.key,
            dropped,
            "the stream backlog is full; dropped its oldest events",
        );
    }

    fn pop(&self) -> Option<Pending> {
        self.backlog().pop_front()
    }
}

impl StreamSide {
    /// `beside_file`: the stream mirrors a file, through a backlog of at most `backlog`
    /// events, sent by a task of its own.
    pub(crate) fn new(sink: StreamSink, beside_file: bool, backlog: usize, clock: Clock) -> Self {
        let mode = if beside_file {
            let shared = Arc::new(Shared {
                backlog: Mutex::new(Backlog::new(backlog)),
                wake: Notify::new(),
                closing: AtomicBool::new(false),
                metrics: sink.metrics.clone(),
                key: sink.key.clone(),
            });
            let task = tokio::spawn(mirror(sink, shared.clone()));
            Mode::Beside {
                shared,
                task: Some(task),
            }
        } else {
            Mode::Only(Box::new(sink))
        };
        Self {
            ids: StreamIds::default(),
            clock,
            mode,
        }
    }

    /// Sends `batch`: beside a file it is queued at once; as the only sink it is retried
    /// until Redis has all of it.
    pub(crate) async fn write(&mut self, batch: Arc<Batch>) {
        let pending = self.ids.stamp(batch, (self.clock)());
        match &mut self.mode {
            Mode::Only(sink) => sink.write_only_sink(pending).await,
            Mode::Beside { shared, .. } => {
                shared.queue(pending, false);
                shared.wake.notify_one();
            }
        }
    }

    /// At shutdown: the mirror makes one last try; what Redis still does not take is given
    /// up (counted).
    pub(crate) async fn close(&mut self) {
        if let Mode::Beside { shared, task } = &mut self.mode {
            shared.closing.store(true, Ordering::SeqCst);
            shared.wake.notify_one();
            if let Some(task) = task.take() {
                let _ = task.await;
            }
        }
    }
}

/// The mirror task: sends the backlog oldest first; after a failure it waits a backoff
/// (doubling to [`MAX_BACKOFF`]) and a ping before the next try.
async fn mirror(mut sink: StreamSink, shared: Arc<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(mut pending) = shared.pop() else {
            if shared.closing.load(Ordering::SeqCst) {
                return;
            }
            shared.wake.notified().await;
            continue;
        };
        let closing = shared.closing.load(Ordering::SeqCst);
        // A failure opened the breaker; only a ping closes it.
        let up = sink.redis.is_healthy() || sink.redis.ping().await;
        if up && sink.send(&mut pending).await {
            backoff = FIRST_BACKOFF;
            continue;
        }
        if closing {
            let left = pending.left() + shared.backlog().take_all();
            count_dropped(
                &shared.metrics,
                &shared.key,
                left,
                "stopping with events the stream never took",
            );
            return;
        }
        shared.queue(pending, true);
        let until = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = shared.wake.notified() => {
                    if shared.closing.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn count_dropped(metrics: &TrackerMetrics, key: &str, n: usize, why: &str) {
    if n > 0 {
        metrics.stream_dropped.increment(n as u64);
        tracing::warn!(events = n, stream = %key, "{why}");
    }
}

/// Writes batches to one stream.
pub(crate) struct StreamSink {
    redis: RedisHandle,
    key: String,
    maxlen: u64,
    registry: Option<String>,
    /// The stream is listed in `registry`.
    registered: bool,
    metrics: TrackerMetrics,
}

impl StreamSink {
    pub(crate) fn new(
        redis: RedisHandle,
        key: String,
        maxlen: u64,
        registry: Option<String>,
        metrics: TrackerMetrics,
    ) -> Self {
        Self {
            redis,
            key,
            maxlen,
            registry,
            registered: false,
            metrics,
        }
    }

    /// Sends `pending` until Redis has all of it.
    async fn write_only_sink(&mut self, mut pending: Pending) {
        let mut backoff = FIRST_BACKOFF;
        while !self.send(&mut pending).await {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.redis.ping().await;
        }
    }

    /// Sends what of `pending` is not known to be there; true once all of it is. Advances
    /// `pending.done` past every entry answered, so a retry resends less.
    async fn send(&mut self, pending: &mut Pending) -> bool {
        if pending.left() == 0 {
            return true;
        }
        if let (Some(registry), false) = (&self.registry, self.registered) {
            // Its own call: on a cluster the set and the stream are keys of different slots.
            let sadd = redis::cmd("SADD").arg(registry).arg(&self.key).clone();
            if self.redis.query::<()>(&sadd).await.is_err() {
                return false;
            }
            self.registered = true;
        }
        let mut pipe = redis::pipe();
        // Every command runs and answers on its own: one refused id must not hide the rest.
        pipe.ignore_errors();
        for (i, (kind, json)) in pending.batch.lines().enumerate().skip(pending.done) {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg(pending.id(i))
                .arg("type")
                .arg(kind.as_str())
                .arg("event")
                .arg(json);
        }
        let Ok(replies) = self.redis.query_pipeline::<Vec<Value>>(&pipe).await else {
            return false;
        };
        if replies.len() != pending.left() {
            tracing::warn!(
                sent = pending.left(),
                answered = replies.len(),
                "the stream pipeline answered a different number of replies; resending"
            );
            return false;
        }
        // Entries up to the last one in the stream are settled: a refused one before it can
        // never be added any more (its id is below the top now), so it is given up, counted.
        let settled = replies
            .iter()
            .rposition(|r| !refused(r))
            .map_or(0, |i| i + 1);
        let lost = replies[..settled].iter().filter(|r| refused(r)).count();
        if let Some(Value::ServerError(e)) = replies.iter().find(|r| refused(r)) {
            tracing::warn!(error = ?e, stream = %self.key, "redis refused a stream entry");
        }
        count_dropped(
            &self.metrics,
            &self.key,
            lost,
            "stream entries refused before later ones were added",
        );
        pending.done += settled;
        pending.left() == 0
    }
}

/// A reply that did not put its entry in the stream: any error but "already there".
fn refused(reply: &Value) -> bool {
    match reply {
        Value::ServerError(e) => !e.details().is_some_and(|d| d.contains(NOT_ABOVE_TOP)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    fn batch(n: usize) -> Arc<Batch> {
        let mut b = Batch::default();
        for i in 0..n {
            b.push_json(EventType::Win, format!("{{\"n\":{i}}}").as_bytes());
        }
        Arc::new(b)
    }

    fn pending(n: usize) -> Pending {
        Pending {
            batch: batch(n),
            ms: 1,
            seq0: 0,
            done: 0,
        }
    }

    async fn ids_in(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .unwrap();
        entries.into_iter().map(|(id, _)| id).collect()
    }

    #[tokio::test]
    async fn a_resend_after_a_partial_apply_adds_each_entry_once() {
        let server = testkit::redis::RedisServer::start().unwrap();
        let target = redislink::Target::Single(server.url());
        let handle =
            RedisHandle::new(&target, Duration::from_secs(2), TrackerMetrics::default()).unwrap();
        let mut sink = StreamSink::new(
            handle,
            "s:node".into(),
            1000,
            Some("s:streams".into()),
            TrackerMetrics::default(),
        );
        let mut ids = StreamIds::default();
        let mut first = ids.stamp(batch(2), 7);
        let mut second = ids.stamp(batch(4), 5);
        // The clock went back: the ids still grow.
        assert_eq!(
            (first.id(0), first.id(1), second.id(0), second.id(3)),
            ("7-0".into(), "7-1".into(), "7-2".into(), "7-5".into())
        );
        let mut third = ids.stamp(batch(1), 9);
        assert_eq!(third.id(0), "9-0");

        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        assert!(sink.send(&mut first).await);
        // The first half of the second batch landed before its reply was lost.
        for i in 0..2 {
            let _: String = redis::cmd("XADD")
                .arg("s:node")
                .arg(second.id(i))
                .arg("event")
                .arg("by hand")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        assert!(sink.send(&mut second).await);
        assert_eq!(second.done, 4);
        assert!(sink.send(&mut second).await, "nothing left to send");
        assert!(sink.send(&mut third).await);
        // A resend of a batch that is all there adds nothing.
        third.done = 0;
        assert!(sink.send(&mut third).await);
        assert_eq!(
            ids_in(&mut conn, "s:node").await,
            ["7-0", "7-1", "7-2", "7-3", "7-4", "7-5", "9-0"]
        );
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg("s:streams")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(listed, ["s:node"]);
    }

    #[test]
    fn a_full_backlog_gives_up_its_oldest_events() {
        let mut backlog = Backlog::new(5);
        assert_eq!(backlog.push(pending(3)), 0);
        assert_eq!(backlog.push(pending(3)), 1);
        assert_eq!(
            (backlog.events, backlog.queue.len(), backlog.queue[0].done),
            (5, 2, 1)
        );
        assert_eq!(backlog.push(pending(4)), 4);
        assert_eq!(
            (backlog.events, backlog.queue.len(), backlog.queue[0].done),
            (5, 2, 2)
        );
        let front = backlog.pop_front().unwrap();
        assert_eq!((front.left(), backlog.events), (1, 4));
        backlog.push_front(front);
        assert_eq!(backlog.events, 5);
    }
}

//! The open-loop load generator: a scheduler that emits every request at its intended time, a
//! bounded queue, and N keep-alive HTTP/1.1 connections that send what the queue holds.
//!
//! Open loop means the schedule never waits for answers: a slow target makes requests queue
//! (their latency still counts from the intended time, so queueing shows instead of hiding —
//! no coordinated omission), and when the queue is full the request is counted as dropped by
//! the generator instead of pushing the schedule back. Each connection is a raw hyper http1
//! connection owned by one task, so "N connections" means exactly N sockets.
//!
//! Several targets (a fleet) share one schedule: request `n` goes to target `n mod T`, each
//! target has its own queue and its own N connections, and the report has each target's
//! figures beside the total.
//!
//! Everything is bounded: the plan in count and time, each request by its timeout, the drain
//! after the schedule by the timeout plus a second, the queue and the answer sizes in bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::mix::Mix;
use crate::plan::Plan;
use crate::stats::{
    count_bids, MixEntry, Outcome, PhaseSummary, Recorder, RunReport, SecondReport, TargetReport,
    Window,
};
use crate::target::Target;
use crate::Error;

/// The most connections a run may open.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The longest queue a run may keep.
pub const MAX_QUEUE: usize = 1_000_000;

/// The longest request timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers above this many bytes count as errors (the connection is dropped).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How long the connections get to open before the run starts.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// The gap between setting up and the first intended send, so the first requests are not
/// already late when the scheduler starts.
const LEAD: Duration = Duration::from_millis(20);

/// What the drain after the schedule may take beyond one request timeout.
const DRAIN_EXTRA: Duration = Duration::from_secs(1);

/// How one run is set up.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where requests go: one target, or a fleet sharing the schedule in turn.
    pub targets: Vec<Target>,
    /// Rates and durations.
    pub plan: Plan,
    /// What each request carries.
    pub mix: Arc<Mix>,
    /// Keep-alive connections per target, 1 to [`MAX_CONNECTIONS`] in all.
    pub connections: usize,
    /// Requests that may wait for a free connection, per target, 1 to [`MAX_QUEUE`] in all.
    pub queue: usize,
    /// How long one request may take once sent, up to [`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// A name for the run in reports.
    pub label: String,
    /// `run` or `surge`, for reports.
    pub mode: String,
}

impl RunConfig {
    fn check(&self) -> Result<(), Error> {
        let bad = |s: String| Err(Error::InvalidPlan(s));
        let n = self.targets.len();
        if n == 0 {
            return bad("no target".to_owned());
        }
        if self.connections == 0 || self.connections.saturating_mul(n) > MAX_CONNECTIONS {
            return bad(format!(
                "connections must be 1 to {MAX_CONNECTIONS} in all ({n} targets), got {} each",
                self.connections
            ));
        }
        if self.queue == 0 || self.queue.saturating_mul(n) > MAX_QUEUE {
            return bad(format!(
                "queue must be 1 to {MAX_QUEUE} in all ({n} targets), got {} each",
                self.queue
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad(format!(
                "timeout must be above 0 and at most {}s, got {:?}",
                MAX_TIMEOUT.as_secs(),
                self.timeout
            ));
        }
        if self.mix.is_empty() {
            return Err(Error::InvalidMix("the mix is empty".to_owned()));
        }
        Ok(())
    }
}

/// One scheduled request.
struct Job {
    intended: Instant,
    seq: u64,
    measured: bool,
}

/// The measured results, shared by the scheduler, the connections and the ticker.
struct State {
    recorder: Recorder,
    /// Each target's share of the measured window, when there are several.
    per_target: Vec<Window>,
    /// When the last measured request finished.
    last_done: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    /// Set on interrupt: queued requests are discarded instead of sent.
    stopping: AtomicBool,
    /// Measured requests written to a connection since the last tick; kept outside the lock
    /// so sending never waits for it.
    sent: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds valid counters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What every connection needs to build a request.
struct RequestTemplate {
    addr: SocketAddr,
    /// Which target, when there are several.
    index: Option<usize>,
    authority: String,
    path: String,
    mix: Arc<Mix>,
    timeout: Duration,
}

/// Runs the plan against the target. `progress` is called once per measured second with that
/// second's figures; `stop` ends the run early (Ctrl-C): queued requests are discarded,
/// requests in flight get up to their timeout, and the report says `interrupted`.
pub async fn run<P, S>(config: RunConfig, mut progress: P, stop: S) -> Result<RunReport, Error>
where
    P: FnMut(&SecondReport),
    S: Future<Output = ()>,
{
    config.check()?;
    let n = config.targets.len();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            recorder: Recorder::new(),
            per_target: if n > 1 {
                vec![Window::new(); n]
            } else {
                Vec::new()
            },
            last_done: None,
        }),
        stopping: AtomicBool::new(false),
        sent: AtomicU64::new(0),
    });
    let mut queues = Vec::with_capacity(n);
    let mut workers = JoinSet::new();
    for (index, target) in config.targets.iter().enumerate() {
        let conns = open_connections(target, config.connections).await?;
        let template = Arc::new(RequestTemplate {
            addr: conns.0,
            authority: target.authority().to_owned(),
            path: target.path_and_query().to_owned(),
            mix: Arc::clone(&config.mix),
            timeout: config.timeout,
            index: (n > 1).then_some(index),
        });
        let (tx, rx) = mpsc::channel::<Job>(config.queue);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for conn in conns.1 {
            workers.spawn(worker(
                conn,
                Arc::clone(&rx),
                Arc::clone(&template),
                Arc::clone(&shared),
            ));
        }
        queues.push(tx);
    }

    let start = Instant::now() + LEAD;
    let warmup = config.plan.warmup();
    let measure_start = start + warmup;
    let mut scheduler = tokio::spawn(schedule(
        config.plan.clone(),
        start,
        queues,
        Arc::clone(&shared),
    ));

    let mut tick = Ticker {
        next: measure_start + Duration::from_secs(1),
        t: 0,
        plan: &config.plan,
        warmup,
    };
    let mut stop = pin!(stop);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut scheduler => break,
            () = &mut stop => {
                interrupted = true;
                shared.stopping.store(true, Ordering::Relaxed);
                scheduler.abort();
                break;
            }
            () = tokio::time::sleep_until(tick.next) => tick.fire(&shared, &mut progress),
        }
    }
    let schedule_end = Instant::now();

    // The scheduler is gone, so the queue's sender is too: the connections finish what is
    // queued (or discard it when interrupted) and then end.
    let drain_deadline = schedule_end + config.timeout + DRAIN_EXTRA;
    loop {
        tokio::select! {
            joined = workers.join_next() => if joined.is_none() { break },
            () = &mut stop, if !interrupted => {
                interrupted = true;
                shared.stopping.store(true, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(tick.next) => tick.fire(&shared, &mut progress),
            () = tokio::time::sleep_until(drain_deadline) => {
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                break;
            }
        }
    }
    let stopped = Instant::now();

    let mut state = shared.lock();
    let sent = shared.sent.swap(0, Ordering::Relaxed);
    state.recorder.current.sent(sent);
    let State {
        mut recorder,
        per_target,
        last_done,
    } = std::mem::replace(
        &mut *state,
        State {
            recorder: Recorder::new(),
            per_target: Vec::new(),
            last_done: None,
        },
    );
    drop(state);
    // The last, partial second gets a row when the schedule still ran in it, the run was
    // interrupted in it, or it lasted half a second or more; a drain tail of a few
    // milliseconds would only draw a misleading drop to zero, so its answers count in the
    // total alone.
    let leftover = &recorder.current.counts;
    let span = stopped.saturating_duration_since(tick.next - Duration::from_secs(1));
    let busy = leftover.scheduled + leftover.finished() > 0;
    if leftover.scheduled > 0 || (busy && (interrupted || span >= Duration::from_millis(500))) {
        let row = recorder.rotate(tick.t, tick.rate());
        progress(&row);
    }
    let (total, timeline) = recorder.finish();

    // The measured window runs to the plan's end (its last request is intended a gap before
    // it), or to the interrupt, or to the last answer, whichever is latest.
    let planned_end = start + config.plan.total_duration();
    let cut = if interrupted {
        schedule_end
    } else {
        schedule_end.max(planned_end)
    };
    let window_end = last_done.map_or(cut, |d| d.max(cut)).min(stopped.max(cut));
    let elapsed = window_end.saturating_duration_since(measure_start);
    Ok(build_report(
        &config,
        total,
        &per_target,
        timeline,
        elapsed,
        interrupted,
    ))
}

/// Opens `count` connections to `target` before the clock starts, so the first second does
/// not measure TCP handshakes. A target that accepts none is down: say so instead of
/// measuring errors.
async fn open_connections(
    target: &Target,
    count: usize,
) -> Result<(SocketAddr, Vec<Option<Conn>>), Error> {
    let addr = pick_address(target).await?;
    let opened = futures::future::join_all(
        (0..count).map(|_| tokio::time::timeout(CONNECT_BOUND, connect(addr))),
    )
    .await;
    let mut first_error = None;
    let mut conns = Vec::with_capacity(opened.len());
    for result in opened {
        match result {
            Ok(Ok(conn)) => conns.push(Some(conn)),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                conns.push(None);
            }
            Err(_) => {
                first_error.get_or_insert(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ));
                conns.push(None);
            }
        }
    }
    if conns.iter().all(Option::is_none) {
        return Err(Error::Connect {
            url: target.url().to_owned(),
            source: first_error.unwrap_or_else(|| std::io::Error::other("no connection")),
        });
    }
    Ok((addr, conns))
}

/// The first of the target's addresses that accepts a connection (`localhost` may resolve to
/// `::1` first while the server listens on 127.0.0.1 only).
async fn pick_address(target: &Target) -> Result<SocketAddr, Error> {
    let mut last = None;
    for addr in target.resolve().await? {
        match tokio::time::timeout(CONNECT_BOUND, TcpStream::connect(addr)).await {
            Ok(Ok(_probe)) => return Ok(addr),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            }
        }
    }
    Err(Error::Connect {
        url: target.url().to_owned(),
        source: last.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

/// Rotates the recorder once per second of the measured window.
struct Ticker<'a> {
    next: Instant,
    t: u32,
    plan: &'a Plan,
    warmup: Duration,
}

impl Ticker<'_> {
    fn rate(&self) -> f64 {
        let mid = self.warmup + Duration::from_secs(u64::from(self.t)) + Duration::from_millis(500);
        self.plan.rate_at(mid)
    }

    fn fire<P: FnMut(&SecondReport)>(&mut self, shared: &Shared, progress: &mut P) {
        let rate = self.rate();
        let row = {
            let mut state = shared.lock();
            let sent = shared.sent.swap(0, Ordering::Relaxed);
            state.recorder.current.sent(sent);
            state.recorder.rotate(self.t, rate)
        };
        progress(&row);
        self.t = self.t.saturating_add(1);
        self.next += Duration::from_secs(1);
    }
}

fn build_report(
    config: &RunConfig,
    total: Window,
    per_target: &[Window],
    timeline: Vec<SecondReport>,
    elapsed: Duration,
    interrupted: bool,
) -> RunReport {
    let unfinished = |w: &Window| {
        let mut counts = w.counts.clone();
        counts.unfinished = counts
            .scheduled
            .saturating_sub(counts.dropped)
            .saturating_sub(counts.finished());
        counts
    };
    let counts = unfinished(&total);
    let secs = elapsed.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let targets = config
        .targets
        .iter()
        .zip(per_target)
        .map(|(target, w)| {
            let counts = unfinished(w);
            TargetReport {
                url: target.url().to_owned(),
                achieved_rate: per_sec(counts.answered),
                latency: w.latency(),
                split: w.split(),
                counts,
            }
        })
        .collect();
    RunReport {
        label: config.label.clone(),
        mode: config.mode.clone(),
        url: config
            .targets
            .iter()
            .map(Target::url)
            .collect::<Vec<_>>()
            .join(" "),
        targets,
        target_rate: config.plan.peak_rate(),
        plan: config
            .plan
            .phases()
            .iter()
            .map(|p| PhaseSummary {
                rate: p.rate,
                duration_s: p.duration.as_secs_f64(),
                measured: p.measured,
            })
            .collect(),
        warmup_s: config.plan.warmup().as_secs_f64(),
        planned_s: config.plan.measured_duration().as_secs_f64(),
        elapsed_s: secs,
        connections: config.connections,
        interrupted,
        sent_rate: per_sec(counts.sent),
        achieved_rate: per_sec(counts.answered),
        latency: total.latency(),
        split: total.split(),
        percentiles: total.curve(),
        counts,
        timeline,
        mix: config
            .mix
            .entries()
            .map(|(name, weight)| MixEntry {
                name: name.to_owned(),
                weight,
            })
            .collect(),
    }
}

/// Emits every job at its intended time. Never waits for the connections: a full queue is a
/// dropped request, counted.
async fn schedule(plan: Plan, start: Instant, queues: Vec<mpsc::Sender<Job>>, shared: Arc<Shared>) {
    for (seq, slot) in (0u64..).zip(plan.schedule()) {
        // Targets take the schedule in turn: each sees the same rate over a second.
        let target = (seq % queues.len() as u64) as usize;
        let Some(tx) = queues.get(target) else { return };
        let intended = start + slot.offset;
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let job = Job {
            intended,
            seq,
            measured: slot.measured,
        };
        let dropped = match tx.try_send(job) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        };
        if slot.measured {
            let mut state = shared.lock();
            state.recorder.current.scheduled();
            if dropped {
                state.recorder.current.dropped();
            }
            if let Some(w) = state.per_target.get_mut(target) {
                w.scheduled();
                if dropped {
                    w.dropped();
                }
            }
        }
    }
}

/// One keep-alive connection and the task driving it; dropping it ends the task.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
    let stream = TcpStream::connect(addr).await?;
    // A bid request is one small write that must not wait for Nagle.
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(async move {
        // Its errors surface on the sender's side as failed requests.
        let _ = connection.await;
    })
    .abort_handle();
    Ok(Conn { sender, driver })
}

async fn worker(
    mut conn: Option<Conn>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    template: Arc<RequestTemplate>,
    shared: Arc<Shared>,
) {
    loop {
        let job = rx.lock().await.recv().await;
        let Some(job) = job else { break };
        if shared.stopping.load(Ordering::Relaxed) {
            // Interrupted: what is still queued is reported as unfinished, not sent.
            continue;
        }
        if job.measured {
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        let taken = Instant::now();
        let outcome = send(&mut conn, &template, template.mix.body(job.seq)).await;
        if job.measured {
            let now = Instant::now();
            let latency = now.saturating_duration_since(job.intended);
            let wait = taken.saturating_duration_since(job.intended);
            let mut state = shared.lock();
            state.recorder.current.record_split(wait, latency, outcome);
            if let Some(w) = template.index.and_then(|i| state.per_target.get_mut(i)) {
                w.sent(1);
                w.record_split(wait, latency, outcome);
            }
            state.last_done = Some(now);
        }
    }
}

/// Sends one request on the worker's connection, opening a new one if it has none or the old
/// one closed. A connection that failed or timed out is dropped: its state is unknown.
async fn send(conn: &mut Option<Conn>, t: &RequestTemplate, body: Bytes) -> Outcome {
    let attempt = async {
        let open = match conn.take() {
            Some(c) if !c.sender.is_closed() => c,
            _ => connect(t.addr).await.map_err(|_| ())?,
        };
        let c = conn.insert(open);
        c.sender.ready().await.map_err(|_| ())?;
        let request = Request::post(t.path.as_str())
            .header(header::HOST, t.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-openrtb-version", "2.6")
            .body(Full::new(body))
            .map_err(|_| ())?;
        let response = c.sender.send_request(request).await.map_err(|_| ())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|_| ())?
            .to_bytes();
        Ok::<_, ()>((status, body))
    };
    match tokio::time::timeout(t.timeout, attempt).await {
        Ok(Ok((status, body))) => Outcome::Answered {
            status,
            bids: if status == 200 { count_bids(&body) } else { 0 },
        },
        Ok(Err(())) => {
            *conn = None;
            Outcome::Error
        }
        Err(_) => {
            *conn = None;
            Outcome::Timeout
        }
    }
}

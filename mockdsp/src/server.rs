//! The mock's HTTP/1.1 server: accept loop, connections, routing, and the response bodies.
//!
//! Every task is owned: connections live in the accept loop's `JoinSet`, requests run inside
//! their connection's future. Stopping flips one watch channel; the accept loop then waits for
//! its connections (bounded, then aborts them), so nothing outlives `shutdown`.

use std::convert::Infallible;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Interval, MissedTickBehavior};

use crate::answer::{answer, Answer};
use crate::record::{Counters, Notice, NoticeKind, Recorder, Ring};
use crate::settings::Settings;

/// Connections beyond this are closed on accept: the bound every pool needs.
const MAX_CONNECTIONS: usize = 16_384;

/// How long `shutdown` lets open connections finish before aborting them.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// State shared by the accept loop, every connection and the handle.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) recorder: Recorder,
    bid_seq: AtomicU64,
    /// Read by trickling bodies, which cannot await the watch channel from `poll_frame`.
    pub(crate) stopping: AtomicBool,
    stopped: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(settings: Settings, record: usize, stopped: watch::Receiver<bool>) -> Self {
        Self {
            settings,
            recorder: Recorder {
                counters: Counters::default(),
                received: Ring::new(record),
                notices: Ring::new(record),
            },
            bid_seq: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stopped,
        }
    }

    /// Resolves once the mock is told to stop (or its handle is gone).
    async fn stop_requested(&self) {
        let mut rx = self.stopped.clone();
        // Err means the sender, held by the handle, was dropped: that is a stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.stop_requested() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        continue;
                    }
                    // Small answers must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        None => conns.spawn(serve_connection(stream, Arc::clone(&shared))),
                        Some(tls) => conns.spawn(serve_tls_connection(tls.accept(stream), Arc::clone(&shared))),
                    };
                }
                Err(e) => {
                    tracing::warn!(dsp = %shared.settings.name, error = %e, "mock DSP accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        () = shared.stop_requested() => break,
                    }
                }
            },
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_BOUND, drain).await.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Keeps `open_connections` true even when the task is aborted.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: Arc<Shared>) -> Self {
        shared
            .recorder
            .counters
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        Counters::bump(&shared.recorder.counters.connections, 1);
        Self(shared)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .recorder
            .counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _open = OpenConnection::new(Arc::clone(&shared));
    let svc_shared = Arc::clone(&shared);
    let service = service_fn(move |req| route(Arc::clone(&svc_shared), req));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        // Connection errors (client gone, malformed HTTP) are the client's business.
        _ = conn.as_mut() => return,
        () = shared.stop_requested() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A TLS connection: the handshake, then HTTP/2 or HTTP/1.1 as ALPN settled.
async fn serve_tls_connection(handshake: tokio_rustls::Accept<TcpStream>, shared: Arc<Shared>) {
    let stream = tokio::select! {
        accepted = handshake => match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // An untrusting client hangs up here; that is its business.
                tracing::debug!(dsp = %shared.settings.name, error = %e, "mock DSP tls handshake failed");
                return;
            }
        },
        () = shared.stop_requested() => return,
    };
    let _open = OpenConnection::new(Arc::clone(&shared));
    let svc_shared = Arc::clone(&shared);
    let service = service_fn(move |req| route(Arc::clone(&svc_shared), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        _ = conn.as_mut() => return,
        () = shared.stop_requested() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let kind = match req.uri().path() {
        "/bid" => None,
        "/nurl" => Some(NoticeKind::Nurl),
        "/burl" => Some(NoticeKind::Burl),
        "/lurl" => Some(NoticeKind::Lurl),
        _ => return Ok(plain(StatusCode::NOT_FOUND, "mock dsp: no such endpoint")),
    };
    if let Some(kind) = kind {
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| kind.path().to_owned(), |pq| pq.as_str().to_owned());
        shared.recorder.counters.notice(kind);
        shared.recorder.notices.push(Notice { kind, uri });
        return Ok(plain(StatusCode::OK, ""));
    }
    if req.method() != Method::POST {
        Counters::bump(&shared.recorder.counters.other_methods, 1);
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "mock dsp: POST a bid request",
        ));
    }
    Counters::bump(&shared.recorder.counters.requests, 1);
    if req.version() == http::Version::HTTP_2 {
        Counters::bump(&shared.recorder.counters.http2_requests, 1);
    }
    tokio::select! {
        biased;
        resp = bid(&shared, req) => Ok(resp),
        () = shared.stop_requested() => {
            let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, "mock dsp: shutting down");
            resp.headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            Ok(resp)
        }
    }
}

async fn bid(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let settings = &shared.settings;
    let counters = &shared.recorder.counters;
    let body = match Limited::new(req.into_body(), settings.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            Counters::bump(&counters.bad_requests, 1);
            let (status, reason) = if e.is::<LengthLimitError>() {
                (StatusCode::PAYLOAD_TOO_LARGE, "body too large")
            } else {
                (StatusCode::BAD_REQUEST, "could not read the body")
            };
            return respond(shared, Answer::bad_request(status, reason));
        }
    };
    shared.recorder.received.push(body.clone());
    let (delay, answer) = {
        let mut rng = rand::rng();
        let delay = settings.latency.sample(&mut rng);
        let answer = answer(settings, counters, &shared.bid_seq, &body, &mut rng);
        (delay, answer)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Answer::Hang = answer {
        // `route` answers 503 once the mock stops.
        std::future::pending::<()>().await;
    }
    respond(shared, answer)
}

fn respond(shared: &Arc<Shared>, answer: Answer) -> Response<MockBody> {
    match answer {
        Answer::Full {
            status,
            content_type,
            body,
        } => {
            let mut resp = Response::new(MockBody::full(body));
            *resp.status_mut() = status;
            if let Some(ct) = content_type {
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
            }
            resp
        }
        Answer::Trickle(body) => {
            let every = shared.settings.trickle_every;
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut resp = Response::new(MockBody::Trickle {
                rest: body,
                interval,
                shared: Arc::clone(shared),
            });
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        // Unreachable in practice: `bid` never returns after a Hang. Answering 503 keeps the
        // function total.
        Answer::Hang => plain(StatusCode::SERVICE_UNAVAILABLE, "mock dsp: shutting down"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
    }
    resp
}

/// A response body: all at once, or one byte per tick until done or the mock stops.
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Trickle {
        rest: Bytes,
        interval: Interval,
        shared: Arc<Shared>,
    },
}

impl MockBody {
    fn full(b: Bytes) -> Self {
        Self::Full((!b.is_empty()).then_some(b))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Trickle {
                rest,
                interval,
                shared,
            } => {
                if rest.is_empty() {
                    return Poll::Ready(None);
                }
                ready!(interval.poll_tick(cx));
                // Ending short of Content-Length makes hyper close the connection, which is
                // how a stopping mock gets rid of a trickle within one tick.
                if shared.stopping.load(Ordering::Acquire) {
                    rest.clear();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(Frame::data(rest.split_to(1)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Trickle { rest, .. } => rest.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Trickle { rest, .. } => SizeHint::with_exact(rest.len() as u64),
        }
    }
}

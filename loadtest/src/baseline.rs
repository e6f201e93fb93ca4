//! The bare fan-out baseline: a hyper proxy that forwards each request body to every DSP and
//! answers with the first bid, with no parsing, validation or auction.
//!
//! It is the physical limit the exchange is measured against on the same machine: the
//! exchange's own accept loop (`exchange::listen::serve`) and DSP client
//! (`exchange::fanout::http_client`), the same fan-out and per-auction deadline, so the
//! difference between the two is what the exchange's own work costs. "First bid" is the first `200` answer with a non-empty body; when every DSP answered
//! without one, or the deadline passed, the answer is `204`. Calls still running when the
//! answer goes out finish in the background within a bounded grace period, as in the exchange,
//! so a slow DSP does not cost a fresh connection per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use exchange::fanout::{http_client, HttpClient};
use exchange::listen;
use futures::stream::{FuturesUnordered, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::target::Target;
use crate::Error;

/// The path the baseline answers auctions on, the exchange's.
pub const AUCTION_PATH: &str = "/openrtb2/auction";

/// The most DSPs one baseline fans out to.
pub const MAX_DSPS: usize = 256;

/// How the baseline runs. [`BaselineConfig::new`] fills in the exchange's defaults.
#[derive(Clone, Debug)]
pub struct BaselineConfig {
    /// The DSP bid endpoints.
    pub dsps: Vec<Uri>,
    /// The per-auction deadline, from the request head (the exchange's `auction.dsp_timeout_ms`).
    pub timeout: Duration,
    /// Auctions at once; one more is answered 204 at once. Default 20 000.
    pub max_in_flight: usize,
    /// Client connections at once. Default 20 000.
    pub max_connections: usize,
    /// Largest request body; above it, 413. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Largest DSP answer read. Default 1 MiB.
    pub max_response_bytes: usize,
    /// How long a call still running after the answer may finish in the background. Default 1 s.
    pub late_grace: Duration,
    /// Auctions whose leftover calls may run in the background at once; past it they are
    /// abandoned. Default 10 000.
    pub max_late_in_flight: usize,
    /// How long a client may take to send a request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open requests. Default 2 s.
    pub shutdown_grace: Duration,
}

impl BaselineConfig {
    /// The DSP URLs (loopback only unless `allow_remote`) and the deadline; the other fields
    /// take the exchange's defaults.
    pub fn new<I, S>(dsp_urls: I, timeout: Duration, allow_remote: bool) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut dsps = Vec::new();
        for url in dsp_urls {
            dsps.push(Target::parse(url.as_ref(), allow_remote)?.uri().clone());
        }
        let config = Self {
            dsps,
            timeout,
            max_in_flight: 20_000,
            max_connections: 20_000,
            max_body_bytes: 256 * 1024,
            max_response_bytes: 1024 * 1024,
            late_grace: Duration::from_secs(1),
            max_late_in_flight: 10_000,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |s: String| Err(Error::InvalidBaseline(s));
        if self.dsps.is_empty() || self.dsps.len() > MAX_DSPS {
            return bad(format!(
                "needs 1 to {MAX_DSPS} DSPs, got {}",
                self.dsps.len()
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad(format!(
                "timeout must be above 0 and at most 60s, got {:?}",
                self.timeout
            ));
        }
        let bounds = [
            ("max_in_flight", self.max_in_flight),
            ("max_connections", self.max_connections),
            ("max_body_bytes", self.max_body_bytes),
            ("max_response_bytes", self.max_response_bytes),
            ("max_late_in_flight", self.max_late_in_flight),
        ];
        for (name, v) in bounds {
            if v == 0 || v > Semaphore::MAX_PERMITS {
                return bad(format!("{name} must be above 0, got {v}"));
            }
        }
        Ok(())
    }
}

/// What the baseline has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BaselineStats {
    /// Auction requests received.
    pub requests: u64,
    /// Answered 200 with a DSP's bid.
    pub bids: u64,
    /// Answered 204.
    pub no_bids: u64,
    /// Answered 204 at once because `max_in_flight` auctions were running.
    pub overloaded: u64,
    /// Answered 400/413: the body could not be read.
    pub bad_requests: u64,
    /// DSP calls made.
    pub dsp_calls: u64,
    /// DSP calls still running when an auction's deadline passed.
    pub dsp_timeouts: u64,
    /// DSP calls that failed (transport, oversized answer) before the answer went out.
    pub dsp_errors: u64,
    /// Auctions whose leftover calls were abandoned at once (background bound reached).
    pub late_abandoned: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bids: AtomicU64,
    no_bids: AtomicU64,
    overloaded: AtomicU64,
    bad_requests: AtomicU64,
    dsp_calls: AtomicU64,
    dsp_timeouts: AtomicU64,
    dsp_errors: AtomicU64,
    late_abandoned: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct App {
    config: BaselineConfig,
    client: HttpClient,
    in_flight: Arc<Semaphore>,
    late_slots: Arc<Semaphore>,
    counters: Counters,
}

/// A running baseline. Dropping it stops it too (without waiting); [`Self::shutdown`] stops
/// it and waits for open connections (bounded by `shutdown_grace`).
pub struct Baseline {
    addr: SocketAddr,
    url: String,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl Baseline {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves.
    pub async fn bind(addr: &str, config: BaselineConfig) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_owned(),
                source,
            })?;
        Self::start(listener, config)
    }

    /// Serves on a listener the caller bound.
    pub fn start(listener: TcpListener, config: BaselineConfig) -> Result<Self, Error> {
        config.check()?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: "listener".to_owned(),
            source,
        })?;
        let app = Arc::new(App {
            client: http_client().map_err(|e| Error::InvalidBaseline(e.to_string()))?,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            late_slots: Arc::new(Semaphore::new(config.max_late_in_flight)),
            counters: Counters::default(),
            config,
        });
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::clone(&app), stopped));
        let shown = match addr.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                addr.port(),
            ),
            _ => addr,
        };
        Ok(Self {
            addr,
            url: format!("http://{shown}{AUCTION_PATH}"),
            app,
            stop,
            server: Some(server),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The auction URL, `http://127.0.0.1:PORT/openrtb2/auction`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The counters right now.
    pub fn stats(&self) -> BaselineStats {
        let c = &self.app.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BaselineStats {
            requests: get(&c.requests),
            bids: get(&c.bids),
            no_bids: get(&c.no_bids),
            overloaded: get(&c.overloaded),
            bad_requests: get(&c.bad_requests),
            dsp_calls: get(&c.dsp_calls),
            dsp_timeouts: get(&c.dsp_timeouts),
            dsp_errors: get(&c.dsp_errors),
            late_abandoned: get(&c.late_abandoned),
        }
    }

    /// Stops accepting, lets open requests finish (bounded) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            // The server task does not panic; a JoinError only means the runtime is going away.
            let _ = server.await;
        }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("url", &self.url)
            .field("dsps", &self.app.config.dsps)
            .field("timeout", &self.app.config.timeout)
            .finish()
    }
}

async fn serve(listener: TcpListener, app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let limits = listen::Limits {
        max_connections: app.config.max_connections,
        header_read_timeout: app.config.header_read_timeout,
    };
    let serving = Arc::clone(&app);
    let graceful = listen::serve(
        listener,
        limits,
        None,
        stop_requested(&mut stopped),
        move || {
            let app = Arc::clone(&serving);
            service_fn(move |req| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            })
        },
    )
    .await;
    let _ = tokio::time::timeout(app.config.shutdown_grace, graceful.shutdown()).await;
}

/// Resolves once the baseline is told to stop (or its handle is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // Err means the sender, held by the handle, was dropped: that is a stop as well. The
    // borrow guard is dropped here, never held across an await of the caller.
    let _ = stopped.wait_for(|s| *s).await;
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let start = Instant::now();
    match (req.method(), req.uri().path()) {
        (&Method::POST, AUCTION_PATH) => auction(app, start, req).await,
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (_, AUCTION_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "no such endpoint\n"),
    }
}

async fn auction(app: &App, start: Instant, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let c = &app.counters;
    bump(&c.requests, 1);
    let deadline = start + app.config.timeout;
    let Ok(_in_flight) = Arc::clone(&app.in_flight).try_acquire_owned() else {
        bump(&c.overloaded, 1);
        return no_bid();
    };
    let read = Limited::new(req.into_body(), app.config.max_body_bytes).collect();
    let body = match tokio::time::timeout(app.config.header_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            bump(&c.bad_requests, 1);
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        _ => {
            bump(&c.bad_requests, 1);
            return text(StatusCode::BAD_REQUEST, "could not read the body\n");
        }
    };

    let mut calls: FuturesUnordered<_> = app
        .config
        .dsps
        .iter()
        .map(|uri| {
            call(
                app.client.clone(),
                uri.clone(),
                body.clone(),
                app.config.max_response_bytes,
            )
        })
        .collect();
    bump(&c.dsp_calls, app.config.dsps.len() as u64);
    let mut winner = None;
    loop {
        match tokio::time::timeout_at(deadline, calls.next()).await {
            Ok(Some(Ok((200, answer)))) if !answer.is_empty() => {
                winner = Some(answer);
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(()))) => bump(&c.dsp_errors, 1),
            Ok(None) => break,
            Err(_) => {
                bump(&c.dsp_timeouts, calls.len() as u64);
                break;
            }
        }
    }
    if !calls.is_empty() {
        finish_late(app, calls);
    }
    match winner {
        Some(answer) => {
            bump(&c.bids, 1);
            let mut resp = Response::new(Full::new(answer));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp.headers_mut()
                .insert("x-openrtb-version", HeaderValue::from_static("2.6"));
            resp
        }
        None => {
            bump(&c.no_bids, 1);
            no_bid()
        }
    }
}

/// Lets the calls still running finish in the background, bounded in number and time: hyper
/// closes a keep-alive connection whose request is dropped, which would empty the pool exactly
/// when a DSP is slow.
fn finish_late<F>(app: &App, mut calls: FuturesUnordered<F>)
where
    F: std::future::Future<Output = Result<(u16, Bytes), ()>> + Send + 'static,
{
    let Ok(slot) = Arc::clone(&app.late_slots).try_acquire_owned() else {
        bump(&app.counters.late_abandoned, 1);
        return;
    };
    let grace = app.config.late_grace;
    tokio::spawn(async move {
        let drain = async { while calls.next().await.is_some() {} };
        let _ = tokio::time::timeout(grace, drain).await;
        drop(slot);
    });
}

async fn call(
    client: HttpClient,
    uri: Uri,
    body: Bytes,
    max_response_bytes: usize,
) -> Result<(u16, Bytes), ()> {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-openrtb-version", "2.6")
        .body(Full::new(body))
        .map_err(|_| ())?;
    let response = client.request(request).await.map_err(|_| ())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), max_response_bytes)
        .collect()
        .await
        .map_err(|_| ())?
        .to_bytes();
    Ok((status, body))
}

fn no_bid() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert("x-openrtb-version", HeaderValue::from_static("2.6"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_its_dsps_and_bounds() {
        let ms = Duration::from_millis;
        assert!(BaselineConfig::new(["http://127.0.0.1:9001/bid"], ms(30), false).is_ok());
        assert!(matches!(
            BaselineConfig::new(["http://10.0.0.1:9001/bid"], ms(30), false),
            Err(Error::RemoteTarget { .. })
        ));
        assert!(BaselineConfig::new(["http://10.0.0.1:9001/bid"], ms(30), true).is_ok());
        assert!(BaselineConfig::new(Vec::<String>::new(), ms(30), false).is_err());
        assert!(BaselineConfig::new(["http://127.0.0.1:1/bid"], ms(0), false).is_err());
        assert!(BaselineConfig::new(["https://127.0.0.1:1/bid"], ms(10), false).is_err());
        let mut c = BaselineConfig::new(["http://127.0.0.1:1/bid"], ms(10), false).unwrap();
        c.max_in_flight = 0;
        assert!(c.check().is_err());
    }
}

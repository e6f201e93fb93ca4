//! The HTTP server: routing, request bodies, and graceful shutdown (the accept loop is `listen`).

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::Config;
use crate::fanout::{Dsp, FanOut, HttpClients, LateHook};
use crate::metrics::{AuctionOutcome, Registry, ServerMetrics};
use crate::notices::guard::{GuardedDns, HostGuard};
use crate::notices::{Notice, NoticeKind, Notifier};
use crate::overload::Governor;
use crate::readiness::Readiness;
use crate::reload::{restart_only_changes, Live, Reloads};
use crate::tracking::{EventSink, TrackingMetrics};
use crate::Error;

pub(crate) type Body = Full<Bytes>;

/// Everything a request handler needs, shared by all connections.
pub(crate) struct App {
    /// The config the server started with: the restart-only keys (`crate::reload`) are
    /// read from here, everything a reload may change from `live`.
    pub config: Config,
    /// Loaded once per auction.
    pub live: ArcSwap<Live>,
    /// The DSPs `on_billed` finds a billed impression's DSP among, swapped with `live`.
    billed_dsps: Arc<ArcSwap<Vec<Arc<Dsp>>>>,
    clients: HttpClients,
    on_late: LateHook,
    reloads_ok: metrics::Counter,
    reloads_refused: metrics::Counter,
    pub notifier: Arc<Notifier>,
    pub metrics: ServerMetrics,
    pub budgets: Arc<budget::Budgets>,
    pub tracker: impressions::Tracker,
    pub events: EventSink,
    pub registry: Registry,
    /// `GET /readyz`.
    pub readiness: Readiness,
    tracking_metrics: TrackingMetrics,
    in_flight: Arc<AtomicUsize>,
    pub(crate) governor: Arc<Governor>,
    /// The origin of the per-connection timestamps.
    epoch: Instant,
    /// Refreshes the DSP host names (`crate::dns`) until shutdown.
    dns_refresh: tokio::task::JoinHandle<()>,
    /// Keep the DSP pools warm (`crate::warm`) until shutdown or the next reload.
    rewarm: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl App {
    /// Builds the shared state and starts the background services (budget sync, tracking
    /// replay, event log). Budgets come first: an exchange that cannot enforce them must not
    /// bid. A Redis that is down does not stop the start; it leaves every lease empty and
    /// sends impressions to the spool.
    async fn start(
        config: Config,
        screen: crate::screen::Screen,
        local: SocketAddr,
        registry: Registry,
    ) -> Result<(App, budget::SyncTask), Error> {
        let store = crate::budget_store::open(&config)?;
        let recorder = registry.recorder();
        let (budgets, budget_sync) =
            budget::Budgets::start(config.budget_config(), store, recorder.clone()).await?;

        let metrics = ServerMetrics::new(&registry);
        let dsps = build_dsps(&config, &registry)?;
        // DSP names are looked up before the pools are warmed, and kept fresh off the request
        // path from then on.
        let dns = crate::dns::DnsCache::new(
            &config.dns,
            &registry,
            dsps.iter().filter_map(|d| d.uri.host()),
        );
        dns.start().await;
        let dns_refresh = dns.spawn_refresh();
        let clients = HttpClients::with_dns(
            &config.tls,
            dns.clone(),
            Duration::from_millis(config.auction.pool_idle_timeout_ms),
        )?;
        // Before the first auction: the server accepts only once `start` has returned.
        crate::warm::warm(&clients, &dsps).await;
        let rewarm = crate::warm::spawn_rewarm(&clients, &dsps);
        let guard = Arc::new(HostGuard::new(
            dsps.iter().filter_map(|d| d.uri.host()),
            &config.notices.allow_hosts,
        ));
        let notice_client = crate::fanout::http_client_with(
            &crate::tls::client_config(&config.tls)?,
            crate::config::HttpVersion::Auto,
            GuardedDns {
                dns: dns.clone(),
                guard: guard.clone(),
            },
            Duration::from_millis(config.auction.pool_idle_timeout_ms),
        );
        let notifier = Arc::new(Notifier::new(
            notice_client,
            config.notices.max_in_flight,
            Duration::from_millis(config.notices.timeout_ms),
            metrics.notices_dropped.clone(),
            guard,
        ));

        let (tracker_config, random_key) = config.tracker_config(local)?;
        if random_key {
            tracing::warn!(
                "no tracking.secret (or EXCHANGE_TRACKING_SECRET): tracking URLs are signed \
                 with a random key that dies with this process; a fleet or a restart needs one"
            );
        }
        let billed_dsps = Arc::new(ArcSwap::from_pointee(dsps.clone()));
        let tracker = impressions::Tracker::start(
            tracker_config,
            Some(on_billed(
                notifier.clone(),
                billed_dsps.clone(),
                budgets.clone(),
            )),
            recorder,
        )
        .await?;
        let events = EventSink::new(
            tracker.clone(),
            config.events.max_pending,
            registry.counter("exchange_events_dropped_total", &[]),
        );
        let on_late = events_for_late(&tracker, &registry);
        let governor = Arc::new(Governor::new(
            &config.overload,
            config.server.max_in_flight_auctions,
            &registry,
        ));
        let fanout = FanOut::new(
            clients.clone(),
            &config,
            metrics.late_abandoned.clone(),
            on_late.clone(),
            governor.stress(),
        );
        let pricing = crate::pricing::Pricing::start(&config, &registry)?;
        let live = ArcSwap::from_pointee(Live {
            pricing,
            trusted: trusted_proxies(&config),
            config: config.clone(),
            dsps,
            fanout,
            rules: rules(&config),
            screen,
            publishers: crate::publishers::Publishers::from_config(&config),
        });
        let readiness = Readiness::new(
            config.redis_target().as_ref(),
            Duration::from_millis(config.tracking.redis_timeout_ms),
        )?;
        let reloads =
            |result| registry.counter("exchange_config_reloads_total", &[("result", result)]);
        let app = App {
            config,
            live,
            billed_dsps,
            clients,
            on_late,
            reloads_ok: reloads("ok"),
            reloads_refused: reloads("refused"),
            notifier,
            metrics,
            budgets,
            tracker,
            events,
            tracking_metrics: TrackingMetrics::new(&registry),
            registry,
            readiness,
            in_flight: Arc::new(AtomicUsize::new(0)),
            governor,
            epoch: Instant::now(),
            dns_refresh,
            rewarm: Mutex::new(rewarm),
        };
        Ok((app, budget_sync))
    }

    /// Admits one more auction unless as many as the overload bound allows are running (at
    /// most `server.max_in_flight_auctions`).
    fn admit(&self) -> Option<InFlight<'_>> {
        let limit = self.governor.limit();
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self);
        self.metrics.in_flight.increment(1.0);
        (now < limit).then_some(guard)
    }

    /// Swaps `new` in whole once it is valid and changes no restart-only key; otherwise logs
    /// every reason at error and keeps the config in force. Auctions running keep theirs.
    async fn reload(&self, new: Result<Config, Error>) -> Result<(), Error> {
        let result = self.try_reload(new).await;
        match &result {
            Ok(()) => {
                self.reloads_ok.increment(1);
                tracing::info!(dsps = self.live.load().dsps.len(), "config reloaded");
            }
            Err(e) => {
                self.reloads_refused.increment(1);
                match e {
                    Error::Config(problems) => {
                        for problem in problems {
                            tracing::error!(problem, "config reload refused; the old config stays");
                        }
                    }
                    e => tracing::error!(error = %e, "config reload refused; the old config stays"),
                }
            }
        }
        result
    }

    async fn try_reload(&self, new: Result<Config, Error>) -> Result<(), Error> {
        let new = new?;
        let screen = new.validate_with_screen()?;
        let changed = restart_only_changes(&self.config, &new);
        if !changed.is_empty() {
            return Err(Error::Config(vec![format!(
                "these keys take a restart to change: {}",
                changed.join(", ")
            )]));
        }
        let pricing = crate::pricing::Pricing::start(&new, &self.registry)?;
        let mut dsps = build_dsps(&new, &self.registry)?;
        let old = self.live.load();
        for dsp in &mut dsps {
            if let Some(before) = old.dsps.iter().find(|o| o.name == dsp.name) {
                // Not yet shared: the new set is this function's alone until it is stored.
                if let Some(dsp) = Arc::get_mut(dsp) {
                    dsp.keep_state_of(before);
                }
            }
        }
        crate::warm::warm(&self.clients, &dsps).await;
        let rewarm = crate::warm::spawn_rewarm(&self.clients, &dsps);
        let fanout = FanOut::new(
            self.clients.clone(),
            &new,
            self.metrics.late_abandoned.clone(),
            self.on_late.clone(),
            self.governor.stress(),
        );
        self.billed_dsps.store(Arc::new(dsps.clone()));
        self.notifier
            .guard()
            .set_dsp_hosts(dsps.iter().filter_map(|d| d.uri.host()));
        self.live.store(Arc::new(Live {
            pricing,
            rules: rules(&new),
            trusted: trusted_proxies(&new),
            screen,
            publishers: crate::publishers::Publishers::from_config(&new),
            config: new,
            dsps,
            fanout,
        }));
        let old = std::mem::replace(&mut *lock(&self.rewarm), rewarm);
        for task in old {
            task.abort();
        }
        Ok(())
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the task list stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The enabled DSPs of `config`, numbered in order.
fn build_dsps(config: &Config, registry: &Registry) -> Result<Vec<Arc<Dsp>>, Error> {
    config
        .dsps
        .iter()
        .filter(|d| d.enabled)
        .enumerate()
        .map(|(i, d)| Dsp::from_config(i as u32, d, config, registry).map(Arc::new))
        .collect()
}

fn rules(config: &Config) -> auction::Rules {
    auction::Rules {
        // Validated as a CPM between 0 and 1000.
        increment: money::CpmMicros::from_cpm(config.auction.price_increment)
            .unwrap_or(money::CpmMicros::ZERO),
    }
}

/// Validated with the rest of the config, so an error here cannot happen.
fn trusted_proxies(config: &Config) -> crate::client_ip::TrustedProxies {
    crate::client_ip::TrustedProxies::parse(&config.server.trusted_proxies).unwrap_or_default()
}

/// Runs exactly once per billed impression, on arrival or on spool replay: counts the billing
/// for the budget reconciliation and fires the DSP's own `burl`. It must not block, so it
/// only bumps counters and hands the URL to the bounded notifier.
fn on_billed(
    notifier: Arc<Notifier>,
    dsps: Arc<ArcSwap<Vec<Arc<Dsp>>>>,
    budgets: Arc<budget::Budgets>,
) -> impressions::BilledHook {
    Arc::new(move |billed: &impressions::Billed| {
        let event = &billed.event;
        if let (Some(cost), false) = (event.cost_micros, event.campaign.is_empty()) {
            budgets.record_billed(&event.dsp, &event.campaign, event.auction_ts, cost);
        }
        let Some(url) = &billed.burl else {
            return;
        };
        // A scan of a handful of DSPs, once per billed impression.
        let Some(dsp) = dsps.load().iter().find(|d| *d.name == *event.dsp).cloned() else {
            return;
        };
        notifier.fire(vec![Notice {
            dsp: dsp.clone(),
            kind: NoticeKind::Billing,
            url: url.clone(),
        }]);
    })
}

/// Late DSP answers become events too, for analysis of who is slow and by how much.
fn events_for_late(tracker: &impressions::Tracker, registry: &Registry) -> crate::fanout::LateHook {
    let sink = EventSink::new(
        tracker.clone(),
        4096,
        registry.counter("exchange_events_dropped_total", &[]),
    );
    Arc::new(move |dsp: &str, auction_id: &str, late_ms: u64| {
        let bid = impressions::BidRef {
            auction_id: auction_id.to_owned(),
            dsp: dsp.to_owned(),
            ..Default::default()
        };
        let event = impressions::Event::late(&bid, late_ms, crate::tracking::now_ms());
        sink.emit([event]);
    })
}

/// Counts one admitted auction until dropped.
struct InFlight<'a>(&'a App);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.in_flight.decrement(1.0);
    }
}

/// Serves the exchange on `listener` until `shutdown` completes, then stops accepting, lets
/// open requests finish (bounded by `server.shutdown_grace_ms`) and waits for notices in
/// flight. The caller binds the listener, so tests can use `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run_with(listener, config, shutdown, Reloads::none()).await
}

/// As [`run`], also swapping in each config sent through the [`crate::reload::ReloadHandle`]
/// paired with `reloads` (the binary sends one per SIGHUP).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    mut reloads: Reloads,
) -> Result<(), Error> {
    let screen = config.validate_with_screen()?;
    let registry = Registry::new()?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let limits = crate::listen::Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
    };
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    // Bound before anything starts, so a taken address stops the start at once.
    let side = crate::side::bind(&config).await?;
    let (app, budget_sync) = App::start(config, screen, listener.local_addr()?, registry).await?;
    let app = Arc::new(app);
    let overload_probe = app.config.overload.enabled.then(|| {
        let in_flight = app.in_flight.clone();
        tokio::spawn(crate::overload::probe(
            app.governor.clone(),
            app.config.overload.clone(),
            move || in_flight.load(Ordering::Relaxed),
        ))
    });
    let upkeep = {
        let registry = app.registry.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
            loop {
                every.tick().await;
                registry.run_upkeep();
            }
        })
    };

    let reloader = {
        let app = app.clone();
        tokio::spawn(async move {
            while let Some(request) = reloads.next().await {
                match request {
                    crate::reload::Request::Config(config, done) => {
                        let _ = done.send(app.reload(*config).await);
                    }
                    crate::reload::Request::ReopenEventLog(done) => {
                        let _ =
                            done.send(app.tracker.reopen_event_log().await.map_err(Error::from));
                    }
                }
            }
        })
    };

    // Start-up is over. Warming the DSP pools, when it runs, ends before this.
    app.readiness.mark_started();
    let side = crate::side::serve(side, &app, limits);
    let serving = app.clone();
    let graceful = crate::listen::serve_with_peer(listener, limits, tls, shutdown, move |peer| {
        let app = serving.clone();
        let conn_state = Arc::new(Connection {
            last_answer_us: AtomicU64::new(0),
            peer: peer.ip(),
        });
        service_fn(move |req| {
            let app = app.clone();
            let conn_state = conn_state.clone();
            async move { Ok::<_, Infallible>(handle(&app, &conn_state, req).await) }
        })
    })
    .await;
    if let Some(probe) = overload_probe {
        probe.abort();
    }
    upkeep.abort();
    reloader.abort();
    app.dns_refresh.abort();
    for task in lock(&app.rewarm).drain(..) {
        task.abort();
    }
    side.shutdown(grace).await;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after {grace:?}, closing them");
    }
    // The event log is flushed and fsynced before the billing notices it caused are drained.
    if let Err(e) = app.tracker.shutdown().await {
        tracing::warn!(error = %e, "tracking shutdown was not clean");
    }
    app.notifier.drain(grace).await;
    // Unspent leases go back to the store so other nodes can spend them.
    match budget_sync.shutdown().await {
        Ok(report) => tracing::info!(?report, "budget leases handed back"),
        Err(e) => tracing::warn!(error = %e, "could not hand budget leases back; they stay held"),
    }
    Ok(())
}

/// What the server remembers of one client connection.
struct Connection {
    /// When its last auction answer left, µs after `App::epoch`; 0 before the first.
    last_answer_us: AtomicU64,
    /// The socket's peer: the client of a tracking hit unless a trusted proxy says otherwise.
    peer: std::net::IpAddr,
}

async fn handle(app: &App, conn: &Connection, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/openrtb2/auction") => {
            let since_epoch = |t: Instant| t.duration_since(app.epoch).as_micros() as u64;
            let last = conn.last_answer_us.load(Ordering::Relaxed);
            let gap_us = since_epoch(start).saturating_sub(last);
            app.governor
                .arrived(last != 0 && gap_us < app.config.overload.back_to_back_us);
            let response = auction(app, start, req).await;
            conn.last_answer_us
                .store(since_epoch(Instant::now()).max(1), Ordering::Relaxed);
            response
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => ready(app).await,
        // Public by design: buyers fetch it to learn who sells through the exchange.
        (&Method::GET, "/sellers.json") => app.live.load().publishers.sellers_json(),
        (&Method::GET, "/event/imp") => {
            let invalid = crate::tracking::invalid_hit(&app.live.load(), conn.peer, &req);
            crate::tracking::impression(&app.tracker, &app.tracking_metrics, &req, invalid).await
        }
        (&Method::GET, "/event/click") => {
            let invalid = crate::tracking::invalid_hit(&app.live.load(), conn.peer, &req);
            crate::tracking::click(&app.tracker, &app.tracking_metrics, &req, invalid).await
        }
        // With an address of their own, the admin API and `/metrics` are not here at all.
        (_, path) if path.starts_with("/admin/") && app.config.admin.listen.is_none() => {
            crate::admin::handle(app, req).await
        }
        (&Method::GET, "/metrics") if app.config.metrics.listen.is_none() => metrics(app),
        (_, "/openrtb2/auction") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST", ""),
        (_, "/metrics") if app.config.metrics.listen.is_some() => {
            error(StatusCode::NOT_FOUND, "no such endpoint", "")
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/sellers.json") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET", "")
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint", ""),
    }
}

/// The Prometheus text of this instance's metrics.
pub(crate) fn metrics(app: &App) -> Response<Body> {
    let mut r = text(StatusCode::OK, app.registry.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// 200 `{"ready":true}`, or 503 `{"ready":false,"not_ready":[...]}` naming what is not.
async fn ready(app: &App) -> Response<Body> {
    let not_ready = app.readiness.not_ready().await;
    let (status, body) = if not_ready.is_empty() {
        (StatusCode::OK, serde_json::json!({"ready": true}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "not_ready": not_ready}),
        )
    };
    json(status, body.to_string().into_bytes())
}

async fn auction(app: &App, start: Instant, req: Request<Incoming>) -> Response<Body> {
    let Some(_in_flight) = app.admit() else {
        app.metrics.outcome(AuctionOutcome::Overloaded);
        return no_bid();
    };
    // The auction's one load of the live config: a reload from here on does not touch it.
    let live = app.live.load_full();
    let asked = crate::pipeline::debug::asked(live.config.debug.token.as_deref(), req.headers());
    // Kept past the body read for the publisher check; a clone shares the header's bytes.
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let body = match read_body(req, live.config.server.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            app.metrics.outcome(AuctionOutcome::TooLarge);
            let limit = live.config.server.max_body_bytes;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is over the {limit} byte limit"),
                "",
            );
        }
        Err(BodyError::Bad(msg)) => {
            app.metrics.outcome(AuctionOutcome::Invalid);
            return error(StatusCode::BAD_REQUEST, &msg, "");
        }
        Err(BodyError::Unsupported(msg)) => {
            app.metrics.outcome(AuctionOutcome::Invalid);
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &msg, "");
        }
    };
    let response =
        crate::pipeline::run_auction(app, &live, start, &body, asked, authorization.as_ref()).await;
    let took = start.elapsed();
    app.metrics.auction_seconds.record(took.as_secs_f64());
    response
}

enum BodyError {
    TooLarge,
    Bad(String),
    Unsupported(String),
}

/// Reads the body under `limit`, inflating gzip under the same limit so a small compressed
/// body cannot expand into an unbounded one.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let gzip = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str())
    {
        None => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => false,
        Some(v) => {
            return Err(BodyError::Unsupported(format!(
                "content-encoding {:?} is not supported; send identity or gzip",
                v.unwrap_or("(not text)")
            )))
        }
    };
    let raw = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge
            } else {
                BodyError::Bad(format!("reading the request body failed: {e}"))
            }
        })?
        .to_bytes();
    if !gzip {
        return Ok(raw);
    }
    let mut inflated = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| BodyError::Bad(format!("the gzip body does not inflate: {e}")))?;
    if inflated.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(inflated))
}

pub(crate) fn with_openrtb_headers(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert("x-openrtb-version", HeaderValue::from_static("2.6"));
    response
}

/// 204: the OpenRTB way of saying "no bid".
pub(crate) fn no_bid() -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    with_openrtb_headers(r)
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_openrtb_headers(r)
}

/// An error answer `{"error": message, "field": field}`.
pub(crate) fn error(status: StatusCode, message: &str, field: &str) -> Response<Body> {
    let mut out = Vec::with_capacity(message.len() + field.len() + 32);
    out.extend_from_slice(b"{\"error\":");
    openrtb::json::write_str(&mut out, message);
    out.extend_from_slice(b",\"field\":");
    openrtb::json::write_str(&mut out, field);
    out.push(b'}');
    json(status, out)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

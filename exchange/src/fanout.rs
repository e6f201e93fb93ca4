//! The DSP side: the pooled HTTP(S) clients, the per-DSP state, and the parallel fan-out under
//! one deadline per auction.
//!
//! A DSP call that misses its deadline is not dropped: hyper closes an HTTP/1.1 connection
//! whose request future is dropped, which would empty the pool exactly when a DSP is slow.
//! Instead the call moves to a background task that lets it finish within a bounded grace
//! period and records how late it was.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::breaker::{Admission, Change};
use crate::config::{parse_dsp_url, Config, DspConfig, HttpVersion, TlsConfig};
use crate::dns::DnsCache;
use crate::dsp_filter::{Gate, RequestTraits, Skip};
use crate::metrics::{DspMetrics, Registry};
use crate::overload::NodeStress;
use crate::Error;

/// A pooled client: hyper-util's, which does about 30% more DSP calls per core than reqwest,
/// over a rustls connector that speaks `http://` and `https://`.
/// Names resolve through the exchange's own cache (`crate::dns`), not a blocking thread per
/// connect.
pub type HttpClient = Client<HttpsConnector<HttpConnector<DnsCache>>, Full<Bytes>>;

/// One client per HTTP version a DSP may be spoken to in (`[[dsp]] http`), each with its own
/// keep-alive pool, all trusting the same roots. Notices go through `auto`.
#[derive(Clone)]
pub struct HttpClients {
    pub auto: HttpClient,
    pub http1: HttpClient,
    pub http2: HttpClient,
}

impl HttpClients {
    /// The three clients, trusting what `tls` says (see `crate::tls::client_config`), with a
    /// name cache of their own (default `[dns]` settings, no DSP hosts pinned).
    pub fn new(tls: &TlsConfig) -> Result<Self, Error> {
        Self::with_dns(tls, standalone_dns()?, DEFAULT_IDLE_TIMEOUT)
    }

    /// The three clients, resolving names through `dns`, closing connections idle for
    /// `idle_timeout`.
    pub fn with_dns(tls: &TlsConfig, dns: DnsCache, idle_timeout: Duration) -> Result<Self, Error> {
        let tls = crate::tls::client_config(tls)?;
        let client = |version| http_client_with(&tls, version, dns.clone(), idle_timeout);
        Ok(Self {
            auto: client(HttpVersion::Auto),
            http1: client(HttpVersion::Http1),
            http2: client(HttpVersion::Http2),
        })
    }

    /// The client of DSPs spoken to in `version`.
    pub fn get(&self, version: HttpVersion) -> &HttpClient {
        match version {
            HttpVersion::Auto => &self.auto,
            HttpVersion::Http1 => &self.http1,
            HttpVersion::Http2 => &self.http2,
        }
    }
}

/// A client that trusts the bundled web roots only, HTTP/2 where ALPN offers it.
pub fn http_client() -> Result<HttpClient, Error> {
    Ok(http_client_with(
        &crate::tls::client_config(&TlsConfig::default())?,
        HttpVersion::Auto,
        standalone_dns()?,
        DEFAULT_IDLE_TIMEOUT,
    ))
}

/// `auction.pool_idle_timeout_ms`'s default.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A name cache for a client outside an exchange: default settings, counted nowhere.
fn standalone_dns() -> Result<DnsCache, Error> {
    Ok(DnsCache::new(
        &crate::config::DnsConfig::default(),
        &Registry::new()?,
        [],
    ))
}

/// Builds the pooled keep-alive client for one HTTP version. TCP_NODELAY because a bid
/// request is one small write that must not wait for Nagle. `auto` offers `h2` and
/// `http/1.1` by ALPN and speaks HTTP/1.1 over plain http; `http2` over plain http is h2c
/// with prior knowledge.
pub fn http_client_with<R>(
    tls: &rustls::ClientConfig,
    version: HttpVersion,
    dns: R,
    idle_timeout: Duration,
) -> Client<HttpsConnector<HttpConnector<R>>, Full<Bytes>>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = std::net::SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    let mut connector = HttpConnector::new_with_resolver(dns);
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    // The TLS layer above takes https URLs; the TCP connector must let them through.
    connector.enforce_http(false);
    let tls = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http();
    let connector = match version {
        HttpVersion::Auto => tls.enable_all_versions().wrap_connector(connector),
        HttpVersion::Http1 => tls.enable_http1().wrap_connector(connector),
        HttpVersion::Http2 => tls.enable_http2().wrap_connector(connector),
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(4096)
        .http2_only(version == HttpVersion::Http2);
    builder.build(connector)
}

/// One configured DSP, with what the hot path needs already parsed.
pub struct Dsp {
    pub index: u32,
    pub name: Arc<str>,
    pub uri: Uri,
    /// Which of the `HttpClients` speaks to it.
    pub http: HttpVersion,
    /// Connections opened to it at start (`crate::warm`).
    pub warm_connections: usize,
    /// How often the warm-up runs again; `None`: never.
    pub rewarm: Option<Duration>,
    pub timeout: Duration,
    pub loss_notices: bool,
    pub loss_notice_sample: f64,
    /// Its IAB Global Vendor List id, for the GDPR consent check (`crate::privacy`).
    pub gvl_id: Option<u16>,
    /// `bid_adjustment`: its bids are multiplied by it before the auction.
    pub bid_adjustment: money::Adjustment,
    in_flight: Arc<Semaphore>,
    /// Targeting and the QPS cap.
    gate: Gate,
    /// The settings it was built from, to tell an unchanged DSP across a reload.
    source: DspConfig,
    pub metrics: DspMetrics,
}

impl Dsp {
    pub fn from_config(
        index: u32,
        dsp: &DspConfig,
        config: &Config,
        registry: &Registry,
    ) -> Result<Dsp, Error> {
        let uri = parse_dsp_url(&dsp.url)
            .map_err(|e| Error::Config(vec![format!("dsp {:?}: {e}", dsp.name)]))?;
        let gate = Gate::from_config(dsp).map_err(|problems| {
            Error::Config(
                problems
                    .into_iter()
                    .map(|p| format!("dsp {:?}: {p}", dsp.name))
                    .collect(),
            )
        })?;
        Ok(Dsp {
            index,
            name: Arc::from(dsp.name.as_str()),
            uri,
            http: dsp.http,
            warm_connections: dsp.warm_connections,
            rewarm: (dsp.rewarm_ms > 0).then(|| Duration::from_millis(dsp.rewarm_ms)),
            timeout: Duration::from_millis(config.dsp_timeout_ms(dsp)),
            loss_notices: dsp.loss_notices,
            loss_notice_sample: dsp.loss_notice_sample,
            gvl_id: dsp.gvl_id,
            // Validated: a factor that does not convert never reaches here.
            bid_adjustment: money::Adjustment::from_factor(dsp.bid_adjustment)
                .unwrap_or(money::Adjustment::ONE),
            in_flight: Arc::new(Semaphore::new(dsp.max_in_flight)),
            gate,
            source: dsp.clone(),
            metrics: DspMetrics::new(registry, &dsp.name),
        })
    }
}

impl Dsp {
    /// After a reload: when `old` is the same DSP with the same settings, this one takes over
    /// its breaker, QPS window and in-flight bound (the old one's late calls still hold
    /// permits). A DSP whose settings changed starts afresh. True when state was kept.
    pub fn keep_state_of(&mut self, old: &Dsp) -> bool {
        if self.source != old.source || self.timeout != old.timeout {
            return false;
        }
        self.gate.keep_state_of(&old.gate);
        self.in_flight = old.in_flight.clone();
        // The gauge was set afresh with the metrics; it follows the kept breaker.
        let open = self.gate.circuit_open();
        self.metrics.circuit_open.set(if open { 1.0 } else { 0.0 });
        true
    }

    /// Tells the DSP's circuit breaker how a call that went out ended.
    pub(crate) fn record(&self, admission: Admission, ok: bool) {
        if let Some(change) = self.gate.record(admission, ok, Instant::now()) {
            self.breaker_changed(change);
        }
    }

    fn breaker_changed(&self, change: Change) {
        self.metrics
            .circuit_open
            .set(if change.is_open() { 1.0 } else { 0.0 });
        tracing::info!(dsp = %self.name, state = change.label(), "dsp circuit breaker");
    }
}

/// One DSP call of an auction: which DSP, how it was let through, and what became of it.
pub struct Call<'d> {
    pub dsp: &'d Arc<Dsp>,
    /// A normal call or a probe of an open circuit; the answer's reader reports to the
    /// breaker with it.
    pub admission: Admission,
    pub outcome: CallOutcome,
    /// From sending to the answer, the failure or the end of the wait; zero when not called.
    pub latency: Duration,
    /// Whether a failure or timeout of this call may count against the DSP's breaker.
    blame: Blame,
}

/// Who a call that failed or timed out is put down to, decided when it ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// Nothing to put down here: answered (its reader reports to the breaker), skipped, or
    /// never sent.
    None,
    /// The DSP failed or ran out its deadline.
    Dsp,
    /// The node's own deadline timer fired well past the deadline while it showed overload:
    /// the answer may have been waiting to be polled.
    NodeLate,
}

/// Tells the breakers of the auction's failed calls, unless the failure is not the DSP's:
/// its timer fired late on a stressed node, or every DSP the auction called failed at once
/// (two or more). A failure all DSPs share is the node's or its network's (measured: a cold
/// start into 2 000/s timed out all three mock DSPs together and opened every breaker, so the
/// node answered 204 for a second); one DSP failing while the others answer is that DSP's.
fn report_failures(calls: &[Call<'_>]) {
    let mut sent = calls.iter().filter(|c| c.went_out());
    let shared = sent.clone().nth(1).is_some() && sent.all(|c| c.blame != Blame::None);
    for call in calls {
        match call.blame {
            Blame::None => {}
            Blame::Dsp if !shared => call.dsp.record(call.admission, false),
            Blame::Dsp | Blame::NodeLate => call.dsp.metrics.failures_excused.increment(1),
        }
    }
}

/// What became of one DSP call, as far as the auction is concerned.
pub enum CallOutcome {
    /// The DSP answered in time. The body is bounded by `auction.max_response_bytes`.
    Answered { status: u16, body: Bytes },
    /// Transport failure or an oversized answer, within the deadline.
    Failed(CallError),
    /// The deadline passed first; the call may still finish in the background.
    TimedOut,
    /// The DSP was not called: not targeted, circuit open, over its QPS cap, or already at
    /// `max_in_flight`.
    Skipped(Skip),
}

impl Call<'_> {
    /// Whether the DSP answered in time.
    fn answered(&self) -> bool {
        matches!(self.outcome, CallOutcome::Answered { .. })
    }

    /// Whether a request went out to the DSP and answered, failed or timed out (not a skip,
    /// nor a call whose deadline had passed before it could be sent).
    pub fn went_out(&self) -> bool {
        self.answered() || self.blame != Blame::None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("request: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("building the request: {0}")]
    Build(#[from] http::Error),
}

impl CallError {
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Request(_) => "transport",
            CallError::Body(_) => "body",
            CallError::Build(_) => "build",
        }
    }
}

/// Told about every late answer: `(dsp, auction id, ms past the deadline)`.
pub type LateHook = Arc<dyn Fn(&str, &str, u64) + Send + Sync>;

/// Fan-out settings and the bound on late calls left running in the background.
pub struct FanOut {
    clients: HttpClients,
    max_response_bytes: usize,
    late_grace: Duration,
    /// `auction.timer_slack_ms`: tokio's timers fire up to 2 ms late (measured: with a 1 ms
    /// slack, the median auction with a hanging DSP still ended 0.9 ms after the slackened
    /// instant, p90 2.7 ms after), so the wait ends this much before the deadline.
    timer_slack: Duration,
    late_slots: Arc<Semaphore>,
    late_abandoned: metrics::Counter,
    on_late: LateHook,
    /// Whether this node is overloaded right now, so a late timer is its fault.
    stress: Arc<NodeStress>,
}

impl FanOut {
    pub fn new(
        clients: HttpClients,
        config: &Config,
        late_abandoned: metrics::Counter,
        on_late: LateHook,
        stress: Arc<NodeStress>,
    ) -> Self {
        Self {
            stress,
            clients,
            max_response_bytes: config.auction.max_response_bytes,
            late_grace: Duration::from_millis(config.auction.late_grace_ms),
            timer_slack: Duration::from_millis(config.auction.timer_slack_ms),
            late_slots: Arc::new(Semaphore::new(config.auction.max_late_in_flight)),
            late_abandoned,
            on_late,
        }
    }

    /// Calls every DSP in `dsps` that admits a request with these `traits` at once and returns
    /// what each one did by its deadline: `min(auction_deadline, start + dsp.timeout)`.
    /// `render(dsp, tmax_ms)` builds the body `dsp` receives; `tmax_ms` is that DSP's own
    /// remaining time. It is called only for DSPs actually called.
    pub async fn call_all<'d>(
        &self,
        auction_id: &str,
        dsps: &'d [Arc<Dsp>],
        traits: &RequestTraits<'_>,
        start: Instant,
        auction_deadline: Instant,
        render: impl Fn(&Dsp, u32) -> Bytes,
    ) -> Vec<Call<'d>> {
        let now = Instant::now();
        let calls = dsps.iter().map(|dsp| {
            let deadline = auction_deadline.min(start + dsp.timeout);
            let wait_until = deadline.checked_sub(self.timer_slack).unwrap_or(deadline);
            // Decided once per auction and DSP, before anything is sent: targeting, the
            // breaker and the QPS cap first, so a DSP that is skipped for them holds no
            // in-flight slot.
            let (admitted, change) = dsp.gate.admit(traits, now);
            if let Some(change) = change {
                dsp.breaker_changed(change);
            }
            let admission = admitted.unwrap_or_default();
            let permit = admitted.and_then(|_| {
                dsp.in_flight
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Skip::InFlight)
            });
            let remaining = wait_until.saturating_duration_since(now);
            let prepared = match permit {
                Err(skip) => Err(CallOutcome::Skipped(skip)),
                Ok(_) if remaining.is_zero() => Err(CallOutcome::TimedOut),
                Ok(permit) => {
                    // A DSP told "0 ms" would drop the request; 1 ms is the honest floor.
                    let tmax = u32::try_from(remaining.as_millis())
                        .unwrap_or(u32::MAX)
                        .max(1);
                    Ok((permit, render(dsp, tmax)))
                }
            };
            let outcome = async move {
                let (permit, body) = match prepared {
                    Ok(p) => p,
                    Err(CallOutcome::Skipped(skip)) => {
                        dsp.metrics.skipped(skip);
                        if skip == Skip::InFlight {
                            dsp.metrics.throttled.increment(1);
                        }
                        return (CallOutcome::Skipped(skip), Duration::ZERO, Blame::None);
                    }
                    Err(outcome) => {
                        dsp.metrics.timeouts.increment(1);
                        return (outcome, Duration::ZERO, Blame::None);
                    }
                };
                dsp.metrics.requests.increment(1);
                let sent = Instant::now();
                let mut call = Box::pin(call(
                    self.clients.get(dsp.http).clone(),
                    dsp.uri.clone(),
                    body,
                    self.max_response_bytes,
                ));
                tokio::select! {
                    result = &mut call => {
                        drop(permit);
                        let took = sent.elapsed();
                        dsp.metrics.latency_seconds.record(took.as_secs_f64());
                        match result {
                            // Reported to the breaker once read (`pipeline::offers`).
                            Ok((status, body)) => {
                                (CallOutcome::Answered { status, body }, took, Blame::None)
                            }
                            Err(e) => {
                                dsp.metrics.errors.increment(1);
                                tracing::debug!(dsp = %dsp.name, error = %e, "dsp call failed");
                                (CallOutcome::Failed(e), took, Blame::Dsp)
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(wait_until) => {
                        // A failure now, whether it later answers late or is abandoned: a
                        // hanging DSP opens its breaker at the pace of its deadlines.
                        let fired_late = Instant::now() > deadline + self.timer_slack;
                        let blame = if fired_late && self.stress.is_stressed() {
                            Blame::NodeLate
                        } else {
                            Blame::Dsp
                        };
                        dsp.metrics.timeouts.increment(1);
                        self.finish_late(dsp.clone(), auction_id, call, wait_until, permit);
                        let waited = wait_until.saturating_duration_since(sent);
                        (CallOutcome::TimedOut, waited, blame)
                    }
                }
            };
            async move {
                let (outcome, latency, blame) = outcome.await;
                Call {
                    dsp,
                    admission,
                    outcome,
                    latency,
                    blame,
                }
            }
        });
        let calls = join_all(calls).await;
        report_failures(&calls);
        calls
    }

    /// Lets a call that missed its deadline finish in the background, bounded in number and
    /// in time, and records its lateness. The DSP's in-flight permit stays held until then,
    /// so a DSP that keeps hanging is throttled instead of piling up calls.
    fn finish_late<F>(
        &self,
        dsp: Arc<Dsp>,
        auction_id: &str,
        call: std::pin::Pin<Box<F>>,
        deadline: Instant,
        dsp_permit: tokio::sync::OwnedSemaphorePermit,
    ) where
        F: std::future::Future<Output = Result<(u16, Bytes), CallError>> + Send + 'static,
    {
        let Ok(slot) = self.late_slots.clone().try_acquire_owned() else {
            self.late_abandoned.increment(1);
            return;
        };
        let grace = self.late_grace;
        let on_late = self.on_late.clone();
        let auction_id = auction_id.to_owned();
        tokio::spawn(async move {
            let result = tokio::time::timeout(grace, call).await;
            let late_by = deadline.elapsed();
            let Ok(finished) = result else {
                // Counted, and logged only at debug: a DSP that hangs would otherwise write a
                // line per auction, which costs the node more than the DSP is worth.
                dsp.metrics.late_unanswered.increment(1);
                tracing::debug!(
                    target: "exchange::late",
                    dsp = %dsp.name,
                    auction_id,
                    grace_ms = grace.as_millis() as u64,
                    "dsp call abandoned after the late grace period"
                );
                return;
            };
            on_late(&dsp.name, &auction_id, late_by.as_millis() as u64);
            dsp.metrics.late_answers.increment(1);
            dsp.metrics.late_seconds.record(late_by.as_secs_f64());
            let (status, bytes, error) = match &finished {
                Ok((status, body)) => (Some(*status), body.len(), None),
                Err(e) => (None, 0, Some(e.to_string())),
            };
            tracing::info!(
                target: "exchange::late",
                dsp = %dsp.name,
                auction_id,
                late_by_ms = late_by.as_secs_f64() * 1e3,
                status,
                bytes,
                error,
                "late dsp answer"
            );
            // Held until here: a DSP that keeps answering late stays throttled meanwhile.
            drop((dsp_permit, slot));
        });
    }
}

async fn call(
    client: HttpClient,
    uri: Uri,
    body: Bytes,
    max_response_bytes: usize,
) -> Result<(u16, Bytes), CallError> {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-openrtb-version", "2.6")
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), max_response_bytes)
        .collect()
        .await
        .map_err(|e| CallError::Body(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

//! The operator's own listeners: `[admin] listen` and `[metrics] listen` put the admin API and
//! `/metrics` on addresses of their own (one listener when both name the same), so the
//! publisher-facing port serves only auctions, tracking and health.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::listen::Limits;
use crate::server::{error, metrics, App, Body};
use crate::Error;

/// What one side listener serves.
#[derive(Clone, Copy, Debug, Default)]
struct Serves {
    admin: bool,
    metrics: bool,
}

/// The side listeners, bound at start.
pub(crate) struct Bound(Vec<(TcpListener, Serves)>);

/// Binds `admin.listen` and `metrics.listen`; an address that cannot be bound stops the start.
pub(crate) async fn bind(config: &Config) -> Result<Bound, Error> {
    let mut wanted: Vec<(SocketAddr, Serves)> = Vec::new();
    let mut want = |addr: Option<SocketAddr>, set: fn(&mut Serves)| {
        let Some(addr) = addr else { return };
        match wanted.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, serves)) => set(serves),
            None => {
                let mut serves = Serves::default();
                set(&mut serves);
                wanted.push((addr, serves));
            }
        }
    };
    want(config.admin.listen, |s| s.admin = true);
    want(config.metrics.listen, |s| s.metrics = true);
    let mut bound = Vec::with_capacity(wanted.len());
    for (addr, serves) in wanted {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(vec![format!("cannot listen on {addr}: {e}")]))?;
        tracing::info!(%addr, admin = serves.admin, metrics = serves.metrics, "operator listener");
        bound.push((listener, serves));
    }
    Ok(Bound(bound))
}

/// The running side listeners.
pub(crate) struct Serving {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<GracefulShutdown>>,
}

/// Serves each bound listener until [`Serving::shutdown`].
pub(crate) fn serve(bound: Bound, app: &Arc<App>, limits: Limits) -> Serving {
    let (stop, stopped) = watch::channel(false);
    let tasks = bound
        .0
        .into_iter()
        .map(|(listener, serves)| {
            let app = app.clone();
            let mut stopped = stopped.clone();
            let shutdown = async move {
                // Either the signal or the sender gone: both mean stop.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            tokio::spawn(crate::listen::serve(
                listener,
                limits,
                None,
                shutdown,
                move || {
                    let app = app.clone();
                    service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(handle(&app, serves, req).await) }
                    })
                },
            ))
        })
        .collect();
    Serving { stop, tasks }
}

impl Serving {
    /// Stops accepting and gives open connections `grace` to finish.
    pub(crate) async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Ok(graceful) = task.await {
                if tokio::time::timeout(grace, graceful.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!("shutdown: operator connections still open after {grace:?}");
                }
            }
        }
    }
}

async fn handle(app: &App, serves: Serves, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (_, path) if serves.admin && path.starts_with("/admin/") => {
            crate::admin::handle(app, req).await
        }
        (&Method::GET, "/metrics") if serves.metrics => metrics(app),
        (_, "/metrics") if serves.metrics => error(StatusCode::METHOD_NOT_ALLOWED, "use GET", ""),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint", ""),
    }
}

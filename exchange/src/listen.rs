//! The accept loop: HTTP/1.1 connections on a listener, plain or TLS, under a bound, until
//! shutdown. The
//! exchange serves through it, and so does the load test's bare fan-out baseline, so the
//! yardstick the exchange is measured against accepts and serves exactly as it does.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// How long the loop backs off after a failed accept (EMFILE and friends), instead of
/// spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; the next one waits in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
}

/// Accepts connections on `listener` until `shutdown` completes, and serves each with the
/// service `new_service` makes for it: HTTP/1.1 with keep-alive, TCP_NODELAY, at most
/// `limits.max_connections` at once; over TLS when `tls` is given (the handshake runs in the
/// connection's own task, under `limits.header_read_timeout`). Then it closes the listener and returns the watcher of
/// the connections still open, for the caller to wait on (`shutdown()`) as long as it allows.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    mut new_service: F,
) -> GracefulShutdown
where
    F: FnMut() -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with_peer(listener, limits, tls, shutdown, move |_| new_service()).await
}

/// As [`serve`], handing `new_service` each connection's peer address (the exchange's
/// tracking endpoints need the client's IP).
pub async fn serve_with_peer<F, S, B>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    mut new_service: F,
) -> GracefulShutdown
where
    F: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let service = new_service(peer);
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    // A client that goes away or sends broken HTTP is the client's business.
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                let timeout = limits.header_read_timeout;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, handshake).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("tls handshake timed out");
                            return;
                        }
                    };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful
}

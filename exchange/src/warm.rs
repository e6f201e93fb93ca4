//! Warming the DSP pools at start: every enabled DSP gets its `warm_connections` connections
//! (TCP and TLS handshake, ALPN settled) before the first auction, so no handshake lands
//! inside an auction's deadline; and keeping them warm, by running the warm-up again every
//! `rewarm_ms`, so a quiet DSP's connections do not all reach the pool's idle timeout.
//!
//! hyper-util's pool only keeps connections that carried a request, so each connection is
//! opened by one `OPTIONS` request to the DSP's own URL: no body, a method no bidder can take
//! for a bid request (those are `POST`s with a JSON body), and whose answer, whatever its
//! status, leaves the connection in the pool. They are sent at once, so each opens its own
//! connection (over HTTP/2 they share one, which is all HTTP/2 needs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fanout::{Dsp, HttpClient, HttpClients};

/// How long one warming request may take: the connect timeout (1 s) plus a TLS handshake
/// and one answer. A DSP slower than this starts cold and is logged.
const WARM_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens every DSP's warm connections, all DSPs at once, and returns how many were made. A DSP
/// that cannot be reached is logged and does not stop the start.
pub async fn warm(clients: &HttpClients, dsps: &[Arc<Dsp>]) -> usize {
    let per_dsp = dsps.iter().map(|dsp| async move {
        let (ok, error) = warm_dsp(clients.get(dsp.http), dsp).await;
        if let Some(error) = error {
            tracing::warn!(
                dsp = %dsp.name,
                url = %dsp.uri,
                warmed = ok,
                wanted = dsp.warm_connections,
                error,
                "could not open every warm connection to this dsp; its first auctions may wait for a handshake"
            );
        } else if ok > 0 {
            tracing::info!(dsp = %dsp.name, connections = ok, "dsp pool warmed");
        }
        ok
    });
    join_all(per_dsp).await.into_iter().sum()
}

/// Keeps the pools warm: one task per DSP with `rewarm_ms` set runs its warm-up again at that
/// interval. Each run takes `warm_connections` pooled connections at once, so each of them
/// carries a request and its idle clock restarts; any the pool has closed are opened again.
/// The caller aborts the tasks at shutdown.
pub fn spawn_rewarm(clients: &HttpClients, dsps: &[Arc<Dsp>]) -> Vec<JoinHandle<()>> {
    dsps.iter()
        .filter(|dsp| dsp.warm_connections > 0)
        .filter_map(|dsp| {
            let every = dsp.rewarm?;
            let client = clients.get(dsp.http).clone();
            let dsp = dsp.clone();
            Some(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let (ok, error) = warm_dsp(&client, &dsp).await;
                    if let Some(error) = error {
                        // Its calls fail too, and are counted there: one line, not one per run.
                        tracing::debug!(dsp = %dsp.name, warmed = ok, error, "rewarm incomplete");
                    }
                }
            }))
        })
        .collect()
}

/// Sends one DSP's warming requests at once; returns how many got an answer and the first error.
async fn warm_dsp(client: &HttpClient, dsp: &Dsp) -> (usize, Option<String>) {
    let opened = join_all((0..dsp.warm_connections).map(|_| async {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri(dsp.uri.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(WARM_TIMEOUT, async {
            let response = client.request(request).await.map_err(|e| {
                // The cause (refused, certificate unknown...) is in the source chain.
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            })?;
            // Read to the end so the connection goes back to the pool.
            let _ = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            Ok::<_, String>(())
        })
        .await;
        answer.unwrap_or_else(|_| Err(format!("no answer within {WARM_TIMEOUT:?}")))
    }))
    .await;
    let ok = opened.iter().filter(|r| r.is_ok()).count();
    let error = opened.into_iter().find_map(|r| r.err());
    (ok, error)
}

//! Win and loss notices: fired after the publisher has its answer, bounded in number and
//! in time, never retried (a notice is a courtesy; billing is the impression's job). Every
//! URL passes the address rule of `guard.rs` first.

pub mod guard;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Semaphore;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::fanout::Dsp;
use guard::{GuardedDns, HostGuard, Refusal};

/// The notice client: its resolver applies the address rule to every name it connects to.
pub type NoticeClient = Client<HttpsConnector<HttpConnector<GuardedDns>>, Full<Bytes>>;

/// What kind of notice a URL is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    Win,
    Loss,
    /// The DSP's own `burl`, fired once its impression is billed.
    Billing,
}

impl NoticeKind {
    fn label(self) -> &'static str {
        match self {
            NoticeKind::Win => "win",
            NoticeKind::Loss => "loss",
            NoticeKind::Billing => "billing",
        }
    }
}

/// One notice to fire: the URL already has its macros substituted.
pub struct Notice {
    pub dsp: Arc<Dsp>,
    pub kind: NoticeKind,
    pub url: String,
}

pub struct Notifier {
    client: NoticeClient,
    slots: Arc<Semaphore>,
    capacity: u32,
    timeout: Duration,
    dropped: metrics::Counter,
    guard: Arc<HostGuard>,
}

impl Notifier {
    /// The address rule's guard, whose DSP hosts a config reload updates.
    pub fn guard(&self) -> &HostGuard {
        &self.guard
    }

    /// `client` must resolve through a [`GuardedDns`] holding `guard`.
    pub fn new(
        client: NoticeClient,
        max_in_flight: usize,
        timeout: Duration,
        dropped: metrics::Counter,
        guard: Arc<HostGuard>,
    ) -> Self {
        // A semaphore's permits are counted in u32 for acquire_many; clamp so that drain()
        // can always ask for all of them.
        let capacity = u32::try_from(max_in_flight)
            .unwrap_or(u32::MAX)
            .min(1 << 20);
        Self {
            client,
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            timeout,
            dropped,
            guard,
        }
    }

    /// Fires each notice in the background. A notice that finds no free slot is dropped and
    /// counted: queueing them would turn a slow DSP into unbounded memory.
    pub fn fire(&self, notices: Vec<Notice>) {
        for notice in notices {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.dropped.increment(1);
                notice.dsp.metrics.notice(notice.kind.label(), "dropped");
                continue;
            };
            let uri: Uri = match notice.url.parse() {
                Ok(uri) => uri,
                Err(_) => {
                    notice.dsp.metrics.notice(notice.kind.label(), "bad_url");
                    continue;
                }
            };
            if let Err(why) =
                HostGuard::check_scheme(&uri).and_then(|()| self.guard.check_host(&uri))
            {
                refused(&notice, &why);
                continue;
            }
            let client = self.client.clone();
            let timeout = self.timeout;
            tokio::spawn(async move {
                // Resolving the host may take a while: it happens here, after the answer,
                // inside the notice's own timeout.
                let label = match tokio::time::timeout(timeout, get(client, uri)).await {
                    Ok(Ok(status)) if (200..400).contains(&status) => "ok",
                    Ok(Ok(_)) => "bad_status",
                    Ok(Err(Failure::Refused(why))) => {
                        refused(&notice, &why);
                        drop(permit);
                        return;
                    }
                    Ok(Err(Failure::Other)) => "error",
                    Err(_) => "timeout",
                };
                notice.dsp.metrics.notice(notice.kind.label(), label);
                drop(permit);
            });
        }
    }

    /// Waits, at most `limit`, for the notices in flight to finish.
    pub async fn drain(&self, limit: Duration) {
        let all = self.slots.acquire_many(self.capacity);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("shutdown: notices still in flight after {limit:?}, leaving them");
        }
    }
}

/// Counts and logs a notice the address rule kept from being called.
fn refused(notice: &Notice, why: &Refusal) {
    notice.dsp.metrics.notice(notice.kind.label(), "refused");
    tracing::debug!(
        dsp = %notice.dsp.name,
        kind = notice.kind.label(),
        "notice refused: {why}"
    );
}

enum Failure {
    Refused(Refusal),
    Other,
}

async fn get(client: NoticeClient, uri: Uri) -> Result<u16, Failure> {
    let request = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|_| Failure::Other)?;
    let response = client.request(request).await.map_err(|e| {
        guard::refusal_in(&e).map_or(Failure::Other, |r| Failure::Refused(r.clone()))
    })?;
    let status = response.status().as_u16();
    // Read the body so the connection goes back to the pool; a win notice may answer with
    // the markup itself, hence a bound rather than an assumption that it is small.
    let _ = Limited::new(response.into_body(), 1 << 20).collect().await;
    Ok(status)
}

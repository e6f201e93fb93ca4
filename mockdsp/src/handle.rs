//! The handle to a running mock: its address, what it recorded, and its shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Behavior;
use crate::error::Error;
use crate::record::{MockDspStats, Notice};
use crate::server::{self, Shared};
use crate::settings::{check_behavior, Settings};

/// A running mock DSP. Dropping it stops the mock too (without waiting); [`Self::shutdown`]
/// stops it and waits until every connection is closed.
pub struct MockDspHandle {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl MockDspHandle {
    pub(crate) fn spawn(
        listener: TcpListener,
        addr: SocketAddr,
        url: String,
        settings: Settings,
        record: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(settings, record, stopped));
        let server = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared), tls));
        Self {
            addr,
            url,
            shared,
            stop,
            server: Some(server),
        }
    }

    /// The mock's name.
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// The bid endpoint, `http://127.0.0.1:PORT/bid` (`https://` when served over TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters right now.
    pub fn stats(&self) -> MockDspStats {
        self.shared.recorder.counters.snapshot()
    }

    /// The most recent `/bid` request bodies, oldest first, exactly as received.
    pub fn received(&self) -> Vec<Bytes> {
        self.shared.recorder.received.snapshot()
    }

    /// [`Self::received`] parsed as JSON; bodies that are not JSON are left out.
    pub fn received_json(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect()
    }

    /// The most recent notice hits, oldest first.
    pub fn notices(&self) -> Vec<Notice> {
        self.shared.recorder.notices.snapshot()
    }

    /// Switches how the mock answers `/bid` from the next request on (calls already waiting,
    /// such as a `Hang`, keep their answer). Refused like the builder refuses it.
    pub fn set_behavior(&self, behavior: Behavior) -> Result<(), Error> {
        check_behavior(&behavior).map_err(|reason| Error::InvalidConfig {
            name: self.name().to_owned(),
            reason,
        })?;
        self.shared.settings.set_behavior(behavior);
        Ok(())
    }

    /// Forgets the recorded bodies and notices (counters keep counting).
    pub fn clear(&self) {
        self.shared.recorder.received.clear();
        self.shared.recorder.notices.clear();
    }

    /// Stops accepting, ends open connections (a hanging request is answered 503, a trickling
    /// body is cut) and waits until every task of this mock has finished.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(server) = self.server.take() {
            // The accept loop does not panic; a JoinError here would only mean the runtime is
            // shutting down, and then there is nothing left to wait for.
            let _ = server.await;
        }
    }

    fn signal_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for MockDspHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockDspHandle")
            .field("name", &self.name())
            .field("url", &self.url)
            .field("behavior", &self.shared.settings.behavior())
            .finish()
    }
}

impl Drop for MockDspHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

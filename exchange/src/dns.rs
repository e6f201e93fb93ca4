//! DSP host names resolved off the request path: a cache of name lookups, the resolver of the
//! outbound HTTP connectors, and the background task that refreshes the DSPs' names.
//!
//! hyper-util's default `GaiResolver` takes a blocking thread per lookup at connect time, so a
//! DSP connection opened inside an auction would wait for DNS. Here the configured DSP hosts
//! ("pinned") are looked up once at start and refreshed in the background; a refresh that
//! fails keeps the last good answer. Any other name (a notice host) is looked up on demand
//! under a timeout and cached for one refresh interval, in a cache of bounded size.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use hyper_util::client::legacy::connect::dns::Name;
use metrics::Counter;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::DnsConfig;
use crate::metrics::Registry;

/// How a name becomes addresses (port 0): the system resolver, or a fake one in tests.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver through tokio (a blocking-pool thread per lookup, off the request path).
fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((name.as_str(), 0)).await?.collect()) })
    })
}

/// The shared cache; cloning it is cheap. It is the `Service<Name>` the connectors resolve with.
#[derive(Clone)]
pub struct DnsCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: RwLock<HashMap<Box<str>, Entry>>,
    /// DSP hosts: looked up at start, refreshed in the background, never evicted.
    pinned: Box<[Box<str>]>,
    max_hosts: usize,
    refresh: Duration,
    timeout: Duration,
    lookup: Lookup,
    lookups: Counter,
    registry: Registry,
}

struct Entry {
    addrs: Arc<[SocketAddr]>,
    fetched: Instant,
}

impl DnsCache {
    /// A cache for these DSP hosts (IP literals are left out: they need no lookup), using the
    /// system resolver. Nothing is looked up until [`DnsCache::start`].
    pub fn new<'a>(
        config: &DnsConfig,
        registry: &Registry,
        dsp_hosts: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self::with_lookup(config, registry, dsp_hosts, system_lookup())
    }

    /// As [`DnsCache::new`], resolving through `lookup`.
    pub fn with_lookup<'a>(
        config: &DnsConfig,
        registry: &Registry,
        dsp_hosts: impl IntoIterator<Item = &'a str>,
        lookup: Lookup,
    ) -> Self {
        let mut pinned: Vec<Box<str>> = dsp_hosts
            .into_iter()
            .map(bare_host)
            .filter(|h| h.parse::<IpAddr>().is_err())
            .map(|h| h.to_ascii_lowercase().into_boxed_str())
            .collect();
        pinned.sort();
        pinned.dedup();
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(HashMap::new()),
                pinned: pinned.into_boxed_slice(),
                max_hosts: config.max_hosts,
                refresh: Duration::from_millis(config.refresh_ms),
                timeout: Duration::from_millis(config.timeout_ms),
                lookup,
                lookups: registry.counter("exchange_dns_lookups_total", &[]),
                registry: registry.clone(),
            }),
        }
    }

    /// Looks every DSP host up, all at once; a host that fails is logged and retried at each
    /// refresh (its DSP's calls fail to connect meanwhile).
    pub async fn start(&self) {
        self.refresh_pinned().await;
    }

    /// Re-looks every DSP host up; a failure keeps the last good answer.
    pub async fn refresh_pinned(&self) {
        let inner = &self.inner;
        join_all(inner.pinned.iter().map(|host| async move {
            match self.look_up(host).await {
                Ok(addrs) => {
                    self.insert(host, addrs);
                }
                Err(e) => {
                    let kept = self.cached(host).is_some();
                    tracing::warn!(host = %host, error = %e, kept_last_answer = kept, "dsp host name lookup failed");
                    inner
                        .registry
                        .counter("exchange_dns_refresh_failures_total", &[("host", host)])
                        .increment(1);
                }
            }
        }))
        .await;
    }

    /// Refreshes the DSP hosts every `dns.refresh_ms` until the handle is aborted.
    pub fn spawn_refresh(&self) -> JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let every = cache.inner.refresh;
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                cache.refresh_pinned().await;
            }
        })
    }

    /// The addresses of `host` (port 0). IP literals are answered as they are; a DSP host from
    /// the cache; any other name from the cache while its answer is younger than the refresh
    /// interval, else by a lookup under `dns.timeout_ms` (its last answer if that fails).
    pub async fn resolve(&self, host: &str) -> io::Result<Arc<[SocketAddr]>> {
        let host = bare_host(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, 0)]));
        }
        let host = host.to_ascii_lowercase();
        let pinned = self.is_pinned(&host);
        if let Some((addrs, fetched)) = self.cached(&host) {
            if pinned || fetched.elapsed() < self.inner.refresh {
                return Ok(addrs);
            }
        }
        match self.look_up(&host).await {
            Ok(addrs) => Ok(self.insert(&host, addrs)),
            Err(e) => self.cached(&host).map(|(a, _)| a).ok_or(e),
        }
    }

    /// How many names are cached.
    pub fn len(&self) -> usize {
        read(&self.inner.entries).len()
    }

    /// Whether no name is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_pinned(&self, host: &str) -> bool {
        self.inner
            .pinned
            .binary_search_by(|p| (**p).cmp(host))
            .is_ok()
    }

    fn cached(&self, host: &str) -> Option<(Arc<[SocketAddr]>, Instant)> {
        read(&self.inner.entries)
            .get(host)
            .map(|e| (e.addrs.clone(), e.fetched))
    }

    async fn look_up(&self, host: &str) -> io::Result<Vec<SocketAddr>> {
        self.inner.lookups.increment(1);
        let addrs = tokio::time::timeout(self.inner.timeout, (self.inner.lookup)(host.to_owned()))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.inner.timeout),
                )
            })??;
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
        }
        Ok(addrs)
    }

    /// Stores an answer. A new non-DSP name in a full cache evicts the oldest non-DSP one
    /// (a scan, only on a miss with a full cache: rare next to the lookup it follows).
    fn insert(&self, host: &str, addrs: Vec<SocketAddr>) -> Arc<[SocketAddr]> {
        let addrs: Arc<[SocketAddr]> = addrs.into();
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let entry = Entry {
            addrs: addrs.clone(),
            fetched: Instant::now(),
        };
        if entries.contains_key(host) || self.is_pinned(host) {
            entries.insert(host.into(), entry);
            return addrs;
        }
        while entries.len() >= self.inner.max_hosts {
            let oldest = entries
                .iter()
                .filter(|(name, _)| !self.is_pinned(name))
                .min_by_key(|(_, e)| e.fetched)
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => entries.remove(&name),
                // Only DSP hosts left: the answer is used but not kept.
                None => return addrs,
            };
        }
        entries.insert(host.into(), entry);
        addrs
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock leaves a map that is still whole: keep using it.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// `[::1]` as written in a URL is the address `::1`.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The cached answer handed to the connector, without copying it.
pub struct Addrs {
    addrs: Arc<[SocketAddr]>,
    next: usize,
}

impl Addrs {
    /// An iterator over `addrs`.
    pub fn new(addrs: Arc<[SocketAddr]>) -> Self {
        Self { addrs, next: 0 }
    }
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let addr = self.addrs.get(self.next).copied();
        self.next += 1;
        addr
    }
}

impl tower_service::Service<Name> for DnsCache {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let cache = self.clone();
        Box::pin(async move {
            let addrs = cache.resolve(name.as_str()).await?;
            Ok(Addrs { addrs, next: 0 })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Fake {
        fail: AtomicBool,
        calls: AtomicUsize,
    }

    /// A resolver that answers `10.0.0.N` for the N-th call, or fails while `fail` is set.
    fn fake() -> (Arc<Fake>, Lookup) {
        let state = Arc::new(Fake {
            fail: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        });
        let s = state.clone();
        let lookup: Lookup = Arc::new(move |_name: String| {
            let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let fail = s.fail.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err(io::Error::other("resolver down"))
                } else {
                    Ok(vec![SocketAddr::from(([10, 0, 0, n as u8], 0))])
                }
            })
        });
        (state, lookup)
    }

    fn config(max_hosts: usize) -> DnsConfig {
        DnsConfig {
            max_hosts,
            ..DnsConfig::default()
        }
    }

    fn addr(n: u8) -> Arc<[SocketAddr]> {
        Arc::from([SocketAddr::from(([10, 0, 0, n], 0))])
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_answer() {
        let registry = Registry::new().unwrap();
        let (state, lookup) = fake();
        let cache = DnsCache::with_lookup(&config(10), &registry, ["dsp.example"], lookup);
        cache.start().await;
        assert_eq!(cache.resolve("dsp.example").await.unwrap(), addr(1));
        state.fail.store(true, Ordering::SeqCst);
        cache.refresh_pinned().await;
        assert_eq!(cache.resolve("DSP.example").await.unwrap(), addr(1));
        assert_eq!(state.calls.load(Ordering::SeqCst), 2);
        let text = registry.render();
        assert!(
            text.contains("exchange_dns_refresh_failures_total{host=\"dsp.example\"} 1"),
            "{text}"
        );
        assert!(text.contains("exchange_dns_lookups_total 2"), "{text}");
        state.fail.store(false, Ordering::SeqCst);
        cache.refresh_pinned().await;
        assert_eq!(cache.resolve("dsp.example").await.unwrap(), addr(3));
    }

    #[tokio::test]
    async fn other_names_are_looked_up_once_and_the_cache_is_bounded() {
        let registry = Registry::new().unwrap();
        let (state, lookup) = fake();
        let cache = DnsCache::with_lookup(&config(2), &registry, ["dsp.example"], lookup);
        cache.start().await;
        assert_eq!(cache.resolve("a.example").await.unwrap(), addr(2));
        assert_eq!(cache.resolve("a.example").await.unwrap(), addr(2));
        assert_eq!(state.calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
        // Full: b evicts a (the oldest non-DSP name), never the DSP host.
        assert_eq!(cache.resolve("b.example").await.unwrap(), addr(3));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.resolve("dsp.example").await.unwrap(), addr(1));
        assert_eq!(cache.resolve("b.example").await.unwrap(), addr(3));
        assert_eq!(cache.resolve("a.example").await.unwrap(), addr(4));
        assert_eq!(cache.len(), 2);
        assert_eq!(state.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn ip_literals_are_never_looked_up_nor_cached() {
        let registry = Registry::new().unwrap();
        let (state, lookup) = fake();
        let cache = DnsCache::with_lookup(&config(10), &registry, ["127.0.0.1", "[::1]"], lookup);
        cache.start().await;
        assert_eq!(
            cache.resolve("127.0.0.1").await.unwrap().to_vec(),
            vec![SocketAddr::from(([127, 0, 0, 1], 0))]
        );
        assert_eq!(
            cache.resolve("[::1]").await.unwrap().to_vec(),
            vec!["[::1]:0".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(state.calls.load(Ordering::SeqCst), 0);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn an_unknown_name_that_fails_is_an_error_and_not_cached() {
        let registry = Registry::new().unwrap();
        let (state, lookup) = fake();
        state.fail.store(true, Ordering::SeqCst);
        let cache = DnsCache::with_lookup(&config(10), &registry, [], lookup);
        assert!(cache.resolve("gone.example").await.is_err());
        assert!(cache.is_empty());
    }
}

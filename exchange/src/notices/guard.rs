//! The rule that keeps a DSP-supplied notice URL from turning the exchange against its own
//! network: only `http`/`https`, and no host that is, or resolves to, a loopback, private,
//! link-local or unspecified address, unless that host is a configured DSP's or allowed.
//!
//! A name is checked inside the notice client's resolver ([`GuardedDns`]), on the very
//! addresses the connection then uses: a name whose records change between a check and the
//! connect (DNS rebinding) has no second lookup to slip through.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::Authority;
use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;

use crate::dns::{Addrs, DnsCache};

/// Why a notice URL is not called.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("no host")]
    NoHost,
    #[error("host {host:?} is or resolves to {ip}, a loopback, private, link-local or unspecified address")]
    Address { host: String, ip: IpAddr },
}

/// Whether a notice may not reach this address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // ::ffff:127.0.0.1 reaches 127.0.0.1.
            Some(v4) => v4_forbidden(v4),
            None => v6_forbidden(v6),
        },
    }
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7, unique local (RFC 4193).
        || first & 0xfe00 == 0xfc00
        // fe80::/10, link-local.
        || first & 0xffc0 == 0xfe80
}

/// Checks a `[notices] allow_hosts` entry: a bare host as it appears in a URL, no scheme,
/// port or path.
pub fn check_allowed_host(host: &str) -> Result<(), &'static str> {
    match host.parse::<Authority>() {
        Ok(a) if a.port().is_none() && a.host() == host && !host.contains('@') => Ok(()),
        _ => Err(
            "must be a bare host name or address as written in a URL, without scheme, port or path",
        ),
    }
}

fn hosts<'h>(hosts: impl IntoIterator<Item = &'h str>) -> Box<[Box<str>]> {
    hosts.into_iter().map(Box::from).collect()
}

/// The hosts exempt from the address rule. The DSP hosts follow a config reload
/// ([`HostGuard::set_dsp_hosts`]); `allow_hosts` takes a restart.
pub struct HostGuard {
    dsp_hosts: arc_swap::ArcSwap<Box<[Box<str>]>>,
    allow_hosts: Box<[Box<str>]>,
}

impl HostGuard {
    /// `dsp_hosts`: the hosts of the configured DSP endpoints; `allow_hosts`: the config's
    /// `[notices] allow_hosts`.
    pub fn new<'h>(dsp_hosts: impl IntoIterator<Item = &'h str>, allow_hosts: &[String]) -> Self {
        Self {
            dsp_hosts: arc_swap::ArcSwap::from_pointee(hosts(dsp_hosts)),
            allow_hosts: allow_hosts.iter().map(|h| Box::from(h.as_str())).collect(),
        }
    }

    /// The DSP endpoints' hosts after a reload: notices of a DSP added by it are exempt too,
    /// and those of a removed one no longer are.
    pub fn set_dsp_hosts<'h>(&self, dsp_hosts: impl IntoIterator<Item = &'h str>) {
        self.dsp_hosts.store(std::sync::Arc::new(hosts(dsp_hosts)));
    }

    fn exempt(&self, host: &str) -> bool {
        // Host names are case-insensitive; an address is compared as written.
        let dsp_hosts = self.dsp_hosts.load();
        dsp_hosts
            .iter()
            .chain(self.allow_hosts.iter())
            .any(|a| a.eq_ignore_ascii_case(host))
    }

    /// Refuses a scheme other than http and https. Cheap: no IO.
    pub fn check_scheme(uri: &Uri) -> Result<(), Refusal> {
        match uri.scheme_str() {
            Some("http" | "https") => Ok(()),
            other => Err(Refusal::Scheme(other.unwrap_or_default().to_owned())),
        }
    }

    /// Refuses a URL without a host, or whose host is a forbidden address written as one,
    /// unless it is exempt. A name passes here: [`GuardedDns`] checks what it resolves to.
    pub fn check_host(&self, uri: &Uri) -> Result<(), Refusal> {
        let host = uri.host().ok_or(Refusal::NoHost)?;
        if self.exempt(host) {
            return Ok(());
        }
        match bare(host).parse::<IpAddr>() {
            Ok(ip) if is_forbidden(ip) => Err(Refusal::Address {
                host: host.to_owned(),
                ip,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses the addresses `host` resolved to if any of them is forbidden, unless `host`
    /// is exempt.
    pub fn check_addrs(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), Refusal> {
        if self.exempt(host) {
            return Ok(());
        }
        match addrs.into_iter().find(|ip| is_forbidden(*ip)) {
            Some(ip) => Err(Refusal::Address {
                host: host.to_owned(),
                ip,
            }),
            None => Ok(()),
        }
    }
}

fn bare(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The notice client's resolver: the node's name cache, with the address rule applied to
/// each answer before the connector sees it.
#[derive(Clone)]
pub struct GuardedDns {
    pub dns: DnsCache,
    pub guard: Arc<HostGuard>,
}

impl tower_service::Service<Name> for GuardedDns {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.dns.resolve(name.as_str()).await?;
            this.guard
                .check_addrs(name.as_str(), addrs.iter().map(|a| a.ip()))
                .map_err(io::Error::other)?;
            Ok(Addrs::new(addrs))
        })
    }
}

/// The address rule's refusal behind a failed request, if that is why it failed.
pub fn refusal_in<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refusal> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r);
        }
        // io::Error's `source` skips the error it wraps; `get_ref` reaches it.
        if let Some(r) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Refusal>())
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_rules() {
        let table = [
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("8.8.8.8", false),
            ("100.64.0.1", false),
            ("::1", true),
            ("::", true),
            ("fc00::1", true),
            ("fdff:ffff::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("2001:4860:4860::8888", false),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:8.8.8.8", false),
        ];
        for (ip, forbidden) in table {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(is_forbidden(parsed), forbidden, "{ip}");
        }
    }

    #[test]
    fn hosts_are_checked_as_written() {
        let guard = HostGuard::new(
            ["127.0.0.1"],
            &["internal.example".to_owned(), "[::1]".to_owned()],
        );
        let check = |url: &'static str| {
            let uri: Uri = url.parse().unwrap();
            HostGuard::check_scheme(&uri)?;
            guard.check_host(&uri)
        };
        assert_eq!(check("http://127.0.0.1:9/win"), Ok(()));
        assert_eq!(check("http://INTERNAL.example/x"), Ok(()));
        assert_eq!(check("http://[::1]:8/x"), Ok(()));
        assert_eq!(check("http://93.184.215.14/x"), Ok(()));
        // A name passes here; the notice client's resolver checks its addresses.
        assert_eq!(check("http://localhost:9/win"), Ok(()));
        for forbidden in [
            "http://127.0.0.2:9/win",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                matches!(check(forbidden), Err(Refusal::Address { .. })),
                "{forbidden}"
            );
        }
        assert_eq!(
            check("ftp://example.com/x"),
            Err(Refusal::Scheme("ftp".to_owned()))
        );
    }

    /// A name that resolves to a public address at first and to loopback afterwards (DNS
    /// rebinding), and one that always resolves to loopback but is allowed.
    fn rebinding_dns() -> DnsCache {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup: crate::dns::Lookup = Arc::new(move |name: String| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let ip: IpAddr = match (name.as_str(), n) {
                    ("rebind.example", 0) => "93.184.215.14".parse().unwrap(),
                    _ => "127.0.0.1".parse().unwrap(),
                };
                Ok(vec![std::net::SocketAddr::new(ip, 0)])
            })
        });
        let config = crate::config::DnsConfig {
            // Every call looks up again, as a short TTL would.
            refresh_ms: 0,
            ..crate::config::DnsConfig::default()
        };
        let registry = crate::metrics::Registry::new().unwrap();
        DnsCache::with_lookup(&config, &registry, [], lookup)
    }

    #[tokio::test]
    async fn the_resolver_checks_the_addresses_the_connection_uses() {
        use tower_service::Service;
        let guard = Arc::new(HostGuard::new([], &["allowed.example".to_owned()]));
        let mut dns = GuardedDns {
            dns: rebinding_dns(),
            guard,
        };
        let name = |n: &str| n.parse::<Name>().unwrap();
        // The first answer is public and passes.
        let first: Vec<_> = dns.call(name("rebind.example")).await.unwrap().collect();
        assert_eq!(first, ["93.184.215.14:0".parse().unwrap()]);
        // The next lookup rebinds to loopback: refused on the addresses themselves.
        let err = dns.call(name("rebind.example")).await.err().unwrap();
        assert_eq!(
            refusal_in(&err),
            Some(&Refusal::Address {
                host: "rebind.example".to_owned(),
                ip: "127.0.0.1".parse().unwrap(),
            })
        );
        // An allowed host may resolve to loopback.
        assert!(dns.call(name("allowed.example")).await.is_ok());
    }

    #[tokio::test]
    async fn a_notice_client_never_connects_to_a_name_resolving_to_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = crate::fanout::http_client_with(
            &crate::tls::client_config(&crate::config::TlsConfig::default()).unwrap(),
            crate::config::HttpVersion::Auto,
            GuardedDns {
                dns: rebinding_dns(),
                guard: Arc::new(HostGuard::new([], &[])),
            },
            std::time::Duration::from_secs(1),
        );
        let request = http::Request::get(format!("http://localhost:{port}/win"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let err = client.request(request).await.err().unwrap();
        assert!(
            matches!(refusal_in(&err), Some(Refusal::Address { host, .. }) if host == "localhost"),
            "{err:?}"
        );
        // The request is over, so a connection it made would be in the accept queue.
        let accepted = listener.accept().map_err(|e| e.kind());
        assert_eq!(accepted.err(), Some(std::io::ErrorKind::WouldBlock));
    }

    #[test]
    fn a_reload_moves_the_dsp_exemption_with_the_dsps() {
        let guard = HostGuard::new(["127.0.0.1"], &["[::1]".to_owned()]);
        let check = |url: &str| guard.check_host(&url.parse().unwrap()).is_ok();
        assert!(check("http://127.0.0.1:9/win"));
        assert!(!check("http://127.0.0.3:9/win"));
        // The DSP at 127.0.0.1 is replaced by one at 127.0.0.3.
        guard.set_dsp_hosts(["127.0.0.3"]);
        assert!(check("http://127.0.0.3:9/win"));
        assert!(!check("http://127.0.0.1:9/win"));
        // `allow_hosts` is not the DSPs' and stays.
        assert!(check("http://[::1]:9/win"));
    }
}

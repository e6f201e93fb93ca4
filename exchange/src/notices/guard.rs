//! The rule that keeps a DSP-supplied notice URL from turning the exchange against its own
//! network: only `http`/`https`, and no host that is, or resolves to, a loopback, private,
//! link-local or unspecified address, unless that host is a configured DSP's or allowed.
//!
//! Known limit: the HTTP client resolves the host again when it connects, so a name whose
//! records change between the two lookups (DNS rebinding) is not caught here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::uri::Authority;
use http::Uri;

/// Why a notice URL is not called.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("no host")]
    NoHost,
    #[error("host {host:?} is or resolves to {ip}, a loopback, private, link-local or unspecified address")]
    Address { host: String, ip: IpAddr },
    /// The name did not resolve in time or at all: not a refusal by the rule, but nothing
    /// can be called.
    #[error("host {0:?} did not resolve")]
    Unresolved(String),
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

/// The hosts exempt from the address rule, and how long a name may take to resolve. The DSP
/// hosts follow a config reload ([`HostGuard::set_dsp_hosts`]); `allow_hosts` takes a restart.
pub struct HostGuard {
    dsp_hosts: arc_swap::ArcSwap<Box<[Box<str>]>>,
    allow_hosts: Box<[Box<str>]>,
    resolve_timeout: Duration,
}

impl HostGuard {
    /// `dsp_hosts`: the hosts of the configured DSP endpoints; `allow_hosts`: the config's
    /// `[notices] allow_hosts`.
    pub fn new<'h>(
        dsp_hosts: impl IntoIterator<Item = &'h str>,
        allow_hosts: &[String],
        resolve_timeout: Duration,
    ) -> Self {
        Self {
            dsp_hosts: arc_swap::ArcSwap::from_pointee(hosts(dsp_hosts)),
            allow_hosts: allow_hosts.iter().map(|h| Box::from(h.as_str())).collect(),
            resolve_timeout,
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

    /// Refuses a host that is or resolves to a forbidden address, unless it is exempt. A name
    /// that resolves to several addresses is refused if any of them is forbidden. The lookup
    /// runs on tokio's blocking pool, never on a runtime worker, and within its own timeout.
    pub async fn check_host(&self, uri: &Uri) -> Result<(), Refusal> {
        let host = uri.host().ok_or(Refusal::NoHost)?;
        if self.exempt(host) {
            return Ok(());
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let refuse = |ip| Refusal::Address {
            host: host.to_owned(),
            ip,
        };
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if is_forbidden(ip) {
                Err(refuse(ip))
            } else {
                Ok(())
            };
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let unresolved = || Refusal::Unresolved(host.to_owned());
        let addrs =
            tokio::time::timeout(self.resolve_timeout, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| unresolved())?
                .map_err(|_| unresolved())?;
        let mut any = false;
        for addr in addrs {
            any = true;
            if is_forbidden(addr.ip()) {
                return Err(refuse(addr.ip()));
            }
        }
        if any {
            Ok(())
        } else {
            Err(unresolved())
        }
    }
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

    #[tokio::test]
    async fn hosts_are_checked_as_written_and_resolved() {
        let guard = HostGuard::new(
            ["127.0.0.1"],
            &["internal.example".to_owned(), "[::1]".to_owned()],
            Duration::from_secs(2),
        );
        let check = |url: &'static str| {
            let guard = &guard;
            async move {
                let uri: Uri = url.parse().unwrap();
                HostGuard::check_scheme(&uri)?;
                guard.check_host(&uri).await
            }
        };
        assert_eq!(check("http://127.0.0.1:9/win").await, Ok(()));
        assert_eq!(check("http://INTERNAL.example/x").await, Ok(()));
        assert_eq!(check("http://[::1]:8/x").await, Ok(()));
        assert_eq!(check("http://93.184.215.14/x").await, Ok(()));
        assert!(matches!(
            check("http://127.0.0.2:9/win").await,
            Err(Refusal::Address { .. })
        ));
        assert!(matches!(
            check("http://[::ffff:7f00:1]/").await,
            Err(Refusal::Address { .. })
        ));
        assert!(matches!(
            check("http://169.254.169.254/latest/meta-data").await,
            Err(Refusal::Address { .. })
        ));
        // A name is resolved: localhost is loopback whatever it resolves to first.
        assert!(matches!(
            check("http://localhost:9/win").await,
            Err(Refusal::Address { .. })
        ));
        assert_eq!(
            check("ftp://example.com/x").await,
            Err(Refusal::Scheme("ftp".to_owned()))
        );
    }

    #[tokio::test]
    async fn a_reload_moves_the_dsp_exemption_with_the_dsps() {
        let guard = HostGuard::new(["127.0.0.1"], &["[::1]".to_owned()], Duration::from_secs(2));
        let check = |url: &str| {
            let uri: Uri = url.parse().unwrap();
            let guard = &guard;
            async move { guard.check_host(&uri).await.is_ok() }
        };
        assert!(check("http://127.0.0.1:9/win").await);
        assert!(!check("http://127.0.0.3:9/win").await);
        // The DSP at 127.0.0.1 is replaced by one at 127.0.0.3.
        guard.set_dsp_hosts(["127.0.0.3"]);
        assert!(check("http://127.0.0.3:9/win").await);
        assert!(!check("http://127.0.0.1:9/win").await);
        // `allow_hosts` is not the DSPs' and stays.
        assert!(check("http://[::1]:9/win").await);
    }

    #[test]
    fn allow_hosts_entries_are_bare_hosts() {
        for ok in ["internal.example", "10.0.0.5", "[fd00::1]"] {
            assert_eq!(check_allowed_host(ok), Ok(()), "{ok}");
        }
        for bad in ["", "http://x", "x:80", "x/y", "u@x"] {
            assert!(check_allowed_host(bad).is_err(), "{bad:?}");
        }
    }
}

//! Where traffic goes: parsing `http://` URLs and the loopback guard every sender goes through.
//!
//! A load generator pointed at the wrong host is a denial-of-service tool, so the rule is
//! strict: a target must be a loopback IP literal or `localhost`, and must resolve to loopback
//! addresses only, unless the caller explicitly allows remote targets. Host names other than
//! `localhost` are refused without that permission because only resolving them (itself a
//! lookup sent elsewhere) could tell where they point.

use std::net::{IpAddr, SocketAddr};

use http::Uri;

use crate::Error;

/// A parsed `http://` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    url: String,
    uri: Uri,
    host: String,
    port: u16,
    allow_remote: bool,
}

impl Target {
    /// Parses `url` and applies the loopback rule: without `allow_remote`, a host that is not a
    /// loopback IP or `localhost` is refused with [`Error::RemoteTarget`].
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidTarget {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| Error::InvalidTarget {
            url: url.to_owned(),
            reason: format!("not a URL: {e}"),
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(invalid("only http:// is supported (no TLS)")),
            None => return Err(invalid("needs a scheme, e.g. http://127.0.0.1:8080/")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("has no host"))?;
        // `Uri::host` keeps the brackets of an IPv6 literal.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        if !allow_remote && !is_loopback_host(&host) {
            return Err(Error::RemoteTarget {
                url: url.to_owned(),
            });
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            url: url.to_owned(),
            uri,
            host,
            port,
            allow_remote,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The parsed URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The host, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when the URL has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value.
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map_or(self.host.as_str(), |a| a.as_str())
    }

    /// The path and query requests are sent to (`/` when the URL has none).
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// Resolves the host once, into every address it has, in the resolver's order. Without
    /// `allow_remote`, every one must be loopback (a `localhost` mapped elsewhere is refused).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?
            .collect();
        if !self.allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(Error::RemoteTarget {
                url: self.url.clone(),
            });
        }
        if addrs.is_empty() {
            return Err(Error::Connect {
                url: self.url.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            });
        }
        Ok(addrs)
    }
}

/// True for `localhost` (and `*.localhost`, which RFC 6761 reserves for loopback) and loopback
/// IP literals (127.0.0.0/8, ::1, and IPv4-mapped loopback).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost")
        || host
            .rsplit_once('.')
            .is_some_and(|(_, tld)| tld.eq_ignore_ascii_case("localhost"))
    {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "localhost",
            "LOCALHOST.",
            "api.localhost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "192.168.1.1",
            "example.com",
            "localhost.example.com",
            "notlocalhost",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn parses_parts_of_a_loopback_url() {
        let t = Target::parse("http://127.0.0.1:8080/openrtb2/auction?x=1", false).unwrap();
        assert_eq!(t.host(), "127.0.0.1");
        assert_eq!(t.port(), 8080);
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(t.path_and_query(), "/openrtb2/auction?x=1");
        let t = Target::parse("http://[::1]/", false).unwrap();
        assert_eq!(t.host(), "::1");
        assert_eq!(t.port(), 80);
        assert_eq!(t.path_and_query(), "/");
    }

    #[test]
    fn remote_targets_need_permission() {
        for url in [
            "http://10.1.2.3:80/",
            "http://example.com/x",
            "http://0.0.0.0:8080/",
        ] {
            assert!(
                matches!(Target::parse(url, false), Err(Error::RemoteTarget { .. })),
                "{url}"
            );
            assert!(Target::parse(url, true).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_only() {
        let t = Target::parse("http://localhost:9/", false).unwrap();
        let addrs = t.resolve().await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in [
            "https://127.0.0.1/",
            "127.0.0.1:8080",
            "http:///x",
            "not a url",
        ] {
            assert!(
                matches!(Target::parse(url, true), Err(Error::InvalidTarget { .. })),
                "{url}"
            );
        }
    }
}

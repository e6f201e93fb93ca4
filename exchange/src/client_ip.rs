//! Who the client of a tracking hit is: the socket's peer, or, when the peer is a trusted
//! proxy (`server.trusted_proxies`), the right-most `X-Forwarded-For` address that is not
//! itself a trusted proxy. A header from any other peer is ignored, since anyone can send one.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::screen::{canonical, IpSet};

/// The trusted proxies of one config.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(IpSet);

impl TrustedProxies {
    /// Addresses or CIDR ranges; every bad entry is reported.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut set = IpSet::default();
        let errors: Vec<String> = entries
            .iter()
            .filter_map(|e| {
                set.insert_str(e.trim())
                    .err()
                    .map(|p| format!("server.trusted_proxies: {p}"))
            })
            .collect();
        if errors.is_empty() {
            Ok(TrustedProxies(set))
        } else {
            Err(errors)
        }
    }

    /// The client behind a request from `peer` with these headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.0.is_empty() || !self.0.contains(peer) {
            return peer;
        }
        // Each proxy appends the address it saw, so reading from the right, every trusted hop
        // vouches for the next one to its left; the first one not trusted is the client.
        // Several headers read as one list, in order.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev().flat_map(|v| v.rsplit(',')) {
            // A hop a trusted proxy wrote but nobody can read: the proxy itself is the best
            // answer, not a guess further left.
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.0.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn client(p: &TrustedProxies, peer: &str, xff: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        p.client_ip(peer.parse().unwrap(), &headers).to_string()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::1"]);
        assert_eq!(client(&p, "198.51.100.1", &["203.0.113.5"]), "198.51.100.1");
        assert_eq!(client(&p, "10.1.1.1", &["203.0.113.5"]), "203.0.113.5");
        assert_eq!(
            client(&p, "::ffff:10.1.1.1", &["203.0.113.5"]),
            "203.0.113.5"
        );
        assert_eq!(
            client(&p, "2001:db8::1", &["[2001:db8::9]:443"]),
            "2001:db8::9"
        );
        assert_eq!(
            client(&proxies(&[]), "10.1.1.1", &["203.0.113.5"]),
            "10.1.1.1"
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client_and_spoofed_hops_are_skipped() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client claimed 1.1.1.1; the proxies saw 203.0.113.5, then 10.2.2.2.
        assert_eq!(
            client(&p, "10.1.1.1", &["1.1.1.1, 203.0.113.5", "10.2.2.2"]),
            "203.0.113.5"
        );
        assert_eq!(client(&p, "10.1.1.1", &["10.3.3.3, 10.2.2.2"]), "10.3.3.3");
        assert_eq!(client(&p, "10.1.1.1", &[]), "10.1.1.1");
        assert_eq!(
            client(&p, "10.1.1.1", &["203.0.113.5, garbage"]),
            "10.1.1.1"
        );
        assert_eq!(
            client(&p, "10.1.1.1", &["garbage, 203.0.113.5:80"]),
            "203.0.113.5"
        );
    }

    #[test]
    fn bad_entries_are_all_reported() {
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy".into(), "1.2.3.4/40".into()])
            .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("server.trusted_proxies: \"proxy\""),
            "{e:?}"
        );
    }
}

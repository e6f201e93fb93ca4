//! A mock's validated configuration, as the server reads it on every request.

use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::config::{Behavior, Latency, Price};

/// The notice URLs a mock puts in its bids, pointing back at its own endpoints. The `${...}`
/// macros are left for the exchange to substitute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NoticeUrls {
    pub(crate) nurl: String,
    pub(crate) burl: String,
    pub(crate) lurl: String,
}

impl NoticeUrls {
    pub(crate) fn for_base(base: &str) -> Self {
        const COMMON: &str = "price=${AUCTION_PRICE}&imp=${AUCTION_IMP_ID}&auction=${AUCTION_ID}\
                              &bid=${AUCTION_BID_ID}&seat=${AUCTION_SEAT_ID}";
        Self {
            nurl: format!("{base}/nurl?{COMMON}"),
            burl: format!("{base}/burl?{COMMON}"),
            lurl: format!(
                "{base}/lurl?{COMMON}&loss=${{AUCTION_LOSS}}&mtw=${{AUCTION_MIN_TO_WIN}}"
            ),
        }
    }
}

/// Everything a running mock needs to answer, fixed at start but for the behaviour, which
/// the handle can switch (`MockDspHandle::set_behavior`).
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) behavior: RwLock<Behavior>,
    pub(crate) price: Price,
    pub(crate) bid_probability: f64,
    pub(crate) latency: Latency,
    pub(crate) seat: String,
    pub(crate) cids: Vec<String>,
    pub(crate) adomains: Vec<String>,
    pub(crate) crid: String,
    pub(crate) deal: Option<String>,
    pub(crate) deals_from_request: bool,
    pub(crate) adm: String,
    pub(crate) currency: Option<String>,
    pub(crate) notice_urls: Option<NoticeUrls>,
    pub(crate) trickle_every: Duration,
    pub(crate) max_body_bytes: usize,
}

impl Settings {
    /// The behaviour in force now (a clone: `Custom` is an `Arc`).
    pub(crate) fn behavior(&self) -> Behavior {
        // Only ever replaced whole, so a poisoned lock still holds a valid value.
        self.behavior
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_behavior(&self, behavior: Behavior) {
        *self
            .behavior
            .write()
            .unwrap_or_else(PoisonError::into_inner) = behavior;
    }
}

/// A `Behavior::Status` code must be a real status between 200 and 599.
pub(crate) fn check_behavior(behavior: &Behavior) -> Result<(), String> {
    if let Behavior::Status(code) = *behavior {
        if !(200..=599).contains(&code) || http::StatusCode::from_u16(code).is_err() {
            return Err(format!("status must be in 200..=599, got {code}"));
        }
    }
    Ok(())
}

/// `http://ip:port` for a bound address; an unspecified bind address (0.0.0.0, ::) is reached
/// through loopback, which is what a URL handed to a client needs.
/// The scheme is `https` for a mock served over TLS.
pub(crate) fn base_url_with(addr: SocketAddr, scheme: &str) -> String {
    let ip = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        other => other.ip(),
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_urls_carry_every_macro() {
        let n = NoticeUrls::for_base("http://127.0.0.1:9");
        assert_eq!(
            n.nurl,
            "http://127.0.0.1:9/nurl?price=${AUCTION_PRICE}&imp=${AUCTION_IMP_ID}\
             &auction=${AUCTION_ID}&bid=${AUCTION_BID_ID}&seat=${AUCTION_SEAT_ID}"
        );
        assert!(n
            .burl
            .starts_with("http://127.0.0.1:9/burl?price=${AUCTION_PRICE}&"));
        assert!(n
            .lurl
            .ends_with("&seat=${AUCTION_SEAT_ID}&loss=${AUCTION_LOSS}&mtw=${AUCTION_MIN_TO_WIN}"));
    }

    #[test]
    fn unspecified_addresses_become_loopback() {
        assert_eq!(
            base_url_with("0.0.0.0:80".parse().unwrap(), "http"),
            "http://127.0.0.1:80"
        );
        assert_eq!(
            base_url_with("[::]:81".parse().unwrap(), "http"),
            "http://[::1]:81"
        );
        assert_eq!(
            base_url_with("127.0.0.2:82".parse().unwrap(), "http"),
            "http://127.0.0.2:82"
        );
    }
}

//! Publisher accounts: the `[[publisher]]` table each auction finds its publisher in, the
//! bearer-token check of `POST /openrtb2/auction`, and the exchange's `GET /sellers.json`.
//! Built from the config and swapped with it on reload (`crate::reload::Live`).

use std::collections::HashMap;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use metrics::Counter;
use openrtb::request::BidRequest;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::config::{Config, SellerType, SellersIdentifier, UnknownPublisher};
use crate::metrics::Registry;
use crate::server::{error, Body};

/// One configured publisher, as the auction sees it.
pub struct Publisher {
    /// Its id in requests, and its `seller_id` in sellers.json.
    pub id: Box<str>,
    pub name: Box<str>,
    pub domain: Box<str>,
    /// The exchange's take of this publisher's sales, 0 to 1 (validated); `None`: the
    /// auction's default margin.
    pub margin: Option<money::Margin>,
    pub seller_type: SellerType,
    pub is_confidential: bool,
    /// The bearer token a request claiming this publisher must carry.
    token: Option<Box<[u8]>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("Publisher")
            .field("id", &self.id)
            .field("margin", &self.margin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Every configured publisher by id, the unknown-publisher policy, and the sellers.json body,
/// written once per config.
pub struct Publishers {
    by_id: HashMap<Box<str>, Publisher>,
    unknown: UnknownPublisher,
    sellers_json: Bytes,
}

/// Why a request was refused before its auction ran, as counted in
/// `exchange_auth_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The publisher has a token and the request carried no `Authorization: Bearer` (401).
    Missing,
    /// It carried another token (403).
    Wrong,
    /// `[auction] unknown_publisher = "reject"` and the publisher id is no configured one,
    /// or the request has none (403).
    UnknownPublisher,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Self::Missing, Self::Wrong, Self::UnknownPublisher];

    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Wrong => "wrong",
            Self::UnknownPublisher => "unknown_publisher",
        }
    }
}

/// A refused request: why, and the publisher id it claimed in which field.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused<'r> {
    pub reason: Refusal,
    /// `site.publisher.id`, `app.publisher.id` or `dooh.publisher.id`.
    pub field: &'static str,
    /// The id claimed; empty when the request has none.
    pub id: &'r str,
}

impl Refused<'_> {
    /// 401 or 403 `{"error", "field"}`; a 401 also says `WWW-Authenticate: Bearer`.
    pub fn response(&self) -> Response<Body> {
        let id = self.id;
        match self.reason {
            Refusal::Missing => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    &format!("publisher {id:?} needs an Authorization: Bearer token"),
                    self.field,
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Refusal::Wrong => error(
                StatusCode::FORBIDDEN,
                &format!("the bearer token is not publisher {id:?}'s"),
                self.field,
            ),
            Refusal::UnknownPublisher if id.is_empty() => error(
                StatusCode::FORBIDDEN,
                "the request names no publisher and this exchange takes only known ones",
                self.field,
            ),
            Refusal::UnknownPublisher => error(
                StatusCode::FORBIDDEN,
                &format!("publisher {id:?} is not known to this exchange"),
                self.field,
            ),
        }
    }
}

impl Publishers {
    /// From a validated config: ids are unique there.
    pub fn from_config(config: &Config) -> Publishers {
        let by_id = config
            .publishers
            .iter()
            .map(|p| {
                let publisher = Publisher {
                    id: p.id.as_str().into(),
                    name: p.name.as_str().into(),
                    domain: p.domain.as_str().into(),
                    // Validated 0..=1 at load, so the conversion cannot fail here.
                    margin: p.margin.and_then(money::Margin::from_fraction),
                    seller_type: p.seller_type,
                    is_confidential: p.is_confidential,
                    token: p.token.as_ref().map(|t| t.as_bytes().into()),
                };
                (publisher.id.clone(), publisher)
            })
            .collect();
        Publishers {
            by_id,
            unknown: config.auction.unknown_publisher,
            sellers_json: Bytes::from(sellers_json(config)),
        }
    }

    /// The publisher of this id, without allocating.
    pub fn get(&self, id: &str) -> Option<&Publisher> {
        self.by_id.get(id)
    }

    /// The publisher `req` claims, once its token (if it has one) is the one `authorization`
    /// carries; `None` for a publisher that is not configured, when the policy allows those.
    /// Tokens are compared in constant time (their length is not the secret).
    pub fn admit<'s, 'r>(
        &'s self,
        req: &'r BidRequest<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Option<&'s Publisher>, Refused<'r>> {
        let (field, id) = claimed(req);
        let refused = |reason| Refused { reason, field, id };
        let Some(publisher) = self.get(id) else {
            return match self.unknown {
                UnknownPublisher::Allow => Ok(None),
                UnknownPublisher::Reject => Err(refused(Refusal::UnknownPublisher)),
            };
        };
        let Some(token) = &publisher.token else {
            return Ok(Some(publisher));
        };
        match authorization.and_then(bearer) {
            None => Err(refused(Refusal::Missing)),
            Some(sent) if bool::from(sent.ct_eq(token)) => Ok(Some(publisher)),
            Some(_) => Err(refused(Refusal::Wrong)),
        }
    }

    /// `GET /sellers.json`: 200 with the body written when this config was loaded.
    pub fn sellers_json(&self) -> Response<Body> {
        let mut r = Response::new(Full::new(self.sellers_json.clone()));
        let headers = r.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Without a directive buyers may keep it 7 days (the spec's default), too long after
        // a reload changed it.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        r
    }
}

/// The field a request's publisher id is in and the id (empty when absent): the object of
/// `site`, `app` or `dooh` it has (validation allows one at most).
pub(crate) fn claimed<'r>(req: &'r BidRequest<'_>) -> (&'static str, &'r str) {
    let (field, publisher) = if let Some(site) = &req.site {
        ("site.publisher.id", site.publisher.as_ref())
    } else if let Some(app) = &req.app {
        ("app.publisher.id", app.publisher.as_ref())
    } else if let Some(dooh) = &req.dooh {
        ("dooh.publisher.id", dooh.publisher.as_ref())
    } else {
        ("site.publisher.id", None)
    };
    let id = publisher.and_then(|p| p.id.as_deref()).unwrap_or_default();
    (field, id)
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case, RFC 7235);
/// `None` for another scheme or no token.
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// `exchange_auth_refused_total{reason}`, registered at start so every reason shows from 0.
pub struct AuthMetrics {
    refused: [Counter; 3],
}

impl AuthMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            refused: Refusal::ALL
                .map(|r| registry.counter("exchange_auth_refused_total", &[("reason", r.label())])),
        }
    }

    pub fn refused(&self, reason: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == reason) {
            self.refused[i].increment(1);
        }
    }
}

/// IAB sellers.json 1.0: the exchange's contact fields and one seller per publisher, in
/// config order. A confidential seller has no `name` or `domain`, as the spec asks.
fn sellers_json(config: &Config) -> Vec<u8> {
    #[derive(Serialize)]
    struct Doc<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        contact_email: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        contact_address: Option<&'a str>,
        version: &'static str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        identifiers: &'a [SellersIdentifier],
        sellers: Vec<Seller<'a>>,
    }
    #[derive(Serialize)]
    struct Seller<'a> {
        seller_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<&'a str>,
        seller_type: &'static str,
        /// The spec's integer flag: 1 confidential, 0 not.
        is_confidential: u8,
    }
    let s = &config.sellers;
    let doc = Doc {
        contact_email: s.contact_email.as_deref(),
        contact_address: s.contact_address.as_deref(),
        version: "1.0",
        identifiers: &s.identifiers,
        sellers: config
            .publishers
            .iter()
            .map(|p| Seller {
                seller_id: &p.id,
                name: shown(p.is_confidential, &p.name),
                domain: shown(p.is_confidential, &p.domain),
                seller_type: p.seller_type.as_str(),
                is_confidential: u8::from(p.is_confidential),
            })
            .collect(),
    };
    fn shown(confidential: bool, v: &str) -> Option<&str> {
        (!confidential && !v.is_empty()).then_some(v)
    }
    // Only a map with non-string keys fails to serialize, and there is none here.
    serde_json::to_vec(&doc).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_header_with_a_token_counts() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("Bearer tok", Some(b"tok")),
            ("bearer   tok ", Some(b"tok")),
            ("BEARER tok", Some(b"tok")),
            ("Bearer ", None),
            ("Bearer", None),
            ("Basic dXNlcjpwYXNz", None),
            ("tok", None),
        ];
        for (header, want) in cases {
            let value = HeaderValue::from_str(header).unwrap();
            assert_eq!(bearer(&value), *want, "{header:?}");
        }
    }
}

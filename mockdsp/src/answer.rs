//! Turns one bid request into the answer the configured behaviour calls for.
//!
//! Everything here is synchronous and borrows the thread's RNG only for the duration of a call,
//! so the server never holds it across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::StatusCode;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use crate::config::Behavior;
use crate::record::Counters;
use crate::settings::Settings;

/// The bytes a `Garbage` mock sends: starts like JSON, then is not.
const GARBAGE: &[u8] = b"{\"id\": \xff\xfe<html>502 Bad Gateway</html>";

/// What to send back for one `/bid` request.
pub(crate) enum Answer {
    /// A complete response.
    Full {
        status: StatusCode,
        content_type: Option<&'static str>,
        body: Bytes,
    },
    /// A 200 JSON response whose body goes out one byte at a time.
    Trickle(Bytes),
    /// No answer until shutdown.
    Hang,
}

impl Answer {
    fn json(status: StatusCode, body: Vec<u8>) -> Self {
        Self::Full {
            status,
            content_type: Some("application/json"),
            body: Bytes::from(body),
        }
    }

    fn text(status: StatusCode, body: String) -> Self {
        // Statuses that forbid a body get none, whatever the caller asked for.
        let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Bytes::new()
        } else {
            Bytes::from(body)
        };
        Self::Full {
            status,
            content_type: Some("text/plain"),
            body,
        }
    }

    pub(crate) fn no_content() -> Self {
        Self::Full {
            status: StatusCode::NO_CONTENT,
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub(crate) fn bad_request(status: StatusCode, reason: &str) -> Self {
        Self::text(status, format!("mock dsp: {reason}"))
    }
}

#[derive(Serialize)]
struct BidResponse<'a> {
    id: &'a str,
    seatbid: [SeatBid<'a>; 1],
    cur: &'a str,
}

#[derive(Serialize)]
struct SeatBid<'a> {
    seat: &'a str,
    bid: Vec<Bid<'a>>,
}

#[derive(Serialize)]
struct Bid<'a> {
    id: String,
    impid: &'a str,
    price: f64,
    adm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    adomain: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<&'a str>,
    crid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dealid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nurl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    burl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lurl: Option<&'a str>,
}

/// Builds the answer to `body` and counts what it sends. `bid_seq` numbers bid ids.
pub(crate) fn answer<R: Rng + ?Sized>(
    settings: &Settings,
    counters: &Counters,
    bid_seq: &AtomicU64,
    body: &[u8],
    rng: &mut R,
) -> Answer {
    let request: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(tmax) = request.as_ref().and_then(|r| r.get("tmax")?.as_u64()) {
        counters
            .last_tmax_plus_one
            .store(tmax.saturating_add(1), Ordering::Relaxed);
    }
    let request_id = request
        .as_ref()
        .and_then(|r| r.get("id")?.as_str())
        .unwrap_or("");

    let behavior = settings.behavior();
    match &behavior {
        Behavior::NoBid204 => {
            Counters::bump(&counters.no_bids, 1);
            Answer::no_content()
        }
        Behavior::EmptyObject => {
            Counters::bump(&counters.no_bids, 1);
            Answer::json(StatusCode::OK, b"{}".to_vec())
        }
        Behavior::Nbr(code) => {
            Counters::bump(&counters.no_bids, 1);
            let body = serde_json::json!({ "id": request_id, "nbr": code });
            Answer::json(StatusCode::OK, body.to_string().into_bytes())
        }
        Behavior::Status(code) => {
            // Validated when the mock was built; 500 keeps the "broken DSP" meaning regardless.
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Answer::text(status, format!("mock dsp: status {code}"))
        }
        Behavior::Garbage => Answer::Full {
            status: StatusCode::OK,
            content_type: Some("application/json"),
            body: Bytes::from_static(GARBAGE),
        },
        Behavior::Hang => Answer::Hang,
        Behavior::Custom(f) => {
            let (code, body) = f(request.as_ref().unwrap_or(&Value::Null));
            match StatusCode::from_u16(code) {
                Ok(status) => Answer::json(status, body),
                Err(_) => Answer::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("mock dsp: custom handler returned invalid status {code}"),
                ),
            }
        }
        Behavior::Bid | Behavior::WrongId | Behavior::Trickle => {
            let Some(request) = request.as_ref().filter(|r| r.is_object()) else {
                Counters::bump(&counters.bad_requests, 1);
                return Answer::bad_request(
                    StatusCode::BAD_REQUEST,
                    "request is not a JSON object",
                );
            };
            let always = !matches!(behavior, Behavior::Bid);
            let bids = make_bids(settings, request, bid_seq, always, rng);
            if bids.is_empty() {
                Counters::bump(&counters.no_bids, 1);
                return Answer::no_content();
            }
            Counters::bump(&counters.bids_sent, bids.len() as u64);
            let wrong_id;
            let id = if matches!(behavior, Behavior::WrongId) {
                wrong_id = format!("{request_id}-not-this-one");
                wrong_id.as_str()
            } else {
                request_id
            };
            let currency = settings
                .currency
                .as_deref()
                .or_else(|| request.get("cur")?.get(0)?.as_str())
                .unwrap_or("USD");
            let response = BidResponse {
                id,
                seatbid: [SeatBid {
                    seat: &settings.seat,
                    bid: bids,
                }],
                cur: currency,
            };
            // Serializing plain structs of strings and finite numbers into a Vec cannot fail;
            // an empty body would still be a counted, visible failure on the exchange side.
            let body = serde_json::to_vec(&response).unwrap_or_default();
            if matches!(behavior, Behavior::Trickle) {
                Answer::Trickle(Bytes::from(body))
            } else {
                Answer::json(StatusCode::OK, body)
            }
        }
    }
}

fn make_bids<'a, R: Rng + ?Sized>(
    settings: &'a Settings,
    request: &'a Value,
    bid_seq: &AtomicU64,
    always: bool,
    rng: &mut R,
) -> Vec<Bid<'a>> {
    let Some(imps) = request.get("imp").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut bids = Vec::with_capacity(imps.len());
    for imp in imps {
        let Some(impid) = imp.get("id").and_then(Value::as_str) else {
            continue;
        };
        // bid_probability was validated into [0, 1], the only range random_bool accepts.
        if !always && !rng.random_bool(settings.bid_probability) {
            continue;
        }
        let (w, h) = banner_size(imp);
        let n = bid_seq.fetch_add(1, Ordering::Relaxed);
        let notices = settings.notice_urls.as_ref();
        bids.push(Bid {
            id: format!("{}-{n}", settings.name),
            impid,
            price: settings.price.sample(rng),
            adm: &settings.adm,
            adomain: settings.adomains.choose(rng).map(|d| [d.as_str()]),
            cid: settings.cids.choose(rng).map(String::as_str),
            crid: &settings.crid,
            w,
            h,
            dealid: deal_for(settings, imp),
            nurl: notices.map(|n| n.nurl.as_str()),
            burl: notices.map(|n| n.burl.as_str()),
            lurl: notices.map(|n| n.lurl.as_str()),
        });
    }
    bids
}

/// `banner.w/h`, else the first `banner.format` entry.
fn banner_size(imp: &Value) -> (Option<u64>, Option<u64>) {
    let Some(banner) = imp.get("banner") else {
        return (None, None);
    };
    let w = banner.get("w").and_then(Value::as_u64);
    let h = banner.get("h").and_then(Value::as_u64);
    if w.is_some() && h.is_some() {
        return (w, h);
    }
    let first = banner.get("format").and_then(|f| f.get(0));
    let fw = first.and_then(|f| f.get("w")?.as_u64());
    let fh = first.and_then(|f| f.get("h")?.as_u64());
    (w.or(fw), h.or(fh))
}

/// The configured deal, else (when asked to) the first deal of the imp this seat may bid in.
fn deal_for<'a>(settings: &'a Settings, imp: &'a Value) -> Option<&'a str> {
    if let Some(deal) = &settings.deal {
        return Some(deal);
    }
    if !settings.deals_from_request {
        return None;
    }
    let deals = imp.get("pmp")?.get("deals")?.as_array()?;
    deals.iter().find_map(|d| {
        let allowed = match d.get("wseat").and_then(Value::as_array) {
            Some(seats) if !seats.is_empty() => {
                seats.iter().any(|s| s.as_str() == Some(&settings.seat))
            }
            _ => true,
        };
        allowed.then(|| d.get("id")?.as_str()).flatten()
    })
}

//! The tracking side of the server: `GET /event/imp` and `GET /event/click`, the markup and
//! `burl` of winning bids, and the non-billing events (wins, losses, late answers).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use impressions::{AdFormat, BidRef, Event, Tracker};
use money::CpmMicros;
use openrtb::request::BidRequest;

use crate::metrics::Registry;
use crate::pipeline::Offer;
use crate::reload::Live;

use crate::server::{error, Body};

/// Win, loss and late-answer events go to the event log without waiting: they inform
/// analysis, so past `events.max_pending` queued they are dropped and counted rather than
/// slowing auctions down or taking the room billing events need. Billing events never pass
/// through here; they are written before the tracking endpoint answers.
pub(crate) struct EventSink {
    tracker: Tracker,
    max_pending: usize,
    dropped: metrics::Counter,
}

impl EventSink {
    pub fn new(tracker: Tracker, max_pending: usize, dropped: metrics::Counter) -> Self {
        Self {
            tracker,
            max_pending,
            dropped,
        }
    }

    pub fn emit(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            if self
                .tracker
                .try_record_event(event, self.max_pending)
                .is_err()
            {
                self.dropped.increment(1);
            }
        }
    }
}

/// Milliseconds since the Unix epoch: auction times travel in tracking URLs and events, which
/// other nodes read, so they are wall-clock times.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The markup format of a winning bid: its `mtype` when it says, else the imp's only media
/// type, else banner (HTML), the format that tolerates an added pixel best.
pub(crate) fn ad_format(mtype: Option<u32>, imp: &openrtb::request::Imp<'_>) -> AdFormat {
    match mtype {
        Some(1) => return AdFormat::Banner,
        Some(2) => return AdFormat::Video,
        Some(3) => return AdFormat::Audio,
        Some(4) => return AdFormat::Native,
        _ => {}
    }
    match (
        imp.banner.is_some(),
        imp.video.is_some(),
        imp.audio.is_some(),
        imp.native.is_some(),
    ) {
        (false, true, false, false) => AdFormat::Video,
        (false, false, true, false) => AdFormat::Audio,
        (false, false, false, true) => AdFormat::Native,
        _ => AdFormat::Banner,
    }
}

/// The media type a winning bid is billed and reported under: its `mtype` when it says, else
/// its imp's only format. A multi-format imp won by a bid without `mtype` has none: unlike
/// [`ad_format`], which must pick a markup format to decorate, a report is not given a guess.
pub(crate) fn media_type(mtype: Option<u32>, imp: &openrtb::request::Imp<'_>) -> Option<AdFormat> {
    if let Some(format) = mtype.and_then(|m| AdFormat::from_mtype(u64::from(m))) {
        return Some(format);
    }
    match (
        imp.banner.is_some(),
        imp.video.is_some(),
        imp.audio.is_some(),
        imp.native.is_some(),
    ) {
        (true, false, false, false) => Some(AdFormat::Banner),
        (false, true, false, false) => Some(AdFormat::Video),
        (false, false, true, false) => Some(AdFormat::Audio),
        (false, false, false, true) => Some(AdFormat::Native),
        _ => None,
    }
}

/// Whether a tracking hit is invalid traffic: its client (the peer, or what a trusted proxy
/// reports) is on the IP blocklist, or its `User-Agent` is a known bot.
pub(crate) fn invalid_hit(
    live: &Live,
    peer: IpAddr,
    req: &Request<Incoming>,
) -> Option<crate::screen::Reason> {
    let client = live.trusted.client_ip(peer, req.headers());
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    live.screen.invalid_hit(client, ua)
}

/// An invalid hit: logged as `invalid_impression` / `invalid_click`, never billed, its `burl`
/// never fired, and the impression id left unclaimed for a valid hit.
async fn record_invalid(
    tracker: &Tracker,
    counts: &TrackingMetrics,
    query: &str,
    kind: Kind,
    reason: crate::screen::Reason,
) -> Result<impressions::InvalidHit, impressions::Error> {
    let tracked = match kind {
        Kind::Impression => impressions::Kind::Impression,
        Kind::Click => impressions::Kind::Click,
    };
    let hit = tracker.record_invalid(query, tracked, reason.label()).await;
    match &hit {
        Ok(_) => counts.invalid(kind),
        Err(e) => counts.count(kind, Err(e)),
    }
    hit
}

/// `GET /event/imp?...`: 204 whether the impression was billed now, was a duplicate, was
/// spooled for later, was invalid traffic, or belongs to a test auction (both logged, never
/// billed); 403 for a URL that is not ours, tampered or expired.
pub(crate) async fn impression(
    tracker: &Tracker,
    counts: &TrackingMetrics,
    req: &Request<Incoming>,
    invalid: Option<crate::screen::Reason>,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    if let Some(reason) = invalid {
        return match record_invalid(tracker, counts, query, Kind::Impression, reason).await {
            Ok(_) => {
                let mut r = Response::new(Body::default());
                *r.status_mut() = StatusCode::NO_CONTENT;
                no_store(r)
            }
            Err(e) => refusal(&e),
        };
    }
    let outcome = tracker.record_impression(query).await;
    counts.count(Kind::Impression, outcome.as_ref());
    match outcome {
        Ok(_) => {
            let mut r = Response::new(Body::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            no_store(r)
        }
        Err(e) => refusal(&e),
    }
}

/// `GET /event/click?...`: 302 to the landing URL the signature covers, never to one the
/// caller chose.
pub(crate) async fn click(
    tracker: &Tracker,
    counts: &TrackingMetrics,
    req: &Request<Incoming>,
    invalid: Option<crate::screen::Reason>,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let landing = match invalid {
        Some(reason) => record_invalid(tracker, counts, query, Kind::Click, reason)
            .await
            .map(|hit| hit.landing.unwrap_or_default()),
        None => {
            let outcome = tracker.record_click(query).await;
            counts.count(Kind::Click, outcome.as_ref().map(|c| &c.outcome));
            outcome.map(|c| c.landing)
        }
    };
    match landing {
        Ok(landing) => match HeaderValue::from_str(&landing) {
            Ok(location) => {
                let mut r = Response::new(Body::default());
                *r.status_mut() = StatusCode::FOUND;
                r.headers_mut().insert(header::LOCATION, location);
                no_store(r)
            }
            Err(_) => error(
                StatusCode::FORBIDDEN,
                "the landing URL is not a valid header",
                "",
            ),
        },
        Err(e) => refusal(&e),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Impression,
    Click,
}

/// What became of one tracking hit, as `exchange_tracking_events_total{result}` counts it.
#[derive(Clone, Copy)]
enum HitResult {
    Billed,
    Duplicate,
    Spooled,
    Rejected,
    Error,
    /// A test auction's URL: answered and logged, never billed.
    Test,
    /// A blocklisted client IP or a bot: answered and logged, never billed.
    Invalid,
}

impl HitResult {
    const ALL: [HitResult; 7] = [
        Self::Billed,
        Self::Duplicate,
        Self::Spooled,
        Self::Rejected,
        Self::Error,
        Self::Test,
        Self::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Billed => "billed",
            Self::Duplicate => "duplicate",
            Self::Spooled => "spooled",
            Self::Rejected => "rejected",
            Self::Error => "error",
            Self::Test => "test",
            Self::Invalid => "invalid",
        }
    }
}

/// `exchange_tracking_events_total{kind, result}`, registered up front.
pub(crate) struct TrackingMetrics {
    /// Impressions then clicks, each in the order of [`HitResult::ALL`].
    counters: Vec<metrics::Counter>,
}

impl TrackingMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counters = ["imp", "click"]
            .iter()
            .flat_map(|kind| {
                HitResult::ALL.iter().map(move |result| {
                    registry.counter(
                        "exchange_tracking_events_total",
                        &[("kind", kind), ("result", result.label())],
                    )
                })
            })
            .collect();
        Self { counters }
    }

    /// A hit from a blocklisted IP or a bot, logged and not billed.
    fn invalid(&self, kind: Kind) {
        self.increment(kind, HitResult::Invalid);
    }

    fn increment(&self, kind: Kind, result: HitResult) {
        let row = match kind {
            Kind::Impression => 0,
            Kind::Click => HitResult::ALL.len(),
        };
        if let Some(counter) = self.counters.get(row + result as usize) {
            counter.increment(1);
        }
    }

    fn count(&self, kind: Kind, outcome: Result<&impressions::Outcome, &impressions::Error>) {
        let result = match outcome {
            Ok(impressions::Outcome::Billed(_)) => HitResult::Billed,
            Ok(impressions::Outcome::Duplicate) => HitResult::Duplicate,
            Ok(impressions::Outcome::Spooled) => HitResult::Spooled,
            Err(impressions::Error::Rejected(_)) => HitResult::Rejected,
            Err(_) => HitResult::Error,
            Ok(impressions::Outcome::Test(_)) => HitResult::Test,
        };
        self.increment(kind, result);
    }
}

fn refusal(e: &impressions::Error) -> Response<Body> {
    match e {
        impressions::Error::Rejected(why) => error(
            StatusCode::FORBIDDEN,
            &format!("tracking URL refused: {why}"),
            "",
        ),
        other => {
            tracing::warn!(error = %other, "tracking event could not be recorded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be recorded; retry",
                "",
            )
        }
    }
}

fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What the tracker needs to know about a bid of `req`, priced at `price`: the bid, and the
/// sale (publisher, site domain or app bundle, country, media type). The net price is the
/// caller's to set.
pub(crate) fn bid_ref(
    req: &BidRequest<'_>,
    offer: &Offer<'_>,
    price: CpmMicros,
    currency: &str,
    auction_ts_ms: u64,
) -> BidRef {
    let bid = &offer.bid.bid;
    let owned = |s: Option<&openrtb::de::Str<'_>>| s.map(|s| (**s).to_owned()).unwrap_or_default();
    let (publisher, domain, bundle) = if let Some(site) = &req.site {
        let publisher = site.publisher.as_ref().and_then(|p| p.id.as_ref());
        (owned(publisher), owned(site.domain.as_ref()), String::new())
    } else if let Some(app) = &req.app {
        let publisher = app.publisher.as_ref().and_then(|p| p.id.as_ref());
        (owned(publisher), String::new(), owned(app.bundle.as_ref()))
    } else if let Some(dooh) = &req.dooh {
        let publisher = dooh.publisher.as_ref().and_then(|p| p.id.as_ref());
        (owned(publisher), owned(dooh.domain.as_ref()), String::new())
    } else {
        Default::default()
    };
    let country = req
        .device
        .as_ref()
        .and_then(|d| d.geo.as_ref())
        .and_then(|g| g.country.as_ref());
    BidRef {
        publisher,
        domain,
        bundle,
        country: owned(country),
        media_type: req
            .imp
            .get(offer.candidate.imp)
            .and_then(|imp| media_type(bid.mtype, imp)),
        net_price_micros: None,
        auction_id: req.id.to_string(),
        imp_id: bid.impid.to_string(),
        bid_id: bid.id.to_string(),
        dsp: offer.dsp.name.to_string(),
        seat: offer.seat().to_owned(),
        campaign: bid.cid.as_deref().unwrap_or_default().to_owned(),
        creative_id: bid
            .crid
            .as_deref()
            .or(bid.adid.as_deref())
            .unwrap_or_default()
            .to_owned(),
        price_micros: price.get(),
        currency: currency.to_owned(),
        auction_ts_ms,
    }
}

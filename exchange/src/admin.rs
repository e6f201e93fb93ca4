//! The admin API: campaign budgets (lifetime and daily, pacing, time zone) over HTTP, behind
//! a bearer token, and the adoption of a budget store that lost its data.
//!
//! Amounts cross this API in currency units, the way operators and finance think of them, and
//! are kept in integer micros inside; every answer carries both.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::config::money_to_micros;
use crate::server::{error, json, App, Body};

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The body of `PUT /admin/campaigns/{dsp}/{cid}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutCampaign {
    /// Sets (creates, raises or lowers) the total budget, in currency units.
    budget: Option<f64>,
    /// Pauses or resumes the campaign.
    paused: Option<bool>,
    /// Sets the daily budget in currency units; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    daily_budget: Option<Option<f64>>,
    /// IANA zone whose midnight starts the campaign's day.
    timezone: Option<String>,
    /// `asap` or `even`.
    pacing: Option<budget::Pacing>,
}

/// A field that is present, `null` included (`Some(None)`), as opposed to absent (`None`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

impl PutCampaign {
    /// The daily part of the change, or every problem with it as `(message, field)`.
    fn daily(&self) -> Result<Option<budget::DailyChange>, Vec<(String, &'static str)>> {
        let mut problems = Vec::new();
        let daily_budget_micros = match self.daily_budget {
            Some(Some(amount)) => match money_to_micros(amount) {
                Some(m) => Some(Some(m)),
                None => {
                    problems.push((
                        "daily_budget must be a non-negative amount below 9 billion, or null"
                            .to_owned(),
                        "daily_budget",
                    ));
                    None
                }
            },
            Some(None) => Some(None),
            None => None,
        };
        if let Some(tz) = self.timezone.as_deref() {
            if budget::check_timezone(tz).is_err() {
                problems.push((
                    format!("timezone {tz:?} is not an IANA time zone"),
                    "timezone",
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if self.daily_budget.is_none() && self.timezone.is_none() && self.pacing.is_none() {
            return Ok(None);
        }
        Ok(Some(budget::DailyChange {
            daily_budget_micros,
            pacing: self.pacing,
            timezone: self.timezone.clone(),
        }))
    }
}

pub(crate) async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let live = app.live.load();
    let Some(token) = live.config.admin.token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is off: set admin.token or EXCHANGE_ADMIN_TOKEN",
            "",
        );
    };
    if let Some(refused) = authorize(req.headers().get(header::AUTHORIZATION), token) {
        return refused;
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["admin", "campaigns"]) => list(app).await,
        (Method::POST, ["admin", "store", "adopt"]) => adopt(app, req).await,
        (method, ["admin", "campaigns", dsp, cid]) => {
            let (Some(dsp), Some(cid)) = (percent_decode(dsp), percent_decode(cid)) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad percent-encoding in the path",
                    "",
                );
            };
            match method {
                Method::GET => get(app, &dsp, &cid).await,
                Method::PUT => put(app, &dsp, &cid, req).await,
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT", ""),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint", ""),
    }
}

/// `None` when the request carries the right bearer token, else the refusal to send.
fn authorize(header: Option<&HeaderValue>, token: &str) -> Option<Response<Body>> {
    let Some(given) = header.and_then(|h| h.to_str().ok()) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer token",
            "",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"exchange-admin\""),
        );
        return Some(r);
    };
    let given = given.strip_prefix("Bearer ").unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(error(StatusCode::FORBIDDEN, "wrong admin token", ""))
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // `subtle` compares slices in constant time for equal lengths; a token's length is not
    // the secret.
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

async fn list(app: &App) -> Response<Body> {
    match app.budgets.campaigns().await {
        Ok(keys) => {
            let list: Vec<_> = keys
                .iter()
                .map(|k| serde_json::json!({"dsp": &*k.dsp, "cid": &*k.cid}))
                .collect();
            json_value(StatusCode::OK, &serde_json::json!({ "campaigns": list }))
        }
        Err(e) => store_error(&e),
    }
}

async fn get(app: &App, dsp: &str, cid: &str) -> Response<Body> {
    match app.budgets.state(dsp, cid).await {
        Ok(Some(state)) => {
            let mut body = describe(app, &state);
            // Reconciliation is best effort here: the campaign answer stands without it.
            body["reconciliation"] = match app.budgets.reconciliation(dsp, cid).await {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            json_value(StatusCode::OK, &body)
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such campaign", ""),
        Err(e) => store_error(&e),
    }
}

async fn put(app: &App, dsp: &str, cid: &str, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB", ""),
    };
    let change = match parse_body::<PutCampaign>(&body) {
        Ok(c) => c,
        Err((message, field)) => return error(StatusCode::BAD_REQUEST, &message, &field),
    };
    if dsp.is_empty() || cid.is_empty() {
        return error(StatusCode::BAD_REQUEST, "dsp and cid must not be empty", "");
    }
    // Every problem at once, before anything changes; the field named is the first one's.
    let budget = change
        .budget
        .map(|amount| money_to_micros(amount).ok_or(amount));
    let daily = change.daily();
    let mut problems = Vec::new();
    if let Some(Err(_)) = budget {
        problems.push((
            "budget must be a non-negative amount below 9 billion".to_owned(),
            "budget",
        ));
    }
    if let Err(more) = &daily {
        problems.extend(more.iter().cloned());
    }
    if let Some((_, field)) = problems.first() {
        let message: Vec<&str> = problems.iter().map(|(m, _)| m.as_str()).collect();
        return error(StatusCode::BAD_REQUEST, &message.join("; "), field);
    }
    let mut state = None;
    if let Some(Ok(micros)) = budget {
        match app.budgets.set_budget(dsp, cid, micros).await {
            Ok(s) => state = Some(s),
            Err(e) => return store_error(&e),
        }
    }
    if let Ok(Some(daily)) = &daily {
        match app.budgets.set_daily(dsp, cid, daily).await {
            Ok(s) => state = Some(s),
            Err(e) => return store_error(&e),
        }
    }
    if let Some(paused) = change.paused {
        match app.budgets.pause(dsp, cid, paused).await {
            Ok(s) => state = Some(s),
            Err(e) => return store_error(&e),
        }
    }
    match state {
        Some(state) => json_value(StatusCode::OK, &describe(app, &state)),
        None => error(
            StatusCode::BAD_REQUEST,
            "give \"budget\", \"paused\", \"daily_budget\", \"pacing\" or \"timezone\"",
            "",
        ),
    }
}

/// The body of `POST /admin/store/adopt`: what the fleet has spent of every campaign, after
/// the budget store lost its data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptStore {
    campaigns: Vec<budget::StatedSpend>,
}

async fn adopt(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB", ""),
    };
    let stated: AdoptStore = match parse_body(&body) {
        Ok(s) => s,
        Err((message, field)) => return error(StatusCode::BAD_REQUEST, &message, &field),
    };
    match app.budgets.adopt_store(&stated.campaigns).await {
        Ok(report) => json_value(
            StatusCode::OK,
            &serde_json::to_value(report).unwrap_or_default(),
        ),
        Err(e) => store_error(&e),
    }
}

/// The body, or what is wrong with it: `(message, field)`.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." || field == "?" {
            String::new()
        } else {
            field
        };
        (format!("malformed body: {}", e.inner()), field)
    })?;
    de.end()
        .map_err(|e| (format!("malformed body: {e}"), String::new()))?;
    Ok(parsed)
}

fn describe(app: &App, state: &budget::CampaignState) -> serde_json::Value {
    let units = |micros: u64| money::Micros::new(micros).as_units();
    let local = app.budgets.local(&state.key.dsp, &state.key.cid);
    // The store's day may be yesterday's until the first report of today lands.
    let (today, spent_today) = match app.budgets.spent_today(state) {
        Ok((day, spent)) => (day.id, spent),
        Err(_) => (state.day, state.day_spent),
    };
    serde_json::json!({
        "dsp": &*state.key.dsp,
        "cid": &*state.key.cid,
        "currency": app.config.auction.currency,
        "budget": units(state.budget),
        "spent": units(state.spent),
        "held": units(state.held),
        "remaining": units(state.budget.saturating_sub(state.spent + state.held)),
        "paused": state.paused,
        "budget_micros": state.budget,
        "spent_micros": state.spent,
        "held_micros": state.held,
        "daily_budget": state.daily_budget.map(units),
        "daily_budget_micros": state.daily_budget,
        "pacing": state.pacing,
        "timezone": state.timezone,
        "day": today,
        "spent_today": units(spent_today),
        "spent_today_micros": spent_today,
        "nodes": state.nodes,
        "this_node": local.map(|l| serde_json::json!({
            "session": app.budgets.session(),
            "available_micros": l.available,
            "charged_micros": l.charged_total,
            "unreported_micros": l.unreported,
        })),
    })
}

fn store_error(e: &budget::Error) -> Response<Body> {
    let status = match e {
        budget::Error::NotFound(_) => StatusCode::NOT_FOUND,
        budget::Error::BelowCommitted { .. } | budget::Error::DailyBelowCommitted { .. } => {
            StatusCode::CONFLICT
        }
        budget::Error::TooLarge(_) | budget::Error::Adopt(_) => StatusCode::BAD_REQUEST,
        budget::Error::Timeout(_) | budget::Error::Redis(_) | budget::Error::StoreLost(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string(), "")
}

fn json_value(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json(status, serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes `%XX` escapes in one path segment (`+` stays a plus: this is a path, not a query);
/// `None` for a broken escape, which `percent-encoding` would pass through as text, or
/// non-UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let escapes_whole = segment.match_indices('%').all(|(i, _)| {
        segment
            .get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !escapes_whole {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("cmp%2F1").as_deref(), Some("cmp/1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%C3%A9t%C3%A9").as_deref(), Some("été"));
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn an_adoption_body_states_spend_per_campaign() {
        let body = Bytes::from_static(
            br#"{"campaigns":[{"dsp":"acme","cid":"c1","spent_micros":50000},
                {"dsp":"acme","cid":"c2","spent_micros":0,"budget_micros":7,"paused":true}]}"#,
        );
        let stated = parse_body::<AdoptStore>(&body).unwrap().campaigns;
        assert_eq!(stated.len(), 2);
        assert_eq!(
            (
                stated[0].spent_micros,
                stated[0].budget_micros,
                stated[0].paused
            ),
            (50_000, None, false)
        );
        assert_eq!(
            (
                stated[1].spent_micros,
                stated[1].budget_micros,
                stated[1].paused
            ),
            (0, Some(7), true)
        );
        let typo = Bytes::from_static(br#"{"campaigns":[{"dsp":"a","cid":"c","spent":1}]}"#);
        let (message, field) = parse_body::<AdoptStore>(&typo).unwrap_err();
        assert!(message.contains("unknown field"), "{message}");
        assert_eq!(field, "campaigns[0].spent");
    }
}

//! Publishers as accounts through the real server: a publisher's bearer token accepted and
//! refused (no DSP called), unknown publishers allowed or rejected, `GET /sellers.json`, and a
//! reload that changes both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{config_for, Answer, TestExchange};
use exchange::config::{PublisherConfig, SellerType, SellersIdentifier, UnknownPublisher};
use exchange::Config;
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{MockDsp, MockDspHandle, Price};
use serde_json::json;

async fn bidder() -> MockDspHandle {
    MockDsp::builder("bidder")
        .price(Price::Fixed(1.0))
        .start()
        .await
        .unwrap()
}

/// A one-imp banner request from a `site` or `app` (`inventory`) of publisher `publisher`
/// (none: the object has no `publisher`).
fn request(id: &str, inventory: &str, publisher: Option<&str>) -> String {
    let mut object = json!({"id": "inv-1", "domain": "news.example"});
    if let Some(p) = publisher {
        object["publisher"] = json!({"id": p});
    }
    let mut req = json!({
        "id": id,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.5}],
        "tmax": 200,
    });
    req[inventory] = object;
    req.to_string()
}

/// Posts `body` to the auction endpoint with this `Authorization` header, if any.
async fn auction(ex: &TestExchange, body: String, authorization: Option<&str>) -> Answer {
    let mut req = Request::post(format!("http://{}/openrtb2/auction", ex.addr))
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    ex.request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
}

fn publisher(id: &str, name: &str, token: Option<&str>) -> PublisherConfig {
    PublisherConfig {
        token: token.map(str::to_owned),
        ..PublisherConfig::new(id, name)
    }
}

fn text(answer: &Answer) -> &str {
    std::str::from_utf8(&answer.body).unwrap()
}

#[tokio::test]
async fn a_publisher_token_is_required_checked_and_cannot_be_borrowed() {
    let dsp = bidder().await;
    let mut config = config_for(&[&dsp]);
    config.publishers = vec![
        publisher("p1", "Pub One", Some("tok-1")),
        publisher("p2", "Pub Two", Some("tok-2")),
    ];
    let ex = TestExchange::start(config).await;

    // The right token: the auction runs and the DSP's bid wins.
    let ok = auction(&ex, request("a1", "site", Some("p1")), Some("Bearer tok-1")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", text(&ok));
    assert_eq!(ok.json()["seatbid"][0]["seat"], "bidder");
    assert_eq!(dsp.stats().requests, 1);

    // No token, or not a bearer one: 401, naming what is missing.
    let missing = r#"{"error":"publisher \"p1\" needs an Authorization: Bearer token","field":"site.publisher.id"}"#;
    for header in [None, Some("Basic dG9rLTE="), Some("Bearer ")] {
        let a = auction(&ex, request("a2", "site", Some("p1")), header).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(text(&a), missing, "{header:?}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert_eq!(a.headers["content-type"], "application/json");
    }
    // The same from an app.
    let a = auction(&ex, request("a3", "app", Some("p1")), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        text(&a),
        r#"{"error":"publisher \"p1\" needs an Authorization: Bearer token","field":"app.publisher.id"}"#
    );

    // A wrong token: 403.
    let a = auction(&ex, request("a4", "site", Some("p1")), Some("Bearer tok-x")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        text(&a),
        r#"{"error":"the bearer token is not publisher \"p1\"'s","field":"site.publisher.id"}"#
    );
    // p1's own token does not buy p2's id (and its payouts).
    let a = auction(&ex, request("a5", "site", Some("p2")), Some("Bearer tok-1")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        text(&a),
        r#"{"error":"the bearer token is not publisher \"p2\"'s","field":"site.publisher.id"}"#
    );
    // p2 with its own token runs.
    let a = auction(&ex, request("a6", "site", Some("p2")), Some("bearer tok-2")).await;
    assert_eq!(a.status, StatusCode::OK);

    // No refused request reached the DSP.
    assert_eq!(dsp.stats().requests, 2);
    for (reason, want) in [("missing", 4.0), ("wrong", 2.0), ("unknown_publisher", 0.0)] {
        let got = ex
            .metric("exchange_auth_refused_total", &[("reason", reason)])
            .await;
        assert_eq!(got, want, "{reason}");
    }
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "refused")])
            .await,
        6.0
    );
    ex.stop().await;
}

#[tokio::test]
async fn unknown_publishers_are_allowed_by_default_and_rejected_when_asked() {
    let dsp = bidder().await;
    let mut config = config_for(&[&dsp]);
    config.publishers = vec![publisher("p1", "Pub One", None)];
    let ex = TestExchange::start(config.clone()).await;
    for body in [
        request("u1", "site", Some("nobody")),
        request("u2", "site", None),
    ] {
        let a = auction(&ex, body, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", text(&a));
    }
    assert_eq!(dsp.stats().requests, 2);
    ex.stop().await;

    config.auction.unknown_publisher = UnknownPublisher::Reject;
    let ex = TestExchange::start(config).await;
    let cases = [
        (
            request("r1", "site", Some("nobody")),
            r#"{"error":"publisher \"nobody\" is not known to this exchange","field":"site.publisher.id"}"#,
        ),
        (
            request("r2", "app", Some("nobody")),
            r#"{"error":"publisher \"nobody\" is not known to this exchange","field":"app.publisher.id"}"#,
        ),
        (
            request("r3", "site", None),
            r#"{"error":"the request names no publisher and this exchange takes only known ones","field":"site.publisher.id"}"#,
        ),
    ];
    for (body, want) in cases {
        let a = auction(&ex, body, Some("Bearer anything")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(text(&a), want);
    }
    assert_eq!(
        dsp.stats().requests,
        2,
        "no refused request reached the DSP"
    );
    // A known publisher without a token needs no header.
    let a = auction(&ex, request("r4", "site", Some("p1")), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", text(&a));
    assert_eq!(dsp.stats().requests, 3);
    assert_eq!(
        ex.metric(
            "exchange_auth_refused_total",
            &[("reason", "unknown_publisher")]
        )
        .await,
        3.0
    );
    ex.stop().await;
}

fn sellers_config() -> Config {
    let mut config = Config::default();
    config.sellers.contact_email = Some("ads@exchange.example".into());
    config.sellers.contact_address = Some("1 Market St, Springfield".into());
    config.sellers.identifiers = vec![SellersIdentifier {
        name: "TAG-ID".into(),
        value: "28cb65e5bbc0bd5f".into(),
    }];
    config.publishers = vec![
        PublisherConfig {
            domain: "news.example".into(),
            token: Some("tok-1".into()),
            margin: Some(0.15),
            ..PublisherConfig::new("p1", "News Inc")
        },
        PublisherConfig {
            domain: "hidden.example".into(),
            seller_type: SellerType::Both,
            is_confidential: true,
            ..PublisherConfig::new("p2", "Hidden Ltd")
        },
    ];
    config
}

#[tokio::test]
async fn sellers_json_lists_every_publisher_and_hides_confidential_ones() {
    let ex = TestExchange::start(sellers_config()).await;
    let a = ex.get("/sellers.json").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.headers["cache-control"], "max-age=3600");
    assert_eq!(
        text(&a),
        concat!(
            r#"{"contact_email":"ads@exchange.example","contact_address":"1 Market St, Springfield","#,
            r#""version":"1.0","identifiers":[{"name":"TAG-ID","value":"28cb65e5bbc0bd5f"}],"#,
            r#""sellers":[{"seller_id":"p1","name":"News Inc","domain":"news.example","seller_type":"PUBLISHER","is_confidential":0},"#,
            r#"{"seller_id":"p2","seller_type":"BOTH","is_confidential":1}]}"#
        )
    );
    let post = ex.post("/sellers.json", "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    // Without publishers or contact fields: still a valid file.
    let empty = TestExchange::start(Config::default()).await;
    assert_eq!(
        text(&empty.get("/sellers.json").await),
        r#"{"version":"1.0","sellers":[]}"#
    );
    empty.stop().await;
    ex.stop().await;
}

#[tokio::test]
async fn a_reload_changes_tokens_and_sellers_json() {
    let dsp = bidder().await;
    let mut config = sellers_config();
    config.dsps = config_for(&[&dsp]).dsps;
    config.auction.dsp_timeout_ms = 500;
    let ex = TestExchange::start(config).await;
    let a = auction(&ex, request("b1", "site", Some("p1")), Some("Bearer tok-1")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", text(&a));

    let mut next = ex.config.clone();
    next.publishers[0].token = Some("tok-new".into());
    next.publishers[0].name = "News Corp".into();
    next.publishers.truncate(1);
    next.publishers.push(PublisherConfig {
        seller_type: SellerType::Intermediary,
        domain: "resell.example".into(),
        ..PublisherConfig::new("p3", "Resell Co")
    });
    ex.reload.reload(Ok(next)).await.unwrap();

    let a = auction(&ex, request("b2", "site", Some("p1")), Some("Bearer tok-1")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "the old token is gone");
    let a = auction(
        &ex,
        request("b3", "site", Some("p1")),
        Some("Bearer tok-new"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", text(&a));
    assert_eq!(
        text(&ex.get("/sellers.json").await),
        concat!(
            r#"{"contact_email":"ads@exchange.example","contact_address":"1 Market St, Springfield","#,
            r#""version":"1.0","identifiers":[{"name":"TAG-ID","value":"28cb65e5bbc0bd5f"}],"#,
            r#""sellers":[{"seller_id":"p1","name":"News Corp","domain":"news.example","seller_type":"PUBLISHER","is_confidential":0},"#,
            r#"{"seller_id":"p3","name":"Resell Co","domain":"resell.example","seller_type":"INTERMEDIARY","is_confidential":0}]}"#
        )
    );

    // A reload with a broken publisher is refused whole: the old table stays.
    let mut broken = ex.config.clone();
    broken.publishers[0].margin = Some(2.0);
    let refused = ex.reload.reload(Ok(broken)).await.unwrap_err().to_string();
    assert_eq!(
        refused,
        "invalid configuration:\n  - publisher[0] (\"p1\"): margin must be between 0 and 1, not 2"
    );
    let a = auction(
        &ex,
        request("b4", "site", Some("p1")),
        Some("Bearer tok-new"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(dsp.stats().requests, 3);
    ex.stop().await;
}

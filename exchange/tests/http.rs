//! The publisher endpoint's HTTP contract: validation errors, body limits, gzip, the
//! corpus of real requests, health and metrics.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{banner_request, config_for, TestExchange};
use http::{Request, StatusCode};
use http_body_util::Full;
use mockdsp::{MockDsp, Price};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

async fn post_gzip(ex: &TestExchange, body: Vec<u8>) -> common::Answer {
    let req = Request::post(format!("http://{}/openrtb2/auction", ex.addr))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    ex.request(req).await
}

#[tokio::test]
async fn invalid_requests_get_a_400_naming_the_field() {
    let ex = TestExchange::start(exchange::Config::default()).await;
    let cases: &[(&str, &str)] = &[
        ("{not json", ""),
        ("null", ""),
        (r#"{"imp":[{"id":"1","banner":{}}]}"#, "id"),
        (r#"{"id":"x"}"#, "imp"),
        (r#"{"id":"x","imp":[]}"#, "imp"),
        (r#"{"id":"x","imp":[{"banner":{}}]}"#, "imp[0].id"),
        (
            r#"{"id":"x","imp":[{"id":"1","banner":{}},{"id":"1","banner":{}}]}"#,
            "imp[1].id",
        ),
        (r#"{"id":"x","imp":[{"id":"1"}]}"#, "imp[0]"),
        (
            r#"{"id":"x","imp":[{"id":"1","banner":{}}],"site":{},"app":{}}"#,
            "app",
        ),
        (
            r#"{"id":"x","imp":[{"id":"1","banner":{},"bidfloor":-1}]}"#,
            "imp[0].bidfloor",
        ),
        (
            r#"{"id":"x","imp":[{"id":"1","banner":{}}],"tmax":0}"#,
            "tmax",
        ),
        (
            r#"{"id":"x","imp":[{"id":"1","native":{"request":{"assets":[]}}}]}"#,
            "imp[0].native.request",
        ),
        (
            r#"{"id":"x","imp":[{"id":"1","banner":{"w":-5}}]}"#,
            "imp[0].banner.w",
        ),
    ];
    for (body, field) in cases {
        let answer = ex.auction(body.to_string()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let json = answer.json();
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {json}"
        );
        let got = json["field"].as_str().unwrap();
        assert!(
            got == *field || (!field.is_empty() && got.starts_with(field)),
            "{body}: field {got:?}, want {field:?} ({json})"
        );
    }
    assert_eq!(
        ex.metric("exchange_auctions_total", &[("outcome", "invalid")])
            .await,
        cases.len() as f64
    );
    ex.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_gzip_is_inflated_under_the_same_limit() {
    let dsp = MockDsp::builder("gz")
        .price(Price::Fixed(1.0))
        .start()
        .await
        .unwrap();
    let mut config = config_for(&[&dsp]);
    config.server.max_body_bytes = 4096;
    let ex = TestExchange::start(config).await;

    let big = format!(
        r#"{{"id":"big","imp":[{{"id":"1","banner":{{}}}}],"ext":"{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(
        ex.auction(big.clone()).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // A gzip body is accepted...
    let answer = post_gzip(&ex, gzip(banner_request("gz-1", 0.0).as_bytes())).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["id"], "gz-1");
    // ...but a small one that inflates past the limit is not.
    let bomb = gzip(big.as_bytes());
    assert!(bomb.len() < 4096);
    assert_eq!(
        post_gzip(&ex, bomb).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Nor is gzip that is not gzip.
    assert_eq!(
        post_gzip(&ex, b"plain".to_vec()).await.status,
        StatusCode::BAD_REQUEST
    );
    ex.stop().await;
}

#[tokio::test]
async fn the_corpus_of_real_requests_is_judged_like_the_spec_says() {
    let dsp = MockDsp::builder("corpus")
        .price(Price::Fixed(5.0))
        .start()
        .await
        .unwrap();
    let ex = TestExchange::start(config_for(&[&dsp])).await;

    let mut checked = 0;
    let mut failures = Vec::new();
    for (dir, valid) in [
        ("thirdparty/invalid_requests", false),
        ("iab/requests", true),
        ("thirdparty/valid_requests", true),
    ] {
        let files = testkit::corpus::files(dir, ".json");
        for file in files {
            let body = std::fs::read(&file).unwrap();
            let answer = ex.auction(body).await;
            let ok = if valid {
                matches!(answer.status, StatusCode::OK | StatusCode::NO_CONTENT)
            } else {
                answer.status == StatusCode::BAD_REQUEST
                    && answer.json()["field"].is_string()
                    && answer.json()["error"].is_string()
            };
            if !ok {
                failures.push(format!(
                    "{}: {} {}",
                    file.display(),
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} judged wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 150, "only {checked} corpus requests found");
    ex.stop().await;
}

#[tokio::test]
async fn health_metrics_and_unknown_paths() {
    let ex = TestExchange::start(exchange::Config::default()).await;
    let health = ex.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    // No DSPs configured: every auction is a no-bid.
    assert_eq!(
        ex.auction(banner_request("h", 0.0)).await.status,
        StatusCode::NO_CONTENT
    );
    let metrics = ex.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("exchange_auctions_total"), "{text}");
    assert!(
        text.contains("exchange_auction_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(ex.get("/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        ex.get("/openrtb2/auction").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    ex.stop().await;
}

//! Mock DSPs over real HTTP on loopback: every behaviour, the recorders, notices, latency,
//! shutdown, fleets and the demo fleet.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mockdsp::Error;
use mockdsp::{Behavior, Latency, MockDsp, MockDspBuilder, MockFleet, NoticeKind, Price};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    c: &HttpClient,
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

async fn post(c: &HttpClient, url: &str, body: impl Into<Bytes>) -> (StatusCode, HeaderMap, Bytes) {
    send(c, Method::POST, url, body).await
}

fn request(id: &str) -> Value {
    json!({
        "id": id,
        "tmax": 150,
        "cur": ["EUR", "USD"],
        "imp": [
            {"id": "imp-1", "banner": {"w": 300, "h": 250}},
            {"id": "imp-2", "banner": {"format": [{"w": 728, "h": 90}, {"w": 320, "h": 50}]}},
            {"id": "imp-3", "video": {"mimes": ["video/mp4"]}}
        ],
        "ext": {"publisher": "kept byte for byte"}
    })
}

fn body_of(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap())
}

fn bids_of(resp: &Value) -> Vec<Value> {
    resp["seatbid"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|sb| sb["bid"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn bid_answer_is_valid_openrtb() {
    let dsp = MockDsp::builder("alpha")
        .price(Price::Fixed(2.5))
        .seat("seat-a")
        .cids(["cmp-1", "cmp-2"])
        .adomains(["alpha.com"])
        .crid("cr-1")
        .start()
        .await
        .unwrap();
    let c = client();
    let sent = body_of(&request("req-1"));
    let (status, headers, body) = post(&c, dsp.url(), sent.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let resp: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resp["id"], "req-1");
    assert_eq!(resp["cur"], "EUR", "echoes the request's first currency");
    assert_eq!(resp["seatbid"][0]["seat"], "seat-a");

    let bids = bids_of(&resp);
    let impids: HashSet<&str> = bids.iter().map(|b| b["impid"].as_str().unwrap()).collect();
    assert_eq!(impids, HashSet::from(["imp-1", "imp-2", "imp-3"]));
    let ids: HashSet<&str> = bids.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "bid ids are unique");
    for b in &bids {
        assert_eq!(b["price"], 2.5);
        assert!(["cmp-1", "cmp-2"].contains(&b["cid"].as_str().unwrap()));
        assert_eq!(b["adomain"], json!(["alpha.com"]));
        assert_eq!(b["crid"], "cr-1");
        assert!(b["adm"].as_str().unwrap().contains("${AUCTION_PRICE}"));
        assert!(b.get("nurl").is_none() && b.get("lurl").is_none() && b.get("burl").is_none());
        assert!(b.get("dealid").is_none());
    }
    let by_imp = |id: &str| bids.iter().find(|b| b["impid"] == id).unwrap().clone();
    assert_eq!(
        (by_imp("imp-1")["w"].clone(), by_imp("imp-1")["h"].clone()),
        (json!(300), json!(250))
    );
    assert_eq!(
        (by_imp("imp-2")["w"].clone(), by_imp("imp-2")["h"].clone()),
        (json!(728), json!(90))
    );
    assert!(by_imp("imp-3").get("w").is_none(), "no banner, no size");

    // A second answer keeps bid ids unique across requests.
    let (_, _, body2) = post(&c, dsp.url(), sent.clone()).await;
    let resp2: Value = serde_json::from_slice(&body2).unwrap();
    for b in bids_of(&resp2) {
        assert!(!ids.contains(b["id"].as_str().unwrap()));
    }

    let stats = dsp.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.bids_sent, 6);
    assert_eq!(stats.no_bids, 0);
    assert_eq!(stats.last_tmax, Some(150));
    assert_eq!(
        dsp.received(),
        vec![sent.clone(), sent],
        "bodies recorded byte for byte"
    );
    assert_eq!(
        dsp.received_json()[0]["ext"]["publisher"],
        "kept byte for byte"
    );
    dsp.shutdown().await;
}

#[tokio::test]
async fn prices_stay_within_their_distribution() {
    let uniform = MockDsp::builder("u")
        .price(Price::Uniform { min: 1.0, max: 2.0 })
        .start()
        .await
        .unwrap();
    let lognormal = MockDsp::builder("l")
        .price(Price::LogNormal {
            median: 1.5,
            p99: 4.0,
        })
        .start()
        .await
        .unwrap();
    let c = client();
    let mut uniform_prices = Vec::new();
    for i in 0..40 {
        let req = body_of(&request(&format!("r{i}")));
        let (_, _, body) = post(&c, uniform.url(), req.clone()).await;
        for b in bids_of(&serde_json::from_slice(&body).unwrap()) {
            uniform_prices.push(b["price"].as_f64().unwrap());
        }
        let (_, _, body) = post(&c, lognormal.url(), req).await;
        for b in bids_of(&serde_json::from_slice(&body).unwrap()) {
            let p = b["price"].as_f64().unwrap();
            assert!(p > 0.0 && p.is_finite(), "{p}");
        }
    }
    assert!(
        uniform_prices.iter().all(|p| (1.0..=2.0).contains(p)),
        "{uniform_prices:?}"
    );
    let distinct: HashSet<u64> = uniform_prices.iter().map(|p| p.to_bits()).collect();
    assert!(distinct.len() > 10, "prices are drawn, not fixed");
    uniform.shutdown().await;
    lognormal.shutdown().await;
}

#[tokio::test]
async fn bid_probability_decides_per_imp() {
    let never = MockDsp::builder("never")
        .bid_probability(0.0)
        .start()
        .await
        .unwrap();
    let half = MockDsp::builder("half")
        .bid_probability(0.5)
        .start()
        .await
        .unwrap();
    let c = client();
    let (status, _, body) = post(&c, never.url(), body_of(&request("r"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(never.stats().no_bids, 1);
    assert_eq!(never.stats().bids_sent, 0);

    let imps: Vec<Value> = (0..400).map(|i| json!({"id": format!("i{i}")})).collect();
    let (status, _, body) = post(&c, half.url(), body_of(&json!({"id": "big", "imp": imps}))).await;
    assert_eq!(status, StatusCode::OK);
    let n = bids_of(&serde_json::from_slice(&body).unwrap()).len();
    // Binomial(400, 0.5): the mean is 200 and the standard deviation 10.
    assert!((130..=270).contains(&n), "{n} bids out of 400 imps");
    assert_eq!(half.stats().bids_sent, n as u64);
    never.shutdown().await;
    half.shutdown().await;
}

#[tokio::test]
async fn notices_carry_macros_and_their_endpoints_record_hits() {
    let dsp = MockDsp::builder("n").notices(true).start().await.unwrap();
    let c = client();
    let (_, _, body) = post(&c, dsp.url(), body_of(&request("r1"))).await;
    let base = format!("http://{}", dsp.addr());
    for b in bids_of(&serde_json::from_slice(&body).unwrap()) {
        let nurl = b["nurl"].as_str().unwrap();
        let burl = b["burl"].as_str().unwrap();
        let lurl = b["lurl"].as_str().unwrap();
        assert!(nurl.starts_with(&format!("{base}/nurl?")), "{nurl}");
        assert!(burl.starts_with(&format!("{base}/burl?")), "{burl}");
        assert!(lurl.starts_with(&format!("{base}/lurl?")), "{lurl}");
        for url in [nurl, burl, lurl] {
            for m in [
                "price=${AUCTION_PRICE}",
                "imp=${AUCTION_IMP_ID}",
                "auction=${AUCTION_ID}",
                "bid=${AUCTION_BID_ID}",
                "seat=${AUCTION_SEAT_ID}",
            ] {
                assert!(url.contains(m), "{url} lacks {m}");
            }
        }
        assert!(
            lurl.contains("loss=${AUCTION_LOSS}") && lurl.contains("mtw=${AUCTION_MIN_TO_WIN}")
        );
        assert!(!nurl.contains("loss="));
    }

    // What an exchange would fire after substituting the macros.
    let (s, _, _) = send(
        &c,
        Method::GET,
        &format!("{base}/nurl?price=1.25&imp=imp-1&auction=r1"),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(&c, Method::GET, &format!("{base}/burl?price=1.25"), "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(
        &c,
        Method::POST,
        &format!("{base}/lurl?loss=102&mtw=1.3"),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(&c, Method::GET, &format!("{base}/lurl?loss=2"), "").await;
    assert_eq!(s, StatusCode::OK);

    let stats = dsp.stats();
    assert_eq!(
        (stats.nurl_hits, stats.burl_hits, stats.lurl_hits),
        (1, 1, 2)
    );
    assert_eq!(stats.requests, 1, "notices are not bid requests");
    let notices = dsp.notices();
    assert_eq!(notices.len(), 4);
    assert_eq!(notices[0].kind, NoticeKind::Nurl);
    assert_eq!(notices[0].uri, "/nurl?price=1.25&imp=imp-1&auction=r1");
    assert_eq!(notices[0].param("imp"), Some("imp-1"));
    assert_eq!(notices[2].kind, NoticeKind::Lurl);
    assert_eq!(notices[2].param("loss"), Some("102"));
    assert_eq!(notices[2].param("mtw"), Some("1.3"));

    dsp.clear();
    assert!(dsp.notices().is_empty() && dsp.received().is_empty());
    assert_eq!(dsp.stats().lurl_hits, 2, "clear keeps the counters");
    dsp.shutdown().await;
}

#[tokio::test]
async fn currency_and_deals() {
    let forced = MockDsp::builder("eur")
        .currency("GBP")
        .deal("deal-1")
        .start()
        .await
        .unwrap();
    let echo = MockDsp::builder("echo")
        .seat("seat-b")
        .deals_from_request(true)
        .start()
        .await
        .unwrap();
    let c = client();
    let (_, _, body) = post(&c, forced.url(), body_of(&request("r"))).await;
    let resp: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resp["cur"], "GBP");
    assert!(bids_of(&resp).iter().all(|b| b["dealid"] == "deal-1"));

    let req = json!({
        "id": "r2",
        "imp": [
            {"id": "open"},
            {"id": "pmp", "pmp": {"private_auction": 1, "deals": [
                {"id": "not-for-us", "wseat": ["seat-x"]},
                {"id": "ours", "wseat": ["seat-b"]},
                {"id": "anyone"}
            ]}},
            {"id": "pmp2", "pmp": {"deals": [{"id": "open-deal", "wseat": []}]}}
        ]
    });
    let (_, _, body) = post(&c, echo.url(), body_of(&req)).await;
    let resp: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resp["cur"], "USD", "no cur in the request means USD");
    let deal_of = |imp: &str| {
        bids_of(&resp)
            .into_iter()
            .find(|b| b["impid"] == imp)
            .unwrap()
            .get("dealid")
            .cloned()
    };
    assert_eq!(deal_of("open"), None);
    assert_eq!(deal_of("pmp"), Some(json!("ours")));
    assert_eq!(deal_of("pmp2"), Some(json!("open-deal")));
    forced.shutdown().await;
    echo.shutdown().await;
}

#[tokio::test]
async fn no_bid_behaviours() {
    let nobid = MockDsp::builder("a")
        .behavior(Behavior::NoBid204)
        .start()
        .await
        .unwrap();
    let empty = MockDsp::builder("b")
        .behavior(Behavior::EmptyObject)
        .start()
        .await
        .unwrap();
    let nbr = MockDsp::builder("c")
        .behavior(Behavior::Nbr(8))
        .start()
        .await
        .unwrap();
    let c = client();
    let req = body_of(&request("req-9"));

    let (s, _, body) = post(&c, nobid.url(), req.clone()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(body.is_empty());

    let (s, _, body) = post(&c, empty.url(), req.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({}));

    let (s, _, body) = post(&c, nbr.url(), req.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"id": "req-9", "nbr": 8})
    );

    for dsp in [&nobid, &empty, &nbr] {
        let st = dsp.stats();
        assert_eq!(
            (st.requests, st.no_bids, st.bids_sent),
            (1, 1, 0),
            "{}",
            dsp.name()
        );
        assert_eq!(dsp.received(), vec![req.clone()]);
    }
    for dsp in [nobid, empty, nbr] {
        dsp.shutdown().await;
    }
}

#[tokio::test]
async fn broken_behaviours() {
    let status = MockDsp::builder("s")
        .behavior(Behavior::Status(500))
        .start()
        .await
        .unwrap();
    let garbage = MockDsp::builder("g")
        .behavior(Behavior::Garbage)
        .start()
        .await
        .unwrap();
    let wrong = MockDsp::builder("w")
        .behavior(Behavior::WrongId)
        .bid_probability(0.0)
        .start()
        .await
        .unwrap();
    let c = client();
    let req = body_of(&request("req-7"));

    let (s, _, body) = post(&c, status.url(), req.clone()).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.is_empty() && body.len() < 100);

    let (s, headers, body) = post(&c, garbage.url(), req.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    let (s, _, body) = post(&c, wrong.url(), req.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let resp: Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(resp["id"], "req-7");
    assert_eq!(
        bids_of(&resp).len(),
        3,
        "WrongId always bids, whatever the probability"
    );

    for dsp in [&status, &garbage, &wrong] {
        assert_eq!(dsp.stats().requests, 1);
    }
    for dsp in [status, garbage, wrong] {
        dsp.shutdown().await;
    }
}

#[tokio::test]
async fn custom_behaviour_sees_the_request() {
    let dsp = MockDsp::builder("custom")
        .behavior(Behavior::custom(|req: &Value| {
            let n = req["imp"].as_array().map_or(0, Vec::len);
            (
                202,
                format!("{{\"imps\":{n},\"tmax\":{}}}", req["tmax"]).into_bytes(),
            )
        }))
        .start()
        .await
        .unwrap();
    let c = client();
    let (s, _, body) = post(&c, dsp.url(), body_of(&request("r"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"imps": 3, "tmax": 150})
    );
    let (s, _, body) = post(&c, dsp.url(), "not json").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"imps": 0, "tmax": null})
    );
    dsp.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_answered_not_dropped() {
    let dsp = MockDsp::builder("bad").start().await.unwrap();
    let c = client();
    let (s, _, _) = post(&c, dsp.url(), "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = post(&c, dsp.url(), vec![b' '; 4 * 1024 * 1024 + 1]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = send(&c, Method::GET, dsp.url(), "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _, _) = post(&c, &format!("http://{}/elsewhere", dsp.addr()), "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let st = dsp.stats();
    assert_eq!((st.requests, st.bad_requests), (2, 2));
    assert_eq!(
        dsp.received().len(),
        1,
        "a body over the bound is not recorded"
    );
    dsp.shutdown().await;
}

#[tokio::test]
async fn latency_applies_before_every_answer() {
    let delay = Duration::from_millis(50);
    let bidder = MockDsp::builder("slow-bid")
        .latency(Latency::Fixed(delay))
        .start()
        .await
        .unwrap();
    let nobid = MockDsp::builder("slow-nobid")
        .behavior(Behavior::NoBid204)
        .latency(Latency::Fixed(delay))
        .start()
        .await
        .unwrap();
    let c = client();
    for dsp in [&bidder, &nobid] {
        for _ in 0..3 {
            let started = Instant::now();
            let (s, _, _) = post(&c, dsp.url(), body_of(&request("r"))).await;
            assert!(s.is_success());
            assert!(
                started.elapsed() >= delay,
                "{} answered in {:?}",
                dsp.name(),
                started.elapsed()
            );
        }
    }
    bidder.shutdown().await;
    nobid.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_and_shutdown_ends_it_without_leaking_tasks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let dsp = MockDsp::builder("hang")
        .behavior(Behavior::Hang)
        .start()
        .await
        .unwrap();
    let c = client();
    let req = Request::post(dsp.url())
        .body(Full::new(body_of(&request("r"))))
        .unwrap();
    let mut pending = std::pin::pin!(c.request(req));
    // Drive the request until the mock has read and recorded it: from then on a mock that
    // answers would answer at once.
    let recorded = async {
        let read = testkit::eventually(Duration::from_secs(5), || {
            std::future::ready(dsp.received().len() == 1)
        });
        read.await
    };
    tokio::select! {
        _ = pending.as_mut() => panic!("a hanging DSP answered"),
        read = recorded => assert!(read, "the request was never read"),
    }
    // Absence cannot be polled for: a bounded wait past the point where an answer would
    // have come shows none does.
    let waited = tokio::time::timeout(Duration::from_millis(100), pending.as_mut()).await;
    assert!(waited.is_err(), "a hanging DSP answered");
    assert_eq!(dsp.stats().requests, 1);
    assert_eq!(dsp.received().len(), 1, "the request was read");
    assert_eq!(dsp.stats().open_connections, 1);

    let shutdown = tokio::time::timeout(Duration::from_millis(1500), dsp.shutdown()).await;
    assert!(shutdown.is_ok(), "shutdown waited on the hanging request");
    // The graceful path answers the hanging request instead of cutting it.
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(resp);
    drop(c);

    // The client's own connection task ends once it has read the close; the mock's are gone.
    let gone = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(metrics.num_alive_tasks() == baseline)
    });
    assert!(
        gone.await,
        "tasks left behind: {}",
        metrics.num_alive_tasks()
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_mock() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let dsp = MockDsp::builder("dropped")
        .behavior(Behavior::Hang)
        .start()
        .await
        .unwrap();
    let addr = dsp.addr();
    // A raw connection with a request in flight, so the mock has a connection task too.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /bid HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let arrived = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(dsp.stats().requests == 1)
    });
    assert!(arrived.await, "the request never reached the mock");
    drop(dsp);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection stayed open after the handle was dropped"
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let gone = testkit::eventually(Duration::from_secs(5), || {
        std::future::ready(metrics.num_alive_tasks() == baseline)
    });
    assert!(
        gone.await,
        "tasks left behind: {}",
        metrics.num_alive_tasks()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

fn small_bidder(name: &str) -> MockDspBuilder {
    MockDsp::builder(name)
        .adm("<b>${AUCTION_PRICE}</b>")
        .cids(["c"])
        .adomains(["d.example"])
}

#[tokio::test]
async fn trickle_sends_headers_then_the_body_slowly() {
    let every = Duration::from_millis(2);
    let dsp = small_bidder("trickle")
        .behavior(Behavior::Trickle)
        .trickle_every(every)
        .start()
        .await
        .unwrap();
    let c = client();
    let req = Request::post(dsp.url())
        .body(Full::new(body_of(
            &json!({"id": "t", "imp": [{"id": "1"}]}),
        )))
        .unwrap();
    let started = Instant::now();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            bytes.extend_from_slice(&data);
        }
    }
    assert_eq!(bytes.len(), len);
    assert!(frames > 1, "the body came in one piece");
    // One byte per tick, the first tick one interval after the response was made, which is
    // after the request was sent.
    assert!(
        started.elapsed() >= every * len as u32,
        "{:?} for {len} bytes",
        started.elapsed()
    );
    let resp: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(resp["id"], "t");
    assert_eq!(bids_of(&resp)[0]["impid"], "1");
    dsp.shutdown().await;
}

#[tokio::test]
async fn shutdown_cuts_a_trickling_body() {
    let dsp = small_bidder("trickle-cut")
        .behavior(Behavior::Trickle)
        .trickle_every(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let c = client();
    let req = Request::post(dsp.url())
        .body(Full::new(body_of(
            &json!({"id": "t", "imp": [{"id": "1"}]}),
        )))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let reading = tokio::spawn(resp.into_body().collect());
    let shutdown = tokio::time::timeout(Duration::from_millis(1500), dsp.shutdown()).await;
    assert!(shutdown.is_ok(), "shutdown waited for the whole trickle");
    assert!(
        reading.await.unwrap().is_err(),
        "a cut body must not look complete"
    );
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let dsp = MockDsp::builder("ka").start().await.unwrap();
    let stream = tokio::net::TcpStream::connect(dsp.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for i in 0..20 {
        let req = Request::post("/bid")
            .header("host", "mock")
            .body(Full::new(body_of(&request(&format!("r{i}")))))
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(dsp.stats().requests, 20);
    assert_eq!(dsp.stats().open_connections, 1);
    drop(sender);
    conn.await.unwrap().unwrap();
    dsp.shutdown().await;
}

#[tokio::test]
async fn received_is_bounded_and_keeps_the_newest() {
    let dsp = MockDsp::builder("ring").record(3).start().await.unwrap();
    let c = client();
    for i in 0..5 {
        post(&c, dsp.url(), body_of(&request(&format!("r{i}")))).await;
    }
    let ids: Vec<Value> = dsp
        .received_json()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("r2"), json!("r3"), json!("r4")]);
    assert_eq!(dsp.stats().requests, 5);
    dsp.shutdown().await;
}

#[tokio::test]
async fn invalid_configurations_are_refused_before_binding() {
    let cases = [
        MockDsp::builder("p").bid_probability(1.5),
        MockDsp::builder("p").bid_probability(f64::NAN),
        MockDsp::builder("s").behavior(Behavior::Status(42)),
        MockDsp::builder("s").behavior(Behavior::Status(700)),
        MockDsp::builder("price").price(Price::Fixed(-1.0)),
        MockDsp::builder("lat").latency(Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(1),
        }),
        MockDsp::builder("t").trickle_every(Duration::ZERO),
    ];
    for b in cases {
        let name = b.name().to_owned();
        match b.start().await {
            Err(Error::InvalidConfig { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: expected InvalidConfig, got {other:?}"),
        }
    }
    let taken = MockDsp::builder("first").start().await.unwrap();
    match MockDsp::builder("second")
        .bind(taken.addr().to_string())
        .start()
        .await
    {
        Err(Error::Bind { name, .. }) => assert_eq!(name, "second"),
        other => panic!("expected Bind, got {other:?}"),
    }
    assert!(matches!(
        MockDsp::builder("x").bind("not an address").start().await,
        Err(Error::Bind { .. })
    ));
    taken.shutdown().await;
}

#[tokio::test]
async fn demo_fleet_bids_as_documented() {
    let fleet = MockFleet::start(mockdsp::demo::fleet()).await.unwrap();
    assert_eq!(fleet.len(), 3);
    let names: Vec<&str> = fleet.dsps().iter().map(|d| d.name()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let ports: HashSet<u16> = fleet.dsps().iter().map(|d| d.addr().port()).collect();
    assert_eq!(ports.len(), 3);
    assert!(fleet.dsps().iter().all(|d| d.addr().ip().is_loopback()));
    assert_eq!(
        fleet.endpoints()[1],
        ("beta".to_owned(), fleet.dsps()[1].url().to_owned())
    );

    let c = client();
    let imps: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("i{i}"), "banner": {"w": 300, "h": 250}}))
        .collect();
    let req = body_of(&json!({"id": "demo", "imp": imps, "tmax": 200}));
    for dsp in fleet.dsps() {
        let (s, _, body) = post(&c, dsp.url(), req.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", dsp.name());
        let resp: Value = serde_json::from_slice(&body).unwrap();
        let bids = bids_of(&resp);
        // 75–85% of 200 imps (standard deviation ~6): a bid rate well below 1, far above 0.
        assert!(
            (110..200).contains(&bids.len()),
            "{}: {} bids",
            dsp.name(),
            bids.len()
        );
        for b in &bids {
            let p = b["price"].as_f64().unwrap();
            match dsp.name() {
                "alpha" => assert!((0.5..=2.5).contains(&p), "{p}"),
                "beta" => assert!(p > 0.0, "{p}"),
                _ => assert_eq!(p, 1.8),
            }
            assert!(b["nurl"]
                .as_str()
                .unwrap()
                .contains(&dsp.addr().to_string()));
        }
    }
    assert!(fleet.get("gamma").is_some() && fleet.get("delta").is_none());
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_fleet_that_cannot_fully_start_stops_what_it_started() {
    let first = MockDsp::builder("ok");
    let broken = MockDsp::builder("broken").bid_probability(2.0);
    match MockFleet::start([first, broken]).await {
        Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, "broken"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

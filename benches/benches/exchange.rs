//! The whole auction path in process: a real exchange on loopback, three mock DSPs answering
//! at once, and a keep-alive client posting the IAB banner example. It measures our own cost
//! end to end (parse, fan-out over HTTP, auction, answer) with the DSP wait taken out.
//!
//! Run: `cargo bench -p benches --bench exchange`
//!
//! Latest figures (see BENCHMARKS.md for the machine and date):
//!   exchange/auction_3_dsps_sequential     191 µs per auction (client, exchange, 3 mocks on 2 cores)
//!   exchange/auction_3_dsps_32_in_flight   105 µs per auction, i.e. ~9 500 auctions/s
//!   (2026-11-28; 141 µs / ~7 100 per second before win events stopped costing a task each)

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use benches::IAB_BANNER;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use exchange::config::DspConfig;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mockdsp::{MockDsp, MockFleet, Price};

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("bench-exchange-{}", std::process::id()));
    let (addr, fleet, stop, server) = rt.block_on(async {
        let fleet = MockFleet::start([
            MockDsp::builder("a").price(Price::Fixed(1.0)),
            MockDsp::builder("b").price(Price::Fixed(1.5)),
            MockDsp::builder("c").price(Price::Fixed(2.0)),
        ])
        .await
        .unwrap();
        let mut config = exchange::Config {
            dsps: fleet
                .endpoints()
                .into_iter()
                .map(|(n, u)| DspConfig::new(n, u))
                .collect(),
            ..exchange::Config::default()
        };
        config.events.file = Some(dir.join("events.jsonl"));
        config.tracking.spool_dir = dir.join("spool");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(exchange::run(listener, config, async {
            let _ = stopped.await;
        }));
        (addr, fleet, stop, server)
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://{addr}/openrtb2/auction");
    let auction = |client: Client<_, Full<Bytes>>, url: String| async move {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(IAB_BANNER)))
            .unwrap();
        let response = client.request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    };

    let mut group = c.benchmark_group("exchange");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("auction_3_dsps_sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    auction(client.clone(), url.clone()).await;
                }
                started.elapsed()
            })
        })
    });
    // Time per auction with 32 in flight: 1 / this is the node's auctions per second on
    // this machine, client and mock DSPs included.
    group.bench_function("auction_3_dsps_32_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                stream::iter(0..iters)
                    .map(|_| auction(client.clone(), url.clone()))
                    .buffer_unordered(32)
                    .count()
                    .await;
                started.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(async {
        let _ = stop.send(());
        // The exchange stops before its DSPs, so no auction is left calling a stopped one.
        let _ = server.await;
        fleet.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);

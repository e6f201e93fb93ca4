//! The auction engine: filters, clearing and loss reasons for one request.
//!
//! Run: `cargo bench -p benches --bench auction`
//!
//! Latest figures (see BENCHMARKS.md for the machine and date):
//!   auction/1_imp_x_3_bids                   0.23 µs
//!   auction/1_imp_x_10_bids                  0.41 µs
//!   auction/1_imp_x_50_bids                  1.97 µs
//!   auction/5_imp_x_10_bids                  2.52 µs
//!   auction/1_imp_x_10_bids_40_badv_20_bcat  3.44 µs
//! (shared 2-core machine: single runs have spread by up to ±30% around these.)

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::hint::black_box;

use auction::{Rules, Unlimited};
use benches::AuctionFixture;
use criterion::{criterion_group, criterion_main, Criterion};

fn auction(c: &mut Criterion) {
    let mut group = c.benchmark_group("auction");
    // 0.01 CPM, the exchange's default increment.
    let rules = Rules::default();
    let ledger = Unlimited::<()>::new();
    for (imps, bids) in [(1, 3), (1, 10), (1, 50), (5, 10)] {
        let fixture = AuctionFixture::new(imps, bids);
        let request = fixture.request();
        let candidates = fixture.bids(bids);
        group.bench_function(format!("{imps}_imp_x_{bids}_bids"), |b| {
            b.iter(|| {
                let outcome =
                    auction::run(black_box(&request), black_box(&candidates), &rules, &ledger);
                black_box(outcome.imps.len())
            })
        });
    }
    // Publishers often block dozens of advertisers and categories; every bid is checked
    // against all of them (40 `badv` also spills the engine's inline list of 8).
    let fixture = AuctionFixture::new(1, 10);
    let badv: Vec<Cow<'static, str>> = (0..40)
        .map(|i| Cow::Owned(format!("blocked-{i}.example")))
        .collect();
    let bcat: Vec<Cow<'static, str>> = (7..27).map(|i| Cow::Owned(format!("IAB{i}"))).collect();
    let request = auction::Request {
        badv: &badv,
        bcat: &bcat,
        ..fixture.request()
    };
    let candidates = fixture.bids(10);
    group.bench_function("1_imp_x_10_bids_40_badv_20_bcat", |b| {
        b.iter(|| {
            let outcome =
                auction::run(black_box(&request), black_box(&candidates), &rules, &ledger);
            black_box(outcome.imps.len())
        })
    });
    group.finish();
}

criterion_group!(benches, auction);
criterion_main!(benches);

//! The wire model's hot paths: parse + validate, the body each DSP receives, reading a DSP
//! answer, and writing a winning bid with its macros substituted.
//!
//! Run: `cargo bench -p benches --bench openrtb`
//! (one group: `cargo bench -p benches --bench openrtb -- parse_validate`)
//!
//! Latest figures, issue 9, 2 shared cores (other builds running, so each is the range of
//! three runs alternated with the previous build; see BENCHMARKS.md for the machine):
//!
//!   bench                                   before          after
//!   parse_validate/iab26_banner_604B        2.2-3.0 µs      1.4-1.75 µs   (target <= 3 µs)
//!   parse_validate/iab26_app_banner_1401B   3.5-5.4 µs      2.8-4.4 µs
//!   parse_validate/iab26_video_2549B        4.5-6.6 µs      3.7-4.9 µs
//!   forward/outbound_new_app_banner         121-145 ns      99-138 ns     (once per auction)
//!   forward/render_per_dsp_app_banner       23-37 ns        23-34 ns      (per DSP)
//!   read_answer/1_bids_754B                 1.9-2.9 µs      2.0-2.9 µs
//!   read_answer/5_bids_3454B                7.9-12.7 µs     8.0-12.1 µs
//!   winning_bid/macros_adm_nurl_burl        403-620 ns      401-608 ns
//!   winning_bid/rewrite_bid_json            290-354 ns      300-498 ns
//!
//! What moved parse + validate: boxing the large request objects (serde moves a struct
//! several times while building it; `BidRequest` was 2.4 KB, `Imp` 1.6 KB) and checking
//! UTF-8 once per body instead of once per string. `read_answer` is two serde_json scans
//! per bid (the answer, capturing each bid's raw text, then the bid itself); serde_json
//! cannot capture a value's text and parse it in one pass, so that is where it stays.

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use benches::{dsp_answer, IAB_APP_BANNER, IAB_BANNER, IAB_VIDEO};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use money::CpmMicros;
use openrtb::forward::Outbound;
use openrtb::macros::{expand, expand_url, MacroValues};
use openrtb::response::{read_answer, Answer, BidEdits, Expect};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_validate");
    for (name, body) in [
        ("iab26_banner_604B", IAB_BANNER),
        ("iab26_app_banner_1401B", IAB_APP_BANNER),
        ("iab26_video_2549B", IAB_VIDEO),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = openrtb::request::parse(black_box(body)).unwrap();
                black_box(req.imp.len())
            })
        });
    }
    group.finish();
}

fn forward(c: &mut Criterion) {
    let req = openrtb::request::parse(IAB_APP_BANNER).unwrap();
    let mut group = c.benchmark_group("forward");
    group.bench_function("outbound_new_app_banner", |b| {
        b.iter(|| black_box(Outbound::new(black_box(IAB_APP_BANNER), &req, 2, "USD")))
    });
    let outbound = Outbound::new(IAB_APP_BANNER, &req, 2, "USD");
    let mut out = Vec::with_capacity(outbound.len_hint() + 16);
    group.bench_function("render_per_dsp_app_banner", |b| {
        b.iter(|| {
            out.clear();
            outbound.render(black_box(27), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn answers(c: &mut Criterion) {
    let imp_ids = ["1"];
    let expect = Expect {
        request_id: "req-1",
        imp_ids: &imp_ids,
        currency: "USD",
        rated: &[],
    };
    let mut group = c.benchmark_group("read_answer");
    for bids in [1, 5] {
        let body = dsp_answer("req-1", bids);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{bids}_bids_{}B", body.len()), |b| {
            b.iter(|| match read_answer(200, black_box(&body), &expect) {
                Answer::Bids { accepted, .. } => black_box(accepted.len()),
                _ => unreachable!("the fixture has bids"),
            })
        });
    }
    group.finish();
}

fn winning_bid(c: &mut Criterion) {
    let imp_ids = ["1"];
    let expect = Expect {
        request_id: "req-1",
        imp_ids: &imp_ids,
        currency: "USD",
        rated: &[],
    };
    let body = dsp_answer("req-1", 1);
    let Answer::Bids {
        accepted, response, ..
    } = read_answer(200, &body, &expect)
    else {
        unreachable!("the fixture has a bid")
    };
    let bid = &accepted[0].bid;
    let adm_template = bid.adm.map(|s| s.decode()).unwrap_or_default();
    let nurl_template = bid.nurl.map(|s| s.decode()).unwrap_or_default();
    let burl_template = bid.burl.map(|s| s.decode()).unwrap_or_default();
    let values = MacroValues {
        auction_id: Some("req-1"),
        bid_id: response.bidid.as_deref(),
        imp_id: Some("1"),
        seat_id: Some("seat-1"),
        ad_id: bid.adid.as_deref(),
        price: Some(CpmMicros::new(1_234_567)),
        currency: Some("USD"),
        loss: Some(0),
        min_to_win: Some(CpmMicros::new(1_224_567)),
        ..MacroValues::default()
    };
    let mut group = c.benchmark_group("winning_bid");
    group.bench_function("macros_adm_nurl_burl", |b| {
        b.iter(|| {
            let adm = expand(&adm_template, black_box(&values));
            let nurl = expand_url(&nurl_template, &values);
            let burl = expand_url(&burl_template, &values);
            black_box((adm.len(), nurl.len(), burl.len()))
        })
    });
    let adm = expand(&adm_template, &values).into_owned();
    let nurl = expand_url(&nurl_template, &values).into_owned();
    let mut out = Vec::with_capacity(2048);
    group.bench_function("rewrite_bid_json", |b| {
        b.iter(|| {
            out.clear();
            bid.rewrite(
                &BidEdits {
                    price: CpmMicros::new(1_234_567),
                    adm: Some(&adm),
                    nurl: Some(&nurl),
                    burl: None,
                    lurl: None,
                    drop_nurl: false,
                },
                &mut out,
            );
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, parse, forward, answers, winning_bid);
criterion_main!(benches);

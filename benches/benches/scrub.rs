//! Privacy and supply chain on the fan-out path: the body a DSP receives unscrubbed, scrubbed
//! for COPPA or GDPR, with the exchange's supply-chain node, and the per-auction decision
//! (TCF v2 decode included).
//!
//! Run: `cargo bench -p benches --bench scrub`
//!
//! Figures (2 shared cores, other builds and load tests running; see BENCHMARKS.md), for the
//! IAB app banner with an IP, a precise geo, `ifa` and `user.id` (1.6 KB):
//!
//!   bench                               time (two runs)   when
//!   scrub/outbound_plain                104-125 ns        once per auction (the unchanged splice)
//!   scrub/outbound_coppa                3.5-3.6 µs        once per auction with COPPA
//!   scrub/outbound_restricted           4.4-7.1 µs        once per auction with a GDPR/US scrub
//!   scrub/outbound_schain               1.9-2.9 µs        once per auction with [supply_chain]
//!   scrub/render_plain                  30-32 ns          per DSP
//!   scrub/render_coppa                  30-31 ns          per DSP
//!   privacy_decision/no_signal          14 ns             once per auction
//!   privacy_decision/us_privacy         13 ns             once per auction
//!   privacy_decision/gpp_usnat          480 ns            once per auction (GPP decode)
//!   privacy_decision/gdpr_tcf           950 ns            once per auction (TCF v2 decode)
//!   privacy_decision/tcf_decode         1.0 µs            the `iab_gpp` decode alone
//!
//! A scrubbed body costs one scan of the body's top level plus `device` and `user` rebuilt from
//! their members' bytes; re-serialising through `serde_json::Value` would cost the whole body's
//! tree instead and lose the publisher's number spelling and key order.
//!
//! Each body is built once per auction and kind (plain, restricted, COPPA) and shared by the
//! DSPs that get it; only `render` runs per DSP, and it is the same for every kind.

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use benches::IAB_APP_BANNER;
use criterion::{criterion_group, criterion_main, Criterion};
use exchange::privacy::consent::Tcf;
use exchange::privacy::Decision;
use openrtb::forward::{Document, Node, Outbound, Scrub};

/// A published TCF v2 string: purposes 1-3, vendors 2, 6, 8.
const TCF: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";

/// The IAB app banner with what a typical mobile request also carries: an IP and a precise
/// geo; `regs` as given.
fn typical(regs: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(IAB_APP_BANNER).unwrap();
    v["device"]["ip"] = "192.0.2.77".into();
    v["device"]["geo"] = serde_json::json!({"lat": 40.7128, "lon": -74.006, "country": "USA",
        "region": "NY", "city": "New York", "zip": "10001", "type": 1});
    v["regs"] = regs;
    v["user"]["consent"] = TCF.into();
    serde_json::to_vec(&v).unwrap()
}

fn bodies(c: &mut Criterion) {
    let body = typical(serde_json::json!({"coppa": 1}));
    let req = openrtb::request::parse(&body).unwrap();
    let mut group = c.benchmark_group("scrub");
    group.bench_function("outbound_plain", |b| {
        b.iter(|| black_box(Outbound::new(black_box(&body), &req, 2, "USD")))
    });
    for (name, level) in [
        ("outbound_coppa", Scrub::Coppa),
        ("outbound_restricted", Scrub::Restricted),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let doc = Document::read(black_box(&body)).unwrap();
                black_box(Outbound::with_splice(
                    &body,
                    &req,
                    2,
                    "USD",
                    &doc.scrub(level),
                ))
            })
        });
    }
    group.bench_function("outbound_schain", |b| {
        let node = Node {
            asi: "your-exchange.example",
            sid: "agltb3B1Yi1pbmNyDAsSA0FwcBiJkfIUDA",
            rid: "IxexyLDIIk",
        };
        b.iter(|| {
            let doc = Document::read(black_box(&body)).unwrap();
            black_box(Outbound::with_splice(
                &body,
                &req,
                2,
                "USD",
                &doc.schain(node),
            ))
        })
    });
    let plain = Outbound::new(&body, &req, 2, "USD");
    let doc = Document::read(&body).unwrap();
    let coppa = Outbound::with_splice(&body, &req, 2, "USD", &doc.scrub(Scrub::Coppa));
    for (name, outbound) in [("render_plain", &plain), ("render_coppa", &coppa)] {
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(outbound.len_hint());
            b.iter(|| {
                out.clear();
                outbound.render(black_box(87), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("privacy_decision");
    group.bench_function("tcf_decode", |b| {
        b.iter(|| black_box(Tcf::decode(black_box(TCF))))
    });
    for (name, regs) in [
        ("no_signal", serde_json::json!({})),
        ("gdpr_tcf", serde_json::json!({"gdpr": 1})),
        ("us_privacy", serde_json::json!({"us_privacy": "1YYN"})),
        (
            "gpp_usnat",
            serde_json::json!({"gpp": "DBABLA~BVVVVVVVVWA", "gpp_sid": [7]}),
        ),
    ] {
        let body = typical(regs);
        let req = openrtb::request::parse(&body).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| black_box(Decision::of(black_box(&req))))
        });
    }
    group.finish();
}

criterion_group!(benches, bodies, decisions);
criterion_main!(benches);

//! Fraud screening (`exchange::screen::Screen::check`) on the request path: a clean request
//! against a 1 000 000-range IP blocklist with the bot user-agent list on, and the parts.
//!
//! Run: `nice -n 19 cargo bench -p benches --bench screen`
//!
//! Latest figures (2-core machine shared with a load test, nice 19, so ±15%; loading the
//! 1 000 000 ranges and the bot list took 0.40 s):
//!   screen/check_clean_1m_ranges_bots         0.54 µs
//!   screen/check_clean_1m_ranges_no_bots      0.40 µs
//!   screen/check_clean_1m_ranges_bots_rates   0.94 µs (per-IP and per-device limits on)
//!   screen/check_googlebot                    0.27 µs (screened at the bot rule)
//!   screen/is_bot_chrome                      0.50 µs (the isbot regex alone)

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use exchange::config::FraudConfig;
use exchange::screen::{Bots, Screen};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const RANGES: u32 = 1_000_000;

fn request(ua: &str) -> String {
    serde_json::json!({
        "id": "bench-1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}],
        "site": {"id": "s1", "domain": "news.example", "page": "https://www.news.example/story/1"},
        "device": {"ip": "192.0.2.10", "ua": ua, "ifa": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
        "tmax": 200
    })
    .to_string()
}

/// A blocklist of `RANGES` ranges spread over the IPv4 space (a quarter /24s, the rest single
/// addresses), none covering 192.0.2.0/24, plus a domain list.
fn write_lists(dir: &std::path::Path) -> FraudConfig {
    std::fs::create_dir_all(dir).unwrap();
    let ips = dir.join("ips.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ips).unwrap());
    writeln!(out, "# generated data-centre ranges").unwrap();
    let mut x: u32 = 0x9E37_79B9;
    let mut written = 0;
    while written < RANGES {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let addr = Ipv4Addr::from(x);
        if addr.octets()[..3] == [192, 0, 2] {
            continue;
        }
        if written % 4 == 0 {
            writeln!(out, "{}/24", Ipv4Addr::from(x & 0xFFFF_FF00)).unwrap();
        } else {
            writeln!(out, "{addr}").unwrap();
        }
        written += 1;
    }
    drop(out);
    let domains = dir.join("domains.txt");
    std::fs::write(&domains, "blocked.example\nmfa.example\n").unwrap();
    FraudConfig {
        ip_blocklist_files: vec![ips],
        domain_blocklist_files: vec![domains],
        ..FraudConfig::default()
    }
}

fn screen(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("screen-bench-{}", std::process::id()));
    let config = write_lists(&dir);
    let started = Instant::now();
    let full = Screen::from_config(&config).unwrap();
    eprintln!(
        "loading {RANGES} ranges and the bot list took {:?}",
        started.elapsed()
    );
    let no_bots = Screen::from_config(&FraudConfig {
        bot_user_agents: false,
        ..config.clone()
    })
    .unwrap();
    let rates = Screen::from_config(&FraudConfig {
        max_requests_per_ip: Some(u32::MAX),
        max_requests_per_device: Some(u32::MAX),
        ..config.clone()
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let clean = request(CHROME);
    let clean = openrtb::request::parse(clean.as_bytes()).unwrap();
    let bot = request("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    let bot = openrtb::request::parse(bot.as_bytes()).unwrap();
    assert_eq!(full.check(&clean, Instant::now()), None);
    assert!(full.check(&bot, Instant::now()).is_some());

    let mut g = c.benchmark_group("screen");
    g.bench_function("check_clean_1m_ranges_bots", |b| {
        b.iter(|| black_box(full.check(black_box(&clean), Instant::now())))
    });
    g.bench_function("check_clean_1m_ranges_no_bots", |b| {
        b.iter(|| black_box(no_bots.check(black_box(&clean), Instant::now())))
    });
    g.bench_function("check_clean_1m_ranges_bots_rates", |b| {
        b.iter(|| black_box(rates.check(black_box(&clean), Instant::now())))
    });
    g.bench_function("check_googlebot", |b| {
        b.iter(|| black_box(full.check(black_box(&bot), Instant::now())))
    });
    let bots = Bots::new();
    g.bench_function("is_bot_chrome", |b| {
        b.iter(|| black_box(bots.is_bot(black_box(CHROME))))
    });
    g.finish();
}

criterion_group!(benches, screen);
criterion_main!(benches);

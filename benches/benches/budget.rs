//! Budget counters on the request path: finding a campaign and charging it, alone and with
//! several threads charging the same campaign at once.
//!
//! Run: `cargo bench -p benches --bench budget`
//!
//! Latest figures (see BENCHMARKS.md for the machine and date):
//!   budget/lookup                          28 ns
//!   budget/reserve_1_thread                13 ns
//!   budget/lookup_and_reserve_1_thread     40 ns
//!   budget/reserve_2_threads_contended     65 ns per charge per thread
//!   budget/reserve_4_threads_contended    116 ns (4 threads on 2 cores)

// A benchmark is a harness like a test: a broken setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use budget::{BudgetConfig, Budgets, CampaignSeed, Lookup, MemoryStore};
use criterion::{criterion_group, criterion_main, Criterion};

const COST: u64 = 2_000;

/// A node holding one enormous lease, so no charge in the run can fail for lack of money.
fn budgets(rt: &tokio::runtime::Runtime) -> Arc<Budgets> {
    let cfg = BudgetConfig {
        min_lease_micros: 8_000_000_000_000_000,
        campaigns: vec![CampaignSeed {
            dsp: "alpha".into(),
            cid: "cmp-1".into(),
            budget_micros: budget::MAX_MICROS,
            paused: false,
            ..CampaignSeed::new("", "", 0)
        }],
        ..BudgetConfig::default()
    };
    rt.block_on(async {
        let recorder = Arc::new(metrics::NoopRecorder);
        let (budgets, _sync) = Budgets::start(cfg, Arc::new(MemoryStore::new()), recorder)
            .await
            .unwrap();
        budgets
    })
}

fn reserve(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let budgets = budgets(&rt);
    let Lookup::Found(campaign) = budgets.lookup("alpha", Some("cmp-1")) else {
        panic!("the seeded campaign is there")
    };
    assert!(
        campaign.available() > 1_000_000_000_000,
        "the lease was granted"
    );

    let mut group = c.benchmark_group("budget");
    group.bench_function("lookup", |b| {
        b.iter(|| {
            let view = budgets.view();
            black_box(matches!(
                view.lookup(black_box("alpha"), Some(black_box("cmp-1"))),
                Lookup::Found(_)
            ))
        })
    });
    group.bench_function("reserve_1_thread", |b| {
        b.iter(|| black_box(campaign.can_cover(COST) && campaign.try_charge(black_box(COST))))
    });
    group.bench_function("lookup_and_reserve_1_thread", |b| {
        b.iter(|| {
            let view = budgets.view();
            match view.lookup(black_box("alpha"), Some(black_box("cmp-1"))) {
                Lookup::Found(c) => black_box(c.can_cover(COST) && c.try_charge(COST)),
                _ => false,
            }
        })
    });
    for threads in [2usize, 4] {
        // Time per charge as one thread sees it while `threads` threads charge the same
        // campaign: the cost of contention on its atomic.
        group.bench_function(format!("reserve_{threads}_threads_contended"), |b| {
            b.iter_custom(|iters| {
                let start = Arc::new(std::sync::Barrier::new(threads));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let campaign = campaign.clone();
                        let start = start.clone();
                        std::thread::spawn(move || {
                            start.wait();
                            let t = Instant::now();
                            for _ in 0..iters {
                                black_box(campaign.try_charge(black_box(COST)));
                            }
                            t.elapsed()
                        })
                    })
                    .collect();
                let total: Duration = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .sum();
                total / threads as u32
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reserve);
criterion_main!(benches);

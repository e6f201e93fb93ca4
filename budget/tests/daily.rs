//! A simulated day on an injected clock: two nodes bidding without pause against a campaign
//! with a daily budget and even pacing, on both stores. Spend never passes the straight line
//! nor the daily cap (exact), stays within 10% of the line, and starts again the next day in
//! the campaign's own time zone until the lifetime budget stops it, to the micro.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use budget::{
    BudgetConfig, Budgets, CampaignSeed, Clock, Lookup, ManualClock, MemoryStore, Pacing,
    RedisStore, Store,
};
use std::sync::Arc;
use std::time::Duration;
use testkit::redis::RedisServer;
mod common;

const DAY_MS: u64 = 86_400_000;
/// 2026-12-07T00:00 in Tokyo (UTC+9, no daylight saving) = 2026-12-06T15:00Z.
const TOKYO_DAY: u64 = 1_796_601_600_000 - 9 * 3_600_000;
const DAILY: u64 = 10_000_000;
const BUDGET: u64 = 15_000_000;
const PRICE: u64 = 1_000;

fn config(clock: Clock, pacing: Pacing) -> BudgetConfig {
    BudgetConfig {
        sync_interval_ms: 10,
        full_sync_ms: 10,
        campaigns: vec![CampaignSeed {
            daily_budget_micros: Some(DAILY),
            pacing,
            timezone: "Asia/Tokyo".to_owned(),
            ..CampaignSeed::new("acme", "c1", BUDGET)
        }],
        clock,
        ..BudgetConfig::default()
    }
}

/// Charges `PRICE` until the node's lease is dry, as a flood of winning bids would.
fn bid_until_dry(node: &Budgets) {
    let view = node.view();
    let Lookup::Found(c) = view.lookup("acme", Some("c1")) else {
        panic!("campaign known");
    };
    while c.can_cover(PRICE) && c.try_charge(PRICE) {}
}

fn charged(nodes: &[Arc<Budgets>]) -> u64 {
    nodes
        .iter()
        .map(|n| n.local("acme", "c1").unwrap().charged_total)
        .sum()
}

/// The straight line of the day: `DAILY × elapsed / day`.
fn line(t: u64) -> u64 {
    DAILY * t / DAY_MS
}

/// One step of the simulated clock: every node syncs then bids until dry.
async fn step(nodes: &[Arc<Budgets>], hand: &ManualClock, at_ms: u64) {
    hand.set(at_ms);
    for node in nodes {
        node.sync_once().await.unwrap();
        bid_until_dry(node);
    }
}

async fn nodes(
    store: Arc<dyn Store>,
    pacing: Pacing,
    start_ms: u64,
) -> (Vec<Arc<Budgets>>, ManualClock) {
    let (clock, hand) = Clock::manual(start_ms);
    let nodes: Vec<Arc<Budgets>> = (0..2)
        .map(|_| {
            Budgets::new(
                config(clock.clone(), pacing),
                store.clone(),
                common::recorder(),
            )
            .unwrap()
        })
        .collect();
    nodes[0].seed().await.unwrap();
    (nodes, hand)
}

async fn even_day(store: Arc<dyn Store>, step_ms: u64) {
    let (nodes, hand) = nodes(store, Pacing::Even, TOKYO_DAY).await;
    let mut worst = 0.0f64;
    // Every step, and the day's last millisecond.
    let times: Vec<u64> = (1..DAY_MS / step_ms)
        .map(|i| i * step_ms)
        .chain([DAY_MS - 1])
        .collect();
    for &t in &times {
        step(&nodes, &hand, TOKYO_DAY + t).await;
        let spent = charged(&nodes);
        let line = line(t);
        assert!(spent <= line, "at {t} ms: {spent} over the line {line}");
        // Within 10% once the line is worth a few impressions per node.
        if line >= 20 * PRICE {
            let off = (line - spent) as f64 / line as f64;
            worst = worst.max(off);
            assert!(
                off <= 0.10,
                "at {t} ms: {spent} is {off:.3} under the line {line}"
            );
        }
    }
    // The line reaches the daily budget only at midnight: the day ends a remnant short of it.
    let day_one = charged(&nodes);
    assert!(
        (DAILY - 2 * PRICE..DAILY).contains(&day_one),
        "day one: {day_one}"
    );
    eprintln!("step {step_ms} ms: worst shortfall {worst:.4} of the line");

    // The next Tokyo day: a new day's line, until the lifetime budget stops it exactly.
    for &t in &times {
        step(&nodes, &hand, TOKYO_DAY + DAY_MS + t).await;
        let today = charged(&nodes) - day_one;
        assert!(today <= line(t), "day two at {t} ms: {today}");
    }
    assert_eq!(charged(&nodes), BUDGET);
    step(&nodes, &hand, TOKYO_DAY + DAY_MS + DAY_MS / 2).await;
    let state = nodes[0].state("acme", "c1").await.unwrap().unwrap();
    assert_eq!((state.spent + state.held, state.day), (BUDGET, 20_261_208));
}

#[tokio::test]
async fn an_even_day_on_the_memory_store_follows_the_line() {
    // One step a minute: 1440 sync rounds per node and day.
    even_day(Arc::new(MemoryStore::new()), 60_000).await;
}

#[tokio::test]
async fn an_even_day_on_redis_follows_the_line() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    // One step every five minutes keeps the test quick; the rule is the same script.
    even_day(Arc::new(store), 300_000).await;
}

#[tokio::test]
async fn an_asap_campaign_stops_at_the_daily_cap_and_starts_again_at_midnight_in_its_zone() {
    let (nodes, hand) = nodes(
        Arc::new(MemoryStore::new()),
        Pacing::Asap,
        TOKYO_DAY + 3_600_000,
    )
    .await;
    // Bid until nothing moves: the cap, to the micro, whatever the number of rounds.
    for i in 0..200 {
        step(&nodes, &hand, TOKYO_DAY + 3_600_000 + i * 1_000).await;
    }
    assert_eq!(charged(&nodes), DAILY);
    // 23:59:59 Tokyo time: still the same day.
    step(&nodes, &hand, TOKYO_DAY + DAY_MS - 1_000).await;
    assert_eq!(charged(&nodes), DAILY);
    // Midnight in Tokyo (15:00 UTC): a new day.
    for i in 0..200 {
        step(&nodes, &hand, TOKYO_DAY + DAY_MS + i * 1_000).await;
    }
    assert_eq!(
        charged(&nodes),
        BUDGET,
        "day two stops at the lifetime budget"
    );
    let state = nodes[1].state("acme", "c1").await.unwrap().unwrap();
    assert_eq!(
        (state.day, state.timezone.as_str()),
        (20_261_208, "Asia/Tokyo")
    );
}

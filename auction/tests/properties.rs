//! Property tests: on random requests and bids, the auction's invariants hold against a plain
//! re-statement of the rules (who is eligible, who wins, what is paid).

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::borrow::Cow;

use auction::{
    run, AuctionType, BidResult, Candidate, Deal, Imp, LossReason, Outcome, Request, Rules,
    Unlimited,
};
use common::TestLedger;
use money::{CpmMicros, Micros};
use proptest::prelude::*;

const DEAL_IDS: [&str; 3] = ["d0", "d1", "d2"];

#[derive(Debug, Clone)]
struct DealSpec {
    floor: u64,
    at: Option<AuctionType>,
}

#[derive(Debug, Clone)]
struct ImpSpec {
    floor: u64,
    deals: Vec<DealSpec>,
    private: bool,
}

#[derive(Debug, Clone)]
struct BidSpec {
    imp: usize,
    price: u64,
    /// 0: none, 1..=3: `DEAL_IDS[n - 1]`, 4: an unknown id, 5: the empty id.
    deal: u8,
    campaign: Option<u32>,
}

impl BidSpec {
    fn deal_id(&self) -> Option<&'static str> {
        match self.deal {
            0 => None,
            n @ 1..=3 => Some(DEAL_IDS[usize::from(n) - 1]),
            4 => Some("unknown"),
            _ => Some(""),
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    at: AuctionType,
    increment: u64,
    seed: u64,
    imps: Vec<ImpSpec>,
    bids: Vec<BidSpec>,
}

fn auction_type() -> impl Strategy<Value = AuctionType> {
    prop_oneof![
        Just(AuctionType::FirstPrice),
        Just(AuctionType::SecondPrice),
        Just(AuctionType::FixedPrice),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    scenario_of(12)
}

/// Up to `max_bids` candidates spread over one to three imps.
fn scenario_of(max_bids: usize) -> impl Strategy<Value = Scenario> {
    let deal = (0..1_500_000u64, proptest::option::of(auction_type()))
        .prop_map(|(floor, at)| DealSpec { floor, at });
    let imp = (
        0..1_000_000u64,
        proptest::collection::vec(deal, 0..=3),
        any::<bool>(),
    )
        .prop_map(|(floor, deals, private)| ImpSpec {
            floor,
            deals,
            private,
        });
    (
        auction_type(),
        0..50_000u64,
        any::<u64>(),
        proptest::collection::vec(imp, 1..=3),
    )
        .prop_flat_map(move |(at, increment, seed, imps)| {
            // One past the last imp, so that candidates for a missing imp are generated too.
            let bid = (
                0..=imps.len(),
                prop_oneof![0..2_000_000u64, Just(1_000_000u64)],
                0..=5u8,
                proptest::option::of(0..4u32),
            )
                .prop_map(|(imp, price, deal, campaign)| BidSpec {
                    imp,
                    price,
                    deal,
                    campaign,
                });
            proptest::collection::vec(bid, 0..=max_bids).prop_map(move |bids| Scenario {
                at,
                increment,
                seed,
                imps: imps.clone(),
                bids,
            })
        })
}

fn run_scenario<L: auction::Ledger<Campaign = u32>>(s: &Scenario, ledger: &L) -> Outcome {
    let imps = s
        .imps
        .iter()
        .map(|spec| Imp {
            id: "imp",
            floor: CpmMicros::new(spec.floor),
            deals: spec
                .deals
                .iter()
                .zip(DEAL_IDS)
                .map(|(d, id)| Deal {
                    id,
                    floor: CpmMicros::new(d.floor),
                    at: d.at,
                    wseat: &[],
                })
                .collect(),
            private_auction: spec.private,
            battr: &[],
        })
        .collect();
    let req = Request {
        at: s.at,
        imps,
        bcat: &[],
        badv: &[],
        bapp: &[],
        wseat: &[],
        bseat: &[],
        tie_seed: s.seed,
    };
    let adomain: [Cow<'static, str>; 1] = [Cow::Borrowed("example.com")];
    let bids: Vec<Candidate<'_, u32>> = s
        .bids
        .iter()
        .enumerate()
        .map(|(j, b)| Candidate {
            imp: b.imp,
            bidder: j as u32,
            seat: "seat",
            price: CpmMicros::new(b.price),
            pay_cap: None,
            deal_id: b.deal_id(),
            adomain: &adomain,
            cat: &[],
            attr: &[],
            bundle: None,
            campaign: b.campaign,
        })
        .collect();
    let rules = Rules {
        increment: CpmMicros::new(s.increment),
    };
    run(&req, &bids, &rules, ledger)
}

/// The rules restated: a bid's class (`Some(deal index)` or `None` for the open market) and
/// floor, or the code it must lose with before competing.
fn expected_eligibility(s: &Scenario, b: &BidSpec) -> Result<(Option<usize>, u64), u16> {
    let Some(imp) = s.imps.get(b.imp) else {
        return Err(1);
    };
    let id = b.deal_id().filter(|d| !d.is_empty());
    let deal = id.and_then(|id| DEAL_IDS[..imp.deals.len()].iter().position(|d| *d == id));
    match deal {
        Some(k) if b.price >= imp.deals[k].floor => Ok((Some(k), imp.deals[k].floor)),
        Some(_) => Err(101),
        None if imp.private && id.is_some() => Err(4),
        None if imp.private => Err(213),
        None if b.price >= imp.floor => Ok((None, imp.floor)),
        None => Err(100),
    }
}

/// Every structural invariant plus "the best of the preferred class wins at the right price",
/// over the bids their campaign did not knock out.
fn check_outcome(s: &Scenario, out: &Outcome) -> Result<(), TestCaseError> {
    prop_assert_eq!(out.bids.len(), s.bids.len(), "one result per bid");
    prop_assert_eq!(out.imps.len(), s.imps.len(), "one result per imp");
    let won = out.bids.iter().filter(|r| r.is_won()).count();
    let sold = out.imps.iter().filter(|r| r.winner.is_some()).count();
    prop_assert_eq!(won, sold, "exactly the imp winners are Won");

    for (j, b) in s.bids.iter().enumerate() {
        let budget_loss = matches!(
            out.bids[j],
            BidResult::Lost {
                reason: LossReason::CampaignBudgetExhausted | LossReason::CampaignInactive,
                ..
            }
        );
        match expected_eligibility(s, b) {
            Err(code) => prop_assert_eq!(out.bids[j].loss_code(), code, "bid {}", j),
            Ok(_) if budget_loss => prop_assert!(b.campaign.is_some(), "bid {} has no campaign", j),
            Ok(_) => {}
        }
    }

    for (i, imp) in s.imps.iter().enumerate() {
        // Competitors: eligible and not knocked out by their campaign.
        let competing: Vec<(usize, Option<usize>, u64)> = s
            .bids
            .iter()
            .enumerate()
            .filter(|(j, b)| b.imp == i && !matches!(out.bids[*j].loss_code(), 500 | 501))
            .filter_map(|(j, b)| {
                expected_eligibility(s, b)
                    .ok()
                    .map(|(k, _)| (j, k, b.price))
            })
            .collect();
        let deal_class = competing.iter().any(|(_, k, _)| k.is_some());
        let class: Vec<_> = competing
            .iter()
            .filter(|(_, k, _)| k.is_some() == deal_class)
            .collect();
        let result = out.imps[i];
        let Some(w) = result.winner else {
            prop_assert!(
                class.is_empty(),
                "imp {} unsold with competitors {:?}",
                i,
                class
            );
            continue;
        };
        prop_assert_eq!(s.bids[w].imp, i);
        let (_, deal, price) = **class
            .iter()
            .find(|(j, _, _)| *j == w)
            .ok_or_else(|| TestCaseError::fail(format!("winner {w} not in the preferred class")))?;
        let best = class.iter().map(|(_, _, p)| *p).max().unwrap_or(0);
        prop_assert_eq!(price, best, "imp {}: the highest bid of the class wins", i);
        prop_assert_eq!(result.deal, deal);

        let floor = deal.map_or(imp.floor, |k| imp.deals[k].floor);
        let clearing = result.clearing.get();
        prop_assert!(
            clearing <= price,
            "imp {}: pays {} over its bid {}",
            i,
            clearing,
            price
        );
        prop_assert!(
            clearing >= floor,
            "imp {}: pays {} under the floor {}",
            i,
            clearing,
            floor
        );
        prop_assert_eq!(
            out.bids[w],
            BidResult::Won {
                clearing: CpmMicros::new(clearing)
            }
        );

        let at = deal.and_then(|k| imp.deals[k].at).unwrap_or(s.at);
        let runner_up = class
            .iter()
            .filter(|(j, _, _)| *j != w)
            .map(|(_, _, p)| *p)
            .max();
        let want = match at {
            AuctionType::FirstPrice => price,
            AuctionType::SecondPrice => runner_up
                .map_or(floor, |r| r.max(floor))
                .saturating_add(s.increment)
                .min(price),
            AuctionType::FixedPrice => floor,
        };
        prop_assert_eq!(clearing, want, "imp {}: clearing price", i);
        prop_assert_eq!(
            result.min_to_win.get(),
            runner_up.map_or(floor, |r| r.max(floor))
        );

        let loser_min = if at == AuctionType::FixedPrice {
            price
        } else {
            clearing
        };
        for (j, k, _) in &competing {
            if *j == w {
                continue;
            }
            let want = if k.is_some() == deal_class {
                BidResult::Lost {
                    reason: LossReason::LostToHigherBid,
                    min_to_win: Some(CpmMicros::new(loser_min)),
                }
            } else {
                BidResult::Lost {
                    reason: LossReason::LostToDealBid,
                    min_to_win: None,
                }
            };
            prop_assert_eq!(out.bids[*j], want, "bid {}", j);
        }
    }
    Ok(())
}

/// The budget invariants: winners with a campaign are charged exactly the cost of their
/// clearing price, balances drop by what was charged, drained and unknown campaigns never pay.
fn check_with_budgets(
    s: &Scenario,
    balances: &[u64],
    drained: &[bool],
) -> Result<(), TestCaseError> {
    // Campaign 3 is unknown to the ledger.
    let known: Vec<(u32, u64)> = (0..3).map(|c| (c, balances[c as usize])).collect();
    let drained: Vec<u32> = (0..4).filter(|c| drained[*c as usize]).collect();
    let ledger = TestLedger::new(&known, &drained, &[]);
    let out = run_scenario(s, &ledger);
    check_outcome(s, &out)?;

    let mut charged = [0u64; 4];
    for r in &out.imps {
        let Some(w) = r.winner else { continue };
        match s.bids[w].campaign {
            Some(c) => {
                prop_assert_eq!(r.charged, r.clearing.cost_of_one());
                charged[c as usize] += r.charged.get();
            }
            None => prop_assert_eq!(r.charged, Micros::ZERO),
        }
    }
    for (c, before) in &known {
        let spent = charged[*c as usize];
        if drained.contains(c) {
            prop_assert_eq!(spent, 0, "a drained campaign only wins for free");
        } else {
            prop_assert_eq!(ledger.balance(*c), Some(before - spent));
        }
    }
    for (j, b) in s.bids.iter().enumerate() {
        if b.campaign == Some(3) {
            prop_assert!(matches!(
                out.bids[j].loss_code(),
                501 | 1 | 4 | 100 | 101 | 213
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn invariants_without_budgets(s in scenario()) {
        let out = run_scenario(&s, &Unlimited::new());
        check_outcome(&s, &out)?;
        prop_assert!(out.bids.iter().all(|r| !matches!(r.loss_code(), 500 | 501)));
        for r in &out.imps {
            let cost = r.winner.and_then(|w| s.bids[w].campaign).map_or(Micros::ZERO, |_| r.clearing.cost_of_one());
            prop_assert_eq!(r.charged, cost);
        }
    }

    #[test]
    fn invariants_with_budgets(
        s in scenario(),
        balances in proptest::collection::vec(0..6_000u64, 4),
        drained in proptest::collection::vec(any::<bool>(), 4),
    ) {
        check_with_budgets(&s, &balances, &drained)?;
    }

    /// Past the engine's inline scratch (16 eligible bids), with imps interleaved.
    #[test]
    fn invariants_with_budgets_on_large_auctions(
        s in scenario_of(40),
        balances in proptest::collection::vec(0..6_000u64, 4),
        drained in proptest::collection::vec(any::<bool>(), 4),
    ) {
        check_with_budgets(&s, &balances, &drained)?;
    }

    #[test]
    fn clearing_price_is_monotone_in_the_second_bid(
        at in auction_type(),
        winner in 1..2_000_000u64,
        floor_frac in 0..=100u64,
        seconds in (0..=100u64, 0..=100u64),
        others in proptest::collection::vec(0..=100u64, 0..5),
        increment in 0..50_000u64,
        seed in any::<u64>(),
    ) {
        // Everything is a fraction of the winner's bid, strictly below it except the floor.
        let below = |pct: u64| (winner - 1) * pct / 100;
        let floor = winner * floor_frac / 100;
        let (lo, hi) = (below(seconds.0.min(seconds.1)), below(seconds.0.max(seconds.1)));
        let mut bids = vec![
            BidSpec { imp: 0, price: winner, deal: 0, campaign: None },
            BidSpec { imp: 0, price: lo, deal: 0, campaign: None },
        ];
        bids.extend(others.iter().map(|&p| BidSpec { imp: 0, price: below(p), deal: 0, campaign: None }));
        let mut s = Scenario {
            at,
            increment,
            seed,
            imps: vec![ImpSpec { floor, deals: Vec::new(), private: false }],
            bids,
        };
        let before = run_scenario(&s, &Unlimited::new());
        s.bids[1].price = hi;
        let after = run_scenario(&s, &Unlimited::new());
        prop_assert_eq!(before.imps[0].winner, Some(0));
        prop_assert_eq!(after.imps[0].winner, Some(0));
        prop_assert!(
            before.imps[0].clearing <= after.imps[0].clearing,
            "raising the second bid from {} to {} lowered the price from {} to {}",
            lo, hi, before.imps[0].clearing.get(), after.imps[0].clearing.get()
        );
    }
}

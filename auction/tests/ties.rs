//! Tie-breaking: deterministic for one seed, every tied bid reachable, and even over many seeds.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auction::{run, AuctionType, BidResult, Candidate, Imp, Request, Rules, Unlimited};
use money::CpmMicros;

/// The price every tied bid offers, 1.00 CPM.
const TOP: CpmMicros = CpmMicros::new(1_000_000);

fn request(seed: u64) -> Request<'static> {
    Request {
        at: AuctionType::SecondPrice,
        imps: vec![Imp {
            id: "1",
            floor: CpmMicros::new(100_000),
            deals: Vec::new(),
            private_auction: false,
            battr: &[],
        }],
        bcat: &[],
        badv: &[],
        bapp: &[],
        wseat: &[],
        bseat: &[],
        tie_seed: seed,
    }
}

fn bid(bidder: u32, price_micros: u64) -> Candidate<'static, ()> {
    Candidate {
        imp: 0,
        bidder,
        seat: "seat",
        price: CpmMicros::new(price_micros),
        pay_cap: None,
        deal_id: None,
        adomain: &[],
        cat: &[],
        attr: &[],
        bundle: None,
        campaign: None,
    }
}

/// How often each bid won over `seeds`.
fn wins(bids: &[Candidate<'static, ()>], seeds: u64) -> Vec<u32> {
    let mut wins = vec![0; bids.len()];
    for seed in 0..seeds {
        let out = run(&request(seed), bids, &Rules::default(), &Unlimited::new());
        let winner = out.imps[0]
            .winner
            .expect("tied bids above the floor always sell");
        wins[winner] += 1;
        assert_eq!(
            out.imps[0].clearing, TOP,
            "seed {seed}: ties clear at the top"
        );
        for (j, result) in out.bids.iter().enumerate() {
            let want = if j == winner {
                BidResult::Won { clearing: TOP }
            } else {
                BidResult::Lost {
                    reason: auction::LossReason::LostToHigherBid,
                    min_to_win: Some(TOP),
                }
            };
            assert_eq!(*result, want, "seed {seed}: bid {j}");
        }
    }
    wins
}

#[test]
fn same_seed_same_winner() {
    let bids = [bid(1, 1_000_000), bid(2, 1_000_000), bid(3, 1_000_000)];
    for seed in [0, 1, 42, u64::MAX] {
        let first = run(&request(seed), &bids, &Rules::default(), &Unlimited::new());
        let again = run(&request(seed), &bids, &Rules::default(), &Unlimited::new());
        assert_eq!(first, again, "seed {seed}");
    }
}

#[test]
fn two_tied_bids_split_wins_evenly() {
    let bids = [bid(1, 1_000_000), bid(2, 500_000), bid(3, 1_000_000)];
    let wins = wins(&bids, 10_000);
    assert_eq!(wins[1], 0, "the lower bid never wins");
    // Binomial(10_000, 0.5) has a standard deviation of 50: 5 of them either way is generous
    // for a fair coin and still rejects any real bias.
    for (j, w) in [(0, wins[0]), (2, wins[2])] {
        assert!(
            (4_750..=5_250).contains(&w),
            "bid {j} won {w} of 10000: {wins:?}"
        );
    }
}

#[test]
fn three_tied_bids_split_wins_evenly() {
    let bids = [bid(1, 1_000_000), bid(2, 1_000_000), bid(3, 1_000_000)];
    let wins = wins(&bids, 10_000);
    // Expected 3333 each, standard deviation about 47.
    for (j, &w) in wins.iter().enumerate() {
        assert!(
            (3_100..=3_570).contains(&w),
            "bid {j} won {w} of 10000: {wins:?}"
        );
    }
}

#[test]
fn tie_order_does_not_favour_the_first_or_last_position() {
    // Eight tied bids: each should win about 1/8 of the time, wherever it sits.
    let bids: Vec<_> = (0..8).map(|b| bid(b, 1_000_000)).collect();
    let wins = wins(&bids, 16_000);
    // Expected 2000 each, standard deviation about 42.
    for (j, &w) in wins.iter().enumerate() {
        assert!(
            (1_800..=2_200).contains(&w),
            "bid {j} won {w} of 16000: {wins:?}"
        );
    }
}

//! The auction itself: per imp, pick the best eligible bid of the preferred class, price it,
//! charge its campaign (falling back to the next bid when that fails) and settle every other bid.

use crate::filter::{self, Class};
use crate::scratch::InlineVec;
use std::borrow::Borrow;
use std::marker::PhantomData;

use money::{CpmMicros, Micros};

use crate::{
    AuctionType, BidResult, Candidate, Imp, ImpResult, Ledger, LossReason, Outcome, Request, Rules,
};

/// Up to this many eligible bids the per-bid scratch lives on the stack; beyond it, one `Vec`
/// per auction. 16 covers a typical fan-out several times over.
const INLINE_BIDS: usize = 16;

/// An eligible bid while its imp is being settled.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index into the candidates.
    index: usize,
    imp: usize,
    class: Class,
    /// Cleared when the bid drops out before its imp is settled (its charge failed).
    live: bool,
}

/// Fills the unused inline cells of the scratch; never read.
const UNUSED: Entry = Entry {
    index: 0,
    imp: 0,
    class: Class::Open,
    live: false,
};

/// Placeholder for eligible bids until their imp is settled; `settle` overwrites every one.
const PENDING: BidResult = BidResult::Lost {
    reason: LossReason::LostToHigherBid,
    min_to_win: None,
};

/// Runs the auction of every imp in `req` over `bids`, charging winners through `ledger`.
/// The rules, loss reasons and pricing are described in the crate documentation.
/// `bids` may be the candidates themselves or the caller's own records that hold one (via
/// [`Borrow`]), so the caller finds a result's bid by the index the result names, with no
/// second list kept in step.
pub fn run<'a, L, B>(req: &Request<'_>, bids: &[B], rules: &Rules, ledger: &L) -> Outcome
where
    L: Ledger,
    B: Borrow<Candidate<'a, L::Campaign>>,
{
    let blocks = filter::Blocks::new(req);
    let mut results = Vec::with_capacity(bids.len());
    let mut eligible = InlineVec::<Entry, INLINE_BIDS>::new(UNUSED);
    for (index, bid) in bids.iter().map(Borrow::borrow).enumerate() {
        match filter::eligibility(req, &blocks, bid, ledger) {
            Ok(class) => {
                eligible.push(Entry {
                    index,
                    imp: bid.imp,
                    class,
                    live: true,
                });
                results.push(PENDING);
            }
            Err(reason) => results.push(BidResult::Lost {
                reason,
                min_to_win: None,
            }),
        }
    }
    // Grouped by imp so that each imp's auction visits only its own bids; within an imp the
    // candidates' order is kept. Eligibility rejected every `imp` out of range, so the groups
    // come in the order of `req.imps` and none is left over. A single imp is one group already.
    let eligible = eligible.as_mut_slice();
    if req.imps.len() > 1 {
        eligible.sort_unstable_by_key(|e| (e.imp, e.index));
    }
    let mut rest = eligible;
    let imps = req
        .imps
        .iter()
        .enumerate()
        .map(|(i, imp)| {
            let mine = rest.iter().take_while(|e| e.imp == i).count();
            let (entries, tail) = std::mem::take(&mut rest).split_at_mut(mine);
            rest = tail;
            let mut auction = ImpAuction {
                req,
                imp,
                bids,
                _campaign: PhantomData,
                entries,
                results: &mut results,
            };
            auction.settle(rules, ledger)
        })
        .collect();
    Outcome {
        imps,
        bids: results,
    }
}

/// One imp's auction over its own eligible bids.
struct ImpAuction<'r, 'q, 'a, C, B> {
    req: &'r Request<'q>,
    imp: &'r Imp<'q>,
    bids: &'r [B],
    _campaign: PhantomData<&'r Candidate<'a, C>>,
    /// This imp's eligible bids, and only them.
    entries: &'r mut [Entry],
    results: &'r mut [BidResult],
}

impl<'r, 'a, C, B: Borrow<Candidate<'a, C>>> ImpAuction<'r, '_, 'a, C, B> {
    fn settle<L: Ledger<Campaign = C>>(&mut self, rules: &Rules, ledger: &L) -> ImpResult {
        loop {
            let (deals, open) = self.races();
            // Deal bids are preferred: the open market only competes when no deal bid is left.
            let (race, deal_won) = if deals.lead.is_some() {
                (deals, true)
            } else {
                (open, false)
            };
            let Some(lead) = race.lead else {
                return ImpResult::UNSOLD;
            };
            let floor = filter::floor_of(self.imp, lead.class);
            let at = match lead.class {
                Class::Deal(k) => self.imp.deals.get(k).and_then(|d| d.at),
                Class::Open => None,
            }
            .unwrap_or(self.req.at);
            let price = lead.bid.price;
            let clearing = clearing_price(at, price, race.runner_up, floor, rules.increment);
            // An adjusted bid never pays more than the DSP bid.
            let clearing = lead.bid.pay_cap.map_or(clearing, |cap| clearing.min(cap));
            let charged = match &lead.bid.campaign {
                None => Micros::ZERO,
                Some(campaign) => {
                    let cost = clearing.cost_of_one();
                    if !ledger.try_charge(campaign, cost) {
                        // Drained by a concurrent auction since `can_cover`: drop this bid and
                        // rerun the race over what remains, so the price is recomputed too.
                        if let Some(entry) = self.entries.get_mut(lead.entry) {
                            entry.live = false;
                        }
                        if let Some(result) = self.results.get_mut(lead.index) {
                            *result = BidResult::Lost {
                                reason: LossReason::CampaignBudgetExhausted,
                                min_to_win: None,
                            };
                        }
                        continue;
                    }
                    cost
                }
            };
            // Under a fixed price every bid pays the floor, so only the winner's bid tells a
            // loser what it would have taken.
            let loser_min_to_win = if at == AuctionType::FixedPrice {
                price
            } else {
                clearing
            };
            self.close(lead.index, clearing, deal_won, loser_min_to_win);
            return ImpResult {
                winner: Some(lead.index),
                clearing,
                charged,
                min_to_win: race.runner_up.map_or(floor, |r| r.max(floor)),
                deal: match lead.class {
                    Class::Deal(k) => Some(k),
                    Class::Open => None,
                },
            };
        }
    }

    /// The deal-class race and the open-market race among this imp's unsettled bids.
    fn races(&self) -> (Race<'r, 'a, C>, Race<'r, 'a, C>) {
        let seed = self.req.tie_seed;
        let mut deals = Race::default();
        let mut open = Race::default();
        let bids: &'r [B] = self.bids;
        for (entry, e) in self.entries.iter().enumerate() {
            // `e.index` enumerated `bids`, so the lookup always succeeds.
            let Some(bid) = bids.get(e.index).filter(|_| e.live).map(Borrow::borrow) else {
                continue;
            };
            let race = match e.class {
                Class::Deal(_) => &mut deals,
                Class::Open => &mut open,
            };
            race.enter(entry, e.index, bid, e.class, seed);
        }
        (deals, open)
    }

    /// Settles every unsettled bid of this imp once `winner` is charged.
    fn close(
        &mut self,
        winner: usize,
        clearing: CpmMicros,
        deal_won: bool,
        loser_min_to_win: CpmMicros,
    ) {
        for e in self.entries.iter_mut().filter(|e| e.live) {
            e.live = false;
            let Some(result) = self.results.get_mut(e.index) else {
                continue;
            };
            *result = if e.index == winner {
                BidResult::Won { clearing }
            } else if matches!(e.class, Class::Deal(_)) == deal_won {
                BidResult::Lost {
                    reason: LossReason::LostToHigherBid,
                    min_to_win: Some(loser_min_to_win),
                }
            } else {
                BidResult::Lost {
                    reason: LossReason::LostToDealBid,
                    min_to_win: None,
                }
            };
        }
    }
}

/// The winner's clearing price, CPM micros. Never above its bid; never below `floor`, because
/// eligibility already rejected bids under their floor.
fn clearing_price(
    at: AuctionType,
    bid: CpmMicros,
    runner_up: Option<CpmMicros>,
    floor: CpmMicros,
    increment: CpmMicros,
) -> CpmMicros {
    match at {
        AuctionType::FirstPrice => bid,
        AuctionType::SecondPrice => runner_up
            .map_or(floor, |r| r.max(floor))
            .saturating_add(increment)
            .min(bid),
        AuctionType::FixedPrice => floor,
    }
}

/// The highest bid of one class so far.
struct Lead<'r, 'a, C> {
    /// Position in the imp's entries.
    entry: usize,
    /// Index into the candidates.
    index: usize,
    bid: &'r Candidate<'a, C>,
    class: Class,
    /// Tie rank, computed only once a tie needs it.
    rank: Option<u64>,
}

/// One class's best bid and the highest price among the rest of the class.
struct Race<'r, 'a, C> {
    lead: Option<Lead<'r, 'a, C>>,
    runner_up: Option<CpmMicros>,
}

// Manual impl: a derive would demand `C: Default`.
impl<C> Default for Race<'_, '_, C> {
    fn default() -> Self {
        Self {
            lead: None,
            runner_up: None,
        }
    }
}

impl<'r, 'a, C> Race<'r, 'a, C> {
    fn enter(
        &mut self,
        entry: usize,
        index: usize,
        bid: &'r Candidate<'a, C>,
        class: Class,
        seed: u64,
    ) {
        let price = bid.price;
        let Some(lead) = &mut self.lead else {
            self.lead = Some(Lead {
                entry,
                index,
                bid,
                class,
                rank: None,
            });
            return;
        };
        let lead_price = lead.bid.price;
        let (takes_lead, rank) = if price != lead_price {
            (price > lead_price, None)
        } else {
            let lead_rank = *lead.rank.get_or_insert_with(|| tie_rank(seed, lead.index));
            let rank = tie_rank(seed, index);
            (rank > lead_rank, Some(rank))
        };
        let beaten = if takes_lead {
            *lead = Lead {
                entry,
                index,
                bid,
                class,
                rank,
            };
            lead_price
        } else {
            price
        };
        self.runner_up = Some(self.runner_up.map_or(beaten, |r| r.max(beaten)));
    }
}

/// Orders tied bids for one seed: a SplitMix64 mix of the seed and the bid's index, so each
/// seed gives an unrelated order and, over many seeds, every tied bid leads equally often.
fn tie_rank(seed: u64, index: usize) -> u64 {
    let mut z = seed.wrapping_add(
        (index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use money::CpmMicros;

    use super::tie_rank;
    use crate::AuctionType::{self, FirstPrice, FixedPrice, SecondPrice};

    /// [`super::clearing_price`] on plain CPM micros.
    fn clearing_price(
        at: AuctionType,
        bid: u64,
        runner_up: Option<u64>,
        floor: u64,
        increment: u64,
    ) -> u64 {
        super::clearing_price(
            at,
            CpmMicros::new(bid),
            runner_up.map(CpmMicros::new),
            CpmMicros::new(floor),
            CpmMicros::new(increment),
        )
        .get()
    }

    #[test]
    fn second_price_is_runner_up_or_floor_plus_increment_capped_at_bid() {
        assert_eq!(
            clearing_price(SecondPrice, 1_000_000, Some(900_000), 850_000, 10_000),
            910_000
        );
        assert_eq!(
            clearing_price(SecondPrice, 1_000_000, Some(500_000), 850_000, 10_000),
            860_000
        );
        assert_eq!(
            clearing_price(SecondPrice, 1_000_000, None, 850_000, 10_000),
            860_000
        );
        assert_eq!(
            clearing_price(SecondPrice, 905_000, Some(900_000), 0, 10_000),
            905_000
        );
        assert_eq!(
            clearing_price(SecondPrice, u64::MAX, Some(u64::MAX - 1), 0, 10),
            u64::MAX
        );
        assert_eq!(
            clearing_price(FirstPrice, 1_000_000, Some(900_000), 0, 10_000),
            1_000_000
        );
        assert_eq!(
            clearing_price(FixedPrice, 1_000_000, Some(900_000), 700_000, 10_000),
            700_000
        );
    }

    #[test]
    fn tie_ranks_differ_between_bids_and_between_seeds() {
        assert_ne!(tie_rank(7, 0), tie_rank(7, 1));
        assert_ne!(tie_rank(7, 0), tie_rank(8, 0));
        assert_eq!(tie_rank(7, 3), tie_rank(7, 3));
    }
}

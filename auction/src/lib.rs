//! The auction engine: eligibility filters, first/second/fixed-price clearing, loss reasons and
//! charging the winners through the [`Ledger`] trait.
//!
//! This crate owns deciding who wins each impression and at what price. It must never do IO,
//! read the clock or use randomness it was not handed: everything is an argument of [`run`]
//! (ties are broken with [`Request::tie_seed`]), so the same inputs always give the same
//! [`Outcome`]. Money is integer micros: prices are CPM micros, charges are currency micros of
//! one impression ([`money::CpmMicros::cost_of_one`]), in [`money::Micros`].
//!
//! # How an imp is auctioned
//!
//! Every imp is auctioned on its own; one bidder may win several imps and may send several bids
//! for one imp (they compete with each other).
//!
//! 1. **Eligibility.** Each bid is checked in this order; the first failure is its loss reason:
//!    imp index in range; seat (`bseat`, non-empty `wseat`); deal (below); `badv`; `bapp`; `bcat`;
//!    the imp's `battr`; the floor of its class; its campaign ([`Ledger::is_active`], then
//!    [`Ledger::can_cover`] for the cost of its own bid, the most it could be charged).
//! 2. **Deals.** A bid whose `dealid` names one of the imp's deals competes in the deal class
//!    against that deal's floor (which replaces the imp floor); if the deal has a `wseat` that
//!    lacks the bid's seat it is blocked (104) rather than moved to the open market, since it was
//!    priced under the deal's terms. A `dealid` naming no deal competes in the open market, or
//!    loses with 4 in a private auction. In a private auction a bid without `dealid` loses with 213.
//! 3. **Class.** If any eligible deal bid exists the deal class (all of the imp's deals
//!    together) is auctioned and open-market bids lose with 103; otherwise the open market is.
//! 4. **Winner.** The highest price in the class wins. Equal top prices are ordered by a hash of
//!    `tie_seed` and the bid's index: deterministic per seed, even across seeds.
//! 5. **Price.** The type is the winning deal's `at` if set, else the request's. With floor `f`
//!    (the imp floor, or the winning deal's floor) and runner-up `r` (the highest other price in
//!    the winner's class): second price pays `min(bid, max(r, f) + increment)` (a lone bid pays
//!    `min(bid, f + increment)`; equal top bids pay the top price); first price pays the bid;
//!    fixed price pays `f`.
//! 6. **Charge.** A winner with a campaign is charged [`money::CpmMicros::cost_of_one`] of the clearing
//!    price via [`Ledger::try_charge`]. If that fails (a concurrent auction drained the
//!    campaign), the bid loses with 500 and steps 3–6 rerun over the remaining bids, price
//!    included. Bids without a campaign are never charged.
//!
//! # Matching rules
//!
//! - Seats and deal IDs are opaque and compared exactly. A `dealid` of `""` counts as none.
//! - `badv` / `adomain`: both reduced to a bare host (scheme, path, port, trailing dot and a
//!   leading `www.` dropped) and compared ASCII-case-insensitively; a subdomain of a blocked
//!   domain is blocked too. `badv: ["www.ford.com"]` blocks `ford.com` and `shop.ford.com`, not
//!   `myford.com`; `badv: ["shop.ford.com"]` does not block `ford.com`.
//! - `bcat` / `cat`: ASCII-case-insensitive; a blocked IAB 1.0 category also blocks its
//!   subcategories (`IAB25` blocks `IAB25-3`).
//! - `bapp` / `bundle`: ASCII-case-insensitive. Both hold app store IDs in OpenRTB 2.6, hence
//!   code 206 ("App Store ID Exclusions") rather than 215.
//!
//! # `min_to_win`
//!
//! Following OpenRTB 2.6 section 4.4.1 (`${AUCTION_MIN_TO_WIN}`): a bid that lost on price (102)
//! gets the winner's clearing price (the winner's bid under a fixed-price deal, where price only
//! ranks); bids filtered out or lost for a reason other than price (103, budget) get none. The
//! winner's own value, [`ImpResult::min_to_win`], is the price that would have tied its
//! runner-up, or the class floor when it had none.
//!
//! # Loss reason codes
//!
//! Codes from the OpenRTB "List: Loss Reason Codes" (which OpenRTB 2.6 refers to), and this
//! exchange's own in the spec's exchange-specific range (500+):
//!
//! | code | [`LossReason`] | when |
//! |---:|---|---|
//! | 0 | — (won) | [`BidResult::loss_code`] of a winner |
//! | 1 | `InternalError` | the candidate's `imp` index is out of range (a caller bug) |
//! | 4 | `InvalidDealId` | private auction, `dealid` names none of the imp's deals |
//! | 100 | `BelowAuctionFloor` | open-market bid below the imp floor |
//! | 101 | `BelowDealFloor` | deal bid below its deal's floor |
//! | 102 | `LostToHigherBid` | outbid, or lost a tie, in the winner's class |
//! | 103 | `LostToDealBid` | open-market bid while a deal bid won |
//! | 104 | `BuyerSeatBlocked` | seat in `bseat`, not in a non-empty `wseat`, or not in its deal's non-empty `wseat` |
//! | 205 | `AdvertiserExclusions` | an `adomain` is blocked by `badv` |
//! | 206 | `AppStoreIdExclusions` | `bundle` is in `bapp` |
//! | 209 | `CategoryExclusions` | a `cat` is blocked by `bcat` |
//! | 210 | `CreativeAttributeExclusions` | an `attr` is in the imp's `battr` |
//! | 213 | `NotAllowedInDeal` | private auction, bid without `dealid` |
//! | 500 | `CampaignBudgetExhausted` | campaign cannot cover its bid's cost, or the winner's charge failed |
//! | 501 | `CampaignInactive` | campaign paused or unknown ([`Ledger::is_active`] is false) |

mod engine;
mod filter;
mod ledger;
mod model;
mod reason;
mod scratch;

pub use engine::run;
pub use ledger::{Ledger, Unlimited};
pub use model::{AuctionType, BidResult, Candidate, Deal, Imp, ImpResult, Outcome, Request, Rules};
pub use reason::LossReason;

/// The crate's one error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    /// An `at` value outside OpenRTB's 1 (first price), 2 (second price) and 3 (fixed price).
    #[error(
        "unknown auction type {0}: expected 1 (first price), 2 (second price) or 3 (fixed price)"
    )]
    UnknownAuctionType(i64),
}

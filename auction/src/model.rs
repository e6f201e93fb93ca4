//! The auction's inputs (request, rules, candidates) and outputs (per-imp and per-bid results).

use std::borrow::Cow;

use money::{CpmMicros, Micros};

use crate::{AuctionError, LossReason};

/// How the winner's clearing price is set (`BidRequest.at`, `Deal.at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuctionType {
    /// `at = 1`: the winner pays its bid.
    FirstPrice,
    /// `at = 2`: the winner pays the runner-up (or the floor) plus one increment, capped at its bid.
    SecondPrice,
    /// `at = 3`: the winner pays the floor of its class. OpenRTB defines it for deals only
    /// (`deal.at = 3`: "the value passed in bidfloor is the agreed upon deal price"); the engine
    /// applies the same rule to the open market if a request carries it, so validation should
    /// reject `at = 3` on the request if that is not wanted.
    FixedPrice,
}

impl AuctionType {
    /// Maps the OpenRTB integer; anything but 1, 2 and 3 is `None`.
    pub const fn from_openrtb(at: i64) -> Option<Self> {
        match at {
            1 => Some(Self::FirstPrice),
            2 => Some(Self::SecondPrice),
            3 => Some(Self::FixedPrice),
            _ => None,
        }
    }

    /// The OpenRTB integer for this type, as written into the body each DSP receives.
    pub const fn to_openrtb(self) -> i64 {
        match self {
            Self::FirstPrice => 1,
            Self::SecondPrice => 2,
            Self::FixedPrice => 3,
        }
    }
}

impl TryFrom<i64> for AuctionType {
    type Error = AuctionError;

    fn try_from(at: i64) -> Result<Self, Self::Error> {
        Self::from_openrtb(at).ok_or(AuctionError::UnknownAuctionType(at))
    }
}

/// Exchange-wide auction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// What a second-price winner pays above the runner-up or the floor, in CPM micros.
    pub increment: CpmMicros,
}

impl Default for Rules {
    fn default() -> Self {
        // 0.01 CPM: the increment used in the OpenRTB 2.6 section 4.4.1 examples.
        Self {
            increment: CpmMicros::new(10_000),
        }
    }
}

/// One `imp.pmp.deals[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deal<'a> {
    pub id: &'a str,
    /// The deal's own floor (`deal.bidfloor`), CPM micros. It replaces the imp floor for bids on
    /// this deal.
    pub floor: CpmMicros,
    /// `deal.at`; `None` inherits the request's type.
    pub at: Option<AuctionType>,
    /// Seats allowed to bid on this deal; empty allows every seat.
    pub wseat: &'a [Cow<'a, str>],
}

/// One impression on sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imp<'a> {
    pub id: &'a str,
    /// Open-market floor (`imp.bidfloor`), CPM micros.
    pub floor: CpmMicros,
    pub deals: Vec<Deal<'a>>,
    /// `imp.pmp.private_auction = 1`: only bids on one of `deals` may win.
    pub private_auction: bool,
    /// Blocked creative attributes: the union of the imp's banner/video/audio/native `battr`,
    /// built by the caller.
    pub battr: &'a [u32],
}

/// The request-level view the auction needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub at: AuctionType,
    pub imps: Vec<Imp<'a>>,
    pub bcat: &'a [Cow<'a, str>],
    pub badv: &'a [Cow<'a, str>],
    pub bapp: &'a [Cow<'a, str>],
    /// Allowed buyer seats; empty allows every seat.
    pub wseat: &'a [Cow<'a, str>],
    pub bseat: &'a [Cow<'a, str>],
    /// Breaks ties among equal top bids. The caller draws it (e.g. per request from its RNG), so
    /// the same inputs and seed always give the same outcome.
    pub tie_seed: u64,
}

/// One DSP bid offered to the auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a, C> {
    /// Index into `Request::imps`.
    pub imp: usize,
    /// The DSP's index in the exchange's configuration.
    pub bidder: u32,
    pub seat: &'a str,
    /// CPM micros: what the bid ranks and clears at.
    pub price: CpmMicros,
    /// The most this bid may pay (CPM micros), when its `price` was adjusted above what the
    /// DSP actually bid: the clearing price is capped here, and a bid whose cap is under its
    /// floor is below the floor. `None`: its `price`.
    pub pay_cap: Option<CpmMicros>,
    /// `bid.dealid`; `Some("")` is treated like `None`.
    pub deal_id: Option<&'a str>,
    pub adomain: &'a [Cow<'a, str>],
    pub cat: &'a [Cow<'a, str>],
    pub attr: &'a [u32],
    pub bundle: Option<&'a str>,
    /// The campaign charged if this bid wins; `None` is never charged.
    pub campaign: Option<C>,
}

/// What `run` decided, parallel to its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Parallel to `Request::imps`.
    pub imps: Vec<ImpResult>,
    /// Parallel to the candidates.
    pub bids: Vec<BidResult>,
}

/// The result of one impression's auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpResult {
    /// Index into the candidates; `None` when nothing won.
    pub winner: Option<usize>,
    /// What the winner pays, CPM micros (0 when nothing won).
    pub clearing: CpmMicros,
    /// What was charged to the winner's campaign for this one impression, currency micros
    /// (0 when nothing won or the winner had no campaign).
    pub charged: Micros,
    /// The winner's `${AUCTION_MIN_TO_WIN}`: the price that would have tied the runner-up in its
    /// class, or the class floor when it had no competitor (0 when nothing won).
    pub min_to_win: CpmMicros,
    /// Index into the imp's `deals` when the winner bought through a deal.
    pub deal: Option<usize>,
}

impl ImpResult {
    /// The result of an impression nothing won.
    pub const UNSOLD: Self = Self {
        winner: None,
        clearing: CpmMicros::ZERO,
        charged: Micros::ZERO,
        min_to_win: CpmMicros::ZERO,
        deal: None,
    };
}

/// The result for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidResult {
    /// The bid won its imp and pays `clearing` (CPM micros).
    Won { clearing: CpmMicros },
    /// The bid lost. `min_to_win` (CPM micros) is set only when price decided the loss
    /// (`LostToHigherBid`): it is the winner's clearing price, as in the OpenRTB 2.6 section
    /// 4.4.1 examples (for a fixed-price deal, where price only ranks the bids, the winner's bid).
    Lost {
        reason: LossReason,
        min_to_win: Option<CpmMicros>,
    },
}

impl BidResult {
    /// The `${AUCTION_LOSS}` value: 0 ("Bid Won") for a winner, else the loss reason code.
    pub const fn loss_code(&self) -> u16 {
        match self {
            Self::Won { .. } => 0,
            Self::Lost { reason, .. } => reason.code(),
        }
    }

    pub const fn is_won(&self) -> bool {
        matches!(self, Self::Won { .. })
    }
}

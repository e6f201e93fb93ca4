//! The budget seam: how the auction asks whether a campaign can pay and charges the winner.

use std::fmt;

use money::Micros;
use std::marker::PhantomData;

/// Campaign spend as the auction sees it. Methods take `&self` because one ledger serves every
/// concurrent auction (the budget crate implements it with atomics); `cost` is always the
/// cost of ONE impression ([`money::CpmMicros::cost_of_one`]).
pub trait Ledger {
    /// The handle a candidate carries for the campaign behind it.
    type Campaign;

    /// Whether the campaign could pay `cost` now. A hint used to filter bids before the
    /// auction; a `true` here does not reserve anything.
    fn can_cover(&self, campaign: &Self::Campaign, cost: Micros) -> bool;

    /// Debits `cost` if the campaign can pay it, atomically; `false` leaves it untouched.
    fn try_charge(&self, campaign: &Self::Campaign, cost: Micros) -> bool;

    /// Whether the campaign may buy at all; a paused or unknown one loses with
    /// `LossReason::CampaignInactive`. Ledgers that do not track this keep the default.
    fn is_active(&self, _campaign: &Self::Campaign) -> bool {
        true
    }
}

/// A ledger with no limits: every campaign is active, can always pay and is never debited.
/// For tests, benches and exchanges that run without budgets.
pub struct Unlimited<C = ()>(PhantomData<fn(&C)>);

impl<C> Unlimited<C> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

// Manual impls: derives would demand `C: Default/Clone/Debug` for a handle that is never stored.
impl<C> Default for Unlimited<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> Clone for Unlimited<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Unlimited<C> {}

impl<C> fmt::Debug for Unlimited<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unlimited")
    }
}

impl<C> Ledger for Unlimited<C> {
    type Campaign = C;

    fn can_cover(&self, _campaign: &C, _cost: Micros) -> bool {
        true
    }

    fn try_charge(&self, _campaign: &C, _cost: Micros) -> bool {
        true
    }
}

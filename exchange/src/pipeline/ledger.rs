//! The auction's ledger over the node's budget leases: where a winner is charged, and where
//! every bid the budgets keep out is counted. Atomics only, never IO.

use budget::metrics::DropReason;
use budget::{Budgets, Campaign, Lookup};
use money::Micros;

/// The campaign behind a bid, as the auction's ledger sees it.
#[derive(Clone, Copy)]
pub(crate) enum Spend<'v> {
    /// A budgeted campaign: its lease decides.
    Budget(&'v Campaign),
    /// No campaign the exchange knows, and the policy is `reject`: the bid loses with the
    /// exchange's "campaign inactive" reason.
    Refused {
        reason: DropReason,
        dsp: &'v str,
        cid: Option<&'v str>,
    },
}

impl<'v> Spend<'v> {
    /// What the auction charges for a bid of DSP `dsp` with campaign `cid`: `None` when the
    /// bid takes part without a budget (allowed by `budget.unknown_campaign`).
    pub fn of(
        budgets: &Budgets,
        found: Lookup<&'v Campaign>,
        dsp: &'v str,
        cid: Option<&'v str>,
    ) -> Option<Self> {
        let reason = match found {
            Lookup::Found(campaign) => return Some(Spend::Budget(campaign)),
            _ if budgets.unknown_policy().allows() => return None,
            Lookup::NoCid => DropReason::NoCid,
            Lookup::Unknown => DropReason::UnknownCampaign,
        };
        Some(Spend::Refused { reason, dsp, cid })
    }
}

/// Charges winners against the node's leases for the auction at `auction_ts_ms` (the time its
/// tracking URLs carry). The auction asks each question once per bid, so each drop is counted
/// once, where it is decided.
pub(crate) struct BudgetLedger<'v> {
    pub budgets: &'v Budgets,
    pub auction_ts_ms: u64,
    /// A test auction (`test = 1`): campaigns are asked whether they are active and could pay,
    /// as in a real auction, so its answer is the one a real auction would give; the winner
    /// is then charged nothing and nothing is counted for the reconciliation.
    pub test: bool,
}

impl<'v> auction::Ledger for BudgetLedger<'v> {
    type Campaign = Spend<'v>;

    fn is_active(&self, campaign: &Spend<'v>) -> bool {
        match *campaign {
            Spend::Budget(_) => true,
            Spend::Refused { reason, dsp, cid } => {
                self.budgets.record_drop(dsp, cid, reason);
                false
            }
        }
    }

    fn can_cover(&self, campaign: &Spend<'v>, cost: Micros) -> bool {
        // A refusal is counted by the budgets as `insufficient`.
        matches!(campaign, Spend::Budget(c) if self.budgets.can_cover(c, cost.get()))
    }

    /// The one place a win is charged: the lease is debited and the charge is counted for the
    /// reconciliation in the same step, so neither can happen without the other.
    fn try_charge(&self, campaign: &Spend<'v>, cost: Micros) -> bool {
        let Spend::Budget(c) = campaign else {
            return false;
        };
        if self.test {
            // `can_cover` said yes a moment ago; a test win takes nothing from the lease.
            return true;
        }
        // Covered a moment ago, but a concurrent auction may have emptied the lease since: the
        // budgets count that as a `charge_race`, and the auction moves on to the next bid.
        if !self.budgets.try_charge(c, cost.get()) {
            return false;
        }
        let key = c.key();
        self.budgets
            .record_charge(&key.dsp, &key.cid, self.auction_ts_ms, cost.get());
        true
    }
}

//! A ledger test double shared by the auction's integration tests: balances in a map, with
//! campaigns that can be paused or drained by a simulated concurrent auction.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use auction::Ledger;
use money::Micros;

/// Campaign handles are plain ids; a campaign missing from `balances` is unknown.
#[derive(Debug, Default)]
pub struct TestLedger {
    balances: RefCell<HashMap<u32, u64>>,
    /// Campaigns another auction empties between `can_cover` and `try_charge`.
    drained: HashSet<u32>,
    paused: HashSet<u32>,
}

impl TestLedger {
    pub fn new(balances: &[(u32, u64)], drained: &[u32], paused: &[u32]) -> Self {
        Self {
            balances: RefCell::new(balances.iter().copied().collect()),
            drained: drained.iter().copied().collect(),
            paused: paused.iter().copied().collect(),
        }
    }

    pub fn balance(&self, campaign: u32) -> Option<u64> {
        self.balances.borrow().get(&campaign).copied()
    }
}

impl Ledger for TestLedger {
    type Campaign = u32;

    fn can_cover(&self, campaign: &u32, cost: Micros) -> bool {
        self.balance(*campaign).is_some_and(|b| b >= cost.get())
    }

    fn try_charge(&self, campaign: &u32, cost: Micros) -> bool {
        let mut balances = self.balances.borrow_mut();
        let Some(balance) = balances.get_mut(campaign) else {
            return false;
        };
        if self.drained.contains(campaign) {
            *balance = 0;
        }
        match balance.checked_sub(cost.get()) {
            Some(rest) => {
                *balance = rest;
                true
            }
            None => false,
        }
    }

    fn is_active(&self, campaign: &u32) -> bool {
        !self.paused.contains(campaign) && self.balances.borrow().contains_key(campaign)
    }
}

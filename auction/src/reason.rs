//! Why a bid lost: OpenRTB loss reason codes plus this exchange's own, and their metric labels.

/// Why a bid lost. `code()` is the value for `${AUCTION_LOSS}` and loss notices; the table of
/// codes and when each is used is in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LossReason {
    /// 1: the candidate points at an imp the request does not have (a caller bug, never a DSP's).
    InternalError,
    /// 4: a private auction and the bid's `dealid` names none of the imp's deals.
    InvalidDealId,
    /// 100: an open-market bid below the imp floor.
    BelowAuctionFloor,
    /// 101: a deal bid below the deal's floor.
    BelowDealFloor,
    /// 102: outbid (or lost a tie) in the winner's class.
    LostToHigherBid,
    /// 103: an open-market bid while a deal bid won.
    LostToDealBid,
    /// 104: the seat is in `bseat`, missing from a non-empty `wseat`, or missing from the
    /// non-empty `wseat` of the deal it bid on.
    BuyerSeatBlocked,
    /// 205: an `adomain` matches `badv`.
    AdvertiserExclusions,
    /// 206: the bid's `bundle` (an app store ID) is in `bapp`.
    AppStoreIdExclusions,
    /// 209: a `cat` matches `bcat`.
    CategoryExclusions,
    /// 210: an `attr` is in the imp's `battr`.
    CreativeAttributeExclusions,
    /// 213: an open-market bid (no `dealid`) in a private auction.
    NotAllowedInDeal,
    /// 500 (exchange-specific): the campaign cannot pay for the impression, either up front
    /// (`Ledger::can_cover`) or when the winner is charged (`Ledger::try_charge`).
    CampaignBudgetExhausted,
    /// 501 (exchange-specific): the campaign is paused or unknown (`Ledger::is_active`).
    CampaignInactive,
}

impl LossReason {
    /// Every reason, for registering metrics up front.
    pub const ALL: [Self; 14] = [
        Self::InternalError,
        Self::InvalidDealId,
        Self::BelowAuctionFloor,
        Self::BelowDealFloor,
        Self::LostToHigherBid,
        Self::LostToDealBid,
        Self::BuyerSeatBlocked,
        Self::AdvertiserExclusions,
        Self::AppStoreIdExclusions,
        Self::CategoryExclusions,
        Self::CreativeAttributeExclusions,
        Self::NotAllowedInDeal,
        Self::CampaignBudgetExhausted,
        Self::CampaignInactive,
    ];

    /// The loss reason code (OpenRTB "List: Loss Reason Codes"; 500+ are this exchange's).
    pub const fn code(&self) -> u16 {
        match self {
            Self::InternalError => 1,
            Self::InvalidDealId => 4,
            Self::BelowAuctionFloor => 100,
            Self::BelowDealFloor => 101,
            Self::LostToHigherBid => 102,
            Self::LostToDealBid => 103,
            Self::BuyerSeatBlocked => 104,
            Self::AdvertiserExclusions => 205,
            Self::AppStoreIdExclusions => 206,
            Self::CategoryExclusions => 209,
            Self::CreativeAttributeExclusions => 210,
            Self::NotAllowedInDeal => 213,
            Self::CampaignBudgetExhausted => 500,
            Self::CampaignInactive => 501,
        }
    }

    /// A stable snake_case label for metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::InternalError => "internal_error",
            Self::InvalidDealId => "invalid_deal_id",
            Self::BelowAuctionFloor => "below_auction_floor",
            Self::BelowDealFloor => "below_deal_floor",
            Self::LostToHigherBid => "lost_to_higher_bid",
            Self::LostToDealBid => "lost_to_deal_bid",
            Self::BuyerSeatBlocked => "buyer_seat_blocked",
            Self::AdvertiserExclusions => "advertiser_excluded",
            Self::AppStoreIdExclusions => "app_excluded",
            Self::CategoryExclusions => "category_excluded",
            Self::CreativeAttributeExclusions => "attribute_excluded",
            Self::NotAllowedInDeal => "not_allowed_in_deal",
            Self::CampaignBudgetExhausted => "campaign_budget_exhausted",
            Self::CampaignInactive => "campaign_inactive",
        }
    }
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::LossReason;

    #[test]
    fn codes_and_labels_are_distinct() {
        let all = LossReason::ALL;
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.code(), b.code(), "{a:?} and {b:?} share a code");
                assert_ne!(a.as_str(), b.as_str(), "{a:?} and {b:?} share a label");
            }
        }
    }

    #[test]
    fn exchange_specific_codes_sit_in_the_reserved_range() {
        // OpenRTB reserves 500+ for exchange-specific values; everything else must be a spec code.
        assert!(LossReason::CampaignBudgetExhausted.code() >= 500);
        assert!(LossReason::CampaignInactive.code() >= 500);
        let spec = [1, 4, 100, 101, 102, 103, 104, 205, 206, 209, 210, 213];
        let below_500: Vec<u16> = LossReason::ALL
            .iter()
            .map(LossReason::code)
            .filter(|&c| c < 500)
            .collect();
        assert_eq!(below_500, spec);
    }
}

//! The money of one billed impression split three ways: what the buyer pays (gross), what the
//! publisher is paid (net) and the exchange's margin, in micros, with gross = net + margin
//! exactly.

use money::{CpmMicros, Micros};

use crate::sign::BidRef;

/// One billed impression's money, in micros of the auction currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// What the DSP is billed: `ceil(gross CPM / 1000)` ([`CpmMicros::cost_of_one`]), the same
    /// amount the campaign was charged at win time.
    pub gross: Micros,
    /// What the publisher is paid: `floor(net CPM / 1000)`, never above `gross`.
    pub net: Micros,
    /// What the exchange keeps: `gross − net`, so the fractions of a micro both roundings
    /// leave stay with the exchange and the three always add up.
    pub margin: Micros,
}

impl Split {
    /// The split of one impression sold at `gross` CPM whose publisher is paid `net` CPM.
    pub fn of_one(gross: CpmMicros, net: CpmMicros) -> Self {
        let gross = gross.cost_of_one();
        // Rounded down so that a publisher is never paid a fraction of a micro it was not
        // promised; `min` keeps a net above gross (refused when a URL is verified) harmless.
        let net = Micros::new(net.get() / 1000).min(gross);
        Self {
            gross,
            net,
            margin: gross.saturating_sub(net),
        }
    }

    /// The split of one impression of `bid`: its clearing price and its signed net price (the
    /// clearing price for URLs signed before net prices existed).
    pub fn of_bid(bid: &BidRef) -> Self {
        Self::of_one(
            CpmMicros::new(bid.price_micros),
            CpmMicros::new(bid.net_price()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(gross: u64, net: u64) -> (u64, u64, u64) {
        let s = Split::of_one(CpmMicros::new(gross), CpmMicros::new(net));
        (s.gross.get(), s.net.get(), s.margin.get())
    }

    #[test]
    fn gross_rounds_up_net_down_and_margin_takes_the_rest() {
        // The example: 2.00 USD clearing, 15% margin, the publisher told 1.70.
        assert_eq!(split(2_000_000, 1_700_000), (2000, 1700, 300));
        assert_eq!(split(1_500_001, 1_275_000), (1501, 1275, 226));
        assert_eq!(split(1_500_001, 1_275_999), (1501, 1275, 226));
        // No margin: gross = net, except the fraction gross rounding adds.
        assert_eq!(split(2_000_000, 2_000_000), (2000, 2000, 0));
        assert_eq!(split(1_500_001, 1_500_001), (1501, 1500, 1));
        assert_eq!(split(999, 999), (1, 0, 1));
        assert_eq!(split(0, 0), (0, 0, 0));
        // A net above gross is never paid out.
        assert_eq!(split(1_000_000, 5_000_000), (1000, 1000, 0));
    }

    #[test]
    fn old_urls_pay_the_clearing_price() {
        let bid = BidRef {
            price_micros: 2_000_000,
            ..BidRef::default()
        };
        assert_eq!(
            Split::of_bid(&bid),
            Split::of_one(CpmMicros::new(2_000_000), CpmMicros::new(2_000_000))
        );
        let with_net = BidRef {
            net_price_micros: Some(1_700_000),
            ..bid
        };
        assert_eq!(Split::of_bid(&with_net).net, Micros::new(1700));
    }
}

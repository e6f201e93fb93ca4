//! The exchange's money rules as integers: currency rates, the margin and bid adjustments,
//! each conversion with its rounding stated on it.
//!
//! Every product is taken in `u128`, so no step can overflow, and every result that could
//! exceed [`MAX_CPM`] saturates there (a price that large is refused on the wire anyway).

use crate::{CpmMicros, MAX_CPM};

/// Parts per million: the scale of [`Margin`] and [`Adjustment`].
const PPM: u64 = 1_000_000;

/// The scale of [`Rate`]: a rate is held in units of 10⁻¹² (twelve decimals), enough for the
/// six decimals rate feeds publish on any pair and exact for every rate written with up to
/// twelve.
const RATE_SCALE: u64 = 1_000_000_000_000;

/// Which way a conversion rounds when the exact result falls between two micros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Towards zero: bids, clearing prices and payouts, so nobody pays or is told more than
    /// the exact amount.
    Down,
    /// Away from zero: floors, so a floor is never lowered by a conversion.
    Up,
}

/// How many units of a currency X one unit of the auction currency buys (`EUR = 0.92` with
/// USD auctions: 1 USD = 0.92 EUR), held as an integer count of 10⁻¹² units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate(u64);

impl Rate {
    /// The auction currency itself: every conversion is the identity.
    pub const ONE: Rate = Rate(RATE_SCALE);

    /// A rate as written in the config or a rates file, rounded to the nearest 10⁻¹².
    /// `None` unless it is finite, above zero and at least 10⁻¹² once rounded, and at most
    /// 10⁶ (no currency trades at a million to one).
    pub fn from_f64(rate: f64) -> Option<Rate> {
        if !rate.is_finite() || rate <= 0.0 || rate > 1e6 {
            return None;
        }
        let scaled = (rate * RATE_SCALE as f64).round();
        // Compared as a float before the cast: at most 10^18, below u64::MAX.
        (scaled >= 1.0).then_some(Rate(scaled as u64))
    }

    /// The rate in units of 10⁻¹².
    pub const fn scaled(self) -> u64 {
        self.0
    }

    /// A price in currency X converted into the auction currency: `price / rate`, rounded
    /// as `round` says. Bids round [`Round::Down`] (a DSP is never credited with more than it
    /// bid), floors [`Round::Up`] (a floor is never lowered).
    pub fn to_auction(self, price: CpmMicros, round: Round) -> CpmMicros {
        let num = u128::from(price.get()) * u128::from(RATE_SCALE);
        let den = u128::from(self.0);
        let q = match round {
            Round::Down => num / den,
            Round::Up => num.div_ceil(den),
        };
        saturate(q)
    }

    /// A price in the auction currency converted into currency X: `price × rate`, rounded
    /// as `round` says. What a DSP or a publisher is told rounds [`Round::Down`].
    pub fn from_auction(self, price: CpmMicros, round: Round) -> CpmMicros {
        let num = u128::from(price.get()) * u128::from(self.0);
        let den = u128::from(RATE_SCALE);
        let q = match round {
            Round::Down => num / den,
            Round::Up => num.div_ceil(den),
        };
        saturate(q)
    }
}

/// The exchange's take of a gross price, in parts per million (0 to 1 000 000): `0.15` is
/// `Margin(150_000)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Margin(u32);

impl Margin {
    pub const ZERO: Margin = Margin(0);

    /// A margin as written in the config (a fraction, `0.15`), rounded to the nearest part
    /// per million. `None` unless finite and within 0..=1.
    pub fn from_fraction(fraction: f64) -> Option<Margin> {
        if !fraction.is_finite() || !(0.0..=1.0).contains(&fraction) {
            return None;
        }
        // Within 0..=10^6 after rounding, so the cast is exact.
        Some(Margin((fraction * PPM as f64).round() as u32))
    }

    pub const fn ppm(self) -> u32 {
        self.0
    }

    /// Splits a gross price into `(net, margin)`: the publisher's net is
    /// `gross × (1 − margin)` rounded DOWN, and the exchange's margin is `gross − net`, so
    /// the two always add up to the gross exactly; a fraction of a micro of net goes to the
    /// margin, and the DSP still pays only the gross.
    pub fn split(self, gross: CpmMicros) -> (CpmMicros, CpmMicros) {
        let keep = PPM - u64::from(self.0.min(PPM as u32));
        let net = u128::from(gross.get()) * u128::from(keep) / u128::from(PPM);
        // net ≤ gross, so it fits.
        let net = CpmMicros::new(net as u64);
        (net, gross.saturating_sub(net))
    }
}

/// A DSP's bid multiplier (`[[dsp]] bid_adjustment`), in parts per million: `0.9` is
/// `Adjustment(900_000)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Adjustment(u64);

impl Adjustment {
    /// No adjustment.
    pub const ONE: Adjustment = Adjustment(PPM);

    /// A factor as written in the config, rounded to the nearest part per million. `None`
    /// unless finite, above zero once rounded, and at most 1 000.
    pub fn from_factor(factor: f64) -> Option<Adjustment> {
        if !factor.is_finite() || factor <= 0.0 || factor > 1000.0 {
            return None;
        }
        let ppm = (factor * PPM as f64).round();
        // At most 10^9: the cast is exact.
        (ppm >= 1.0).then_some(Adjustment(ppm as u64))
    }

    pub const fn ppm(self) -> u64 {
        self.0
    }

    /// `price × factor`, rounded DOWN (an adjusted bid never rises by a rounding).
    pub fn apply(self, price: CpmMicros) -> CpmMicros {
        if self.0 == PPM {
            return price;
        }
        saturate(u128::from(price.get()) * u128::from(self.0) / u128::from(PPM))
    }
}

fn saturate(micros: u128) -> CpmMicros {
    CpmMicros::new(u64::try_from(micros).map_or(MAX_CPM.get(), |m| m.min(MAX_CPM.get())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One conversion and its expected result in micros.
    enum Case {
        ToAuction(f64, u64, Round, u64),
        FromAuction(f64, u64, Round, u64),
        Split(f64, u64, u64, u64),
        Adjust(f64, u64, u64),
    }

    fn check(cases: &[Case]) {
        for (i, case) in cases.iter().enumerate() {
            match *case {
                Case::ToAuction(rate, price, round, want) => {
                    let rate = Rate::from_f64(rate).expect("a valid rate");
                    let got = rate.to_auction(CpmMicros::new(price), round).get();
                    assert_eq!(got, want, "case {i}: {price} / {rate:?} {round:?}");
                }
                Case::FromAuction(rate, price, round, want) => {
                    let rate = Rate::from_f64(rate).expect("a valid rate");
                    let got = rate.from_auction(CpmMicros::new(price), round).get();
                    assert_eq!(got, want, "case {i}: {price} × {rate:?} {round:?}");
                }
                Case::Split(margin, gross, net, kept) => {
                    let m = Margin::from_fraction(margin).expect("a valid margin");
                    let (n, k) = m.split(CpmMicros::new(gross));
                    assert_eq!(
                        (n.get(), k.get()),
                        (net, kept),
                        "case {i}: {gross} at {margin}"
                    );
                    assert_eq!(n.get() + k.get(), gross, "case {i}: parts add up");
                }
                Case::Adjust(factor, price, want) => {
                    let a = Adjustment::from_factor(factor).expect("a valid factor");
                    assert_eq!(a.apply(CpmMicros::new(price)).get(), want, "case {i}");
                }
            }
        }
    }

    #[test]
    fn money_rules_round_as_written() {
        use Case::*;
        use Round::{Down, Up};
        check(&[
            // 1 USD = 0.92 EUR. A 1.00 EUR floor is 1.0869565… USD: up to 1.086957.
            ToAuction(0.92, 1_000_000, Up, 1_086_957),
            // A 1.00 EUR bid is the same amount, rounded down: 1.086956.
            ToAuction(0.92, 1_000_000, Down, 1_086_956),
            // Exact results round neither way.
            ToAuction(0.8, 2_000_000, Down, 2_500_000),
            ToAuction(0.8, 2_000_000, Up, 2_500_000),
            ToAuction(1.0, 1_234_567, Down, 1_234_567),
            // 1.58 GBP at 0.79 is exactly 2.00 USD.
            ToAuction(0.79, 1_580_000, Down, 2_000_000),
            // Huge rates and prices saturate at MAX_CPM rather than wrap.
            ToAuction(0.000001, MAX_CPM.get(), Down, MAX_CPM.get()),
            // Clearing 1.086956 USD told to a EUR bidder: 0.99999952 EUR, down to 0.999999.
            FromAuction(0.92, 1_086_956, Down, 999_999),
            FromAuction(0.92, 1_086_956, Up, 1_000_000),
            FromAuction(0.79, 2_000_000, Down, 1_580_000),
            FromAuction(1.0, 7, Down, 7),
            // The example: 2.00 gross at 15% is 1.70 net, 0.30 margin.
            Split(0.15, 2_000_000, 1_700_000, 300_000),
            // A fraction of a micro of net is the exchange's: 0.000003 × 0.85 = 0.00000255.
            Split(0.15, 3, 2, 1),
            Split(0.0, 1_234_567, 1_234_567, 0),
            Split(1.0, 1_234_567, 0, 1_234_567),
            Split(0.333333, 1_000_000, 666_667, 333_333),
            Adjust(1.0, 1_234_567, 1_234_567),
            Adjust(0.9, 2_000_000, 1_800_000),
            Adjust(0.9, 1_111_111, 999_999),
            Adjust(1.5, 2_000_000, 3_000_000),
            Adjust(1000.0, MAX_CPM.get(), MAX_CPM.get()),
        ]);
    }

    #[test]
    fn config_values_outside_their_range_are_refused() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e7, 1e-13] {
            assert_eq!(Rate::from_f64(bad), None, "{bad}");
        }
        assert_eq!(Rate::from_f64(1.0), Some(Rate::ONE));
        for bad in [-0.01, 1.01, f64::NAN] {
            assert_eq!(Margin::from_fraction(bad), None, "{bad}");
        }
        assert_eq!(Margin::from_fraction(0.15).map(Margin::ppm), Some(150_000));
        for bad in [0.0, -1.0, f64::NAN, 1e-7, 1001.0] {
            assert_eq!(Adjustment::from_factor(bad), None, "{bad}");
        }
    }
}

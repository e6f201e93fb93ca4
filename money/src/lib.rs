//! Money as integer micros, with OpenRTB's CPM prices and real amounts kept apart in the types.
//!
//! This crate owns the two money types and the only conversions between them and the floats
//! of the wire and the config: [`CpmMicros`] (a price per thousand impressions, as OpenRTB
//! quotes it) and [`Micros`] (an amount actually charged, billed or budgeted). It must never
//! let one pass for the other, round in the buyer's favour, or do IO.
//!
//! The exchange's own money rules live here too, each as integer arithmetic with its rounding
//! written on it: [`Rate`] (currency conversion), [`Margin`] (the exchange's take) and
//! [`Adjustment`] (a DSP's bid multiplier). Floats are read once, when the config or a rates
//! file is loaded; nothing on the auction path multiplies a float.

use std::fmt;

mod rules;

pub use rules::{Adjustment, Margin, Rate, Round};

/// Micros in one currency unit.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// The highest CPM price taken as a bid or floor: 1 000 000 currency units per thousand. Far
/// above any real price, and low enough that every arithmetic step below stays exact.
pub const MAX_CPM: CpmMicros = CpmMicros(1_000_000 * MICROS_PER_UNIT);

/// A CPM price (per thousand impressions) in micros of a currency unit: `1.5` CPM is
/// `CpmMicros(1_500_000)`. Bids, floors, clearing prices and increments are CPM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpmMicros(u64);

/// An amount of money in micros of a currency unit: what one impression costs, what a campaign
/// is charged or billed, a budget. Never a CPM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(u64);

impl CpmMicros {
    pub const ZERO: Self = Self(0);

    pub const fn new(micros: u64) -> Self {
        Self(micros)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// A CPM price as written on the wire (`price`, `bidfloor`, `auction.price_increment`),
    /// rounded to the nearest micro. `None` when it cannot be a price: not finite, negative,
    /// or above [`MAX_CPM`]. Zero is a price (an absent floor); a bid must check for it.
    pub fn from_cpm(price: f64) -> Option<Self> {
        if !price.is_finite() || price < 0.0 {
            return None;
        }
        let micros = (price * MICROS_PER_UNIT as f64).round();
        // Compared as floats before the cast, so the cast is exact: every value that passes
        // is an integer below 2^53.
        if micros > MAX_CPM.0 as f64 {
            return None;
        }
        Some(Self(micros as u64))
    }

    /// What ONE impression at this CPM costs: `ceil(cpm / 1000)` micros. Rounding up means a
    /// fraction of a micro is never given away.
    pub const fn cost_of_one(self) -> Micros {
        Micros(self.0.div_ceil(1000))
    }

    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// Appends the price as the shortest exact decimal: `1_500_000` -> `1.5`, `2_000_000` ->
    /// `2`, `10_000` -> `0.01`. No float is involved, so what is written reads back as the same
    /// micros.
    pub fn write_decimal(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; DECIMAL_BUF];
        out.extend_from_slice(decimal(self.0, &mut buf).as_bytes());
    }
}

impl fmt::Display for CpmMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; DECIMAL_BUF];
        f.write_str(decimal(self.0, &mut buf))
    }
}

impl Micros {
    pub const ZERO: Self = Self(0);

    pub const fn new(micros: u64) -> Self {
        Self(micros)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// An amount given in currency units (a budget in the config or the admin API), rounded to
    /// the nearest micro. `None` when not finite, negative, or over `u64::MAX` micros.
    pub fn from_units(amount: f64) -> Option<Self> {
        if !amount.is_finite() || amount < 0.0 {
            return None;
        }
        let micros = (amount * MICROS_PER_UNIT as f64).round();
        // u64::MAX as f64 rounds up to 2^64, so `<` keeps the cast in range.
        (micros < u64::MAX as f64).then_some(Self(micros as u64))
    }

    /// The amount in currency units, for display only (admin answers, reports): never fed back
    /// into money arithmetic.
    pub fn as_units(self) -> f64 {
        self.0 as f64 / MICROS_PER_UNIT as f64
    }

    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Micros {
    /// Six decimals always (`1.500000`): a ledger figure, aligned in reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / MICROS_PER_UNIT,
            self.0 % MICROS_PER_UNIT
        )
    }
}

impl std::iter::Sum for Micros {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

const DECIMAL_BUF: usize = 32;

fn decimal(micros: u64, buf: &mut [u8; DECIMAL_BUF]) -> &str {
    let units = micros / MICROS_PER_UNIT;
    let mut frac = micros % MICROS_PER_UNIT;
    let mut itoa_buf = itoa::Buffer::new();
    let int_digits = itoa_buf.format(units).as_bytes();
    let mut len = int_digits.len();
    buf[..len].copy_from_slice(int_digits);
    if frac != 0 {
        buf[len] = b'.';
        len += 1;
        let mut digits = 6;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        for i in (0..digits).rev() {
            buf[len + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += digits;
    }
    // Only ASCII digits and '.' were written.
    std::str::from_utf8(&buf[..len]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpm_prices_round_to_the_nearest_micro() {
        let cases: &[(f64, Option<u64>)] = &[
            (1.5, Some(1_500_000)),
            (1.028428, Some(1_028_428)),
            (0.1 + 0.2, Some(300_000)),
            (15.64434783, Some(15_644_348)),
            (0.0000004, Some(0)),
            (0.0000005, Some(1)),
            (0.0, Some(0)),
            (-0.0, Some(0)),
            (-0.01, None),
            (-1.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (1_000_000.0, Some(MAX_CPM.get())),
            (1_000_000.1, None),
            (1e300, None),
        ];
        for &(price, want) in cases {
            assert_eq!(
                CpmMicros::from_cpm(price).map(CpmMicros::get),
                want,
                "{price}"
            );
        }
    }

    #[test]
    fn one_impression_costs_a_thousandth_rounded_up() {
        let cases = [
            (0, 0),
            (1, 1),
            (999, 1),
            (1000, 1),
            (1001, 2),
            (1_810_000, 1810),
        ];
        for (cpm, cost) in cases {
            assert_eq!(
                CpmMicros::new(cpm).cost_of_one(),
                Micros::new(cost),
                "{cpm}"
            );
        }
    }

    #[test]
    fn decimals_are_shortest_and_exact() {
        let cases = [
            (0, "0"),
            (1, "0.000001"),
            (10_000, "0.01"),
            (1_500_000, "1.5"),
            (2_000_000, "2"),
            (123_456_789, "123.456789"),
            (1_234_567, "1.234567"),
            (100_000_000, "100"),
            (1_000_100, "1.0001"),
            (u64::MAX, "18446744073709.551615"),
        ];
        for (micros, text) in cases {
            assert_eq!(CpmMicros::new(micros).to_string(), text);
            let mut out = Vec::new();
            CpmMicros::new(micros).write_decimal(&mut out);
            assert_eq!(out, text.as_bytes());
        }
        assert_eq!(Micros::new(1_500_000).to_string(), "1.500000");
    }

    #[test]
    fn amounts_in_units_convert_once() {
        assert_eq!(Micros::from_units(50.0), Some(Micros::new(50_000_000)));
        assert_eq!(Micros::from_units(0.0000015), Some(Micros::new(2)));
        assert_eq!(Micros::from_units(-1.0), None);
        assert_eq!(Micros::from_units(f64::NAN), None);
        assert_eq!(Micros::from_units(1e30), None);
        assert_eq!(Micros::new(2_500_000).as_units(), 2.5);
    }

    proptest! {
        #[test]
        fn written_prices_read_back_as_the_same_micros(micros in 0..=MAX_CPM.get()) {
            let text = CpmMicros::new(micros).to_string();
            let price: f64 = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(CpmMicros::from_cpm(price), Some(CpmMicros::new(micros)));
        }
    }
}

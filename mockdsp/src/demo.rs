//! The demo the exchange embeds when it runs without a config: three bidders and the
//! campaigns they bid for, both read from one definition so they cannot drift apart.

use std::time::Duration;

use crate::builder::{MockDsp, MockDspBuilder};
use crate::config::{Latency, Price};

/// One campaign a demo bidder bids for: its DSP and its `cid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    /// The demo bidder's name (the exchange's DSP name).
    pub dsp: String,
    /// The campaign id its bids carry in `cid`.
    pub id: String,
}

/// Every campaign of [`fleet`], in fleet order.
pub fn campaigns() -> Vec<Campaign> {
    fleet()
        .iter()
        .flat_map(|dsp| {
            dsp.campaign_ids().into_iter().map(|id| Campaign {
                dsp: dsp.name().to_owned(),
                id,
            })
        })
        .collect()
}

/// The three demo bidders, so a first request gets a real auction: different price shapes,
/// 1–5 ms latency, ~80% bid rate, notices on, free loopback ports.
///
/// | name | price (CPM) | latency | bid probability | campaigns |
/// |---|---|---|---|---|
/// | alpha | uniform 0.50–2.50 | uniform 1–3 ms | 0.80 | alpha-cmp-1, alpha-cmp-2 |
/// | beta | log-normal, median 1.20, p99 4.00; bids in request deals | uniform 2–5 ms | 0.85 | beta-cmp-1 |
/// | gamma | fixed 1.80 | fixed 4 ms | 0.75 | gamma-cmp-1 |
pub fn fleet() -> Vec<MockDspBuilder> {
    let ms = Duration::from_millis;
    vec![
        MockDsp::builder("alpha")
            .price(Price::Uniform { min: 0.5, max: 2.5 })
            .latency(Latency::Uniform {
                min: ms(1),
                max: ms(3),
            })
            .bid_probability(0.8)
            .cids(["alpha-cmp-1", "alpha-cmp-2"])
            .adomains(["alpha-shoes.example", "alpha-travel.example"])
            .crid("alpha-cr-1")
            .notices(true),
        MockDsp::builder("beta")
            .price(Price::LogNormal {
                median: 1.2,
                p99: 4.0,
            })
            .latency(Latency::Uniform {
                min: ms(2),
                max: ms(5),
            })
            .bid_probability(0.85)
            .cids(["beta-cmp-1"])
            .adomains(["beta-cars.example"])
            .crid("beta-cr-1")
            .deals_from_request(true)
            .notices(true),
        MockDsp::builder("gamma")
            .price(Price::Fixed(1.8))
            .latency(Latency::Fixed(ms(4)))
            .bid_probability(0.75)
            .cids(["gamma-cmp-1"])
            .adomains(["gamma-games.example"])
            .crid("gamma-cr-1")
            .notices(true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_campaigns_are_the_fleets_own() {
        let pairs: Vec<(String, String)> = campaigns().into_iter().map(|c| (c.dsp, c.id)).collect();
        let want = [
            ("alpha", "alpha-cmp-1"),
            ("alpha", "alpha-cmp-2"),
            ("beta", "beta-cmp-1"),
            ("gamma", "gamma-cmp-1"),
        ]
        .map(|(d, c)| (d.to_owned(), c.to_owned()));
        assert_eq!(pairs, want);
    }
}

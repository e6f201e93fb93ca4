//! Several mocks started and stopped together, and the demo fleet the exchange embeds.

use std::time::Duration;

use super::builder::{MockDsp, MockDspBuilder};
use super::config::{Latency, Price};
use super::handle::MockDspHandle;
use crate::Error;

/// A set of running mocks, in the order their builders were given.
#[derive(Debug)]
pub struct MockFleet {
    dsps: Vec<MockDspHandle>,
}

impl MockFleet {
    /// Starts every builder; if one fails, the ones already running are shut down and its error
    /// is returned.
    pub async fn start<I>(builders: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = MockDspBuilder>,
    {
        let mut dsps = Vec::new();
        for builder in builders {
            match builder.start().await {
                Ok(dsp) => dsps.push(dsp),
                Err(e) => {
                    Self { dsps }.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(Self { dsps })
    }

    /// The running mocks.
    pub fn dsps(&self) -> &[MockDspHandle] {
        &self.dsps
    }

    /// The first mock with this name.
    pub fn get(&self, name: &str) -> Option<&MockDspHandle> {
        self.dsps.iter().find(|d| d.name() == name)
    }

    /// `(name, bid URL)` of every mock.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.dsps
            .iter()
            .map(|d| (d.name().to_owned(), d.url().to_owned()))
            .collect()
    }

    /// How many mocks run.
    pub fn len(&self) -> usize {
        self.dsps.len()
    }

    /// True when the fleet has no mock.
    pub fn is_empty(&self) -> bool {
        self.dsps.is_empty()
    }

    /// Shuts every mock down concurrently and waits for all of them.
    pub async fn shutdown(self) {
        futures::future::join_all(self.dsps.into_iter().map(MockDspHandle::shutdown)).await;
    }
}

/// Three demo bidders for the exchange's embedded default, so a first request gets a real
/// auction: different price shapes, 1–5 ms latency, ~80% bid rate, notices on, free loopback
/// ports.
///
/// | name | price (CPM) | latency | bid probability | campaigns |
/// |---|---|---|---|---|
/// | alpha | uniform 0.50–2.50 | uniform 1–3 ms | 0.80 | alpha-cmp-1, alpha-cmp-2 |
/// | beta | log-normal, median 1.20, p99 4.00; bids in request deals | uniform 2–5 ms | 0.85 | beta-cmp-1 |
/// | gamma | fixed 1.80 | fixed 4 ms | 0.75 | gamma-cmp-1 |
pub fn demo_fleet() -> Vec<MockDspBuilder> {
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

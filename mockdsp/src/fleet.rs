//! Several mocks started and stopped together.

use crate::builder::MockDspBuilder;
use crate::handle::MockDspHandle;
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

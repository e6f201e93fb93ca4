//! The crate's single error type.

use std::io;

/// What can stop a mock DSP from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mock DSP builder holds a value that cannot work (negative price, probability past 1,
    /// unknown HTTP status, unparsable bind address...). Reported before anything binds.
    #[error("mock DSP `{name}`: invalid configuration: {reason}")]
    InvalidConfig {
        /// The mock's name.
        name: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("mock DSP `{name}`: cannot listen on {addr}: {source}")]
    Bind {
        /// The mock's name.
        name: String,
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The test certificate could not be made or loaded.
    #[error("mock DSP TLS: {0}")]
    Tls(String),
}

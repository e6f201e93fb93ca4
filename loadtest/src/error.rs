//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A target URL that cannot be used: not `http://`, no host, unparsable.
    #[error("target `{url}`: {reason}")]
    InvalidTarget {
        /// The URL as given.
        url: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A target outside loopback, and the caller did not allow remote targets.
    #[error(
        "target `{url}` is not a loopback address; pass --allow-remote to send traffic there on purpose"
    )]
    RemoteTarget {
        /// The URL as given.
        url: String,
    },
    /// A load plan that cannot run (rate not positive, durations out of bounds...).
    #[error("invalid load plan: {0}")]
    InvalidPlan(String),
    /// A request mix that cannot be built (unknown template, bad weight, bad JSON file...).
    #[error("invalid request mix: {0}")]
    InvalidMix(String),
    /// The target did not accept a connection before the run started.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The target URL.
        url: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A baseline configuration that cannot work (no DSP, zero timeout or bound...).
    #[error("invalid baseline configuration: {0}")]
    InvalidBaseline(String),
    /// The baseline proxy could not open its listening socket.
    #[error("baseline: cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a file (request folder, report, saved JSON report).
    #[error("{}: {source}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

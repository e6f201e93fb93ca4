//! The exchange crate's error type.

/// Errors that stop the exchange from starting or running. Per-request problems are HTTP
/// answers, never errors of this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every problem found in the configuration, one per entry.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("budgets: {0}")]
    Budget(#[from] budget::Error),
    #[error("tracking: {0}")]
    Tracking(#[from] impressions::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

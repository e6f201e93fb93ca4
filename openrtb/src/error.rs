//! The crate's error types.

use std::fmt;

/// Why a bid request was refused: the publisher gets `{"error": message, "field": field}`
/// with a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    /// A path into the request, like `imp[0].banner.w`; empty when the problem is the
    /// whole body (not JSON at all, say).
    pub field: String,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for InvalidRequest {}

/// The one error enum of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bid request: {0}")]
    InvalidRequest(#[from] InvalidRequest),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
}

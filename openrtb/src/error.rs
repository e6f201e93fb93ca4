//! The crate's error type: why a bid request was refused.

/// Why a bid request was refused: the publisher gets `{"error": message, "field": field}`
/// with a 400. The crate's one error type: reading DSP answers never fails, it sorts
/// them into outcomes ([`crate::response::Answer`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", display(.field, .message))]
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

fn display(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("{field}: {message}")
    }
}

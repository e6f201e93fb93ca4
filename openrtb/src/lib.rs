//! The OpenRTB 2.5/2.6 wire model: borrowed, lenient, loss-free.
//!
//! This crate owns the bytes publishers and DSPs send us: parsing and validating bid
//! requests, building the body each DSP receives, reading DSP answers, rewriting the
//! winning bids and substituting the standard macros.
//!
//! It must never do IO, read the clock, or allocate per field where borrowing from the
//! input works: a request is parsed once, into types that point into the body, and is
//! forwarded by splicing the original bytes so that unknown fields and every `ext`
//! reach the DSPs exactly as the publisher sent them.

pub mod answer;
pub mod de;
pub mod forward;
pub mod json;
pub mod macros;
pub mod native;
pub mod request;
pub mod response;
pub mod span;
pub mod validate;

mod error;

pub use error::InvalidRequest;

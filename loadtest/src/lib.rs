//! Load-testing tools for the exchange: the open-loop load generator with its reports, the
//! bare fan-out baseline the exchange is measured against, and the `loadtest` binary (which
//! also serves mock DSPs from the `mockdsp` crate).
//!
//! This crate owns the traffic sent at the exchange and the measurement of what came back.
//! The baseline is built from the exchange's own HTTP client and accept loop, so the yardstick
//! cannot drift from the real thing. It must never send traffic anywhere but where it is
//! pointed (loopback unless the caller explicitly allows a remote target, see [`target`]),
//! never log per request, never let a request loop run unbounded in count or time, and never
//! let a baseline or a run outlive its handle: every task it spawns ends when it is shut
//! down, dropped or finished.
//!
//! Module map: [`plan`] (rates and the schedule of intended send times), [`mix`] (request
//! templates and folders), [`gen`] (the generator), [`stats`] (histograms and the report
//! types), [`report`] (table, progress line, HTML with SVG), [`baseline`] (the fan-out
//! proxy), [`target`] (URLs and the loopback guard).

pub mod baseline;
mod error;
pub mod gen;
pub mod mix;
pub mod plan;
pub mod report;
pub mod stats;
pub mod target;

pub use error::Error;

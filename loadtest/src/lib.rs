//! Load-testing tools for the exchange: mock DSP servers (a builder library the exchange's tests
//! and its embedded demo mode reuse), the open-loop load generator with its reports, and the
//! bare fan-out baseline the exchange is measured against.
//!
//! This crate owns everything that plays the *other side* of the exchange: programmable DSPs
//! answering on loopback, the traffic sent at the exchange, and the measurement of what came
//! back. It must never send traffic anywhere but where it is pointed (loopback unless the
//! caller explicitly allows a remote target, see [`target`]), never log per request, never let
//! a request loop run unbounded in count or time, and never let a mock, a baseline or a run
//! outlive its handle: every task it spawns ends when it is shut down, dropped or finished.
//!
//! Module map: [`mockdsp`] (mock bidders), [`plan`] (rates and the schedule of intended send
//! times), [`mix`] (request templates and folders), [`gen`] (the generator), [`stats`]
//! (histograms and the report types), [`report`] (table, progress line, HTML with SVG),
//! [`baseline`] (the fan-out proxy), [`target`] (URLs and the loopback guard), [`redis`]
//! (a real redis-server for tests).

pub mod baseline;
mod error;
pub mod gen;
pub mod mix;
pub mod mockdsp;
pub mod plan;
pub mod redis;
pub mod report;
pub mod stats;
pub mod target;

pub use error::Error;

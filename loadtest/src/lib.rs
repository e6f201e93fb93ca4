//! Load-testing tools for the exchange: mock DSP servers (a builder library the exchange's tests
//! and its embedded demo mode reuse) and, later, the load generator and the bare fan-out baseline.
//!
//! This crate owns everything that plays the *other side* of the exchange: programmable DSPs
//! answering on loopback and the traffic sent at the exchange. It must never send traffic
//! anywhere but where it is pointed (loopback by default), never log per request, and never let a
//! mock outlive its handle: every task a mock spawns ends when it is shut down or dropped.

mod error;
pub mod mockdsp;
pub mod redis;

pub use error::Error;

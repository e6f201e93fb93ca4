//! The exchange: the hyper server publishers talk to, the DSP fan-out, and the glue that
//! runs an auction per request.
//!
//! This crate owns IO and time: sockets, the HTTP client, deadlines, metrics, config. It
//! must never wait for a DSP past the auction deadline, hold a lock across `.await`, or let
//! any queue grow without a bound. The auction rules live in `auction`, the wire format in
//! `openrtb`.

mod admin;
pub mod breaker;
mod budget_store;
pub mod client_ip;
pub mod config;
pub mod dns;
pub mod dsp_filter;
pub mod fanout;
pub mod listen;
pub mod metrics;
pub mod notices;
mod overload;
mod pipeline;
mod pricing;
pub mod privacy;
pub mod publishers;
pub mod readiness;
pub mod reload;
pub mod screen;
pub mod server;
mod side;
pub mod tls;
mod tracking;
pub mod warm;

mod error;

pub use config::Config;
pub use error::Error;
pub use server::{run, run_with};

//! Mock DSPs: programmable OpenRTB bidders served over HTTP/1.1 on loopback, or over HTTPS
//! (HTTP/2 or HTTP/1.1 by ALPN) with a [`TestCa`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), mockdsp::Error> {
//! use std::time::Duration;
//! use mockdsp::{Behavior, Latency, MockDsp, Price};
//!
//! let dsp = MockDsp::builder("alpha")
//!     .behavior(Behavior::Bid)
//!     .price(Price::Uniform { min: 1.0, max: 3.0 })
//!     .latency(Latency::Fixed(Duration::from_millis(2)))
//!     .notices(true)
//!     .start()
//!     .await?;
//! println!("POST bid requests to {}", dsp.url());
//! // ... drive the exchange, then inspect dsp.stats(), dsp.received(), dsp.notices()
//! dsp.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Endpoints: `POST /bid` answers per [`Behavior`]; `/nurl`, `/burl`, `/lurl` (any method)
//! answer 200 and record the hit; anything else is 404.
//!
//! The exchange's tests, its embedded demo ([`demo`]) and the load generator share this crate.
//! It plays the other side of the exchange and nothing else: no load generation, no
//! histograms, no test harness. It never listens anywhere but where it is told (loopback by
//! default) and never lets a mock outlive its handle.

mod answer;
mod builder;
mod config;
pub mod demo;
mod error;
mod fleet;
mod handle;
mod record;
mod server;
mod settings;
mod tls;

pub use builder::{MockDsp, MockDspBuilder, DEFAULT_RECORD};
pub use config::{Behavior, CustomFn, Latency, Price};
pub use error::Error;
pub use fleet::MockFleet;
pub use handle::MockDspHandle;
pub use record::{MockDspStats, Notice, NoticeKind};
pub use tls::TestCa;

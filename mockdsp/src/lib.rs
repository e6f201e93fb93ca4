//! Mock DSPs: programmable OpenRTB bidders served over HTTP/1.1 on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loadtest::Error> {
//! use std::time::Duration;
//! use loadtest::mockdsp::{Behavior, Latency, MockDsp, Price};
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

mod answer;
mod builder;
mod config;
mod fleet;
mod handle;
mod record;
mod server;
mod settings;

pub use builder::{MockDsp, MockDspBuilder, DEFAULT_RECORD};
pub use config::{Behavior, CustomFn, Latency, Price};
pub use fleet::{demo_fleet, MockFleet};
pub use handle::MockDspHandle;
pub use record::{MockDspStats, Notice, NoticeKind};

//! What a mock DSP does: its behaviour, price and latency distributions, and their sampling.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// The z-score of the 99th percentile of the standard normal distribution: a log-normal
/// described by its median and p99 has `sigma = ln(p99 / median) / Z_P99`.
const Z_P99: f64 = 2.326_347_874_040_840_8;

/// Sampled latencies are capped so a wild log-normal tail cannot park a request for hours.
const MAX_LATENCY: Duration = Duration::from_secs(60);

/// A handler for [`Behavior::Custom`]: gets the parsed request (`Value::Null` when the body was
/// not JSON) and returns the HTTP status and the body to send.
pub type CustomFn = Arc<dyn Fn(&serde_json::Value) -> (u16, Vec<u8>) + Send + Sync>;

/// How a mock DSP answers `POST /bid`.
#[derive(Clone)]
pub enum Behavior {
    /// Bids on each imp with the configured bid probability; answers 204 when no imp got a bid.
    Bid,
    /// Always answers `204 No Content`.
    NoBid204,
    /// Always answers `200 {}`.
    EmptyObject,
    /// Answers `200 {"id": <request id>, "nbr": code}`.
    Nbr(u32),
    /// Answers this HTTP status with a short text body.
    Status(u16),
    /// Answers 200 with `Content-Type: application/json` and bytes that are not JSON.
    Garbage,
    /// Answers a well-formed bid response whose `id` is not the request's. Always bids on every
    /// imp (ignores the bid probability) so the broken answer is always exercised.
    WrongId,
    /// Reads the request and never answers until the mock shuts down (then 503).
    Hang,
    /// Sends the headers of a bid answer, then its body one byte at a time (see
    /// `MockDspBuilder::trickle_every`). Always bids on every imp, like `WrongId`.
    Trickle,
    /// Anything else a test needs.
    Custom(CustomFn),
}

impl Behavior {
    /// Wraps a closure into [`Behavior::Custom`].
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&serde_json::Value) -> (u16, Vec<u8>) + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(f))
    }
}

impl fmt::Debug for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bid => f.write_str("Bid"),
            Self::NoBid204 => f.write_str("NoBid204"),
            Self::EmptyObject => f.write_str("EmptyObject"),
            Self::Nbr(code) => f.debug_tuple("Nbr").field(code).finish(),
            Self::Status(code) => f.debug_tuple("Status").field(code).finish(),
            Self::Garbage => f.write_str("Garbage"),
            Self::WrongId => f.write_str("WrongId"),
            Self::Hang => f.write_str("Hang"),
            Self::Trickle => f.write_str("Trickle"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The bid price distribution, in CPM (currency units per thousand impressions), the unit
/// OpenRTB puts on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Price {
    /// Always this CPM.
    Fixed(f64),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Lowest CPM.
        min: f64,
        /// Highest CPM.
        max: f64,
    },
    /// Log-normal with this median and 99th percentile (`p99 >= median > 0`).
    LogNormal {
        /// Median CPM.
        median: f64,
        /// 99th percentile CPM.
        p99: f64,
    },
}

impl Price {
    /// Checks the parameters; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Fixed(p) => non_negative("price", p),
            Self::Uniform { min, max } => {
                non_negative("price min", min)?;
                non_negative("price max", max)?;
                ordered("price", min, max)
            }
            Self::LogNormal { median, p99 } => log_normal("price", median, p99),
        }
    }

    /// Draws a CPM, rounded to the micro so the wire shows a sane number, and kept inside the
    /// configured bounds despite the rounding.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let raw = match *self {
            Self::Fixed(p) => return p,
            Self::Uniform { min, max } => min + (max - min) * rng.random::<f64>(),
            Self::LogNormal { median, p99 } => sample_log_normal(rng, median, p99),
        };
        let rounded = (raw * 1e6).round() / 1e6;
        match *self {
            Self::Uniform { min, max } => rounded.clamp(min, max),
            _ => rounded.max(0.0),
        }
    }
}

/// How long a mock waits before answering (after reading the request).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Latency {
    /// Answers as soon as the request is read.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Shortest wait.
        min: Duration,
        /// Longest wait.
        max: Duration,
    },
    /// Log-normal with this median and 99th percentile (`p99 >= median > 0`).
    LogNormal {
        /// Median wait.
        median: Duration,
        /// 99th percentile wait.
        p99: Duration,
    },
}

impl Latency {
    /// Checks the parameters; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match *self {
            Self::None | Self::Fixed(_) => Ok(()),
            Self::Uniform { min, max } => {
                if min <= max {
                    Ok(())
                } else {
                    Err(format!("latency min {min:?} is above max {max:?}"))
                }
            }
            Self::LogNormal { median, p99 } => {
                log_normal("latency", median.as_secs_f64(), p99.as_secs_f64())
            }
        }
    }

    /// Draws a wait, capped at one minute.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let d = match *self {
            Self::None => Duration::ZERO,
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => min + (max - min).mul_f64(rng.random::<f64>()),
            Self::LogNormal { median, p99 } => {
                let secs = sample_log_normal(rng, median.as_secs_f64(), p99.as_secs_f64());
                Duration::try_from_secs_f64(secs).unwrap_or(MAX_LATENCY)
            }
        };
        d.min(MAX_LATENCY)
    }
}

fn non_negative(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be a finite number >= 0, got {v}"))
    }
}

fn ordered(what: &str, min: f64, max: f64) -> Result<(), String> {
    if min <= max {
        Ok(())
    } else {
        Err(format!("{what} min {min} is above max {max}"))
    }
}

fn log_normal(what: &str, median: f64, p99: f64) -> Result<(), String> {
    if !(median.is_finite() && median > 0.0) {
        return Err(format!(
            "{what} median must be finite and > 0, got {median}"
        ));
    }
    if !(p99.is_finite() && p99 >= median) {
        return Err(format!(
            "{what} p99 must be finite and >= the median, got {p99}"
        ));
    }
    Ok(())
}

/// Box-Muller on the thread's RNG: one standard normal draw turned log-normal. Parameters are
/// validated beforehand, so `ln` sees positive numbers only.
fn sample_log_normal<R: Rng + ?Sized>(rng: &mut R, median: f64, p99: f64) -> f64 {
    let sigma = (p99 / median).ln() / Z_P99;
    // 1 - [0, 1) is (0, 1]: keeps ln away from zero.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn uniform_price_stays_in_bounds() {
        let mut rng = SmallRng::seed_from_u64(7);
        let p = Price::Uniform { min: 0.5, max: 3.0 };
        for _ in 0..10_000 {
            let v = p.sample(&mut rng);
            assert!((0.5..=3.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn log_normal_price_matches_its_median_and_p99() {
        let mut rng = SmallRng::seed_from_u64(11);
        let p = Price::LogNormal {
            median: 2.0,
            p99: 8.0,
        };
        let mut v: Vec<f64> = (0..40_000).map(|_| p.sample(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let p99 = v[v.len() * 99 / 100];
        assert!((1.9..2.1).contains(&median), "median {median}");
        assert!((7.0..9.0).contains(&p99), "p99 {p99}");
        assert!(v.iter().all(|x| *x >= 0.0));
    }

    #[test]
    fn log_normal_latency_matches_its_median() {
        let mut rng = SmallRng::seed_from_u64(3);
        let l = Latency::LogNormal {
            median: Duration::from_millis(2),
            p99: Duration::from_millis(5),
        };
        let mut v: Vec<Duration> = (0..20_000).map(|_| l.sample(&mut rng)).collect();
        v.sort();
        let median = v[v.len() / 2];
        assert!(
            median > Duration::from_micros(1_900) && median < Duration::from_micros(2_100),
            "{median:?}"
        );
    }

    #[test]
    fn uniform_latency_stays_in_bounds() {
        let mut rng = SmallRng::seed_from_u64(5);
        let (min, max) = (Duration::from_millis(1), Duration::from_millis(5));
        let l = Latency::Uniform { min, max };
        for _ in 0..10_000 {
            let d = l.sample(&mut rng);
            assert!(d >= min && d <= max, "{d:?}");
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Price::Fixed(-1.0).validate().is_err());
        assert!(Price::Fixed(f64::NAN).validate().is_err());
        assert!(Price::Uniform { min: 3.0, max: 1.0 }.validate().is_err());
        assert!(Price::LogNormal {
            median: 0.0,
            p99: 1.0
        }
        .validate()
        .is_err());
        assert!(Price::LogNormal {
            median: 2.0,
            p99: 1.0
        }
        .validate()
        .is_err());
        assert!(Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(1)
        }
        .validate()
        .is_err());
        assert!(Latency::LogNormal {
            median: Duration::ZERO,
            p99: Duration::from_millis(1)
        }
        .validate()
        .is_err());
        assert!(Price::Fixed(0.0).validate().is_ok());
        assert!(Price::LogNormal {
            median: 1.0,
            p99: 1.0
        }
        .validate()
        .is_ok());
    }
}

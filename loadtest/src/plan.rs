//! The load plan: phases of constant rate, and the schedule of intended send times they make.
//!
//! The schedule is what makes the generator open-loop: every request has an intended send time
//! fixed before the run starts, and its latency is measured from that time whatever happened to
//! the requests before it. Everything here is pure arithmetic, so it is tested without a clock.

use std::time::Duration;

use crate::Error;

/// The highest rate a phase may ask for, in requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;

/// The longest a plan may run, all phases together.
pub const MAX_PLAN_DURATION: Duration = Duration::from_secs(24 * 3600);

/// One stretch of constant rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    /// Requests per second.
    pub rate: f64,
    /// How long the phase lasts.
    pub duration: Duration,
    /// False for warm-up: its requests are sent but not counted in the results.
    pub measured: bool,
}

/// The phases of a run, in order. Unmeasured (warm-up) phases may only come first, so the
/// measured window is one stretch of time.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    phases: Vec<Phase>,
}

impl Plan {
    /// Checks and wraps the phases.
    pub fn new(phases: Vec<Phase>) -> Result<Self, Error> {
        let bad = |s: String| Err(Error::InvalidPlan(s));
        if phases.iter().all(|p| !p.measured || p.duration.is_zero()) {
            return bad("nothing to measure: the measured duration is zero".to_owned());
        }
        let mut seen_measured = false;
        let mut total = Duration::ZERO;
        for p in &phases {
            if !p.rate.is_finite() || p.rate <= 0.0 || p.rate > MAX_RATE {
                return bad(format!(
                    "rate must be above 0 and at most {MAX_RATE} requests/s, got {}",
                    p.rate
                ));
            }
            if !p.measured && seen_measured {
                return bad("warm-up must come before the measured phases".to_owned());
            }
            seen_measured |= p.measured;
            total = total.saturating_add(p.duration);
        }
        if total > MAX_PLAN_DURATION {
            return bad(format!(
                "a run may last at most {}s, this one {}s",
                MAX_PLAN_DURATION.as_secs(),
                total.as_secs()
            ));
        }
        Ok(Self {
            phases: phases
                .into_iter()
                .filter(|p| !p.duration.is_zero())
                .collect(),
        })
    }

    /// A constant `rate` for `duration`, after `warmup` at the same rate.
    pub fn constant(rate: f64, duration: Duration, warmup: Duration) -> Result<Self, Error> {
        Self::new(vec![
            Phase {
                rate,
                duration: warmup,
                measured: false,
            },
            Phase {
                rate,
                duration,
                measured: true,
            },
        ])
    }

    /// The dinner rush: `base_rate` for `before`, `base_rate * factor` for `surge`, `base_rate`
    /// again for `after`; `warmup` at `base_rate` first.
    pub fn surge(
        base_rate: f64,
        factor: f64,
        before: Duration,
        surge: Duration,
        after: Duration,
        warmup: Duration,
    ) -> Result<Self, Error> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(Error::InvalidPlan(format!(
                "surge factor must be at least 1, got {factor}"
            )));
        }
        let phase = |rate, duration, measured| Phase {
            rate,
            duration,
            measured,
        };
        Self::new(vec![
            phase(base_rate, warmup, false),
            phase(base_rate, before, true),
            phase(base_rate * factor, surge, true),
            phase(base_rate, after, true),
        ])
    }

    /// The phases, zero-length ones left out.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// How long all phases last.
    pub fn total_duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// How long the warm-up lasts: the measured window starts there.
    pub fn warmup(&self) -> Duration {
        self.phases
            .iter()
            .take_while(|p| !p.measured)
            .map(|p| p.duration)
            .sum()
    }

    /// How long the measured window lasts.
    pub fn measured_duration(&self) -> Duration {
        self.total_duration().saturating_sub(self.warmup())
    }

    /// How many requests the whole plan sends, warm-up included.
    pub fn total_requests(&self) -> u64 {
        self.phases.iter().map(phase_requests).sum()
    }

    /// How many requests the measured phases send.
    pub fn measured_requests(&self) -> u64 {
        self.phases
            .iter()
            .filter(|p| p.measured)
            .map(phase_requests)
            .sum()
    }

    /// The rate of the highest measured phase: the headline "target rate".
    pub fn peak_rate(&self) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.measured)
            .map(|p| p.rate)
            .fold(0.0, f64::max)
    }

    /// The rate asked for at `offset` from the start of the plan (0 past its end).
    pub fn rate_at(&self, offset: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for p in &self.phases {
            let end = start + p.duration;
            if offset >= start && offset < end {
                return p.rate;
            }
            start = end;
        }
        0.0
    }

    /// Every request's intended send time, in order.
    pub fn schedule(&self) -> Schedule<'_> {
        Schedule {
            plan: self,
            phase: 0,
            phase_start: Duration::ZERO,
            k: 0,
            n: self.phases.first().map_or(0, phase_requests),
        }
    }
}

/// `round(rate * duration)` requests, spaced evenly over the phase.
fn phase_requests(p: &Phase) -> u64 {
    // Bounded by MAX_RATE * MAX_PLAN_DURATION (< 2^37), far inside both f64 and u64.
    (p.rate * p.duration.as_secs_f64()).round() as u64
}

/// One request of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Intended send time, from the start of the plan.
    pub offset: Duration,
    /// False for warm-up requests.
    pub measured: bool,
}

/// The iterator of [`Plan::schedule`].
#[derive(Clone, Debug)]
pub struct Schedule<'a> {
    plan: &'a Plan,
    phase: usize,
    phase_start: Duration,
    k: u64,
    n: u64,
}

impl Iterator for Schedule<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            let phase = self.plan.phases.get(self.phase)?;
            if self.k < self.n {
                // k < n, so k * d / n < d: integer nanoseconds, no drift over long phases.
                let nanos = u128::from(self.k) * phase.duration.as_nanos() / u128::from(self.n);
                self.k += 1;
                let within = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                return Some(Slot {
                    offset: self.phase_start + within,
                    measured: phase.measured,
                });
            }
            self.phase_start += phase.duration;
            self.phase += 1;
            self.k = 0;
            self.n = self.plan.phases.get(self.phase).map_or(0, phase_requests);
        }
    }
}

/// Parses `1500ms`, `10s`, `2m`, `1h`, or a bare number of seconds (`2.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 10s, 2m)"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_PLAN_DURATION.as_secs_f64() {
        return Err(format!(
            "`{s}` is out of range (0 to {}s)",
            MAX_PLAN_DURATION.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_constant_plan_spaces_requests_evenly() {
        let plan = Plan::constant(200.0, secs(1.0), Duration::ZERO).unwrap();
        let slots: Vec<Slot> = plan.schedule().collect();
        assert_eq!(slots.len(), 200);
        assert_eq!(plan.total_requests(), 200);
        assert_eq!(slots[0].offset, Duration::ZERO);
        assert_eq!(slots[1].offset, Duration::from_millis(5));
        assert_eq!(slots[199].offset, Duration::from_millis(995));
        assert!(slots.iter().all(|s| s.measured));
    }

    #[test]
    fn warmup_comes_first_and_is_not_measured() {
        let plan = Plan::constant(10.0, secs(2.0), secs(1.0)).unwrap();
        let slots: Vec<Slot> = plan.schedule().collect();
        assert_eq!(slots.len(), 30);
        assert_eq!(slots.iter().filter(|s| !s.measured).count(), 10);
        assert!(slots[..10].iter().all(|s| !s.measured));
        assert_eq!(slots[10].offset, secs(1.0));
        assert_eq!(plan.warmup(), secs(1.0));
        assert_eq!(plan.measured_duration(), secs(2.0));
        assert_eq!(plan.measured_requests(), 20);
    }

    #[test]
    fn offsets_never_go_backwards_across_phases() {
        let plan = Plan::surge(7.0, 10.0, secs(1.5), secs(0.7), secs(1.1), secs(0.3)).unwrap();
        let slots: Vec<Slot> = plan.schedule().collect();
        assert_eq!(slots.len() as u64, plan.total_requests());
        assert!(slots.windows(2).all(|w| w[0].offset <= w[1].offset));
        assert!(slots.last().unwrap().offset < plan.total_duration());
    }

    #[test]
    fn a_surge_multiplies_the_middle_phase() {
        let plan =
            Plan::surge(100.0, 10.0, secs(2.0), secs(1.0), secs(2.0), Duration::ZERO).unwrap();
        assert_eq!(plan.total_requests(), 200 + 1000 + 200);
        assert_eq!(plan.peak_rate(), 1000.0);
        assert_eq!(plan.rate_at(secs(1.9)), 100.0);
        assert_eq!(plan.rate_at(secs(2.0)), 1000.0);
        assert_eq!(plan.rate_at(secs(3.5)), 100.0);
        assert_eq!(plan.rate_at(secs(5.0)), 0.0);
        let in_surge = plan
            .schedule()
            .filter(|s| s.offset >= secs(2.0) && s.offset < secs(3.0))
            .count();
        assert_eq!(in_surge, 1000);
    }

    #[test]
    fn fractional_rates_round_to_whole_requests() {
        let plan = Plan::constant(2.5, secs(1.0), Duration::ZERO).unwrap();
        assert_eq!(plan.schedule().count(), 3);
        let plan = Plan::constant(0.4, secs(1.0), Duration::ZERO).unwrap();
        assert_eq!(plan.schedule().count(), 0);
    }

    #[test]
    fn bad_plans_are_refused() {
        let z = Duration::ZERO;
        assert!(Plan::constant(0.0, secs(1.0), z).is_err());
        assert!(Plan::constant(-5.0, secs(1.0), z).is_err());
        assert!(Plan::constant(f64::NAN, secs(1.0), z).is_err());
        assert!(Plan::constant(MAX_RATE * 2.0, secs(1.0), z).is_err());
        assert!(Plan::constant(10.0, z, secs(1.0)).is_err());
        assert!(Plan::constant(10.0, secs(90_000.0), z).is_err());
        assert!(Plan::surge(10.0, 0.5, secs(1.0), secs(1.0), secs(1.0), z).is_err());
        let late_warmup = vec![
            Phase {
                rate: 1.0,
                duration: secs(1.0),
                measured: true,
            },
            Phase {
                rate: 1.0,
                duration: secs(1.0),
                measured: false,
            },
        ];
        assert!(Plan::new(late_warmup).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("10s").unwrap(), secs(10.0));
        assert_eq!(parse_duration("2m").unwrap(), secs(120.0));
        assert_eq!(parse_duration("1h").unwrap(), secs(3600.0));
        assert_eq!(parse_duration("2.5").unwrap(), secs(2.5));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "ten", "-1s", "1d", "inf", "100000h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

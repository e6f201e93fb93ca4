//! The per-DSP circuit breaker: a DSP whose calls fail too often over a sliding window stops
//! being called, except for a trickle of probe calls, until enough probes succeed in a row.
//!
//! Closed (every call goes out, results fill the window) → Open (no calls; the first probe
//! after `open_ms`) → HalfOpen (one probe per `probe_every_ms`; `close_after` successes in a
//! row close it, one failure opens it again). The time is always an argument, so the rules
//! are tested on an injected clock. A closed breaker is one atomic load on the way out; the
//! small mutex is taken per result and while open, never across an `.await`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::DspConfig;

/// Buckets of the sliding window: the window slides by a tenth of its length.
const BUCKETS: usize = 10;

/// A DSP's breaker thresholds, from its `[[dsp]]` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    pub window: Duration,
    pub min_calls: u32,
    pub failure_ratio: f64,
    pub open: Duration,
    pub probe_every: Duration,
    pub close_after: u32,
}

impl BreakerSettings {
    /// `None` when the DSP's breaker is off; every problem is returned, each naming its key.
    pub fn from_config(dsp: &DspConfig) -> Result<Option<BreakerSettings>, Vec<String>> {
        let mut errors = Vec::new();
        let mut positive = |key: &str, value: u64| {
            if value == 0 {
                errors.push(format!("{key} must be above 0"));
            }
        };
        positive("breaker_window_ms", dsp.breaker_window_ms);
        positive("breaker_min_calls", u64::from(dsp.breaker_min_calls));
        positive("breaker_open_ms", dsp.breaker_open_ms);
        positive("breaker_probe_every_ms", dsp.breaker_probe_every_ms);
        positive("breaker_close_after", u64::from(dsp.breaker_close_after));
        let ratio = dsp.breaker_failure_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            errors.push(format!(
                "breaker_failure_ratio must be above 0.0 and at most 1.0, not {ratio}"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(dsp.breaker.then(|| BreakerSettings {
            window: Duration::from_millis(dsp.breaker_window_ms),
            min_calls: dsp.breaker_min_calls,
            failure_ratio: ratio,
            open: Duration::from_millis(dsp.breaker_open_ms),
            probe_every: Duration::from_millis(dsp.breaker_probe_every_ms),
            close_after: dsp.breaker_close_after,
        }))
    }
}

/// How a call was let through: a normal call, or a probe of an open circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Admission {
    #[default]
    Normal,
    Probe,
}

/// A change of state, for the caller to log and show in `exchange_dsp_circuit_open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Closed → Open: the window's failures passed the threshold.
    Opened,
    /// Open → HalfOpen: the first probe went out.
    Probing,
    /// HalfOpen → Open: a probe failed.
    Reopened,
    /// HalfOpen → Closed: enough probes succeeded in a row.
    Closed,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Probing => "probing",
            Change::Reopened => "reopened",
            Change::Closed => "closed",
        }
    }

    /// Whether the DSP gets only probes after this change.
    pub fn is_open(self) -> bool {
        !matches!(self, Change::Closed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    /// No calls until `probe_at`.
    Open {
        probe_at: Instant,
    },
    /// One probe per `probe_every`; `successes` in a row so far.
    HalfOpen {
        probe_at: Instant,
        successes: u32,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    start: Option<Instant>,
    calls: u32,
    failures: u32,
}

struct Inner {
    state: State,
    buckets: [Bucket; BUCKETS],
    /// The bucket being filled.
    head: usize,
}

pub struct Breaker {
    settings: BreakerSettings,
    /// `state != Closed`, readable without the lock.
    open: AtomicBool,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            open: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: [Bucket::default(); BUCKETS],
                head: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent at every step, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go out at `now`: `Err(())` while open and no probe is due.
    /// Not closed: open or probing.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    pub fn admit(&self, now: Instant) -> (Result<Admission, ()>, Option<Change>) {
        if !self.open.load(Ordering::Acquire) {
            return (Ok(Admission::Normal), None);
        }
        let mut inner = self.lock();
        let next = now + self.settings.probe_every;
        match inner.state {
            State::Closed => (Ok(Admission::Normal), None),
            State::Open { probe_at } if now >= probe_at => {
                inner.state = State::HalfOpen {
                    probe_at: next,
                    successes: 0,
                };
                (Ok(Admission::Probe), Some(Change::Probing))
            }
            State::HalfOpen {
                probe_at,
                successes,
            } if now >= probe_at => {
                inner.state = State::HalfOpen {
                    probe_at: next,
                    successes,
                };
                (Ok(Admission::Probe), None)
            }
            State::Open { .. } | State::HalfOpen { .. } => (Err(()), None),
        }
    }

    /// Records how a call that went out ended at `now`: `ok` is an answer read (bids or a
    /// no-bid); a timeout, a transport error, a bad status or an unreadable answer is not.
    pub fn record(&self, admission: Admission, ok: bool, now: Instant) -> Option<Change> {
        let mut inner = self.lock();
        match (inner.state, admission) {
            (State::Closed, _) => {
                let Bucket {
                    calls, failures, ..
                } = inner.add(now, ok, self.settings.window);
                let s = &self.settings;
                if calls >= s.min_calls && f64::from(failures) >= s.failure_ratio * f64::from(calls)
                {
                    inner.state = State::Open {
                        probe_at: now + s.open,
                    };
                    self.open.store(true, Ordering::Release);
                    return Some(Change::Opened);
                }
                None
            }
            // Calls let through before the circuit opened say nothing about recovery.
            (_, Admission::Normal) => None,
            (State::Open { .. }, Admission::Probe) => None,
            (State::HalfOpen { .. }, Admission::Probe) if !ok => {
                inner.state = State::Open {
                    probe_at: now + self.settings.open,
                };
                Some(Change::Reopened)
            }
            (
                State::HalfOpen {
                    probe_at,
                    successes,
                },
                Admission::Probe,
            ) => {
                let successes = successes + 1;
                if successes < self.settings.close_after {
                    inner.state = State::HalfOpen {
                        probe_at,
                        successes,
                    };
                    return None;
                }
                inner.state = State::Closed;
                inner.buckets = [Bucket::default(); BUCKETS];
                self.open.store(false, Ordering::Release);
                Some(Change::Closed)
            }
        }
    }
}

impl Inner {
    /// Adds one result at `now` and returns the window's totals.
    fn add(&mut self, now: Instant, ok: bool, window: Duration) -> Bucket {
        let slide = window / BUCKETS as u32;
        let current = self.buckets[self.head];
        if current.start.is_none_or(|start| now >= start + slide) {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = Bucket {
                start: Some(now),
                calls: 0,
                failures: 0,
            };
        }
        let head = &mut self.buckets[self.head];
        head.calls += 1;
        head.failures += u32::from(!ok);
        let mut total = Bucket::default();
        for b in &self.buckets {
            if b.start.is_some_and(|start| now < start + window) {
                total.calls += b.calls;
                total.failures += b.failures;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_millis(1000),
            min_calls: 4,
            failure_ratio: 0.5,
            open: Duration::from_millis(500),
            probe_every: Duration::from_millis(100),
            close_after: 2,
        }
    }

    /// One step of a scenario: at `ms`, either a call is asked for (`Ask`, expecting what
    /// `admit` says) or a result of that kind arrives (expecting the change it makes).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Ask(u64, Option<Admission>, Option<Change>),
        Ok(u64, Admission, Option<Change>),
        Fail(u64, Admission, Option<Change>),
    }
    use Admission::{Normal, Probe};
    use Step::{Ask, Fail, Ok};

    /// Runs the steps on a fresh breaker and checks each one.
    fn check(name: &str, steps: &[Step]) {
        let breaker = Breaker::new(settings());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Ask(ms, want, change) => {
                    let (got, got_change) = breaker.admit(at(ms));
                    assert_eq!((got.ok(), got_change), (want, change), "{name}: step {i}");
                }
                Ok(ms, kind, change) => {
                    assert_eq!(
                        breaker.record(kind, true, at(ms)),
                        change,
                        "{name}: step {i}"
                    )
                }
                Fail(ms, kind, change) => {
                    assert_eq!(
                        breaker.record(kind, false, at(ms)),
                        change,
                        "{name}: step {i}"
                    )
                }
            }
        }
    }

    /// Four failures in a row at 0..3 ms: the breaker opens on the fourth.
    const OPEN_AT_3: [Step; 4] = [
        Fail(0, Normal, None),
        Fail(1, Normal, None),
        Fail(2, Normal, None),
        Fail(3, Normal, Some(Change::Opened)),
    ];

    fn then(prefix: &[Step], rest: &[Step]) -> Vec<Step> {
        prefix.iter().chain(rest).copied().collect()
    }

    #[test]
    fn rules() {
        check("closed admits", &[Ask(0, Some(Normal), None)]);
        check(
            "below min_calls never opens",
            &[
                Fail(0, Normal, None),
                Fail(1, Normal, None),
                Fail(2, Normal, None),
            ],
        );
        check(
            "half failing opens (ratio is inclusive)",
            &[
                Ok(0, Normal, None),
                Fail(1, Normal, None),
                Ok(2, Normal, None),
                Fail(3, Normal, Some(Change::Opened)),
            ],
        );
        check(
            "under the ratio stays closed",
            &[
                Ok(0, Normal, None),
                Ok(1, Normal, None),
                Fail(2, Normal, None),
                Ok(3, Normal, None),
                Fail(4, Normal, None),
                Ask(5, Some(Normal), None),
            ],
        );
        check(
            "failures older than the window are forgotten",
            &[
                Fail(0, Normal, None),
                Fail(1, Normal, None),
                Fail(2, Normal, None),
                Ok(1100, Normal, None),
                Ok(1101, Normal, None),
                Fail(1102, Normal, None),
                Ask(1103, Some(Normal), None),
            ],
        );
        check(
            "open skips until open_ms, then one probe per probe_every",
            &then(
                &OPEN_AT_3,
                &[
                    Ask(4, None, None),
                    Ask(502, None, None),
                    Ask(503, Some(Probe), Some(Change::Probing)),
                    Ask(504, None, None),
                    Ask(602, None, None),
                    Ask(603, Some(Probe), None),
                    Ask(604, None, None),
                ],
            ),
        );
        check(
            "close_after successful probes in a row close it",
            &then(
                &OPEN_AT_3,
                &[
                    Ask(503, Some(Probe), Some(Change::Probing)),
                    Ok(510, Probe, None),
                    Ask(603, Some(Probe), None),
                    Ok(610, Probe, Some(Change::Closed)),
                    Ask(611, Some(Normal), None),
                    // A fresh window: three failures are below min_calls again.
                    Fail(612, Normal, None),
                    Fail(613, Normal, None),
                    Fail(614, Normal, None),
                    Ask(615, Some(Normal), None),
                ],
            ),
        );
        check(
            "a failed probe reopens for open_ms and restarts the count",
            &then(
                &OPEN_AT_3,
                &[
                    Ask(503, Some(Probe), Some(Change::Probing)),
                    Ok(510, Probe, None),
                    Ask(603, Some(Probe), None),
                    Fail(620, Probe, Some(Change::Reopened)),
                    Ask(1119, None, None),
                    Ask(1120, Some(Probe), Some(Change::Probing)),
                    Ok(1121, Probe, None),
                    Ask(1220, Some(Probe), None),
                    Ok(1221, Probe, Some(Change::Closed)),
                ],
            ),
        );
        check(
            "late results of normal calls do not move an open breaker",
            &then(
                &OPEN_AT_3,
                &[
                    Ok(10, Normal, None),
                    Ask(503, Some(Probe), Some(Change::Probing)),
                    Fail(504, Normal, None),
                    Ok(505, Normal, None),
                    Ok(506, Probe, None),
                    Ask(603, Some(Probe), None),
                    Ok(604, Probe, Some(Change::Closed)),
                ],
            ),
        );
    }

    fn dsp(keys: &str) -> DspConfig {
        toml::from_str(&format!(
            "name = \"d\"\nurl = \"http://127.0.0.1:1/\"\n{keys}"
        ))
        .unwrap()
    }

    #[test]
    fn settings_from_config() {
        assert_eq!(
            BreakerSettings::from_config(&dsp("")),
            Result::Ok(Some(BreakerSettings {
                window: Duration::from_millis(1000),
                min_calls: 20,
                failure_ratio: 0.5,
                open: Duration::from_millis(1000),
                probe_every: Duration::from_millis(100),
                close_after: 3,
            }))
        );
        assert_eq!(
            BreakerSettings::from_config(&dsp("breaker = false")),
            Result::Ok(None)
        );
        let errors = BreakerSettings::from_config(&dsp(
            "breaker_window_ms = 0\nbreaker_min_calls = 0\nbreaker_failure_ratio = 1.5\n\
             breaker_open_ms = 0\nbreaker_probe_every_ms = 0\nbreaker_close_after = 0",
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "breaker_window_ms must be above 0",
                "breaker_min_calls must be above 0",
                "breaker_open_ms must be above 0",
                "breaker_probe_every_ms must be above 0",
                "breaker_close_after must be above 0",
                "breaker_failure_ratio must be above 0.0 and at most 1.0, not 1.5",
            ]
        );
    }
}

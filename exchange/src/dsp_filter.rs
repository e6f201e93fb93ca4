//! Which DSPs an auction calls: per-DSP targeting (media types, channels, countries, device
//! types), the circuit breaker and the QPS cap, decided once per auction per DSP before the
//! fan-out.
//!
//! The request is summarised once ([`RequestTraits::of`]) into bit sets and borrowed strings,
//! so each DSP's decision is a few integer tests and at most one short slice scan: nothing is
//! allocated on the request path.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use openrtb::request::BidRequest;
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, BreakerSettings, Change};
use crate::config::DspConfig;

/// Why a DSP was not called for an auction, as counted in
/// `exchange_dsp_skipped_total{dsp, reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The request has nothing the DSP targets.
    Targeting,
    /// The DSP's `qps` cap was reached.
    Qps,
    /// The DSP already had `max_in_flight` calls running.
    InFlight,
    /// The DSP's circuit breaker is open and no probe was due.
    CircuitOpen,
}

impl Skip {
    pub const ALL: [Skip; 4] = [
        Skip::Targeting,
        Skip::Qps,
        Skip::InFlight,
        Skip::CircuitOpen,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Skip::Targeting => "targeting",
            Skip::Qps => "qps",
            Skip::InFlight => "in_flight",
            Skip::CircuitOpen => "circuit_open",
        }
    }
}

const MEDIA_TYPES: [(&str, u8); 4] = [("banner", 1), ("video", 2), ("audio", 4), ("native", 8)];
const CHANNELS: [(&str, u8); 3] = [("site", 1), ("app", 2), ("dooh", 4)];

/// What the targeting rules look at in one request, read once per auction.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTraits<'r> {
    /// Bit set of the media types of all imps.
    media: u8,
    /// Bit set of the channel objects present (normally one).
    channels: u8,
    country: Option<&'r str>,
    device_type: Option<i32>,
}

impl<'r> RequestTraits<'r> {
    pub fn of(req: &'r BidRequest<'_>) -> Self {
        let mut media = 0;
        for imp in req.imp.iter() {
            media |= u8::from(imp.banner.is_some())
                | u8::from(imp.video.is_some()) << 1
                | u8::from(imp.audio.is_some()) << 2
                | u8::from(imp.native.is_some()) << 3;
        }
        let channels = u8::from(req.site.is_some())
            | u8::from(req.app.is_some()) << 1
            | u8::from(req.dooh.is_some()) << 2;
        let device = req.device.as_deref();
        Self {
            media,
            channels,
            country: device
                .and_then(|d| d.geo.as_deref())
                .and_then(|g| g.country.as_deref()),
            device_type: device.and_then(|d| d.devicetype),
        }
    }
}

/// One DSP's targeting; an empty list targets everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targeting {
    /// Bit set over [`MEDIA_TYPES`]; 0 is any.
    media: u8,
    /// Bit set over [`CHANNELS`]; 0 is any.
    channels: u8,
    countries: Box<[[u8; 3]]>,
    device_types: Box<[i32]>,
}

impl Targeting {
    /// Reads a DSP's targeting keys; every problem is returned, each naming its key.
    pub fn from_config(dsp: &DspConfig) -> Result<Targeting, Vec<String>> {
        let mut errors = Vec::new();
        let media = bits(&dsp.media_types, &MEDIA_TYPES, "media_types", &mut errors);
        let channels = bits(&dsp.channels, &CHANNELS, "channels", &mut errors);
        let mut countries = Vec::with_capacity(dsp.countries.len());
        for c in &dsp.countries {
            match <[u8; 3]>::try_from(c.as_bytes()) {
                Ok(code) if code.iter().all(u8::is_ascii_uppercase) => countries.push(code),
                _ => errors.push(format!(
                    "countries: {c:?} is not an ISO-3166 alpha-3 code like \"USA\""
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Targeting {
            media,
            channels,
            countries: countries.into(),
            device_types: dsp.device_types.clone().into(),
        })
    }

    /// Whether a request has something this DSP targets.
    pub fn matches(&self, r: &RequestTraits<'_>) -> bool {
        (self.media == 0 || self.media & r.media != 0)
            && (self.channels == 0 || self.channels & r.channels != 0)
            && (self.countries.is_empty()
                || r.country.is_some_and(|c| {
                    self.countries
                        .iter()
                        .any(|code| code.eq_ignore_ascii_case(c.as_bytes()))
                }))
            && (self.device_types.is_empty()
                || r.device_type
                    .is_some_and(|t| self.device_types.contains(&t)))
    }
}

fn bits(names: &[String], table: &[(&str, u8)], key: &str, errors: &mut Vec<String>) -> u8 {
    let mut set = 0;
    for name in names {
        match table.iter().find(|(n, _)| *n == name) {
            Some((_, bit)) => set |= bit,
            None => {
                let known: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                errors.push(format!(
                    "{key}: unknown {name:?}, expected one of {}",
                    known.join(", ")
                ));
            }
        }
    }
    set
}

/// A DSP's admission rules: targeting first (it costs no token), then the circuit breaker,
/// then the QPS cap (so a DSP that is not called spends no token).
pub struct Gate {
    targeting: Targeting,
    breaker: Option<Arc<Breaker>>,
    /// GCRA with a burst of one second's worth of calls.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Gate {
    pub fn from_config(dsp: &DspConfig) -> Result<Gate, Vec<String>> {
        let limiter = match dsp.qps.map(NonZeroU32::new) {
            None => Ok(None),
            Some(Some(qps)) => Ok(Some(Arc::new(RateLimiter::direct(Quota::per_second(qps))))),
            Some(None) => Err("qps must be above 0".to_owned()),
        };
        match (
            Targeting::from_config(dsp),
            BreakerSettings::from_config(dsp),
            limiter,
        ) {
            (Ok(targeting), Ok(breaker), Ok(limiter)) => Ok(Gate {
                targeting,
                breaker: breaker.map(|b| Arc::new(Breaker::new(b))),
                limiter,
            }),
            (targeting, breaker, limiter) => {
                let mut errors = targeting.err().unwrap_or_default();
                errors.extend(breaker.err().unwrap_or_default());
                errors.extend(limiter.err());
                Err(errors)
            }
        }
    }

    /// Takes over `old`'s circuit breaker and QPS window: a reload that leaves a DSP's
    /// settings alone must not hand a broken DSP its full traffic again, nor a capped one a
    /// fresh burst.
    pub fn keep_state_of(&mut self, old: &Gate) {
        self.breaker.clone_from(&old.breaker);
        self.limiter.clone_from(&old.limiter);
    }

    /// Whether the circuit breaker is letting only probes through.
    pub fn circuit_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.is_open())
    }

    /// Whether this DSP is called at `now` for a request with these traits, and how; the
    /// breaker's change of state, if letting a probe through made one.
    pub fn admit(
        &self,
        request: &RequestTraits<'_>,
        now: Instant,
    ) -> (Result<Admission, Skip>, Option<Change>) {
        if !self.targeting.matches(request) {
            return (Err(Skip::Targeting), None);
        }
        let (admission, change) = match &self.breaker {
            Some(breaker) => match breaker.admit(now) {
                (Ok(admission), change) => (admission, change),
                (Err(()), change) => return (Err(Skip::CircuitOpen), change),
            },
            None => (Admission::Normal, None),
        };
        match &self.limiter {
            Some(limiter) if limiter.check().is_err() => (Err(Skip::Qps), change),
            _ => (Ok(admission), change),
        }
    }

    /// Tells the breaker how a call that went out ended at `now` (see [`Breaker::record`]).
    pub fn record(&self, admission: Admission, ok: bool, now: Instant) -> Option<Change> {
        self.breaker.as_ref()?.record(admission, ok, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsp(toml_keys: &str) -> DspConfig {
        toml::from_str(&format!(
            "name = \"d\"\nurl = \"http://127.0.0.1:1/\"\n{toml_keys}"
        ))
        .unwrap()
    }

    /// Whether a DSP with these config keys is called for this request.
    fn check(keys: &str, request: serde_json::Value) -> bool {
        let body = request.to_string();
        let req = openrtb::request::parse(body.as_bytes()).unwrap();
        let gate = Gate::from_config(&dsp(keys)).unwrap();
        gate.admit(&RequestTraits::of(&req), Instant::now())
            .0
            .is_ok()
    }

    #[test]
    fn targeting_rules() {
        let banner_site = serde_json::json!({"id": "r", "imp": [{"id": "1", "banner": {"w": 1, "h": 1}}],
            "site": {"id": "s"}, "device": {"devicetype": 4, "geo": {"country": "FRA"}}});
        let video_app = serde_json::json!({"id": "r", "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}],
            "app": {"id": "a"}, "device": {"devicetype": 1}});
        let mixed_dooh = serde_json::json!({"id": "r", "imp": [{"id": "1", "banner": {"w": 1, "h": 1}},
            {"id": "2", "native": {"request": "{\"assets\":[{\"id\":1,\"title\":{\"len\":25}}]}"}}], "dooh": {"id": "d"}});
        let table: &[(&str, &serde_json::Value, bool)] = &[
            ("", &banner_site, true),
            ("", &video_app, true),
            ("media_types = [\"video\"]", &banner_site, false),
            ("media_types = [\"video\"]", &video_app, true),
            ("media_types = [\"audio\", \"banner\"]", &banner_site, true),
            ("media_types = [\"native\"]", &mixed_dooh, true),
            ("media_types = [\"audio\"]", &mixed_dooh, false),
            ("channels = [\"app\"]", &banner_site, false),
            ("channels = [\"app\"]", &video_app, true),
            ("channels = [\"dooh\", \"site\"]", &mixed_dooh, true),
            ("countries = [\"FRA\", \"DEU\"]", &banner_site, true),
            ("countries = [\"USA\"]", &banner_site, false),
            ("countries = [\"USA\"]", &video_app, false),
            ("device_types = [4, 5]", &banner_site, true),
            ("device_types = [4, 5]", &video_app, false),
            ("device_types = [4]", &mixed_dooh, false),
            (
                "media_types = [\"banner\"]\nchannels = [\"site\"]\ncountries = [\"FRA\"]\ndevice_types = [4]",
                &banner_site,
                true,
            ),
            ("media_types = [\"banner\"]\nchannels = [\"app\"]", &banner_site, false),
        ];
        for (keys, request, called) in table {
            assert_eq!(
                check(keys, (*request).clone()),
                *called,
                "{keys} / {request}"
            );
        }
    }

    #[test]
    fn bad_targeting_is_reported_key_by_key() {
        let e = Targeting::from_config(&dsp(
            "media_types = [\"banner\", \"vidoe\"]\nchannels = [\"web\"]\ncountries = [\"FR\", \"fra\", \"USA\"]",
        ))
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("media_types: unknown \"vidoe\""), "{e:?}");
        assert!(e[1].starts_with("channels: unknown \"web\""), "{e:?}");
        assert!(e[2].starts_with("countries: \"FR\""), "{e:?}");
        assert!(e[3].starts_with("countries: \"fra\""), "{e:?}");
        assert_eq!(
            Gate::from_config(&dsp("qps = 0")).err(),
            Some(vec!["qps must be above 0".to_owned()])
        );
    }

    #[test]
    fn the_qps_cap_admits_one_seconds_worth_at_once() {
        let gate = Gate::from_config(&dsp("qps = 3")).unwrap();
        let traits = RequestTraits::default();
        let now = Instant::now();
        let admitted: Vec<_> = (0..5).map(|_| gate.admit(&traits, now).0).collect();
        let normal = Ok(Admission::Normal);
        assert_eq!(
            admitted,
            [normal, normal, normal, Err(Skip::Qps), Err(Skip::Qps)]
        );
    }
}

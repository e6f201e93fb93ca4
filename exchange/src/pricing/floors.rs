//! `[[floor]]` rules, prepared once per config: each rule's strings kept lowercase, its size
//! parsed, the rules ordered by floor (highest first), so the first rule an imp matches
//! gives its floor and matching allocates nothing.

use money::CpmMicros;
use openrtb::request::{BidRequest, Imp};

use crate::config::{parse_size, FloorRule};

/// The kinds of media an imp can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    Banner,
    Video,
    Audio,
    Native,
}

impl Media {
    fn parse(name: &str) -> Option<Media> {
        [
            ("banner", Media::Banner),
            ("video", Media::Video),
            ("audio", Media::Audio),
            ("native", Media::Native),
        ]
        .into_iter()
        .find_map(|(n, m)| n.eq_ignore_ascii_case(name).then_some(m))
    }

    fn offered_by(self, imp: &Imp<'_>) -> bool {
        match self {
            Media::Banner => imp.banner.is_some(),
            Media::Video => imp.video.is_some(),
            Media::Audio => imp.audio.is_some(),
            Media::Native => imp.native.is_some(),
        }
    }
}

/// One rule, ready to match.
#[derive(Debug)]
struct Rule {
    publisher: Option<Box<str>>,
    domain: Option<Box<str>>,
    bundle: Option<Box<str>>,
    country: Option<Box<str>>,
    media: Option<Media>,
    size: Option<(i64, i64)>,
    floor: CpmMicros,
}

/// What the rules look at in a request, read once per auction.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Placement<'r> {
    publisher: Option<&'r str>,
    domain: Option<&'r str>,
    bundle: Option<&'r str>,
    country: Option<&'r str>,
}

impl<'r> Placement<'r> {
    pub fn of(req: &'r BidRequest<'r>) -> Placement<'r> {
        let site = req.site.as_deref();
        let app = req.app.as_deref();
        let dooh = req.dooh.as_ref();
        let publisher = site
            .and_then(|s| s.publisher.as_ref())
            .or(app.and_then(|a| a.publisher.as_ref()))
            .or(dooh.and_then(|d| d.publisher.as_ref()))
            .and_then(|p| p.id.as_deref());
        Placement {
            publisher,
            domain: site.and_then(|s| s.domain.as_deref()),
            bundle: app.and_then(|a| a.bundle.as_deref()),
            country: req
                .device
                .as_deref()
                .and_then(|d| d.geo.as_deref())
                .and_then(|g| g.country.as_deref()),
        }
    }
}

/// The floor rules of one config.
#[derive(Debug, Default)]
pub(crate) struct FloorRules {
    /// Highest floor first.
    rules: Vec<Rule>,
}

impl FloorRules {
    /// The rules of a validated config (a rule that does not parse is left out; validation
    /// refuses such configs).
    pub fn new(rules: &[FloorRule]) -> FloorRules {
        let lower = |s: &Option<String>| s.as_deref().map(|s| s.to_ascii_lowercase().into());
        let mut rules: Vec<Rule> = rules
            .iter()
            .filter_map(|r| {
                Some(Rule {
                    publisher: lower(&r.publisher),
                    domain: lower(&r.domain),
                    bundle: lower(&r.bundle),
                    country: lower(&r.country),
                    media: match &r.media_type {
                        Some(m) => Some(Media::parse(m)?),
                        None => None,
                    },
                    size: match &r.size {
                        Some(s) => parse_size(s).map(|(w, h)| (i64::from(w), i64::from(h))),
                        None => None,
                    },
                    floor: CpmMicros::from_cpm(r.floor)?,
                })
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.floor));
        FloorRules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The highest floor of the rules `imp` of `at` matches; zero when none does.
    pub fn floor(&self, at: &Placement<'_>, imp: &Imp<'_>) -> CpmMicros {
        self.rules
            .iter()
            .find(|r| r.matches(at, imp))
            .map_or(CpmMicros::ZERO, |r| r.floor)
    }
}

impl Rule {
    fn matches(&self, at: &Placement<'_>, imp: &Imp<'_>) -> bool {
        // The rule's strings are lowercase already; only the request's side is folded.
        let same = |want: &Option<Box<str>>, have: Option<&str>| match want {
            None => true,
            Some(want) => have.is_some_and(|h| h.eq_ignore_ascii_case(want)),
        };
        same(&self.publisher, at.publisher)
            && same(&self.domain, at.domain)
            && same(&self.bundle, at.bundle)
            && same(&self.country, at.country)
            && self.media.is_none_or(|m| m.offered_by(imp))
            && self.size.is_none_or(|size| has_size(imp, size))
    }
}

/// Whether the imp's banner (its own size or one of its formats) or video is `size`.
fn has_size(imp: &Imp<'_>, (w, h): (i64, i64)) -> bool {
    let is = |sw: Option<i64>, sh: Option<i64>| sw == Some(w) && sh == Some(h);
    imp.banner
        .as_deref()
        .is_some_and(|b| is(b.w, b.h) || b.format.iter().any(|f| is(f.w, f.h)))
        || imp.video.as_deref().is_some_and(|v| is(v.w, v.h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(keys: &[(&str, &str)], floor: f64) -> FloorRule {
        let get = |k: &str| {
            keys.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        FloorRule {
            publisher: get("publisher"),
            domain: get("domain"),
            bundle: get("bundle"),
            media_type: get("media_type"),
            size: get("size"),
            country: get("country"),
            floor,
        }
    }

    /// `(request JSON, floor in micros of imp 0)` over one set of rules.
    fn check(rules: &[FloorRule], cases: &[(&str, u64)]) {
        let rules = FloorRules::new(rules);
        for &(body, want) in cases {
            let req = openrtb::request::parse(body.as_bytes()).expect("a valid request");
            let at = Placement::of(&req);
            assert_eq!(rules.floor(&at, &req.imp[0]).get(), want, "{body}");
        }
    }

    #[test]
    fn the_highest_matching_rule_sets_the_floor() {
        let rules = [
            rule(&[], 0.1),
            rule(&[("publisher", "Pub-1")], 0.5),
            rule(&[("domain", "news.example"), ("media_type", "video")], 2.0),
            rule(&[("size", "300x250"), ("country", "gbr")], 1.5),
            rule(&[("bundle", "com.game")], 0.8),
            rule(&[("size", "728x90")], 0.7),
        ];
        check(
            &rules,
            &[
                (
                    r#"{"id":"r","imp":[{"id":"1","audio":{"mimes":["a"]}}]}"#,
                    100_000,
                ),
                (
                    r#"{"id":"r","site":{"publisher":{"id":"PUB-1"}},"imp":[{"id":"1","banner":{"w":1,"h":1}}]}"#,
                    500_000,
                ),
                (
                    r#"{"id":"r","site":{"domain":"News.Example"},"imp":[{"id":"1","video":{"mimes":["v"]}}]}"#,
                    2_000_000,
                ),
                (
                    r#"{"id":"r","site":{"domain":"news.example"},"imp":[{"id":"1","banner":{"w":1,"h":1}}]}"#,
                    100_000,
                ),
                (
                    r#"{"id":"r","device":{"geo":{"country":"GBR"}},"imp":[{"id":"1","banner":{"format":[{"w":320,"h":50},{"w":300,"h":250}]}}]}"#,
                    1_500_000,
                ),
                (
                    r#"{"id":"r","device":{"geo":{"country":"FRA"}},"imp":[{"id":"1","banner":{"w":300,"h":250}}]}"#,
                    100_000,
                ),
                (
                    r#"{"id":"r","app":{"bundle":"com.game","publisher":{"id":"pub-1"}},"imp":[{"id":"1","video":{"mimes":["v"],"w":728,"h":90}}]}"#,
                    800_000,
                ),
            ],
        );
        check(
            &[],
            &[(r#"{"id":"r","imp":[{"id":"1","banner":{"w":1,"h":1}}]}"#, 0)],
        );
    }
}

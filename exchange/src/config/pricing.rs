//! The money keys of the config: `[currency]` (rates and their file), `[[floor]]` rules, and
//! the rules they must follow. `[auction] default_margin` and `[[dsp]] bid_adjustment` sit in
//! their own sections; they are checked here with the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Config;

/// `[currency]`: how many units of each other currency one unit of `auction.currency` buys.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurrencyConfig {
    /// `{ EUR = 0.92, GBP = 0.79 }`: units of that currency per one unit of the auction
    /// currency. Default none: only the auction currency is traded.
    pub rates: BTreeMap<String, f64>,
    /// A JSON object of the same shape (`{"EUR": 0.92}`), read at start and on each reload
    /// (a broken file stops either) and re-read every `refresh_interval_s`; a read that
    /// fails then keeps the last good table. Its rates override `rates`. Default none.
    pub rates_file: Option<PathBuf>,
    /// How often `rates_file` is re-read. Default 300 s.
    pub refresh_interval_s: u64,
}

impl Default for CurrencyConfig {
    fn default() -> Self {
        Self {
            rates: BTreeMap::new(),
            rates_file: None,
            refresh_interval_s: 300,
        }
    }
}

/// One `[[floor]]` rule: the floor of every imp it matches. Each key left out matches
/// anything; the ones given must all match (strings ignoring ASCII case).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloorRule {
    /// `site.publisher.id`, `app.publisher.id` or `dooh.publisher.id`.
    #[serde(default)]
    pub publisher: Option<String>,
    /// `site.domain`.
    #[serde(default)]
    pub domain: Option<String>,
    /// `app.bundle`.
    #[serde(default)]
    pub bundle: Option<String>,
    /// `banner`, `video`, `audio` or `native`: the imp offers that kind.
    #[serde(default)]
    pub media_type: Option<String>,
    /// `"300x250"`: the imp's banner (its `w`×`h` or one of its `format`s) or video size.
    #[serde(default)]
    pub size: Option<String>,
    /// `device.geo.country` (ISO-3166 alpha-3, as the request carries it).
    #[serde(default)]
    pub country: Option<String>,
    /// The floor, CPM in the auction currency.
    pub floor: f64,
}

/// `"300x250"` as `(300, 250)`.
pub(crate) fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

impl Config {
    /// `[currency]`, `[[floor]]`, `auction.default_margin` and every `bid_adjustment`.
    pub(super) fn validate_pricing(&self, errors: &mut Vec<String>) {
        errors.extend(
            crate::pricing::rates::check_rates(&self.currency.rates, &self.auction.currency)
                .into_iter()
                .map(|e| format!("currency.rates: {e}")),
        );
        if self.currency.rates_file.is_some() && self.currency.refresh_interval_s == 0 {
            errors.push("currency.refresh_interval_s must be above 0".to_owned());
        }
        if money::Margin::from_fraction(self.auction.default_margin).is_none() {
            errors.push(format!(
                "auction.default_margin must be between 0 and 1, not {}",
                self.auction.default_margin
            ));
        }
        for dsp in &self.dsps {
            if money::Adjustment::from_factor(dsp.bid_adjustment).is_none() {
                errors.push(format!(
                    "dsp {:?}: bid_adjustment must be above 0 and at most 1000, not {}",
                    dsp.name, dsp.bid_adjustment
                ));
            }
        }
        for (i, rule) in self.floors.iter().enumerate() {
            if money::CpmMicros::from_cpm(rule.floor).is_none() {
                errors.push(format!(
                    "floor[{i}].floor must be a CPM from 0 to 1000000, not {}",
                    rule.floor
                ));
            }
            if let Some(media) = &rule.media_type {
                if !["banner", "video", "audio", "native"]
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(media))
                {
                    errors.push(format!(
                        "floor[{i}].media_type must be banner, video, audio or native, not {media:?}"
                    ));
                }
            }
            if let Some(size) = &rule.size {
                if parse_size(size).is_none() {
                    errors.push(format!(
                        "floor[{i}].size must be WIDTHxHEIGHT like \"300x250\", not {size:?}"
                    ));
                }
            }
            let keys = [
                &rule.publisher,
                &rule.domain,
                &rule.bundle,
                &rule.media_type,
                &rule.size,
                &rule.country,
            ];
            if keys.iter().any(|k| k.as_deref().is_some_and(str::is_empty)) {
                errors.push(format!(
                    "floor[{i}]: a key given must not be empty (leave it out to match anything)"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn errors(toml_text: &str) -> Vec<String> {
        let config: Config = toml::from_str(toml_text).expect("parses");
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(Error::Config(errors)) => errors,
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn every_money_problem_is_reported_at_once() {
        let e = errors(
            r#"
            [auction]
            default_margin = 1.5
            [currency]
            rates = { EUR = 0.92, gbp = 0.79, XYZ = 1.0, USD = 1.0, JPY = -150.0 }
            rates_file = "rates.json"
            refresh_interval_s = 0
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            bid_adjustment = 0.0
            [[floor]]
            media_type = "print"
            size = "300by250"
            floor = -1.0
            [[floor]]
            domain = ""
            floor = 1.0
            "#,
        );
        assert_eq!(
            e,
            [
                "currency.rates: JPY: the rate must be above 0 and at most 1000000, not -150",
                "currency.rates: USD is the auction currency: its rate is 1 by definition",
                "currency.rates: \"XYZ\" is not an ISO-4217 code like \"EUR\"",
                "currency.rates: \"gbp\" is not an ISO-4217 code like \"EUR\"",
                "currency.refresh_interval_s must be above 0",
                "auction.default_margin must be between 0 and 1, not 1.5",
                "dsp \"a\": bid_adjustment must be above 0 and at most 1000, not 0",
                "floor[0].floor must be a CPM from 0 to 1000000, not -1",
                "floor[0].media_type must be banner, video, audio or native, not \"print\"",
                "floor[0].size must be WIDTHxHEIGHT like \"300x250\", not \"300by250\"",
                "floor[1]: a key given must not be empty (leave it out to match anything)",
            ]
        );
        let ok = errors(
            r#"
            [auction]
            default_margin = 0.15
            [currency]
            rates = { EUR = 0.92 }
            [[floor]]
            size = "728x90"
            floor = 0.5
            "#,
        );
        assert!(ok.is_empty(), "{ok:?}");
    }
}

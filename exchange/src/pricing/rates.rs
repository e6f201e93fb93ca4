//! Exchange rates: the table one auction converts with, built from `[currency] rates` and
//! `rates_file`, and the background task that re-reads that file, keeping the last good
//! table when a read fails. The table is swapped whole (`ArcSwap`), so an auction that
//! loaded one keeps it to the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use money::Rate;
use openrtb::response::is_currency_code;

use crate::config::CurrencyConfig;
use crate::metrics::Registry;
use crate::Error;

/// Every rate one auction may convert with, from the auction currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateTable {
    /// The auction currency, uppercase: rate 1.
    auction: [u8; 3],
    /// The other currencies, uppercase and sorted, parallel to `rates`.
    codes: Vec<[u8; 3]>,
    rates: Vec<Rate>,
}

impl RateTable {
    /// The table of `rates` (checked by [`check_rates`]) for auctions in `auction`.
    pub fn new(auction: &str, rates: &BTreeMap<String, f64>) -> RateTable {
        let mut pairs: Vec<([u8; 3], Rate)> = rates
            .iter()
            .filter_map(|(code, rate)| Some((upper(code)?, Rate::from_f64(*rate)?)))
            .collect();
        pairs.sort_unstable_by_key(|(code, _)| *code);
        pairs.dedup_by_key(|(code, _)| *code);
        let auction = upper(auction).unwrap_or(*b"USD");
        pairs.retain(|(code, _)| *code != auction);
        RateTable {
            auction,
            codes: pairs.iter().map(|(c, _)| *c).collect(),
            rates: pairs.iter().map(|(_, r)| *r).collect(),
        }
    }

    /// The rate of `code` (any case): [`Rate::ONE`] for the auction currency, `None` for a
    /// currency without a rate.
    pub fn rate(&self, code: &str) -> Option<Rate> {
        let code = upper(code)?;
        if code == self.auction {
            return Some(Rate::ONE);
        }
        let i = self.codes.binary_search(&code).ok()?;
        self.rates.get(i).copied()
    }

    /// The currencies with a rate besides the auction's, uppercase and sorted.
    pub fn codes(&self) -> &[[u8; 3]] {
        &self.codes
    }
}

/// `code` as three uppercase ASCII bytes.
fn upper(code: &str) -> Option<[u8; 3]> {
    <[u8; 3]>::try_from(code.as_bytes())
        .ok()
        .map(|c| c.map(|b| b.to_ascii_uppercase()))
}

/// Every problem with `rates`, all at once: codes must be ISO-4217 (uppercase), other than
/// `auction`, and rates finite and above 0.
pub(crate) fn check_rates(rates: &BTreeMap<String, f64>, auction: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (code, rate) in rates {
        if !is_currency_code(code) || code.bytes().any(|b| !b.is_ascii_uppercase()) {
            errors.push(format!("{code:?} is not an ISO-4217 code like \"EUR\""));
        } else if code.eq_ignore_ascii_case(auction) {
            errors.push(format!(
                "{code} is the auction currency: its rate is 1 by definition"
            ));
        }
        if Rate::from_f64(*rate).is_none() {
            errors.push(format!(
                "{code}: the rate must be above 0 and at most 1000000, not {rate}"
            ));
        }
    }
    errors
}

/// Reads a rates file: a JSON object `{"EUR": 0.92, ...}`, checked by [`check_rates`].
pub(crate) fn read_file(path: &Path, auction: &str) -> Result<BTreeMap<String, f64>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_file(path, &text, auction)
}

fn parse_file(path: &Path, text: &[u8], auction: &str) -> Result<BTreeMap<String, f64>, String> {
    let rates: BTreeMap<String, f64> =
        serde_json::from_slice(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let errors = check_rates(&rates, auction);
    if errors.is_empty() {
        Ok(rates)
    } else {
        Err(format!("{}: {}", path.display(), errors.join("; ")))
    }
}

/// `rates` with `file`'s rates over them.
fn merged(rates: &BTreeMap<String, f64>, file: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut all = rates.clone();
    all.extend(file);
    all
}

/// The rates in force and, with a `rates_file`, the task that keeps them fresh (stopped
/// when this is dropped, i.e. when the config it came from is replaced).
pub(crate) struct Rates {
    table: Arc<ArcSwap<RateTable>>,
    refresh: Option<tokio::task::JoinHandle<()>>,
}

impl Rates {
    /// The table of `config`, its `rates_file` read now (a broken file is an error, as any
    /// other config problem), and the refresh task started. Needs a tokio runtime when a
    /// file is configured.
    pub fn start(
        config: &CurrencyConfig,
        auction: &str,
        registry: &Registry,
    ) -> Result<Rates, Error> {
        let file = match &config.rates_file {
            Some(path) => read_file(path, auction)
                .map_err(|e| Error::Config(vec![format!("currency.rates_file: {e}")]))?,
            None => BTreeMap::new(),
        };
        let table = Arc::new(ArcSwap::from_pointee(RateTable::new(
            auction,
            &merged(&config.rates, file),
        )));
        let refresh = config.rates_file.clone().map(|path| {
            tokio::spawn(refresh(
                table.clone(),
                Refresh {
                    path,
                    inline: config.rates.clone(),
                    auction: auction.to_owned(),
                    every: Duration::from_secs(config.refresh_interval_s.max(1)),
                    ok: registry
                        .counter("exchange_currency_rates_refresh_total", &[("result", "ok")]),
                    failed: registry.counter(
                        "exchange_currency_rates_refresh_total",
                        &[("result", "failed")],
                    ),
                },
            ))
        });
        Ok(Rates { table, refresh })
    }

    /// The table in force: one load per auction.
    pub fn load(&self) -> Guard<Arc<RateTable>> {
        self.table.load()
    }
}

impl Drop for Rates {
    fn drop(&mut self) {
        if let Some(task) = self.refresh.take() {
            task.abort();
        }
    }
}

/// What the refresh task re-reads and reports to.
struct Refresh {
    path: PathBuf,
    inline: BTreeMap<String, f64>,
    auction: String,
    every: Duration,
    ok: metrics::Counter,
    failed: metrics::Counter,
}

async fn refresh(table: Arc<ArcSwap<RateTable>>, r: Refresh) {
    let mut every = tokio::time::interval(r.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the file was read at start.
    every.tick().await;
    loop {
        every.tick().await;
        let read = match tokio::fs::read(&r.path).await {
            Ok(text) => parse_file(&r.path, &text, &r.auction),
            Err(e) => Err(format!("{}: {e}", r.path.display())),
        };
        match read {
            Ok(file) => {
                table.store(Arc::new(RateTable::new(
                    &r.auction,
                    &merged(&r.inline, file),
                )));
                r.ok.increment(1);
            }
            Err(problem) => {
                r.failed.increment(1);
                tracing::warn!(%problem, "currency rates not refreshed; the last good table stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_the_auction_currency_and_its_rates_in_any_case() {
        let rates = BTreeMap::from([("EUR".to_owned(), 0.92), ("GBP".to_owned(), 0.79)]);
        let t = RateTable::new("USD", &rates);
        assert_eq!(t.rate("usd"), Some(Rate::ONE));
        assert_eq!(t.rate("eur"), Rate::from_f64(0.92));
        assert_eq!(t.rate("GBP"), Rate::from_f64(0.79));
        assert_eq!(t.rate("JPY"), None);
        assert_eq!(t.rate("EURO"), None);
        assert_eq!(t.codes(), &[*b"EUR", *b"GBP"]);
    }

    #[test]
    fn every_bad_rate_is_reported() {
        let rates = BTreeMap::from([
            ("EUR".to_owned(), 0.0),
            ("eur".to_owned(), 1.0),
            ("XYZ".to_owned(), 1.0),
            ("USD".to_owned(), 1.0),
            ("GBP".to_owned(), f64::INFINITY),
            ("JPY".to_owned(), 150.0),
        ]);
        assert_eq!(
            check_rates(&rates, "USD"),
            [
                "EUR: the rate must be above 0 and at most 1000000, not 0",
                "GBP: the rate must be above 0 and at most 1000000, not inf",
                "USD is the auction currency: its rate is 1 by definition",
                "\"XYZ\" is not an ISO-4217 code like \"EUR\"",
                "\"eur\" is not an ISO-4217 code like \"EUR\"",
            ]
        );
    }
}

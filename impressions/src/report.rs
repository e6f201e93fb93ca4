//! The billing and revenue report read from the event files of one or more nodes:
//! impressions, clicks, CTR, gross spend, publisher payout, margin and eCPM, in total and per
//! campaign, DSP, or any combination of publisher, DSP, campaign, day and more. Billed events
//! are counted once by their id across every file, so a fleet's files add up exactly. Backs
//! `exchange report --events FILE... [--by ...]`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::events::{Event, EventType};
use crate::events_files::read_log;
use crate::Error;

/// What report rows can be keyed by (with the currency, always: amounts in two currencies
/// are never added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The request's publisher id.
    Publisher,
    Dsp,
    Campaign,
    /// The UTC day (`YYYY-MM-DD`) of the **auction** time: the time the signed URL carries,
    /// so every node puts one impression on the same day, and the day it was charged.
    Day,
    /// `device.geo.country`.
    Country,
    /// `banner`, `video`, `audio`, `native` (empty when unknown).
    MediaType,
    /// The site's domain or the app's bundle.
    Property,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Publisher,
        Dimension::Dsp,
        Dimension::Campaign,
        Dimension::Day,
        Dimension::Country,
        Dimension::MediaType,
        Dimension::Property,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Publisher => "publisher",
            Dimension::Dsp => "dsp",
            Dimension::Campaign => "campaign",
            Dimension::Day => "day",
            Dimension::Country => "country",
            Dimension::MediaType => "media_type",
            Dimension::Property => "property",
        }
    }

    /// This dimension's value for `e`.
    fn value(self, e: &Event) -> String {
        match self {
            Dimension::Publisher => e.publisher.clone(),
            Dimension::Dsp => e.dsp.clone(),
            Dimension::Campaign => e.campaign.clone(),
            Dimension::Day => utc_day(e.auction_ts),
            Dimension::Country => e.country.clone(),
            Dimension::MediaType => e
                .media_type
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            Dimension::Property => {
                if e.bundle.is_empty() {
                    e.domain.clone()
                } else {
                    e.bundle.clone()
                }
            }
        }
    }
}

impl FromStr for Dimension {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|d| d.as_str()).collect();
                Error::Config(format!(
                    "unknown report dimension {s:?}; one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `YYYY-MM-DD` of `ms` since the Unix epoch, UTC.
fn utc_day(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        // Past the year 9999: not a time an auction ran at.
        Err(_) => "invalid".to_owned(),
    }
}

/// Billed figures of a group of events, in one currency. Amounts are micros.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub impressions: u64,
    pub clicks: u64,
    /// Clicks per impression, basis points (1/100 of a percent); `None` without impressions.
    pub ctr_bp: Option<u64>,
    /// Gross spend: what the DSPs are billed.
    pub spend_micros: u64,
    /// What the publishers are paid (net).
    pub payout_micros: u64,
    /// What the exchange keeps: `spend_micros − payout_micros`.
    pub margin_micros: u64,
    /// Gross spend per thousand impressions, CPM micros (rounded down); `None` without
    /// impressions.
    pub ecpm_micros: Option<u64>,
    /// Payout per thousand impressions, CPM micros (rounded down): what the publisher earned
    /// per thousand.
    pub net_ecpm_micros: Option<u64>,
}

impl Totals {
    fn add(&mut self, billed: &Billed) {
        self.impressions += billed.impressions;
        self.clicks += billed.clicks;
        self.spend_micros += billed.gross;
        self.payout_micros += billed.net;
        self.margin_micros += billed.margin;
    }

    fn finish(&mut self) {
        self.ctr_bp = ratio(self.clicks, 10_000, self.impressions);
        self.ecpm_micros = ratio(self.spend_micros, 1000, self.impressions);
        self.net_ecpm_micros = ratio(self.payout_micros, 1000, self.impressions);
    }
}

/// `num * scale / den`, rounded down; `None` when `den` is 0.
fn ratio(num: u64, scale: u64, den: u64) -> Option<u64> {
    (den > 0).then(|| {
        u64::try_from(u128::from(num) * u128::from(scale) / u128::from(den)).unwrap_or(u64::MAX)
    })
}

/// Totals for one campaign or DSP, in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub name: String,
    pub currency: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Totals for one combination of the report's dimensions, in one currency. In JSON the key's
/// dimensions are fields of the row (`"publisher": "pub-1", "day": "2026-12-07"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupRow {
    #[serde(flatten)]
    pub key: BTreeMap<&'static str, String>,
    pub currency: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// What one or more events files say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Event files read.
    pub files: u64,
    pub impressions: u64,
    pub clicks: u64,
    /// Impression and click repeats that were counted and not billed.
    pub duplicates_dropped: u64,
    /// Impression and click hits from blocklisted IPs or known bots: logged, not billed.
    pub invalid_hits: u64,
    pub wins: u64,
    pub losses: u64,
    pub late_answers: u64,
    /// Events of test auctions (`"test": true`): charged and billed nothing, so counted here
    /// and nowhere else.
    pub test_events: u64,
    /// Billed lines whose impression or click id was already billed earlier in the same file
    /// or in another file (a spool replay redone after a crash, or two nodes that both billed
    /// one impression); not counted twice.
    pub repeated_lines_ignored: u64,
    /// Gross spend per currency, micros.
    pub spend_micros: BTreeMap<String, u64>,
    /// Publisher payout per currency, micros.
    pub payout_micros: BTreeMap<String, u64>,
    /// The exchange's margin per currency, micros.
    pub margin_micros: BTreeMap<String, u64>,
    /// Clicks per impression over every file, basis points.
    pub ctr_bp: Option<u64>,
    pub per_campaign: Vec<Row>,
    pub per_dsp: Vec<Row>,
    /// The dimensions `rows` are keyed by (`--by`); empty for no grouped rows.
    pub by: Vec<Dimension>,
    /// One row per combination of `by` and currency, sorted by key.
    pub rows: Vec<GroupRow>,
    /// Lines that were not events (skipped).
    pub bad_lines: u64,
    /// Bytes of torn last lines (skipped), over every file.
    pub torn_tail_bytes: u64,
}

impl Report {
    /// Reads the log `path` (its rotated files, plain or gzip, then `path` itself; see
    /// [`crate::events_files::log_files`]) and computes the report.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Self::from_files(&[path], &[])
    }

    /// Reads every file of `paths` (one per node, say) and computes one report, with rows
    /// keyed by `by` (empty for none). A billed impression or click is counted once however
    /// many of the files hold it.
    pub fn from_files<P: AsRef<Path>>(paths: &[P], by: &[Dimension]) -> Result<Self, Error> {
        let mut builder = Builder::new(by);
        for path in paths {
            let path = path.as_ref();
            let stats = read_log(path, |e| builder.add(e)).map_err(|e| Error::EventsFile {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
            let r = &mut builder.report;
            r.files += 1;
            r.bad_lines += stats.bad_lines;
            r.torn_tail_bytes += stats.torn_tail_bytes;
        }
        Ok(builder.finish())
    }

    /// The report of events already in memory.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Self {
        Self::from_events_by(events, &[])
    }

    /// The report of events already in memory, with rows keyed by `by`.
    pub fn from_events_by(events: impl IntoIterator<Item = Event>, by: &[Dimension]) -> Self {
        let mut builder = Builder::new(by);
        events.into_iter().for_each(|e| builder.add(e));
        builder.finish()
    }
}

/// What one billed line adds.
struct Billed {
    impressions: u64,
    clicks: u64,
    gross: u64,
    net: u64,
    margin: u64,
}

impl Billed {
    fn of(e: &Event) -> Self {
        if e.kind != EventType::Impression {
            return Self {
                impressions: 0,
                clicks: 1,
                gross: 0,
                net: 0,
                margin: 0,
            };
        }
        // Lines written before the split existed have only `cost_micros`: all of it was the
        // publisher's (there was no margin).
        let gross = e.gross_micros.or(e.cost_micros).unwrap_or(0);
        let net = e.net_micros.unwrap_or(gross).min(gross);
        Self {
            impressions: 1,
            clicks: 0,
            gross,
            net,
            margin: e.margin_micros.unwrap_or(gross - net),
        }
    }
}

/// Rows keyed by some dimensions and the currency.
struct Grouping {
    by: Vec<Dimension>,
    rows: BTreeMap<(Vec<String>, String), Totals>,
}

impl Grouping {
    fn new(by: Vec<Dimension>) -> Self {
        Self {
            by,
            rows: BTreeMap::new(),
        }
    }

    fn add(&mut self, e: &Event, billed: &Billed) {
        let key = self.by.iter().map(|d| d.value(e)).collect();
        self.rows
            .entry((key, e.currency.clone()))
            .or_default()
            .add(billed);
    }

    fn finish(self) -> impl Iterator<Item = (Vec<String>, String, Totals)> {
        self.rows.into_iter().map(|((key, currency), mut totals)| {
            totals.finish();
            (key, currency, totals)
        })
    }

    /// Single-dimension rows as [`Row`]s.
    fn named_rows(self) -> Vec<Row> {
        self.finish()
            .map(|(key, currency, totals)| Row {
                name: key.into_iter().next().unwrap_or_default(),
                currency,
                totals,
            })
            .collect()
    }
}

struct Builder {
    report: Report,
    billed: HashSet<(EventType, String)>,
    campaigns: Grouping,
    dsps: Grouping,
    groups: Grouping,
}

impl Builder {
    fn new(by: &[Dimension]) -> Self {
        let mut dims: Vec<Dimension> = Vec::with_capacity(by.len());
        for d in by {
            if !dims.contains(d) {
                dims.push(*d);
            }
        }
        Self {
            report: Report::default(),
            billed: HashSet::new(),
            campaigns: Grouping::new(vec![Dimension::Campaign]),
            dsps: Grouping::new(vec![Dimension::Dsp]),
            groups: Grouping::new(dims),
        }
    }

    fn add(&mut self, e: Event) {
        let r = &mut self.report;
        if e.test {
            r.test_events += 1;
            return;
        }
        match e.kind {
            EventType::Win => r.wins += 1,
            EventType::Loss => r.losses += 1,
            EventType::Late => r.late_answers += 1,
            EventType::DuplicateImpression | EventType::DuplicateClick => r.duplicates_dropped += 1,
            EventType::InvalidImpression | EventType::InvalidClick => r.invalid_hits += 1,
            EventType::Impression | EventType::Click => {
                // Without an id a line cannot be matched to a repeat; it counts as its own.
                let id = e
                    .impression_id
                    .clone()
                    .unwrap_or_else(|| format!("line-{}", self.billed.len()));
                if !self.billed.insert((e.kind, id)) {
                    r.repeated_lines_ignored += 1;
                    return;
                }
                let billed = Billed::of(&e);
                r.impressions += billed.impressions;
                r.clicks += billed.clicks;
                for (map, amount) in [
                    (&mut r.spend_micros, billed.gross),
                    (&mut r.payout_micros, billed.net),
                    (&mut r.margin_micros, billed.margin),
                ] {
                    *map.entry(e.currency.clone()).or_default() += amount;
                }
                self.campaigns.add(&e, &billed);
                self.dsps.add(&e, &billed);
                if !self.groups.by.is_empty() {
                    self.groups.add(&e, &billed);
                }
            }
        }
    }

    fn finish(self) -> Report {
        let mut r = self.report;
        r.ctr_bp = ratio(r.clicks, 10_000, r.impressions);
        r.per_campaign = self.campaigns.named_rows();
        r.per_dsp = self.dsps.named_rows();
        r.by = self.groups.by.clone();
        let by = r.by.clone();
        r.rows = self
            .groups
            .finish()
            .map(|(key, currency, totals)| GroupRow {
                key: by.iter().map(|d| d.as_str()).zip(key).collect(),
                currency,
                totals,
            })
            .collect();
        r
    }
}

/// `1234567` micros as `1.234567`.
fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn money_or_dash(micros: Option<u64>) -> String {
    micros.map_or_else(|| "-".to_owned(), money)
}

fn percent(bp: Option<u64>) -> String {
    bp.map_or_else(
        || "-".to_owned(),
        |bp| format!("{}.{:02}%", bp / 100, bp % 100),
    )
}

/// Writes a table: the key columns, the currency, then the figures, money in currency units.
fn table<'a>(
    f: &mut fmt::Formatter<'_>,
    titles: &[&str],
    rows: impl Iterator<Item = (Vec<&'a str>, &'a str, &'a Totals)> + Clone,
) -> fmt::Result {
    let mut widths: Vec<usize> = titles.iter().map(|t| t.len()).collect();
    for (key, _, _) in rows.clone() {
        for (w, k) in widths.iter_mut().zip(&key) {
            *w = (*w).max(shown(k).len());
        }
    }
    for (title, w) in titles.iter().zip(&widths) {
        write!(f, "{title:<w$}  ")?;
    }
    writeln!(
        f,
        "{:<8}  {:>11}  {:>8}  {:>7}  {:>16}  {:>16}  {:>16}  {:>12}  {:>12}",
        "currency",
        "impressions",
        "clicks",
        "CTR",
        "gross spend",
        "payout",
        "margin",
        "eCPM",
        "net eCPM"
    )?;
    for (key, currency, t) in rows {
        for (k, w) in key.iter().zip(&widths) {
            write!(f, "{:<w$}  ", shown(k))?;
        }
        writeln!(
            f,
            "{:<8}  {:>11}  {:>8}  {:>7}  {:>16}  {:>16}  {:>16}  {:>12}  {:>12}",
            currency,
            t.impressions,
            t.clicks,
            percent(t.ctr_bp),
            money(t.spend_micros),
            money(t.payout_micros),
            money(t.margin_micros),
            money_or_dash(t.ecpm_micros),
            money_or_dash(t.net_ecpm_micros),
        )?;
    }
    Ok(())
}

/// An empty key value (an event without a publisher, say) as `-`.
fn shown(k: &str) -> &str {
    if k.is_empty() {
        "-"
    } else {
        k
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.files > 1 {
            writeln!(f, "event files          {}", self.files)?;
        }
        writeln!(f, "impressions          {}", self.impressions)?;
        writeln!(f, "clicks               {}", self.clicks)?;
        writeln!(f, "CTR                  {}", percent(self.ctr_bp))?;
        writeln!(f, "duplicates dropped   {}", self.duplicates_dropped)?;
        writeln!(f, "invalid, not billed  {}", self.invalid_hits)?;
        writeln!(f, "wins                 {}", self.wins)?;
        writeln!(f, "losses               {}", self.losses)?;
        writeln!(f, "late DSP answers     {}", self.late_answers)?;
        for (currency, micros) in &self.spend_micros {
            writeln!(f, "spend                {} {currency}", money(*micros))?;
        }
        for (currency, micros) in &self.payout_micros {
            writeln!(f, "publisher payout     {} {currency}", money(*micros))?;
        }
        for (currency, micros) in &self.margin_micros {
            writeln!(f, "margin               {} {currency}", money(*micros))?;
        }
        if self.test_events > 0 {
            writeln!(f, "test auction events  {} (not billed)", self.test_events)?;
        }
        if self.repeated_lines_ignored > 0 {
            writeln!(
                f,
                "repeated lines       {} (ignored)",
                self.repeated_lines_ignored
            )?;
        }
        if self.bad_lines > 0 || self.torn_tail_bytes > 0 {
            writeln!(
                f,
                "skipped              {} bad lines, torn tail of {} bytes",
                self.bad_lines, self.torn_tail_bytes
            )?;
        }
        if !self.by.is_empty() {
            let titles: Vec<&str> = self.by.iter().map(|d| d.as_str()).collect();
            writeln!(f)?;
            return table(
                f,
                &titles,
                self.rows.iter().map(|r| {
                    let key = self
                        .by
                        .iter()
                        .map(|d| r.key.get(d.as_str()).map_or("", String::as_str))
                        .collect();
                    (key, r.currency.as_str(), &r.totals)
                }),
            );
        }
        for (title, rows) in [("campaign", &self.per_campaign), ("dsp", &self.per_dsp)] {
            writeln!(f)?;
            table(
                f,
                &[title],
                rows.iter()
                    .map(|r| (vec![r.name.as_str()], r.currency.as_str(), &r.totals)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const FILE: &str = r#"{"type":"win","ts":1,"auction_id":"a1","imp_id":"1","bid_id":"b1","dsp":"dsp-a","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":2000000,"currency":"USD","auction_ts":1}
{"type":"impression","ts":2,"auction_id":"a1","imp_id":"1","bid_id":"b1","dsp":"dsp-a","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":2000000,"currency":"USD","auction_ts":1,"cost_micros":2000,"impression_id":"i1"}
{"type":"duplicate_impression","ts":3,"auction_id":"a1","imp_id":"1","bid_id":"b1","dsp":"dsp-a","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":2000000,"currency":"USD","auction_ts":1,"impression_id":"i1"}
{"type":"impression","ts":4,"auction_id":"a2","imp_id":"1","bid_id":"b2","dsp":"dsp-a","seat":"s","campaign":"c2","creative_id":"cr2","price_micros":1500001,"currency":"USD","auction_ts":1,"cost_micros":1501,"impression_id":"i2"}
{"type":"impression","ts":5,"auction_id":"a3","imp_id":"1","bid_id":"b3","dsp":"dsp-b","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":3000000,"currency":"USD","auction_ts":1,"cost_micros":3000,"impression_id":"i3"}
{"type":"click","ts":6,"auction_id":"a1","imp_id":"1","bid_id":"b1","dsp":"dsp-a","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":2000000,"currency":"USD","auction_ts":1,"impression_id":"i1"}
{"type":"duplicate_click","ts":7,"auction_id":"a1","imp_id":"1","bid_id":"b1","dsp":"dsp-a","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":2000000,"currency":"USD","auction_ts":1,"impression_id":"i1"}
{"type":"impression","ts":8,"auction_id":"a3","imp_id":"1","bid_id":"b3","dsp":"dsp-b","seat":"s","campaign":"c1","creative_id":"cr1","price_micros":3000000,"currency":"USD","auction_ts":1,"cost_micros":3000,"impression_id":"i3","replayed":true}
{"type":"loss","ts":9,"auction_id":"a4","imp_id":"1","bid_id":"b4","dsp":"dsp-b","seat":"s","campaign":"c3","creative_id":"cr4","price_micros":0,"currency":"USD","auction_ts":1,"loss_reason":102}
{"type":"late","ts":10,"auction_id":"a4","imp_id":"","bid_id":"","dsp":"dsp-c","seat":"","campaign":"","creative_id":"","price_micros":0,"currency":"USD","auction_ts":1,"late_ms":12}
not an event
{"type":"impression","ts":11,"auction_id":"a5","imp_"#;

    fn temp_file(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "impressions-report-{}-{}.jsonl",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    #[test]
    fn figures_from_a_known_file() {
        let path = temp_file(FILE);
        let r = Report::from_file(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(r.files, 1);
        assert_eq!(r.impressions, 3);
        assert_eq!(r.clicks, 1);
        assert_eq!(r.duplicates_dropped, 2);
        assert_eq!(r.repeated_lines_ignored, 1);
        assert_eq!((r.wins, r.losses, r.late_answers), (1, 1, 1));
        assert_eq!(r.spend_micros["USD"], 2000 + 1501 + 3000);
        // Lines from before the split: everything was the publisher's.
        assert_eq!(r.payout_micros["USD"], 6501);
        assert_eq!(r.margin_micros["USD"], 0);
        assert_eq!(r.ctr_bp, Some(3333));
        assert_eq!((r.bad_lines, r.torn_tail_bytes), (1, 52));
        let c1 = r.per_campaign.iter().find(|row| row.name == "c1").unwrap();
        let t = &c1.totals;
        assert_eq!(
            (t.impressions, t.clicks, t.spend_micros, t.ctr_bp),
            (2, 1, 5000, Some(5000))
        );
        assert_eq!(t.ecpm_micros, Some(2_500_000));
        let c2 = r.per_campaign.iter().find(|row| row.name == "c2").unwrap();
        let t = &c2.totals;
        assert_eq!(
            (t.impressions, t.clicks, t.spend_micros, t.ctr_bp),
            (1, 0, 1501, Some(0))
        );
        assert_eq!(r.per_campaign.len(), 2, "only billed events make rows");
        let a = &r
            .per_dsp
            .iter()
            .find(|row| row.name == "dsp-a")
            .unwrap()
            .totals;
        assert_eq!((a.impressions, a.clicks, a.spend_micros), (2, 1, 3501));
        let b = &r
            .per_dsp
            .iter()
            .find(|row| row.name == "dsp-b")
            .unwrap()
            .totals;
        assert_eq!((b.impressions, b.clicks, b.spend_micros), (1, 0, 3000));

        let text = r.to_string();
        assert!(text.contains("spend                0.006501 USD"), "{text}");
        assert!(text.contains("CTR                  33.33%"), "{text}");
        assert!(text.contains("duplicates dropped   2"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["impressions"], 3);
        assert_eq!(json["per_dsp"][0]["name"], "dsp-a");
        assert_eq!(json["per_dsp"][0]["spend_micros"], 3501);
        assert_eq!(json["per_dsp"][0]["ctr_bp"], 5000);
        assert_eq!(json["spend_micros"]["USD"], 6501);
    }

    #[test]
    fn empty_report_has_no_ctr() {
        let r = Report::from_events(Vec::new());
        assert_eq!(r.ctr_bp, None);
        assert!(r.to_string().contains("CTR                  -"));
    }

    /// A billed impression line of the current format.
    fn imp(id: &str, publisher: &str, dsp: &str, auction_ts: u64, split: (u64, u64)) -> String {
        let (gross, net) = split;
        serde_json::json!({
            "type": "impression", "ts": auction_ts + 5, "auction_id": id, "imp_id": "1",
            "bid_id": "b", "dsp": dsp, "seat": "s", "campaign": format!("{dsp}-c"),
            "creative_id": "cr", "price_micros": gross * 1000, "currency": "USD",
            "auction_ts": auction_ts, "publisher": publisher, "domain": "news.example",
            "country": "DEU", "media_type": "banner", "net_price_micros": net * 1000,
            "cost_micros": gross, "gross_micros": gross, "net_micros": net,
            "margin_micros": gross - net, "impression_id": format!("imp-{id}"),
        })
        .to_string()
    }

    fn click(id: &str, publisher: &str, dsp: &str, auction_ts: u64) -> String {
        serde_json::json!({
            "type": "click", "ts": auction_ts + 9, "auction_id": id, "imp_id": "1",
            "bid_id": "b", "dsp": dsp, "seat": "s", "campaign": format!("{dsp}-c"),
            "creative_id": "cr", "price_micros": 0, "currency": "USD",
            "auction_ts": auction_ts, "publisher": publisher, "impression_id": format!("clk-{id}"),
        })
        .to_string()
    }

    /// 2026-12-07 00:00:00 UTC.
    const DAY1: u64 = 1_796_601_600_000;
    const DAY2: u64 = DAY1 + 86_400_000;

    #[test]
    fn two_nodes_files_add_up_once_per_publisher_dsp_and_day() {
        // Node A billed x1, x2, x3; node B billed x3 again (no shared dedup store) and x4.
        let a = temp_file(
            &[
                imp("x1", "pub-1", "dsp-a", DAY1 + 1_000, (2000, 1700)),
                imp("x2", "pub-1", "dsp-b", DAY1 + 86_399_999, (1501, 1275)),
                imp("x3", "pub-2", "dsp-a", DAY2 + 10, (3000, 2550)),
                click("x1", "pub-1", "dsp-a", DAY1 + 1_000),
                String::new(),
            ]
            .join("\n"),
        );
        let b = temp_file(
            &[
                imp("x3", "pub-2", "dsp-a", DAY2 + 10, (3000, 2550)),
                imp("x4", "pub-2", "dsp-b", DAY2 + 20, (1000, 850)),
                click("x1", "pub-1", "dsp-a", DAY1 + 1_000),
                String::new(),
            ]
            .join("\n"),
        );
        let by = [Dimension::Publisher, Dimension::Day];
        let r = Report::from_files(&[&a, &b], &by).unwrap();
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        assert_eq!(r.files, 2);
        assert_eq!((r.impressions, r.clicks), (4, 1));
        assert_eq!(
            r.repeated_lines_ignored, 2,
            "x3's impression and x1's click"
        );
        assert_eq!(r.spend_micros["USD"], 2000 + 1501 + 3000 + 1000);
        assert_eq!(r.payout_micros["USD"], 1700 + 1275 + 2550 + 850);
        assert_eq!(r.margin_micros["USD"], 300 + 226 + 450 + 150);

        let rows: Vec<(&str, &str, u64, u64, u64, u64, u64)> = r
            .rows
            .iter()
            .map(|row| {
                let t = &row.totals;
                (
                    row.key["publisher"].as_str(),
                    row.key["day"].as_str(),
                    t.impressions,
                    t.clicks,
                    t.spend_micros,
                    t.payout_micros,
                    t.margin_micros,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("pub-1", "2026-12-07", 2, 1, 3501, 2975, 526),
                ("pub-2", "2026-12-08", 2, 0, 4000, 3400, 600),
            ]
        );
        let p1 = &r.rows[0].totals;
        assert_eq!(p1.ctr_bp, Some(5000));
        assert_eq!(p1.ecpm_micros, Some(1_750_500));
        assert_eq!(p1.net_ecpm_micros, Some(1_487_500));

        let by_dsp = Report::from_events_by(
            [
                imp("x1", "pub-1", "dsp-a", DAY1, (2000, 1700)),
                imp("x3", "pub-2", "dsp-a", DAY2, (3000, 2550)),
                imp("x2", "pub-1", "dsp-b", DAY1, (1501, 1275)),
            ]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap()),
            &[Dimension::Dsp],
        );
        let dsp_a = &by_dsp.rows[0];
        assert_eq!(dsp_a.key["dsp"], "dsp-a");
        assert_eq!(
            (
                dsp_a.totals.impressions,
                dsp_a.totals.spend_micros,
                dsp_a.totals.payout_micros,
                dsp_a.totals.margin_micros
            ),
            (2, 5000, 4250, 750)
        );

        let text = r.to_string();
        assert!(text.contains("event files          2"), "{text}");
        assert!(text.contains("publisher payout     0.006375 USD"), "{text}");
        assert!(text.contains("margin               0.001126 USD"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("pub-1"))
            .expect("a pub-1 row");
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "pub-1",
                "2026-12-07",
                "USD",
                "2",
                "1",
                "50.00%",
                "0.003501",
                "0.002975",
                "0.000526",
                "1.750500",
                "1.487500"
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["by"], serde_json::json!(["publisher", "day"]));
        assert_eq!(json["rows"][1]["publisher"], "pub-2");
        assert_eq!(json["rows"][1]["day"], "2026-12-08");
        assert_eq!(json["rows"][1]["payout_micros"], 3400);
        assert_eq!(json["rows"][1]["margin_micros"], 600);
    }

    #[test]
    fn dimensions_parse_by_name() {
        assert_eq!(
            "publisher".parse::<Dimension>().unwrap(),
            Dimension::Publisher
        );
        assert_eq!(
            "media_type".parse::<Dimension>().unwrap(),
            Dimension::MediaType
        );
        assert!("publishers".parse::<Dimension>().is_err());
        let e: Event = serde_json::from_str(&imp("x", "p", "d", DAY1, (1, 1))).unwrap();
        assert_eq!(Dimension::Property.value(&e), "news.example");
        assert_eq!(Dimension::Country.value(&e), "DEU");
        assert_eq!(Dimension::MediaType.value(&e), "banner");
        assert_eq!(utc_day(DAY1 - 1), "2026-12-06");
    }
}

//! The billing report read from an events file: impressions, clicks, duplicates dropped, spend
//! per campaign and per DSP, CTR. Backs `exchange report --events FILE`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::events::{Event, EventType};
use crate::events_files::read_log;
use crate::Error;

/// Totals for one campaign or DSP, in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub name: String,
    pub currency: String,
    pub impressions: u64,
    pub clicks: u64,
    pub spend_micros: u64,
    /// Clicks per impression, basis points (1/100 of a percent); `None` without impressions.
    pub ctr_bp: Option<u64>,
}

/// What an events file says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
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
    /// Billed lines whose impression or click id was already billed earlier in the file (a
    /// spool replay redone after a crash); not counted twice.
    pub repeated_lines_ignored: u64,
    /// Spend per currency, micros.
    pub spend_micros: BTreeMap<String, u64>,
    /// Clicks per impression over the whole file, basis points.
    pub ctr_bp: Option<u64>,
    pub per_campaign: Vec<Row>,
    pub per_dsp: Vec<Row>,
    /// Lines that were not events (skipped).
    pub bad_lines: u64,
    /// Bytes of a torn last line (skipped).
    pub torn_tail_bytes: u64,
}

impl Report {
    /// Reads the log `path` (its rotated files, plain or gzip, then `path` itself; see
    /// [`crate::events_files::log_files`]) and computes the report.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let mut builder = Builder::default();
        let stats = read_log(path, |e| builder.add(e))?;
        let mut report = builder.finish();
        report.bad_lines = stats.bad_lines;
        report.torn_tail_bytes = stats.torn_tail_bytes;
        Ok(report)
    }

    /// The report of events already in memory.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Self {
        let mut builder = Builder::default();
        events.into_iter().for_each(|e| builder.add(e));
        builder.finish()
    }
}

#[derive(Default)]
struct Builder {
    report: Report,
    billed: HashSet<(EventType, String)>,
    campaigns: BTreeMap<(String, String), Row>,
    dsps: BTreeMap<(String, String), Row>,
}

impl Builder {
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
                let cost = if e.kind == EventType::Impression {
                    e.cost_micros.unwrap_or(0)
                } else {
                    0
                };
                let is_imp = u64::from(e.kind == EventType::Impression);
                let is_click = u64::from(e.kind == EventType::Click);
                r.impressions += is_imp;
                r.clicks += is_click;
                *r.spend_micros.entry(e.currency.clone()).or_default() += cost;
                for (map, name) in [(&mut self.campaigns, &e.campaign), (&mut self.dsps, &e.dsp)] {
                    let row = map
                        .entry((name.clone(), e.currency.clone()))
                        .or_insert_with(|| Row {
                            name: name.clone(),
                            currency: e.currency.clone(),
                            ..Row::default()
                        });
                    row.impressions += is_imp;
                    row.clicks += is_click;
                    row.spend_micros += cost;
                }
            }
        }
    }

    fn finish(self) -> Report {
        let mut r = self.report;
        r.ctr_bp = ctr_bp(r.clicks, r.impressions);
        let rows = |m: BTreeMap<(String, String), Row>| {
            m.into_values()
                .map(|mut row| {
                    row.ctr_bp = ctr_bp(row.clicks, row.impressions);
                    row
                })
                .collect()
        };
        r.per_campaign = rows(self.campaigns);
        r.per_dsp = rows(self.dsps);
        r
    }
}

fn ctr_bp(clicks: u64, impressions: u64) -> Option<u64> {
    (impressions > 0).then(|| {
        u64::try_from(u128::from(clicks) * 10_000 / u128::from(impressions)).unwrap_or(u64::MAX)
    })
}

/// `1234567` micros as `1.234567`.
fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn percent(bp: Option<u64>) -> String {
    bp.map_or_else(
        || "-".to_owned(),
        |bp| format!("{}.{:02}%", bp / 100, bp % 100),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        for (title, rows) in [("campaign", &self.per_campaign), ("dsp", &self.per_dsp)] {
            let width = rows
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(0)
                .max(title.len());
            writeln!(f)?;
            writeln!(
                f,
                "{title:<width$}  {:>12}  {:>8}  {:>7}  {:>18}",
                "impressions", "clicks", "CTR", "spend"
            )?;
            for r in rows {
                writeln!(
                    f,
                    "{:<width$}  {:>12}  {:>8}  {:>7}  {:>14} {}",
                    r.name,
                    r.impressions,
                    r.clicks,
                    percent(r.ctr_bp),
                    money(r.spend_micros),
                    r.currency
                )?;
            }
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

    #[test]
    fn figures_from_a_known_file() {
        let path = std::env::temp_dir().join(format!(
            "impressions-report-{}-{}.jsonl",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(FILE.as_bytes())
            .unwrap();
        let r = Report::from_file(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(r.impressions, 3);
        assert_eq!(r.clicks, 1);
        assert_eq!(r.duplicates_dropped, 2);
        assert_eq!(r.repeated_lines_ignored, 1);
        assert_eq!((r.wins, r.losses, r.late_answers), (1, 1, 1));
        assert_eq!(r.spend_micros["USD"], 2000 + 1501 + 3000);
        assert_eq!(r.ctr_bp, Some(3333));
        assert_eq!((r.bad_lines, r.torn_tail_bytes), (1, 52));
        let c1 = r.per_campaign.iter().find(|row| row.name == "c1").unwrap();
        assert_eq!(
            (c1.impressions, c1.clicks, c1.spend_micros, c1.ctr_bp),
            (2, 1, 5000, Some(5000))
        );
        let c2 = r.per_campaign.iter().find(|row| row.name == "c2").unwrap();
        assert_eq!(
            (c2.impressions, c2.clicks, c2.spend_micros, c2.ctr_bp),
            (1, 0, 1501, Some(0))
        );
        assert_eq!(r.per_campaign.len(), 2, "only billed events make rows");
        let a = r.per_dsp.iter().find(|row| row.name == "dsp-a").unwrap();
        assert_eq!((a.impressions, a.clicks, a.spend_micros), (2, 1, 3501));
        let b = r.per_dsp.iter().find(|row| row.name == "dsp-b").unwrap();
        assert_eq!((b.impressions, b.clicks, b.spend_micros), (1, 0, 3000));

        let text = r.to_string();
        assert!(text.contains("spend                0.006501 USD"), "{text}");
        assert!(text.contains("CTR                  33.33%"), "{text}");
        assert!(text.contains("duplicates dropped   2"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["impressions"], 3);
        assert_eq!(json["per_dsp"][0]["name"], "dsp-a");
    }

    #[test]
    fn empty_report_has_no_ctr() {
        let r = Report::from_events(Vec::new());
        assert_eq!(r.ctr_bp, None);
        assert!(r.to_string().contains("CTR                  -"));
    }
}

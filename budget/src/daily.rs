//! Daily budgets and pacing: a campaign's settings, its day in its own time zone, and the
//! daily and pacing caps the sync rule applies (see `store::apply_sync` and `sync.lua`).
//!
//! The node reads its clock and computes the campaign's day (id `yyyymmdd`, start and end in
//! ms, from the IANA zone, daylight saving included) and sends it with each report; the store
//! never moves a campaign's day backwards, so nodes whose clocks differ slightly cannot undo a
//! day change. Per campaign the store keeps `day_spent + held ≤ daily_budget` for its current
//! day beside `spent + held ≤ budget`.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How a campaign with a daily budget spends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// As fast as the bids win (the daily cap only).
    #[default]
    Asap,
    /// Cumulative grants follow the straight line from 0 at the day's start to the daily
    /// budget at its end.
    Even,
}

impl Pacing {
    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Pacing::Asap => "asap",
            Pacing::Even => "even",
        }
    }

    /// The store's name back; anything else is `asap`.
    pub(crate) fn parse(s: &str) -> Self {
        if s == "even" {
            Pacing::Even
        } else {
            Pacing::Asap
        }
    }
}

/// The default time zone of a campaign's day.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A campaign's daily settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySettings {
    /// At most this much spent per day; `None`: no daily cap (pacing then does nothing).
    pub daily_budget_micros: Option<u64>,
    /// How the day's budget is spent.
    pub pacing: Pacing,
    /// IANA name of the zone whose midnight starts the campaign's day.
    pub timezone: String,
}

impl Default for DailySettings {
    fn default() -> Self {
        DailySettings {
            daily_budget_micros: None,
            pacing: Pacing::Asap,
            timezone: DEFAULT_TIMEZONE.to_owned(),
        }
    }
}

/// An admin change of the daily settings; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyChange {
    /// `Some(None)` removes the daily cap.
    pub daily_budget_micros: Option<Option<u64>>,
    /// New pacing.
    pub pacing: Option<Pacing>,
    /// New time zone (IANA name).
    pub timezone: Option<String>,
}

/// A campaign's day as a node's clock sees it, sent with each report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayWindow {
    /// The zone it was computed in (the store ignores a window for another zone).
    pub tz: Arc<str>,
    /// The local date as `yyyymmdd`: later days have larger ids.
    pub id: u64,
    /// The day's first ms (local midnight), since the Unix epoch.
    pub start_ms: u64,
    /// The next day's first ms (23 h or 25 h after the start on daylight-saving days).
    pub end_ms: u64,
    /// The node's clock when it computed this.
    pub now_ms: u64,
}

/// Checks an IANA zone name against the bundled database.
pub fn check_timezone(name: &str) -> Result<(), Error> {
    jiff::tz::TimeZone::get(name)
        .map(|_| ())
        .map_err(|e| Error::Config(format!("timezone {name:?}: {e}")))
}

impl DayWindow {
    /// The day around `now_ms` in zone `tz`.
    pub fn at(tz: &Arc<str>, now_ms: u64) -> Result<DayWindow, Error> {
        let bad = |e: jiff::Error| Error::Config(format!("timezone {tz:?} at {now_ms} ms: {e}"));
        let zone = jiff::tz::TimeZone::get(tz).map_err(bad)?;
        let ms = i64::try_from(now_ms).map_err(|_| Error::TooLarge(now_ms))?;
        let now = jiff::Timestamp::from_millisecond(ms)
            .map_err(bad)?
            .to_zoned(zone);
        let start = now.start_of_day().map_err(bad)?;
        let end = now.tomorrow().map_err(bad)?.start_of_day().map_err(bad)?;
        let date = now.date();
        // Years 1970..9999 keep every field positive.
        let part = |v: i16| u64::try_from(v).unwrap_or(0);
        let id =
            part(date.year()) * 10_000 + part(date.month().into()) * 100 + part(date.day().into());
        let ms_of = |z: &jiff::Zoned| u64::try_from(z.timestamp().as_millisecond()).unwrap_or(0);
        Ok(DayWindow {
            tz: Arc::clone(tz),
            id,
            start_ms: ms_of(&start),
            end_ms: ms_of(&end),
            now_ms,
        })
    }

    /// The even-pacing line at `now_ms`: `daily × elapsed / length`, rounded down (exact, in
    /// 128-bit integers; `sync.lua` computes it in doubles, exact below 2^53, so up to a
    /// daily budget of about 100 units the two agree to the micro).
    pub(crate) fn line(&self, daily: u64) -> u64 {
        let length = self.end_ms.saturating_sub(self.start_ms);
        if length == 0 {
            return daily;
        }
        let elapsed = self.now_ms.clamp(self.start_ms, self.end_ms) - self.start_ms;
        u64::try_from(u128::from(daily) * u128::from(elapsed) / u128::from(length)).unwrap_or(daily)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_zone_and_daylight_saving() {
        let utc: Arc<str> = Arc::from("UTC");
        // 2025-12-07T03:00:00Z
        let d = DayWindow::at(&utc, 1_765_076_400_000).unwrap();
        assert_eq!(d.id, 20_251_207);
        assert_eq!(d.end_ms - d.start_ms, 86_400_000);
        assert_eq!(d.start_ms, 1_765_065_600_000);
        let ny: Arc<str> = Arc::from("America/New_York");
        // 03:00 UTC is still the 6th in New York.
        let d = DayWindow::at(&ny, 1_765_076_400_000).unwrap();
        assert_eq!(d.id, 20_251_206);
        assert_eq!(d.end_ms, 1_765_083_600_000);
        // 2026-03-08 is 23 hours long in New York.
        let d = DayWindow::at(&ny, 1_773_000_000_000).unwrap();
        assert_eq!(d.id, 20_260_308);
        assert_eq!(d.end_ms - d.start_ms, 23 * 3_600_000);
        assert!(check_timezone("Europe/Paris").is_ok());
        assert!(check_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn the_line_runs_from_zero_to_the_daily_budget() {
        let d = DayWindow {
            tz: Arc::from("UTC"),
            id: 1,
            start_ms: 1_000,
            end_ms: 1_000 + 86_400_000,
            now_ms: 1_000 + 21_600_000,
        };
        assert_eq!(d.line(1_000_000), 250_000);
        assert_eq!(
            DayWindow {
                now_ms: 0,
                ..d.clone()
            }
            .line(1_000_000),
            0
        );
        assert_eq!(
            DayWindow {
                now_ms: u64::MAX,
                ..d
            }
            .line(1_000_000),
            1_000_000
        );
    }
}

//! A rotated event log's files on disk: how a closed file is named, how a log's closed files
//! (plain or gzip) and its live file are found in write order, and [`read_log`], which reads
//! them all as one log.
//!
//! The live file `events.jsonl` becomes, when closed, `events.2026-12-07T03-00-00Z.0001.jsonl`
//! (the UTC time it was closed, then a sequence number), and `….jsonl.gz` once compressed.
//! Names sort in write order: the writer never gives a file a name that sorts before an
//! existing one, even when the clock steps back.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::events::{read_events, Event, ReadStats};
use crate::Error;

/// Length of a closed file's time stamp, `2026-12-07T03-00-00Z`.
const STAMP_LEN: usize = 20;

/// One closed file of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Closed {
    pub path: PathBuf,
    /// `2026-12-07T03-00-00Z`: when it was closed, UTC. Fixed width, so it sorts as text.
    pub stamp: String,
    pub seq: u32,
    pub gz: bool,
}

impl Closed {
    /// Where it sits among the log's files.
    pub fn order(&self) -> (&str, u32) {
        (&self.stamp, self.seq)
    }

    /// When it was closed, seconds since the Unix epoch.
    pub fn closed_at_secs(&self) -> Option<i64> {
        parse_stamp(&self.stamp)
    }
}

/// The live file's name split into what comes before and after the stamp: `events` and
/// `.jsonl` for `events.jsonl`.
fn name_parts(live: &Path) -> Option<(String, String)> {
    let stem = live.file_stem()?.to_str()?.to_owned();
    let ext = match live.extension() {
        Some(ext) => format!(".{}", ext.to_str()?),
        None => String::new(),
    };
    Some((stem, ext))
}

/// `2026-12-07T03-00-00Z` for `secs` since the Unix epoch (UTC).
pub(crate) fn stamp(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The seconds since the Unix epoch a [`stamp`] stands for; `None` if it is not one.
fn parse_stamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != STAMP_LEN
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b'-'
        || b[16] != b'-'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(clock).assume_utc().unix_timestamp())
}

/// The path a file of the log `live` closed at `stamp` with `seq` gets (uncompressed).
pub(crate) fn closed_path(live: &Path, stamp: &str, seq: u32) -> PathBuf {
    let (stem, ext) = name_parts(live).unwrap_or_else(|| ("events".into(), String::new()));
    live.with_file_name(format!("{stem}.{stamp}.{seq:04}{ext}"))
}

/// Parses `name` as a closed file of the log `live`.
fn parse_closed(live: &Path, name: &str) -> Option<(String, u32, bool)> {
    let (stem, ext) = name_parts(live)?;
    let rest = name.strip_prefix(&stem)?.strip_prefix('.')?;
    let (rest, gz) = match rest.strip_suffix(".gz") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let rest = rest.strip_suffix(ext.as_str())?;
    let (stamp, seq) = rest.split_once('.')?;
    parse_stamp(stamp)?;
    if seq.len() < 4 || !seq.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((stamp.to_owned(), seq.parse().ok()?, gz))
}

/// Whether `path` names a closed file (of any log) rather than a live one.
fn is_closed_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).any(|w| {
        parse_stamp(w[0]).is_some() && w[1].len() >= 4 && w[1].bytes().all(|c| c.is_ascii_digit())
    })
}

/// Every closed file of the log `live`, plain and compressed (both, when a crash came between
/// writing the `.gz` and removing the plain file), in write order, plain before `.gz`.
pub(crate) fn closed_files(live: &Path) -> io::Result<Vec<Closed>> {
    let dir = match live.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((stamp, seq, gz)) = parse_closed(live, name) {
            out.push(Closed {
                path: live.with_file_name(name),
                stamp,
                seq,
                gz,
            });
        }
    }
    out.sort_by(|a, b| (a.order(), a.gz).cmp(&(b.order(), b.gz)));
    Ok(out)
}

/// The files holding the log whose live file is `live`, in write order: each closed file once
/// (the plain one when both it and its `.gz` exist: both are complete), then the live file if
/// it exists. A `path` that is itself a closed or `.gz` file stands for itself alone.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let single = is_closed_name(path) || path.extension().is_some_and(|e| e == "gz");
    if single {
        return Ok(vec![path.to_owned()]);
    }
    let closed = closed_files(path).map_err(|e| Error::io("listing an event log's files", e))?;
    let mut files: Vec<PathBuf> = Vec::with_capacity(closed.len() + 1);
    let mut last: Option<(String, u32)> = None;
    for c in closed {
        let key = (c.stamp.clone(), c.seq);
        if last.as_ref() == Some(&key) {
            continue;
        }
        last = Some(key);
        files.push(c.path);
    }
    if path.exists() || files.is_empty() {
        // A missing live file with nothing closed is reported by the read as before.
        files.push(path.to_owned());
    }
    Ok(files)
}

/// Reads the whole log whose live file is `path` (its closed files, plain or gzip, then the
/// live one; see [`log_files`]) in write order, calling `f` for each event. Bad lines and torn
/// tails are skipped and counted over all files.
pub fn read_log(path: &Path, mut f: impl FnMut(Event)) -> Result<ReadStats, Error> {
    let mut total = ReadStats::default();
    for file in log_files(path)? {
        let stats = match read_events(&file, &mut f) {
            // A running exchange may have compressed a closed file (or deleted it past the
            // retention) since the listing: read its `.gz`, or what is left.
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && file.as_path() != path =>
            {
                let gz = {
                    let mut s = file.clone().into_os_string();
                    s.push(".gz");
                    PathBuf::from(s)
                };
                match read_events(&gz, &mut f) {
                    Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(file = %file.display(), "a closed event log file was deleted while being read (retention)");
                        ReadStats::default()
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        total.bad_lines += stats.bad_lines;
        total.torn_tail_bytes += stats.torn_tail_bytes;
    }
    Ok(total)
}

/// Opens `path` for reading its lines: a `.gz` file through a gzip decoder (every member, as
/// `gzip -c a b > c` writes several), anything else as it is.
pub(crate) fn open_lines(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
            file,
        ))))
    } else {
        Ok(Box::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let live = Path::new("/var/log/x/events.jsonl");
        // 2026-12-07T03:00:00Z
        let secs = 1_796_612_400;
        assert_eq!(stamp(secs), "2026-12-07T03-00-00Z");
        assert_eq!(parse_stamp("2026-12-07T03-00-00Z"), Some(secs));
        let p = closed_path(live, &stamp(secs), 1);
        assert_eq!(
            p,
            Path::new("/var/log/x/events.2026-12-07T03-00-00Z.0001.jsonl")
        );
        assert_eq!(
            parse_closed(live, "events.2026-12-07T03-00-00Z.0001.jsonl.gz"),
            Some(("2026-12-07T03-00-00Z".into(), 1, true))
        );
        assert_eq!(
            parse_closed(live, "events.2026-12-07T03-00-00Z.12345.jsonl"),
            Some(("2026-12-07T03-00-00Z".into(), 12345, false))
        );
        for not_ours in [
            "events.jsonl",
            "events.2026-12-07T03-00-00Z.0001.jsonl.gz.tmp",
            "other.2026-12-07T03-00-00Z.0001.jsonl",
            "events.2026-12-07T03-00-00Z.01.jsonl",
            "events.2026-13-07T03-00-00Z.0001.jsonl",
            "events.2026-12-07T03-00-00Z.0001.txt",
        ] {
            assert_eq!(parse_closed(live, not_ours), None, "{not_ours}");
        }
        let bare = Path::new("log");
        assert_eq!(
            closed_path(bare, "2026-12-07T03-00-00Z", 2),
            Path::new("log.2026-12-07T03-00-00Z.0002")
        );
        assert_eq!(
            parse_closed(bare, "log.2026-12-07T03-00-00Z.0002.gz"),
            Some(("2026-12-07T03-00-00Z".into(), 2, true))
        );
        assert!(is_closed_name(Path::new(
            "a/events.2026-12-07T03-00-00Z.0001.jsonl"
        )));
        assert!(!is_closed_name(Path::new("a/events.jsonl")));
    }
}

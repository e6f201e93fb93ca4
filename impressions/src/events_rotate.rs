//! When the event log's live file is closed (by size, by age, or reopened on request for an
//! external tool), and the blocking steps that close it without splitting or losing a line.
//!
//! The writer rotates between batches only, so a closed file ends with a whole batch. The old
//! file is fsynced before it is renamed, and the name is its own until the rename, so at every
//! instant each written line is in exactly one of the two names: a crash (or a `SIGKILL`)
//! anywhere in the sequence leaves every line in the closed file or the live one.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events_files::{closed_files, closed_path, stamp};
use crate::journal::{sync_dir, AppendFile};

/// When the live file is closed. Zero turns a limit off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RotatePolicy {
    /// Close the file once it holds this many bytes (it can exceed it by one batch).
    pub bytes: u64,
    /// Close a file holding anything once it has been open this long.
    pub interval: Duration,
}

impl RotatePolicy {
    pub fn is_off(&self) -> bool {
        self.bytes == 0 && self.interval.is_zero()
    }
}

/// The writer's rotation state for one live file.
#[derive(Debug)]
pub(crate) struct Rotation {
    policy: RotatePolicy,
    /// When the live file was opened, ms since the Unix epoch.
    opened_ms: u64,
    /// The greatest closed name so far: a new one never sorts before it.
    last: Option<(String, u32)>,
    /// After a failed rotation, no new try before this (ms since the Unix epoch).
    retry_at_ms: u64,
}

impl Rotation {
    /// Reads the names already closed beside `live`, so new ones sort after them.
    pub fn new(live: &Path, policy: RotatePolicy, now_ms: u64) -> io::Result<Self> {
        let last = closed_files(live)?.last().map(|c| (c.stamp.clone(), c.seq));
        Ok(Self {
            policy,
            opened_ms: now_ms,
            last,
            retry_at_ms: 0,
        })
    }

    /// Whether a live file of `len` bytes is to be closed at `now_ms`.
    pub fn due(&self, now_ms: u64, len: u64) -> bool {
        if len == 0 || now_ms < self.retry_at_ms {
            return false;
        }
        let by_size = self.policy.bytes > 0 && len >= self.policy.bytes;
        by_size || self.age_due(now_ms)
    }

    fn age_due(&self, now_ms: u64) -> bool {
        let interval = duration_ms(self.policy.interval);
        interval > 0 && now_ms.saturating_sub(self.opened_ms) >= interval
    }

    /// How long from `now_ms` until a file holding anything is due by age; `None` without an
    /// age limit.
    pub fn wait(&self, now_ms: u64) -> Option<Duration> {
        let interval = duration_ms(self.policy.interval);
        (interval > 0).then(|| {
            let due = self
                .opened_ms
                .saturating_add(interval)
                .max(self.retry_at_ms);
            Duration::from_millis(due.saturating_sub(now_ms))
        })
    }

    /// The name the live file gets when closed at `now_ms`: its UTC second, then a sequence
    /// number that keeps names unique and in write order (a clock stepping back reuses the
    /// last stamp with the next number).
    pub fn next_name(&mut self, live: &Path, now_ms: u64) -> PathBuf {
        let secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let now = stamp(secs);
        let (stamp, seq) = match &self.last {
            Some((last, seq)) if *last >= now => (last.clone(), seq.saturating_add(1)),
            _ => (now, 1),
        };
        let path = closed_path(live, &stamp, seq);
        self.last = Some((stamp, seq));
        path
    }

    /// A new live file was opened at `now_ms`.
    pub fn opened(&mut self, now_ms: u64) {
        self.opened_ms = now_ms;
        self.retry_at_ms = 0;
    }

    /// A rotation failed at `now_ms`: the file stays live and is tried again a second later,
    /// not after every batch.
    pub fn failed(&mut self, now_ms: u64) {
        self.retry_at_ms = now_ms.saturating_add(1000);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a rotation did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rotated {
    /// The old file is now `closed`.
    Closed,
    /// The old file had already been moved away (by an external tool, or a rotation that
    /// failed half-way): only a new live file was opened.
    AlreadyMoved,
}

/// Closes `file` as `closed` and opens a new live file under its name. Blocking. On an error
/// the old file is still the live one (renamed back if it had been renamed) and is returned.
pub(crate) fn rotate(
    mut file: AppendFile,
    closed: &Path,
) -> Result<(AppendFile, Rotated), (AppendFile, io::Error)> {
    // Durable before it gets a name that the compressor and readers take as final.
    if let Err(e) = file.sync() {
        return Err((file, e));
    }
    let live = file.path().to_owned();
    let outcome = match std::fs::rename(&live, closed) {
        Ok(()) => Rotated::Closed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Rotated::AlreadyMoved,
        Err(e) => return Err((file, e)),
    };
    match AppendFile::open(&live) {
        Ok((new, _)) => {
            drop(file);
            if let Err(e) = sync_dir(&live) {
                // Only a power loss could then undo the rename, and every line would still
                // be under one of the two names.
                tracing::warn!(error = %e, path = %live.display(), "could not fsync the event log's directory after a rotation");
            }
            Ok((new, outcome))
        }
        Err(e) => {
            if outcome == Rotated::Closed {
                if let Err(back) = std::fs::rename(closed, &live) {
                    // The old handle keeps taking lines under the closed name; the next
                    // rotation finds the live name free and only opens a new file.
                    tracing::error!(error = %back, path = %closed.display(), "could not rename a half-rotated event log back");
                }
            }
            Err((file, e))
        }
    }
}

/// Opens the live file's path anew after an external tool moved the old file away
/// (`logrotate`'s move, then `SIGUSR1`): the old file is fsynced and closed. Without a move it
/// reopens the same file. Blocking. On an error the old file is returned, still in use.
pub(crate) fn reopen(mut file: AppendFile) -> Result<AppendFile, (AppendFile, io::Error)> {
    if let Err(e) = file.sync() {
        return Err((file, e));
    }
    let live = file.path().to_owned();
    match AppendFile::open(&live) {
        Ok((new, _)) => {
            drop(file);
            if let Err(e) = sync_dir(&live) {
                tracing::warn!(error = %e, path = %live.display(), "could not fsync the event log's directory after a reopen");
            }
            Ok(new)
        }
        Err(e) => Err((file, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_sort_back_and_limits_apply() {
        let live = Path::new("/nonexistent-dir-for-test/events.jsonl");
        let policy = RotatePolicy {
            bytes: 100,
            interval: Duration::from_secs(60),
        };
        let t0 = 1_796_612_400_000;
        let mut r = Rotation::new(live, policy, t0).unwrap();
        assert!(!r.due(t0, 0));
        assert!(!r.due(t0, 99));
        assert!(r.due(t0, 100));
        assert!(!r.due(t0 + 59_999, 1));
        assert!(r.due(t0 + 60_000, 1));
        assert!(!r.due(t0 + 60_000, 0), "an empty file is kept");
        assert_eq!(r.wait(t0 + 10_000), Some(Duration::from_secs(50)));
        let name = |p: PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            name(r.next_name(live, t0)),
            "events.2026-12-07T03-00-00Z.0001.jsonl"
        );
        assert_eq!(
            name(r.next_name(live, t0 + 999)),
            "events.2026-12-07T03-00-00Z.0002.jsonl"
        );
        // The clock stepped back an hour: the stamp stays, the number goes on.
        assert_eq!(
            name(r.next_name(live, t0 - 3_600_000)),
            "events.2026-12-07T03-00-00Z.0003.jsonl"
        );
        assert_eq!(
            name(r.next_name(live, t0 + 1_000)),
            "events.2026-12-07T03-00-01Z.0001.jsonl"
        );
        r.opened(t0 + 1_000);
        r.failed(t0 + 1_000);
        assert!(!r.due(t0 + 1_500, 1_000));
        assert!(r.due(t0 + 2_000, 1_000));
    }
}

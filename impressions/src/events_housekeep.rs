//! Closed event-log files after a rotation: deleted past the retention, then gzipped, on the
//! blocking pool and never on the writer's path.
//!
//! A sweep is idempotent and runs at start and after every rotation, so whatever a crash left
//! is finished by the next one: a file is compressed to `….gz.tmp`, fsynced, renamed to
//! `….gz`, and only then is the plain file removed. A crash leaves the plain file (and maybe a
//! `.tmp`, removed next sweep), or both the plain file and a complete `.gz` (readers take one;
//! the next sweep removes the plain one), never a partial `.gz` under its final name.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::events_files::{closed_files, Closed};
use crate::journal::sync_dir;
use crate::metrics::TrackerMetrics;
use crate::Clock;

/// How many closed files are kept, and for how long. Zero turns a limit off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    pub files: usize,
    /// By the time a file was closed (in its name).
    pub age: Duration,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Closed files gzipped.
    pub compressed: u64,
    /// Closed files deleted past the retention.
    pub removed: u64,
    /// Files that could not be compressed or deleted (kept as they were, tried again later).
    pub failures: u64,
}

/// Runs sweeps for one log, one at a time.
pub(crate) struct Housekeeper {
    live: PathBuf,
    compress: bool,
    retention: Retention,
    clock: Clock,
    metrics: TrackerMetrics,
    /// Set at shutdown: a compression in progress stops at its next chunk and leaves the
    /// plain file for the next start.
    cancel: Arc<AtomicBool>,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Housekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Housekeeper")
            .field("live", &self.live)
            .field("compress", &self.compress)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Housekeeper {
    pub fn new(
        live: PathBuf,
        compress: bool,
        retention: Retention,
        clock: Clock,
        metrics: TrackerMetrics,
    ) -> Self {
        Self {
            live,
            compress,
            retention,
            clock,
            metrics,
            cancel: Arc::new(AtomicBool::new(false)),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Stops sweeps in progress and refuses new ones.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Applies the retention and compresses what is left, now.
    pub async fn sweep(&self) -> SweepStats {
        let _one_at_a_time = self.running.lock().await;
        let live = self.live.clone();
        let (compress, retention) = (self.compress, self.retention);
        let now_secs = i64::try_from((self.clock)() / 1000).unwrap_or(i64::MAX);
        let cancel = self.cancel.clone();
        let stats = tokio::task::spawn_blocking(move || {
            sweep(&live, compress, retention, now_secs, &cancel)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "an event log sweep did not finish");
            SweepStats {
                failures: 1,
                ..SweepStats::default()
            }
        });
        self.metrics.files_compressed.increment(stats.compressed);
        self.metrics.files_removed.increment(stats.removed);
        self.metrics.housekeeping_failures.increment(stats.failures);
        stats
    }
}

/// Sweeps once at start, then once per signal on `rx`, until its sender (the writer) is gone.
pub(crate) async fn run(keeper: Arc<Housekeeper>, mut rx: tokio::sync::mpsc::Receiver<()>) {
    keeper.sweep().await;
    while rx.recv().await.is_some() {
        keeper.sweep().await;
    }
}

fn sweep(
    live: &Path,
    compress: bool,
    retention: Retention,
    now_secs: i64,
    cancel: &AtomicBool,
) -> SweepStats {
    let mut stats = SweepStats::default();
    if cancel.load(Ordering::SeqCst) {
        return stats;
    }
    remove_stale_temps(live, &mut stats);
    let files = match closed_files(live) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(error = %e, path = %live.display(), "cannot list the event log's closed files");
            stats.failures += 1;
            return stats;
        }
    };
    // One entry per closed file, with its plain and its compressed form if there.
    let mut groups: Vec<(Option<&Closed>, Option<&Closed>)> = Vec::new();
    for c in &files {
        match groups.last_mut() {
            Some((plain, gz))
                if (*plain)
                    .or(*gz)
                    .is_some_and(|first| first.order() == c.order()) =>
            {
                if c.gz {
                    *gz = Some(c);
                } else {
                    *plain = Some(c);
                }
            }
            _ => groups.push(if c.gz {
                (None, Some(c))
            } else {
                (Some(c), None)
            }),
        }
    }
    let age_secs = i64::try_from(retention.age.as_secs()).unwrap_or(i64::MAX);
    let over_count = match retention.files {
        0 => 0,
        keep => groups.len().saturating_sub(keep),
    };
    for (i, (plain, gz)) in groups.iter().enumerate() {
        if cancel.load(Ordering::SeqCst) {
            return stats;
        }
        let any = plain.or(*gz).map(|c| c.closed_at_secs());
        let too_old = age_secs > 0
            && any
                .flatten()
                .is_some_and(|at| now_secs.saturating_sub(at) > age_secs);
        if i < over_count || too_old {
            let mut deleted = true;
            for c in [plain, gz].into_iter().flatten() {
                match std::fs::remove_file(&c.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(error = %e, path = %c.path.display(), "cannot delete an event log file past its retention");
                        stats.failures += 1;
                        deleted = false;
                    }
                }
            }
            if deleted {
                tracing::info!(closed = %(*plain).or(*gz).map(|c| c.stamp.as_str()).unwrap_or(""), "deleted an event log file past its retention");
                stats.removed += 1;
            }
            continue;
        }
        match (plain, gz) {
            // The .gz was renamed into place complete: the plain copy is the leftover.
            (Some(plain), Some(_)) => remove_leftover(&plain.path, &mut stats),
            (Some(plain), None) if compress => match gzip(&plain.path, cancel) {
                Ok(true) => stats.compressed += 1,
                Ok(false) => return stats,
                Err(e) => {
                    tracing::error!(error = %e, path = %plain.path.display(), "cannot compress a closed event log file; kept plain, tried again at the next sweep");
                    stats.failures += 1;
                }
            },
            _ => {}
        }
    }
    stats
}

fn remove_leftover(path: &Path, stats: &mut SweepStats) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::error!(error = %e, path = %path.display(), "cannot delete a compressed file's plain copy");
            stats.failures += 1;
        }
    }
}

/// Removes `….gz.tmp` files of this log: a compression cut short by a crash or a shutdown.
fn remove_stale_temps(live: &Path, stats: &mut SweepStats) {
    let Some(stem) = live.file_stem().and_then(|s| s.to_str()) else {
        return;
    };
    let dir = match live.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&format!("{stem}.")) && name.ends_with(".gz.tmp") {
            remove_leftover(&entry.path(), stats);
        }
    }
}

/// `path` + `suffix`, e.g. `a.jsonl` + `.gz`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Compresses `path` to `path.gz` through a temp file, then removes `path`. `Ok(false)` when
/// cancelled (nothing changed but a removed temp file).
fn gzip(path: &Path, cancel: &AtomicBool) -> io::Result<bool> {
    let gz = with_suffix(path, ".gz");
    let tmp = with_suffix(path, ".gz.tmp");
    let written = (|| -> io::Result<bool> {
        let mut src = File::open(path)?;
        let out = File::create(&tmp)?;
        let mut enc =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::default());
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            enc.write_all(&buf[..n])?;
        }
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        Ok(true)
    })();
    match written {
        Ok(true) => {}
        other => {
            let _ = std::fs::remove_file(&tmp);
            return other;
        }
    }
    std::fs::rename(&tmp, &gz)?;
    sync_dir(&gz)?;
    std::fs::remove_file(path)?;
    sync_dir(path)?;
    Ok(true)
}

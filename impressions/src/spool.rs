//! The durable spool: impressions and clicks that arrived while the dedup store could not
//! answer, kept on disk until they can be checked, then replayed through the same claim.
//!
//! Files in the spool directory:
//! - `spool.log`: where new records are appended (group-committed: an append returns after
//!   its fsync);
//! - `replay.log`: the records being replayed, taken from `spool.log` by a rename so appends
//!   never wait for a replay;
//! - `replay.offset`: how far `replay.log` has been replayed and confirmed (written atomically
//!   after the events of that part are fsynced in the event log). `replay.log` is deleted only
//!   when all of it is confirmed;
//! - `unverifiable.jsonl`: records that could no longer be checked (older than the dedup
//!   memory) or were corrupt, kept for manual reconciliation rather than billed or dropped.
//!
//! Each record is one line `crc32-hex SP json`. A line torn by a crash is never acknowledged
//! (the append returns only after fsync) and is cut when the spool is opened; a complete line
//! with a bad checksum is quarantined.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::journal::{retry_blocking, scan_lines, sync_dir, write_atomic, AppendFile, Line};
use crate::metrics::TrackerMetrics;
use crate::sign::TrackingData;
use crate::Error;

const ACTIVE: &str = "spool.log";
const REPLAY: &str = "replay.log";
const OFFSET: &str = "replay.offset";
const QUARANTINE: &str = "unverifiable.jsonl";

/// One event waiting to be checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// The sighting's claim token, hex (see [`crate::dedup::ClaimKey`]).
    pub token: String,
    /// When it arrived, ms since the epoch.
    pub received_ms: u64,
    pub data: TrackingData,
}

impl SpoolRecord {
    pub(crate) fn token(&self) -> Option<u128> {
        u128::from_str_radix(&self.token, 16).ok()
    }
}

/// A record read back for replay.
#[derive(Debug)]
pub(crate) enum Replayed {
    Record(Box<SpoolRecord>),
    /// A complete line whose checksum or JSON is wrong.
    Corrupt(String),
}

enum Cmd {
    Append(Vec<u8>, oneshot::Sender<()>),
    /// Moves `spool.log` to `replay.log` unless a replay is already in progress; answers
    /// whether `replay.log` exists afterwards.
    Rotate(oneshot::Sender<Result<bool, Error>>),
    /// Refuses further appends, writes the queued ones, then stops.
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    tx: mpsc::Sender<Cmd>,
    /// Records not yet confirmed, in both files.
    pending: Arc<AtomicU64>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: TrackerMetrics,
}

impl Spool {
    pub(crate) async fn open(dir: &Path, metrics: TrackerMetrics) -> Result<Self, Error> {
        let dir = dir.to_owned();
        let dir2 = dir.clone();
        let (active, pending) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            std::fs::create_dir_all(&dir2)
                .map_err(|e| Error::io("creating the spool directory", e))?;
            let (active, _) = AppendFile::open(&dir2.join(ACTIVE))
                .map_err(|e| Error::io("opening the spool", e))?;
            let mut pending = count_lines(&dir2.join(ACTIVE), 0)?;
            let replay = dir2.join(REPLAY);
            if replay.exists() {
                // A crash may have torn the file being replayed only if it was torn before
                // the rename; reopening cuts that tail the same way.
                drop(
                    AppendFile::open(&replay)
                        .map_err(|e| Error::io("opening the replay file", e))?,
                );
                pending += count_lines(&replay, read_offset(&dir2)?)?;
            }
            Ok((active, pending))
        })
        .await
        .map_err(|e| Error::Io {
            what: "opening the spool",
            source: std::io::Error::other(e.to_string()),
        })??;
        if pending > 0 {
            tracing::warn!(dir = %dir.display(), pending, "spool holds events from an earlier run; they are replayed when the dedup store answers");
        }
        let pending = Arc::new(AtomicU64::new(pending));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            rx,
            active: Some(active),
            dir: dir.clone(),
            io_errors: metrics.file_io_errors.clone(),
        };
        let task = tokio::spawn(writer.run());
        Ok(Self {
            dir,
            tx,
            pending,
            task: Mutex::new(Some(task)),
            metrics,
        })
    }

    /// Records not yet replayed and confirmed.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Appends `record`; returns once it is on disk (fsynced).
    pub(crate) async fn append(&self, record: &SpoolRecord) -> Result<(), Error> {
        let json = serde_json::to_vec(record).map_err(|e| Error::Encode(e.to_string()))?;
        let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
        line.extend_from_slice(&json);
        line.push(b'\n');
        let (ack, done) = oneshot::channel();
        // Counted before it is queued, so a replay that confirms it never finds it uncounted.
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = self.tx.send(Cmd::Append(line, ack)).await.is_ok();
        if !sent || done.await.is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Makes sure a replay file exists if anything is spooled; `false` when there is nothing
    /// to replay.
    pub(crate) async fn begin_replay(&self) -> Result<bool, Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Rotate(ack))
            .await
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)?
    }

    /// The confirmed offset into `replay.log`.
    pub(crate) async fn replay_offset(&self) -> Result<u64, Error> {
        let dir = self.dir.clone();
        blocking(move || read_offset(&dir)).await
    }

    /// Up to `max` records of `replay.log` from `offset`, with the offset just past each.
    pub(crate) async fn read_replay(
        &self,
        offset: u64,
        max: usize,
    ) -> Result<Vec<(Replayed, u64)>, Error> {
        let path = self.dir.join(REPLAY);
        blocking(move || {
            let mut file =
                std::fs::File::open(&path).map_err(|e| Error::io("opening the replay file", e))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io("seeking the replay file", e))?;
            let mut out = Vec::new();
            scan_lines(file, offset, |line| {
                if let Line::Complete(bytes, end) = line {
                    out.push((parse_line(bytes), end));
                }
                out.len() < max
            })
            .map_err(|e| Error::io("reading the replay file", e))?;
            Ok(out)
        })
        .await
    }

    /// Confirms `replay.log` up to `offset` (`records` of them).
    pub(crate) async fn commit(&self, offset: u64, records: u64) -> Result<(), Error> {
        let path = self.dir.join(OFFSET);
        blocking(move || {
            write_atomic(&path, offset.to_string().as_bytes())
                .map_err(|e| Error::io("writing the replay offset", e))
        })
        .await?;
        self.pending
            .fetch_sub(records.min(self.pending()), Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the fully confirmed replay file.
    pub(crate) async fn finish_replay(&self) -> Result<(), Error> {
        let dir = self.dir.clone();
        blocking(move || {
            let replay = dir.join(REPLAY);
            std::fs::remove_file(&replay).map_err(|e| Error::io("removing the replay file", e))?;
            match std::fs::remove_file(dir.join(OFFSET)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing the replay offset", e)),
            }
            sync_dir(&replay).map_err(|e| Error::io("syncing the spool directory", e))
        })
        .await
    }

    /// Keeps `what` (a record or a corrupt line) in `unverifiable.jsonl`, durably.
    pub(crate) async fn quarantine(
        &self,
        reason: &str,
        what: serde_json::Value,
    ) -> Result<(), Error> {
        let path = self.dir.join(QUARANTINE);
        let line = serde_json::json!({ "reason": reason, "record": what }).to_string();
        tracing::error!(reason, path = %path.display(), "a spooled event can no longer be checked; kept for manual reconciliation, not billed");
        self.metrics.quarantined(reason);
        blocking(move || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("opening the quarantine file", e))?;
            f.write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|e| Error::io("writing the quarantine file", e))
        })
        .await
    }

    /// Stops the writer once every queued append is on disk; later appends fail.
    pub(crate) async fn shutdown(&self) {
        if let Some(task) = self.task.lock().await.take() {
            let (ack, done) = oneshot::channel();
            if self.tx.send(Cmd::Close(ack)).await.is_ok() {
                let _ = done.await;
            }
            let _ = task.await;
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            what: "spool IO",
            source: std::io::Error::other(e.to_string()),
        })?
}

fn parse_line(bytes: &[u8]) -> Replayed {
    let corrupt = || Replayed::Corrupt(String::from_utf8_lossy(bytes).into_owned());
    if bytes.len() < 10 || bytes[8] != b' ' {
        return corrupt();
    }
    let (crc, json) = (&bytes[..8], &bytes[9..]);
    let expected = std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok());
    if expected != Some(crc32fast::hash(json)) {
        return corrupt();
    }
    match serde_json::from_slice(json) {
        Ok(record) => Replayed::Record(Box::new(record)),
        Err(_) => corrupt(),
    }
}

fn read_offset(dir: &Path) -> Result<u64, Error> {
    match std::fs::read_to_string(dir.join(OFFSET)) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("{} is not a number", dir.join(OFFSET).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("reading the replay offset", e)),
    }
}

fn count_lines(path: &Path, offset: u64) -> Result<u64, Error> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("opening a spool file", e)),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seeking a spool file", e))?;
    let mut n = 0;
    scan_lines(file, offset, |line| {
        if matches!(line, Line::Complete(..)) {
            n += 1;
        }
        true
    })
    .map_err(|e| Error::io("reading a spool file", e))?;
    Ok(n)
}

struct Writer {
    rx: mpsc::Receiver<Cmd>,
    active: Option<AppendFile>,
    dir: PathBuf,
    io_errors: metrics::Counter,
}

impl Writer {
    async fn run(mut self) {
        let mut closing = None;
        while let Some(first) = self.rx.recv().await {
            let mut buf = Vec::new();
            let mut acks = Vec::new();
            let mut rotate = None;
            let mut cmd = Some(first);
            while let Some(c) = cmd.take() {
                match c {
                    Cmd::Append(line, ack) => {
                        buf.extend_from_slice(&line);
                        acks.push(ack);
                    }
                    // Appends queued before the rotation are written first, so they are part
                    // of the file being rotated.
                    Cmd::Rotate(ack) => {
                        rotate = Some(ack);
                        break;
                    }
                    Cmd::Close(ack) => {
                        // Queued appends are still received; new ones are refused.
                        self.rx.close();
                        closing = Some(ack);
                    }
                }
                if buf.len() < 1 << 20 {
                    cmd = self.rx.try_recv().ok();
                }
            }
            if !acks.is_empty() {
                if let Some(active) = self.active.take() {
                    let active =
                        retry_blocking(active, "writing the spool", &self.io_errors, move |f| {
                            f.write(&buf).and_then(|()| f.sync())
                        })
                        .await;
                    self.active = Some(active);
                }
                for ack in acks {
                    let _ = ack.send(());
                }
            }
            if let Some(ack) = rotate {
                let _ = ack.send(self.rotate().await);
            }
        }
        if let Some(ack) = closing {
            let _ = ack.send(());
        }
    }

    async fn rotate(&mut self) -> Result<bool, Error> {
        let replay = self.dir.join(REPLAY);
        if tokio::fs::try_exists(&replay).await.unwrap_or(true) {
            return Ok(true);
        }
        let Some(active) = self.active.take() else {
            return Err(Error::Closed);
        };
        if active.len() == 0 {
            self.active = Some(active);
            return Ok(false);
        }
        let dir = self.dir.clone();
        let (active, res) = tokio::task::spawn_blocking(move || {
            let active_path = dir.join(ACTIVE);
            let replay = dir.join(REPLAY);
            let res = (|| {
                std::fs::rename(&active_path, &replay)?;
                match std::fs::remove_file(dir.join(OFFSET)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                sync_dir(&replay)?;
                AppendFile::open(&active_path).map(|(f, _)| f)
            })();
            match res {
                Ok(fresh) => (fresh, Ok(true)),
                Err(e) => {
                    // Keep appending where we were; the rename either happened (replay.log
                    // exists and is replayed next time) or did not.
                    let reopened = AppendFile::open(&active_path)
                        .map(|(f, _)| f)
                        .or_else(|_| AppendFile::open(&replay).map(|(f, _)| f));
                    match reopened {
                        Ok(f) => (f, Err(Error::io("rotating the spool", e))),
                        Err(e2) => (active, Err(Error::io("rotating the spool", e2))),
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::Io {
            what: "rotating the spool",
            source: std::io::Error::other(e.to_string()),
        })?;
        self.active = Some(active);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{BidRef, TrackingData};

    /// Removes the test's directory when dropped.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        Dir(std::env::temp_dir().join(format!(
            "impressions-spool-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        )))
    }

    fn record(n: u64) -> SpoolRecord {
        SpoolRecord {
            token: format!("{n:032x}"),
            received_ms: n,
            data: TrackingData::impression(
                BidRef {
                    auction_id: format!("a{n}"),
                    ..BidRef::default()
                },
                None,
            ),
        }
    }

    async fn replay_all(spool: &Spool) -> Vec<Replayed> {
        assert!(spool.begin_replay().await.unwrap());
        let offset = spool.replay_offset().await.unwrap();
        spool
            .read_replay(offset, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    #[tokio::test]
    async fn records_survive_reopen_and_rotation_is_confirmed_stepwise() {
        let dir = dir();
        let d = dir.0.clone();
        let spool = Spool::open(&d, TrackerMetrics::default()).await.unwrap();
        for n in 0..5 {
            spool.append(&record(n)).await.unwrap();
        }
        assert_eq!(spool.pending(), 5);
        assert!(spool.begin_replay().await.unwrap());
        // New appends go to a fresh active file while the replay runs.
        spool.append(&record(5)).await.unwrap();
        let batch = spool.read_replay(0, 2).await.unwrap();
        assert_eq!(batch.len(), 2);
        spool.commit(batch[1].1, 2).await.unwrap();
        assert_eq!(spool.pending(), 4);
        spool.shutdown().await;
        drop(spool);

        // After a restart the confirmed part is not read again.
        let spool = Spool::open(&d, TrackerMetrics::default()).await.unwrap();
        assert_eq!(spool.pending(), 4);
        let rest = replay_all(&spool).await;
        let ids: Vec<u64> = rest
            .iter()
            .map(|r| match r {
                Replayed::Record(r) => r.received_ms,
                Replayed::Corrupt(_) => u64::MAX,
            })
            .collect();
        assert_eq!(ids, vec![2, 3, 4]);
        spool.commit(u64::MAX, 3).await.unwrap();
        spool.finish_replay().await.unwrap();
        // The record appended during the replay is the next replay.
        let next = replay_all(&spool).await;
        assert!(matches!(&next[..], [Replayed::Record(r)] if r.received_ms == 5));
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_bad_checksum_is_reported() {
        let dir = dir();
        let d = dir.0.clone();
        let spool = Spool::open(&d, TrackerMetrics::default()).await.unwrap();
        spool.append(&record(1)).await.unwrap();
        spool.append(&record(2)).await.unwrap();
        spool.shutdown().await;
        drop(spool);
        let path = d.join(ACTIVE);
        let mut content = std::fs::read(&path).unwrap();
        // Flip a byte inside the second record's JSON, then leave a torn third record.
        let second = content.iter().position(|&b| b == b'\n').unwrap() + 20;
        content[second] ^= 0x01;
        content.extend_from_slice(b"0000abcd {\"tok");
        std::fs::write(&path, &content).unwrap();

        let spool = Spool::open(&d, TrackerMetrics::default()).await.unwrap();
        assert_eq!(spool.pending(), 2, "the torn tail is not a record");
        let records = replay_all(&spool).await;
        assert!(matches!(&records[0], Replayed::Record(r) if **r == record(1)));
        assert!(matches!(&records[1], Replayed::Corrupt(_)));
        assert_eq!(records.len(), 2);
    }

    #[tokio::test]
    async fn empty_spool_has_nothing_to_replay() {
        let dir = dir();
        let spool = Spool::open(&dir.0, TrackerMetrics::default())
            .await
            .unwrap();
        assert!(!spool.begin_replay().await.unwrap());
        assert_eq!(spool.pending(), 0);
    }
}

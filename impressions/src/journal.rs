//! Append-only line files shared by the event log and the spool: opening with torn-tail repair,
//! whole-batch writes that roll back on error, fsync, and a reader that tells complete lines
//! from a torn tail. Blocking IO, run on the blocking pool (`retry_blocking` does that for
//! writes that must not be given up on).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An append-only file of `\n`-terminated lines. Every write is one whole batch of complete
/// lines, so after a crash only the last batch can be torn, and only at the tail.
#[derive(Debug)]
pub(crate) struct AppendFile {
    file: File,
    path: PathBuf,
    /// Length up to the last complete batch; a failed write is cut back to it so a half-written
    /// batch never becomes the start of the next one.
    len: u64,
    dirty: bool,
}

impl AppendFile {
    /// Opens (creating) `path`. A tail without its `\n` is a batch torn by a crash, never
    /// acknowledged as durable: it is cut off (and logged) so the next line does not fuse with
    /// it. Returns the number of bytes cut.
    pub(crate) fn open(path: &Path) -> io::Result<(Self, u64)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let full = file.metadata()?.len();
        let keep = complete_prefix_len(&mut file, full)?;
        if keep < full {
            file.set_len(keep)?;
            file.sync_data()?;
            tracing::warn!(
                path = %path.display(),
                torn_bytes = full - keep,
                "cut a torn tail left by an earlier crash"
            );
        }
        Ok((
            Self {
                file,
                path: path.to_owned(),
                len: keep,
                dirty: false,
            },
            full - keep,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `buf` (complete lines) in one write. On error the file is cut back to where it
    /// was, so a retry writes the same batch again cleanly.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        match self.file.write_all(buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::error!(path = %self.path.display(), error = %cut, "cannot cut a failed write back");
                }
                Err(e)
            }
        }
    }

    /// Makes everything written so far durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Length of `file` up to and including its last `\n`.
fn complete_prefix_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// One item read from a line file.
pub(crate) enum Line<'a> {
    /// A complete line (without its `\n`) and the file offset just past it.
    Complete(&'a [u8], u64),
    /// Bytes at the end of the file without a final `\n`: a write torn by a crash.
    TornTail(usize),
}

/// Reads `reader` line by line from byte `offset` (which the reader is already positioned at),
/// calling `f` for each line. `f` returns `false` to stop early.
pub(crate) fn scan_lines<R: Read>(
    reader: R,
    offset: u64,
    mut f: impl FnMut(Line<'_>) -> bool,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::with_capacity(1024);
    let mut pos = offset;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pos += n as u64;
        let go_on = if buf.last() == Some(&b'\n') {
            f(Line::Complete(&buf[..n - 1], pos))
        } else {
            f(Line::TornTail(n))
        };
        if !go_on {
            return Ok(());
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory), so a
/// crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// fsyncs the directory holding `path`, making a rename or a new file's name durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// Runs `op` on the blocking pool until it succeeds, logging each failure: an event that was
/// accepted is never given up on (a full disk stalls the log, it does not empty it).
pub(crate) async fn retry_blocking(
    file: AppendFile,
    what: &'static str,
    errors: &metrics::Counter,
    op: impl Fn(&mut AppendFile) -> std::io::Result<()> + Send + Sync + 'static,
) -> AppendFile {
    let op = std::sync::Arc::new(op);
    let path = file.path().to_owned();
    let mut slot = Some(file);
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match slot.take() {
            Some(mut file) => {
                let op = op.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let res = op(&mut file);
                    (file, res)
                })
                .await;
                match joined {
                    Ok((file, Ok(()))) => return file,
                    Ok((file, Err(e))) => {
                        slot = Some(file);
                        e.to_string()
                    }
                    // Only a panic in `op` (there is none) or a runtime going away gets here;
                    // the handle went with the task, so the file is opened again next round.
                    Err(e) => e.to_string(),
                }
            }
            // Reopening cuts whatever a lost write left half done.
            None => match AppendFile::open(&path) {
                Ok((file, _)) => {
                    slot = Some(file);
                    continue;
                }
                Err(e) => e.to_string(),
            },
        };
        errors.increment(1);
        tracing::error!(error, what, path = %path.display(), "file IO failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes the test's directory when dropped.
    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> (Tmp, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "impressions-journal-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        (Tmp(dir), path)
    }

    fn lines(path: &Path) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut torn = 0;
        scan_lines(File::open(path).unwrap(), 0, |line| {
            match line {
                Line::Complete(l, _) => out.push(String::from_utf8(l.to_vec()).unwrap()),
                Line::TornTail(n) => torn = n,
            }
            true
        })
        .unwrap();
        (out, torn)
    }

    #[test]
    fn reopen_cuts_a_torn_tail_and_appends_cleanly() {
        let (_tmp, path) = tmp("a.log");
        let (mut f, cut) = AppendFile::open(&path).unwrap();
        assert_eq!(cut, 0);
        f.write(b"one\ntwo\n").unwrap();
        f.sync().unwrap();
        drop(f);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(b"thr").unwrap();
        drop(raw);
        assert_eq!(lines(&path), (vec!["one".to_owned(), "two".to_owned()], 3));

        let (mut f, cut) = AppendFile::open(&path).unwrap();
        assert_eq!(cut, 3);
        assert_eq!(f.len(), 8);
        f.write(b"four\n").unwrap();
        assert_eq!(
            lines(&path),
            (
                vec!["one".to_owned(), "two".to_owned(), "four".to_owned()],
                0
            )
        );
    }

    #[test]
    fn file_without_any_newline_is_cut_to_empty() {
        let (_tmp, path) = tmp("b.log");
        std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
        let (f, cut) = AppendFile::open(&path).unwrap();
        assert_eq!((f.len(), cut), (0, 10_000));
    }

    #[test]
    fn scan_reports_offsets() {
        let (_tmp, path) = tmp("c.log");
        std::fs::write(&path, b"ab\ncde\n").unwrap();
        let mut ends = Vec::new();
        scan_lines(File::open(&path).unwrap(), 0, |line| {
            if let Line::Complete(_, end) = line {
                ends.push(end);
            }
            true
        })
        .unwrap();
        assert_eq!(ends, vec![3, 7]);
    }

    #[test]
    fn atomic_write_replaces_content() {
        let (_tmp, path) = tmp("d.offset");
        write_atomic(&path, b"12").unwrap();
        write_atomic(&path, b"345").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"345");
    }
}

//! A real `redis-server` on a free loopback port, for tests of the parts that talk to Redis:
//! started, killed, restarted and frozen on demand, and killed when dropped.
//!
//! Redis is the outside world to the exchange, so tests run the real thing rather than a
//! stand-in. The binary is looked up on `PATH` (`scripts/test` installs it when missing).
//! A start succeeds only when the child it spawned is alive and is the server answering on
//! the port (`INFO server` reports the child's pid): a port taken by another process in the
//! meantime is a clear error (or, for a port chosen here, a fresh port), never a test that
//! talks to someone else's Redis.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::poll::eventually_blocking;
use crate::port::free_port;

/// How long a fresh `redis-server` gets to answer (it loads the append-only file first).
const START_LIMIT: Duration = Duration::from_secs(20);

/// How many free ports a start tries when another process takes the one it picked.
const PORT_ATTEMPTS: u32 = 5;

/// One `redis-server` child process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    persistent: bool,
    /// More `redis-server` arguments (a cluster node's, for one).
    extra: Vec<String>,
}

impl RedisServer {
    /// A throwaway server: no snapshots, no append-only file.
    pub fn start() -> io::Result<Self> {
        Self::launch(None, false)
    }

    /// A server that writes every change to an fsync-always append-only file before
    /// answering, so it comes back from [`kill`](Self::kill) + [`restart`](Self::restart)
    /// with every acknowledged write: an outage, not a data loss.
    pub fn start_persistent() -> io::Result<Self> {
        Self::launch(None, true)
    }

    /// A throwaway server on a port chosen earlier (one a client already points at).
    pub fn start_on(port: u16) -> io::Result<Self> {
        Self::launch(Some(port), false)
    }

    /// A throwaway server with more arguments, e.g. `["--cluster-enabled", "yes"]`.
    pub fn start_with(extra: &[&str]) -> io::Result<Self> {
        Self::launch_with(None, false, extra.iter().map(|a| (*a).to_owned()).collect())
    }

    fn launch(port: Option<u16>, persistent: bool) -> io::Result<Self> {
        Self::launch_with(port, persistent, Vec::new())
    }

    fn launch_with(port: Option<u16>, persistent: bool, extra: Vec<String>) -> io::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtb-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            persistent,
            extra,
        };
        let attempts = if port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut last = None;
        for _ in 0..attempts {
            server.port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                // Someone else took the port between free_port and the bind: pick another.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--save", ""]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("spawning redis-server (is it on PATH? scripts/test installs it): {e}"),
                )
            })?;
        let pid = child.id();
        let child = self.child.insert(child);

        let mut state = Start::Waiting;
        eventually_blocking(START_LIMIT, || {
            state = probe(child, self.port);
            !matches!(state, Start::Waiting)
        });
        let failure = match state {
            Start::Ours => return Ok(()),
            Start::Exited(status) => {
                let tail = log_tail(&log);
                let kind = if tail.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                io::Error::new(
                    kind,
                    format!(
                        "redis-server (pid {pid}) on port {} exited with {status} before \
                         answering; its log ends:\n{tail}",
                        self.port
                    ),
                )
            }
            Start::Foreign(other) => io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "port {} is answered by another redis-server (pid {other}), not by ours \
                     (pid {pid})",
                    self.port
                ),
            ),
            Start::Waiting => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "redis-server (pid {pid}) on port {} did not answer within {START_LIMIT:?}",
                    self.port
                ),
            ),
        };
        self.kill();
        Err(failure)
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where a persistent server keeps its data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would. A frozen server is thawed first: some kernels keep a
    /// stopped process until it is continued.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (killing it first if it runs).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGSTOP: the server keeps its connections open and answers nothing, like a hung Redis.
    pub fn freeze(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        signal(pid, sig)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a starting server stands.
enum Start {
    /// Not answering yet.
    Waiting,
    /// Our child answers on the port.
    Ours,
    /// Our child is gone.
    Exited(ExitStatus),
    /// Another redis-server answers on the port.
    Foreign(u32),
}

fn probe(child: &mut Child, port: u16) -> Start {
    match child.try_wait() {
        Ok(Some(status)) => return Start::Exited(status),
        Ok(None) => {}
        // Cannot tell: keep waiting, the deadline still bounds it.
        Err(_) => return Start::Waiting,
    }
    match server_pid(port) {
        // A restarted server answers INFO while it still loads its append-only file, and
        // refuses everything else with LOADING until it is done: not ready yet.
        Some((pid, true)) if pid == child.id() => Start::Waiting,
        Some((pid, false)) if pid == child.id() => Start::Ours,
        Some((pid, _)) => Start::Foreign(pid),
        None => Start::Waiting,
    }
}

/// The `process_id` that `INFO server` reports on `port`, if a Redis answers there, and
/// whether it is still loading its data (`INFO persistence`, `loading:1`).
fn server_pid(port: u16) -> Option<(u32, bool)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())?;
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut conn)
        .ok()?;
    let loading = persistence.lines().any(|l| l.trim() == "loading:1");
    Some((pid, loading))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill {sig} {pid} failed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_survives_a_restart_when_persistent_and_dies_on_drop() {
        let mut server = RedisServer::start_persistent().unwrap();
        let port = server.port();
        assert_eq!(server_pid(port), server.pid().map(|p| (p, false)));
        server.kill();
        assert_eq!(server_pid(port), None);
        server.restart().unwrap();
        // Back, and done loading its data: ready for any command, not only INFO.
        assert_eq!(server_pid(port), server.pid().map(|p| (p, false)));
        drop(server);
        assert_eq!(server_pid(port), None);
    }

    #[test]
    fn a_port_served_by_another_redis_is_refused_clearly() {
        let theirs = RedisServer::start().unwrap();
        let err = RedisServer::start_on(theirs.port()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("Address already in use") || msg.contains("another redis-server"),
            "{msg}"
        );
        // Theirs is untouched.
        assert_eq!(server_pid(theirs.port()), theirs.pid().map(|p| (p, false)));
    }

    #[test]
    fn a_port_held_by_something_else_is_refused_clearly() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let err = RedisServer::start_on(port).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("exited"), "{err}");
    }
}

//! A real `redis-server` on a free loopback port, for tests of the parts that talk to Redis:
//! started, killed, restarted and frozen on demand, and killed when dropped.
//!
//! Redis is the outside world to the exchange, so tests run the real thing rather than a
//! stand-in. The binary is looked up on `PATH` (`scripts/test` installs it when missing).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One `redis-server` child process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    persistent: bool,
}

impl RedisServer {
    /// A throwaway server: no snapshots, no append-only file.
    pub fn start() -> io::Result<Self> {
        Self::launch(free_port()?, false)
    }

    /// A server that writes every change to an fsync-always append-only file before
    /// answering, so it comes back from [`kill`](Self::kill) + [`restart`](Self::restart)
    /// with every acknowledged write: an outage, not a data loss.
    pub fn start_persistent() -> io::Result<Self> {
        Self::launch(free_port()?, true)
    }

    /// A throwaway server on a port chosen earlier (one a client already points at).
    pub fn start_on(port: u16) -> io::Result<Self> {
        Self::launch(port, false)
    }

    fn launch(port: u16, persistent: bool) -> io::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtb-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            persistent,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning redis-server: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("redis-server on port {} did not answer PING", self.port),
        ))
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
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        signal(child.id(), sig)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

/// A loopback port nothing listens on right now (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_survives_a_restart_when_persistent_and_dies_on_drop() {
        let mut server = RedisServer::start_persistent().unwrap();
        let port = server.port();
        assert!(ping(port));
        server.kill();
        assert!(!ping(port));
        server.restart().unwrap();
        assert!(ping(port));
        drop(server);
        assert!(!ping(port));
    }
}

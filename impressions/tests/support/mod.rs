//! Test support: a real `redis-server` on a free loopback port (killed on drop), temporary
//! directories, and a hand-driven clock.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use impressions::Clock;

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// With a directory, data is kept in an fsync-always append-only file there, so a killed
    /// and restarted server still has its keys (an outage, not a data loss).
    data_dir: Option<PathBuf>,
}

impl RedisServer {
    /// A throwaway server: no snapshots, no append-only file.
    pub fn start() -> Self {
        Self::launch(free_port(), None)
    }

    /// A server whose keys survive `kill` + `restart`.
    pub fn start_persistent(dir: &Path) -> Self {
        Self::launch(free_port(), Some(dir.to_owned()))
    }

    /// A server on a port chosen earlier (where a tracker already points).
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, None)
    }

    fn launch(port: u16, data_dir: Option<PathBuf>) -> Self {
        let mut server = Self {
            child: None,
            port,
            data_dir,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port (after `kill`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("");
        match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                cmd.arg("--dir")
                    .arg(dir)
                    .arg("--appendonly")
                    .arg("yes")
                    .arg("--appendfsync")
                    .arg("always");
            }
            None => {
                cmd.arg("--appendonly").arg("no");
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        wait_for_pong(self.port);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused server does not die of SIGKILL until it is continued on some kernels.
            let _ = self.child.as_ref().map(|c| {
                Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status()
            });
        }
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_pong(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 16];
            if s.write_all(b"PING\r\n").is_ok() {
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"+PONG") {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server on port {port} did not answer PING");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "impressions-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<AtomicU64>);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Arc::new(move || at.load(Ordering::SeqCst))
    }
}

/// The query string of a URL.
pub fn query(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, q)| q)
}

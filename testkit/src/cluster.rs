//! A real local Redis Cluster for fleet tests: `redis-server --cluster-enabled yes` nodes on
//! free loopback ports, joined with `redis-cli --cluster create`, with a short
//! `cluster-node-timeout` so a failover takes seconds. Every node is killed when it is dropped.

use std::io;
use std::process::Command;
use std::time::Duration;

use crate::poll::eventually_blocking;
use crate::redis::RedisServer;

/// How long a node may be unreachable before the cluster fails it over, in milliseconds.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// How long the cluster gets to reach `cluster_state:ok`, after creation or a failover.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// A running cluster: `masters` masters, each with `replicas` replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters × (1 + replicas)` nodes, joins them (slots spread over the masters,
    /// replicas assigned by `redis-cli`), and waits until every node reports
    /// `cluster_state:ok`. Needs `redis-server` and `redis-cli` on `PATH`.
    pub fn start(masters: usize, replicas: usize) -> io::Result<Self> {
        if masters < 3 {
            return Err(io::Error::other("a Redis Cluster needs at least 3 masters"));
        }
        let timeout = NODE_TIMEOUT_MS.to_string();
        let mut nodes = Vec::with_capacity(masters * (1 + replicas));
        for _ in 0..masters * (1 + replicas) {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                &timeout,
                // A replica may take over at once: these tests are about failover, not about
                // how stale a replica may be.
                "--cluster-replica-validity-factor",
                "0",
            ])?);
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes");
        let out = create.output().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running redis-cli (is it on PATH? scripts/test installs it): {e}"),
            )
        })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:{port}` of every running node: seeds for a cluster client.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(RedisServer::url)
            .collect()
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The ports of the running nodes that are masters now.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter(|n| role(n.port()).as_deref() == Some("master"))
            .map(RedisServer::port)
            .collect()
    }

    /// SIGKILLs the node on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Waits until every running node reports `cluster_state:ok` (after a failover: once a
    /// replica has taken over the dead master's slots).
    pub fn wait_ok(&self) -> io::Result<()> {
        self.wait_all("reach cluster_state:ok", |p| {
            info(p).is_some_and(|i| i.contains("cluster_state:ok"))
        })
    }

    /// Waits until every running replica's link to its master is up and its first full sync
    /// is done. A replica promoted before that holds nothing, and a failover to it is a store
    /// that lost its data (the budget store fences itself); a failover test waits here first.
    pub fn wait_replicas_synced(&self) -> io::Result<()> {
        self.wait_all("finish their first replica sync", |p| {
            cli(p, &["INFO", "replication"]).is_some_and(|i| {
                i.contains("role:master")
                    || (i.contains("master_link_status:up")
                        && i.contains("master_sync_in_progress:0"))
            })
        })
    }

    /// Waits until `done` holds for every running node's port, within [`SETTLE_LIMIT`].
    fn wait_all(&self, what: &str, done: impl Fn(u16) -> bool) -> io::Result<()> {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(RedisServer::port)
            .collect();
        if eventually_blocking(SETTLE_LIMIT, || ports.iter().all(|p| done(*p))) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the cluster's nodes did not {what} within {SETTLE_LIMIT:?}"),
            ))
        }
    }

    /// `CLUSTER INFO` of the node on `port`.
    pub fn info(&self, port: u16) -> Option<String> {
        info(port)
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn info(port: u16) -> Option<String> {
    cli(port, &["CLUSTER", "INFO"])
}

fn role(port: u16) -> Option<String> {
    cli(port, &["ROLE"]).and_then(|r| r.lines().next().map(|l| l.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_masters_cover_every_slot_and_route_keys() {
        let cluster = RedisCluster::start(3, 0).unwrap();
        let ports: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
        let info = cluster.info(ports[0]).unwrap();
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert_eq!(cluster.master_ports().len(), 3);
        assert_eq!(cluster.seeds().len(), 3);
        // Keys land on every master's slots; any node finds them (`-c` follows MOVED).
        for i in 0..12 {
            let key = format!("k{i}");
            let set = cli(ports[i % 3], &["-c", "SET", &key, &i.to_string()]);
            assert_eq!(set.as_deref().map(str::trim), Some("OK"));
        }
        for i in 0..12 {
            let key = format!("k{i}");
            let got = cli(ports[(i + 1) % 3], &["-c", "GET", &key]);
            assert_eq!(got.as_deref().map(str::trim), Some(i.to_string().as_str()));
        }
    }

    #[test]
    fn a_killed_master_is_replaced_by_its_replica() {
        let mut cluster = RedisCluster::start(3, 1).unwrap();
        let masters = cluster.master_ports();
        assert_eq!(masters.len(), 3);
        let victim = masters[0];
        cluster.kill(victim);
        // Within a few node timeouts a replica takes the dead master's slots.
        let promoted = eventually_blocking(SETTLE_LIMIT, || cluster.master_ports().len() == 3);
        assert!(promoted, "no replica took over from {victim}");
        assert!(!cluster.master_ports().contains(&victim));
        cluster.wait_ok().unwrap();
        let survivor = cluster.master_ports()[0];
        let info = cluster.info(survivor).unwrap();
        assert!(info.contains("cluster_slots_ok:16384"), "{info}");
        assert_eq!(cluster.seeds().len(), 5);
    }
}

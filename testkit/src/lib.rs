//! The test kit: what the workspace's tests share and the product never links (every crate
//! takes it as a dev-dependency only).
//!
//! - [`poll`]: wait for a condition with a deadline, never a bare sleep;
//! - [`redis`]: a real `redis-server` child on a free loopback port, checked to be ours;
//! - [`cluster`]: a real local Redis Cluster of such servers, with replicas when asked;
//! - [`port`]: free loopback ports;
//! - [`corpus`]: where the OpenRTB corpus is (`testdata/openrtb`, plus `OPENRTB_CORPUS`).

pub mod cluster;
pub mod corpus;
pub mod poll;
pub mod port;
pub mod redis;

pub use cluster::RedisCluster;
pub use poll::{eventually, eventually_blocking};
pub use port::free_port;
pub use redis::RedisServer;

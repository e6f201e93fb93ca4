//! The sharded event stream: one Redis Stream per tracker, since one stream key lives on one
//! cluster shard and would cap a fleet's event rate, and the set that lists them all.
//!
//! With `events.redis_stream = BASE`, a tracker writes `BASE:SESSION` (SESSION: 16 random hex
//! digits per start) and adds that key to the set `BASE:streams` before its first write. A
//! reader takes `SMEMBERS BASE:streams` and reads each stream. A restarted node writes a new
//! stream; the old one stays listed (capped by `MAXLEN ~`) until an operator deletes it and
//! `SREM`s it.

use redis::streams::StreamRangeReply;
use redislink::RedisConn;

use crate::events::Event;
use crate::Error;

/// A fresh stream session: 16 random hex digits.
fn new_session() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A new stream key of one tracker under `base`: `BASE:SESSION`.
pub fn node_stream(base: &str) -> String {
    format!("{base}:{}", new_session())
}

/// The set listing every tracker's stream under `base`: `BASE:streams`.
pub fn registry(base: &str) -> String {
    format!("{base}:streams")
}

/// Entries read per `XRANGE` call.
const PAGE: usize = 1_000;

/// Every event in every stream listed under `base`, stream by stream (each in its own
/// order), under `timeout` per call. Entries that are not events are skipped.
pub async fn read_streams(
    conn: &RedisConn,
    base: &str,
    timeout: std::time::Duration,
) -> Result<Vec<Event>, Error> {
    let mut streams: Vec<String> = conn
        .query(redis::cmd("SMEMBERS").arg(registry(base)), timeout)
        .await?;
    streams.sort();
    let mut events = Vec::new();
    for stream in streams {
        let mut start = "-".to_owned();
        loop {
            let page: StreamRangeReply = conn
                .query(
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE),
                    timeout,
                )
                .await?;
            let n = page.ids.len();
            for entry in &page.ids {
                let json: Option<String> = entry.get("event");
                if let Some(event) = json.and_then(|j| serde_json::from_str::<Event>(&j).ok()) {
                    events.push(event);
                }
            }
            match page.ids.last() {
                // `(` makes the next page start after the last id read.
                Some(last) if n == PAGE => start = format!("({}", last.id),
                _ => break,
            }
        }
    }
    Ok(events)
}

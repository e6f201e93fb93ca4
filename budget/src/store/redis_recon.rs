//! Reconciliation in Redis, per campaign group: a session's numbered batches are split by
//! group and applied by `recon_report.lua` under the group's hash tag (the batch number is kept
//! per session and group, so every group applies each batch once), and due buckets are settled
//! by `recon_settle.lua` per group with the tracker's durable billed counts, read first from
//! the 256 impression groups' hashes.
//!
//! A batch is stored once every group it touches has it; a group that fails leaves the batch
//! blocked, to be sent again whole (the groups that had it answer "duplicate").

use super::layout::IMPRESSION_GROUPS;
use super::recon::{BatchOutcome, BatchReply, ReconArgs, ReconBatch, ReconReply, SettleReply};
use super::redis::{parse_batch, parse_settle, RedisStore};
use crate::key::CampaignKey;
use crate::Error;
use futures::future::join_all;
use redis::aio::ConnectionLike;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How often a store value lists a group it uses again (one `SADD` per group and minute).
const RELIST: Duration = Duration::from_secs(60);

/// One group's part of one batch: indexes into the batch's items.
struct Part {
    batch: usize,
    items: Vec<usize>,
}

/// A bucket due for settlement.
struct Due {
    start: u64,
    group: u16,
    key: CampaignKey,
    name: String,
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The batches, per group, then the settlement.
    pub(crate) async fn reconcile_groups(
        &self,
        session: &str,
        batches: &[ReconBatch],
        args: &ReconArgs,
    ) -> Result<ReconReply, Error> {
        args.check()?;
        let replies = self.report(session, batches, args).await?;
        let settle = match args.settle_cutoff().filter(|_| args.max_settle > 0) {
            Some(cutoff) => self.settle(cutoff, args).await?,
            None => SettleReply::default(),
        };
        Ok(ReconReply {
            batches: replies,
            settle,
        })
    }

    async fn report(
        &self,
        session: &str,
        batches: &[ReconBatch],
        args: &ReconArgs,
    ) -> Result<Vec<BatchReply>, Error> {
        let mut groups: BTreeMap<u16, Vec<Part>> = BTreeMap::new();
        for (b, batch) in batches.iter().enumerate() {
            let mut parts: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (i, item) in batch.items.iter().enumerate() {
                parts.entry(item.key.group()).or_default().push(i);
            }
            for (group, items) in parts {
                groups
                    .entry(group)
                    .or_default()
                    .push(Part { batch: b, items });
            }
        }
        // A batch with no items is stored as soon as sent.
        let mut outcomes: Vec<BatchReply> = batches
            .iter()
            .map(|_| BatchReply {
                outcome: BatchOutcome::Applied,
                absent: 0,
                late: 0,
            })
            .collect();
        if groups.is_empty() {
            return Ok(outcomes);
        }
        self.list_groups(groups.keys().copied()).await?;
        let calls = groups
            .iter()
            .map(|(&group, parts)| self.report_group(session, group, parts, batches, args));
        let results = join_all(calls).await;
        let mut failure = None;
        let mut answered = 0;
        for ((_, parts), result) in groups.iter().zip(results) {
            match result {
                Ok(replies) => {
                    answered += 1;
                    for (part, reply) in parts.iter().zip(replies) {
                        merge(&mut outcomes[part.batch], reply);
                    }
                }
                Err(Error::Config(msg)) => return Err(Error::Config(msg)),
                Err(e) => {
                    for part in parts {
                        outcomes[part.batch].outcome = BatchOutcome::Blocked;
                    }
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            // Nothing answered: the round failed as a whole.
            Some(e) if answered == 0 => Err(e),
            _ => Ok(outcomes),
        }
    }

    /// Lists groups in `P:recon:groups` before any bucket of theirs can open, so the settlement
    /// finds every group. Each store value lists a group again after [`RELIST`], so a listing
    /// lost (a failover that dropped the write) is made good while the group is in use.
    async fn list_groups(&self, groups: impl Iterator<Item = u16>) -> Result<(), Error> {
        let now = Instant::now();
        let missing: Vec<u16> = {
            let listed = self
                .listed_groups
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            groups
                .filter(|g| {
                    listed
                        .get(g)
                        .is_none_or(|at| now.duration_since(*at) >= RELIST)
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut list = redis::cmd("SADD");
        list.arg(&self.keys.recon_groups).arg(&missing);
        let _: i64 = self.query(&list).await?;
        let mut listed = self
            .listed_groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for g in missing {
            listed.insert(g, now);
        }
        Ok(())
    }

    /// One group's parts of the batches, in order, as one pipeline in the group's slot.
    async fn report_group(
        &self,
        session: &str,
        group: u16,
        parts: &[Part],
        batches: &[ReconBatch],
        args: &ReconArgs,
    ) -> Result<Vec<BatchReply>, Error> {
        let seq_key = self.keys.seq(group, session);
        let size_key = self.keys.bucket_size(group);
        let open_key = self.keys.open_set(group);
        let mut pipe = redis::pipe();
        let mut prev = 0;
        for part in parts {
            let batch = &batches[part.batch];
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.scripts.recon_report.get_hash())
                .arg(3 + 2 * part.items.len())
                .arg(&seq_key)
                .arg(&size_key)
                .arg(&open_key);
            for &i in &part.items {
                let item = &batch.items[i];
                cmd.arg(self.keys.campaign(&item.key))
                    .arg(self.keys.bucket(&item.key, item.bucket_start_ms));
            }
            cmd.arg(batch.seq)
                .arg(prev)
                .arg(args.bucket_ms)
                .arg(args.settle_after_ms)
                .arg(args.retain_ms)
                .arg(args.now_ms);
            for &i in &part.items {
                let item = &batch.items[i];
                cmd.arg(item.bucket_start_ms)
                    .arg(item.charged)
                    .arg(item.billed);
            }
            cmd.arg(session);
            prev = batch.seq;
        }
        let replies: Vec<Vec<i64>> = self.pipeline(&pipe, &[&self.scripts.recon_report]).await?;
        if replies.len() != parts.len() {
            return Err(Error::Protocol(format!(
                "{} answers for {} batches",
                replies.len(),
                parts.len()
            )));
        }
        replies
            .iter()
            .map(|r| parse_batch(r, args.bucket_ms))
            .collect()
    }

    /// Settles up to `max_settle` due buckets, oldest first, over every group with open
    /// buckets. A group whose due buckets or durable counts cannot be read is left for the
    /// next round: a bucket is never settled without its durable billed count.
    async fn settle(&self, cutoff: u64, args: &ReconArgs) -> Result<SettleReply, Error> {
        let listed: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&self.keys.recon_groups))
            .await?;
        let groups: Vec<u16> = listed.iter().filter_map(|g| g.parse().ok()).collect();
        let limit = args.max_settle;
        let scans = groups.iter().map(|&group| async move {
            let found: Vec<(String, u64)> = self
                .query(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(self.keys.open_set(group))
                        .arg("-inf")
                        .arg(cutoff)
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit.saturating_add(1)),
                )
                .await?;
            Ok::<_, Error>((group, found))
        });
        let mut due = Vec::new();
        let mut failure = None;
        for scan in join_all(scans).await {
            match scan {
                Ok((group, found)) => {
                    for (name, start) in found {
                        match CampaignKey::from_bucket_key(&self.keys.prefix, &name) {
                            Some((key, _)) => due.push(Due {
                                start,
                                group,
                                key,
                                name,
                            }),
                            None => {
                                tracing::warn!(bucket = %name, "open bucket with a foreign name left alone")
                            }
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        due.sort_by(|a, b| (a.start, &a.name).cmp(&(b.start, &b.name)));
        let more = due.len() > limit;
        due.truncate(limit);
        let billed = self.durable_billed(&due).await;
        let mut per_group: BTreeMap<u16, Vec<(&Due, u64)>> = BTreeMap::new();
        for d in &due {
            match billed.get(&d.start) {
                Some(Ok(counts)) => {
                    let b = counts.get(&d.key.billed_field()).copied().unwrap_or(0);
                    per_group.entry(d.group).or_default().push((d, b));
                }
                Some(Err(e)) => {
                    failure.get_or_insert(Error::Protocol(format!(
                        "durable billed counts of bucket {} unreadable: {e}",
                        d.start
                    )));
                }
                None => {}
            }
        }
        let calls = per_group.iter().map(|(&group, buckets)| async move {
            let mut call = self.scripts.recon_settle.prepare_invoke();
            call.key(self.keys.open_set(group)).arg(args.retain_ms);
            for (d, b) in buckets {
                call.key(&d.name).key(self.keys.campaign(&d.key)).arg(*b);
            }
            let reply: Vec<i64> = self.eval(&call).await?;
            parse_settle(&reply)
        });
        let mut total = SettleReply {
            more,
            ..SettleReply::default()
        };
        let mut settled_any = false;
        for result in join_all(calls).await {
            match result {
                Ok(reply) => {
                    settled_any = true;
                    total.add(reply);
                }
                Err(e) => {
                    total.more = true;
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if !settled_any && !due.is_empty() => Err(e),
            Some(e) => {
                tracing::debug!(error = %e, "part of the settlement waits for the next round");
                total.more = true;
                Ok(total)
            }
            None => Ok(total),
        }
    }

    /// Per bucket start: every campaign's billed micros summed over the impression groups, or
    /// the error that kept one group from being read.
    async fn durable_billed(
        &self,
        due: &[Due],
    ) -> HashMap<u64, Result<HashMap<String, u64>, String>> {
        let mut fields: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for d in due {
            fields
                .entry(d.start)
                .or_default()
                .insert(d.key.billed_field());
        }
        let reads = fields.iter().map(|(&start, names)| async move {
            let names: Vec<&String> = names.iter().collect();
            let groups = (0..IMPRESSION_GROUPS).map(|i| {
                let names = &names;
                async move {
                    self.query::<Vec<Option<i64>>>(
                        redis::cmd("HMGET")
                            .arg(self.keys.billed(i, start))
                            .arg(names.as_slice()),
                    )
                    .await
                }
            });
            let mut sums: HashMap<String, u64> = HashMap::new();
            for values in join_all(groups).await {
                let values = match values {
                    Ok(v) => v,
                    Err(e) => return (start, Err(e.to_string())),
                };
                for (name, value) in names.iter().zip(values) {
                    let add = value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                    let sum = sums.entry((*name).clone()).or_default();
                    *sum = sum.saturating_add(add);
                }
            }
            (start, Ok(sums))
        });
        join_all(reads).await.into_iter().collect()
    }
}

/// Folds one group's answer for a batch into the batch's answer: the batch is stored only if
/// every group has it.
fn merge(into: &mut BatchReply, part: BatchReply) {
    into.absent += part.absent;
    into.late += part.late;
    into.outcome = match (into.outcome, part.outcome) {
        (BatchOutcome::Blocked, _) | (_, BatchOutcome::Blocked) => BatchOutcome::Blocked,
        (BatchOutcome::Applied, BatchOutcome::Applied) => BatchOutcome::Applied,
        _ => BatchOutcome::Duplicate,
    };
}

//! Budget configuration as the exchange embeds it in its TOML file, with documented defaults.

use crate::clock::Clock;
use crate::daily::{DailySettings, Pacing, DEFAULT_TIMEZONE};
use crate::store::recon::ReconArgs;
use crate::store::MAX_MICROS;
use crate::Error;
use serde::Deserialize;
use std::time::Duration;

/// What to do with a bid that names no campaign (`cid` absent) or one this node does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// The bid takes part without a budget counter (nothing is charged for it).
    #[default]
    Allow,
    /// The bid does not take part.
    Reject,
}

impl UnknownPolicy {
    /// Whether a bid without a known campaign may take part.
    pub fn allows(self) -> bool {
        self == UnknownPolicy::Allow
    }
}

/// A campaign budget from the config file. It is created in the store only if absent, so an
/// operator's later changes through the admin API are not undone by a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSeed {
    /// The DSP's configured name.
    pub dsp: String,
    /// The campaign id the DSP's bids carry in `cid`.
    pub cid: String,
    /// Total budget in micros.
    pub budget_micros: u64,
    /// Created paused.
    #[serde(default)]
    pub paused: bool,
    /// At most this much spent per day (micros). Absent: no daily cap.
    #[serde(default)]
    pub daily_budget_micros: Option<u64>,
    /// How the daily budget is spent. Default `asap`.
    #[serde(default)]
    pub pacing: Pacing,
    /// IANA zone whose midnight starts the campaign's day. Default `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

impl CampaignSeed {
    /// A seed with no daily cap, in UTC.
    pub fn new(dsp: &str, cid: &str, budget_micros: u64) -> Self {
        CampaignSeed {
            dsp: dsp.to_owned(),
            cid: cid.to_owned(),
            budget_micros,
            paused: false,
            daily_budget_micros: None,
            pacing: Pacing::Asap,
            timezone: default_timezone(),
        }
    }

    /// Its daily settings.
    pub fn daily(&self) -> DailySettings {
        DailySettings {
            daily_budget_micros: self.daily_budget_micros,
            pacing: self.pacing,
            timezone: self.timezone.clone(),
        }
    }
}

/// Budget settings. Every field has a default, so an empty `[budget]` table is valid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Redis URL (`redis://host:port/db`). Absent: budgets live in process ([`crate::MemoryStore`]).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several exchanges can share one Redis. Default `budget`.
    pub key_prefix: String,
    /// This node's name in the store; a random suffix per process start is appended, so a
    /// restarted node never inherits the counters of its previous life. Default `exchange`.
    pub node_id: String,
    /// How often a node reports spend and renews leases. Default 100 ms.
    pub sync_interval_ms: u64,
    /// Bound on every store call (connect and response included). Default 100 ms.
    pub redis_timeout_ms: u64,
    /// How often every campaign is synced (also the idle and exhausted ones) and the campaign
    /// list is re-read. Between full rounds only campaigns with activity are synced. Default 1000 ms.
    pub full_sync_ms: u64,
    /// A campaign without spend or unmet demand for this long hands its lease back. Default 5000 ms.
    pub idle_return_ms: u64,
    /// A lease is sized to last this many sync intervals at the recent spend rate. Default 3.
    pub lease_intervals: u32,
    /// The smallest lease an active campaign asks for. Default 50_000 micros ($0.05).
    pub min_lease_micros: u64,
    /// The largest lease a node holds per campaign; absent means no cap. Default none.
    pub max_lease_micros: Option<u64>,
    /// Policy for bids without `cid` or with an unknown campaign. Default `allow`.
    pub unknown_campaign: UnknownPolicy,
    /// Label metrics with the campaign id as well as the DSP (cardinality!). Default false.
    pub per_campaign_metrics: bool,
    /// How long a graceful shutdown keeps trying to hand leases back. Default 2000 ms.
    pub shutdown_timeout_ms: u64,
    /// Unknown campaign ids queued for discovery per sync round, at most. Default 256.
    pub max_probes_per_round: usize,
    /// How often a node sends its reconciliation counts (charged wins, billed impressions) to
    /// the store and settles the buckets that are due, in one round trip. Default 1000 ms.
    pub reconcile_interval_ms: u64,
    /// Auction-time bucket of the reconciliation: a win and its impression are matched within
    /// the bucket of the auction's time. Every node must use the same (the store refuses
    /// another). Default 60_000 ms.
    pub reconcile_bucket_ms: u64,
    /// A bucket is settled this long after it ends: `charged - billed` goes back to the budget.
    /// Must cover the impression window, the clock-skew allowance and the spool replay horizon
    /// (1 h + 30 s + 1 h), plus a little. Default 7_260_000 ms (2 h 1 min).
    pub settle_after_ms: u64,
    /// How long the store remembers a settled bucket (to recognise late counts) and a node's
    /// last batch number (to recognise a resent batch). Default 86_400_000 ms (24 h).
    pub reconcile_retain_ms: u64,
    /// Buckets settled per round trip, at most; more wait for the next one. Default 1000.
    pub reconcile_max_settle: usize,
    /// Where this node remembers the identity of the budget store it last saw, so a store
    /// that lost its data (restarted empty, failed over to an empty replica) is recognised
    /// after a restart of the node too. Absent: remembered in memory only (a restarted node
    /// trusts the store it finds). The exchange defaults it to
    /// `{tracking.spool_dir}/budget-store-identity` when Redis is configured. One per node.
    pub state_file: Option<std::path::PathBuf>,
    /// A node silent this long (its presence key in the store expired) is declared dead by
    /// the live nodes and its unspent leases go back to their campaigns; a node that cannot
    /// renew its presence stops spending before this. Must exceed 2 × `sync_interval_ms`.
    /// Default 3000 ms.
    pub node_ttl_ms: u64,
    /// Budgets created in the store when absent.
    pub campaigns: Vec<CampaignSeed>,
    /// The wall clock of campaign days and pacing: the system clock unless a test hands in
    /// another ([`Clock::manual`]). Not read from the config file. (Reconciliation keeps the
    /// system clock: its buckets are keyed by auction timestamps.)
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            redis_url: None,
            key_prefix: "budget".to_owned(),
            node_id: "exchange".to_owned(),
            sync_interval_ms: 100,
            redis_timeout_ms: 100,
            full_sync_ms: 1000,
            idle_return_ms: 5000,
            lease_intervals: 3,
            min_lease_micros: 50_000,
            max_lease_micros: None,
            unknown_campaign: UnknownPolicy::Allow,
            per_campaign_metrics: false,
            shutdown_timeout_ms: 2000,
            max_probes_per_round: 256,
            reconcile_interval_ms: 1000,
            reconcile_bucket_ms: 60_000,
            settle_after_ms: 7_260_000,
            reconcile_retain_ms: 86_400_000,
            reconcile_max_settle: 1000,
            state_file: None,
            node_ttl_ms: 3000,
            campaigns: Vec::new(),
            clock: Clock::system(),
        }
    }
}

impl BudgetConfig {
    /// The sync period.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    /// The bound on each store call.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Rejects settings that cannot work (zero periods, empty names, amounts past [`MAX_MICROS`]).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: &str| Err(Error::Config(msg.to_owned()));
        if self.sync_interval_ms == 0 {
            return bad("sync_interval_ms must be > 0");
        }
        if self.redis_timeout_ms == 0 {
            return bad("redis_timeout_ms must be > 0");
        }
        if self.full_sync_ms < self.sync_interval_ms {
            return bad("full_sync_ms must be >= sync_interval_ms");
        }
        if self.lease_intervals == 0 {
            return bad("lease_intervals must be >= 1");
        }
        if self.node_id.is_empty() || self.node_id.chars().any(|c| c.is_whitespace()) {
            return bad("node_id must be non-empty without whitespace");
        }
        if self.key_prefix.is_empty() {
            return bad("key_prefix must be non-empty");
        }
        if self.key_prefix.contains(['{', '}']) {
            return bad("key_prefix must not contain { or } (they would form a cluster hash tag)");
        }
        if self.node_ttl_ms <= self.sync_interval_ms.saturating_mul(2) {
            return bad("node_ttl_ms must be > 2 × sync_interval_ms");
        }
        if self.min_lease_micros > MAX_MICROS {
            return Err(Error::TooLarge(self.min_lease_micros));
        }
        if let Some(max) = self.max_lease_micros {
            if max < self.min_lease_micros {
                return bad("max_lease_micros must be >= min_lease_micros");
            }
        }
        if self.reconcile_interval_ms == 0 {
            return bad("reconcile_interval_ms must be > 0");
        }
        if self.reconcile_bucket_ms == 0 {
            return bad("reconcile_bucket_ms must be > 0");
        }
        if self.settle_after_ms == 0 {
            return bad("settle_after_ms must be > 0");
        }
        if self.reconcile_retain_ms == 0 {
            return bad("reconcile_retain_ms must be > 0");
        }
        if self.reconcile_max_settle == 0 {
            return bad("reconcile_max_settle must be >= 1");
        }
        for seed in &self.campaigns {
            if seed.budget_micros > MAX_MICROS {
                return Err(Error::TooLarge(seed.budget_micros));
            }
            if seed.dsp.is_empty() || seed.cid.is_empty() {
                return bad("campaign dsp and cid must be non-empty");
            }
            if let Some(daily) = seed.daily_budget_micros.filter(|d| *d > MAX_MICROS) {
                return Err(Error::TooLarge(daily));
            }
            crate::daily::check_timezone(&seed.timezone)?;
        }
        Ok(())
    }

    /// How long a node's presence lasts without renewal.
    pub fn node_ttl(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms)
    }

    /// The reconciliation period.
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.reconcile_interval_ms)
    }

    /// The store-call settings of a reconcile round at `now_ms`.
    pub(crate) fn recon_args(&self, now_ms: u64) -> ReconArgs {
        ReconArgs {
            now_ms,
            bucket_ms: self.reconcile_bucket_ms,
            settle_after_ms: self.settle_after_ms,
            retain_ms: self.reconcile_retain_ms,
            max_settle: self.reconcile_max_settle,
        }
    }

    /// Sync rounds between full rounds (at least 1).
    pub(crate) fn full_every_rounds(&self) -> u64 {
        (self.full_sync_ms / self.sync_interval_ms.max(1)).max(1)
    }

    /// Rounds without activity before a lease is handed back (at least 1).
    pub(crate) fn idle_rounds(&self) -> u32 {
        let rounds = (self.idle_return_ms / self.sync_interval_ms.max(1)).max(1);
        u32::try_from(rounds).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let cfg: BudgetConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, BudgetConfig::default());
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.full_every_rounds(), 10);
        assert_eq!(cfg.idle_rounds(), 50);
        assert!(cfg.unknown_campaign.allows());
        assert_eq!(cfg.reconcile_interval(), Duration::from_secs(1));
        let args = cfg.recon_args(10_000_000);
        assert_eq!(
            (args.bucket_ms, args.settle_after_ms, args.retain_ms),
            (60_000, 2 * 3_600_000 + 60_000, 86_400_000)
        );
        assert_eq!(args.max_settle, 1000);
    }

    #[test]
    fn reconcile_keys_parse_and_are_checked() {
        let cfg: BudgetConfig = toml::from_str(
            r#"
            reconcile_interval_ms = 50
            reconcile_bucket_ms = 1000
            settle_after_ms = 300
            reconcile_retain_ms = 5000
            reconcile_max_settle = 10
            "#,
        )
        .unwrap();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.recon_args(7).settle_after_ms, 300);
        for broken in [
            "reconcile_interval_ms = 0",
            "reconcile_bucket_ms = 0",
            "settle_after_ms = 0",
            "reconcile_retain_ms = 0",
            "reconcile_max_settle = 0",
        ] {
            let cfg: BudgetConfig = toml::from_str(broken).unwrap();
            assert!(matches!(cfg.validate(), Err(Error::Config(_))), "{broken}");
        }
    }

    #[test]
    fn parses_a_full_table() {
        let cfg: BudgetConfig = toml::from_str(
            r#"
            redis_url = "redis://127.0.0.1:6379"
            sync_interval_ms = 50
            unknown_campaign = "reject"
            max_lease_micros = 1000000
            [[campaigns]]
            dsp = "acme"
            cid = "c1"
            budget_micros = 5000000
            "#,
        )
        .unwrap();
        assert_eq!(cfg.unknown_campaign, UnknownPolicy::Reject);
        assert!(!cfg.unknown_campaign.allows());
        assert_eq!(cfg.sync_interval(), Duration::from_millis(50));
        assert_eq!(cfg.campaigns.len(), 1);
        assert!(!cfg.campaigns[0].paused);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(toml::from_str::<BudgetConfig>("sync_interval = 5").is_err());
        let zero = BudgetConfig {
            sync_interval_ms: 0,
            ..BudgetConfig::default()
        };
        assert!(zero.validate().is_err());
        let huge = BudgetConfig {
            campaigns: vec![CampaignSeed::new("d", "c", MAX_MICROS + 1)],
            ..BudgetConfig::default()
        };
        assert!(matches!(huge.validate(), Err(Error::TooLarge(_))));
        let inverted = BudgetConfig {
            max_lease_micros: Some(1),
            ..BudgetConfig::default()
        };
        assert!(inverted.validate().is_err());
        let short_ttl = BudgetConfig {
            sync_interval_ms: 100,
            node_ttl_ms: 200,
            ..BudgetConfig::default()
        };
        assert!(short_ttl.validate().is_err());
        let tagged = BudgetConfig {
            key_prefix: "b{x}".into(),
            ..BudgetConfig::default()
        };
        assert!(tagged.validate().is_err());
    }
}

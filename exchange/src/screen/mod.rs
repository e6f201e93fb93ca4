//! Fraud screening before the fan-out: the pure rules a bid request is checked against
//! (`[fraud]`). A screened request is answered 204 and no DSP is called. Lists are loaded once
//! per config (at start and on each reload); one file per list kind: `ip.rs`, `domain.rs`
//! (domains and app bundles), `bots.rs`, `rate.rs`, and `list.rs` reads them all.

mod bots;
mod domain;
mod ip;
mod list;
mod rate;

use std::net::IpAddr;
use std::time::Instant;

use openrtb::request::{BidRequest, Device};

pub use bots::Bots;
pub use domain::{page_host, BundleSet, DomainSet};
pub use ip::{canonical, IpSet};
pub use rate::RateTable;

use crate::config::FraudConfig;

/// Why a request (or a tracking hit) was screened: the `reason` label of
/// `exchange_screened_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    IpBlocklist,
    BotUa,
    DomainBlocklist,
    AppBlocklist,
    IpRate,
    DeviceRate,
    MissingIp,
    MissingUa,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::IpBlocklist,
        Reason::BotUa,
        Reason::DomainBlocklist,
        Reason::AppBlocklist,
        Reason::IpRate,
        Reason::DeviceRate,
        Reason::MissingIp,
        Reason::MissingUa,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::IpBlocklist => "ip_blocklist",
            Reason::BotUa => "bot_ua",
            Reason::DomainBlocklist => "domain_blocklist",
            Reason::AppBlocklist => "app_blocklist",
            Reason::IpRate => "ip_rate",
            Reason::DeviceRate => "device_rate",
            Reason::MissingIp => "missing_ip",
            Reason::MissingUa => "missing_ua",
        }
    }
}

/// The rules of one config, built from `[fraud]`.
#[derive(Debug, Default)]
pub struct Screen {
    ips: IpSet,
    bots: Option<Bots>,
    domains: DomainSet,
    apps: BundleSet,
    ip_rate: Option<RateTable>,
    device_rate: Option<RateTable>,
    require_ip: bool,
    require_ua: bool,
}

impl std::fmt::Debug for RateTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateTable")
            .field("bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// The IFA of a device with ad tracking limited: shared by millions, so never a rate key.
const ZERO_IFA: &str = "00000000-0000-0000-0000-000000000000";

impl Screen {
    /// Loads every list of `config`; all bad lines and unreadable files come back together,
    /// each naming its file and line.
    pub fn from_config(config: &FraudConfig) -> Result<Screen, Vec<String>> {
        let mut errors = Vec::new();
        let ips = IpSet::from_files(&config.ip_blocklist_files, &mut errors);
        let domains = DomainSet::from_files(&config.domain_blocklist_files, &mut errors);
        let apps = BundleSet::from_files(&config.app_blocklist_files, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let origin = Instant::now();
        let table =
            |limit: Option<u32>| limit.map(|l| RateTable::new(l, config.rate_table_slots, origin));
        Ok(Screen {
            ips,
            bots: config.bot_user_agents.then(Bots::new),
            domains,
            apps,
            ip_rate: table(config.max_requests_per_ip),
            device_rate: table(config.max_requests_per_device),
            require_ip: config.require_ip,
            require_ua: config.require_ua,
        })
    }

    /// The first rule `req` breaks at `now`, or `None` for a clean request. The cheap checks
    /// come first and the rate counters last, so a request screened for another reason is not
    /// counted against its IP or device.
    pub fn check(&self, req: &BidRequest<'_>, now: Instant) -> Option<Reason> {
        let device = req.device.as_deref();
        let ips = device.map(device_ips).unwrap_or_default();
        let ua = device
            .and_then(|d| d.ua.as_deref())
            .filter(|ua| !ua.trim().is_empty());
        // Web and in-app traffic always has a browser or device behind it; DOOH may not.
        let needs_client = req.site.is_some() || req.app.is_some();
        if needs_client && self.require_ip && ips.iter().all(Option::is_none) {
            return Some(Reason::MissingIp);
        }
        if needs_client && self.require_ua && ua.is_none() {
            return Some(Reason::MissingUa);
        }
        if !self.ips.is_empty() && ips.iter().flatten().any(|ip| self.ips.contains(*ip)) {
            return Some(Reason::IpBlocklist);
        }
        if let (Some(bots), Some(ua)) = (&self.bots, ua) {
            if bots.is_bot(ua) {
                return Some(Reason::BotUa);
            }
        }
        if let Some(site) = req.site.as_deref().filter(|_| !self.domains.is_empty()) {
            let domain = site.domain.as_deref();
            let page = site.page.as_deref().and_then(page_host);
            if [domain, page]
                .into_iter()
                .flatten()
                .any(|host| self.domains.blocks(host))
            {
                return Some(Reason::DomainBlocklist);
            }
        }
        if let Some(bundle) = req.app.as_deref().and_then(|a| a.bundle.as_deref()) {
            if self.apps.blocks(bundle) {
                return Some(Reason::AppBlocklist);
            }
        }
        if let (Some(table), Some(ip)) = (&self.ip_rate, ips.iter().flatten().next()) {
            if table.over(rate_key(*ip), now) {
                return Some(Reason::IpRate);
            }
        }
        let ifa = device
            .and_then(|d| d.ifa.as_deref())
            .map(str::trim)
            .filter(|ifa| !ifa.is_empty() && *ifa != ZERO_IFA);
        if let (Some(table), Some(ifa)) = (&self.device_rate, ifa) {
            if table.over(ifa, now) {
                return Some(Reason::DeviceRate);
            }
        }
        None
    }

    /// Whether a tracking hit from `client` with user agent `ua` is invalid traffic: the
    /// client IP is on the IP blocklist, or the user agent is a known bot (when
    /// `bot_user_agents` is on). The other rules are about bid requests, not about hits.
    pub fn invalid_hit(&self, client: IpAddr, ua: Option<&str>) -> Option<Reason> {
        if self.ips.contains(client) {
            return Some(Reason::IpBlocklist);
        }
        match (&self.bots, ua) {
            (Some(bots), Some(ua)) if bots.is_bot(ua) => Some(Reason::BotUa),
            _ => None,
        }
    }
}

/// `device.ip` and `device.ipv6`, where they parse.
fn device_ips(device: &Device<'_>) -> [Option<IpAddr>; 2] {
    let parse = |s: Option<&str>| s.and_then(|s| s.trim().parse::<IpAddr>().ok());
    [parse(device.ip.as_deref()), parse(device.ipv6.as_deref())]
}

/// The rate key of an address: IPv4 whole; IPv6 by its /64, the block one subscriber gets
/// and rotates addresses within.
fn rate_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1) | 1,
    }
}

//! The rules a [`Config`] must follow, checked all at once so one run of the exchange reports
//! every broken rule together rather than one per attempt.

use super::{money_to_micros, parse_dsp_url, Config};
use crate::Error;

impl Config {
    /// Checks every rule and reports all broken ones together.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        self.validate_auction(&mut errors);
        self.validate_server(&mut errors);
        self.validate_dsps(&mut errors);
        self.validate_budgets(&mut errors);
        self.validate_tracking(&mut errors);
        self.validate_events_and_overload(&mut errors);
        self.validate_dns(&mut errors);
        self.validate_pool(&mut errors);
        self.validate_debug(&mut errors);
        self.validate_supply_chain(&mut errors);
        errors.extend(crate::tls::validate(&self.tls, self.server.tls.as_ref()));
        self.validate_fraud(&mut errors);
        self.validate_publishers(&mut errors);
        self.validate_pricing(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(errors))
        }
    }

    /// Checks every rule as [`Config::validate`] does and also loads the `[fraud]` lists,
    /// reporting their bad lines (`file:line: problem`) with the other errors; the screen
    /// comes back built, so each list is read once.
    pub fn validate_with_screen(&self) -> Result<crate::screen::Screen, Error> {
        let mut errors = match self.validate() {
            Ok(()) => Vec::new(),
            Err(Error::Config(errors)) => errors,
            Err(other) => return Err(other),
        };
        match crate::screen::Screen::from_config(&self.fraud) {
            Ok(screen) if errors.is_empty() => Ok(screen),
            Ok(_) => Err(Error::Config(errors)),
            Err(list_errors) => {
                errors.extend(list_errors.into_iter().map(|e| format!("fraud: {e}")));
                Err(Error::Config(errors))
            }
        }
    }

    /// The `[fraud]` keys that need no file to check, and `server.trusted_proxies`.
    fn validate_fraud(&self, errors: &mut Vec<String>) {
        let f = &self.fraud;
        for (key, limit) in [
            ("max_requests_per_ip", f.max_requests_per_ip),
            ("max_requests_per_device", f.max_requests_per_device),
        ] {
            if limit == Some(0) {
                errors.push(format!(
                    "fraud.{key} must be above 0 (leave it out to turn the limit off)"
                ));
            }
        }
        if f.rate_table_slots == 0 || f.rate_table_slots > 1 << 26 {
            errors.push(format!(
                "fraud.rate_table_slots must be between 1 and 67108864, not {}",
                f.rate_table_slots
            ));
        }
        if let Err(problems) = crate::client_ip::TrustedProxies::parse(&self.server.trusted_proxies)
        {
            errors.extend(problems);
        }
    }

    fn validate_pool(&self, errors: &mut Vec<String>) {
        let idle = self.auction.pool_idle_timeout_ms;
        if idle == 0 {
            errors.push("auction.pool_idle_timeout_ms must be above 0".to_owned());
        }
        for (i, dsp) in self.dsps.iter().enumerate() {
            if dsp.rewarm_ms != 0 && dsp.warm_connections != 0 && dsp.rewarm_ms >= idle {
                errors.push(format!(
                    "dsp[{i}] ({}): rewarm_ms {} must be below auction.pool_idle_timeout_ms \
                     ({idle}), or the warm connections close before they are used again",
                    dsp.name, dsp.rewarm_ms
                ));
            }
        }
    }

    /// The debug token travels in a request header, so it must be one a header can carry.
    fn validate_debug(&self, errors: &mut Vec<String>) {
        if let Some(token) = &self.debug.token {
            if token.len() < 16 {
                errors.push("debug.token must be at least 16 characters".to_owned());
            }
            if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                errors.push(
                    "debug.token must be printable ASCII without spaces (it is sent as a header)"
                        .to_owned(),
                );
            }
        }
    }

    fn validate_supply_chain(&self, errors: &mut Vec<String>) {
        let Some(sc) = &self.supply_chain else {
            return;
        };
        let asi = sc.asi.as_str();
        // A domain name: what buyers look up in sellers.json and ads.txt.
        let domain = !asi.is_empty()
            && asi.len() <= 253
            && asi.split('.').count() >= 2
            && asi.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain {
            errors.push(format!(
                "supply_chain.asi must be the exchange's domain name, like \"exchange.example\", not {asi:?}"
            ));
        }
    }

    fn validate_dns(&self, errors: &mut Vec<String>) {
        let d = &self.dns;
        if d.refresh_ms == 0 {
            errors.push("dns.refresh_ms must be above 0".to_owned());
        }
        if d.max_hosts == 0 {
            errors.push("dns.max_hosts must be above 0".to_owned());
        }
        if d.timeout_ms == 0 {
            errors.push("dns.timeout_ms must be above 0".to_owned());
        }
    }

    fn validate_auction(&self, errors: &mut Vec<String>) {
        let a = &self.auction;
        if a.dsp_timeout_ms == 0 {
            errors.push("auction.dsp_timeout_ms must be above 0".to_owned());
        }
        if a.timer_slack_ms >= a.dsp_timeout_ms {
            errors.push(format!(
                "auction.timer_slack_ms ({}) must be below auction.dsp_timeout_ms ({}): no DSP would get any time",
                a.timer_slack_ms, a.dsp_timeout_ms
            ));
        }
        if a.default_tmax_ms <= a.reserve_ms {
            errors.push(format!(
                "auction.default_tmax_ms ({}) must be above auction.reserve_ms ({})",
                a.default_tmax_ms, a.reserve_ms
            ));
        }
        if !(a.price_increment.is_finite()
            && a.price_increment >= 0.0
            && a.price_increment < 1000.0)
        {
            errors.push(format!(
                "auction.price_increment must be a CPM between 0 and 1000, not {}",
                a.price_increment
            ));
        }
        if a.currency.len() != 3 || !a.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(format!(
                "auction.currency must be an ISO-4217 code like \"USD\", not {:?}",
                a.currency
            ));
        }
        if !matches!(a.default_at, 1 | 2) {
            errors.push(format!(
                "auction.default_at must be 1 or 2, not {}",
                a.default_at
            ));
        }
        if a.max_response_bytes == 0 {
            errors.push("auction.max_response_bytes must be above 0".to_owned());
        }
    }

    /// The server's and the notices' bounds.
    fn validate_server(&self, errors: &mut Vec<String>) {
        if self.server.max_body_bytes == 0 {
            errors.push("server.max_body_bytes must be above 0".to_owned());
        }
        if self.server.max_in_flight_auctions == 0 {
            errors.push("server.max_in_flight_auctions must be above 0".to_owned());
        }
        if self.server.max_connections == 0 {
            errors.push("server.max_connections must be above 0".to_owned());
        }
        if self.notices.max_in_flight == 0 {
            errors.push("notices.max_in_flight must be above 0".to_owned());
        }
        for host in &self.notices.allow_hosts {
            if let Err(e) = crate::notices::guard::check_allowed_host(host) {
                errors.push(format!("notices.allow_hosts: {host:?} {e}"));
            }
        }
    }

    fn validate_dsps(&self, errors: &mut Vec<String>) {
        let a = &self.auction;
        let mut seen = std::collections::HashSet::new();
        for (i, dsp) in self.dsps.iter().enumerate() {
            let at = format!("dsp[{i}] ({:?})", dsp.name);
            if dsp.name.trim().is_empty() {
                errors.push(format!("dsp[{i}]: name must not be empty"));
            } else if !seen.insert(dsp.name.as_str()) {
                errors.push(format!("{at}: name is used by another dsp"));
            }
            if let Err(e) = parse_dsp_url(&dsp.url) {
                errors.push(format!("{at}: url {:?}: {e}", dsp.url));
            }
            match dsp.timeout_ms {
                Some(0) => errors.push(format!("{at}: timeout_ms must be above 0")),
                Some(t) if t > a.dsp_timeout_ms => errors.push(format!(
                    "{at}: timeout_ms ({t}) must not exceed auction.dsp_timeout_ms ({})",
                    a.dsp_timeout_ms
                )),
                Some(t) if t <= a.timer_slack_ms => errors.push(format!(
                    "{at}: timeout_ms ({t}) must be above auction.timer_slack_ms ({})",
                    a.timer_slack_ms
                )),
                _ => {}
            }
            if dsp.max_in_flight == 0 {
                errors.push(format!("{at}: max_in_flight must be above 0"));
            }
            if let Err(problems) = crate::dsp_filter::Gate::from_config(dsp) {
                errors.extend(problems.into_iter().map(|p| format!("{at}: {p}")));
            }
            if !(0.0..=1.0).contains(&dsp.loss_notice_sample) {
                errors.push(format!(
                    "{at}: loss_notice_sample must be between 0.0 and 1.0, not {}",
                    dsp.loss_notice_sample
                ));
            }
        }
    }

    /// The budget section, the stores it talks to, the admin token and the seeded campaigns.
    fn validate_budgets(&self, errors: &mut Vec<String>) {
        if self.budget.redis_url.is_some() {
            errors.push("budget.redis_url: set [redis] url instead, it serves every store".into());
        }
        if !self.budget.campaigns.is_empty() {
            errors.push(
                "budget.campaigns: use [[campaign]] tables (budget in currency units)".into(),
            );
        }
        if let Err(e) = self.budget.validate() {
            errors.push(format!("budget: {e}"));
        }
        self.validate_redis(errors);
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            errors.push("admin.token must be at least 16 characters".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.campaigns.iter().enumerate() {
            let at = format!("campaign[{i}] ({:?}/{:?})", c.dsp, c.id);
            if !self.dsps.iter().any(|d| d.name == c.dsp) {
                errors.push(format!("{at}: dsp {:?} is not a configured dsp", c.dsp));
            }
            if c.id.is_empty() {
                errors.push(format!("{at}: id must not be empty"));
            }
            if !seen.insert((c.dsp.as_str(), c.id.as_str())) {
                errors.push(format!("{at}: the same campaign is listed twice"));
            }
            if money_to_micros(c.budget).is_none() {
                errors.push(format!(
                    "{at}: budget must be a non-negative amount below 9 billion, not {}",
                    c.budget
                ));
            }
            if let Some(daily) = c.daily_budget.filter(|d| money_to_micros(*d).is_none()) {
                errors.push(format!(
                    "{at}: daily_budget must be a non-negative amount below 9 billion, not {daily}"
                ));
            }
            if let Some(tz) = c.timezone.as_deref() {
                if budget::check_timezone(tz).is_err() {
                    errors.push(format!("{at}: timezone {tz:?} is not an IANA time zone"));
                }
            }
            if c.pacing == budget::Pacing::Even && c.daily_budget.is_none() {
                errors.push(format!("{at}: pacing = \"even\" needs a daily_budget"));
            }
        }
    }

    /// Tracking URLs, and how long a win stays billable.
    fn validate_tracking(&self, errors: &mut Vec<String>) {
        let t = &self.tracking;
        if t.secret
            .as_deref()
            .is_some_and(|s| s.len() < impressions::TrackingKey::MIN_LEN)
        {
            errors.push(format!(
                "tracking.secret must be at least {} bytes",
                impressions::TrackingKey::MIN_LEN
            ));
        }
        if let Some(url) = &t.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!(
                    "tracking.base_url {url:?} must start with http:// or https://"
                ));
            }
        }
        if t.window_ms == 0 || t.replay_interval_ms == 0 || t.redis_timeout_ms == 0 {
            errors.push(
                "tracking.window_ms, replay_interval_ms and redis_timeout_ms must be above 0"
                    .into(),
            );
        }
        // A win's charge may only be credited back once no impression of it can still be
        // billed: after the URL window, the clock skew allowance and the spool's replay horizon.
        let billable_for = t
            .window_ms
            .saturating_add(t.max_skew_ms)
            .saturating_add(t.replay_horizon_ms);
        if self.budget.settle_after_ms < billable_for {
            errors.push(format!(
                "budget.settle_after_ms ({}) must be at least tracking.window_ms + max_skew_ms + \
                 tracking.replay_horizon_ms ({billable_for}), or unrendered-looking wins would \
                 be credited back before their impressions can no longer arrive",
                self.budget.settle_after_ms
            ));
        }
        if t.memory_capacity == 0 {
            errors.push("tracking.memory_capacity must be above 0".into());
        }
    }

    /// `[redis]`: `url` or `cluster`, never both; every URL parses, is `redis://` or
    /// `rediss://`, and a cluster's seeds share one scheme; the tracking key prefix can carry
    /// the keys' hash tags.
    fn validate_redis(&self, errors: &mut Vec<String>) {
        let r = &self.redis;
        if r.url.is_some() && r.cluster.is_some() {
            errors.push(
                "redis.url and redis.cluster are exclusive: set url for one server or cluster \
                 for a Redis Cluster's seed nodes, not both"
                    .into(),
            );
        }
        if let Some(url) = &r.url {
            errors.extend(redislink::Target::Single(url.clone()).problems("redis.url"));
        }
        if let Some(seeds) = &r.cluster {
            errors.extend(redislink::Target::Cluster(seeds.clone()).problems("redis.cluster"));
        }
        let prefix = self.tracking_key_prefix();
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            errors.push(format!(
                "tracking.key_prefix {prefix:?} must be non-empty and hold no {{ or }} (the \
                 tracking keys' hash tags)"
            ));
        }
    }

    /// Billing events need a sink; overload control needs a window it can measure.
    fn validate_events_and_overload(&self, errors: &mut Vec<String>) {
        let no_file = self
            .events
            .file
            .as_ref()
            .is_none_or(|f| f.as_os_str().is_empty());
        if no_file && self.events.redis_stream.is_none() {
            errors.push("events.file may only be empty when events.redis_stream is set: billing events need a sink".into());
        }
        if self.events.redis_stream.is_some() && self.redis_target().is_none() {
            errors.push("events.redis_stream needs [redis] url or [redis] cluster".into());
        }
        if self.events.max_pending == 0 || self.events.fsync_interval_ms == 0 {
            errors.push("events.max_pending and events.fsync_interval_ms must be above 0".into());
        }
        if self.events.stream_backlog == 0 {
            errors.push("events.stream_backlog must be above 0".into());
        }
        let o = &self.overload;
        if o.probe_interval_ms == 0 || o.window_ms < o.probe_interval_ms * 2 {
            errors.push(format!(
                "overload.probe_interval_ms must be above 0 and overload.window_ms at least twice it, got {} and {}",
                o.probe_interval_ms, o.window_ms
            ));
        }
        if o.target_lag_us == 0 || o.min_limit == 0 {
            errors.push("overload.target_lag_us and overload.min_limit must be above 0".into());
        }
        if self.events.linger_ms > 1000 {
            errors.push(format!(
                "events.linger_ms must be at most 1000, got {}",
                self.events.linger_ms
            ));
        }
        self.validate_event_files(errors);
    }

    /// Rotation, retention and sampling of the event log.
    fn validate_event_files(&self, errors: &mut Vec<String>) {
        let e = &self.events;
        // Below it the log would close a file per batch or two.
        const MIN_ROTATE_BYTES: u64 = 4096;
        if e.rotate_bytes != 0 && e.rotate_bytes < MIN_ROTATE_BYTES {
            errors.push(format!(
                "events.rotate_bytes must be 0 (never) or at least {MIN_ROTATE_BYTES}, got {}",
                e.rotate_bytes
            ));
        }
        if e.retention_age_s != 0 && e.retention_age_s < e.rotate_interval_s {
            errors.push(format!(
                "events.retention_age_s ({}) must be 0 (no limit) or at least events.rotate_interval_s ({}): files would be deleted as soon as they are closed",
                e.retention_age_s, e.rotate_interval_s
            ));
        }
        errors.extend(e.sample.rates().problems());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::from_toml(text).and_then(|c| c.validate()) {
            Err(Error::Config(e)) => e,
            other => panic!("expected config errors, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_stream_backlog_is_refused() {
        assert_eq!(
            errors("[events]\nstream_backlog = 0\n"),
            ["events.stream_backlog must be above 0"]
        );
        let ok = Config::from_toml("[events]\nstream_backlog = 5\n").unwrap();
        let (tracker, _) = ok
            .tracker_config("127.0.0.1:8080".parse().unwrap())
            .unwrap();
        assert_eq!(tracker.events.stream_backlog, 5);
    }

    #[test]
    fn event_log_rotation_and_sampling_errors_come_together() {
        let e = errors(
            "[events]\nrotate_bytes = 100\nrotate_interval_s = 3600\nretention_age_s = 60\n\
             [events.sample]\nwin = 1.5\nlate = -0.5\n",
        );
        assert_eq!(
            e,
            [
                "events.rotate_bytes must be 0 (never) or at least 4096, got 100",
                "events.retention_age_s (60) must be 0 (no limit) or at least events.rotate_interval_s (3600): files would be deleted as soon as they are closed",
                "events.sample.win must be within 0.0..=1.0, got 1.5",
                "events.sample.late must be within 0.0..=1.0, got -0.5",
            ]
        );
        let ok = Config::from_toml(
            "[events]\nrotate_bytes = 0\nrotate_interval_s = 0\nretention_files = 0\nretention_age_s = 0\ncompress = false\n[events.sample]\nwin = 0.01\nloss = 0.0\n",
        )
        .unwrap();
        ok.validate().unwrap();
        let t = ok.tracker_config("127.0.0.1:1".parse().unwrap()).unwrap().0;
        assert_eq!((t.events.rotate_bytes, t.events.compress), (0, false));
        assert_eq!(
            (
                t.events.sample.win,
                t.events.sample.loss,
                t.events.sample.late
            ),
            (0.01, 0.0, 1.0)
        );
        let d = Config::default()
            .tracker_config("127.0.0.1:1".parse().unwrap())
            .unwrap()
            .0;
        assert_eq!(
            (
                d.events.rotate_bytes,
                d.events.rotate_interval.as_secs(),
                d.events.retention_files,
                d.events.retention_age.as_secs()
            ),
            (1 << 30, 3600, 168, 604_800)
        );
    }

    #[test]
    fn rewarming_must_beat_the_idle_timeout() {
        let e = errors(
            r#"
            [auction]
            pool_idle_timeout_ms = 1000
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            rewarm_ms = 1000
            [[dsp]]
            name = "off"
            url = "http://127.0.0.1:2/bid"
            rewarm_ms = 0
            "#,
        );
        assert_eq!(
            e,
            vec![
                "dsp[0] (a): rewarm_ms 1000 must be below auction.pool_idle_timeout_ms (1000), \
                  or the warm connections close before they are used again"
            ]
        );
    }

    #[test]
    fn the_debug_token_must_be_long_and_fit_a_header() {
        assert_eq!(
            errors("[debug]\ntoken = \"short tok\""),
            [
                "debug.token must be at least 16 characters",
                "debug.token must be printable ASCII without spaces (it is sent as a header)",
            ]
        );
        let ok = Config::from_toml("[debug]\ntoken = \"debug-token-0123456789\"").unwrap();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn the_supply_chain_asi_is_a_domain_name() {
        let e = errors(
            r#"
            [supply_chain]
            asi = "not a domain"
            "#,
        );
        assert_eq!(
            e,
            vec![
                r#"supply_chain.asi must be the exchange's domain name, like "exchange.example", not "not a domain""#
            ]
        );
        let c = Config::from_toml(
            r#"
            [supply_chain]
            asi = "your-exchange.example"
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            gvl_id = 755
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.supply_chain.unwrap().asi, "your-exchange.example");
        assert_eq!(c.dsps[0].gvl_id, Some(755));
    }

    #[test]
    fn dns_keys_are_checked_together() {
        let e = errors(
            r#"
            [dns]
            refresh_ms = 0
            max_hosts = 0
            timeout_ms = 0
            "#,
        );
        assert_eq!(
            e,
            vec![
                "dns.refresh_ms must be above 0",
                "dns.max_hosts must be above 0",
                "dns.timeout_ms must be above 0",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(
            r#"
            [auction]
            dsp_timeout_ms = 20
            currency = "usd"
            price_increment = -1.0
            [[dsp]]
            name = "a"
            url = "ftp://x/bid"
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            timeout_ms = 50
            loss_notice_sample = 2.0
            "#,
        );
        let all = e.join("\n");
        for needle in [
            "auction.currency",
            "auction.price_increment",
            "must start with http:// or https://",
            "name is used by another dsp",
            "must not exceed auction.dsp_timeout_ms",
            "loss_notice_sample",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(e.len(), 6, "{all}");
    }

    #[test]
    fn the_timer_slack_must_leave_every_dsp_some_time() {
        let e = errors(
            r#"
            [auction]
            dsp_timeout_ms = 30
            timer_slack_ms = 30
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            timeout_ms = 20
            "#,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("auction.timer_slack_ms (30) must be below"),
            "{e:?}"
        );
        assert!(
            e[1].contains("timeout_ms (20) must be above auction.timer_slack_ms"),
            "{e:?}"
        );
        Config::from_toml("[auction]\ndsp_timeout_ms = 30\ntimer_slack_ms = 0\n")
            .and_then(|c| c.validate())
            .unwrap();
    }

    #[test]
    fn traffic_control_and_notice_keys_are_checked_with_the_rest() {
        let e = errors(
            r#"
            [auction]
            currency = "usd"
            [notices]
            allow_hosts = ["metadata.internal", "http://10.0.0.1:80"]
            [[dsp]]
            name = "a"
            url = "http://127.0.0.1:1/bid"
            qps = 0
            [[dsp]]
            name = "b"
            url = "http://127.0.0.1:2/bid"
            qps = 100
            media_types = ["banner", "vidoe"]
            channels = ["web"]
            countries = ["FR", "DEU"]
            device_types = [2, 4]
            "#,
        );
        assert_eq!(e.len(), 6, "{e:#?}");
        let all = e.join("\n");
        for needle in [
            "auction.currency",
            "notices.allow_hosts: \"http://10.0.0.1:80\"",
            "dsp[0] (\"a\"): qps must be above 0",
            "dsp[1] (\"b\"): media_types: unknown \"vidoe\"",
            "dsp[1] (\"b\"): channels: unknown \"web\"",
            "dsp[1] (\"b\"): countries: \"FR\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_rather_than_ignored() {
        let e = errors("[auction]\ndsp_timeout = 30\n");
        assert!(e[0].contains("dsp_timeout"), "{e:?}");
    }

    #[test]
    fn campaigns_are_checked_against_the_dsps_and_converted_to_micros() {
        let text = r#"
            [redis]
            url = "redis://127.0.0.1:6379"
            [budget]
            sync_interval_ms = 50
            unknown_campaign = "reject"
            [admin]
            token = "0123456789abcdef"
            [[dsp]]
            name = "alpha"
            url = "http://127.0.0.1:9001/bid"
            [[campaign]]
            dsp = "alpha"
            id = "cmp-1"
            budget = 50.25
        "#;
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        let b = c.budget_config();
        assert_eq!(b.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(b.sync_interval_ms, 50);
        assert_eq!(b.campaigns.len(), 1);
        assert_eq!(b.campaigns[0].budget_micros, 50_250_000);
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "the token leaked into Debug"
        );

        let e = errors(
            r#"
            [admin]
            token = "short"
            [[campaign]]
            dsp = "nobody"
            id = "c"
            budget = -1.0
            "#,
        )
        .join("\n");
        for needle in ["admin.token", "not a configured dsp", "non-negative amount"] {
            assert!(e.contains(needle), "missing {needle:?} in {e}");
        }
    }
}

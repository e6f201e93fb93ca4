//! `[redis] url` or `[redis] cluster`: exclusive, every URL checked, `rediss://` accepted on
//! both but never mixed with `redis://` in one seed list, every problem reported at once; and
//! what the tracker gets from them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use exchange::config::Config;
use exchange::Error;

/// The configuration errors of `[redis]` plus `extra`, about Redis or tracking keys only.
fn check(redis: &str, extra: &str) -> Vec<String> {
    let text = format!("[redis]\n{redis}\n{extra}");
    let config = Config::from_toml(&text).unwrap();
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(Error::Config(errors)) => errors
            .into_iter()
            .filter(|e| e.starts_with("redis") || e.contains("key_prefix"))
            .collect(),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn url_and_cluster_are_exclusive_and_every_url_is_checked() {
    let both = "redis.url and redis.cluster are exclusive: set url for one server or cluster \
                for a Redis Cluster's seed nodes, not both";
    let cases: &[(&str, &str, &[&str])] = &[
        ("url = \"redis://127.0.0.1:6379\"", "", &[]),
        ("url = \"rediss://redis.internal:6380/0\"", "", &[]),
        (
            "cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
            "",
            &[],
        ),
        (
            "cluster = [\"rediss://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"]",
            "",
            &[],
        ),
        (
            "cluster = [\"redis://10.0.0.1:7000\"]",
            "[events]\nredis_stream = \"events\"",
            &[],
        ),
        (
            "url = \"redis://127.0.0.1:6379\"\ncluster = [\"redis://10.0.0.1:7000\"]",
            "",
            &[both],
        ),
        ("cluster = []", "", &["redis.cluster: the seed list is empty"]),
        (
            "url = \"http://127.0.0.1:6379\"",
            "",
            &["redis.url: \"http://127.0.0.1:6379\" is not a redis:// or rediss:// URL"],
        ),
        (
            "cluster = [\"rediss://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
            "",
            &["redis.cluster: mixes rediss:// and redis:// seeds; use one scheme for every node"],
        ),
        (
            "cluster = [\"redis://10.0.0.1:7000/2\"]",
            "",
            &["redis.cluster[0]: \"redis://10.0.0.1:7000/2\" selects database 2; Redis Cluster has only database 0"],
        ),
        // Every problem at once.
        (
            "url = \"redis://:secret@\"\ncluster = [\"tcp://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
            "[tracking]\nkey_prefix = \"a{b}\"",
            &[
                both,
                "redis.url: \"redis://<redacted>@\" is not a valid Redis URL (Redis URL did not parse - InvalidClientConfig)",
                "redis.cluster[0]: \"tcp://10.0.0.1:7000\" is not a redis:// or rediss:// URL",
                "tracking.key_prefix \"a{b}\" must be non-empty and hold no { or } (the tracking keys' hash tags)",
            ],
        ),
    ];
    for (redis, extra, want) in cases {
        assert_eq!(check(redis, extra), *want, "[redis] {redis} / {extra}");
    }
}

#[test]
fn the_tracker_gets_the_cluster_the_key_prefix_and_the_budget_buckets() {
    let config = Config::from_toml(
        "[redis]\ncluster = [\"redis://10.0.0.1:7000\"]\n[budget]\nkey_prefix = \"ex1\"\n\
         reconcile_bucket_ms = 30000\n",
    )
    .unwrap();
    let (t, _) = config
        .tracker_config("127.0.0.1:8080".parse().unwrap())
        .unwrap();
    let redis = t.redis.unwrap();
    assert_eq!(
        redis.target,
        impressions::Target::Cluster(vec!["redis://10.0.0.1:7000".into()])
    );
    assert_eq!(t.key_prefix, "ex1");
    assert_eq!(t.billed.bucket_ms, 30_000);
    assert_eq!(
        t.billed.retain_ms,
        config.budget.settle_after_ms + config.budget.reconcile_retain_ms
    );

    let own = Config::from_toml(
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[tracking]\nkey_prefix = \"trk\"\n",
    )
    .unwrap();
    let (t, _) = own
        .tracker_config("127.0.0.1:8080".parse().unwrap())
        .unwrap();
    assert_eq!(t.key_prefix, "trk");
    assert_eq!(
        t.redis.unwrap().target,
        impressions::Target::Single("redis://127.0.0.1:6379".into())
    );
}

//! `redislink` against real servers: a single Redis, a 3-master cluster, and a cluster whose
//! nodes are all gone (every call returns within its bound).

use std::time::{Duration, Instant};

use redislink::{open, Error, RedisConn, Target};

const TIMEOUT: Duration = Duration::from_millis(200);

#[test]
fn refuses_targets_that_cannot_work() {
    let cases: &[(Target, &[&str])] = &[
        (Target::Single("redis://127.0.0.1:6379/".into()), &[]),
        (Target::Single("rediss://127.0.0.1:6379/".into()), &[]),
        (Target::Cluster(vec!["redis://127.0.0.1:7000".into()]), &[]),
        (
            Target::Cluster(vec![]),
            &["redis: the seed list is empty"],
        ),
        (
            Target::Single("http://127.0.0.1:6379".into()),
            &["redis: \"http://127.0.0.1:6379\" is not a redis:// or rediss:// URL"],
        ),
        (
            Target::Cluster(vec![
                "rediss://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into(),
            ]),
            &["redis: mixes rediss:// and redis:// seeds; use one scheme for every node"],
        ),
        (
            Target::Cluster(vec!["redis://:pw@127.0.0.1:7000/3".into()]),
            &["redis[0]: \"redis://<redacted>@127.0.0.1:7000/3\" selects database 3; Redis Cluster has only database 0"],
        ),
    ];
    for (target, want) in cases {
        assert_eq!(target.problems("redis"), *want, "{target:?}");
    }
}

#[tokio::test]
async fn single_and_cluster_answer() {
    let server = testkit::RedisServer::start().unwrap();
    let single = open(&Target::Single(server.url()), TIMEOUT).unwrap();
    assert!(!single.is_cluster());
    single.ping(TIMEOUT).await.unwrap();

    let cluster = testkit::RedisCluster::start(3, 0).unwrap();
    let conn = open(&Target::Cluster(cluster.seeds()), Duration::from_secs(2)).unwrap();
    assert!(conn.is_cluster());
    conn.ping(Duration::from_secs(2)).await.unwrap();
    // Keys in many slots through one connection: each command goes to its slot's master.
    for i in 0..32 {
        let key = format!("k{i}");
        let set = redis::cmd("SET").arg(&key).arg(i).clone();
        conn.query::<()>(&set, Duration::from_secs(2))
            .await
            .unwrap();
    }
    for i in 0..32 {
        let get = redis::cmd("GET").arg(format!("k{i}")).clone();
        let v: i64 = conn.query(&get, Duration::from_secs(2)).await.unwrap();
        assert_eq!(v, i);
    }
}

/// Opening never waits for Redis, and a call against a cluster whose every node is gone
/// fails within a bound: the client's own settings hold it there, not only the caller's
/// `tokio::time::timeout` (a bound check with a 5x margin, not a latency claim).
#[tokio::test]
async fn a_dead_cluster_answers_within_its_timeout() {
    let seeds: Vec<String> = (0..3)
        .map(|_| format!("redis://127.0.0.1:{}", testkit::free_port().unwrap()))
        .collect();
    let started = Instant::now();
    let conn = open(&Target::Cluster(seeds), TIMEOUT).unwrap();
    let RedisConn::Cluster(link) = conn.clone() else {
        panic!("a cluster target opens a cluster connection")
    };
    let mut raw = link.connection();
    let res: redis::RedisResult<()> = redis::cmd("PING").query_async(&mut raw).await;
    assert!(res.is_err());
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "the raw call took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = conn.ping(TIMEOUT).await.unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < TIMEOUT * 5);
}

/// The health check PINGs every master by address: it fails while a master is dead (a replica
/// answering for it does not count) and passes again once the replica has taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_fails_while_a_master_is_down_and_recovers_after_failover() {
    let mut cluster = testkit::RedisCluster::start(3, 1).unwrap();
    let conn = open(
        &Target::Cluster(cluster.seeds()),
        Duration::from_millis(300),
    )
    .unwrap();
    conn.ping(Duration::from_millis(300)).await.unwrap();
    let victim = cluster.master_ports()[0];
    cluster.kill(victim);
    assert!(conn.ping(Duration::from_millis(300)).await.is_err());
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_ok().unwrap();
        cluster
    })
    .await
    .unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(30), || async {
            conn.ping(Duration::from_millis(300)).await.is_ok()
        })
        .await
    );
    drop(cluster);
}

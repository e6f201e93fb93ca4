//! Through the real server: `/readyz` is 200 once started and while Redis answers, 503 naming
//! Redis while it is down, and `/healthz` stays 200 throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{config_for, TestExchange};
use mockdsp::MockDsp;
use testkit::eventually;
use testkit::redis::RedisServer;

#[tokio::test]
async fn ready_follows_redis() {
    let mut redis = RedisServer::start().unwrap();
    let dsp = MockDsp::builder("d").start().await.unwrap();
    let mut config = config_for(&[&dsp]);
    config.redis.url = Some(redis.url());
    let ex = TestExchange::start(config).await;

    let ready = ex.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({"ready": true}));

    redis.kill();
    let down = || async { ex.get("/readyz").await.status == 503 };
    assert!(eventually(Duration::from_secs(5), down).await);
    let answer = ex.get("/readyz").await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.json(),
        serde_json::json!({"ready": false, "not_ready": ["redis"]})
    );
    assert_eq!(ex.get("/healthz").await.status, 200, "still alive");

    redis.restart().unwrap();
    let up = || async { ex.get("/readyz").await.status == 200 };
    assert!(eventually(Duration::from_secs(5), up).await);
    ex.stop().await;
}

#[tokio::test]
async fn without_redis_ready_once_started() {
    let dsp = MockDsp::builder("d").start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&dsp])).await;
    let ready = ex.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({"ready": true}));
    let wrong = ex.post("/readyz", "").await;
    assert_eq!(wrong.status, 405);
    ex.stop().await;
}

//! Through the real server: with `[supply_chain]`, every DSP sees the exchange's node at the
//! end of `source.schain`, for corpus requests with a 2.6 chain, a 2.5 `source.ext` chain and
//! none; without it, the chain is forwarded as sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config_for, TestExchange};
use exchange::config::SupplyChainConfig;
use mockdsp::{MockDsp, MockDspHandle};
use serde_json::{json, Value};

const ASI: &str = "your-exchange.example";

fn corpus(name: &str) -> Value {
    let path = testkit::corpus::bundled()
        .join("thirdparty/valid_requests")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn send(ex: &TestExchange, dsp: &MockDspHandle, request: &Value) -> Value {
    dsp.clear();
    let answer = ex.auction(request.to_string()).await;
    assert!(
        answer.status == 200 || answer.status == 204,
        "{}",
        answer.status
    );
    let received = dsp.received_json();
    assert_eq!(received.len(), 1);
    received[0].clone()
}

fn ours(sid: &str, rid: &Value) -> Value {
    json!({"asi": ASI, "sid": sid, "rid": rid, "hp": 1})
}

#[tokio::test]
async fn the_exchange_appends_its_node_wherever_the_chain_is() {
    let dsp = MockDsp::builder("buyer").start().await.unwrap();
    let mut config = config_for(&[&dsp]);
    config.supply_chain = Some(SupplyChainConfig {
        asi: ASI.to_owned(),
    });
    let ex = TestExchange::start(config).await;

    // 2.6 `source.schain`: appended, `complete` kept. The site names no publisher, so the
    // node's sid is empty. COPPA scrubbing applies to the same body.
    let request = corpus("pbs_ex_multi-bids-different-ortb-versions.json");
    let got = send(&ex, &dsp, &request).await;
    let mut source = request["source"].clone();
    source["schain"]["nodes"]
        .as_array_mut()
        .unwrap()
        .push(ours("", &request["id"]));
    assert_eq!(got["source"], source);
    assert_eq!(
        got["source"]["schain"]["nodes"],
        json!([{"asi": "asi", "sid": "sid", "rid": "rid", "ext": {}}, ours("", &request["id"])])
    );
    assert_eq!(got["source"]["schain"]["complete"], 1);
    assert!(got["user"].get("id").is_none());

    // 2.5 `source.ext.schain` only: appended there, and the result copied to `source.schain`.
    let request = corpus("pbs_adapter_improvedigital__audio.json");
    let got = send(&ex, &dsp, &request).await;
    let chain = json!({"ver": "1.0", "complete": 1, "nodes": [
        {"asi": "example.com", "hp": 1, "sid": "1234abc"},
        ours("pubid", &request["id"]),
    ]});
    assert_eq!(
        got["source"],
        json!({"tid": request["source"]["tid"], "ext": {"schain": chain}, "schain": chain})
    );

    // No chain, no `source`: created, `complete` 0, the app's publisher as sid.
    let request = corpus("pbs_adapter_mediasquare__simple-video.json");
    assert!(request.get("source").is_none());
    let got = send(&ex, &dsp, &request).await;
    assert_eq!(
        got["source"],
        json!({"schain": {"complete": 0, "nodes": [ours("MEDIA_SQUARE", &request["id"])], "ver": "1.0"}})
    );

    // A `source` without a chain: the chain is added beside its members.
    let request = corpus("pbs_ex_multi-bid-default-bid-limit.json");
    let got = send(&ex, &dsp, &request).await;
    assert_eq!(
        got["source"],
        json!({"fd": 1, "tid": "tid",
               "schain": {"complete": 0, "nodes": [ours("5001", &request["id"])], "ver": "1.0"}})
    );
    ex.stop().await;
}

#[tokio::test]
async fn without_supply_chain_config_the_chain_is_forwarded_as_sent() {
    let dsp = MockDsp::builder("buyer").start().await.unwrap();
    let ex = TestExchange::start(config_for(&[&dsp])).await;
    for name in [
        "pbs_ex_multi-bids-different-ortb-versions.json",
        "pbs_adapter_improvedigital__audio.json",
        "pbs_adapter_mediasquare__simple-video.json",
    ] {
        let request = corpus(name);
        let got = send(&ex, &dsp, &request).await;
        assert_eq!(got.get("source"), request.get("source"), "{name}");
    }
    ex.stop().await;
}

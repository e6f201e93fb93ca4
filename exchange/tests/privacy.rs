//! Through the real server: what each mock DSP receives of the corpus requests that carry
//! privacy signals (COPPA, GDPR with TCF v2 consent, US Privacy, GPP), in the 2.6 and the 2.5
//! field locations, and the `exchange_scrubbed_total{dsp, rule}` counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config_for, TestExchange};
use mockdsp::{MockDsp, MockDspHandle};
use serde_json::{json, Value};

/// A published TCF v2 string: purposes 1, 2, 3 and vendors 2, 6, 8 consented.
const TCF_VENDORS_2_6_8: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";
/// The `iab_gpp` crate's US national v1 section opted out of sale and sharing.
const GPP_USNAT_OPTED_OUT: &str = "DBABLA~BVVVVVVVVWA";

fn corpus(name: &str) -> Value {
    let path = testkit::corpus::bundled()
        .join("thirdparty/valid_requests")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Three DSPs: "consenting" (GVL id 8, in the TCF string above), "other" (GVL id 9, not in
/// it) and "unlisted" (no GVL id).
async fn dsps() -> [MockDspHandle; 3] {
    let start = |name| async move { MockDsp::builder(name).start().await.unwrap() };
    [
        start("consenting").await,
        start("other").await,
        start("unlisted").await,
    ]
}

async fn exchange(dsps: &[MockDspHandle; 3]) -> TestExchange {
    let mut config = config_for(&[&dsps[0], &dsps[1], &dsps[2]]);
    config.dsps[0].gvl_id = Some(8);
    config.dsps[1].gvl_id = Some(9);
    TestExchange::start(config).await
}

/// Sends `request` and returns what each DSP received, the exchange-owned fields removed.
async fn send(ex: &TestExchange, dsps: &[MockDspHandle; 3], request: &Value) -> [Value; 3] {
    for d in dsps {
        d.clear();
    }
    let answer = ex.auction(request.to_string()).await;
    assert!(
        answer.status == 200 || answer.status == 204,
        "{}",
        answer.status
    );
    dsps.each_ref().map(|d| {
        let received = d.received_json();
        assert_eq!(received.len(), 1, "{} got {received:?}", d.name());
        // Scrubbed or not, each DSP gets its own remaining time.
        let tmax = received[0]["tmax"].as_u64().unwrap();
        assert!((1..=500).contains(&tmax), "{} got tmax {tmax}", d.name());
        without_owned(received[0].clone())
    })
}

fn without_owned(mut v: Value) -> Value {
    for owned in ["tmax", "at", "cur"] {
        v.as_object_mut().unwrap().remove(owned);
    }
    v
}

async fn scrubbed(ex: &TestExchange, dsp: &str, rule: &str) -> f64 {
    ex.metric("exchange_scrubbed_total", &[("dsp", dsp), ("rule", rule)])
        .await
}

#[tokio::test]
async fn coppa_strips_every_dsps_identifiers_in_both_locations() {
    let dsps = dsps().await;
    let ex = exchange(&dsps).await;

    // 2.6 location (`regs.coppa`): the device's ifa and its unreadable "ip" go, user.ext keeps
    // only the consent string.
    let request = corpus("pbs_adapter_huaweiads__banner1.json");
    assert_eq!(request["regs"], json!({"coppa": 1}));
    let got = send(&ex, &dsps, &request).await;
    let mut expected = without_owned(request.clone());
    let device = expected["device"].as_object_mut().unwrap();
    assert!(device.remove("ifa").is_some() && device.remove("ip").is_some());
    expected["user"]["ext"] = json!({"consent": request["user"]["ext"]["consent"]});
    for g in &got {
        assert_eq!(g, &expected);
    }

    // 2.5 location (`regs.ext.coppa`), IPv6: truncated to /56.
    let mut request = corpus("pbs_adapter_clydo__native-multiple-app.json");
    request["regs"]["ext"]["coppa"] = json!(1);
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(
            g["device"],
            json!({"lmt": 0, "ua": "test-ua", "ipv6": "5165:6c58:9bc0:bb00::", "h": 2082, "w": 1080})
        );
        assert_eq!(g["user"], json!({}));
        assert_eq!(g["app"], request["app"]);
        assert_eq!(g["regs"], request["regs"]);
    }

    // Geo: lat, lon and zip go; with them the user's ids, eids, and user.ext's other keys.
    let request = corpus("pbs_ex_multi-bids-different-ortb-versions.json");
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g["user"], json!({"geo": {}, "consent": "AAAA", "ext": {}}));
    }
    for dsp in ["consenting", "other", "unlisted"] {
        assert_eq!(scrubbed(&ex, dsp, "coppa").await, 3.0, "{dsp}");
        assert_eq!(scrubbed(&ex, dsp, "gdpr").await, 0.0, "{dsp}");
    }
    ex.stop().await;
}

#[tokio::test]
async fn gdpr_keeps_identifiers_only_for_a_consenting_vendor() {
    let dsps = dsps().await;
    let ex = exchange(&dsps).await;
    assert!(
        exchange::privacy::consent::Tcf::decode(TCF_VENDORS_2_6_8)
            .is_some_and(|t| t.allows(8) && !t.allows(9)),
        "the test string gives purpose 1 to vendor 8 and not to 9"
    );

    // 2.5 location (`regs.ext.gdpr`, `user.ext.consent`) with a TCF v1 string: not TCF v2,
    // so no DSP has consent. IPv4 to /24, lat/lon to two decimals, ids gone.
    let request = corpus("pbs_adapter_yieldlab__dsa.json");
    let got = send(&ex, &dsps, &request).await;
    let mut device = request["device"].clone();
    device.as_object_mut().unwrap().remove("ifa");
    device["ip"] = json!("169.254.13.0");
    device["geo"] = json!({"lat": 51.50, "lon": -0.13});
    for g in &got {
        assert_eq!(g["device"], device);
        assert_eq!(
            g["user"],
            json!({"ext": {"consent": request["user"]["ext"]["consent"]}})
        );
        assert_eq!(g["site"], request["site"]);
    }

    // The same location with a consent string giving vendor 8 consent: only "consenting"
    // gets the request as sent.
    let mut request = corpus("pbs_adapter_madvertise__simple-banner.json");
    request["user"]["ext"]["consent"] = json!(TCF_VENDORS_2_6_8);
    let got = send(&ex, &dsps, &request).await;
    assert_eq!(got[0], without_owned(request.clone()));
    let mut device = request["device"].clone();
    device.as_object_mut().unwrap().remove("ifa");
    device["ip"] = json!("123.123.123.0");
    for g in &got[1..] {
        assert_eq!(g["device"], device);
        assert_eq!(g["user"], request["user"]);
    }

    // 2.6 location (`regs.gdpr`, `user.consent`): a placeholder consent is no consent...
    let mut request = corpus("pbs_adapter_mediasquare__simple-video.json");
    request["device"]["ip"] = json!("92.154.6.77");
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g["device"]["ip"], "92.154.6.0");
    }
    // ...and a real one lets vendor 8 see the address.
    request["user"]["consent"] = json!(TCF_VENDORS_2_6_8);
    let got = send(&ex, &dsps, &request).await;
    assert_eq!(got[0], without_owned(request.clone()));
    assert_eq!(got[1]["device"]["ip"], "92.154.6.0");
    assert_eq!(got[2]["device"]["ip"], "92.154.6.0");

    assert_eq!(scrubbed(&ex, "consenting", "gdpr").await, 2.0);
    assert_eq!(scrubbed(&ex, "other", "gdpr").await, 4.0);
    assert_eq!(scrubbed(&ex, "unlisted", "gdpr").await, 4.0);

    // A test auction of the same request says in `ext.debug` what each DSP was allowed.
    request["test"] = json!(1);
    let answer = ex.auction(request.to_string()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["ext"]["debug"]["scrubbing"],
        json!({"schain_node": false, "dsps": [
            {"dsp": "consenting", "scrub": null, "rule": null},
            {"dsp": "other", "scrub": "restricted", "rule": "gdpr"},
            {"dsp": "unlisted", "scrub": "restricted", "rule": "gdpr"},
        ]})
    );
    ex.stop().await;
}

#[tokio::test]
async fn us_privacy_and_gpp_opt_outs_scrub_everyone() {
    let dsps = dsps().await;
    let ex = exchange(&dsps).await;

    // US Privacy "1-Y-": opted out of sale, in `regs.us_privacy` (2.6) and `regs.ext` (2.5).
    for name in [
        "pbs_ex_ccpa-featureflag-on.json",
        "pbs_ex_ccpa-featureflag-off.json",
    ] {
        let request = corpus(name);
        assert_eq!(request["user"], json!({"buyeruid": "some-buyer-id"}));
        let got = send(&ex, &dsps, &request).await;
        for g in &got {
            assert_eq!(g["user"], json!({}), "{name}");
        }
    }

    // "1YN-" is no opt-out: every DSP gets the request as sent.
    let request = corpus("pbs_adapter_clydo__native-multiple-app.json");
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g, &without_owned(request.clone()));
    }

    // GPP in the 2.6 location: section 6 (US Privacy "1NYN") opted out, from the corpus.
    let mut request = request;
    let conflict = corpus("pbs_sr_valid-whole__supplementary__gdpr-conflict.json");
    request["regs"] = json!({"gpp": conflict["regs"]["gpp"], "gpp_sid": [6]});
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g["device"]["ipv6"], "5165:6c58:9bc0:bb00::");
        assert!(g["device"].get("ifa").is_none());
        assert!(g["user"].get("id").is_none());
    }
    // GPP in the 2.5 location: US national opted out.
    request["regs"] = json!({"ext": {"gpp": GPP_USNAT_OPTED_OUT, "gpp_sid": [7]}});
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g["user"], json!({}));
    }
    // A GPP string that does not decode, with a US section listed: scrubbed.
    request["regs"] = json!({"gpp": "gppString", "gpp_sid": [7]});
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g["user"], json!({}));
    }
    // Listing only the TCF section: no US rule applies.
    request["regs"] = json!({"gpp": "gppString", "gpp_sid": [2]});
    let got = send(&ex, &dsps, &request).await;
    for g in &got {
        assert_eq!(g, &without_owned(request.clone()));
    }

    for dsp in ["consenting", "other", "unlisted"] {
        assert_eq!(scrubbed(&ex, dsp, "us_privacy").await, 2.0, "{dsp}");
        assert_eq!(scrubbed(&ex, dsp, "gpp").await, 3.0, "{dsp}");
    }
    ex.stop().await;
}

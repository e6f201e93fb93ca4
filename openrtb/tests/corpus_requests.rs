//! Runs the request side of the crate over the shared OpenRTB corpus: every valid request
//! parses and forwards losslessly, every invalid one is refused at the field its
//! `.reason.txt` names, and the placeholder examples do not panic.
//!
//! The corpus is the repository's `testdata/openrtb` (see its PROVENANCE.md), plus the folder
//! `OPENRTB_CORPUS` names when set: an added corpus with the same layout, held to the same
//! rules except the per-file expectations listed here for the bundled one.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use openrtb::forward::Outbound;
use openrtb::request::parse;
use serde_json::Value;

/// The request documents (not `.reason.txt` sidecars) in `sub` of every corpus.
fn documents(sub: &str) -> Vec<PathBuf> {
    testkit::corpus::files(sub, ".json")
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn valid_files() -> Vec<PathBuf> {
    let mut files = documents("iab/requests");
    files.extend(documents("thirdparty/valid_requests"));
    files
}

#[test]
fn every_valid_request_passes() {
    let mut failures = Vec::new();
    let files = valid_files();
    for path in &files {
        let body = std::fs::read(path).unwrap();
        if let Err(e) = parse(&body) {
            failures.push(format!(
                "{}: field {:?}: {}",
                name(path),
                e.field,
                e.message
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "valid requests refused:\n{}",
        failures.join("\n")
    );
    println!("{} valid requests accepted", files.len());
}

/// For each invalid request, the fields that point at a problem its `.reason.txt` lists.
/// Where a document has several problems, any of them is a right answer.
fn expected_fields(file: &str) -> &'static [&'static str] {
    let stem = file.strip_suffix(".json").unwrap_or(file);
    match stem {
        "pbs_adapter_conversant__test_params_negative_bidfloor" => &[
            "imp[2].video.mimes",
            "imp[3].video.mimes",
            "imp[3].bidfloor",
        ],
        "pbs_sr_invalid-native__asset-data-no-type" => {
            &["imp[0].native.request.assets[0].data.type"]
        }
        "pbs_sr_invalid-native__asset-empty" => &["imp[0].native.request.assets"],
        "pbs_sr_invalid-native__asset-img-h-negative" => &["imp[0].native.request.assets[0].img.h"],
        "pbs_sr_invalid-native__asset-img-w-negative" => &["imp[0].native.request.assets[0].img.w"],
        "pbs_sr_invalid-native__asset-mixed-type" => &["imp[0].native.request.assets[0]"],
        "pbs_sr_invalid-native__asset-title-empty" => {
            &["imp[0].native.request.assets[0].title.len"]
        }
        "pbs_sr_invalid-native__asset-video-no-maxduration" => {
            &["imp[0].native.request.assets[0].video.maxduration"]
        }
        "pbs_sr_invalid-native__asset-video-no-mimes" => {
            &["imp[0].native.request.assets[0].video.mimes"]
        }
        "pbs_sr_invalid-native__asset-video-no-minduration" => {
            &["imp[0].native.request.assets[0].video.minduration"]
        }
        "pbs_sr_invalid-native__asset-video-no-protocols" => {
            &["imp[0].native.request.assets[0].video.protocols"]
        }
        "pbs_sr_invalid-native__assets-with-dup-ids" => &["imp[0].native.request.assets[1].id"],
        "pbs_sr_invalid-native__empty-object" => &["imp[0].native.request.assets"],
        "pbs_sr_invalid-native__empty" => &["imp[0].native.request"],
        "pbs_sr_invalid-native__eventtracker-empty" => &[
            "imp[0].native.request.eventtrackers[0].event",
            "imp[0].native.request.eventtrackers[0].methods",
        ],
        "pbs_sr_invalid-stored__bad_incoming_imp.malformed_json" => &[""],
        "pbs_sr_invalid-whole__audio-maxbitrate-negative" => &["imp[0].audio.maxbitrate"],
        "pbs_sr_invalid-whole__audio-maxseq-negative" => &["imp[0].audio.maxseq"],
        "pbs_sr_invalid-whole__audio-mimes-empty" => &["imp[0].audio.mimes"],
        "pbs_sr_invalid-whole__audio-minbitrate-negative" => &["imp[0].audio.minbitrate"],
        "pbs_sr_invalid-whole__audio-sequence-negative" => &["imp[0].audio.sequence"],
        "pbs_sr_invalid-whole__banner-h-negative" => &["imp[0].banner.h"],
        "pbs_sr_invalid-whole__banner-w-negative" => &["imp[0].banner.w"],
        "pbs_sr_invalid-whole__deal-no-id" => &["imp[0].pmp.deals[0].id"],
        "pbs_sr_invalid-whole__device-geo-accuracy-negative" => &["device.geo.accuracy"],
        "pbs_sr_invalid-whole__device-h-negative" => &["device.h"],
        "pbs_sr_invalid-whole__device-ppi-negative" => &["device.ppi"],
        "pbs_sr_invalid-whole__device-w-negative" => &["device.w"],
        "pbs_sr_invalid-whole__empty-object" => &["id", "imp"],
        "pbs_sr_invalid-whole__format-h-negative" => &["imp[0].banner.format[0].h"],
        "pbs_sr_invalid-whole__format-hratio-negative" => &["imp[0].banner.format[0].hratio"],
        "pbs_sr_invalid-whole__format-w-negative" => &["imp[0].banner.format[0].w"],
        "pbs_sr_invalid-whole__format-wmin-negative" => &["imp[0].banner.format[0].wmin"],
        "pbs_sr_invalid-whole__format-wratio-negative" => &["imp[0].banner.format[0].wratio"],
        "pbs_sr_invalid-whole__imp-empty-array" => &["imp"],
        "pbs_sr_invalid-whole__imp-empty-object" => &["imp[0].id", "imp[0]"],
        "pbs_sr_invalid-whole__imp-id-duplicates" => &["imp[1].id"],
        "pbs_sr_invalid-whole__imp-no-type" => &["imp[0]"],
        "pbs_sr_invalid-whole__malformed-bid-request" => &[""],
        "pbs_sr_invalid-whole__metric-empty-object" => {
            &["imp[0]", "imp[0].metric[0].type", "imp[0].metric[0].value"]
        }
        "pbs_sr_invalid-whole__native-empty" => &["imp[0].native.request"],
        "pbs_sr_invalid-whole__null" => &[""],
        "pbs_sr_invalid-whole__only-request-id" => &["imp"],
        "pbs_sr_invalid-whole__regs-ext-malformed" => &["regs.ext"],
        "pbs_sr_invalid-whole__regs-gdpr-invalid" => &["regs.gdpr"],
        "pbs_sr_invalid-whole__site-app-both" => &["app", "site"],
        "pbs_sr_invalid-whole__site-dooh-both" => &["dooh", "site"],
        "pbs_sr_invalid-whole__tmax-negative" => &["imp", "tmax"],
        "pbs_sr_invalid-whole__user-geo-accuracy-negative" => &["user.geo.accuracy"],
        "pbs_sr_invalid-whole__video-empty" => &["imp[0].video.mimes"],
        "pbs_sr_invalid-whole__video-h-negative" => &["imp[0].video.h"],
        "pbs_sr_invalid-whole__video-maxbitrate-negative" => &["imp[0].video.maxbitrate"],
        "pbs_sr_invalid-whole__video-mimes-empty" => &["imp[0].video.mimes"],
        "pbs_sr_invalid-whole__video-minbitrate-negative" => &["imp[0].video.minbitrate"],
        "pbs_sr_invalid-whole__video-w-negative" => &["imp[0].video.w"],
        _ => &[],
    }
}

#[test]
fn every_invalid_request_fails_at_the_field_its_reason_names() {
    let mut problems = Vec::new();
    let files = documents("thirdparty/invalid_requests");
    for path in &files {
        let file = name(path);
        let reason = path.with_file_name(file.replace(".json", ".reason.txt"));
        assert!(reason.is_file(), "{file} has no .reason.txt sidecar");
        let expected = expected_fields(&file);
        let bundled = testkit::corpus::is_bundled(path);
        if expected.is_empty() && bundled {
            problems.push(format!(
                "{file}: no expected field listed in this test; add it"
            ));
            continue;
        }
        let body = std::fs::read(path).unwrap();
        match parse(&body) {
            Ok(_) => problems.push(format!("{file}: accepted")),
            Err(e) => {
                println!("{file}: field {:?}: {}", e.field, e.message);
                assert!(!e.message.is_empty(), "{file}: empty message");
                // An added corpus's files have no listed field: any refusal is right.
                if !expected.is_empty() && !expected.contains(&e.field.as_str()) {
                    problems.push(format!(
                        "{file}: refused at {:?} ({}), expected one of {expected:?}",
                        e.field, e.message
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "invalid requests mishandled:\n{}",
        problems.join("\n")
    );
}

#[test]
fn not_json_bodies_say_so() {
    let dir = testkit::corpus::bundled().join("thirdparty/invalid_requests");
    for file in [
        "pbs_sr_invalid-whole__malformed-bid-request.json",
        "pbs_sr_invalid-stored__bad_incoming_imp.malformed_json.json",
    ] {
        let e = parse(&std::fs::read(dir.join(file)).unwrap()).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{file}: {e}");
    }
    let e =
        parse(&std::fs::read(dir.join("pbs_sr_invalid-whole__null.json")).unwrap()).unwrap_err();
    assert_eq!(e.message, "body must be a JSON object");
}

#[test]
fn placeholders_do_not_panic() {
    for path in documents("placeholders") {
        let body = std::fs::read(&path).unwrap();
        let outcome = parse(&body);
        println!(
            "{}: {:?}",
            name(&path),
            outcome.as_ref().map(|r| r.id.to_string())
        );
        if let Ok(req) = outcome {
            let mut out = Vec::new();
            Outbound::new(&body, &req, 2, "USD").render(100, &mut out);
            serde_json::from_slice::<Value>(&out).unwrap();
        }
    }
}

/// Sets the exchange-owned fields the way `forward` should.
fn expected_forward(mut original: Value, tmax: u32, at: u8, cur: &str) -> Value {
    let object = original.as_object_mut().unwrap();
    object.insert("tmax".into(), tmax.into());
    object.insert("at".into(), at.into());
    object.insert("cur".into(), Value::Array(vec![cur.into()]));
    original
}

#[test]
fn forwarding_changes_only_tmax_at_and_cur() {
    for path in valid_files() {
        let body = std::fs::read(&path).unwrap();
        let req = parse(&body).unwrap();
        let outbound = Outbound::new(&body, &req, 2, "EUR");
        let original: Value = serde_json::from_slice(&body).unwrap();
        for tmax in [1, 250] {
            let mut out = Vec::new();
            outbound.render(tmax, &mut out);
            assert!(out.len() <= outbound.len_hint(), "{}", name(&path));
            let forwarded: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{}: forwarded body is not JSON: {e}", name(&path)));
            assert_eq!(
                forwarded,
                expected_forward(original.clone(), tmax, 2, "EUR"),
                "{}",
                name(&path)
            );
            // The bytes outside the rewritten values are the publisher's: the forwarded
            // body, with the three values put back, is the original.
            let reparsed = parse(&out).unwrap();
            let mut restored = Vec::with_capacity(body.len());
            Outbound::new(&out, &reparsed, 0, "").render(0, &mut restored);
            let mut again = Vec::new();
            Outbound::new(&body, &req, 0, "").render(0, &mut again);
            assert_eq!(restored, again, "{}", name(&path));
        }
    }
}

#[test]
fn requests_paired_with_bid_responses_do_not_panic() {
    for path in documents("thirdparty/bid_responses/paired_requests") {
        let body = std::fs::read(&path).unwrap();
        if let Ok(req) = parse(&body) {
            let mut out = Vec::new();
            Outbound::new(&body, &req, 1, "USD").render(50, &mut out);
            serde_json::from_slice::<Value>(&out).unwrap();
        }
    }
}

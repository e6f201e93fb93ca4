//! Semantic checks on a parsed bid request: what OpenRTB 2.6 requires and serde cannot see.
//!
//! Parsing already refused wrong JSON types and non-object `ext`s. This walks the request in
//! document order and returns the first problem with the path of the field at fault. It is
//! deliberately lenient about anything the spec does not require (deprecated fields, unknown
//! fields, out-of-enum codes), since refusing those loses real traffic for no gain.
//! Field paths are only formatted on failure, so a valid request costs no allocation here
//! beyond parsing its native payloads.

use std::collections::HashSet;

use crate::native;
use crate::request::{Audio, Banner, BidRequest, Geo, Imp, Video};
use crate::InvalidRequest;

/// Returns the first problem found in `req`, if any.
pub fn validate(req: &BidRequest<'_>) -> Result<(), InvalidRequest> {
    if req.id.is_empty() {
        return Err(InvalidRequest::new("id", "is required"));
    }
    if req.imp.is_empty() {
        return Err(InvalidRequest::new(
            "imp",
            "must contain at least one impression",
        ));
    }
    let inventories = [req.site.is_some(), req.app.is_some(), req.dooh.is_some()];
    if inventories.iter().filter(|present| **present).count() > 1 {
        let field = if req.site.is_some() && req.app.is_some() {
            "app"
        } else {
            "dooh"
        };
        return Err(InvalidRequest::new(
            field,
            "a request must not contain more than one of site, app and dooh",
        ));
    }
    if let Some(tmax) = req.tmax() {
        if tmax <= 0 {
            return Err(InvalidRequest::new(
                "tmax",
                format!("must be positive, got {tmax}"),
            ));
        }
    }
    for (i, imp) in req.imp.iter().enumerate() {
        check_imp(i, imp)?;
    }
    check_unique_imp_ids(req)?;
    if let Some(device) = &req.device {
        non_negative("device.w", device.w)?;
        non_negative("device.h", device.h)?;
        non_negative("device.ppi", device.ppi)?;
        if let Some(geo) = &device.geo {
            check_geo("device.geo", geo)?;
        }
    }
    if let Some(geo) = req.user.as_ref().and_then(|u| u.geo.as_ref()) {
        check_geo("user.geo", geo)?;
    }
    if let Some(regs) = &req.regs {
        zero_or_one("regs.gdpr", regs.gdpr)?;
        if let Some(ext) = &regs.ext {
            zero_or_one("regs.ext.gdpr", ext.gdpr)?;
        }
    }
    Ok(())
}

fn check_imp(i: usize, imp: &Imp<'_>) -> Result<(), InvalidRequest> {
    let at = |rest: &str| format!("imp[{i}]{rest}");
    if imp.id.is_empty() {
        return Err(InvalidRequest::new(at(".id"), "is required"));
    }
    if imp.banner.is_none() && imp.video.is_none() && imp.audio.is_none() && imp.native.is_none() {
        return Err(InvalidRequest::new(
            at(""),
            "must contain at least one of banner, video, audio or native",
        ));
    }
    let floor = imp.bidfloor();
    if floor < 0.0 {
        return Err(InvalidRequest::new(
            at(".bidfloor"),
            format!("must not be negative, got {floor}"),
        ));
    }
    for (m, metric) in imp.metric.iter().enumerate() {
        if metric.kind.as_deref().is_none_or(str::is_empty) {
            return Err(InvalidRequest::new(
                at(&format!(".metric[{m}].type")),
                "is required",
            ));
        }
        if metric.value.is_none() {
            return Err(InvalidRequest::new(
                at(&format!(".metric[{m}].value")),
                "is required",
            ));
        }
    }
    if let Some(banner) = &imp.banner {
        check_banner(i, banner)?;
    }
    if let Some(video) = &imp.video {
        check_video(i, video)?;
    }
    if let Some(audio) = &imp.audio {
        check_audio(i, audio)?;
    }
    if let Some(n) = &imp.native {
        if n.request.is_empty() {
            return Err(InvalidRequest::new(at(".native.request"), "is required"));
        }
        native::check(&n.request).map_err(|e| {
            let field = if e.field.is_empty() {
                at(".native.request")
            } else {
                at(&format!(".native.request.{}", e.field))
            };
            InvalidRequest::new(field, e.message)
        })?;
    }
    if let Some(pmp) = &imp.pmp {
        for (d, deal) in pmp.deals.iter().enumerate() {
            if deal.id.is_empty() {
                return Err(InvalidRequest::new(
                    at(&format!(".pmp.deals[{d}].id")),
                    "is required",
                ));
            }
            if let Some(floor) = deal.bidfloor.filter(|f| *f < 0.0) {
                return Err(InvalidRequest::new(
                    at(&format!(".pmp.deals[{d}].bidfloor")),
                    format!("must not be negative, got {floor}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_banner(i: usize, banner: &Banner<'_>) -> Result<(), InvalidRequest> {
    let field = |name: &str| format!("imp[{i}].banner.{name}");
    for (name, value) in [("w", banner.w), ("h", banner.h)] {
        non_negative_with(value, || field(name))?;
    }
    for (f, format) in banner.format.iter().enumerate() {
        for (name, value) in [
            ("w", format.w),
            ("h", format.h),
            ("wratio", format.wratio),
            ("hratio", format.hratio),
            ("wmin", format.wmin),
        ] {
            non_negative_with(value, || field(&format!("format[{f}].{name}")))?;
        }
    }
    Ok(())
}

fn check_video(i: usize, video: &Video<'_>) -> Result<(), InvalidRequest> {
    let field = |name: &str| format!("imp[{i}].video.{name}");
    if video.mimes.is_empty() {
        return Err(InvalidRequest::new(
            field("mimes"),
            "must list at least one MIME type",
        ));
    }
    for (name, value) in [
        ("w", video.w),
        ("h", video.h),
        ("minduration", video.minduration),
        ("maxduration", video.maxduration),
        ("minbitrate", video.minbitrate),
        ("maxbitrate", video.maxbitrate),
        ("sequence", video.sequence),
        ("maxseq", video.maxseq),
        ("poddur", video.poddur),
    ] {
        non_negative_with(value, || field(name))?;
    }
    Ok(())
}

fn check_audio(i: usize, audio: &Audio<'_>) -> Result<(), InvalidRequest> {
    let field = |name: &str| format!("imp[{i}].audio.{name}");
    if audio.mimes.is_empty() {
        return Err(InvalidRequest::new(
            field("mimes"),
            "must list at least one MIME type",
        ));
    }
    for (name, value) in [
        ("minduration", audio.minduration),
        ("maxduration", audio.maxduration),
        ("minbitrate", audio.minbitrate),
        ("maxbitrate", audio.maxbitrate),
        ("sequence", audio.sequence),
        ("maxseq", audio.maxseq),
        ("poddur", audio.poddur),
    ] {
        non_negative_with(value, || field(name))?;
    }
    Ok(())
}

fn check_geo(prefix: &str, geo: &Geo<'_>) -> Result<(), InvalidRequest> {
    non_negative_with(geo.accuracy, || format!("{prefix}.accuracy"))
}

/// Imp ids must be unique. A linear scan beats hashing for the usual handful of imps; a
/// hash set keeps a request with thousands of imps from costing quadratic time.
fn check_unique_imp_ids(req: &BidRequest<'_>) -> Result<(), InvalidRequest> {
    const LINEAR_MAX: usize = 16;
    let duplicate = |first: usize, second: usize| {
        InvalidRequest::new(
            format!("imp[{second}].id"),
            format!(
                "duplicates imp[{first}].id {:?}; imp ids must be unique",
                req.imp[second].id
            ),
        )
    };
    if req.imp.len() <= LINEAR_MAX {
        for (j, imp) in req.imp.iter().enumerate() {
            if let Some(i) = req.imp[..j].iter().position(|prev| prev.id == imp.id) {
                return Err(duplicate(i, j));
            }
        }
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(req.imp.len());
    for (j, imp) in req.imp.iter().enumerate() {
        if !seen.insert(&*imp.id) {
            let i = req.imp[..j]
                .iter()
                .position(|prev| prev.id == imp.id)
                .unwrap_or(0);
            return Err(duplicate(i, j));
        }
    }
    Ok(())
}

fn non_negative(field: &str, value: Option<i64>) -> Result<(), InvalidRequest> {
    non_negative_with(value, || field.to_owned())
}

fn non_negative_with(
    value: Option<i64>,
    field: impl FnOnce() -> String,
) -> Result<(), InvalidRequest> {
    match value {
        Some(v) if v < 0 => Err(InvalidRequest::new(
            field(),
            format!("must not be negative, got {v}"),
        )),
        _ => Ok(()),
    }
}

fn zero_or_one(field: &str, value: Option<i64>) -> Result<(), InvalidRequest> {
    match value {
        Some(v) if v != 0 && v != 1 => Err(InvalidRequest::new(
            field,
            format!("must be 0 or 1, got {v}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::request::parse;
    use crate::InvalidRequest;

    fn err(body: &str) -> InvalidRequest {
        parse(body.as_bytes()).expect_err(body)
    }

    /// Builds a one-imp request around an imp body and optional top-level members.
    fn with_imp(imp: &str, top: &str) -> String {
        let sep = if top.is_empty() { "" } else { "," };
        format!(r#"{{"id":"r","imp":[{{"id":"1",{imp}}}]{sep}{top}}}"#)
    }

    #[test]
    fn accepts_a_minimal_request_of_each_media_type() {
        for imp in [
            r#""banner":{}"#,
            r#""video":{"mimes":["video/mp4"]}"#,
            r#""audio":{"mimes":["audio/mp4"]}"#,
            r#""native":{"request":"{\"assets\":[{\"id\":1,\"title\":{\"len\":20}}]}"}"#,
        ] {
            let body = with_imp(imp, "");
            parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn reports_the_first_problem_with_its_path() {
        let cases: &[(String, &str)] = &[
            (r#"{"imp":[{"id":"1","banner":{}}]}"#.into(), "id"),
            (r#"{"id":"","imp":[{"id":"1","banner":{}}]}"#.into(), "id"),
            (r#"{"id":"r"}"#.into(), "imp"),
            (r#"{"id":"r","imp":[]}"#.into(), "imp"),
            (r#"{"id":"r","imp":[{"banner":{}}]}"#.into(), "imp[0].id"),
            (r#"{"id":"r","imp":[{"id":"a","banner":{}},{"id":"b","banner":{}},{"id":"a","banner":{}}]}"#.into(), "imp[2].id"),
            (with_imp(r#""tagid":"x""#, ""), "imp[0]"),
            (with_imp(r#""banner":{}"#, r#""site":{},"app":{}"#), "app"),
            (with_imp(r#""banner":{}"#, r#""site":{},"dooh":{}"#), "dooh"),
            (with_imp(r#""banner":{}"#, r#""app":{},"dooh":{}"#), "dooh"),
            (with_imp(r#""banner":{}"#, r#""tmax":0"#), "tmax"),
            (with_imp(r#""banner":{}"#, r#""tmax":-2"#), "tmax"),
            (with_imp(r#""banner":{},"bidfloor":-0.5"#, ""), "imp[0].bidfloor"),
            (with_imp(r#""banner":{},"metric":[{"value":0.5}]"#, ""), "imp[0].metric[0].type"),
            (with_imp(r#""banner":{},"metric":[{"type":"viewability"}]"#, ""), "imp[0].metric[0].value"),
            (with_imp(r#""banner":{"w":-1}"#, ""), "imp[0].banner.w"),
            (with_imp(r#""banner":{"h":-1}"#, ""), "imp[0].banner.h"),
            (with_imp(r#""banner":{"format":[{"w":1,"h":1},{"wmin":-1}]}"#, ""), "imp[0].banner.format[1].wmin"),
            (with_imp(r#""banner":{"format":[{"wratio":-1}]}"#, ""), "imp[0].banner.format[0].wratio"),
            (with_imp(r#""banner":{"format":[{"hratio":-1}]}"#, ""), "imp[0].banner.format[0].hratio"),
            (with_imp(r#""video":{}"#, ""), "imp[0].video.mimes"),
            (with_imp(r#""video":{"mimes":[]}"#, ""), "imp[0].video.mimes"),
            (with_imp(r#""video":{"mimes":["v"],"maxbitrate":-1}"#, ""), "imp[0].video.maxbitrate"),
            (with_imp(r#""video":{"mimes":["v"],"minduration":-1}"#, ""), "imp[0].video.minduration"),
            (with_imp(r#""video":{"mimes":["v"],"maxseq":-1}"#, ""), "imp[0].video.maxseq"),
            (with_imp(r#""audio":{"mimes":null}"#, ""), "imp[0].audio.mimes"),
            (with_imp(r#""audio":{"mimes":["a"],"sequence":-1}"#, ""), "imp[0].audio.sequence"),
            (with_imp(r#""native":{}"#, ""), "imp[0].native.request"),
            (with_imp(r#""native":{"request":"not json"}"#, ""), "imp[0].native.request"),
            (with_imp(r#""native":{"request":"{\"assets\":[]}"}"#, ""), "imp[0].native.request.assets"),
            (with_imp(r#""banner":{},"pmp":{"deals":[{"id":""}]}"#, ""), "imp[0].pmp.deals[0].id"),
            (with_imp(r#""banner":{},"pmp":{"deals":[{"id":"d","bidfloor":-1}]}"#, ""), "imp[0].pmp.deals[0].bidfloor"),
            (with_imp(r#""banner":{}"#, r#""device":{"w":-1}"#), "device.w"),
            (with_imp(r#""banner":{}"#, r#""device":{"ppi":-1}"#), "device.ppi"),
            (with_imp(r#""banner":{}"#, r#""device":{"geo":{"accuracy":-1}}"#), "device.geo.accuracy"),
            (with_imp(r#""banner":{}"#, r#""user":{"geo":{"accuracy":-5}}"#), "user.geo.accuracy"),
            (with_imp(r#""banner":{}"#, r#""regs":{"gdpr":2}"#), "regs.gdpr"),
            (with_imp(r#""banner":{}"#, r#""regs":{"ext":{"gdpr":-1}}"#), "regs.ext.gdpr"),
        ];
        for (body, field) in cases {
            let e = err(body);
            assert_eq!(e.field, *field, "{body}: {e}");
        }
    }

    #[test]
    fn duplicate_imp_ids_are_found_among_many_imps() {
        let mut imps: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"id":"{i}","banner":{{}}}}"#))
            .collect();
        let body = format!(r#"{{"id":"r","imp":[{}]}}"#, imps.join(","));
        parse(body.as_bytes()).unwrap();
        imps.push(r#"{"id":"7","banner":{}}"#.into());
        let e = err(&format!(r#"{{"id":"r","imp":[{}]}}"#, imps.join(",")));
        assert_eq!(e.field, "imp[40].id");
        assert!(e.message.contains("imp[7].id"), "{e}");
    }

    #[test]
    fn stays_lenient_on_what_the_spec_does_not_require() {
        let body = with_imp(
            r#""video":{"mimes":["video/mp4"],"apis":[1],"protocols":[0],"format":[{"w":1}]},"bidfloor":0"#,
            r#""tmax":1,"regs":{"gdpr":0,"coppa":7,"ext":{"gdpr":1,"dsa":{}}},"at":9999,"cur":[]"#,
        );
        parse(body.as_bytes()).unwrap();
    }
}

//! Native Ads 1.2 request payloads: the JSON document carried as a string in
//! `imp[].native.request`, parsed once into borrowed types and checked.
//!
//! Both shapes seen in the wild are accepted: the bare object (1.2) and the 1.0/1.1 wrapper
//! `{"native": {...}}`. Field paths in errors are relative to the payload (`assets[1].img.w`,
//! or `native.assets[1].img.w` inside a wrapper); the bid request validator prefixes them.
//! Like the bid request model, only the fields checked or used are typed.

use std::collections::HashSet;

use serde::Deserialize;

use crate::de::{self, List, RawObject, Str, Strs};
use crate::request::tracked_error;
use crate::InvalidRequest;

/// The Native Markup Request object (Native 1.2 §4.1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct NativeRequest<'a> {
    pub ver: Option<Str<'a>>,
    pub context: Option<i32>,
    pub contextsubtype: Option<i32>,
    pub plcmttype: Option<i32>,
    pub plcmtcnt: Option<i32>,
    pub seq: Option<i32>,
    pub assets: List<Asset<'a>>,
    pub aurlsupport: Option<i32>,
    pub durlsupport: Option<i32>,
    pub eventtrackers: List<EventTracker<'a>>,
    pub privacy: Option<i32>,
    pub ext: Option<RawObject<'a>>,
    /// True when the payload was the 1.0/1.1 wrapper `{"native": {...}}`; the fields
    /// above are then the wrapped object's.
    #[serde(skip)]
    pub wrapped: bool,
    /// The wrapped object while parsing; [`parse`] moves it out.
    native: Option<Box<NativeRequest<'a>>>,
}

/// §4.2: exactly one of `title`, `img`, `video`, `data` should be set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Asset<'a> {
    pub id: Option<i64>,
    pub required: Option<i32>,
    pub title: Option<Title<'a>>,
    pub img: Option<Image<'a>>,
    pub video: Option<NativeVideo<'a>>,
    pub data: Option<Data<'a>>,
    pub ext: Option<RawObject<'a>>,
}

/// §4.3.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Title<'a> {
    /// Required.
    pub len: Option<i64>,
    pub ext: Option<RawObject<'a>>,
}

/// §4.4.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Image<'a> {
    #[serde(rename = "type")]
    pub kind: Option<i32>,
    pub w: Option<i64>,
    pub wmin: Option<i64>,
    pub h: Option<i64>,
    pub hmin: Option<i64>,
    pub mimes: Strs<'a>,
    pub ext: Option<RawObject<'a>>,
}

/// §4.5: the VAST-carrying video asset.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct NativeVideo<'a> {
    /// Required, non-empty.
    pub mimes: Strs<'a>,
    /// Required.
    pub minduration: Option<i64>,
    /// Required.
    pub maxduration: Option<i64>,
    /// Required, non-empty.
    pub protocols: List<i32>,
    pub ext: Option<RawObject<'a>>,
}

/// §4.6.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct Data<'a> {
    /// Required.
    #[serde(rename = "type")]
    pub kind: Option<i32>,
    pub len: Option<i64>,
    pub ext: Option<RawObject<'a>>,
}

/// §4.7.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(remote = "Self", bound(deserialize = "'de: 'a"))]
pub struct EventTracker<'a> {
    /// Required.
    pub event: Option<i32>,
    /// Required, non-empty.
    pub methods: List<i32>,
    pub ext: Option<RawObject<'a>>,
}

de::objects_only!(
    NativeRequest,
    Asset,
    Title,
    Image,
    NativeVideo,
    Data,
    EventTracker,
);

/// Parses a payload (the unescaped `imp[].native.request` string), unwrapping
/// `{"native": {...}}`. Refuses text that is not a JSON object or has wrong field types.
pub fn parse(payload: &str) -> Result<NativeRequest<'_>, InvalidRequest> {
    let first = payload
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    match first {
        None => return Err(InvalidRequest::new("", "is empty")),
        Some(b'{') => {}
        Some(_) => {
            return Err(
                match serde_json::from_str::<serde::de::IgnoredAny>(payload) {
                    Ok(_) => InvalidRequest::new("", "must be a JSON object"),
                    Err(e) => not_json(&e),
                },
            )
        }
    }
    let mut req = match serde_json::from_str::<NativeRequest<'_>>(payload) {
        Ok(req) => req,
        Err(e) => return Err(explain(payload, e)),
    };
    Ok(match req.native.take() {
        Some(inner) => NativeRequest {
            wrapped: true,
            native: None,
            ..*inner
        },
        None => req,
    })
}

/// Parses and validates a payload.
pub fn check(payload: &str) -> Result<NativeRequest<'_>, InvalidRequest> {
    let req = parse(payload)?;
    validate(&req)?;
    Ok(req)
}

fn not_json(e: &serde_json::Error) -> InvalidRequest {
    InvalidRequest::new("", format!("is not valid JSON: {e}"))
}

fn explain(payload: &str, fast: serde_json::Error) -> InvalidRequest {
    use serde_json::error::Category;
    if matches!(
        fast.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return not_json(&fast);
    }
    let mut de = serde_json::Deserializer::from_str(payload);
    match serde_path_to_error::deserialize::<_, NativeRequest<'_>>(&mut de) {
        Err(e) => tracked_error(&e),
        Ok(_) => InvalidRequest::new("", fast.to_string()),
    }
}

/// Returns the first problem in a parsed payload.
pub fn validate(req: &NativeRequest<'_>) -> Result<(), InvalidRequest> {
    let base = if req.wrapped { "native." } else { "" };
    if req.assets.is_empty() {
        return Err(InvalidRequest::new(
            format!("{base}assets"),
            "must contain at least one asset",
        ));
    }
    // Native 1.2 makes `id` required, yet publishers (and Prebid, which numbers them
    // itself) commonly omit every id. An id-less payload stays acceptable; once ids are
    // used, every asset needs one so that the DSP's answer can be matched up.
    let ids_used = req.assets.iter().any(|a| a.id.is_some());
    for (k, asset) in req.assets.iter().enumerate() {
        let at = |rest: &str| format!("{base}assets[{k}]{rest}");
        check_asset(asset).map_err(|(rest, message)| InvalidRequest::new(at(rest), message))?;
        if ids_used && asset.id.is_none() {
            return Err(InvalidRequest::new(
                at(".id"),
                "is required when other assets carry ids",
            ));
        }
    }
    if ids_used {
        if let Some((first, second)) = duplicate_id(&req.assets) {
            return Err(InvalidRequest::new(
                format!("{base}assets[{second}].id"),
                format!("duplicates assets[{first}].id; asset ids must be unique"),
            ));
        }
    }
    for (k, tracker) in req.eventtrackers.iter().enumerate() {
        if tracker.event.is_none() {
            return Err(InvalidRequest::new(
                format!("{base}eventtrackers[{k}].event"),
                "is required",
            ));
        }
        if tracker.methods.is_empty() {
            return Err(InvalidRequest::new(
                format!("{base}eventtrackers[{k}].methods"),
                "must list at least one method",
            ));
        }
    }
    Ok(())
}

/// One asset's own problems, as (path below the asset, message).
fn check_asset(asset: &Asset<'_>) -> Result<(), (&'static str, String)> {
    let kinds = [
        asset.title.is_some(),
        asset.img.is_some(),
        asset.video.is_some(),
        asset.data.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => return Err(("", "must contain one of title, img, video or data".into())),
        1 => {}
        _ => {
            return Err((
                "",
                "must contain only one of title, img, video or data".into(),
            ))
        }
    }
    if let Some(title) = &asset.title {
        match title.len {
            None => return Err((".title.len", "is required".into())),
            Some(len) if len <= 0 => {
                return Err((".title.len", format!("must be positive, got {len}")))
            }
            Some(_) => {}
        }
    }
    if let Some(img) = &asset.img {
        for (field, value) in [
            (".img.w", img.w),
            (".img.h", img.h),
            (".img.wmin", img.wmin),
            (".img.hmin", img.hmin),
        ] {
            non_negative(field, value)?;
        }
    }
    if let Some(video) = &asset.video {
        if video.mimes.is_empty() {
            return Err((".video.mimes", "must list at least one MIME type".into()));
        }
        if video.minduration.is_none() {
            return Err((".video.minduration", "is required".into()));
        }
        if video.maxduration.is_none() {
            return Err((".video.maxduration", "is required".into()));
        }
        if video.protocols.is_empty() {
            return Err((".video.protocols", "must list at least one protocol".into()));
        }
        non_negative(".video.minduration", video.minduration)?;
        non_negative(".video.maxduration", video.maxduration)?;
    }
    if let Some(data) = &asset.data {
        if data.kind.is_none() {
            return Err((".data.type", "is required".into()));
        }
        non_negative(".data.len", data.len)?;
    }
    Ok(())
}

fn non_negative(field: &'static str, value: Option<i64>) -> Result<(), (&'static str, String)> {
    match value {
        Some(v) if v < 0 => Err((field, format!("must not be negative, got {v}"))),
        _ => Ok(()),
    }
}

/// The first pair of assets sharing an id, as (earlier index, later index).
fn duplicate_id(assets: &[Asset<'_>]) -> Option<(usize, usize)> {
    const LINEAR_MAX: usize = 16;
    let earlier = |j: usize| assets[..j].iter().position(|a| a.id == assets[j].id);
    if assets.len() <= LINEAR_MAX {
        return (0..assets.len()).find_map(|j| earlier(j).map(|i| (i, j)));
    }
    let mut seen = HashSet::with_capacity(assets.len());
    let j = assets.iter().position(|a| !seen.insert(a.id))?;
    earlier(j).map(|i| (i, j))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn err(payload: &str) -> InvalidRequest {
        check(payload).expect_err(payload)
    }

    #[test]
    fn parses_a_12_payload() {
        let payload = r#"{"ver":"1.2","context":1,"plcmttype":1,"assets":[
            {"id":1,"required":1,"title":{"len":90}},
            {"id":2,"img":{"type":3,"wmin":300,"hmin":250,"mimes":["image/png"]}},
            {"id":3,"video":{"mimes":["video/mp4"],"minduration":5,"maxduration":30,"protocols":[2,3]}},
            {"id":4,"data":{"type":2,"len":140},"ext":{"x":1}}],
            "eventtrackers":[{"event":1,"methods":[1,2]}],"privacy":1,"unknown":[1]}"#;
        let req = check(payload).unwrap();
        assert!(!req.wrapped);
        assert_eq!(req.ver.as_deref(), Some("1.2"));
        assert_eq!(req.assets.len(), 4);
        assert_eq!(req.assets[0].title.as_ref().unwrap().len, Some(90));
        assert_eq!(*req.assets[1].img.as_ref().unwrap().mimes, ["image/png"]);
        assert!(matches!(
            req.assets[1].img.as_ref().unwrap().mimes[0],
            Cow::Borrowed(_)
        ));
        assert_eq!(*req.assets[2].video.as_ref().unwrap().protocols, [2, 3]);
        assert_eq!(req.assets[3].data.as_ref().unwrap().kind, Some(2));
        assert_eq!(*req.eventtrackers[0].methods, [1, 2]);
    }

    #[test]
    fn unwraps_the_10_envelope_and_paths_include_it() {
        let req =
            check(r#"{"native":{"ver":"1.0","assets":[{"id":0,"title":{"len":25}}]}}"#).unwrap();
        assert!(req.wrapped);
        assert_eq!(req.ver.as_deref(), Some("1.0"));
        assert_eq!(req.assets[0].id, Some(0));
        let e = err(r#"{"native":{"assets":[{"id":0,"img":{"w":-1}}]}}"#);
        assert_eq!(e.field, "native.assets[0].img.w");
        let e = err(r#"{"native":{"assets":[]}}"#);
        assert_eq!(e.field, "native.assets");
        let e = err(r#"{"native":{"assets":[{"title":{"len":"x"}}]}}"#);
        assert_eq!(e.field, "native.assets[0].title.len");
    }

    #[test]
    fn accepts_assets_without_any_ids() {
        check(r#"{"assets":[{"img":{"wmin":30}},{"title":{"len":20}}]}"#).unwrap();
    }

    #[test]
    fn reports_the_first_problem_with_its_path() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("not json", ""),
            ("[]", ""),
            ("\"x\"", ""),
            ("{}", "assets"),
            (r#"{"assets":[]}"#, "assets"),
            (r#"{"assets":null}"#, "assets"),
            (r#"{"assets":{}}"#, "assets"),
            (r#"{"assets":[{}]}"#, "assets[0]"),
            (r#"{"assets":[{"title":{"len":1},"img":{}}]}"#, "assets[0]"),
            (r#"{"assets":[{"title":{}}]}"#, "assets[0].title.len"),
            (r#"{"assets":[{"title":{"len":0}}]}"#, "assets[0].title.len"),
            (
                r#"{"assets":[{"title":{"len":1}},{"img":{"h":-30}}]}"#,
                "assets[1].img.h",
            ),
            (r#"{"assets":[{"img":{"w":-20}}]}"#, "assets[0].img.w"),
            (r#"{"assets":[{"img":{"wmin":-1}}]}"#, "assets[0].img.wmin"),
            (r#"{"assets":[{"img":{"hmin":-1}}]}"#, "assets[0].img.hmin"),
            (
                r#"{"assets":[{"video":{"minduration":1,"maxduration":2,"protocols":[3]}}]}"#,
                "assets[0].video.mimes",
            ),
            (
                r#"{"assets":[{"video":{"mimes":["v"],"maxduration":2,"protocols":[3]}}]}"#,
                "assets[0].video.minduration",
            ),
            (
                r#"{"assets":[{"video":{"mimes":["v"],"minduration":1,"protocols":[3]}}]}"#,
                "assets[0].video.maxduration",
            ),
            (
                r#"{"assets":[{"video":{"mimes":["v"],"minduration":1,"maxduration":2}}]}"#,
                "assets[0].video.protocols",
            ),
            (
                r#"{"assets":[{"video":{"mimes":["v"],"minduration":-1,"maxduration":2,"protocols":[1]}}]}"#,
                "assets[0].video.minduration",
            ),
            (r#"{"assets":[{"data":{}}]}"#, "assets[0].data.type"),
            (
                r#"{"assets":[{"data":{"type":1,"len":-1}}]}"#,
                "assets[0].data.len",
            ),
            (
                r#"{"assets":[{"id":1,"img":{}},{"id":1,"title":{"len":2}}]}"#,
                "assets[1].id",
            ),
            (
                r#"{"assets":[{"id":1,"img":{}},{"title":{"len":2}}]}"#,
                "assets[1].id",
            ),
            (
                r#"{"assets":[{"data":{"type":1}}],"eventtrackers":[{}]}"#,
                "eventtrackers[0].event",
            ),
            (
                r#"{"assets":[{"data":{"type":1}}],"eventtrackers":[{"event":1}]}"#,
                "eventtrackers[0].methods",
            ),
            (
                r#"{"assets":[{"data":{"type":1}}],"eventtrackers":[{"event":1,"methods":[]}]}"#,
                "eventtrackers[0].methods",
            ),
            (
                r#"{"assets":[{"data":{"type":"x"}}]}"#,
                "assets[0].data.type",
            ),
            (r#"{"assets":[{"data":{"type":1}}],"ext":"x"}"#, "ext"),
        ];
        for (payload, field) in cases {
            let e = err(payload);
            assert_eq!(e.field, field, "{payload}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn duplicate_ids_are_found_among_many_assets() {
        let mut assets: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"id":{i},"data":{{"type":1}}}}"#))
            .collect();
        check(&format!(r#"{{"assets":[{}]}}"#, assets.join(","))).unwrap();
        assets.push(r#"{"id":12,"data":{"type":1}}"#.into());
        let e = err(&format!(r#"{{"assets":[{}]}}"#, assets.join(",")));
        assert_eq!(e.field, "assets[30].id");
        assert!(e.message.contains("assets[12]"), "{e}");
    }

    #[test]
    fn deeply_nested_wrappers_are_refused_without_overflowing_the_stack() {
        let depth = 200;
        let payload = format!("{}{{}}{}", r#"{"native":"#.repeat(depth), "}".repeat(depth));
        let e = err(&payload);
        assert_eq!(e.field, "");
        assert!(e.message.contains("recursion limit"), "{e}");
    }
}

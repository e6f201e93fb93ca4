//! The request mix: which bid request each scheduled request carries.
//!
//! Two sources: built-in templates (banner, video, native, multi-imp, app, deal), each request
//! getting its own `id`, or a folder of JSON files sent byte for byte. Requests are picked by
//! a smooth weighted round-robin over the schedule's sequence numbers, so a mix is exact and
//! evenly spread (no random clumps) and the same run always sends the same sequence.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use crate::Error;

/// The most files a request folder may hold.
pub const MAX_FILES: usize = 10_000;

/// The largest request file read from a folder.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most a single weight may be, and the most all weights may add up to.
pub const MAX_WEIGHT: u32 = 1_000;
const MAX_TOTAL_WEIGHT: u32 = 10_000;

/// A built-in bid request shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Template {
    /// One 300x250 banner imp with formats, on a site.
    Banner,
    /// One instream video imp on a site.
    Video,
    /// One Native 1.2 imp (title, image, description) on a site.
    Native,
    /// Three imps (two banners and a video) on a site.
    MultiImp,
    /// One 320x50 banner imp in a mobile app.
    App,
    /// One banner imp with a PMP of two deals, on a site.
    Deal,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 6] = [
        Self::Banner,
        Self::Video,
        Self::Native,
        Self::MultiImp,
        Self::App,
        Self::Deal,
    ];

    /// The name used in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Banner => "banner",
            Self::Video => "video",
            Self::Native => "native",
            Self::MultiImp => "multi",
            Self::App => "app",
            Self::Deal => "deal",
        }
    }

    /// The template called `name` (`multi-imp` and `pmp`/`deals` are accepted too).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "banner" => Some(Self::Banner),
            "video" => Some(Self::Video),
            "native" => Some(Self::Native),
            "multi" | "multi-imp" | "multiimp" => Some(Self::MultiImp),
            "app" => Some(Self::App),
            "deal" | "deals" | "pmp" => Some(Self::Deal),
            _ => None,
        }
    }

    /// The request with `id` set: a valid OpenRTB 2.6 BidRequest.
    pub fn request(self, id: &str) -> Value {
        let mut v = self.without_id();
        if let Value::Object(map) = &mut v {
            map.insert("id".to_owned(), Value::String(id.to_owned()));
        }
        v
    }

    /// The request minus its `id`; the mix splices a fresh id in front.
    fn without_id(self) -> Value {
        let site = json!({
            "id": "site-1",
            "domain": "news.example",
            "page": "https://news.example/today",
            "cat": ["IAB12"],
            "publisher": {"id": "pub-1"}
        });
        let device = json!({
            "ua": "Mozilla/5.0 (X11; Linux x86_64)",
            "ip": "192.0.2.10",
            "devicetype": 2,
            "geo": {"country": "USA"}
        });
        let banner_imp = |id: &str, w: u32, h: u32| {
            json!({
                "id": id,
                "tagid": format!("slot-{w}x{h}"),
                "banner": {"w": w, "h": h, "format": [{"w": w, "h": h}]},
                "bidfloor": 0.5,
                "bidfloorcur": "USD",
                "secure": 1
            })
        };
        let video_imp = |id: &str| {
            json!({
                "id": id,
                "video": {
                    "mimes": ["video/mp4", "video/webm"],
                    "minduration": 5,
                    "maxduration": 30,
                    "protocols": [2, 3, 5, 6],
                    "w": 640,
                    "h": 360,
                    "startdelay": 0,
                    "plcmt": 1,
                    "linearity": 1
                },
                "bidfloor": 1.0,
                "bidfloorcur": "USD"
            })
        };
        let on_site = |imps: Value| {
            json!({
                "tmax": 150,
                "cur": ["USD"],
                "imp": imps,
                "site": site,
                "device": device,
                "user": {"id": "user-1"},
                "regs": {"gdpr": 0}
            })
        };
        match self {
            Self::Banner => {
                let mut imp = banner_imp("1", 300, 250);
                imp["banner"]["format"] = json!([{"w": 300, "h": 250}, {"w": 320, "h": 50}]);
                on_site(json!([imp]))
            }
            Self::Video => on_site(json!([video_imp("1")])),
            Self::Native => {
                let native = json!({
                    "ver": "1.2",
                    "context": 2,
                    "plcmttype": 1,
                    "plcmtcnt": 1,
                    "assets": [
                        {"id": 1, "required": 1, "title": {"len": 90}},
                        {"id": 2, "required": 1, "img": {"type": 3, "w": 1200, "h": 627}},
                        {"id": 3, "required": 0, "data": {"type": 2, "len": 140}}
                    ],
                    "eventtrackers": [{"event": 1, "methods": [1]}]
                });
                on_site(json!([{
                    "id": "1",
                    "native": {"request": native.to_string(), "ver": "1.2"},
                    "bidfloor": 0.8,
                    "bidfloorcur": "USD"
                }]))
            }
            Self::MultiImp => on_site(json!([
                banner_imp("1", 728, 90),
                banner_imp("2", 300, 250),
                video_imp("3")
            ])),
            Self::App => json!({
                "tmax": 150,
                "cur": ["USD"],
                "imp": [{
                    "id": "1",
                    "banner": {"w": 320, "h": 50, "format": [{"w": 320, "h": 50}]},
                    "instl": 0,
                    "bidfloor": 0.3,
                    "bidfloorcur": "USD"
                }],
                "app": {
                    "id": "app-1",
                    "name": "Puzzle Quest",
                    "bundle": "com.example.puzzle",
                    "storeurl": "https://play.google.com/store/apps/details?id=com.example.puzzle",
                    "cat": ["IAB9"],
                    "publisher": {"id": "pub-2"}
                },
                "device": {
                    "ua": "Mozilla/5.0 (Linux; Android 14; Pixel 8)",
                    "ip": "192.0.2.20",
                    "devicetype": 4,
                    "make": "Google",
                    "model": "Pixel 8",
                    "os": "android",
                    "osv": "14",
                    "ifa": "7f3c1c1e-0c5d-4c1e-9d6a-1b2c3d4e5f60",
                    "geo": {"country": "USA"}
                },
                "user": {"id": "user-2"},
                "regs": {"gdpr": 0}
            }),
            Self::Deal => {
                let mut imp = banner_imp("1", 300, 250);
                imp["pmp"] = json!({
                    "private_auction": 0,
                    "deals": [
                        {"id": "deal-gold", "bidfloor": 1.0, "bidfloorcur": "USD", "at": 1},
                        {"id": "deal-silver", "bidfloor": 0.8, "bidfloorcur": "USD",
                         "wseat": ["alpha", "beta"]}
                    ]
                });
                on_site(json!([imp]))
            }
        }
    }
}

/// What one mix entry sends.
#[derive(Clone, Debug)]
enum Source {
    /// A template serialized without its `id` and without the opening `{`.
    Template(Bytes),
    /// A file, as it is.
    File(Bytes),
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    weight: u32,
    source: Source,
}

/// A weighted set of request bodies.
#[derive(Clone, Debug)]
pub struct Mix {
    entries: Vec<Entry>,
    /// Entry index per sequence number modulo the table's length.
    table: Vec<u32>,
}

impl Mix {
    /// Parses `banner=5,video=2,native` (a missing weight is 1) into a template mix.
    pub fn from_spec(spec: &str) -> Result<Self, Error> {
        let mut templates: Vec<(Template, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: u32 = w.trim().parse().map_err(|_| {
                        Error::InvalidMix(format!("weight of `{n}` is not a whole number: `{w}`"))
                    })?;
                    (n, w)
                }
                None => (part, 1),
            };
            let template = Template::from_name(name).ok_or_else(|| {
                Error::InvalidMix(format!(
                    "unknown template `{name}`; known: {}",
                    Template::ALL.map(Template::name).join(", ")
                ))
            })?;
            if templates.iter().any(|(t, _)| *t == template) {
                return Err(Error::InvalidMix(format!(
                    "`{}` is listed twice",
                    template.name()
                )));
            }
            templates.push((template, weight));
        }
        Self::from_templates(&templates)
    }

    /// The default mix: banner 40, video 15, native 10, multi 15, app 15, deal 5.
    pub fn standard() -> Self {
        let weights = [40, 15, 10, 15, 15, 5];
        let templates: Vec<(Template, u32)> = Template::ALL.into_iter().zip(weights).collect();
        // Six known templates with weights in range always build; an empty mix would only
        // make the generator send nothing, never crash.
        Self::from_templates(&templates).unwrap_or_else(|_| Self {
            entries: Vec::new(),
            table: Vec::new(),
        })
    }

    /// A mix of templates with their weights.
    pub fn from_templates(templates: &[(Template, u32)]) -> Result<Self, Error> {
        let entries = templates
            .iter()
            .map(|&(t, weight)| {
                let rendered = serde_json::to_vec(&t.without_id()).unwrap_or_default();
                // `without_id` is always a non-empty object, so the rendering is `{...}`.
                let tail = Bytes::from(rendered).slice(1..);
                Entry {
                    name: t.name().to_owned(),
                    weight,
                    source: Source::Template(tail),
                }
            })
            .collect();
        Self::build(entries)
    }

    /// Every `*.json` file of `dir` (not its subfolders), weight 1 each, sent as they are.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let file_err = |path: &Path, source| Error::File {
            path: path.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| file_err(dir, e))? {
            let path = entry.map_err(|e| file_err(dir, e))?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
                if paths.len() > MAX_FILES {
                    return Err(Error::InvalidMix(format!(
                        "{} holds more than {MAX_FILES} JSON files",
                        dir.display()
                    )));
                }
            }
        }
        if paths.is_empty() {
            return Err(Error::InvalidMix(format!(
                "{} holds no *.json file",
                dir.display()
            )));
        }
        paths.sort();
        let mut entries = Vec::with_capacity(paths.len());
        for path in paths {
            let len = std::fs::metadata(&path)
                .map_err(|e| file_err(&path, e))?
                .len();
            if len > MAX_FILE_BYTES {
                return Err(Error::InvalidMix(format!(
                    "{} is {len} bytes, above the {MAX_FILE_BYTES}-byte bound",
                    path.display()
                )));
            }
            let bytes = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
            entries.push(Entry {
                name: path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                weight: 1,
                source: Source::File(Bytes::from(bytes)),
            });
        }
        Self::build(entries)
    }

    fn build(entries: Vec<Entry>) -> Result<Self, Error> {
        if entries.is_empty() {
            return Err(Error::InvalidMix("the mix is empty".to_owned()));
        }
        let mut total: u32 = 0;
        for e in &entries {
            if e.weight == 0 || e.weight > MAX_WEIGHT {
                return Err(Error::InvalidMix(format!(
                    "weight of `{}` must be 1 to {MAX_WEIGHT}, got {}",
                    e.name, e.weight
                )));
            }
            total += e.weight;
        }
        // A folder of up to MAX_FILES files at weight 1 stays within this too.
        if total > MAX_TOTAL_WEIGHT {
            return Err(Error::InvalidMix(format!(
                "weights add up to {total}, above {MAX_TOTAL_WEIGHT}"
            )));
        }
        let weights: Vec<u32> = entries.iter().map(|e| e.weight).collect();
        Ok(Self {
            table: smooth_round_robin(&weights),
            entries,
        })
    }

    /// How many entries (templates or files).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries' names and weights.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u32)> {
        self.entries.iter().map(|e| (e.name.as_str(), e.weight))
    }

    /// The entry sequence number `seq` sends.
    pub fn pick(&self, seq: u64) -> usize {
        if self.table.is_empty() {
            return 0;
        }
        // The table is at most MAX_TOTAL_WEIGHT long: both conversions are lossless.
        let i = (seq % self.table.len() as u64) as usize;
        self.table[i] as usize
    }

    /// The body of request `seq`: templates get the id `lt-<seq>`, files are sent as they are.
    /// Empty for an empty mix.
    pub fn body(&self, seq: u64) -> Bytes {
        let Some(entry) = self.entries.get(self.pick(seq)) else {
            return Bytes::new();
        };
        match &entry.source {
            Source::File(b) => b.clone(),
            Source::Template(tail) => {
                let mut id = itoa::Buffer::new();
                let mut buf = BytesMut::with_capacity(tail.len() + 32);
                buf.put_slice(b"{\"id\":\"lt-");
                buf.put_slice(id.format(seq).as_bytes());
                buf.put_slice(b"\",");
                buf.put_slice(tail);
                buf.freeze()
            }
        }
    }
}

/// nginx's smooth weighted round-robin over one full cycle: each entry appears `weight` times
/// and no entry clumps (weights 5,1,1 give a a b a c a a).
fn smooth_round_robin(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut table = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        // Entries are bounded by MAX_FILES, far below u32::MAX.
        table.push(best as u32);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(body: &[u8]) -> Result<(), String> {
        let req = openrtb::request::parse(body).map_err(|e| e.to_string())?;
        openrtb::validate::validate(&req).map_err(|e| e.to_string())
    }

    #[test]
    fn every_template_is_a_valid_request_the_exchange_accepts() {
        for t in Template::ALL {
            let mix = Mix::from_templates(&[(t, 1)]).unwrap();
            let body = mix.body(42);
            valid(&body).unwrap_or_else(|e| panic!("{}: {e}", t.name()));
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["id"], "lt-42", "{}", t.name());
            assert_eq!(v, t.request("lt-42"), "{}", t.name());
        }
    }

    #[test]
    fn templates_cover_what_the_issue_asks_for() {
        let r = |t: Template| t.request("x");
        assert!(r(Template::Banner)["imp"][0]["banner"].is_object());
        assert!(r(Template::Video)["imp"][0]["video"].is_object());
        assert!(r(Template::Native)["imp"][0]["native"]["request"].is_string());
        assert_eq!(r(Template::MultiImp)["imp"].as_array().unwrap().len(), 3);
        assert!(r(Template::App)["app"].is_object() && r(Template::App)["site"].is_null());
        assert!(r(Template::Banner)["site"].is_object());
        assert_eq!(
            r(Template::Deal)["imp"][0]["pmp"]["deals"][0]["id"],
            "deal-gold"
        );
    }

    #[test]
    fn weights_are_honoured_exactly_and_spread() {
        let mix = Mix::from_spec("banner=5, video, app=2").unwrap();
        let picks: Vec<usize> = (0..8).map(|s| mix.pick(s)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 1);
        assert_eq!(picks.iter().filter(|&&i| i == 2).count(), 2);
        // Never three banners in a row with weights 5:1:2 over 8.
        assert!(picks
            .windows(3)
            .all(|w| !(w[0] == 0 && w[1] == 0 && w[2] == 0)));
        assert_eq!(mix.pick(8), mix.pick(0));
        let names: Vec<(&str, u32)> = mix.entries().collect();
        assert_eq!(names, [("banner", 5), ("video", 1), ("app", 2)]);
    }

    #[test]
    fn smooth_round_robin_matches_nginx() {
        assert_eq!(smooth_round_robin(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            "",
            "banner=0",
            "banner=x",
            "carousel",
            "banner,banner",
            "banner=1001",
        ] {
            assert!(
                matches!(Mix::from_spec(spec), Err(Error::InvalidMix(_))),
                "{spec}"
            );
        }
        assert!(Mix::from_spec("multi-imp=3,PMP").is_ok());
    }

    #[test]
    fn the_standard_mix_has_every_template() {
        let mix = Mix::standard();
        assert_eq!(mix.len(), Template::ALL.len());
        for seq in 0..100 {
            valid(&mix.body(seq)).unwrap();
        }
    }

    #[test]
    fn a_folder_is_sent_byte_for_byte_in_name_order() {
        let dir = std::env::temp_dir().join(format!("loadtest-mix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.json"), b"{\"id\":\"b\", \"imp\":[]}").unwrap();
        std::fs::write(dir.join("a.json"), b"{\"id\":\"a\"}").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let mix = Mix::from_dir(&dir).unwrap();
        assert_eq!(mix.len(), 2);
        assert_eq!(&mix.body(0)[..], b"{\"id\":\"a\"}");
        assert_eq!(&mix.body(1)[..], b"{\"id\":\"b\", \"imp\":[]}");
        assert_eq!(&mix.body(2)[..], b"{\"id\":\"a\"}");
        std::fs::remove_dir_all(&dir).unwrap();
        let empty = std::env::temp_dir().join(format!("loadtest-mix-e-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(Mix::from_dir(&empty), Err(Error::InvalidMix(_))));
        std::fs::remove_dir_all(&empty).unwrap();
        assert!(matches!(Mix::from_dir(&empty), Err(Error::File { .. })));
    }
}

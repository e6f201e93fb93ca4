//! Where the OpenRTB corpus is: `testdata/openrtb` in this repository, always, and the folder
//! `OPENRTB_CORPUS` names, when set, as an added corpus with the same layout (`iab/`,
//! `thirdparty/`, `placeholders/`).

use std::path::{Path, PathBuf};

/// The corpus that ships with the repository.
pub fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/openrtb")
}

/// Every corpus root to run over: the bundled one first, then `OPENRTB_CORPUS` if set.
///
/// # Panics
/// When the bundled corpus is missing (a broken checkout) or `OPENRTB_CORPUS` is set to
/// something that is not a folder.
pub fn roots() -> Vec<PathBuf> {
    let bundled = bundled();
    assert!(
        bundled.join("iab").is_dir(),
        "the bundled OpenRTB corpus is missing at {}",
        bundled.display()
    );
    let mut roots = vec![bundled];
    if let Some(extra) = std::env::var_os("OPENRTB_CORPUS") {
        let extra = PathBuf::from(extra);
        assert!(
            extra.is_dir(),
            "OPENRTB_CORPUS={} is not a folder",
            extra.display()
        );
        roots.push(extra);
    }
    roots
}

/// True when `path` is a file of the bundled corpus (whose expectations the tests list file
/// by file; an added corpus is held to the generic rules only).
pub fn is_bundled(path: &Path) -> bool {
    path.starts_with(bundled())
}

/// The files directly in `sub` (e.g. `"iab/requests"`) of every corpus whose names end with
/// `suffix`, sorted within each corpus. An added corpus may lack `sub`.
///
/// # Panics
/// When the bundled corpus has no such file: a test that finds nothing proves nothing.
pub fn files(sub: &str, suffix: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for (i, root) in roots().into_iter().enumerate() {
        let dir = root.join(sub);
        if i > 0 && !dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort();
        assert!(
            i > 0 || !found.is_empty(),
            "no *{suffix} in {}",
            dir.display()
        );
        all.extend(found);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_corpus_is_found_from_the_workspace() {
        let requests = files("iab/requests", ".json");
        assert!(requests
            .iter()
            .any(|p| p.ends_with("iab/requests/ortb2.6_s6.2.1_example1_simple_banner.json")));
        assert!(requests.iter().all(|p| is_bundled(p) || roots().len() > 1));
        assert!(bundled().join("PROVENANCE.md").is_file());
        assert!(bundled().join("LICENSES").is_dir());
    }
}

//! Reading a list file: one entry per line, `#` starts a comment, blank lines are skipped, and
//! every bad line is reported as `file:line: problem`.

use std::path::Path;

/// Bad lines reported per file at most: a file of the wrong kind would otherwise yield a
/// million errors.
const MAX_ERRORS_PER_FILE: usize = 20;

/// Calls `add` with each entry of `path` and its line number (1-based); every `Err` it returns
/// and a file that cannot be read become errors naming the file (and line).
pub(crate) fn read(
    path: &Path,
    errors: &mut Vec<String>,
    mut add: impl FnMut(&str) -> Result<(), String>,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(format!("{}: cannot read: {e}", path.display()));
            return;
        }
    };
    let mut bad = 0usize;
    for (i, line) in text.lines().enumerate() {
        let entry = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if entry.is_empty() {
            continue;
        }
        if let Err(problem) = add(entry) {
            bad += 1;
            if bad <= MAX_ERRORS_PER_FILE {
                errors.push(format!("{}:{}: {problem}", path.display(), i + 1));
            }
        }
    }
    if bad > MAX_ERRORS_PER_FILE {
        errors.push(format!(
            "{}: {} more bad lines not shown",
            path.display(),
            bad - MAX_ERRORS_PER_FILE
        ));
    }
}

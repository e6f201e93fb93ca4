//! The HTML page of one or several runs (summary table, percentile curve, each run's
//! timeline) and the folder it is written to with the reports as JSON beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts;
use super::text::summary_rows;
use crate::stats::RunReport;
use crate::Error;

/// Writes `index.html` (the page) and `report.json` (the reports) into `dir`, creating it.
/// Returns the page's path.
pub fn write_html(dir: &Path, reports: &[RunReport]) -> Result<PathBuf, Error> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let page = dir.join("index.html");
    std::fs::write(&page, render_html(reports)).map_err(err(&page))?;
    let json = dir.join("report.json");
    let text = serde_json::to_string_pretty(reports).map_err(|e| Error::File {
        path: json.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&json, text).map_err(err(&json))?;
    Ok(page)
}

/// The whole page: summary table, latency percentile curve of every run, and each run's
/// timeline.
pub fn render_html(reports: &[RunReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loadtest report</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
         table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}\
         th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
         svg{background:#fff;border:1px solid #ddd;margin:0.5em 0}\
         .note{color:#666;font-size:90%}\
         </style></head><body>\n<h1>loadtest report</h1>\n",
    );
    out.push_str(
        "<p class=\"note\">Latency is measured from each request's intended send time \
         (open loop, no coordinated omission): time spent queued behind a busy connection \
         counts.</p>\n",
    );

    out.push_str("<h2>Summary</h2>\n<table>\n");
    for (key, cells) in summary_rows(reports) {
        let tag = if key == "run" { "th" } else { "td" };
        let _ = write!(out, "<tr><{tag}>{}</{tag}>", escape(key));
        for cell in cells {
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    for r in reports {
        let mix: Vec<String> = r
            .mix
            .iter()
            .map(|m| format!("{}={}", m.name, m.weight))
            .collect();
        let _ = writeln!(
            out,
            "<p class=\"note\">{}: {} {}, mix {}</p>",
            escape(&r.label),
            escape(&r.mode),
            escape(&r.url),
            escape(&mix.join(", "))
        );
    }

    out.push_str("<h2>Latency by percentile</h2>\n");
    out.push_str(&charts::percentile(reports));

    for r in reports {
        if r.timeline.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h2>Timeline: {}</h2>", escape(&r.label));
        out.push_str(&charts::rate(r));
        out.push_str(&charts::latency_timeline(r));
    }
    out.push_str("</body></html>\n");
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::sample_report;
    use crate::report::render_table;

    #[test]
    fn the_page_has_both_charts_and_escapes_what_it_quotes() {
        let page = render_html(&[sample_report("<script>x</script>"), sample_report("b")]);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("Latency by percentile"));
        assert!(page.contains("Rate per second"));
        assert!(page.contains("Latency per second"));
        // One percentile chart plus two charts per run.
        assert_eq!(page.matches("<svg").count(), 5);
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert!(page.contains("<polyline"));
        assert!(!page.contains("NaN") && !page.contains("inf,") && !page.contains(",inf"));
    }

    #[test]
    fn an_empty_run_still_renders() {
        let page = render_html(&[RunReport::default()]);
        assert_eq!(page.matches("<svg").count(), 1);
        assert!(!page.contains("NaN"));
        let _ = render_table(&RunReport::default());
    }

    #[test]
    fn the_report_folder_holds_the_page_and_the_json() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        let page = write_html(&dir, &[sample_report("a")]).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("<svg"));
        let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
        let back: Vec<RunReport> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![sample_report("a")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

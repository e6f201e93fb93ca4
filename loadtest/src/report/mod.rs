//! Reports of load-test runs: text for a terminal (`text.rs`: summary table, progress line,
//! timeline, comparison), the judgement of stepped runs (`sustained.rs`), and the HTML page
//! (`html.rs`) with its SVG charts (`charts.rs`, drawn by `plotters`).
//!
//! Rendering is pure string building from [`RunReport`](crate::stats::RunReport)s; only
//! [`write_html`] touches the disk. Every text that comes from outside (labels, URLs, file
//! names) is escaped before it lands in the page.

mod charts;
#[cfg(test)]
mod fixture;
mod html;
mod sustained;
mod text;

pub use html::{escape, render_html, write_html};
pub use sustained::{render_sustained, sustained, Sustained};
pub use text::{
    describe_plan, fmt_ms, progress_line, render_comparison, render_table, render_timeline,
};

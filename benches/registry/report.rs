//! The results table: one row per metric with the reference figure, ours and their ratio,
//! printed to the terminal and written as Markdown.

use std::fmt::Write as _;
use std::path::Path;

/// Which direction of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput-like: ratio is ours / reference.
    Higher,
    /// Cost-like (latency, memory, time): ratio is reference / ours.
    Lower,
}

/// One metric.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// Its unit.
    pub unit: &'static str,
    /// The reference server's figure (`None`: not measured for it).
    pub reference: Option<f64>,
    /// connected-registry's figure.
    pub ours: Option<f64>,
    /// Which way is better.
    pub better: Better,
}

impl Row {
    /// The ratio oriented so that > 1 means connected-registry is better.
    pub fn ratio(&self) -> Option<f64> {
        let (r, o) = (self.reference?, self.ours?);
        let x = match self.better {
            Better::Higher => o / r,
            Better::Lower => r / o,
        };
        x.is_finite().then_some(x)
    }
}

/// Formats a figure with about three significant digits.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "—".to_owned(),
        Some(v) if !v.is_finite() => "—".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.1 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// All rows of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows in measurement order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a row and prints it at once.
    pub fn add(
        &mut self,
        metric: impl Into<String>,
        unit: &'static str,
        reference: Option<f64>,
        ours: Option<f64>,
        better: Better,
    ) {
        let row = Row {
            metric: metric.into(),
            unit,
            reference,
            ours,
            better,
        };
        println!(
            "  = {} ({}): reference {}, connected-registry {}, ratio {}",
            row.metric,
            row.unit,
            num(row.reference),
            num(row.ours),
            ratio_text(&row)
        );
        self.rows.push(row);
    }

    /// The table as plain text for the terminal.
    pub fn text(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|r| r.metric.len() + r.unit.len() + 3)
            .max()
            .unwrap_or(6)
            .max(6);
        let mut s = format!(
            "{:<w$} | {:>10} | {:>18} | ratio (> 1: connected-registry better)\n",
            "metric", "reference", "connected-registry"
        );
        s.push_str(&format!(
            "{}-+-{}-+-{}-+-{}\n",
            "-".repeat(w),
            "-".repeat(10),
            "-".repeat(18),
            "-".repeat(10)
        ));
        for r in &self.rows {
            let m = format!("{} ({})", r.metric, r.unit);
            let _ = writeln!(
                s,
                "{m:<w$} | {:>10} | {:>18} | {}",
                num(r.reference),
                num(r.ours),
                ratio_text(r)
            );
        }
        s
    }

    /// The table as Markdown, under a header describing the machine and settings.
    pub fn markdown(&self, header: &[(String, String)]) -> String {
        let mut s = String::from("# connected-registry vs. the reference registry\n\n");
        for (k, v) in header {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push_str("\nRatio > 1 means connected-registry is better (higher throughput, lower ");
        s.push_str("latency, memory, CPU or time).\n\n");
        s.push_str("| metric | unit | reference | connected-registry | ratio |\n");
        s.push_str("|---|---|--:|--:|--:|\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.metric,
                r.unit,
                num(r.reference),
                num(r.ours),
                ratio_text(r)
            );
        }
        s
    }

    /// Writes the Markdown to `path`, creating its directory.
    pub fn write(&self, path: &Path, header: &[(String, String)]) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, self.markdown(header))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// The ratio as text (`1.23×`), or a dash.
fn ratio_text(r: &Row) -> String {
    match r.ratio() {
        Some(x) => format!("{}×", num(Some(x))),
        None => "—".to_owned(),
    }
}

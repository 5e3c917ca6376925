//! What the commands print: `kubectl get`-style tables, objects as JSON or YAML, times.

use std::fmt::Write as _;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// `-o/--output` of the `get` commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

impl OutputFormat {
    /// The object format, or None for a table.
    pub fn object_format(self) -> Option<ObjectFormat> {
        match self {
            OutputFormat::Table => None,
            OutputFormat::Json => Some(ObjectFormat::Json),
            OutputFormat::Yaml => Some(ObjectFormat::Yaml),
        }
    }
}

/// `-o/--output` of the commands that print an object they created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectFormat {
    Json,
    Yaml,
}

/// A table in the style of `kubectl get`: upper-case headers, columns padded to their widest
/// cell and separated by three spaces, no borders.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One object as JSON or YAML, or several as a `kind: List` (as `kubectl get -o` prints them).
pub fn render_objects<T: Serialize>(objects: &[T], single: bool, format: ObjectFormat) -> anyhow::Result<String> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a, T> {
        api_version: &'static str,
        kind: &'static str,
        items: &'a [T],
    }
    let list = List { api_version: "v1", kind: "List", items: objects };
    let value = match (single, objects) {
        (true, [one]) => serde_json::to_value(one),
        _ => serde_json::to_value(&list),
    }
    .context("serialising the objects")?;
    Ok(match format {
        ObjectFormat::Json => serde_json::to_string_pretty(&value).context("serialising as JSON")? + "\n",
        ObjectFormat::Yaml => serde_yaml::to_string(&value).context("serialising as YAML")?,
    })
}

pub fn print(text: &str) -> anyhow::Result<()> {
    crate::cli::write_stdout(text.as_bytes()).context("writing to stdout")
}

/// Bytes as people read them: 512 B, 1.5 KiB, 2.0 GiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A timestamp as Velero prints one: `2024-05-01 10:00:00 +0000 UTC`, `<n/a>` when unset.
pub fn time(t: Option<&Time>) -> String {
    match t {
        Some(Time(ts)) => ts.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        None => "<n/a>".to_string(),
    }
}

/// How far `when` is from `now`, as `kubectl` prints ages: `29d`, `5h`, or `3m ago` when past.
pub fn from_now(when: Option<&Time>, now: Timestamp) -> String {
    let Some(Time(when)) = when else { return "n/a".to_string() };
    let delta = now.duration_until(*when);
    if delta.is_negative() {
        format!("{} ago", short_duration(-delta))
    } else {
        short_duration(delta)
    }
}

/// Kubernetes' `ShortHumanDuration`: the largest unit only.
pub fn short_duration(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < 0 {
        return "0s".to_string();
    }
    let (minutes, hours) = (secs / 60, secs / 3600);
    match () {
        _ if secs < 60 => format!("{secs}s"),
        _ if minutes < 60 => format!("{minutes}m"),
        _ if hours < 24 => format!("{hours}h"),
        _ if hours < 24 * 365 => format!("{}d", hours / 24),
        _ => format!("{}y", hours / 24 / 365),
    }
}

/// A list of names as `a, b`, or `fallback` when empty (`*`, `<none>`).
pub fn list_or(items: &[String], fallback: &str) -> String {
    if items.is_empty() {
        fallback.to_string()
    } else {
        items.join(", ")
    }
}

/// `Key:  value` lines with the values aligned, as `kubectl describe` and Velero print them.
/// A multi-line value continues under the first line's value.
pub fn aligned(indent: usize, fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in fields {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        let label = format!("{key}:");
        let _ = writeln!(out, "{:indent$}{label:<width$}{first}", "");
        for line in lines {
            let _ = writeln!(out, "{:indent$}{:width$}{line}", "", "");
        }
    }
    out.lines().map(str::trim_end).fold(String::new(), |acc, l| acc + l + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn tables_are_padded_like_kubectl() {
        let mut t = Table::new(&["NAME", "STATUS", "SELECTOR"]);
        t.row(vec!["nginx-backup".into(), "Completed".into(), "<none>".into()]);
        t.row(vec!["b".into(), "New".into(), "app=nginx".into()]);
        assert_eq!(
            t.render(),
            "NAME           STATUS      SELECTOR\n\
             nginx-backup   Completed   <none>\n\
             b              New         app=nginx\n"
        );
    }

    #[test]
    fn times_and_ages() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        assert_eq!(time(Some(&ts("2024-05-01T10:00:00Z"))), "2024-05-01 10:00:00 +0000 UTC");
        assert_eq!(time(None), "<n/a>");
        assert_eq!(from_now(Some(&ts("2024-05-30T10:00:01Z")), now), "29d");
        assert_eq!(from_now(Some(&ts("2024-05-01T15:30:00Z")), now), "5h");
        assert_eq!(from_now(Some(&ts("2024-05-01T09:57:00Z")), now), "3m ago");
        assert_eq!(from_now(None, now), "n/a");
        assert_eq!(short_duration(SignedDuration::from_hours(24 * 800)), "2y");
        assert_eq!(short_duration(SignedDuration::from_secs(59)), "59s");
    }

    #[test]
    fn aligned_fields_continue_multiline_values() {
        let text = aligned(2, &[("Included", "a, b".into()), ("Cluster-scoped", "auto".into())]);
        assert_eq!(text, "  Included:        a, b\n  Cluster-scoped:  auto\n");
        let text = aligned(0, &[("Labels", "a=1\nb=2".into())]);
        assert_eq!(text, "Labels:  a=1\n         b=2\n");
    }

    #[test]
    fn one_object_or_a_list() {
        let objects = [serde_json::json!({"kind": "Backup"})];
        assert_eq!(render_objects(&objects, true, ObjectFormat::Yaml).unwrap(), "kind: Backup\n");
        let list = render_objects(&objects, false, ObjectFormat::Json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(value["kind"], "List");
        assert_eq!(value["items"][0]["kind"], "Backup");
    }
}

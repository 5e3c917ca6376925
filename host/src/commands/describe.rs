//! Pieces of `describe` output shared by backups and restores, in Velero's layout: sections of
//! aligned `Key:  value` lines separated by blank lines.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use stowage_api::backup::ExtensionRun;
use stowage_api::hooks::HookStatus;

use super::output::{aligned, list_or};

/// A describe text being built, one section at a time.
#[derive(Default)]
pub struct Sections(Vec<String>);

impl Sections {
    pub fn push(&mut self, section: String) {
        if !section.trim().is_empty() {
            self.0.push(section);
        }
    }

    /// A one-section group of aligned fields.
    pub fn fields(&mut self, fields: &[(&str, String)]) {
        self.push(aligned(0, fields));
    }

    pub fn finish(self) -> String {
        self.0.iter().map(|s| s.trim_end()).collect::<Vec<_>>().join("\n\n") + "\n"
    }
}

/// Name, Namespace, Labels, Annotations.
pub fn header(meta: &ObjectMeta) -> String {
    aligned(
        0,
        &[
            ("Name", meta.name.clone().unwrap_or_default()),
            ("Namespace", meta.namespace.clone().unwrap_or_default()),
            ("Labels", key_values(meta.labels.as_ref())),
            ("Annotations", key_values(meta.annotations.as_ref())),
        ],
    )
}

fn key_values(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        Some(map) if !map.is_empty() => map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
        _ => "<none>".to_string(),
    }
}

/// The include/exclude filters of a backup or restore.
pub struct Filters<'a> {
    pub included_namespaces: &'a [String],
    pub excluded_namespaces: &'a [String],
    pub included_resources: &'a [String],
    pub excluded_resources: &'a [String],
    pub include_cluster_resources: Option<bool>,
    /// What an empty namespace list means (`*`, `all namespaces found in the backup`).
    pub all_namespaces: &'a str,
}

impl Filters<'_> {
    pub fn render(&self) -> String {
        let cluster = match self.include_cluster_resources {
            None => "auto".to_string(),
            Some(b) => b.to_string(),
        };
        format!(
            "Namespaces:\n{}\nResources:\n{}",
            aligned(
                2,
                &[
                    ("Included", list_or(self.included_namespaces, self.all_namespaces)),
                    ("Excluded", list_or(self.excluded_namespaces, "<none>")),
                ]
            ),
            aligned(
                2,
                &[
                    ("Included", list_or(self.included_resources, "*")),
                    ("Excluded", list_or(self.excluded_resources, "<none>")),
                    ("Cluster-scoped", cluster),
                ]
            )
        )
    }
}

/// The phase, with a pointer to the logs when something went wrong.
pub fn phase(phase: Option<String>, logs_command: &str) -> String {
    match phase.as_deref() {
        None => "New".to_string(),
        Some(p @ ("Failed" | "PartiallyFailed")) => format!("{p} (run `{logs_command}` for more information)"),
        Some(p) => p.to_string(),
    }
}

/// The phase line with what a Queued operation waits for and, when a server stopped under it,
/// how many times it was started.
pub fn phase_with_queue(phase_line: String, queue_position: u32, attempts: u32) -> String {
    let mut line = phase_line;
    if line == "Queued" && queue_position > 0 {
        line += &format!(" (position {queue_position}: waiting for operations on the same namespaces, or for a free slot)");
    }
    if attempts > 1 {
        line += &format!(" (attempt {attempts}: the server running an earlier attempt stopped)");
    }
    line
}

/// The hook counts, then each hook as it ran (pod, container, phase, exit code, duration).
pub fn hook_status(status: Option<&HookStatus>) -> String {
    let Some(s) = status.filter(|s| s.hooks_attempted > 0) else { return String::new() };
    let mut out = aligned(0, &[("Hooks attempted", s.hooks_attempted.to_string()), ("Hooks failed", s.hooks_failed.to_string())]);
    if s.runs.is_empty() {
        return out;
    }
    out += "Hook runs:\n";
    for r in &s.runs {
        let result = match &r.error {
            None => "succeeded".to_string(),
            Some(e) => format!("failed: {}", e.lines().next().unwrap_or_default()),
        };
        let container = if r.container.is_empty() { String::new() } else { format!(" container {}", r.container) };
        let restart = if r.after_restart { " (after a server restart)" } else { "" };
        let seconds = r.duration_millis as f64 / 1000.0;
        out += &format!("  {} hook ({}) pod {}{container}: {result}, {seconds:.1}s{restart}\n", r.phase, r.hook, r.pod);
    }
    if (s.hooks_attempted as usize) > s.runs.len() {
        out += &format!("  ... and {} more in the log\n", s.hooks_attempted as usize - s.runs.len());
    }
    out
}

/// Which extensions ran, with the digest of the code that ran (provenance).
pub fn extensions_run(runs: &[ExtensionRun]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let lines: String = runs.iter().map(|r| format!("  {:width$}  {}\n", r.name, r.digest)).collect();
    format!("Extensions run:\n{lines}")
}

/// Validation errors and the failure reason, when there are any.
pub fn problems(validation_errors: &[String], failure_reason: Option<&str>) -> String {
    let mut fields = Vec::new();
    if !validation_errors.is_empty() {
        fields.push(("Validation errors", validation_errors.join("\n")));
    }
    if let Some(reason) = failure_reason {
        fields.push(("Failure reason", reason.to_string()));
    }
    aligned(0, &fields)
}

/// The results file of a backup or restore: warnings and errors keyed by namespace, `""` for
/// cluster-scoped objects and the run as a whole.
#[derive(Debug, Default, Deserialize)]
struct Results {
    #[serde(default)]
    warnings: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    errors: BTreeMap<String, Vec<String>>,
}

/// Renders a downloaded results file as `Warnings:` and `Errors:` sections.
pub fn results(json: &[u8]) -> Result<String, String> {
    let results: Results = serde_json::from_slice(json).map_err(|e| format!("the results file is not valid: {e}"))?;
    Ok(format!("{}\n{}", messages("Warnings", &results.warnings), messages("Errors", &results.errors)))
}

fn messages(title: &str, by_namespace: &BTreeMap<String, Vec<String>>) -> String {
    if by_namespace.values().all(Vec::is_empty) {
        return format!("{title}:  <none>\n");
    }
    let cluster = by_namespace.get("").map(|m| m.join("\n")).filter(|m| !m.is_empty());
    let mut out = format!("{title}:\n");
    out += &aligned(2, &[("Cluster", cluster.unwrap_or_else(|| "<none>".to_string()))]);
    let namespaces: Vec<(&str, String)> = by_namespace
        .iter()
        .filter(|(ns, m)| !ns.is_empty() && !m.is_empty())
        .map(|(ns, m)| (ns.as_str(), m.join("\n")))
        .collect();
    if namespaces.is_empty() {
        out += "  Namespaces:  <none>\n";
    } else {
        out += "  Namespaces:\n";
        out += &aligned(4, &namespaces);
    }
    out
}

/// A section whose content came from a download: the content, or why it is missing.
pub fn downloaded(
    title: &str,
    fetched: &Result<Vec<u8>, String>,
    render: impl Fn(&[u8]) -> Result<String, String>,
) -> String {
    match fetched.as_ref().map_err(Clone::clone).and_then(|bytes| render(bytes)) {
        Ok(text) => text,
        Err(e) => format!("{title}:  <error: {e}>\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_or_restarted_operation_says_so_in_its_phase() {
        assert_eq!(phase_with_queue("Queued".into(), 2, 0), "Queued (position 2: waiting for operations on the same namespaces, or for a free slot)");
        assert_eq!(phase_with_queue("Completed".into(), 0, 2), "Completed (attempt 2: the server running an earlier attempt stopped)");
        assert_eq!(phase_with_queue("Completed".into(), 0, 1), "Completed");
    }

    #[test]
    fn results_group_cluster_and_namespaces() {
        let json = br#"{"warnings": {"": ["crd x: exists"], "shop": ["svc web: exists", "cm a: exists"]}}"#;
        assert_eq!(
            results(json).unwrap(),
            "Warnings:\n  \
               Cluster:  crd x: exists\n  \
               Namespaces:\n    \
                 shop:  svc web: exists\n           cm a: exists\n\
             \n\
             Errors:  <none>\n"
        );
        assert!(results(b"[1]").unwrap_err().contains("not valid"));
    }

    #[test]
    fn downloaded_sections_say_why_they_are_missing() {
        let failed = Err("download request \"b-x\" was not processed".to_string());
        let text = downloaded("Resource List", &failed, |_| Ok(String::new()));
        assert_eq!(text, "Resource List:  <error: download request \"b-x\" was not processed>\n");
    }

    #[test]
    fn filters_render_defaults() {
        let none: Vec<String> = Vec::new();
        let ns = vec!["nginx-example".to_string()];
        let f = Filters {
            included_namespaces: &ns,
            excluded_namespaces: &none,
            included_resources: &none,
            excluded_resources: &none,
            include_cluster_resources: None,
            all_namespaces: "*",
        };
        assert_eq!(
            f.render(),
            "Namespaces:\n  Included:  nginx-example\n  Excluded:  <none>\n\n\
             Resources:\n  Included:        *\n  Excluded:        <none>\n  Cluster-scoped:  auto\n"
        );
    }
}

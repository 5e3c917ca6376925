//! `stowage backup describe`, in `velero backup describe`'s layout.

use std::collections::BTreeMap;

use serde_json::Value;
use stowage_api::hooks::{BackupHooks, ExecHook};
use stowage_api::requests::DownloadTargetKind;
use stowage_api::Backup;

use super::table;
use crate::commands::describe::{self as d, Filters, Sections};
use crate::commands::output::{aligned, human_bytes, list_or, time};
use crate::commands::{download, selector, Context};

/// What `--details` adds, fetched through the server: each file, or why it could not be had.
pub struct BackupDetails {
    pub resource_list: Result<Vec<u8>, String>,
    pub volumes: Result<Vec<u8>, String>,
    /// Only fetched when the backup has warnings or errors.
    pub results: Option<Result<Vec<u8>, String>>,
}

impl BackupDetails {
    pub async fn fetch(ctx: &Context, backup: &Backup) -> BackupDetails {
        let name = backup.metadata.name.as_deref().unwrap_or_default();
        let status = backup.status.clone().unwrap_or_default();
        let get = |kind| async move {
            let bytes = download::fetch(ctx, kind, name).await.map_err(|e| format!("{e:#}"))?;
            download::decompress(bytes).map_err(|e| format!("{e:#}"))
        };
        let wants_results = status.warnings + status.errors > 0;
        // No pod volume backups were attempted: there is no list to fetch.
        let wants_volumes = status.pod_volume_backups_attempted > 0;
        let (resource_list, volumes, results) = tokio::join!(
            get(DownloadTargetKind::BackupResourceList),
            async {
                match wants_volumes {
                    true => get(DownloadTargetKind::BackupVolumeInfos).await,
                    false => Ok(b"[]".to_vec()),
                }
            },
            async {
                match wants_results {
                    true => Some(get(DownloadTargetKind::BackupResults).await),
                    false => None,
                }
            }
        );
        BackupDetails { resource_list, volumes, results }
    }
}

pub fn describe(backup: &Backup, details: Option<&BackupDetails>) -> String {
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let spec = &backup.spec;
    let status = backup.status.clone().unwrap_or_default();
    let mut s = Sections::default();
    s.push(d::header(&backup.metadata));
    s.fields(&[("Phase", d::phase_with_queue(d::phase(Some(table::phase(backup)), &format!("stowage backup logs {name}")), status.queue_position, status.attempts))]);
    match details.and_then(|d| d.results.as_ref()) {
        Some(results) => s.push(d::downloaded("Warnings and errors", results, d::results)),
        None => s.fields(&[("Errors", status.errors.to_string()), ("Warnings", status.warnings.to_string())]),
    }
    s.push(
        Filters {
            included_namespaces: &spec.included_namespaces,
            excluded_namespaces: &spec.excluded_namespaces,
            included_resources: &spec.included_resources,
            excluded_resources: &spec.excluded_resources,
            include_cluster_resources: spec.include_cluster_resources,
            all_namespaces: "*",
        }
        .render(),
    );
    s.fields(&[("Label selector", table::selectors(backup))]);
    s.fields(&[("Storage Location", spec.storage_location.clone().unwrap_or_else(|| "<default>".into()))]);
    let fs_backup = spec.default_volumes_to_fs_backup.map_or("<server default>".to_string(), |b| b.to_string());
    s.fields(&[("Default volumes to fs backup", fs_backup)]);
    s.fields(&[("TTL", spec.ttl.clone())]);
    s.push(hooks(&spec.hooks));
    s.fields(&[("Extensions requested", list_or(&spec.extensions, "<none>"))]);
    if let Some(version) = &status.format_version {
        s.fields(&[("Backup Format Version", version.clone())]);
    }
    s.fields(&[
        ("Started", time(status.start_timestamp.as_ref())),
        ("Completed", time(status.completion_timestamp.as_ref())),
    ]);
    s.fields(&[("Expiration", time(status.expiration.as_ref()))]);
    let progress = status.progress.clone().unwrap_or_default();
    s.fields(&[
        ("Total items to be backed up", progress.total_items.to_string()),
        ("Items backed up", progress.items_backed_up.to_string()),
    ]);
    if let Some(details) = details {
        s.push(d::downloaded("Resource List", &details.resource_list, resource_list));
    }
    s.push(d::hook_status(status.hook_status.as_ref()));
    match details {
        Some(details) => s.push(d::downloaded("Pod Volume Backups", &details.volumes, pod_volumes)),
        None => s.push(volume_counts(
            status.pod_volume_backups_attempted,
            status.pod_volume_backups_completed,
            status.pod_volume_backups_failed,
        )),
    }
    s.push(d::extensions_run(&status.extensions));
    s.push(d::problems(&status.validation_errors, status.failure_reason.as_deref()));
    s.finish()
}

fn hooks(hooks: &BackupHooks) -> String {
    if hooks.is_empty() {
        return "Hooks:  <none>\n".to_string();
    }
    let mut out = "Hooks:\n  Resources:\n".to_string();
    for spec in &hooks.resources {
        out += &format!("    {}:\n", spec.name);
        out += &aligned(
            6,
            &[
                ("Namespaces included", list_or(&spec.included_namespaces, "*")),
                ("Namespaces excluded", list_or(&spec.excluded_namespaces, "<none>")),
                ("Resources included", list_or(&spec.included_resources, "*")),
                ("Resources excluded", list_or(&spec.excluded_resources, "<none>")),
                ("Label selector", selector::format(spec.label_selector.as_ref())),
            ],
        );
        for (title, list) in [("Pre Exec Hook", &spec.pre), ("Post Exec Hook", &spec.post)] {
            for hook in list {
                out += &format!("      {title}:\n{}", exec_hook(&hook.exec));
            }
        }
    }
    out
}

fn exec_hook(exec: &ExecHook) -> String {
    aligned(
        8,
        &[
            ("Container", exec.container.clone().unwrap_or_else(|| "<first container>".into())),
            ("Command", exec.command.join(" ")),
            ("On Error", format!("{:?}", exec.on_error.unwrap_or_default())),
            ("Timeout", exec.timeout.clone().unwrap_or_else(|| "30s".into())),
        ],
    )
}

fn volume_counts(attempted: u32, completed: u32, failed: u32) -> String {
    if attempted == 0 {
        return "Pod Volume Backups:  <none included>\n".to_string();
    }
    let in_progress = attempted.saturating_sub(completed + failed);
    let counts: Vec<(&str, String)> = [("Completed", completed), ("Failed", failed), ("In Progress", in_progress)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k, n.to_string()))
        .collect();
    format!("Pod Volume Backups (specify --details for more information):\n{}", aligned(2, &counts))
}

/// `<name>-resource-list.json`: `{"apps/v1/Deployment": ["ns/name", ...], ...}` (Velero's).
fn resource_list(json: &[u8]) -> Result<String, String> {
    let list: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(json).map_err(|e| format!("the resource list is not valid: {e}"))?;
    if list.is_empty() {
        return Ok("Resource List:  <none>\n".to_string());
    }
    let mut out = "Resource List:\n".to_string();
    for (kind, items) in list {
        out += &format!("  {kind}:\n");
        out.extend(items.iter().map(|i| format!("    - {i}\n")));
    }
    Ok(out)
}

/// `<name>-podvolumebackups.json`: the PodVolumeBackup objects (a JSON array, as Velero
/// stores them), grouped by phase, one line per volume: `ns/pod: volume  size  snapshot`
/// (or the reason it failed).
fn pod_volumes(json: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| format!("the pod volume list is not valid: {e}"))?;
    let items = match &value {
        Value::Array(items) => items.as_slice(),
        other => other.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default(),
    };
    if items.is_empty() {
        return Ok("Pod Volume Backups:  <none included>\n".to_string());
    }
    let mut by_phase: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for item in items {
        let text = |path: &[&str]| path.iter().try_fold(item, |v, k| v.get(k)).and_then(Value::as_str).unwrap_or("");
        let phase = Some(text(&["status", "phase"])).filter(|p| !p.is_empty()).unwrap_or("New");
        let what = format!("{}/{}: {}", text(&["spec", "pod", "namespace"]), text(&["spec", "pod", "name"]), text(&["spec", "volume"]));
        let bytes = item.pointer("/status/progress/totalBytes").and_then(Value::as_u64);
        let detail = match (phase, text(&["status", "snapshotID"]), text(&["status", "message"])) {
            ("Completed", snapshot, _) => {
                format!("{}, snapshot {}", bytes.map(human_bytes).unwrap_or_else(|| "size unknown".into()), short_id(snapshot))
            }
            (_, _, message) if !message.is_empty() => message.to_string(),
            (_, _, _) => match (bytes, item.pointer("/status/progress/bytesDone").and_then(Value::as_u64)) {
                (Some(total), Some(done)) => format!("{} of {}", human_bytes(done), human_bytes(total)),
                _ => String::new(),
            },
        };
        by_phase.entry(phase.to_string()).or_default().push((what, detail));
    }
    let mut out = "Pod Volume Backups:\n".to_string();
    for (phase, volumes) in by_phase {
        out += &format!("  {phase}:\n");
        let rows: Vec<(&str, String)> = volumes.iter().map(|(w, d)| (w.as_str(), d.clone())).collect();
        out += &aligned(4, &rows);
    }
    Ok(out)
}

fn short_id(id: &str) -> &str {
    if id.is_empty() {
        "<none>"
    } else {
        &id[..id.len().min(8)]
    }
}


#[cfg(test)]
mod tests;

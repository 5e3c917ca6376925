//! `stowage restore get`'s table and `stowage restore describe`, in Velero's layout.

use stowage_api::Restore;

use crate::commands::describe::{self as d, Filters, Sections};
use crate::commands::output::{aligned, time, Table};
use crate::commands::selector;

pub fn table(restores: &[Restore]) -> String {
    let mut table =
        Table::new(&["NAME", "BACKUP", "STATUS", "STARTED", "COMPLETED", "ERRORS", "WARNINGS", "CREATED", "SELECTOR"]);
    for restore in restores {
        let status = restore.status.clone().unwrap_or_default();
        table.row(vec![
            restore.metadata.name.clone().unwrap_or_default(),
            source(restore),
            phase(restore),
            time(status.start_timestamp.as_ref()),
            time(status.completion_timestamp.as_ref()),
            status.errors.to_string(),
            status.warnings.to_string(),
            time(restore.metadata.creation_timestamp.as_ref()),
            selectors(restore),
        ]);
    }
    table.render()
}

fn phase(restore: &Restore) -> String {
    restore.status.as_ref().and_then(|s| s.phase).map_or("New".to_string(), |p| format!("{p:?}"))
}

/// The backup, or `schedule <name>` for a restore of a schedule's latest backup.
fn source(restore: &Restore) -> String {
    match (&restore.spec.backup_name, &restore.spec.schedule_name) {
        (Some(backup), _) => backup.clone(),
        (None, Some(schedule)) => format!("schedule {schedule}"),
        (None, None) => "<none>".to_string(),
    }
}

fn selectors(restore: &Restore) -> String {
    let spec = &restore.spec;
    if spec.or_label_selectors.is_empty() {
        return selector::format(spec.label_selector.as_ref());
    }
    spec.or_label_selectors.iter().map(|s| selector::format(Some(s))).collect::<Vec<_>>().join(" or ")
}

/// The describe text; `results` is the downloaded results file when `--details` asked for it.
pub fn describe(restore: &Restore, results: Option<&Result<Vec<u8>, String>>) -> String {
    let name = restore.metadata.name.as_deref().unwrap_or_default();
    let spec = &restore.spec;
    let status = restore.status.clone().unwrap_or_default();
    let progress = status.progress.clone().unwrap_or_default();
    let mut s = Sections::default();
    s.push(d::header(&restore.metadata));
    s.fields(&[
        ("Phase", d::phase_with_queue(d::phase(Some(phase(restore)), &format!("stowage restore logs {name}")), status.queue_position, status.attempts)),
        ("Total items to be restored", progress.total_items.to_string()),
        ("Items restored", progress.items_restored.to_string()),
    ]);
    s.fields(&[
        ("Started", time(status.start_timestamp.as_ref())),
        ("Completed", time(status.completion_timestamp.as_ref())),
    ]);
    match results {
        Some(results) => s.push(d::downloaded("Warnings and errors", results, d::results)),
        None => {
            let hint = |n: u32| if n > 0 { format!("{n} (specify --details to see them)") } else { n.to_string() };
            s.fields(&[("Warnings", hint(status.warnings)), ("Errors", hint(status.errors))]);
        }
    }
    match (&spec.backup_name, &spec.schedule_name) {
        (Some(backup), _) => s.fields(&[("Backup", backup.clone())]),
        (None, schedule) => s.fields(&[("Schedule", schedule.clone().unwrap_or_else(|| "<none>".into()))]),
    }
    s.push(
        Filters {
            included_namespaces: &spec.included_namespaces,
            excluded_namespaces: &spec.excluded_namespaces,
            included_resources: &spec.included_resources,
            excluded_resources: &spec.excluded_resources,
            include_cluster_resources: spec.include_cluster_resources,
            all_namespaces: "all namespaces found in the backup",
        }
        .render(),
    );
    let mappings: Vec<String> = spec.namespace_mapping.iter().map(|(src, dst)| format!("{src}={dst}")).collect();
    s.fields(&[("Namespace mappings", if mappings.is_empty() { "<none>".into() } else { mappings.join(", ") })]);
    s.fields(&[("Label selector", selectors(restore))]);
    s.fields(&[("Restore PVs", optional_bool(spec.restore_pvs))]);
    s.push(volume_counts(
        status.pod_volume_restores_attempted,
        status.pod_volume_restores_completed,
        status.pod_volume_restores_failed,
    ));
    let policy = spec.existing_resource_policy.map_or("<none>".to_string(), |p| format!("{p:?}").to_lowercase());
    s.fields(&[("Existing Resource Policy", policy)]);
    s.fields(&[("Preserve Service NodePorts", optional_bool(spec.preserve_node_ports))]);
    if let Some(modifier) = &spec.resource_modifier {
        s.fields(&[("Resource modifier", format!("{}/{}", modifier.kind, modifier.name))]);
    }
    if !spec.hooks.is_empty() {
        let names: Vec<&str> = spec.hooks.resources.iter().map(|h| h.name.as_str()).collect();
        s.fields(&[("Hooks", names.join(", "))]);
    }
    s.push(d::hook_status(status.hook_status.as_ref()));
    s.push(d::extensions_run(&status.extensions));
    s.push(d::problems(&status.validation_errors, status.failure_reason.as_deref()));
    s.finish()
}

fn optional_bool(value: Option<bool>) -> String {
    value.map_or("auto".to_string(), |b| b.to_string())
}

fn volume_counts(attempted: u32, completed: u32, failed: u32) -> String {
    if attempted == 0 {
        return String::new();
    }
    let in_progress = attempted.saturating_sub(completed + failed);
    let counts: Vec<(&str, String)> = [("Completed", completed), ("Failed", failed), ("In Progress", in_progress)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k, n.to_string()))
        .collect();
    format!("Pod Volume Restores:\n{}", aligned(2, &counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTORE: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: Restore
metadata:
  name: nginx-backup-20240501110000
  namespace: stowage
  creationTimestamp: "2024-05-01T11:00:00Z"
spec:
  backupName: nginx-backup
  namespaceMapping:
    nginx-example: nginx-copy
  existingResourcePolicy: update
status:
  phase: Completed
  startTimestamp: "2024-05-01T11:00:00Z"
  completionTimestamp: "2024-05-01T11:00:30Z"
  progress:
    totalItems: 9
    itemsRestored: 9
  warnings: 3
  podVolumeRestoresAttempted: 1
  podVolumeRestoresCompleted: 1
"#;

    fn restore() -> Restore {
        serde_yaml::from_str(RESTORE).unwrap()
    }

    #[test]
    fn golden_table() {
        assert_eq!(
            table(&[restore()]),
            "NAME                          BACKUP         STATUS      STARTED                         COMPLETED                       ERRORS   WARNINGS   CREATED                         SELECTOR\n\
             nginx-backup-20240501110000   nginx-backup   Completed   2024-05-01 11:00:00 +0000 UTC   2024-05-01 11:00:30 +0000 UTC   0        3          2024-05-01 11:00:00 +0000 UTC   <none>\n"
        );
    }

    #[test]
    fn golden_describe() {
        let expected = "\
Name:         nginx-backup-20240501110000
Namespace:    stowage
Labels:       <none>
Annotations:  <none>

Phase:                       Completed
Total items to be restored:  9
Items restored:              9

Started:    2024-05-01 11:00:00 +0000 UTC
Completed:  2024-05-01 11:00:30 +0000 UTC

Warnings:  3 (specify --details to see them)
Errors:    0

Backup:  nginx-backup

Namespaces:
  Included:  all namespaces found in the backup
  Excluded:  <none>

Resources:
  Included:        *
  Excluded:        <none>
  Cluster-scoped:  auto

Namespace mappings:  nginx-example=nginx-copy

Label selector:  <none>

Restore PVs:  auto

Pod Volume Restores:
  Completed:  1

Existing Resource Policy:  update

Preserve Service NodePorts:  auto
";
        let text = describe(&restore(), None);
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn details_show_results_or_why_not() {
        let results = Ok(br#"{"warnings": {"nginx-copy": ["service nginx: already exists"]}}"#.to_vec());
        let text = describe(&restore(), Some(&results));
        assert!(text.contains("Warnings:\n  Cluster:  <none>\n  Namespaces:\n    nginx-copy:  service nginx: already exists\n\nErrors:  <none>\n"), "{text}");
        let failed = Err("the server could not serve download request \"x\": no such object".to_string());
        let text = describe(&restore(), Some(&failed));
        assert!(text.contains("Warnings and errors:  <error: the server could not serve"), "{text}");
        assert!(text.contains("Backup:  nginx-backup"), "the rest is still printed: {text}");
    }
}

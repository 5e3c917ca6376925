//! What the dashboard shows, as plain rows built from the cluster's objects: the same rows make
//! the HTML pages and `/api/overview.json`. Pure, so it is tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;
use stowage_api::hooks::HookRun;
use stowage_api::labels;
use stowage_api::{Backup, BackupStorageLocation, PodVolumeBackup, Restore, Schedule};

use crate::server::extensions::{DIGEST_ANNOTATION, ERROR_ANNOTATION, SCOPE_ANNOTATION, STATE_ANNOTATION};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The namespace the server reads Stowage's objects from.
    pub namespace: String,
    pub generated_at: Time,
    /// Newest first.
    pub backups: Vec<BackupRow>,
    pub restores: Vec<RestoreRow>,
    pub schedules: Vec<ScheduleRow>,
    pub locations: Vec<LocationRow>,
    pub extensions: Vec<ExtensionRow>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRow {
    pub name: String,
    pub phase: String,
    pub schedule: Option<String>,
    /// None: the default location.
    pub storage_location: Option<String>,
    pub items_backed_up: u32,
    pub total_items: u32,
    pub warnings: u32,
    pub errors: u32,
    pub created: Option<Time>,
    pub started: Option<Time>,
    pub completed: Option<Time>,
    pub duration_seconds: Option<f64>,
    /// Its PodVolumeBackups.
    pub volumes: u32,
    /// The bytes of its volumes (their PodVolumeBackups' totals); None without volumes.
    pub volume_bytes: Option<u64>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRow {
    pub name: String,
    pub backup: Option<String>,
    pub schedule: Option<String>,
    pub phase: String,
    pub items_restored: u32,
    pub total_items: u32,
    pub warnings: u32,
    pub errors: u32,
    pub created: Option<Time>,
    pub started: Option<Time>,
    pub completed: Option<Time>,
    pub duration_seconds: Option<f64>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRow {
    pub name: String,
    pub schedule: String,
    pub paused: bool,
    pub phase: String,
    pub storage_location: Option<String>,
    pub ttl: String,
    pub last_backup: Option<Time>,
    pub next_run: Option<Time>,
    pub last_skipped: Option<Time>,
}

/// A storage location without its config or credentials: only where and whether it works.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationRow {
    pub name: String,
    pub provider: String,
    pub bucket: String,
    pub prefix: Option<String>,
    pub default: bool,
    pub access_mode: String,
    pub phase: String,
    pub last_validated: Option<Time>,
    pub last_synced: Option<Time>,
    pub message: Option<String>,
}

/// An extension ConfigMap, with the state the server recorded on it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRow {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub scope: Option<String>,
    pub state: String,
    pub digest: Option<String>,
    pub last_error: Option<String>,
}

/// One backup's page: its row, what it was asked to do, and what it did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDetail {
    pub row: BackupRow,
    pub labels: BTreeMap<String, String>,
    pub included_namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    pub included_resources: Vec<String>,
    pub excluded_resources: Vec<String>,
    pub label_selector: String,
    pub ttl: String,
    pub expiration: Option<Time>,
    pub extensions_requested: Vec<String>,
    pub validation_errors: Vec<String>,
    pub hooks_attempted: u32,
    pub hooks_failed: u32,
    pub hook_runs: Vec<HookRun>,
    /// Extensions that ran: name, digest, scope.
    pub extension_runs: Vec<stowage_api::backup::ExtensionRun>,
    pub volumes: Vec<VolumeRow>,
    /// `apiVersion/Kind` → `namespace/name`, from the storage location; or why it is missing.
    pub items: Result<BTreeMap<String, Vec<String>>, String>,
    /// Warning and error messages from the location's results file (fetched only when the
    /// backup counts some); or why they are missing.
    pub messages: Option<Result<Messages, String>>,
    /// The bytes of the backup's files in its location; or why it is unknown.
    pub stored_bytes: Result<u64, String>,
    pub restores: Vec<RestoreRow>,
}

/// `<backup>-results.json`: messages by namespace (`""` for cluster-scoped ones).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Messages {
    #[serde(default)]
    pub warnings: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub errors: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRow {
    pub pod: String,
    pub volume: String,
    pub node: String,
    pub phase: String,
    pub bytes_done: u64,
    pub total_bytes: u64,
    pub snapshot_id: Option<String>,
    pub message: Option<String>,
}

fn seconds_between(start: Option<&Time>, end: Option<&Time>) -> Option<f64> {
    let (Time(start), Time(end)) = (start?, end?);
    let d = end.duration_since(*start).as_secs_f64();
    (d >= 0.0).then_some(d)
}

fn debug_or(phase: Option<impl std::fmt::Debug>, none: &str) -> String {
    phase.map_or_else(|| none.to_string(), |p| format!("{p:?}"))
}

/// Volumes by backup name, from the PodVolumeBackups' labels.
pub fn volumes_by_backup(pvbs: &[PodVolumeBackup]) -> BTreeMap<String, Vec<VolumeRow>> {
    let mut by_backup: BTreeMap<String, Vec<VolumeRow>> = BTreeMap::new();
    for pvb in pvbs {
        let Some(backup) = labels::BACKUP_NAME.label(&pvb.metadata) else { continue };
        let status = pvb.status.clone().unwrap_or_default();
        let progress = status.progress.unwrap_or_default();
        let pod = &pvb.spec.pod;
        by_backup.entry(backup.to_string()).or_default().push(VolumeRow {
            pod: format!("{}/{}", pod.namespace.as_deref().unwrap_or_default(), pod.name.as_deref().unwrap_or_default()),
            volume: pvb.spec.volume.clone(),
            node: pvb.spec.node.clone(),
            phase: debug_or(status.phase, "New"),
            bytes_done: progress.bytes_done,
            total_bytes: progress.total_bytes,
            snapshot_id: status.snapshot_id,
            message: status.message,
        });
    }
    by_backup
}

pub fn backup_row(backup: &Backup, volumes: &[VolumeRow]) -> BackupRow {
    let status = backup.status.clone().unwrap_or_default();
    let progress = status.progress.clone().unwrap_or_default();
    let phase = if backup.metadata.deletion_timestamp.is_some() { "Deleting".to_string() } else { debug_or(status.phase, "New") };
    BackupRow {
        name: backup.name_any(),
        phase,
        schedule: labels::SCHEDULE_NAME.label(&backup.metadata).map(String::from),
        storage_location: backup.spec.storage_location.clone(),
        items_backed_up: progress.items_backed_up,
        total_items: progress.total_items,
        warnings: status.warnings,
        errors: status.errors,
        created: backup.metadata.creation_timestamp.clone(),
        duration_seconds: seconds_between(status.start_timestamp.as_ref(), status.completion_timestamp.as_ref()),
        started: status.start_timestamp,
        completed: status.completion_timestamp,
        volumes: volumes.len() as u32,
        volume_bytes: (!volumes.is_empty()).then(|| volumes.iter().map(|v| v.total_bytes).sum()),
        failure_reason: status.failure_reason,
    }
}

pub fn restore_row(restore: &Restore) -> RestoreRow {
    let status = restore.status.clone().unwrap_or_default();
    let progress = status.progress.clone().unwrap_or_default();
    RestoreRow {
        name: restore.name_any(),
        backup: restore.spec.backup_name.clone(),
        schedule: restore.spec.schedule_name.clone(),
        phase: debug_or(status.phase, "New"),
        items_restored: progress.items_restored,
        total_items: progress.total_items,
        warnings: status.warnings,
        errors: status.errors,
        created: restore.metadata.creation_timestamp.clone(),
        duration_seconds: seconds_between(status.start_timestamp.as_ref(), status.completion_timestamp.as_ref()),
        started: status.start_timestamp,
        completed: status.completion_timestamp,
        failure_reason: status.failure_reason,
    }
}

pub fn schedule_row(schedule: &Schedule) -> ScheduleRow {
    let status = schedule.status.clone().unwrap_or_default();
    ScheduleRow {
        name: schedule.name_any(),
        schedule: schedule.spec.schedule.clone(),
        paused: schedule.spec.paused,
        phase: debug_or(status.phase, "New"),
        storage_location: schedule.spec.template.storage_location.clone(),
        ttl: schedule.spec.template.ttl.clone(),
        last_backup: status.last_backup,
        next_run: status.next_run,
        last_skipped: status.last_skipped,
    }
}

pub fn location_row(loc: &BackupStorageLocation) -> LocationRow {
    let status = loc.status.clone().unwrap_or_default();
    LocationRow {
        name: loc.name_any(),
        provider: loc.spec.provider.clone(),
        bucket: loc.spec.object_storage.bucket.clone(),
        prefix: loc.spec.object_storage.prefix.clone(),
        default: loc.spec.default,
        access_mode: format!("{:?}", loc.spec.access_mode()),
        phase: debug_or(status.phase, "Unknown"),
        last_validated: status.last_validation_time,
        last_synced: status.last_synced_time,
        message: status.message,
    }
}

pub fn extension_row(cm: &ConfigMap) -> ExtensionRow {
    let a = cm.annotations();
    ExtensionRow {
        namespace: cm.namespace().unwrap_or_default(),
        name: cm.name_any(),
        kind: cm.labels().get(stowage_runtime::EXTENSION_LABEL).cloned().unwrap_or_default(),
        scope: a.get(SCOPE_ANNOTATION).cloned(),
        state: a.get(STATE_ANNOTATION).cloned().unwrap_or_else(|| "Pending".into()),
        digest: a.get(DIGEST_ANNOTATION).cloned(),
        last_error: a.get(ERROR_ANNOTATION).cloned(),
    }
}

/// Newest first: by creation time, then name.
fn newest_first<T>(rows: &mut [T], key: impl Fn(&T) -> (Option<Time>, String)) {
    rows.sort_by(|a, b| {
        let (ta, na) = key(a);
        let (tb, nb) = key(b);
        tb.map(|t| t.0).cmp(&ta.map(|t| t.0)).then(na.cmp(&nb))
    });
}

/// The objects as listed, into an overview.
pub struct Listed {
    pub namespace: String,
    pub backups: Vec<Backup>,
    pub restores: Vec<Restore>,
    pub schedules: Vec<Schedule>,
    pub locations: Vec<BackupStorageLocation>,
    pub pod_volume_backups: Vec<PodVolumeBackup>,
    pub extensions: Vec<ConfigMap>,
}

impl Listed {
    pub fn overview(&self, now: Time) -> Overview {
        let volumes = volumes_by_backup(&self.pod_volume_backups);
        let mut backups: Vec<BackupRow> =
            self.backups.iter().map(|b| backup_row(b, volumes.get(&b.name_any()).map_or(&[], Vec::as_slice))).collect();
        newest_first(&mut backups, |r| (r.created.clone(), r.name.clone()));
        let mut restores: Vec<RestoreRow> = self.restores.iter().map(restore_row).collect();
        newest_first(&mut restores, |r| (r.created.clone(), r.name.clone()));
        let mut schedules: Vec<ScheduleRow> = self.schedules.iter().map(schedule_row).collect();
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        let mut locations: Vec<LocationRow> = self.locations.iter().map(location_row).collect();
        locations.sort_by(|a, b| a.name.cmp(&b.name));
        let mut extensions: Vec<ExtensionRow> = self.extensions.iter().map(extension_row).collect();
        extensions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Overview { namespace: self.namespace.clone(), generated_at: now, backups, restores, schedules, locations, extensions }
    }
}

/// A backup's page from the backup, its volumes, restores and what its location holds.
pub struct DetailParts {
    pub items: Result<BTreeMap<String, Vec<String>>, String>,
    pub messages: Option<Result<Messages, String>>,
    pub stored_bytes: Result<u64, String>,
}

pub fn backup_detail(backup: &Backup, pvbs: &[PodVolumeBackup], restores: &[Restore], parts: DetailParts) -> BackupDetail {
    let name = backup.name_any();
    let volumes = volumes_by_backup(pvbs).remove(&name).unwrap_or_default();
    let spec = &backup.spec;
    let status = backup.status.clone().unwrap_or_default();
    let hooks = status.hook_status.clone().unwrap_or_default();
    let selector = if spec.or_label_selectors.is_empty() {
        crate::commands::selector::format(spec.label_selector.as_ref())
    } else {
        spec.or_label_selectors.iter().map(|s| crate::commands::selector::format(Some(s))).collect::<Vec<_>>().join(" or ")
    };
    let mut restores: Vec<RestoreRow> =
        restores.iter().filter(|r| r.spec.backup_name.as_deref() == Some(name.as_str())).map(restore_row).collect();
    newest_first(&mut restores, |r| (r.created.clone(), r.name.clone()));
    BackupDetail {
        row: backup_row(backup, &volumes),
        labels: backup.labels().clone(),
        included_namespaces: spec.included_namespaces.clone(),
        excluded_namespaces: spec.excluded_namespaces.clone(),
        included_resources: spec.included_resources.clone(),
        excluded_resources: spec.excluded_resources.clone(),
        label_selector: selector,
        ttl: spec.ttl.clone(),
        expiration: status.expiration.clone(),
        extensions_requested: spec.extensions.clone(),
        validation_errors: status.validation_errors.clone(),
        hooks_attempted: hooks.hooks_attempted,
        hooks_failed: hooks.hooks_failed,
        hook_runs: hooks.runs,
        extension_runs: status.extensions.clone(),
        volumes,
        items: parts.items,
        messages: parts.messages,
        stored_bytes: parts.stored_bytes,
        restores,
    }
}

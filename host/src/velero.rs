//! Backups Velero wrote into a bucket: the same `backups/<name>/` directories, with the Backup
//! object in `velero-backup.json` and the archive in `<name>.tar.gz`. Sync turns them into
//! Stowage Backups and restores read their archives, so Velero users keep their old backups.

use serde_json::{Map, Value};
use stowage_api::layout::StoreLayout;
use stowage_api::requests::DownloadTargetKind;
use stowage_api::{BackupPhase, BackupSpec, BackupStatus};

/// Velero's Backup object, beside its archive.
const METADATA_FILE: &str = "velero-backup.json";

/// The spec fields Velero and Stowage share (names and meaning). Velero's hooks and
/// snapshot settings are left out: they describe how the backup was taken, not what it holds.
const SHARED_SPEC_FIELDS: &[&str] = &[
    "includedNamespaces",
    "excludedNamespaces",
    "includedResources",
    "excludedResources",
    "includeClusterResources",
    "labelSelector",
    "orLabelSelectors",
    "ttl",
    "defaultVolumesToFsBackup",
    "orderedResources",
];

const SHARED_STATUS_FIELDS: &[&str] = &[
    "phase",
    "formatVersion",
    "expiration",
    "validationErrors",
    "startTimestamp",
    "completionTimestamp",
    "progress",
    "warnings",
    "errors",
    "failureReason",
];

pub fn metadata_key(layout: &StoreLayout, backup: &str) -> String {
    format!("{}{METADATA_FILE}", layout.backup_dir(backup))
}

pub fn archive_key(layout: &StoreLayout, backup: &str) -> String {
    format!("{}{backup}.tar.gz", layout.backup_dir(backup))
}

/// Velero's key for a file a DownloadRequest asks for, where Velero's file is what Stowage
/// serves under that kind (its log; its resource list, in the same format), gzip-compressed.
pub fn download_key(layout: &StoreLayout, kind: DownloadTargetKind, backup: &str) -> Option<String> {
    let file = match kind {
        DownloadTargetKind::BackupLog => format!("{backup}-logs.gz"),
        DownloadTargetKind::BackupResourceList => format!("{backup}-resource-list.json.gz"),
        _ => return None,
    };
    Some(format!("{}{file}", layout.backup_dir(backup)))
}

/// Recompresses one of Velero's gzip files as zstd, the compression of Stowage's own.
pub fn gzip_to_zstd(gz: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoder = flate2::read::MultiGzDecoder::new(gz);
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
    std::io::copy(&mut decoder, &mut encoder)?;
    encoder.finish()
}

/// A Velero backup as Stowage sees it.
#[derive(Debug)]
pub struct VeleroBackup {
    pub spec: BackupSpec,
    pub status: BackupStatus,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Reads `velero-backup.json`. `Ok(None)`: a backup Velero has not finished (it uploads the
/// object again when it does), which sync leaves for later.
pub fn read_metadata(raw: &[u8]) -> Result<Option<VeleroBackup>, String> {
    let object: Value = serde_json::from_slice(raw).map_err(|e| format!("{METADATA_FILE} is not JSON: {e}"))?;
    if object["kind"] != "Backup" {
        return Err(format!("{METADATA_FILE} holds a {:?}, not a Backup", object["kind"]));
    }
    let mut spec = pick(&object["spec"], SHARED_SPEC_FIELDS);
    // Velero before 1.10 spelled the pod volume default after restic.
    if let Some(v) = object["spec"].get("defaultVolumesToRestic").filter(|v| !v.is_null()) {
        spec.entry("defaultVolumesToFsBackup").or_insert_with(|| v.clone());
    }
    let spec: BackupSpec =
        serde_json::from_value(Value::Object(spec)).map_err(|e| format!("{METADATA_FILE}: unusable spec: {e}"))?;
    let status = pick(&object["status"], SHARED_STATUS_FIELDS);
    let finished = status.get("phase").and_then(Value::as_str).is_some_and(|p| {
        serde_json::from_value::<BackupPhase>(Value::String(p.to_string())).is_ok_and(BackupPhase::is_terminal)
    });
    if !finished {
        return Ok(None);
    }
    let status: BackupStatus =
        serde_json::from_value(Value::Object(status)).map_err(|e| format!("{METADATA_FILE}: unusable status: {e}"))?;
    let labels = object["metadata"]["labels"]
        .as_object()
        .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Ok(Some(VeleroBackup { spec, status, labels }))
}

/// The named fields of `from` that are set.
fn pick(from: &Value, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|f| from.get(*f).filter(|v| !v.is_null()).map(|v| (f.to_string(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn velero_backup(phase: &str) -> Value {
        json!({"kind": "Backup", "apiVersion": "velero.io/v1",
            "metadata": {"name": "nightly", "namespace": "velero", "labels": {"velero.io/schedule-name": "daily"}},
            "spec": {"metadata": {}, "includedNamespaces": ["shop"], "ttl": "720h0m0s", "hooks": {"resources": [
                {"name": "freeze", "pre": [{"exec": {"container": "db", "command": ["fsfreeze"], "onError": "Fail"}}]}]},
                "storageLocation": "aws-default", "volumeSnapshotLocations": ["default"], "defaultVolumesToRestic": true,
                "snapshotMoveData": false, "csiSnapshotTimeout": "10m0s"},
            "status": {"version": 1, "formatVersion": "1.1.0", "phase": phase, "expiration": "2099-01-01T00:00:00Z",
                "progress": {"totalItems": 12, "itemsBackedUp": 12}, "warnings": 2,
                "hookStatus": {"hooksAttempted": 1}, "volumeSnapshotsAttempted": 0}})
    }

    #[test]
    fn a_finished_velero_backup_reads_as_a_stowage_one() {
        let raw = serde_json::to_vec(&velero_backup("PartiallyFailed")).unwrap();
        let b = read_metadata(&raw).unwrap().unwrap();
        assert_eq!(b.spec.included_namespaces, vec!["shop"]);
        assert_eq!(b.spec.ttl, "720h0m0s");
        assert_eq!(b.spec.default_volumes_to_fs_backup, Some(true), "restic spelling of Velero < 1.10");
        assert_eq!(b.spec.storage_location, None, "Velero's location name means nothing here");
        assert!(b.spec.hooks.is_empty(), "Velero's hooks describe how it ran, not what it holds");
        assert_eq!(b.status.phase, Some(BackupPhase::PartiallyFailed));
        assert_eq!(b.status.progress.as_ref().unwrap().items_backed_up, 12);
        assert_eq!(b.status.warnings, 2);
        assert_eq!(b.labels["velero.io/schedule-name"], "daily");
    }

    #[test]
    fn unfinished_backups_wait_and_other_objects_are_refused() {
        for phase in ["InProgress", "WaitingForPluginOperations", "FinalizingPartiallyFailed"] {
            let raw = serde_json::to_vec(&velero_backup(phase)).unwrap();
            assert!(read_metadata(&raw).unwrap().is_none(), "{phase}");
        }
        let restore = serde_json::to_vec(&json!({"kind": "Restore", "spec": {}, "status": {}})).unwrap();
        assert!(read_metadata(&restore).unwrap_err().contains("not a Backup"));
        assert!(read_metadata(b"{oops").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn keys_follow_velero() {
        let layout = StoreLayout::new(None);
        assert_eq!(metadata_key(&layout, "n"), "backups/n/velero-backup.json");
        assert_eq!(archive_key(&layout, "n"), "backups/n/n.tar.gz");
        assert_eq!(download_key(&layout, DownloadTargetKind::BackupLog, "n").unwrap(), "backups/n/n-logs.gz");
        assert_eq!(download_key(&layout, DownloadTargetKind::BackupResults, "n"), None, "Velero's results differ in format");
    }

    #[test]
    fn gzip_is_served_as_zstd() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"level=info msg=\"Backup completed\"\n").unwrap();
        let zst = gzip_to_zstd(&gz.finish().unwrap()).unwrap();
        assert_eq!(zstd::decode_all(zst.as_slice()).unwrap(), b"level=info msg=\"Backup completed\"\n");
        assert!(gzip_to_zstd(b"not gzip").is_err());
    }
}

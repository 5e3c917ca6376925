//! Requests the CLI makes of the server: deleting a backup with its data, and downloading a
//! backup's or restore's files without bucket credentials.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to delete a backup, its object-store data and its volume snapshots.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "DeleteBackupRequest",
    namespaced,
    status = "DeleteBackupRequestStatus",
    category = "stowage",
    shortname = "dbr",
    derive = "PartialEq",
    doc = "A request to delete a backup with its object-store data and volume snapshots.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DeleteBackupRequestSpec {
    pub backup_name: String,
}

/// Where a deletion is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeleteBackupRequestPhase {
    New,
    InProgress,
    Processed,
}

/// Whether the deletion is done, and what failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteBackupRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeleteBackupRequestPhase>,
    /// What could not be deleted; empty when the deletion succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A request for one of a backup's or restore's files, served by the server.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "DownloadRequest",
    namespaced,
    status = "DownloadRequestStatus",
    category = "stowage",
    shortname = "dlreq",
    derive = "PartialEq",
    doc = "A request for a backup's or restore's file (logs, results, contents), served by the server.",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.target.kind"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRequestSpec {
    pub target: DownloadTarget,
}

/// Which file of which backup or restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadTarget {
    pub kind: DownloadTargetKind,
    /// The backup's or restore's name.
    pub name: String,
    /// For `BackupVolumeListing`: which pod volume, and the path in it to list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumePath>,
}

/// A path in one pod volume of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumePath {
    /// The pod's namespace and name when it was backed up.
    pub namespace: String,
    pub pod: String,
    pub volume: String,
    /// Relative to the volume; empty for its root.
    #[serde(default)]
    pub path: String,
}

/// The files that can be downloaded (Velero's target kinds, plus extension provenance).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DownloadTargetKind {
    #[default]
    BackupLog,
    BackupContents,
    BackupResults,
    BackupResourceList,
    BackupVolumeInfos,
    BackupExtensions,
    RestoreLog,
    RestoreResults,
    /// The entries of a path in one of the backup's pod volumes, as JSON (`stowage backup browse`).
    BackupVolumeListing,
}

/// Whether the server has served the request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DownloadRequestPhase {
    New,
    Processed,
}

/// Where to fetch the requested file once the server has processed the request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DownloadRequestPhase>,
    /// A pre-signed URL to fetch the file from, for stores that support them.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "downloadURL")]
    pub download_url: Option<String>,
    /// Where the server put the file in Secrets (older servers; small files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ServedContent>,
    /// Where the server streams the file: through the API server's proxy to its Service, so
    /// it reaches users the object store does not (filesystem locations, private endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<ServedStream>,
    /// When the URL or served content stops being available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// Why the request could not be served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// File content served through the API: a Secret in the server's namespace (the same RBAC that
/// guards DownloadRequests guards it), deleted when the request expires.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedContent {
    pub secret_name: String,
    pub key: String,
}

/// A file the server streams: `GET /api/v1/namespaces/<ns>/services/<service>:<port>/proxy<path>`
/// with the token in the `X-Stowage-Download-Token` header. Reaching it takes both the
/// `services/proxy` permission and the token, which only readers of the request see.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedStream {
    pub service: String,
    /// The Service port's name.
    pub port: String,
    pub path: String,
    pub token: String,
}

/// The header a streamed download's token travels in.
pub const DOWNLOAD_TOKEN_HEADER: &str = "x-stowage-download-token";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_request_round_trips() {
        let yaml = r#"
apiVersion: stowage.io/v1alpha1
kind: DownloadRequest
metadata:
  name: nginx-backup-logs-1
  namespace: stowage
spec:
  target:
    kind: BackupLog
    name: nginx-backup
status:
  phase: Processed
  downloadURL: https://minio.example/velero/backups/nginx-backup/nginx-backup-logs.zst?X-Amz-Signature=x
  expiration: "2024-05-01T10:10:00Z"
"#;
        let request: DownloadRequest = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(request.spec.target.kind, DownloadTargetKind::BackupLog);
        assert!(request.status.as_ref().unwrap().download_url.as_ref().unwrap().starts_with("https://"));
        let original: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), original);
    }

    #[test]
    fn delete_backup_request_round_trips() {
        let yaml = r#"
apiVersion: stowage.io/v1alpha1
kind: DeleteBackupRequest
metadata:
  name: nginx-backup-9xk2
  namespace: stowage
spec:
  backupName: nginx-backup
status:
  phase: Processed
  errors: ["error deleting snapshot 3f1e2d4c: repository locked"]
"#;
        let request: DeleteBackupRequest = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(request.status.as_ref().unwrap().phase, Some(DeleteBackupRequestPhase::Processed));
        let original: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), original);
    }
}

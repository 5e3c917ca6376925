//! `BackupRepository`: the restic-format repository holding one namespace's volume data in one
//! storage location.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One repository per (storage location, volume namespace).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "BackupRepository",
    namespaced,
    status = "BackupRepositoryStatus",
    category = "stowage",
    shortname = "brepo",
    derive = "PartialEq",
    doc = "A restic-format repository of pod volume data for one namespace in one storage location.",
    printcolumn(name = "Volume Namespace", type_ = "string", json_path = ".spec.volumeNamespace"),
    printcolumn(name = "Storage Location", type_ = "string", json_path = ".spec.backupStorageLocation"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Maintenance", type_ = "date", json_path = ".status.lastMaintenanceTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositorySpec {
    /// The namespace whose pod volumes the repository holds.
    pub volume_namespace: String,
    pub backup_storage_location: String,
    /// The repository's location as restic names it (e.g. `s3:http://host/bucket/restic/ns`).
    pub restic_identifier: String,
    /// How often the repository is checked and pruned (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_frequency: Option<String>,
}

/// Whether a repository can be used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupRepositoryPhase {
    New,
    Ready,
    NotReady,
}

/// Whether the repository is ready for use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRepositoryPhase>,
    /// Why the repository is NotReady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the repository was last checked and pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_maintenance_time: Option<Time>,
    /// The last few maintenance runs, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_maintenance: Vec<MaintenanceRun>,
    /// Bytes the repository holds, as of the last maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// How a maintenance run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenanceResult {
    Succeeded,
    Failed,
}

/// One maintenance run of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceRun {
    pub result: MaintenanceResult,
    pub start_timestamp: Time,
    pub completion_timestamp: Time,
    /// Bytes the run removed from the storage location.
    #[serde(default)]
    pub bytes_freed: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_velero_like_yaml() {
        let yaml = r#"
apiVersion: stowage.io/v1alpha1
kind: BackupRepository
metadata:
  name: nginx-example-default-x2kq
  namespace: stowage
spec:
  volumeNamespace: nginx-example
  backupStorageLocation: default
  resticIdentifier: s3:http://minio.velero.svc:9000/velero/restic/nginx-example
  maintenanceFrequency: 168h0m0s
status:
  phase: Ready
  lastMaintenanceTime: "2024-05-01T00:00:00Z"
"#;
        let repo: BackupRepository = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(repo.status.as_ref().unwrap().phase, Some(BackupRepositoryPhase::Ready));
        let original: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&repo).unwrap(), original);
    }
}

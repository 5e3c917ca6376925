//! `PodVolumeBackup` and `PodVolumeRestore`: one volume of one pod, backed up or restored by the
//! node agent running on the pod's node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The backup of one pod volume into the namespace's repository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "PodVolumeBackup",
    namespaced,
    status = "PodVolumeStatus",
    category = "stowage",
    shortname = "pvb",
    derive = "PartialEq",
    doc = "The backup of one pod volume, run by the node agent on the pod's node.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod.name"),
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volume"),
    printcolumn(name = "Bytes Done", type_ = "integer", json_path = ".status.progress.bytesDone"),
    printcolumn(name = "Total Bytes", type_ = "integer", json_path = ".status.progress.totalBytes"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeBackupSpec {
    /// The node the pod runs on; only that node's agent acts on it.
    pub node: String,
    pub pod: ObjectReference,
    /// The volume's name in the pod spec.
    pub volume: String,
    pub backup_storage_location: String,
    /// The repository's location (e.g. `s3:http://host/bucket/prefix/restic/ns`).
    pub repo_identifier: String,
    /// Tags written on the snapshot (backup, pod, PVC identity, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The restore of one pod volume from a snapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "PodVolumeRestore",
    namespaced,
    status = "PodVolumeStatus",
    category = "stowage",
    shortname = "pvr",
    derive = "PartialEq",
    doc = "The restore of one pod volume, run by the node agent on the restored pod's node.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Pod Namespace", type_ = "string", json_path = ".spec.pod.namespace"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod.name"),
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volume"),
    printcolumn(name = "Bytes Done", type_ = "integer", json_path = ".status.progress.bytesDone"),
    printcolumn(name = "Total Bytes", type_ = "integer", json_path = ".status.progress.totalBytes"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeRestoreSpec {
    /// The restored pod (the node agent finds its node once it is scheduled).
    pub pod: ObjectReference,
    pub volume: String,
    pub backup_storage_location: String,
    pub repo_identifier: String,
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// The namespace the volume was backed up from (its repository), when mapped elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Only these paths of the volume (relative to it: files, or directories with what is
    /// beneath them), restored into the volume of a running pod (`stowage restore files`);
    /// the whole volume, into a pod held by the restore helper, when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_paths: Vec<String>,
    /// With include paths: the directory of the volume they are restored under (e.g.
    /// `.stowage-restored/<name>`); the volume's root, over what is there, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dir: Option<String>,
}

impl PodVolumeRestoreSpec {
    /// A restore of chosen files into a running pod, not of a whole volume.
    pub fn is_file_restore(&self) -> bool {
        !self.include_paths.is_empty()
    }
}

/// Where a pod volume operation is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodVolumePhase {
    New,
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl PodVolumePhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// Status of a PodVolumeBackup or PodVolumeRestore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PodVolumePhase>,
    /// The volume's directory on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The snapshot written (backups only).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "snapshotID")]
    pub snapshot_id: Option<String>,
    /// Why the operation failed or was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the operation finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<PodVolumeProgress>,
    /// How many times a node agent started it (more than one: an agent restarted while it ran,
    /// and the next one took it up again).
    #[serde(default, skip_serializing_if = "crate::serde_util::is_zero_u32")]
    pub attempts: u32,
}

/// Bytes processed so far, updated while the operation runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeProgress {
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub bytes_done: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVB: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: PodVolumeBackup
metadata:
  name: nginx-backup-x7k2p
  namespace: stowage
  labels:
    stowage.io/backup-name: nginx-backup
spec:
  node: node-1
  pod:
    kind: Pod
    namespace: nginx-example
    name: nginx-deployment-66689547d-kgkpv
    uid: 4b4a6a3c-0000-4000-8000-000000000001
  volume: nginx-logs
  backupStorageLocation: default
  repoIdentifier: s3:http://minio.velero.svc:9000/velero/restic/nginx-example
  tags:
    backup: nginx-backup
    pvc-uid: 0d8c1b7e-0000-4000-8000-000000000002
status:
  phase: Completed
  path: /host_pods/4b4a6a3c/volumes/kubernetes.io~csi/pvc-1/mount
  snapshotID: 3f1e2d4c
  progress:
    totalBytes: 1024
    bytesDone: 1024
"#;

    const PVR: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: PodVolumeRestore
metadata:
  name: nginx-restore-9dk2s
  namespace: stowage
spec:
  pod:
    kind: Pod
    namespace: nginx-example
    name: nginx-deployment-66689547d-kgkpv
  volume: nginx-logs
  backupStorageLocation: default
  repoIdentifier: s3:http://minio.velero.svc:9000/velero/restic/nginx-example
  snapshotID: 3f1e2d4c
  sourceNamespace: nginx-example
status:
  phase: InProgress
  progress:
    totalBytes: 1024
    bytesDone: 0
"#;

    #[test]
    fn round_trips_pod_volume_backup() {
        let pvb: PodVolumeBackup = serde_yaml::from_str(PVB).unwrap();
        let status = pvb.status.as_ref().unwrap();
        assert_eq!(status.snapshot_id.as_deref(), Some("3f1e2d4c"));
        assert!(status.phase.unwrap().is_terminal());
        let original: serde_json::Value = serde_yaml::from_str(PVB).unwrap();
        assert_eq!(serde_json::to_value(&pvb).unwrap(), original);
    }

    #[test]
    fn round_trips_pod_volume_restore() {
        let pvr: PodVolumeRestore = serde_yaml::from_str(PVR).unwrap();
        assert_eq!(pvr.spec.snapshot_id, "3f1e2d4c");
        assert!(!pvr.status.as_ref().unwrap().phase.unwrap().is_terminal());
        let original: serde_json::Value = serde_yaml::from_str(PVR).unwrap();
        assert_eq!(serde_json::to_value(&pvr).unwrap(), original);
    }
}

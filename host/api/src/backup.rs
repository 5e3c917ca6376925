//! `Backup`: one backup of Kubernetes objects and, optionally, pod volume data.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DEFAULT_BACKUP_TTL;
use crate::hooks::{BackupHooks, HookStatus};
use crate::serde_util::is_zero_u32;

/// What to back up, where to, and for how long to keep it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    category = "stowage",
    derive = "PartialEq",
    doc = "A backup of Kubernetes objects and, optionally, pod volume data, kept in a storage location.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Errors", type_ = "integer", json_path = ".status.errors"),
    printcolumn(name = "Warnings", type_ = "integer", json_path = ".status.warnings"),
    printcolumn(name = "Created", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiration"),
    printcolumn(name = "Storage Location", type_ = "string", json_path = ".spec.storageLocation")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Namespaces to include (globs). Empty or `*` means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Namespaces to exclude (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Resources to include, as `kubectl` names them (`deployments`, `deploy.apps`, `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// Whether cluster-scoped resources are included. Unset means automatic: all of them for a
    /// whole-cluster backup, only those related to included items otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_cluster_resources: Option<bool>,
    /// Only objects matching this selector are backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Objects matching any of these selectors are backed up (exclusive with labelSelector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or_label_selectors: Vec<LabelSelector>,
    /// How long the backup is kept (Go duration).
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// The BackupStorageLocation to write to; the default location when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_location: Option<String>,
    /// Back up every pod volume unless opted out (instead of only annotated ones). Unset means
    /// the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_volumes_to_fs_backup: Option<bool>,
    /// Also back up the data of claims in scope that no pod mounts, through short-lived access
    /// pods (a claim opts in alone with the annotation `backup.stowage.io/include-unmounted`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup_unmounted_volumes: bool,
    #[serde(default, skip_serializing_if = "BackupHooks::is_empty")]
    pub hooks: BackupHooks,
    /// Per-resource order in which objects are written, e.g. `pods: ns1/a,ns1/b`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ordered_resources: BTreeMap<String, String>,
    /// Opt-in extensions to run in addition to the always-on ones (`name` for a ConfigMap in
    /// Stowage's namespace, `namespace/name` for another). Each must be loaded and active, or
    /// the backup fails validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

fn default_ttl() -> String {
    DEFAULT_BACKUP_TTL.to_string()
}

impl Default for BackupSpec {
    fn default() -> Self {
        BackupSpec {
            included_namespaces: Vec::new(),
            excluded_namespaces: Vec::new(),
            included_resources: Vec::new(),
            excluded_resources: Vec::new(),
            include_cluster_resources: None,
            label_selector: None,
            or_label_selectors: Vec::new(),
            ttl: default_ttl(),
            storage_location: None,
            default_volumes_to_fs_backup: None,
            backup_unmounted_volumes: false,
            hooks: BackupHooks::default(),
            ordered_resources: BTreeMap::new(),
            extensions: Vec::new(),
        }
    }
}

impl BackupSpec {
    /// The TTL as a duration.
    pub fn ttl_duration(&self) -> Result<std::time::Duration, crate::ApiError> {
        crate::duration::parse(&self.ttl)
    }
}

/// Where a backup is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    New,
    /// Waiting for a backup of the same namespaces, or for a free slot, to start.
    Queued,
    FailedValidation,
    InProgress,
    /// Objects are written; pod volume backups are still running.
    WaitingForVolumes,
    /// Everything ran; results are being uploaded.
    Finalizing,
    Completed,
    PartiallyFailed,
    Failed,
    Deleting,
}

impl BackupPhase {
    /// Whether the backup will not change any more (except by deletion).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::PartiallyFailed | Self::Failed | Self::FailedValidation)
    }
}

/// What happened to a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// Version of the archive format written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<String>,
    /// When the backup is due for garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the operation finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub warnings: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_status: Option<HookStatus>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_backups_attempted: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_backups_completed: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_backups_failed: u32,
    /// Extensions that ran during the backup, with the digest of the code that ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionRun>,
    /// Why the backup failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// How many times the backup was started (more than one: a server stopped while it ran,
    /// and the next leader started it again).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    /// While Queued: how many queued backups go first, plus one.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub queue_position: u32,
}

/// How far a backup got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub total_items: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub items_backed_up: u32,
}

/// An extension that ran during an operation: its name and content digest (provenance).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRun {
    /// `<namespace>/<name>` of the extension's ConfigMap.
    pub name: String,
    /// `sha256:<hex>` of the module or script.
    pub digest: String,
    /// `Cluster`, or `Namespace <ns>` for an application team's extension.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookErrorMode;

    const VELERO_LIKE: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: Backup
metadata:
  name: nginx-backup
  namespace: stowage
spec:
  includedNamespaces: [nginx-example]
  excludedResources: [events]
  includeClusterResources: false
  labelSelector:
    matchLabels:
      app: nginx
  ttl: 72h0m0s
  storageLocation: default
  defaultVolumesToFsBackup: true
  hooks:
    resources:
      - name: freeze
        includedNamespaces: [nginx-example]
        labelSelector:
          matchLabels:
            app: nginx
        pre:
          - exec:
              container: fsfreeze
              command: [/sbin/fsfreeze, --freeze, /var/log/nginx]
              onError: Fail
              timeout: 30s
        post:
          - exec:
              container: fsfreeze
              command: [/sbin/fsfreeze, --unfreeze, /var/log/nginx]
  orderedResources:
    pods: nginx-example/a,nginx-example/b
  extensions: [mysqldump]
status:
  phase: PartiallyFailed
  formatVersion: 1.1.0
  expiration: "2024-05-04T10:00:00Z"
  startTimestamp: "2024-05-01T10:00:00Z"
  completionTimestamp: "2024-05-01T10:01:00Z"
  progress:
    totalItems: 20
    itemsBackedUp: 19
  warnings: 2
  errors: 1
  hookStatus:
    hooksAttempted: 2
    hooksFailed: 1
  podVolumeBackupsAttempted: 1
  podVolumeBackupsCompleted: 1
  extensions:
    - name: mysqldump
      digest: sha256:abcd
"#;

    #[test]
    fn round_trips_velero_like_yaml() {
        let backup: Backup = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(backup.spec.ttl, "72h0m0s");
        assert_eq!(backup.spec.include_cluster_resources, Some(false));
        let hook = &backup.spec.hooks.resources[0];
        assert_eq!(hook.pre[0].exec.on_error, Some(HookErrorMode::Fail));
        assert_eq!(hook.post[0].exec.timeout, None);
        let status = backup.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::PartiallyFailed));
        assert_eq!(status.progress.as_ref().unwrap().items_backed_up, 19);

        let original: serde_json::Value = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(serde_json::to_value(&backup).unwrap(), original);
    }

    #[test]
    fn empty_spec_gets_defaults() {
        let backup: Backup =
            serde_yaml::from_str("apiVersion: stowage.io/v1alpha1\nkind: Backup\nmetadata: {name: b}\nspec: {}\n")
                .unwrap();
        assert_eq!(backup.spec, BackupSpec::default());
        assert_eq!(backup.spec.ttl, "720h");
        assert_eq!(backup.spec.ttl_duration().unwrap().as_secs(), 720 * 3600);
        assert_eq!(backup.spec.include_cluster_resources, None, "unset means automatic");
        // Only the TTL default is written back.
        assert_eq!(serde_json::to_value(&backup.spec).unwrap(), serde_json::json!({"ttl": "720h"}));
    }

    #[test]
    fn phases_use_velero_spelling_and_terminality() {
        assert_eq!(serde_json::to_value(BackupPhase::WaitingForVolumes).unwrap(), "WaitingForVolumes");
        assert!(BackupPhase::PartiallyFailed.is_terminal());
        assert!(!BackupPhase::Finalizing.is_terminal());
        assert!(serde_json::from_value::<BackupPhase>("Bogus".into()).is_err());
    }
}

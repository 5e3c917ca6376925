//! `Restore`: bringing a backup's objects and volume data back into a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::ExtensionRun;
use crate::hooks::{HookStatus, RestoreHooks};
use crate::serde_util::is_zero_u32;

/// What to restore, from which backup, and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    category = "stowage",
    derive = "PartialEq",
    doc = "A restore of a backup's objects and pod volume data into this cluster.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Errors", type_ = "integer", json_path = ".status.errors"),
    printcolumn(name = "Warnings", type_ = "integer", json_path = ".status.warnings"),
    printcolumn(name = "Created", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The backup to restore. Either this or scheduleName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Restore the latest completed backup of this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// Whether cluster-scoped resources are restored; unset means automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_cluster_resources: Option<bool>,
    /// Restore objects of namespace `key` into namespace `value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or_label_selectors: Vec<LabelSelector>,
    /// Whether persistent volumes are restored; unset means yes.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "restorePVs")]
    pub restore_pvs: Option<bool>,
    /// What to do with objects that already exist; unset means `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_resource_policy: Option<ExistingResourcePolicy>,
    /// Keep the node ports of restored services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_node_ports: Option<bool>,
    #[serde(default, skip_serializing_if = "RestoreHooks::is_empty")]
    pub hooks: RestoreHooks,
    /// A ConfigMap (kind `ConfigMap`) holding resource modifier rules (JSON/merge patches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_modifier: Option<TypedLocalObjectReference>,
    /// Opt-in extensions to run in addition to the always-on ones (`name` for a ConfigMap in
    /// Stowage's namespace, `namespace/name` for another). Each must be loaded and active, or
    /// the restore fails validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// What a restore does with an object that already exists in the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExistingResourcePolicy {
    /// Leave it alone, with a warning when it differs from the backup.
    #[default]
    None,
    /// Patch it to match the backup.
    Update,
}

/// Where a restore is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    New,
    /// Waiting for a restore into the same namespaces, or for a free slot, to start.
    Queued,
    FailedValidation,
    InProgress,
    /// Objects are created; pod volume restores are still running.
    WaitingForVolumes,
    Finalizing,
    Completed,
    PartiallyFailed,
    Failed,
}

impl RestorePhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::PartiallyFailed | Self::Failed | Self::FailedValidation)
    }
}

/// What happened to a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the operation finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RestoreProgress>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub warnings: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_status: Option<HookStatus>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_restores_attempted: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_restores_completed: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pod_volume_restores_failed: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// How many times the restore was started (more than one: a server stopped while it ran,
    /// and the next leader resumed it).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    /// While Queued: how many queued restores go first, plus one.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub queue_position: u32,
}

/// How far a restore got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub total_items: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub items_restored: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const VELERO_LIKE: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: Restore
metadata:
  name: nginx-restore
  namespace: stowage
spec:
  backupName: nginx-backup
  includedNamespaces: ["*"]
  excludedResources: [nodes, events]
  namespaceMapping:
    nginx-example: nginx-copy
  restorePVs: true
  existingResourcePolicy: update
  preserveNodePorts: false
  resourceModifier:
    kind: ConfigMap
    name: modifiers
  hooks:
    resources:
      - name: warm-cache
        includedNamespaces: [nginx-example]
        postHooks:
          - init:
              initContainers:
                - name: restore-hook-init
                  image: alpine:3.20
                  command: [/bin/ash, -c, "echo hi > /data/hello"]
              timeout: 2m
          - exec:
              container: nginx
              command: [/bin/sh, -c, "nginx -s reload"]
              onError: Continue
              execTimeout: 1m
              waitTimeout: 5m
              waitForReady: true
status:
  phase: Completed
  startTimestamp: "2024-05-01T11:00:00Z"
  progress:
    totalItems: 9
    itemsRestored: 9
  warnings: 3
  podVolumeRestoresAttempted: 1
  podVolumeRestoresCompleted: 1
"#;

    #[test]
    fn round_trips_velero_like_yaml() {
        let restore: Restore = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(restore.spec.existing_resource_policy, Some(ExistingResourcePolicy::Update));
        assert_eq!(restore.spec.restore_pvs, Some(true));
        let hooks = &restore.spec.hooks.resources[0].post_hooks;
        assert_eq!(hooks[0].init.as_ref().unwrap().init_containers[0].name, "restore-hook-init");
        assert_eq!(hooks[1].exec.as_ref().unwrap().wait_for_ready, Some(true));
        let original: serde_json::Value = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(serde_json::to_value(&restore).unwrap(), original);
    }

    #[test]
    fn existing_resource_policy_is_lowercase() {
        assert_eq!(serde_json::to_value(ExistingResourcePolicy::None).unwrap(), "none");
        assert!(serde_json::from_value::<ExistingResourcePolicy>("Update".into()).is_err());
        assert_eq!(ExistingResourcePolicy::default(), ExistingResourcePolicy::None);
    }
}

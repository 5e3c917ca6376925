//! `Schedule`: backups taken on a cron schedule from a template.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::BackupSpec;
use crate::serde_util::is_false;

/// When to take backups and what they look like.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    category = "stowage",
    derive = "PartialEq",
    doc = "Backups taken on a schedule; each is named <schedule>-<YYYYMMDDhhmmss>.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackup"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// A cron expression (`0 3 * * *`), `@every 24h`, or a macro such as `@daily`; may start
    /// with `CRON_TZ=<zone>`.
    pub schedule: String,
    /// The spec of each backup created.
    #[serde(default)]
    pub template: BackupSpec,
    /// A paused schedule creates no backups.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Do not take a backup as soon as the schedule is created or unpaused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_immediately: Option<bool>,
    /// Make the schedule the owner of its backups, so deleting it deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_owner_references_in_backup: Option<bool>,
}

/// Whether a schedule is valid and creating backups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchedulePhase {
    New,
    Enabled,
    FailedValidation,
}

/// Whether the schedule is valid and when it last created a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SchedulePhase>,
    /// When the last backup was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<Time>,
    /// When a backup was last skipped (because the previous one was still running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const VELERO_LIKE: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: Schedule
metadata:
  name: nightly
  namespace: stowage
spec:
  schedule: CRON_TZ=Europe/Paris 0 3 * * *
  paused: true
  skipImmediately: true
  useOwnerReferencesInBackup: false
  template:
    includedNamespaces: [nextcloud]
    ttl: 168h0m0s
    defaultVolumesToFsBackup: true
status:
  phase: Enabled
  lastBackup: "2024-05-01T01:00:00Z"
"#;

    #[test]
    fn round_trips_velero_like_yaml() {
        let schedule: Schedule = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert!(schedule.spec.paused);
        assert_eq!(schedule.spec.template.ttl, "168h0m0s");
        assert_eq!(schedule.status.as_ref().unwrap().phase, Some(SchedulePhase::Enabled));
        let original: serde_json::Value = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(serde_json::to_value(&schedule).unwrap(), original);
    }

    #[test]
    fn template_defaults_apply() {
        let spec: ScheduleSpec = serde_yaml::from_str("schedule: '@every 24h'").unwrap();
        assert!(!spec.paused);
        assert_eq!(spec.template.ttl, "720h");
    }
}

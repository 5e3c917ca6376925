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
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRun"),
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
    /// Whether to wait for the first due time after the schedule is created or unpaused.
    /// Unset means true: no backup is taken until the schedule says so. `false` takes one
    /// backup at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_immediately: Option<bool>,
    /// Make the schedule the owner of its backups, so deleting it deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_owner_references_in_backup: Option<bool>,
    /// How many of the schedule's backups to keep, counted like restic's `forget --keep-*`;
    /// applied after each run, on top of each backup's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

impl ScheduleSpec {
    /// Whether the first run waits for the first due time (the default).
    pub fn skips_immediately(&self) -> bool {
        self.skip_immediately.unwrap_or(true)
    }
}

/// Count-based retention: a backup is kept when any rule keeps it (restic's semantics).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
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
    /// The due time of the run the last backup was created for (its name carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<Time>,
    /// The due time of the last run skipped because the schedule's previous backup was still
    /// running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<Time>,
    /// When the next backup is due (unset while paused or invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// When the schedule was seen paused; set while it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Time>,
    /// When the schedule was last seen unpaused: runs due before it are not made up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Time>,
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

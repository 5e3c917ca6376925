//! Hook specifications in the shape of Velero's `BackupHooks` and `RestoreHooks`, so that hook
//! blocks copied from Velero manifests work unchanged.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serde_util::is_zero_u32;

/// What happens to the operation when a hook fails.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HookErrorMode {
    /// Record the failure and carry on.
    Continue,
    /// Record the failure and mark the pod's volumes (and so the backup) as failed. The default.
    #[default]
    Fail,
}

/// Hooks run around the backup of matching pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupHooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<BackupResourceHookSpec>,
}

impl BackupHooks {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// A set of hooks and the pods they apply to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupResourceHookSpec {
    /// A name for this hook set, used in logs and status.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Run before the pod's volumes are backed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<BackupResourceHook>,
    /// Run after the pod's volumes are backed up, whether that succeeded or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<BackupResourceHook>,
}

/// One backup hook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BackupResourceHook {
    pub exec: ExecHook,
}

/// A command run in a container of the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecHook {
    /// The container to run in; the pod's first container when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments (not run through a shell).
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<HookErrorMode>,
    /// How long to wait for the command (Go duration, default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Hooks run on restored pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreHooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<RestoreResourceHookSpec>,
}

impl RestoreHooks {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// A set of restore hooks and the pods they apply to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResourceHookSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_hooks: Vec<RestoreResourceHook>,
}

/// One restore hook: an exec in a running container, or init containers added to the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RestoreResourceHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecRestoreHook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRestoreHook>,
}

/// A command run in a restored pod once its container is up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecRestoreHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<HookErrorMode>,
    /// How long the command may run (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_timeout: Option<String>,
    /// How long to wait for the container to be running (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<String>,
    /// Wait for the container to be ready, not only running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_ready: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub max_retries: u32,
}

/// Init containers added to a restored pod, run before its own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitRestoreHook {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// How many hooks an operation ran and how many of them failed: every command (and every hook
/// extension call) counts once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub hooks_attempted: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub hooks_failed: u32,
    /// Each hook as it ran, the first [`HookStatus::MAX_RUNS`] of them (the operation's log has
    /// every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<HookRun>,
}

impl HookStatus {
    /// Runs listed in the status; more are counted, and logged, but not listed.
    pub const MAX_RUNS: usize = 200;

    /// Counts a run, and lists it while there is room.
    pub fn record(&mut self, run: HookRun) {
        self.hooks_attempted += 1;
        if run.failed() {
            self.hooks_failed += 1;
        }
        if self.runs.len() < Self::MAX_RUNS {
            self.runs.push(run);
        }
    }
}

/// One hook as it ran.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRun {
    /// The pod, as `namespace/name`.
    pub pod: String,
    /// Empty for a hook extension.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// `pre`, `post` or `post-restore`.
    pub phase: String,
    /// Where it was declared: `annotation`, `spec <hook set>` or `extension <namespace>/<name>`.
    pub hook: String,
    /// The command's exit code; none when it could not be started or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_millis: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Run by a server that started after the one that owed it had stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_restart: bool,
}

impl HookRun {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

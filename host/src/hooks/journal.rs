//! The post hooks a backup owes (DESIGN §4): written as an annotation on the Backup before a
//! pod's pre hooks run, removed once its post hooks ran. A server that starts pays what a
//! stopped one owed (velero#511: a filesystem left frozen, a database left locked), before it
//! marks the interrupted backup Failed.

use std::collections::BTreeMap;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stowage_api::Backup;
use stowage_pipeline::hooks::{ExecHookPlan, HookPhase};
use stowage_runtime::{HookTarget, ObjectRef, OperationKind};

use super::extension::{BoundExtension, HookExtensions};
use super::{run_exec, HookOutcome, Ledger, PodRef};
use crate::context::Context;
use crate::oplog::OperationLog;

/// Annotations on a Backup under this prefix, one per pod (`owed-hooks.stowage.io/<pod uid>`),
/// each the post hooks that pod is owed.
pub const OWED_PREFIX: &str = "owed-hooks.stowage.io/";

/// The post hooks one pod is owed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwedHooks {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// Set for the hooks of a workload (`target: workload`): `pod` and `uid` are then the
    /// workload's, and only extensions run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<ObjectRef>,
    /// Hook extensions first (undone in the reverse order of the pre hooks), then commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<BoundExtension>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<ExecHookPlan>,
}

impl OwedHooks {
    pub fn pod_ref(&self) -> PodRef {
        PodRef { namespace: self.namespace.clone(), name: self.pod.clone(), uid: self.uid.clone() }
    }

    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty() && self.post.is_empty()
    }
}

/// The debts of one backup.
pub struct Journal {
    api: Api<Backup>,
    backup: String,
}

impl Journal {
    pub fn new(ctx: &Context, backup: &str) -> Journal {
        Journal { api: Api::namespaced(ctx.client.clone(), &ctx.namespace), backup: backup.to_string() }
    }

    fn key(uid: &str) -> String {
        format!("{OWED_PREFIX}{uid}")
    }

    /// Records that `owed`'s post hooks must run; call before its pre hooks.
    pub async fn owe(&self, owed: &OwedHooks) -> Result<(), kube::Error> {
        let value = serde_json::to_string(owed).unwrap_or_default();
        self.patch(json!({ Self::key(&owed.uid): value })).await
    }

    /// Records that the pod's post hooks ran.
    pub async fn paid(&self, uid: &str) -> Result<(), kube::Error> {
        self.patch(json!({ Self::key(uid): Value::Null })).await
    }

    async fn patch(&self, annotations: Value) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": annotations}});
        self.api.patch(&self.backup, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

/// The debts recorded on a Backup, by pod (or workload) uid.
pub fn owed_by(backup: &Backup) -> Vec<(String, Result<OwedHooks, String>)> {
    records(backup, OWED_PREFIX)
}

/// The records a Backup's annotations under `prefix` hold, by the rest of their key.
pub(super) fn records<T: serde::de::DeserializeOwned>(backup: &Backup, prefix: &str) -> Vec<(String, Result<T, String>)> {
    backup
        .annotations()
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?;
            Some((rest.to_string(), serde_json::from_str(v).map_err(|e| format!("annotation {k} is unreadable: {e}"))))
        })
        .collect()
}

/// Runs the post hooks every Backup is owed (a server stopped between a pod's pre and post
/// hooks), records them in its `hookStatus`, and clears the debts. Pods that are gone, or were
/// replaced (another uid), cannot be paid: that is logged.
pub async fn pay_owed(ctx: &Context) -> anyhow::Result<()> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut resources = None;
    for backup in api.list(&ListParams::default()).await?.items {
        let debts = owed_by(&backup);
        if debts.is_empty() && !backup.annotations().keys().any(|k| k.starts_with(super::quiesce::UNDO_PREFIX)) {
            continue;
        }
        if resources.is_none() {
            resources = Some(crate::discovery::discover(&ctx.client).await?);
        }
        let name = backup.name_any();
        let log = OperationLog::new("backup", &name);
        let status = backup.status.as_ref().and_then(|s| s.hook_status.clone()).unwrap_or_default();
        let ledger = Ledger::resume(status, &log);
        let uid = backup.uid().unwrap_or_default();
        let extensions = HookExtensions::start(ctx, OperationKind::Backup, (&name, &uid), &backup.spec.extensions, resources.clone().unwrap_or_default(), &log);
        let journal = Journal::new(ctx, &name);
        let mut paid = BTreeMap::new();
        for (pod_uid, owed) in debts {
            match owed {
                Ok(owed) => {
                    let what = match &owed.workload {
                        Some(w) => w.kind.to_lowercase(),
                        None => "pod".into(),
                    };
                    log.warn(format!("the server stopped between the pre and post hooks of {what} {}/{}: running its post hooks now", owed.namespace, owed.pod));
                    run_post(ctx, &owed, &extensions, &ledger, true).await;
                }
                Err(e) => log.error(format!("{e}; its post hooks cannot be run")),
            }
            paid.insert(pod_uid.clone(), journal.paid(&pod_uid).await);
        }
        // Then the quiesce steps, in force until now: the host, not the hook, takes them back.
        let before = ledger.runs_len();
        let undone = super::quiesce::pay_owed(ctx, &backup, &ledger).await;
        ledger.mark_after_restart(before);
        if !undone.is_empty() {
            journal.patch(serde_json::to_value(&undone).unwrap_or_default()).await?;
        }
        if let Some(status) = ledger.status() {
            ctx.patch_status::<Backup>(&name, json!({"hookStatus": status})).await?;
        }
        for (uid, result) in paid {
            result.map_err(|e| anyhow::anyhow!("backup {name}: clearing the owed hooks of pod {uid}: {e}"))?;
        }
    }
    Ok(())
}

/// Runs `owed`'s post hooks, every one of them whatever the others did; returns the failures.
pub async fn run_post(ctx: &Context, owed: &OwedHooks, extensions: &HookExtensions, ledger: &Ledger, after_restart: bool) -> Vec<HookOutcome> {
    if let Some(workload) = &owed.workload {
        let before = ledger.runs_len();
        let mut outcomes = Vec::new();
        for bound in &owed.extensions {
            outcomes.push(extensions.run_on(bound, HookPhase::Post, &HookTarget::new(workload.clone()), &owed.uid, ledger).await);
        }
        if after_restart {
            ledger.mark_after_restart(before);
        }
        outcomes.retain(|o| *o != HookOutcome::Succeeded);
        return outcomes;
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), &owed.namespace);
    let pod = match pods.get_opt(&owed.pod).await {
        Ok(Some(p)) if p.uid().as_deref() == Some(owed.uid.as_str()) => serde_json::to_value(p).unwrap_or(Value::Null),
        Ok(_) => {
            let message = format!("pod {}/{} is gone: its post hooks cannot be run", owed.namespace, owed.pod);
            ledger.log().warn(&message);
            return vec![HookOutcome::Skipped(message)];
        }
        Err(e) => {
            let message = format!("pod {}/{}: reading it to run its post hooks: {e}", owed.namespace, owed.pod);
            ledger.log().error(&message);
            return vec![HookOutcome::Failed { message, fatal: true }];
        }
    };
    let before = ledger.runs_len();
    let mut outcomes = Vec::new();
    for bound in &owed.extensions {
        outcomes.push(extensions.run(bound, HookPhase::Post, &owed.pod_ref(), ledger).await);
    }
    for plan in &owed.post {
        outcomes.push(run_exec(&ctx.client, &pod, plan, HookPhase::Post, ledger).await);
    }
    if after_restart {
        ledger.mark_after_restart(before);
    }
    outcomes.retain(|o| *o != HookOutcome::Succeeded);
    outcomes
}

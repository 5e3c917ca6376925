//! The hooks of one backup, around the volumes of each group of pods (see
//! `backup::volumes`): the pre hooks of every pod of the group, then its volumes, then the post
//! hooks of every pod whose pre hooks ran — on success, on a failed or timed-out volume and on
//! a failed pre hook alike. The debt is journalled on the Backup before the first pre hook.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use stowage_api::Backup;
use stowage_pipeline::hooks::{BackupHookSpecs, HookPhase, PodBackupHooks};
use stowage_pipeline::Outcome;
use stowage_runtime::{ExtensionReport, OperationKind};

use super::extension::{BoundExtension, HookExtensions};
use super::journal::{run_post, Journal, OwedHooks};
use super::{note, run_exec, HookOutcome, Ledger, PodRef};
use crate::context::Context;
use crate::discovery::Discovered;
use crate::oplog::OperationLog;

/// The hooks of one pod, as the backup runs them.
#[derive(Clone, Debug)]
pub struct PodHooks {
    pub pod: PodRef,
    pub exec: PodBackupHooks,
    pub extensions: Vec<BoundExtension>,
}

impl PodHooks {
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.extensions.is_empty()
    }

    fn owed(&self) -> OwedHooks {
        OwedHooks {
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            // Undone in the reverse order of the pre hooks.
            extensions: self.extensions.iter().rev().cloned().collect(),
            post: self.exec.post.clone(),
        }
    }
}

/// What one backup's hooks run with; shared by the groups it runs at once.
pub struct BackupHookRunner<'a> {
    ctx: &'a Context,
    specs: &'a BackupHookSpecs,
    extensions: HookExtensions,
    journal: Journal,
    pub ledger: Ledger,
}

impl<'a> BackupHookRunner<'a> {
    pub fn new(ctx: &'a Context, backup: &Backup, specs: &'a BackupHookSpecs, resources: Vec<Discovered>, log: &OperationLog) -> Self {
        let (name, uid) = (backup.metadata.name.clone().unwrap_or_default(), backup.metadata.uid.clone().unwrap_or_default());
        let extensions = HookExtensions::start(ctx, OperationKind::Backup, (&name, &uid), &backup.spec.extensions, resources, log);
        BackupHookRunner { ctx, specs, extensions, journal: Journal::new(ctx, &name), ledger: Ledger::new(log) }
    }

    /// The hooks of `pod` (as collected); malformed annotations are warnings on `outcome`.
    pub fn hooks_of(&self, pod: &Value, outcome: &mut Outcome) -> PodHooks {
        let exec = self.specs.for_pod(pod);
        let (extensions, warnings) = self.extensions.for_pod(pod);
        let who = PodRef::of(pod);
        for w in exec.warnings.iter().chain(&warnings) {
            outcome.warn(Some(&who.namespace), w.clone());
        }
        PodHooks { pod: who, exec, extensions }
    }

    /// The pod as it is now (hooks need its containers' state); None when it is gone or was
    /// replaced since it was collected.
    pub async fn current(&self, pod: &PodRef) -> Result<Option<Value>, kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace);
        Ok(api
            .get_opt(&pod.name)
            .await?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod.uid.as_str()))
            .and_then(|p| serde_json::to_value(p).ok()))
    }

    /// Runs the pre hooks of each pod of a group, in order, once its post hooks are journalled.
    /// Returns the positions (in `pods`) of the pods whose volumes must not be backed up: a
    /// pre hook with `onError: Fail` failed, or the debt could not be recorded. `owing` gets
    /// the positions of the pods whose post hooks are now owed.
    pub async fn pre(&self, pods: &[(PodHooks, Option<Value>)], owing: &mut Vec<usize>, outcome: &mut Outcome) -> BTreeSet<usize> {
        let mut failed = BTreeSet::new();
        for (i, (hooks, current)) in pods.iter().enumerate() {
            let ns = Some(hooks.pod.namespace.as_str());
            let Some(current) = current.as_ref().filter(|_| !hooks.is_empty()) else { continue };
            if current.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
                let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Unknown");
                outcome.warn(ns, format!("pod {} is {phase}, not Running: its hooks are not run", hooks.pod));
                continue;
            }
            let owed = hooks.owed();
            if !owed.is_empty() {
                if let Err(e) = self.journal.owe(&owed).await {
                    outcome.error(ns, format!("pod {}: recording its owed post hooks on the Backup failed ({e}); its hooks are not run and its volumes not backed up", hooks.pod));
                    failed.insert(i);
                    continue;
                }
                owing.push(i);
            }
            let mut outcomes = Vec::new();
            for plan in &hooks.exec.pre {
                let o = run_exec(&self.ctx.client, current, plan, HookPhase::Pre, &self.ledger).await;
                let stop = matches!(o, HookOutcome::Failed { fatal: true, .. });
                outcomes.push(o);
                if stop {
                    break;
                }
            }
            if !outcomes.iter().any(|o| matches!(o, HookOutcome::Failed { fatal: true, .. })) {
                for bound in &hooks.extensions {
                    let o = self.extensions.run(bound, HookPhase::Pre, &hooks.pod, &self.ledger).await;
                    let stop = matches!(o, HookOutcome::Failed { fatal: true, .. });
                    outcomes.push(o);
                    if stop {
                        break;
                    }
                }
            }
            if outcomes.into_iter().fold(false, |fatal, o| note(o, ns, outcome) | fatal) {
                failed.insert(i);
            }
        }
        failed
    }

    /// Runs the post hooks of the pods that are owed them, and clears the debts.
    pub async fn post(&self, pods: &[(PodHooks, Option<Value>)], owing: &[usize], outcome: &mut Outcome) {
        for &i in owing {
            let hooks = &pods[i].0;
            let ns = Some(hooks.pod.namespace.as_str());
            let failures = run_post(self.ctx, &hooks.owed(), &self.extensions, &self.ledger, false).await;
            for o in failures {
                note(o, ns, outcome);
            }
            if let Err(e) = self.journal.paid(&hooks.pod.uid).await {
                outcome.warn(ns, format!("pod {}: clearing its owed post hooks on the Backup: {e}; the next server start runs them again", hooks.pod));
            }
        }
    }

    pub async fn extension_report(&self) -> Option<ExtensionReport> {
        self.extensions.report().await
    }
}

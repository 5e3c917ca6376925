//! The hooks of one backup, around the volumes of each group of pods (see
//! `backup::volumes`): the pre hooks of every pod of the group and then of their workloads,
//! then its volumes, then the post hooks of every workload and pod whose pre hooks ran — on
//! success, on a failed or timed-out volume and on a failed pre hook alike — and the undo of
//! the quiesce steps their hooks took. The debt is journalled on the Backup before the first
//! pre hook.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use stowage_api::Backup;
use stowage_pipeline::hooks::{BackupHookSpecs, HookPhase, PodBackupHooks};
use stowage_pipeline::Outcome;
use stowage_runtime::{ExtensionReport, HookTarget, ObjectRef, OperationKind, TargetVolume, VolumeMount};

use super::extension::{BoundExtension, HookExtensions};
use super::journal::{run_post, Journal, OwedHooks};
use super::workload::{workload_of, WorkloadRef};
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
    /// The pod's volumes the backup copies, as its hook extensions see them.
    pub volumes: Vec<TargetVolume>,
    /// The hook extensions called on the pod's workload (`target: workload`), with it.
    pub workload: Option<(WorkloadRef, Vec<BoundExtension>)>,
}

impl PodHooks {
    /// No hook of its own (its workload may have some).
    pub fn own_empty(&self) -> bool {
        self.exec.is_empty() && self.extensions.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.own_empty() && self.workload.is_none()
    }

    /// The uid of its workload, when that has hooks.
    pub fn workload_uid(&self) -> Option<&str> {
        self.workload.as_ref().map(|(w, _)| w.uid.as_str())
    }

    fn owed(&self) -> OwedHooks {
        OwedHooks {
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            workload: None,
            // Undone in the reverse order of the pre hooks.
            extensions: self.extensions.iter().rev().cloned().collect(),
            post: self.exec.post.clone(),
        }
    }

    fn workload_owed(&self) -> Option<OwedHooks> {
        let (w, bound) = self.workload.as_ref()?;
        Some(OwedHooks {
            namespace: w.object.namespace.clone(),
            pod: w.object.name.clone(),
            uid: w.uid.clone(),
            workload: Some(w.object.clone()),
            extensions: bound.iter().rev().cloned().collect(),
            post: Vec::new(),
        })
    }
}

/// The volumes of `pod` named in `copied`, with where its containers mount them.
pub fn target_volumes(pod: &Value, copied: &[String]) -> Vec<TargetVolume> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    volumes
        .iter()
        .filter_map(|v| {
            let volume = v.get("name")?.as_str()?;
            copied.iter().any(|c| c == volume).then_some(())?;
            let mounts = containers
                .iter()
                .flat_map(|c| {
                    let container = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    c.get("volumeMounts").and_then(Value::as_array).cloned().unwrap_or_default().into_iter().filter_map(move |m| {
                        (m.get("name")?.as_str()? == volume).then(|| VolumeMount {
                            container: container.clone(),
                            path: m.get("mountPath").and_then(Value::as_str).unwrap_or_default().to_string(),
                            read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                        })
                    })
                })
                .collect();
            Some(TargetVolume {
                pod: name.to_string(),
                name: volume.to_string(),
                claim: v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str).unwrap_or_default().to_string(),
                mounts,
            })
        })
        .collect()
}

/// Whose post hooks a group owes: positions (in the group) of pods, and of the first pod of
/// each workload whose hooks ran.
#[derive(Default, Debug)]
pub struct Owing {
    pub pods: Vec<usize>,
    pub workloads: Vec<usize>,
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
        // A later attempt goes on from the runs already recorded (an earlier attempt's, and the
        // post hooks a restarted server paid for it).
        let ledger = match backup.status.as_ref().and_then(|s| s.hook_status.clone()) {
            Some(recorded) => Ledger::resume(recorded, log),
            None => Ledger::new(log),
        };
        BackupHookRunner { ctx, specs, extensions, journal: Journal::new(ctx, &name), ledger }
    }

    /// The hooks of `pod` (as collected), whose volumes `copied` the backup copies; malformed
    /// annotations are warnings on `outcome`.
    pub async fn hooks_of(&self, pod: &Value, copied: &[String], outcome: &mut Outcome) -> PodHooks {
        let exec = self.specs.for_pod(pod);
        let (extensions, warnings) = self.extensions.for_pod(pod);
        let who = PodRef::of(pod);
        for w in exec.warnings.iter().chain(&warnings) {
            outcome.warn(Some(&who.namespace), w.clone());
        }
        let workload = match extensions.workload.is_empty() {
            true => None,
            false => match workload_of(&self.ctx.client, pod).await {
                Ok(Some(w)) => Some((w, extensions.workload.clone())),
                Ok(None) => {
                    let names: Vec<&str> = extensions.workload.iter().map(|b| b.id.as_str()).collect();
                    outcome.warn(Some(&who.namespace), format!("pod {who} has no controller: hook extensions {} are called per workload and do not run for it", names.join(", ")));
                    None
                }
                Err(e) => {
                    outcome.error(Some(&who.namespace), format!("pod {who}: finding its workload for its hook extensions: {e}"));
                    None
                }
            },
        };
        PodHooks { pod: who, exec, extensions: extensions.pod, volumes: target_volumes(pod, copied), workload }
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

    /// Runs the pre hooks of each pod of a group, in order, once its post hooks are journalled,
    /// then those of the workloads of its pods (once each). Returns the positions (in `pods`)
    /// of the pods whose volumes must not be backed up: a pre hook with `onError: Fail` failed,
    /// or the debt could not be recorded. `owing` gets whose post hooks are now owed.
    pub async fn pre(&self, pods: &[(PodHooks, Option<Value>)], owing: &mut Owing, outcome: &mut Outcome) -> BTreeSet<usize> {
        let mut failed = BTreeSet::new();
        for (i, (hooks, current)) in pods.iter().enumerate() {
            let ns = Some(hooks.pod.namespace.as_str());
            let Some(current) = current.as_ref().filter(|_| !hooks.own_empty()) else { continue };
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
                owing.pods.push(i);
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
                let target = HookTarget { object: pod_object(&hooks.pod), volumes: hooks.volumes.clone() };
                for bound in &hooks.extensions {
                    let o = self.extensions.run_on(bound, HookPhase::Pre, &target, &hooks.pod.uid, &self.ledger).await;
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
        let mut seen = BTreeSet::new();
        for (i, (hooks, _)) in pods.iter().enumerate() {
            let (Some((workload, bound)), Some(owed)) = (&hooks.workload, hooks.workload_owed()) else { continue };
            if !seen.insert(workload.uid.clone()) {
                continue;
            }
            let members: Vec<usize> = (0..pods.len()).filter(|&j| pods[j].0.workload_uid() == Some(workload.uid.as_str())).collect();
            let ns = Some(workload.object.namespace.as_str());
            let what = format!("{} {}/{}", workload.object.kind, workload.object.namespace, workload.object.name);
            if let Err(e) = self.journal.owe(&owed).await {
                outcome.error(ns, format!("{what}: recording its owed post hooks on the Backup failed ({e}); its hooks are not run and its volumes not backed up"));
                failed.extend(members);
                continue;
            }
            owing.workloads.push(i);
            let volumes = members.iter().flat_map(|&j| pods[j].0.volumes.clone()).collect();
            let target = HookTarget { object: workload.object.clone(), volumes };
            let mut fatal = false;
            for bound in bound {
                let o = self.extensions.run_on(bound, HookPhase::Pre, &target, &workload.uid, &self.ledger).await;
                fatal |= note(o, ns, outcome);
                if fatal {
                    break;
                }
            }
            if fatal {
                failed.extend(members);
            }
        }
        failed
    }

    /// Runs the post hooks owed (the workloads', then the pods'), takes back the quiesce steps
    /// their hooks took, and clears the debts.
    pub async fn post(&self, pods: &[(PodHooks, Option<Value>)], owing: &Owing, outcome: &mut Outcome) {
        let owed = owing
            .workloads
            .iter()
            .filter_map(|&i| pods[i].0.workload_owed())
            .chain(owing.pods.iter().map(|&i| pods[i].0.owed()));
        for owed in owed {
            let ns = Some(owed.namespace.as_str());
            let mut failures = run_post(self.ctx, &owed, &self.extensions, &self.ledger, false).await;
            failures.extend(self.extensions.undo(&owed.uid, &self.ledger).await);
            for o in failures {
                note(o, ns, outcome);
            }
            if let Err(e) = self.journal.paid(&owed.uid).await {
                outcome.warn(ns, format!("{}/{}: clearing its owed post hooks on the Backup: {e}; the next server start runs them again", owed.namespace, owed.pod));
            }
        }
    }

    pub async fn extension_report(&self) -> Option<ExtensionReport> {
        self.extensions.report().await
    }
}

fn pod_object(pod: &PodRef) -> ObjectRef {
    ObjectRef { group: String::new(), version: "v1".into(), kind: "Pod".into(), namespace: pod.namespace.clone(), name: pod.name.clone() }
}

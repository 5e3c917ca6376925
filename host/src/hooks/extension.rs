//! Hook extensions (DESIGN §7): extension ConfigMaps of kind `hook` run their `pre-backup`,
//! `post-backup` and `post-restore` on the pods their `appliesTo` selects, and on the pods
//! that name them in `hooks.stowage.io/extensions` (with parameters from
//! `hooks.stowage.io/param.<key>` annotations). Each call gets a fresh instance; the host calls
//! are capability-checked by the runtime; a namespaced extension reaches only its namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stowage_api::hooks::HookRun;
use stowage_api::labels::{split_list, HOOK_EXTENSIONS, HOOK_PARAMETER_PREFIX};
use stowage_pipeline::hooks::HookPhase;
use stowage_runtime::{
    ExtensionId, ExtensionKind, ExtensionReport, ExtensionSet, HookTarget, ObjectRef, OperationContext, OperationKind, Session, TargetKind,
};

use super::quiesce::Quiescer;
use super::{millis, HookOutcome, Ledger, PodRef};
use crate::context::Context;
use crate::discovery::Discovered;
use crate::extensions::{requested_ids, KubeHost};
use crate::oplog::OperationLog;

/// A hook extension bound to a pod, with the parameters the pod gives it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BoundExtension {
    /// `namespace/name` of its ConfigMap.
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl BoundExtension {
    fn extension_id(&self) -> ExtensionId {
        let (ns, name) = self.id.split_once('/').unwrap_or(("", &self.id));
        ExtensionId::new(ns, name)
    }
}

/// The hook extensions of one operation, fixed when it started (hot reloads after that do not
/// touch it), and the session that runs them.
pub struct HookExtensions {
    /// Every loaded hook extension, opt-in ones too: a pod may name one.
    set: Arc<ExtensionSet>,
    requested: Vec<ExtensionId>,
    server_namespace: String,
    session: Option<tokio::sync::Mutex<Session>>,
    /// A backup's quiesce steps, undone by the host.
    quiescer: Option<Arc<Quiescer>>,
}

/// The parameters a pod gives its hook extensions: its `hooks.stowage.io/param.<key>`
/// annotations.
pub fn hook_parameters(pod: &Value) -> BTreeMap<String, String> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix(HOOK_PARAMETER_PREFIX)?.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// The hook extensions of one pod: those called on it, and those called on its workload.
#[derive(Clone, Debug, Default)]
pub struct PodExtensions {
    pub pod: Vec<BoundExtension>,
    pub workload: Vec<BoundExtension>,
}

impl HookExtensions {
    pub fn start(
        ctx: &Context,
        kind: OperationKind,
        (name, uid): (&str, &str),
        requested: &[String],
        resources: Vec<Discovered>,
        log: &OperationLog,
    ) -> HookExtensions {
        let snapshot = ctx.extensions.snapshot();
        let hooks: Vec<ExtensionId> = snapshot.of_kind(ExtensionKind::Hook).map(|e| e.id.clone()).collect();
        let set = Arc::new(snapshot.for_operation(&hooks));
        let quiescer = (kind == OperationKind::Backup && !hooks.is_empty()).then(|| Quiescer::new(ctx, (name, uid), log));
        let session = (!hooks.is_empty()).then(|| {
            let mut host = KubeHost::new(ctx.client.clone(), resources, log.clone());
            if let Some(q) = &quiescer {
                host = host.with_quiescer(q.clone());
            }
            let host = Arc::new(host);
            let context = OperationContext { kind, name: name.to_string(), uid: uid.to_string() };
            let mut session = set.session(context, host);
            let metrics = ctx.metrics.clone();
            session.observe_calls(Arc::new(move |id, outcome, took| metrics.extension_call(&id.to_string(), outcome, took)));
            tokio::sync::Mutex::new(session)
        });
        HookExtensions {
            set,
            requested: requested_ids(&ctx.namespace, requested),
            server_namespace: ctx.namespace.clone(),
            session,
            quiescer,
        }
    }

    /// The hook extensions of `pod`: those whose `appliesTo` selects it (opt-in ones only when
    /// the operation names them), then those it names itself; with a warning for each name that
    /// is no loaded hook extension.
    pub fn for_pod(&self, pod: &Value) -> (PodExtensions, Vec<String>) {
        let mut warnings = Vec::new();
        if self.session.is_none() && HOOK_EXTENSIONS.item_annotation(pod).is_none() {
            return (PodExtensions::default(), warnings);
        }
        let who = PodRef::of(pod);
        let item = stowage_runtime::Item {
            id: ObjectRef { group: String::new(), version: "v1".into(), kind: "Pod".into(), namespace: who.namespace.clone(), name: who.name.clone() },
            object: pod.clone(),
        };
        let mut ids: Vec<ExtensionId> = self
            .set
            .of_kind(ExtensionKind::Hook)
            .filter(|e| !e.config.opt_in || self.requested.contains(&e.id))
            .filter(|e| e.scope.allows(&who.namespace) && e.config.applies_to.matches(&item))
            .map(|e| e.id.clone())
            .collect();
        for name in HOOK_EXTENSIONS.item_annotation(pod).map(split_list).unwrap_or_default() {
            let candidates = match name.split_once('/') {
                Some((ns, n)) => vec![ExtensionId::new(ns, n)],
                None => vec![ExtensionId::new(&who.namespace, name), ExtensionId::new(&self.server_namespace, name)],
            };
            match candidates.into_iter().find(|id| self.set.get(id).is_some_and(|e| e.kind == ExtensionKind::Hook)) {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None => warnings.push(format!(
                    "pod {who}: annotation {} names {name:?}, which is no loaded hook extension; `stowage extension list` shows the loaded ones",
                    HOOK_EXTENSIONS.name
                )),
            }
        }
        let parameters = hook_parameters(pod);
        let mut bound = PodExtensions::default();
        for id in ids {
            let on_workload = self.set.get(&id).is_some_and(|e| e.config.target == TargetKind::Workload);
            let b = BoundExtension { id: id.to_string(), parameters: parameters.clone() };
            match on_workload {
                true => bound.workload.push(b),
                false => bound.pod.push(b),
            }
        }
        (bound, warnings)
    }

    /// Runs one hook extension on `pod` and records it; its `onError` says whether a failure
    /// is fatal.
    pub async fn run(&self, bound: &BoundExtension, phase: HookPhase, pod: &PodRef, ledger: &Ledger) -> HookOutcome {
        let target = ObjectRef { group: String::new(), version: "v1".into(), kind: "Pod".into(), namespace: pod.namespace.clone(), name: pod.name.clone() };
        self.run_on(bound, phase, &HookTarget::new(target), &pod.uid, ledger).await
    }

    /// Runs one hook extension on `target` (a pod or a workload, with its volumes); the quiesce
    /// steps it takes are undone by [`HookExtensions::undo`] for `owner`.
    pub async fn run_on(&self, bound: &BoundExtension, phase: HookPhase, target: &HookTarget, owner: &str, ledger: &Ledger) -> HookOutcome {
        let id = bound.extension_id();
        let o = &target.object;
        let subject = format!("{}/{}", o.namespace, o.name);
        let what = format!("{} hook (extension {id}) on {} {subject}", phase.as_str(), o.kind.to_lowercase());
        let (Some(session), Some(extension)) = (&self.session, self.set.get(&id)) else {
            let message = format!("{what}: the extension is no longer loaded");
            ledger.log().error(&message);
            ledger.record(HookRun { pod: subject, phase: phase.as_str().into(), hook: format!("extension {id}"), error: Some(message.clone()), ..Default::default() });
            return HookOutcome::Failed { message, fatal: true };
        };
        let fatal = extension.config.on_error == stowage_runtime::OnError::Fail;
        let runtime_phase = match phase {
            HookPhase::Pre => stowage_runtime::HookPhase::PreBackup,
            HookPhase::Post => stowage_runtime::HookPhase::PostBackup,
            HookPhase::PostRestore => stowage_runtime::HookPhase::PostRestore,
        };
        ledger.log().info(format!("{what}: running"));
        let started = Instant::now();
        let result = {
            let mut session = session.lock().await;
            if let Some(q) = &self.quiescer {
                q.set_owner(owner);
            }
            tokio::task::block_in_place(|| session.run_hook(&id, runtime_phase, target, &bound.parameters))
        };
        let took = started.elapsed();
        let error = result.err().map(|issue| issue.message);
        ledger.record(HookRun {
            pod: subject,
            phase: phase.as_str().into(),
            hook: format!("extension {id}"),
            duration_millis: millis(took),
            error: error.clone(),
            ..Default::default()
        });
        match error {
            None => {
                ledger.log().info(format!("{what}: done in {:.1}s", took.as_secs_f64()));
                HookOutcome::Succeeded
            }
            Some(e) => {
                let message = match fatal {
                    true => format!("{what} failed: {e}"),
                    false => format!("{what} failed (onError: Continue): {e}"),
                };
                match fatal {
                    true => ledger.log().error(&message),
                    false => ledger.log().warn(&message),
                }
                HookOutcome::Failed { message, fatal }
            }
        }
    }

    /// Takes back the quiesce steps the hooks took for `owner` (a pod's or workload's uid);
    /// each failed undo, and each filesystem the maximum frozen time thawed before its volume
    /// was copied, fails it.
    pub async fn undo(&self, owner: &str, ledger: &Ledger) -> Vec<HookOutcome> {
        let Some(q) = &self.quiescer else { return Vec::new() };
        let mut outcomes = Vec::new();
        for undone in q.undo(owner, ledger).await {
            if let Some(e) = undone.error {
                outcomes.push(HookOutcome::Failed { message: format!("undo: {} failed: {e}", undone.undo.describe()), fatal: true });
            }
            if undone.expired {
                let message = format!(
                    "{}: the volume stayed frozen past the maximum frozen time, so the host thawed it before its copy ended; the copy is not consistent",
                    undone.undo.describe()
                );
                outcomes.push(HookOutcome::Failed { message, fatal: true });
            }
        }
        outcomes
    }

    /// What the hook extensions did, to add to the operation's extension report.
    pub async fn report(&self) -> Option<ExtensionReport> {
        let session = self.session.as_ref()?.lock().await;
        let report = session.report();
        (!report.extensions.is_empty()).then_some(report)
    }
}

//! The hooks of one restore (DESIGN §8): init containers added to restored pods (after the
//! restore helper's), and exec hooks and hook extensions run in each restored pod once it runs
//! (and is ready, when asked) — after its volumes are back, since the helper holds its
//! containers until then. A wait never lasts longer than its timeout (by default the restore's
//! pod volume timeout).

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::ResourceExt;
use serde_json::Value;
use stowage_api::hooks::HookRun;
use stowage_api::names::RESTORE_HELPER_CONTAINER;
use stowage_api::Restore;
use stowage_pipeline::hooks::{add_init_containers, HookPhase, RestoreExecHookPlan, RestoreHookSpecs};
use stowage_pipeline::{Item, Outcome};
use stowage_runtime::{ExtensionReport, OperationKind};

use super::extension::{BoundExtension, HookExtensions};
use super::{container_state, millis, note, run_exec, ContainerState, HookOutcome, Ledger, PodRef};
use crate::context::Context;
use crate::discovery::Discovered;
use crate::oplog::OperationLog;

/// How many restored pods run their hooks at once.
const PODS_AT_ONCE: usize = 8;
/// How often a pod is looked at while its hooks wait for it.
const POLL: Duration = Duration::from_secs(1);

/// A restored pod whose hooks are still to run.
struct Pending {
    pod: PodRef,
    exec: Vec<RestoreExecHookPlan>,
    extensions: Vec<BoundExtension>,
}

/// What one restore's hooks run with.
pub struct RestoreHookRunner<'a> {
    ctx: &'a Context,
    specs: &'a RestoreHookSpecs,
    extensions: HookExtensions,
    pending: Vec<Pending>,
    pub ledger: Ledger,
}

impl<'a> RestoreHookRunner<'a> {
    pub fn new(ctx: &'a Context, restore: &Restore, specs: &'a RestoreHookSpecs, resources: Vec<Discovered>, log: &OperationLog) -> Self {
        let (name, uid) = (restore.name_any(), restore.uid().unwrap_or_default());
        let extensions = HookExtensions::start(ctx, OperationKind::Restore, (&name, &uid), &restore.spec.extensions, resources, log);
        RestoreHookRunner { ctx, specs, extensions, pending: Vec::new(), ledger: Ledger::new(log) }
    }

    /// Before a pod is created: adds its init hook containers. Returns its exec hooks and hook
    /// extensions, for [`RestoreHookRunner::created`].
    pub fn prepare(&self, item: &mut Item, outcome: &mut Outcome) -> (Vec<RestoreExecHookPlan>, Vec<BoundExtension>) {
        if !item.is("", "pods") {
            return (Vec::new(), Vec::new());
        }
        let hooks = self.specs.for_pod(&item.object);
        let (extensions, warnings) = self.extensions.for_pod(&item.object);
        for w in hooks.warnings.iter().chain(&warnings) {
            outcome.warn(item.namespace.as_deref(), w.clone());
        }
        add_init_containers(&mut item.object, &hooks.init_containers, RESTORE_HELPER_CONTAINER);
        // Hook extensions called per workload act around backups (quiescing); a restore calls
        // the per-pod ones only.
        (hooks.exec, extensions.pod)
    }

    /// After a pod was created: its hooks run once it is up.
    pub fn created(&mut self, pod: &DynamicObject, hooks: (Vec<RestoreExecHookPlan>, Vec<BoundExtension>)) {
        if hooks.0.is_empty() && hooks.1.is_empty() {
            return;
        }
        let pod = PodRef { namespace: pod.namespace().unwrap_or_default(), name: pod.name_any(), uid: pod.uid().unwrap_or_default() };
        self.pending.push(Pending { pod, exec: hooks.0, extensions: hooks.1 });
    }

    /// Runs the hooks of every restored pod, each once its container is up; `default_wait`
    /// bounds the waits that do not say.
    pub async fn run(&self, default_wait: Duration, outcome: &mut Outcome) {
        let runs: Vec<_> = self.pending.iter().map(|p| self.run_pod(p, default_wait)).collect();
        let outcomes: Vec<Outcome> = futures::stream::iter(runs).buffer_unordered(PODS_AT_ONCE).collect().await;
        for o in outcomes {
            outcome.merge(o);
        }
    }

    async fn run_pod(&self, pending: &Pending, default_wait: Duration) -> Outcome {
        let mut outcome = Outcome::default();
        let ns = Some(pending.pod.namespace.as_str());
        for hook in &pending.exec {
            let wait = hook.wait_timeout.unwrap_or(default_wait);
            let result = match self.wait_for(&pending.pod, &hook.exec.container, hook.wait_for_ready, wait).await {
                Err(why) => {
                    let message = format!("post-restore hook ({}) in pod {} container {:?} not run: {why}", hook.exec.source, pending.pod, hook.exec.container);
                    self.ledger.record(HookRun {
                        pod: pending.pod.to_string(),
                        container: hook.exec.container.clone(),
                        phase: HookPhase::PostRestore.as_str().into(),
                        hook: hook.exec.source.clone(),
                        duration_millis: millis(wait),
                        error: Some(why),
                        ..Default::default()
                    });
                    let fatal = hook.exec.on_error == stowage_api::hooks::HookErrorMode::Fail;
                    HookOutcome::Failed { message, fatal }
                }
                Ok(pod) => {
                    let mut attempt = 0;
                    loop {
                        let o = run_exec(&self.ctx.client, &pod, &hook.exec, HookPhase::PostRestore, &self.ledger).await;
                        if !matches!(o, HookOutcome::Failed { .. }) || attempt >= hook.max_retries {
                            break o;
                        }
                        attempt += 1;
                        self.ledger.log().info(format!("pod {}: retrying its post-restore hook ({attempt} of {})", pending.pod, hook.max_retries));
                    }
                }
            };
            let stop = matches!(result, HookOutcome::Failed { fatal: true, .. });
            note(result, ns, &mut outcome);
            if stop {
                return outcome;
            }
        }
        if !pending.extensions.is_empty() {
            let first = self.first_container(&pending.pod).await.unwrap_or_default();
            if let Err(why) = self.wait_for(&pending.pod, &first, false, default_wait).await {
                outcome.warn(ns, format!("pod {}: its post-restore hook extensions are not run: {why}", pending.pod));
                return outcome;
            }
            for bound in &pending.extensions {
                let result = self.extensions.run(bound, HookPhase::PostRestore, &pending.pod, &self.ledger).await;
                let stop = matches!(result, HookOutcome::Failed { fatal: true, .. });
                note(result, ns, &mut outcome);
                if stop {
                    break;
                }
            }
        }
        outcome
    }

    async fn first_container(&self, pod: &PodRef) -> Option<String> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace);
        let p = api.get_opt(&pod.name).await.ok()??;
        p.spec?.containers.first().map(|c| c.name.clone())
    }

    /// Waits until `container` of the pod runs (and is ready, with `ready`); the pod as it is
    /// then, or why not.
    async fn wait_for(&self, pod: &PodRef, container: &str, ready: bool, timeout: Duration) -> Result<Value, String> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace);
        let started = Instant::now();
        let mut last = ContainerState::PodNotRunning;
        loop {
            match api.get_opt(&pod.name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(pod.uid.as_str()) => {
                    let value = serde_json::to_value(&p).unwrap_or(Value::Null);
                    last = container_state(&value, container);
                    match last {
                        ContainerState::Ready => return Ok(value),
                        ContainerState::Running if !ready => return Ok(value),
                        ContainerState::Missing => return Err(format!("the pod has no container {container:?}")),
                        _ => {}
                    }
                }
                Ok(_) => return Err("the pod is gone".to_string()),
                Err(e) => tracing::debug!("reading pod {pod}: {e}"),
            }
            if started.elapsed() >= timeout {
                let state = match last {
                    ContainerState::PodNotRunning => "the pod is not Running",
                    ContainerState::Running => "the container runs but is not ready",
                    _ => "the container is not running",
                };
                let wanted = if ready { "ready" } else { "running" };
                return Err(format!(
                    "the container was not {wanted} after {} ({state}); raise the hook's wait timeout if it starts slowly",
                    humantime::format_duration(timeout)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn extension_report(&self) -> Option<ExtensionReport> {
        self.extensions.report().await
    }
}

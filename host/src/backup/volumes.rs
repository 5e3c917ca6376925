//! Pod volume backups (DESIGN §6): for each selected volume of a running pod, one
//! PodVolumeBackup for the node agent on the pod's node; the backup waits for them (up to its
//! timeout) and records their results in `<backup>-podvolumebackups.json.zst`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use stowage_api::podvolume::{PodVolumePhase, PodVolumeStatus};
use stowage_api::podvolume::PodVolumeBackupSpec;
use stowage_api::{labels, Backup, PodVolumeBackup};
use stowage_pipeline::volumes::{self, PodVolume, VolumeSelection};
use stowage_pipeline::{Item, Outcome};
use stowage_storage::ObjectStore;

use super::BackupPlan;
use crate::server::oplog::OperationLog;
use crate::server::{repositories, Context};

/// Annotation on a Backup: how long its pod volume backups may take (Go duration).
pub const TIMEOUT_ANNOTATION: &str = "stowage.io/pod-volume-timeout";
/// How often the backup looks at its PodVolumeBackups while it waits.
const POLL: Duration = Duration::from_secs(1);

/// The pods seen while collecting, with the volumes each asks to have copied.
#[derive(Default)]
pub struct Candidates {
    pods: Vec<(Item, VolumeSelection)>,
}

impl Candidates {
    /// Looks at one collected item; only pods matter.
    pub fn observe(&mut self, item: &Item, default_volumes_to_fs_backup: bool) {
        if !item.group.is_empty() || item.resource != "pods" {
            return;
        }
        let selection = volumes::select(item, default_volumes_to_fs_backup);
        if !selection.backup.is_empty() || !selection.skipped.is_empty() {
            self.pods.push((item.clone(), selection));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pods.iter().all(|(_, s)| s.backup.is_empty())
    }
}

/// A Backup's or Restore's pod volume timeout: its annotation, else the server's default.
pub fn timeout_of(operation: &impl ResourceExt, default: Duration) -> Result<Duration, String> {
    match operation.annotations().get(TIMEOUT_ANNOTATION) {
        None => Ok(default),
        Some(v) => stowage_api::duration::parse(v)
            .map_err(|e| format!("annotation {TIMEOUT_ANNOTATION}={v:?}: {e}; use a duration such as 30m or 4h")),
    }
}

fn owner(backup: &Backup) -> Option<OwnerReference> {
    backup.controller_owner_ref(&())
}

/// Creates the PodVolumeBackups, waits for them, and returns them as they ended.
pub async fn back_up(
    ctx: &Context,
    plan: &BackupPlan,
    backup: &Backup,
    store: Arc<dyn ObjectStore>,
    candidates: Candidates,
    log: &OperationLog,
    outcome: &mut Outcome,
) -> anyhow::Result<Vec<PodVolumeBackup>> {
    for (pod, sel) in &candidates.pods {
        for (volume, why) in &sel.skipped {
            log.info(format!("pod {}/{}: volume {volume:?} is not backed up: {why}", pod.namespace.as_deref().unwrap_or(""), pod.name));
        }
    }
    let unique = volumes::dedupe(candidates.pods.iter().map(|(p, s)| (p, s)));
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    let backup_uid = backup.uid().unwrap_or_default();
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut created = 0usize;
    let mut repositories: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    for ((ns, _), (pod, volume)) in &unique {
        let pod_ref = format!("{ns}/{}", pod.name);
        let phase = pod.object.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Unknown");
        let node = pod.object.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        if phase != "Running" || node.is_empty() {
            outcome.warn(Some(ns), format!("pod {pod_ref} is {phase}, not Running on a node: volume {:?} is not backed up", volume.name));
            continue;
        }
        let repo = match repositories.get(ns) {
            Some(r) => r.clone(),
            None => {
                let r = repositories::ensure(ctx, &plan.location, store.clone(), ns)
                    .await
                    .map(|r| r.spec.restic_identifier)
                    .map_err(|e| format!("{e:#}"));
                repositories.insert(ns.clone(), r.clone());
                r
            }
        };
        let repo = match repo {
            Ok(r) => r,
            Err(e) => {
                outcome.error(Some(ns), format!("pod volume {pod_ref}/{}: {e}", volume.name));
                continue;
            }
        };
        let pvb = match pod_volume_backup(ctx, plan, backup, &backup_uid, pod, volume, node, &repo).await {
            Ok(p) => p,
            Err(e) => {
                outcome.error(Some(ns), format!("pod volume {pod_ref}/{}: {e:#}", volume.name));
                continue;
            }
        };
        match api.create(&PostParams::default(), &pvb).await {
            Ok(p) => {
                created += 1;
                log.info(format!("pod volume {pod_ref}/{} on node {node}: PodVolumeBackup {}", volume.name, p.name_any()));
            }
            Err(e) => outcome.error(Some(ns), format!("pod volume {pod_ref}/{}: creating its PodVolumeBackup: {e}", volume.name)),
        }
    }
    if created == 0 {
        return Ok(Vec::new());
    }
    ctx.patch_status::<Backup>(&plan.name, json!({"phase": "WaitingForVolumes", "podVolumeBackupsAttempted": created}))
        .await?;
    let selector = format!("{}={backup_uid}", labels::BACKUP_UID.name);
    let counts = ("podVolumeBackupsCompleted", "podVolumeBackupsFailed");
    let done = wait_for_volumes::<PodVolumeBackup, Backup>(ctx, &plan.name, counts, &selector, created, plan.pod_volume_timeout, log)
        .await?;
    for pvb in &done {
        let status = pvb.status.clone().unwrap_or_default();
        let ns = pvb.spec.pod.namespace.as_deref();
        let what = format!("pod volume {}/{}/{}", ns.unwrap_or(""), pvb.spec.pod.name.as_deref().unwrap_or(""), pvb.spec.volume);
        match status.phase {
            Some(PodVolumePhase::Completed) => log.info(format!(
                "{what}: snapshot {} ({} bytes)",
                status.snapshot_id.as_deref().unwrap_or("?"),
                status.progress.map(|p| p.total_bytes).unwrap_or(0)
            )),
            other => outcome.error(
                ns,
                format!(
                    "{what} {}: {}",
                    other.map(|p| format!("{p:?}")).unwrap_or_else(|| "never started".into()).to_lowercase(),
                    status.message.as_deref().unwrap_or("no message")
                ),
            ),
        }
    }
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
async fn pod_volume_backup(
    ctx: &Context,
    plan: &BackupPlan,
    backup: &Backup,
    backup_uid: &str,
    pod: &Item,
    volume: &PodVolume,
    node: &str,
    repo: &str,
) -> anyhow::Result<PodVolumeBackup> {
    let ns = pod.namespace.clone().unwrap_or_default();
    let pod_uid = pod.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut tags = BTreeMap::from([
        ("backup".to_string(), plan.name.clone()),
        ("backup-uid".to_string(), backup_uid.to_string()),
        ("ns".to_string(), ns.clone()),
        ("pod".to_string(), pod.name.clone()),
        ("pod-uid".to_string(), pod_uid.clone()),
        ("volume".to_string(), volume.name.clone()),
    ]);
    let mut pvb_labels = BTreeMap::from([
        (labels::BACKUP_NAME.name.to_string(), plan.name.clone()),
        (labels::BACKUP_UID.name.to_string(), backup_uid.to_string()),
    ]);
    if let Some(claim) = &volume.claim {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let pvc = pvcs.get_opt(claim).await?.ok_or_else(|| anyhow::anyhow!("its claim {ns}/{claim} does not exist"))?;
        tags.insert("pvc".to_string(), claim.clone());
        if let Some(uid) = pvc.uid() {
            tags.insert("pvc-uid".to_string(), uid.clone());
            pvb_labels.insert(labels::PVC_UID.name.to_string(), uid);
        }
    }
    Ok(PodVolumeBackup {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(&plan.name)),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(pvb_labels),
            owner_references: owner(backup).map(|o| vec![o]),
            ..Default::default()
        },
        spec: PodVolumeBackupSpec {
            node: node.to_string(),
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(ns),
                name: Some(pod.name.clone()),
                uid: Some(pod_uid),
                ..Default::default()
            },
            volume: volume.name.clone(),
            backup_storage_location: plan.location.name_any(),
            repo_identifier: repo.to_string(),
            tags,
        },
        status: None,
    })
}

/// `<operation>-`, short enough for the API server to append its random suffix.
pub fn generate_name(operation: &str) -> String {
    let head = match operation.char_indices().nth(57) {
        Some((i, _)) => &operation[..i],
        None => operation,
    };
    format!("{head}-")
}

/// A PodVolumeBackup or PodVolumeRestore, as [`wait_for_volumes`] waits for it.
pub(crate) trait VolumeOperation:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    fn volume_status(&self) -> Option<&PodVolumeStatus>;
    /// Why it is canceled when it is still running `after` the operation's timeout, and what
    /// to do about it.
    fn timed_out(&self, after: &str) -> String;
}

impl VolumeOperation for PodVolumeBackup {
    fn volume_status(&self) -> Option<&PodVolumeStatus> {
        self.status.as_ref()
    }

    fn timed_out(&self, after: &str) -> String {
        let unseen = self.status.as_ref().and_then(|s| s.phase).is_none();
        format!(
            "timed out after {after} (node {}{}); raise the backup's {TIMEOUT_ANNOTATION} annotation or the server's --pod-volume-timeout if the volume is large",
            self.spec.node,
            if unseen { ", whose node agent never picked it up" } else { "" }
        )
    }
}

/// Waits until every volume operation labelled `selector` has ended (at least `expected` of
/// them), or `timeout` passes: then the unfinished ones are canceled (their node agents stop
/// and release the repository) and say why. The operation `owner` (a Backup or Restore, `O`)
/// shows the counts in its status fields `counts` (completed, failed) as they change.
pub(crate) async fn wait_for_volumes<K: VolumeOperation, O>(
    ctx: &Context,
    owner: &str,
    counts: (&str, &str),
    selector: &str,
    expected: usize,
    timeout: Duration,
    log: &OperationLog,
) -> anyhow::Result<Vec<K>>
where
    O: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lp = ListParams::default().labels(selector);
    let deadline = tokio::time::Instant::now() + timeout;
    let phase = |p: &K| p.volume_status().and_then(|s| s.phase);
    let mut reported = (usize::MAX, usize::MAX);
    loop {
        let all = api.list(&lp).await?.items;
        let completed = all.iter().filter(|p| phase(p) == Some(PodVolumePhase::Completed)).count();
        let failed = all.iter().filter(|p| matches!(phase(p), Some(PodVolumePhase::Failed | PodVolumePhase::Canceled))).count();
        if (completed, failed) != reported {
            reported = (completed, failed);
            let _ = ctx.patch_status::<O>(owner, json!({counts.0: completed, counts.1: failed})).await;
        }
        if all.len() >= expected && completed + failed == all.len() {
            return Ok(all);
        }
        if tokio::time::Instant::now() >= deadline {
            let after = humantime::format_duration(timeout).to_string();
            for p in all.iter().filter(|p| !phase(p).is_some_and(PodVolumePhase::is_terminal)) {
                let message = p.timed_out(&after);
                log.error(format!("{} {}: {message}", K::kind(&()), p.name_any()));
                let status = PodVolumeStatus {
                    phase: Some(PodVolumePhase::Canceled),
                    message: Some(message),
                    completion_timestamp: Some(crate::server::locations::now()),
                    ..p.volume_status().cloned().unwrap_or_default()
                };
                let _ = ctx.patch_status::<K>(&p.name_any(), serde_json::to_value(&status)?).await;
            }
            let all = api.list(&lp).await?.items;
            let failed = all.iter().filter(|p| phase(p) != Some(PodVolumePhase::Completed)).count();
            let _ = ctx.patch_status::<O>(owner, json!({counts.0: all.len() - failed, counts.1: failed})).await;
            return Ok(all);
        }
        tokio::time::sleep(POLL).await;
    }
}

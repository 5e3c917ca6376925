//! Pod volumes and hooks (DESIGN §4, §6): pods are taken in groups (pods sharing a claim are one
//! group); for each, its pre hooks run, then one PodVolumeBackup per selected volume of a
//! running pod goes to the node agent on the pod's node and is waited for (up to the backup's
//! timeout), then its post hooks run. The results go to `<backup>-podvolumebackups.json.zst`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use stowage_api::podvolume::PodVolumePhase;
use stowage_api::podvolume::PodVolumeBackupSpec;
use stowage_api::{labels, Backup, PodVolumeBackup};
use futures::StreamExt;
use stowage_pipeline::volumes::{self, PodGroup, PodVolume, VolumeSelection};
use stowage_pipeline::{Item, Outcome};
use stowage_storage::ObjectStore;

use super::BackupPlan;
use crate::oplog::OperationLog;
use crate::context::Context;
use crate::hooks::backup::{BackupHookRunner, PodHooks};
use crate::podvolumes::{ended, generate_name, wait_for_volumes, POLL};
use crate::repositories;

/// How many groups of pods have their hooks run and volumes backed up at once.
const GROUPS_AT_ONCE: usize = 4;
/// Label on PodVolumeBackups: the group of pods (see `volumes::groups`) they belong to.
const GROUP_LABEL: &str = "stowage.io/volume-group";

/// The pods seen while collecting, with the volumes each asks to have copied.
#[derive(Default)]
pub struct Candidates {
    pods: Vec<(Item, VolumeSelection)>,
}

impl Candidates {
    /// Looks at one collected item; only pods matter: those with volumes to copy, and those
    /// that may have hooks (`any_may_have_hooks`: the backup has hook sets or hook extensions
    /// are loaded; otherwise only pods with hook annotations).
    pub fn observe(&mut self, item: &Item, default_volumes_to_fs_backup: bool, any_may_have_hooks: bool) {
        if !item.group.is_empty() || item.resource != "pods" {
            return;
        }
        let selection = volumes::select(item, default_volumes_to_fs_backup);
        if !selection.backup.is_empty() || !selection.skipped.is_empty() || any_may_have_hooks || has_hook_annotations(&item.object) {
            self.pods.push((item.clone(), selection));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

fn has_hook_annotations(pod: &Value) -> bool {
    let hooks = [labels::PRE_BACKUP_HOOK.command, labels::POST_BACKUP_HOOK.command, labels::HOOK_EXTENSIONS];
    hooks.iter().any(|k| k.item_annotation(pod).is_some())
}

fn owner(backup: &Backup) -> Option<OwnerReference> {
    backup.controller_owner_ref(&())
}

/// What the groups share while they run.
struct Shared<'a> {
    ctx: &'a Context,
    plan: &'a BackupPlan,
    backup: &'a Backup,
    backup_uid: String,
    store: Arc<dyn ObjectStore>,
    hooks: &'a BackupHookRunner<'a>,
    log: &'a OperationLog,
    /// Each namespace's repository, once ensured.
    repositories: tokio::sync::Mutex<BTreeMap<String, Result<String, String>>>,
}

/// For each group of pods: their pre hooks, then their volumes (PodVolumeBackups for the node
/// agents, waited for up to the backup's timeout), then their post hooks. Returns the
/// PodVolumeBackups as they ended.
#[allow(clippy::too_many_arguments)]
pub async fn back_up(
    ctx: &Context,
    plan: &BackupPlan,
    backup: &Backup,
    store: Arc<dyn ObjectStore>,
    candidates: Candidates,
    hooks: &BackupHookRunner<'_>,
    log: &OperationLog,
    outcome: &mut Outcome,
) -> anyhow::Result<Vec<PodVolumeBackup>> {
    for (pod, sel) in &candidates.pods {
        for (volume, why) in &sel.skipped {
            log.info(format!("pod {}/{}: volume {volume:?} is not backed up: {why}", pod.namespace.as_deref().unwrap_or(""), pod.name));
        }
    }
    let pods = candidates.pods;
    let pod_hooks: Vec<PodHooks> = pods.iter().map(|(p, _)| hooks.hooks_of(&p.object, outcome)).collect();
    // Groups with hooks run a few at a time, so that no application waits long between its
    // pre and post hooks for node agents busy with other groups; the volumes of pods without
    // hooks all go at once, as one group.
    let (hooked, plain): (Vec<PodGroup>, Vec<PodGroup>) = volumes::groups(&pods)
        .into_iter()
        .filter(|g| !g.volumes.is_empty() || g.pods.iter().any(|&i| !pod_hooks[i].is_empty()))
        .partition(|g| g.pods.iter().any(|&i| !pod_hooks[i].is_empty()));
    let plain = plain.into_iter().reduce(|mut all, g| {
        all.pods.extend(g.pods);
        all.volumes.extend(g.volumes);
        all
    });
    let groups: Vec<(usize, PodGroup)> = plain.into_iter().chain(hooked).enumerate().collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    ctx.patch_status::<Backup>(&plan.name, json!({"phase": "WaitingForVolumes"})).await?;
    let shared = Shared {
        ctx,
        plan,
        backup,
        backup_uid: backup.uid().unwrap_or_default(),
        store,
        hooks,
        log,
        repositories: Default::default(),
    };
    let selector = format!("{}={}", labels::BACKUP_UID.name, shared.backup_uid);
    let done = std::sync::atomic::AtomicBool::new(false);
    let run_groups = async {
        let runs: Vec<_> = groups.iter().map(|(id, g)| run_group(&shared, *id, g, &pods, &pod_hooks)).collect();
        let outcomes: Vec<Outcome> = futures::stream::iter(runs).buffer_unordered(GROUPS_AT_ONCE).collect().await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        outcomes
    };
    let (outcomes, ()) = futures::join!(run_groups, report_counts(ctx, &plan.name, &selector, &done));
    for o in outcomes {
        outcome.merge(o);
    }
    if let Some(status) = hooks.ledger.status() {
        ctx.patch_status::<Backup>(&plan.name, json!({"hookStatus": status})).await?;
    }
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let done = api.list(&ListParams::default().labels(&selector)).await?.items;
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

/// Keeps the Backup's volume counts current while the groups run, and once more at the end.
async fn report_counts(ctx: &Context, backup: &str, selector: &str, done: &std::sync::atomic::AtomicBool) {
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lp = ListParams::default().labels(selector);
    let mut reported = None;
    loop {
        let last = done.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(list) = api.list(&lp).await {
            let (completed, failed) = ended(&list.items);
            let counts = (list.items.len(), completed, failed);
            if reported != Some(counts) && counts.0 > 0 {
                reported = Some(counts);
                let status = json!({"podVolumeBackupsAttempted": counts.0, "podVolumeBackupsCompleted": completed, "podVolumeBackupsFailed": failed});
                let _ = ctx.patch_status::<Backup>(backup, status).await;
            }
        }
        if last {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One group: pre hooks, volumes, post hooks (owed once the pre hooks started).
async fn run_group(shared: &Shared<'_>, id: usize, group: &PodGroup, pods: &[(Item, VolumeSelection)], hooks: &[PodHooks]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut members = Vec::new();
    for &i in &group.pods {
        let current = match hooks[i].is_empty() {
            true => None,
            false => match shared.hooks.current(&hooks[i].pod).await {
                Ok(Some(p)) => Some(p),
                Ok(None) => {
                    outcome.warn(Some(&hooks[i].pod.namespace), format!("pod {} is gone: its hooks are not run", hooks[i].pod));
                    None
                }
                Err(e) => {
                    outcome.error(Some(&hooks[i].pod.namespace), format!("pod {}: reading it to run its hooks: {e}", hooks[i].pod));
                    None
                }
            },
        };
        members.push((hooks[i].clone(), current));
    }
    let position = |pod: usize| group.pods.iter().position(|&p| p == pod).unwrap_or(usize::MAX);
    let mut owing = Vec::new();
    let failed = shared.hooks.pre(&members, &mut owing, &mut outcome).await;
    let mut created = 0;
    for v in &group.volumes {
        let stopped_by = v.mounted_by.iter().find(|&&p| failed.contains(&position(p)));
        let (first, volume) = &v.from[0];
        let ns = pods[*first].0.namespace.clone().unwrap_or_default();
        if let Some(&p) = stopped_by {
            outcome.error(
                Some(&ns),
                format!("pod volume {ns}/{}/{} is not backed up: a pre hook of pod {} failed", pods[*first].0.name, volume.name, hooks[p].pod),
            );
            continue;
        }
        let running = |pod: &Item| {
            pod.object.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                && pod.object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        };
        let Some((pod, volume)) = v.from.iter().map(|(i, v)| (&pods[*i].0, v)).find(|(p, _)| running(p)) else {
            let pod = &pods[*first].0;
            let phase = pod.object.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Unknown");
            outcome.warn(Some(&ns), format!("pod {ns}/{} is {phase}, not Running on a node: volume {:?} is not backed up", pod.name, volume.name));
            continue;
        };
        if create_backup(shared, id, pod, volume, &mut outcome).await {
            created += 1;
        }
    }
    if created > 0 {
        let selector = format!("{}={},{GROUP_LABEL}={id}", labels::BACKUP_UID.name, shared.backup_uid);
        let waited =
            wait_for_volumes::<PodVolumeBackup, Backup>(shared.ctx, None, &selector, created, shared.plan.pod_volume_timeout, shared.log).await;
        if let Err(e) = waited {
            outcome.error(None, format!("waiting for the pod volume backups: {e:#}"));
        }
    }
    shared.hooks.post(&members, &owing, &mut outcome).await;
    outcome
}

/// Creates the PodVolumeBackup of one volume; false (with the reason on `outcome`) when none
/// could be created.
async fn create_backup(shared: &Shared<'_>, group: usize, pod: &Item, volume: &PodVolume, outcome: &mut Outcome) -> bool {
    let ns = pod.namespace.clone().unwrap_or_default();
    let pod_ref = format!("{ns}/{}", pod.name);
    let node = pod.object.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let repo = {
        let mut repositories = shared.repositories.lock().await;
        match repositories.get(&ns) {
            Some(r) => r.clone(),
            None => {
                let r = repositories::ensure(shared.ctx, &shared.plan.location, shared.store.clone(), &ns)
                    .await
                    .map(|r| r.spec.restic_identifier)
                    .map_err(|e| format!("{e:#}"));
                repositories.insert(ns.clone(), r.clone());
                r
            }
        }
    };
    let repo = match repo {
        Ok(r) => r,
        Err(e) => {
            outcome.error(Some(&ns), format!("pod volume {pod_ref}/{}: {e}", volume.name));
            return false;
        }
    };
    let mut pvb = match pod_volume_backup(shared.ctx, shared.plan, shared.backup, &shared.backup_uid, pod, volume, node, &repo).await {
        Ok(p) => p,
        Err(e) => {
            outcome.error(Some(&ns), format!("pod volume {pod_ref}/{}: {e:#}", volume.name));
            return false;
        }
    };
    pvb.metadata.labels.get_or_insert_with(Default::default).insert(GROUP_LABEL.to_string(), group.to_string());
    let api: Api<PodVolumeBackup> = Api::namespaced(shared.ctx.client.clone(), &shared.ctx.namespace);
    match api.create(&PostParams::default(), &pvb).await {
        Ok(p) => {
            shared.log.info(format!("pod volume {pod_ref}/{} on node {node}: PodVolumeBackup {}", volume.name, p.name_any()));
            true
        }
        Err(e) => {
            outcome.error(Some(&ns), format!("pod volume {pod_ref}/{}: creating its PodVolumeBackup: {e}", volume.name));
            false
        }
    }
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


//! Pod volumes and hooks (DESIGN §4, §6): pods are taken in groups (pods sharing a claim are one
//! group); for each, its pre hooks run, then one PodVolumeBackup per selected volume of a
//! running pod goes to the node agent on the pod's node and is waited for (up to the backup's
//! timeout), then its post hooks run. The results go to `<backup>-podvolumebackups.json.zst`.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::access::{self, AccessPod, AccessVolume, Purpose};
use crate::hooks::backup::{BackupHookRunner, Owing, PodHooks};
use crate::podvolumes::{ended, generate_name, wait_for_volumes, POLL};
use crate::repositories;

/// How many groups of pods have their hooks run and volumes backed up at once.
const GROUPS_AT_ONCE: usize = 4;
/// Label on PodVolumeBackups: the group of pods (see `volumes::groups`) they belong to.
const GROUP_LABEL: &str = "stowage.io/volume-group";
/// Label on PodVolumeBackups: the attempt of the backup that made (or reused) them.
const ATTEMPT_LABEL: &str = "stowage.io/attempt";
/// Label on PodVolumeBackups taken through an access pod: `pod-gone` (the tag `pod` names the
/// pod that went away) or `unmounted-claim` (the tag `pvc` names the claim).
pub const ACCESS_KIND_LABEL: &str = "stowage.io/access";

/// The pods seen while collecting, with the volumes each asks to have copied.
#[derive(Default)]
pub struct Candidates {
    pods: Vec<(Item, VolumeSelection)>,
    /// The claims collected.
    claims: Vec<Item>,
}

impl Candidates {
    /// Looks at one collected item; only pods matter: those with volumes to copy, and those
    /// that may have hooks (`any_may_have_hooks`: the backup has hook sets or hook extensions
    /// are loaded; otherwise only pods with hook annotations).
    pub fn observe(&mut self, item: &Item, default_volumes_to_fs_backup: bool, any_may_have_hooks: bool) {
        if item.is("", "persistentvolumeclaims") {
            self.claims.push(item.clone());
        }
        if !item.group.is_empty() || item.resource != "pods" {
            return;
        }
        let selection = volumes::select(item, default_volumes_to_fs_backup);
        if !selection.backup.is_empty() || !selection.skipped.is_empty() || any_may_have_hooks || has_hook_annotations(&item.object) {
            self.pods.push((item.clone(), selection));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.claims.is_empty()
    }

    /// The collected claims whose data is to be copied though no pod mounts them: all of them
    /// when `all` (`spec.backupUnmountedVolumes`), else those annotated
    /// `backup.stowage.io/include-unmounted: "true"`.
    pub async fn unmounted(&self, ctx: &Context, all: bool, log: &OperationLog) -> Vec<Item> {
        let wanted: Vec<&Item> = self
            .claims
            .iter()
            .filter(|c| all || labels::INCLUDE_UNMOUNTED.item_annotation(&c.object).is_some_and(|v| v.eq_ignore_ascii_case("true")))
            .collect();
        let namespaces: BTreeSet<String> = wanted.iter().filter_map(|c| c.namespace.clone()).collect();
        let mut out = Vec::new();
        for ns in namespaces {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let live = match pods.list(&ListParams::default()).await {
                Ok(l) => l.items.into_iter().map(|p| serde_json::to_value(p).unwrap_or_default()).collect::<Vec<_>>(),
                Err(e) => {
                    log.warn(format!("namespace {ns}: listing its pods to find unmounted claims: {e}; they are not backed up"));
                    continue;
                }
            };
            let claims: Vec<Value> = wanted.iter().filter(|c| c.namespace.as_deref() == Some(ns.as_str())).map(|c| c.object.clone()).collect();
            let free = access::unmounted_claims(&claims, &live);
            out.extend(wanted.iter().filter(|c| c.namespace.as_deref() == Some(ns.as_str()) && free.contains(&c.name)).map(|c| (*c).clone()));
        }
        out
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
    /// The PodVolumeBackups an earlier attempt of this backup completed, by [`reuse_key`].
    reusable: tokio::sync::Mutex<BTreeMap<String, PodVolumeBackup>>,
}

/// What makes two PodVolumeBackups of one backup copies of the same volume: the pod (by uid)
/// and volume, or for those taken through access pods the pod that went away or the claim.
fn reuse_key(pvb: &PodVolumeBackup) -> String {
    let ns = pvb.spec.pod.namespace.as_deref().unwrap_or("");
    let tag = |k: &str| pvb.spec.tags.get(k).map(String::as_str).unwrap_or("");
    match pvb.metadata.labels.as_ref().and_then(|l| l.get(ACCESS_KIND_LABEL)).map(String::as_str) {
        Some("pod-gone") => format!("gone/{ns}/{}/{}", tag("pod"), pvb.spec.volume),
        Some(_) => format!("claim/{ns}/{}", tag("pvc-uid")),
        None => format!("pod/{ns}/{}/{}", pvb.spec.pod.uid.as_deref().unwrap_or(""), pvb.spec.volume),
    }
}

/// The PodVolumeBackups earlier attempts of the backup completed, by [`reuse_key`].
async fn completed_earlier(ctx: &Context, backup_uid: &str, attempt: u32) -> anyhow::Result<BTreeMap<String, PodVolumeBackup>> {
    if attempt <= 1 {
        return Ok(BTreeMap::new());
    }
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let all = api.list(&ListParams::default().labels(&format!("{}={backup_uid}", labels::BACKUP_UID.name))).await?.items;
    Ok(all
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase) == Some(PodVolumePhase::Completed))
        .map(|p| (reuse_key(&p), p))
        .collect())
}

/// Deletes the PodVolumeBackups earlier attempts left and this one did not reuse, and forgets
/// the snapshots of those that completed: what they copied is not part of the backup.
async fn delete_earlier(shared: &Shared<'_>) {
    let (ctx, attempt) = (shared.ctx, shared.plan.attempt);
    if attempt <= 1 {
        return;
    }
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={}", labels::BACKUP_UID.name, shared.backup_uid);
    let Ok(all) = api.list(&ListParams::default().labels(&selector)).await else { return };
    let current = attempt.to_string();
    let mut snapshots: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in all.items.iter().filter(|p| p.labels().get(ATTEMPT_LABEL) != Some(&current)) {
        if let (Some(ns), Some(id)) = (&p.spec.pod.namespace, p.status.as_ref().and_then(|s| s.snapshot_id.clone())) {
            snapshots.entry(ns.clone()).or_default().push(id);
        }
        let _ = api.delete(&p.name_any(), &Default::default()).await;
    }
    let backup = &shared.plan.name;
    if let Err(e) = crate::server::deletions::forget_in(ctx, &shared.plan.location, shared.store.clone(), backup, snapshots).await {
        shared.log.warn(format!("forgetting the snapshots of an earlier attempt no pod volume of this one reused: {e:#}"));
    }
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
    let unmounted = candidates.unmounted(ctx, plan.backup_unmounted_volumes, log).await;
    let pods = candidates.pods;
    let mut pod_hooks: Vec<PodHooks> = Vec::with_capacity(pods.len());
    for (p, selection) in &pods {
        let copied: Vec<String> = selection.backup.iter().map(|v| v.name.clone()).collect();
        pod_hooks.push(hooks.hooks_of(&p.object, &copied, outcome).await);
    }
    // Groups with hooks run a few at a time, so that no application waits long between its
    // pre and post hooks for node agents busy with other groups; the volumes of pods without
    // hooks all go at once, as one group.
    // The pods of a workload whose hooks are called per workload are one group: its hooks run
    // once, around the volumes of all of them.
    let grouped = merge_groups(volumes::groups(&pods), |i| pod_hooks[i].workload_uid().map(str::to_string));
    let (hooked, plain): (Vec<PodGroup>, Vec<PodGroup>) = grouped
        .into_iter()
        .filter(|g| !g.volumes.is_empty() || g.pods.iter().any(|&i| !pod_hooks[i].is_empty()))
        .partition(|g| g.pods.iter().any(|&i| !pod_hooks[i].is_empty()));
    let plain = plain.into_iter().reduce(|mut all, g| {
        all.pods.extend(g.pods);
        all.volumes.extend(g.volumes);
        all
    });
    let groups: Vec<(usize, PodGroup)> = plain.into_iter().chain(hooked).enumerate().collect();
    if groups.is_empty() && unmounted.is_empty() {
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
        reusable: tokio::sync::Mutex::new(completed_earlier(ctx, &backup.uid().unwrap_or_default(), plan.attempt).await?),
    };
    let selector = format!("{}={},{ATTEMPT_LABEL}={}", labels::BACKUP_UID.name, shared.backup_uid, plan.attempt);
    let done = std::sync::atomic::AtomicBool::new(false);
    let run_groups = async {
        let mut runs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + '_>>> = Vec::new();
        for (id, g) in &groups {
            runs.push(Box::pin(run_group(&shared, *id, g, &pods, &pod_hooks)));
        }
        for (i, claim) in unmounted.iter().enumerate() {
            runs.push(Box::pin(back_up_unmounted(&shared, groups.len() + i, claim)));
        }
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
    delete_earlier(&shared).await;
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
        // Only a pod's own hooks need it as it is now (its workload's run on the workload).
        let current = match hooks[i].own_empty() {
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
    let mut owing = Owing::default();
    let failed = shared.hooks.pre(&members, &mut owing, &mut outcome).await;
    // Pods a workload hook took away (scaled to zero): their claims are copied with no pod of
    // the application running, through access pods.
    let mut gone = BTreeSet::new();
    if !owing.workloads.is_empty() {
        for &i in group.pods.iter().filter(|&&i| hooks[i].workload.is_some()) {
            if let Ok(None) = shared.hooks.current(&hooks[i].pod).await {
                gone.insert(i);
            }
        }
    }
    let mut via_access: BTreeMap<usize, Vec<PodVolume>> = BTreeMap::new();
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
        if v.from.iter().all(|(i, _)| gone.contains(i)) {
            match volume.claim {
                Some(_) => via_access.entry(*first).or_default().push(volume.clone()),
                None => outcome.warn(Some(&ns), format!("pod {ns}/{} went away with its volume {:?}, which is no claim: it is not backed up", pods[*first].0.name, volume.name)),
            }
            continue;
        }
        let running = |pod: &Item| {
            pod.object.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                && pod.object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        };
        let candidates = v.from.iter().filter(|(i, _)| !gone.contains(i)).map(|(i, v)| (&pods[*i].0, v));
        let Some((pod, volume)) = candidates.clone().find(|(p, _)| running(p)) else {
            let pod = &pods[*first].0;
            let phase = pod.object.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Unknown");
            outcome.warn(Some(&ns), format!("pod {ns}/{} is {phase}, not Running on a node: volume {:?} is not backed up", pod.name, volume.name));
            continue;
        };
        if create_backup(shared, id, pod, volume, Via::Pod, &mut outcome).await {
            created += 1;
        }
    }
    let mut access_pods = Vec::new();
    for (i, claims) in via_access {
        let source = &pods[i].0;
        let ns = source.namespace.clone().unwrap_or_default();
        let node = source.object.pointer("/spec/nodeName").and_then(Value::as_str);
        let mounts: Vec<AccessVolume> =
            claims.iter().map(|v| AccessVolume { volume: v.name.clone(), claim: v.claim.clone().unwrap_or_default() }).collect();
        match access::start(shared.ctx, &ns, &mounts, Purpose::Backup, &shared.backup_uid, node, None).await {
            Ok(access_pod) => {
                shared.log.info(format!("pod {ns}/{} is gone: its claims are copied through access pod {}", source.name, access_pod.name));
                let item = access_item(&access_pod);
                for volume in &claims {
                    if create_backup(shared, id, &item, volume, Via::AccessFor(&source.name), &mut outcome).await {
                        created += 1;
                    }
                }
                access_pods.push(access_pod);
            }
            Err(e) => outcome.error(Some(&ns), format!("pod {ns}/{} is gone and its claims could not be reached: {e}", source.name)),
        }
    }
    if created > 0 {
        if let Err(e) = wait_for_group(shared, id, created).await {
            outcome.error(None, format!("waiting for the pod volume backups: {e:#}"));
        }
    }
    for a in &access_pods {
        access::stop(&shared.ctx.client, &a.namespace, &a.name).await;
    }
    shared.hooks.post(&members, &owing, &mut outcome).await;
    outcome
}

/// Waits for the `count` PodVolumeBackups of group `id` to end (up to the backup's timeout).
async fn wait_for_group(shared: &Shared<'_>, id: usize, count: usize) -> anyhow::Result<()> {
    let selector = format!("{}={},{GROUP_LABEL}={id},{ATTEMPT_LABEL}={}", labels::BACKUP_UID.name, shared.backup_uid, shared.plan.attempt);
    wait_for_volumes::<PodVolumeBackup, Backup>(shared.ctx, None, &selector, count, shared.plan.pod_volume_timeout, shared.log).await?;
    Ok(())
}

/// Groups that share a key (a workload) become one.
fn merge_groups(groups: Vec<PodGroup>, key: impl Fn(usize) -> Option<String>) -> Vec<PodGroup> {
    let mut merged: Vec<PodGroup> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for group in groups {
        let keys: BTreeSet<String> = group.pods.iter().filter_map(|&i| key(i)).collect();
        match keys.iter().find_map(|k| by_key.get(k).copied()) {
            Some(at) => {
                merged[at].pods.extend(group.pods);
                merged[at].volumes.extend(group.volumes);
                for k in keys {
                    by_key.insert(k, at);
                }
            }
            None => {
                for k in keys {
                    by_key.insert(k, merged.len());
                }
                merged.push(group);
            }
        }
    }
    merged
}

/// An access pod as an item, for the PodVolumeBackups of its claims.
fn access_item(pod: &AccessPod) -> Item {
    let info = stowage_pipeline::ApiResourceInfo::new("", "v1", "pods", "Pod", true);
    Item::new(pod.object.clone(), &info).unwrap_or_else(|_| unreachable!("an access pod is a pod"))
}

/// One claim no pod mounts: copied through an access pod of its own.
async fn back_up_unmounted(shared: &Shared<'_>, id: usize, claim: &Item) -> Outcome {
    let mut outcome = Outcome::default();
    let ns = claim.namespace.clone().unwrap_or_default();
    let volume = PodVolume { name: access::claim_volume_name(&claim.name), claim: Some(claim.name.clone()) };
    let mounts = [AccessVolume { volume: volume.name.clone(), claim: claim.name.clone() }];
    let access_pod = match access::start(shared.ctx, &ns, &mounts, Purpose::Backup, &shared.backup_uid, None, None).await {
        Ok(p) => p,
        Err(e) => {
            outcome.error(Some(&ns), format!("claim {ns}/{}, which no pod mounts, could not be reached: {e}", claim.name));
            return outcome;
        }
    };
    shared.log.info(format!("claim {ns}/{} is mounted by no pod: copied through access pod {}", claim.name, access_pod.name));
    if create_backup(shared, id, &access_item(&access_pod), &volume, Via::Unmounted, &mut outcome).await {
        if let Err(e) = wait_for_group(shared, id, 1).await {
            outcome.error(None, format!("waiting for the backup of claim {ns}/{}: {e:#}", claim.name));
        }
    }
    access::stop(&shared.ctx.client, &access_pod.namespace, &access_pod.name).await;
    outcome
}

/// How the node agent reaches a volume.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// In the pod that mounts it.
    Pod,
    /// In an access pod, for the named pod that went away (a workload scaled to zero).
    AccessFor(&'a str),
    /// In an access pod: a claim no pod mounts.
    Unmounted,
}

/// Creates the PodVolumeBackup of one volume; false (with the reason on `outcome`) when none
/// could be created.
async fn create_backup(shared: &Shared<'_>, group: usize, pod: &Item, volume: &PodVolume, via: Via<'_>, outcome: &mut Outcome) -> bool {
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
    let mut pvb = match pod_volume_backup(shared.ctx, shared.plan, shared.backup, &shared.backup_uid, pod, volume, node, &repo, via).await {
        Ok(p) => p,
        Err(e) => {
            outcome.error(Some(&ns), format!("pod volume {pod_ref}/{}: {e:#}", volume.name));
            return false;
        }
    };
    let pvb_labels = pvb.metadata.labels.get_or_insert_with(Default::default);
    pvb_labels.insert(GROUP_LABEL.to_string(), group.to_string());
    pvb_labels.insert(ATTEMPT_LABEL.to_string(), shared.plan.attempt.to_string());
    let api: Api<PodVolumeBackup> = Api::namespaced(shared.ctx.client.clone(), &shared.ctx.namespace);
    if let Some(earlier) = shared.reusable.lock().await.remove(&reuse_key(&pvb)) {
        // Completed by an earlier attempt of this backup: counted in this one, not redone.
        let relabel = json!({"metadata": {"labels": {GROUP_LABEL: group.to_string(), ATTEMPT_LABEL: shared.plan.attempt.to_string()}}});
        match api.patch(&earlier.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&relabel)).await {
            Ok(_) => {
                shared.log.info(format!(
                    "pod volume {pod_ref}/{}: reusing PodVolumeBackup {}, completed by an earlier attempt (snapshot {})",
                    volume.name,
                    earlier.name_any(),
                    earlier.status.as_ref().and_then(|s| s.snapshot_id.as_deref()).unwrap_or("?")
                ));
                return true;
            }
            Err(e) => shared.log.warn(format!("pod volume {pod_ref}/{}: reusing PodVolumeBackup {}: {e}; copying it again", volume.name, earlier.name_any())),
        }
    }
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
    via: Via<'_>,
) -> anyhow::Result<PodVolumeBackup> {
    let ns = pod.namespace.clone().unwrap_or_default();
    let pod_uid = pod.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut tags = BTreeMap::from([
        ("backup".to_string(), plan.name.clone()),
        ("backup-uid".to_string(), backup_uid.to_string()),
        ("ns".to_string(), ns.clone()),
        ("pod".to_string(), match via {
            Via::AccessFor(source) => source.to_string(),
            Via::Pod | Via::Unmounted => pod.name.clone(),
        }),
        ("pod-uid".to_string(), pod_uid.clone()),
        ("volume".to_string(), volume.name.clone()),
    ]);
    let mut pvb_labels = BTreeMap::from([
        (labels::BACKUP_NAME.name.to_string(), plan.name.clone()),
        (labels::BACKUP_UID.name.to_string(), backup_uid.to_string()),
    ]);
    match via {
        Via::Pod => {}
        Via::AccessFor(_) => {
            tags.insert("access-pod".to_string(), pod.name.clone());
            pvb_labels.insert(ACCESS_KIND_LABEL.to_string(), "pod-gone".to_string());
        }
        Via::Unmounted => {
            pvb_labels.insert(ACCESS_KIND_LABEL.to_string(), "unmounted-claim".to_string());
        }
    }
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_that_share_a_workload_become_one() {
        let group = |pods: &[usize]| PodGroup { pods: pods.to_vec(), volumes: Vec::new() };
        // Pods 0 and 2 belong to workload "a", 3 and 4 to "b"; pod 1 has none.
        let key = |i: usize| match i {
            0 | 2 => Some("a".to_string()),
            3 | 4 => Some("b".to_string()),
            _ => None,
        };
        let merged = merge_groups(vec![group(&[0]), group(&[1]), group(&[2]), group(&[3, 4])], key);
        let pods: Vec<Vec<usize>> = merged.into_iter().map(|g| g.pods).collect();
        assert_eq!(pods, vec![vec![0, 2], vec![1], vec![3, 4]]);
    }
}

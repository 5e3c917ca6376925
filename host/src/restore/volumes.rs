//! Pod volume restores (DESIGN §6): a restored pod whose volumes were backed up gets the
//! restore helper init container; once the pod exists, one PodVolumeRestore per volume asks
//! the node agent on its node to put the data back; the restore waits for them, up to its
//! timeout, and never hangs forever.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::podvolume::PodVolumePhase;
use stowage_api::podvolume::PodVolumeRestoreSpec;
use stowage_api::{labels, PodVolumeBackup, PodVolumeRestore, Restore};
use stowage_pipeline::restore::helper::RestoreHelper;
use stowage_pipeline::{Item, Outcome};

use crate::access::{self, AccessVolume, Purpose};
use crate::backup::volumes::ACCESS_KIND_LABEL;
use crate::podvolumes::{generate_name, wait_for_volumes};
use crate::oplog::OperationLog;
use crate::context::Context;

/// The volume backups of a backup, by (source namespace, pod name).
#[derive(Default)]
pub struct Restorer {
    by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>>,
    /// Claims no pod mounted, by (source namespace, claim): put back through access pods.
    by_claim: BTreeMap<(String, String), PodVolumeBackup>,
    /// The access pods made for them, deleted by [`Restorer::finish`].
    access_pods: Vec<(String, String)>,
    /// PodVolumeRestores into access pods not yet waited for.
    claims_pending: usize,
    timeout: Duration,
    helper: Option<RestoreHelper>,
    restore_name: String,
    restore_uid: String,
    location: String,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    /// PodVolumeRestores created (or completed by an earlier attempt and counted) so far.
    pub created: usize,
    /// Which start of the restore this is (1 unless a server stopped while it ran).
    attempt: u32,
    /// The PodVolumeRestores earlier attempts completed.
    earlier: Vec<PodVolumeRestore>,
}

/// Label on PodVolumeRestores into an access pod: the claim it fills.
const CLAIM_LABEL: &str = "stowage.io/claim";
/// Label on PodVolumeRestores: the uid of the pod they restore into.
const POD_UID_LABEL: &str = "stowage.io/pod-uid";

impl Restorer {
    pub async fn new(ctx: &Context, restore: &Restore, location: &str, backups: Vec<PodVolumeBackup>, timeout: Duration, log: &OperationLog) -> Restorer {
        let mut by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>> = BTreeMap::new();
        let mut by_claim = BTreeMap::new();
        for pvb in backups {
            let done = pvb.status.as_ref().and_then(|s| s.phase) == Some(PodVolumePhase::Completed)
                && pvb.status.as_ref().and_then(|s| s.snapshot_id.as_ref()).is_some();
            if !done {
                continue;
            }
            let ns = pvb.spec.pod.namespace.clone().unwrap_or_default();
            let access = pvb.metadata.labels.as_ref().and_then(|l| l.get(ACCESS_KIND_LABEL)).map(String::as_str);
            match access {
                // Copied through an access pod for a pod that went away: restored into that pod.
                Some("pod-gone") => {
                    let pod = pvb.spec.tags.get("pod").cloned().unwrap_or_default();
                    by_pod.entry((ns, pod)).or_default().push(pvb);
                }
                Some("unmounted-claim") => {
                    let claim = pvb.spec.tags.get("pvc").cloned().unwrap_or_default();
                    by_claim.insert((ns, claim), pvb);
                }
                _ => {
                    let key = (ns, pvb.spec.pod.name.clone().unwrap_or_default());
                    by_pod.entry(key).or_default().push(pvb);
                }
            }
        }
        let helper = if by_pod.is_empty() && by_claim.is_empty() { None } else { Some(helper_config(ctx, log).await) };
        Restorer {
            by_pod,
            by_claim,
            access_pods: Vec::new(),
            claims_pending: 0,
            timeout,
            helper,
            restore_name: restore.name_any(),
            restore_uid: restore.uid().unwrap_or_default(),
            location: location.to_string(),
            owner: restore.controller_owner_ref(&()),
            created: 0,
            attempt: restore.status.as_ref().map_or(0, |s| s.attempts) + 1,
            earlier: Vec::new(),
        }
        .with_earlier_attempts(ctx, log)
        .await
    }

    /// On a later attempt: keeps the PodVolumeRestores earlier attempts completed and deletes the
    /// others (their access pods are gone; the pods they fill wait for a new one).
    async fn with_earlier_attempts(mut self, ctx: &Context, log: &OperationLog) -> Restorer {
        if self.attempt <= 1 {
            return self;
        }
        let api: Api<PodVolumeRestore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let selector = format!("{}={}", labels::RESTORE_UID.name, self.restore_uid);
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                for pvr in list.items {
                    if pvr.status.as_ref().and_then(|s| s.phase) == Some(PodVolumePhase::Completed) {
                        self.earlier.push(pvr);
                    } else {
                        log.info(format!("PodVolumeRestore {} of an earlier attempt did not complete: deleted, the volume is restored again", pvr.name_any()));
                        let _ = api.delete(&pvr.name_any(), &Default::default()).await;
                    }
                }
            }
            Err(e) => log.warn(format!("listing the PodVolumeRestores of earlier attempts: {e}; volumes are restored again")),
        }
        self
    }

    /// Whether this is a later attempt of the restore.
    pub fn resuming(&self) -> bool {
        self.attempt > 1
    }

    /// After an object an earlier attempt created was found: the volumes it still needs.
    pub async fn resumed(&mut self, ctx: &Context, source_namespace: &str, item: &Item, live: &DynamicObject, outcome: &mut Outcome) {
        let ns = item.namespace.clone().unwrap_or_default();
        if item.is("", "persistentvolumeclaims") {
            let filled = self.earlier.iter().any(|p| {
                p.labels().get(CLAIM_LABEL) == Some(&item.name) && p.spec.pod.namespace.as_deref() == Some(ns.as_str())
            });
            if filled {
                self.created += 1;
                self.claims_pending += 1;
            } else {
                self.claim_created(ctx, source_namespace, item, outcome).await;
            }
            return;
        }
        if !item.is("", "pods") {
            return;
        }
        let Some(pvbs) = self.volumes_of(source_namespace, &item.name).cloned() else { return };
        let uid = live.uid().unwrap_or_default();
        let (done, missing): (Vec<PodVolumeBackup>, Vec<PodVolumeBackup>) = pvbs.into_iter().partition(|pvb| {
            self.earlier.iter().any(|p| p.labels().get(POD_UID_LABEL) == Some(&uid) && p.spec.volume == pvb.spec.volume)
        });
        self.created += done.len();
        self.restore_into(ctx, source_namespace, (&ns, &item.name, Some(uid)), &missing, None, outcome).await;
    }

    fn volumes_of(&self, source_namespace: &str, pod: &str) -> Option<&Vec<PodVolumeBackup>> {
        self.by_pod.get(&(source_namespace.to_string(), pod.to_string()))
    }

    /// Before a pod is created: adds the helper if it has volumes to restore.
    pub fn prepare(&self, source_namespace: &str, item: &mut Item) {
        if !item.is("", "pods") {
            return;
        }
        let (Some(pvbs), Some(helper)) = (self.volumes_of(source_namespace, &item.name), &self.helper) else { return };
        let volumes: Vec<String> = pvbs.iter().map(|p| p.spec.volume.clone()).collect();
        helper.add_to(&mut item.object, &volumes, &self.restore_uid);
    }

    /// After a pod was created: one PodVolumeRestore per volume backed up. After a claim whose
    /// data was backed up with no pod mounting it: an access pod that mounts it, and the
    /// PodVolumeRestore into it.
    pub async fn created(&mut self, ctx: &Context, source_namespace: &str, item: &Item, pod: &DynamicObject, outcome: &mut Outcome) {
        if item.is("", "persistentvolumeclaims") {
            self.claim_created(ctx, source_namespace, item, outcome).await;
            return;
        }
        if !item.is("", "pods") {
            return;
        }
        let Some(pvbs) = self.volumes_of(source_namespace, &item.name).cloned() else { return };
        let ns = item.namespace.clone().unwrap_or_default();
        self.restore_into(ctx, source_namespace, (&ns, &item.name, pod.uid()), &pvbs, None, outcome).await;
    }

    async fn claim_created(&mut self, ctx: &Context, source_namespace: &str, item: &Item, outcome: &mut Outcome) {
        let Some(pvb) = self.by_claim.get(&(source_namespace.to_string(), item.name.clone())).cloned() else { return };
        let Some(helper) = &self.helper else { return };
        let ns = item.namespace.clone().unwrap_or_default();
        let volume = pvb.spec.volume.clone();
        let mut template = json!({"spec": {"volumes": [{"name": volume}]}});
        helper.add_to(&mut template, std::slice::from_ref(&volume), &self.restore_uid);
        let init = template.pointer("/spec/initContainers/0").cloned();
        let mounts = [AccessVolume { volume, claim: item.name.clone() }];
        match access::start(ctx, &ns, &mounts, Purpose::Restore, &self.restore_uid, None, init).await {
            Ok(access_pod) => {
                self.access_pods.push((ns.clone(), access_pod.name.clone()));
                let target = (ns.as_str(), access_pod.name.as_str(), Some(access_pod.uid.clone()));
                let before = self.created;
                self.restore_into(ctx, source_namespace, target, &[pvb], Some(&item.name), outcome).await;
                self.claims_pending += self.created - before;
            }
            Err(e) => outcome.error(Some(&ns), format!("claim {ns}/{}: its data cannot be put back: {e}", item.name)),
        }
    }

    /// Before the first pod is created: waits for the claims being filled through access pods,
    /// then deletes those, so that no application pod mounts a claim before its data is back.
    pub async fn before_pod(&mut self, ctx: &Context, log: &OperationLog, outcome: &mut Outcome) {
        if self.claims_pending == 0 {
            return;
        }
        let selector = format!("{}={},{ACCESS_KIND_LABEL}=unmounted-claim", labels::RESTORE_UID.name, self.restore_uid);
        log.info(format!("waiting for {} claim(s) to be filled before creating pods", self.claims_pending));
        let waited = wait_for_volumes::<PodVolumeRestore, Restore>(ctx, None, &selector, self.claims_pending, self.timeout, log).await;
        if let Err(e) = waited {
            outcome.error(None, format!("waiting for the claims restored through access pods: {e:#}"));
        }
        self.claims_pending = 0;
        self.finish(ctx).await;
    }

    /// Deletes the access pods once their volumes are restored (or the wait gave up).
    pub async fn finish(&mut self, ctx: &Context) {
        for (ns, name) in std::mem::take(&mut self.access_pods) {
            access::stop(&ctx.client, &ns, &name).await;
        }
    }

    /// One PodVolumeRestore per volume backup, into `(namespace, pod, uid)`; `into_claim`: the
    /// pod is an access pod filling that claim.
    async fn restore_into(
        &mut self,
        ctx: &Context,
        source_namespace: &str,
        (ns, pod_name, pod_uid): (&str, &str, Option<String>),
        pvbs: &[PodVolumeBackup],
        into_claim: Option<&str>,
        outcome: &mut Outcome,
    ) {
        let ns = ns.to_string();
        let api: Api<PodVolumeRestore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        for pvb in pvbs {
            let Some(snapshot) = pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()) else { continue };
            let pvr = PodVolumeRestore {
                metadata: ObjectMeta {
                    generate_name: Some(generate_name(&self.restore_name)),
                    namespace: Some(ctx.namespace.clone()),
                    labels: Some(BTreeMap::from([
                        (labels::RESTORE_NAME.name.to_string(), self.restore_name.clone()),
                        (labels::RESTORE_UID.name.to_string(), self.restore_uid.clone()),
                        (POD_UID_LABEL.to_string(), pod_uid.clone().unwrap_or_default()),
                    ])
                    .into_iter()
                    .chain(into_claim.into_iter().flat_map(|claim| {
                        [(ACCESS_KIND_LABEL.to_string(), "unmounted-claim".to_string()), (CLAIM_LABEL.to_string(), claim.to_string())]
                    }))
                    .collect()),
                    owner_references: self.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: PodVolumeRestoreSpec {
                    pod: ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: Some(ns.clone()),
                        name: Some(pod_name.to_string()),
                        uid: pod_uid.clone(),
                        ..Default::default()
                    },
                    volume: pvb.spec.volume.clone(),
                    backup_storage_location: self.location.clone(),
                    repo_identifier: pvb.spec.repo_identifier.clone(),
                    snapshot_id: snapshot,
                    source_namespace: Some(source_namespace.to_string()),
                    include_paths: Vec::new(),
                    target_dir: None,
                },
                status: None,
            };
            match api.create(&PostParams::default(), &pvr).await {
                Ok(_) => self.created += 1,
                Err(e) => outcome.error(Some(&ns), format!("pod {ns}/{pod_name}: creating the PodVolumeRestore of volume {:?}: {e}", pvb.spec.volume)),
            }
        }
    }

    /// A pod that already existed keeps its data: say so.
    pub fn existing(&self, source_namespace: &str, item: &Item, outcome: &mut Outcome) {
        if item.is("", "pods") && self.volumes_of(source_namespace, &item.name).is_some() {
            outcome.warn(
                item.namespace.as_deref(),
                format!("pod {}/{} already exists: its volume data was not restored", item.namespace.as_deref().unwrap_or(""), item.name),
            );
        }
    }
}

/// The helper's image, resources and security context: the server's defaults, overridden by
/// the ConfigMap labelled `stowage.io/pod-volume-restore: RestoreItemAction` (Velero's label works too).
async fn helper_config(ctx: &Context, log: &OperationLog) -> RestoreHelper {
    match super::action_config_maps(ctx, &labels::POD_VOLUME_RESTORE).await {
        Ok(list) => {
            if let Some(cm) = list.into_iter().next() {
                let (helper, problems) =
                    RestoreHelper::configured(&ctx.restore_helper_image, &cm.name_any(), &cm.data.clone().unwrap_or_default());
                for p in problems {
                    log.warn(p);
                }
                log.info(format!("restore helper: image {} (ConfigMap {})", helper.image, cm.name_any()));
                return helper;
            }
        }
        Err(e) => log.warn(format!("reading the restore helper ConfigMap: {e}; using the defaults")),
    }
    RestoreHelper::new(&ctx.restore_helper_image)
}

/// Waits for the restore's PodVolumeRestores to end; those still running at the timeout are
/// canceled with a message saying where they were stuck.
pub async fn wait(
    ctx: &Context,
    restore: &str,
    restore_uid: &str,
    expected: usize,
    timeout: Duration,
    log: &OperationLog,
    outcome: &mut Outcome,
) -> anyhow::Result<(usize, usize)> {
    ctx.patch_status::<Restore>(restore, json!({"phase": "WaitingForVolumes", "podVolumeRestoresAttempted": expected})).await?;
    let selector = format!("{}={restore_uid}", labels::RESTORE_UID.name);
    let counts = ("podVolumeRestoresCompleted", "podVolumeRestoresFailed");
    let all: Vec<PodVolumeRestore> =
        wait_for_volumes::<_, Restore>(ctx, Some((restore, counts)), &selector, expected, timeout, log).await?;
    let mut completed = 0;
    for p in &all {
        let what = format!(
            "volume {:?} of pod {}/{}",
            p.spec.volume,
            p.spec.pod.namespace.as_deref().unwrap_or(""),
            p.spec.pod.name.as_deref().unwrap_or("")
        );
        let status = p.status.clone().unwrap_or_default();
        if status.phase == Some(PodVolumePhase::Completed) {
            completed += 1;
            log.info(format!("{what}: restored from snapshot {}", p.spec.snapshot_id));
        } else {
            outcome.error(p.spec.pod.namespace.as_deref(), format!("{what}: {}", status.message.as_deref().unwrap_or("not restored")));
        }
    }
    Ok((completed, all.len() - completed))
}

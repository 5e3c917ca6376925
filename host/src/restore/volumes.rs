//! Pod volume restores (DESIGN §6): a restored pod whose volumes were backed up gets the
//! restore helper init container; once the pod exists, one PodVolumeRestore per volume asks
//! the node agent on its node to put the data back; the restore waits for them, up to its
//! timeout, and never hangs forever.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::podvolume::PodVolumePhase;
use stowage_api::podvolume::PodVolumeRestoreSpec;
use stowage_api::{labels, PodVolumeBackup, PodVolumeRestore, Restore};
use stowage_pipeline::restore::helper::RestoreHelper;
use stowage_pipeline::{Item, Outcome};

use crate::podvolumes::{generate_name, wait_for_volumes};
use crate::oplog::OperationLog;
use crate::context::Context;

/// The volume backups of a backup, by (source namespace, pod name).
#[derive(Default)]
pub struct Restorer {
    by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>>,
    helper: Option<RestoreHelper>,
    restore_name: String,
    restore_uid: String,
    location: String,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    /// PodVolumeRestores created so far.
    pub created: usize,
}

impl Restorer {
    pub async fn new(ctx: &Context, restore: &Restore, location: &str, backups: Vec<PodVolumeBackup>, log: &OperationLog) -> Restorer {
        let mut by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>> = BTreeMap::new();
        for pvb in backups {
            let done = pvb.status.as_ref().and_then(|s| s.phase) == Some(PodVolumePhase::Completed)
                && pvb.status.as_ref().and_then(|s| s.snapshot_id.as_ref()).is_some();
            if !done {
                continue;
            }
            let key = (pvb.spec.pod.namespace.clone().unwrap_or_default(), pvb.spec.pod.name.clone().unwrap_or_default());
            by_pod.entry(key).or_default().push(pvb);
        }
        let helper = if by_pod.is_empty() { None } else { Some(helper_config(ctx, log).await) };
        Restorer {
            by_pod,
            helper,
            restore_name: restore.name_any(),
            restore_uid: restore.uid().unwrap_or_default(),
            location: location.to_string(),
            owner: restore.controller_owner_ref(&()),
            created: 0,
        }
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

    /// After a pod was created: one PodVolumeRestore per volume backed up.
    pub async fn created(&mut self, ctx: &Context, source_namespace: &str, item: &Item, pod: &DynamicObject, outcome: &mut Outcome) {
        if !item.is("", "pods") {
            return;
        }
        let Some(pvbs) = self.volumes_of(source_namespace, &item.name).cloned() else { return };
        let ns = item.namespace.clone().unwrap_or_default();
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
                        ("stowage.io/pod-uid".to_string(), pod.uid().unwrap_or_default()),
                    ])),
                    owner_references: self.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: PodVolumeRestoreSpec {
                    pod: ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: Some(ns.clone()),
                        name: Some(item.name.clone()),
                        uid: pod.uid(),
                        ..Default::default()
                    },
                    volume: pvb.spec.volume.clone(),
                    backup_storage_location: self.location.clone(),
                    repo_identifier: pvb.spec.repo_identifier.clone(),
                    snapshot_id: snapshot,
                    source_namespace: Some(source_namespace.to_string()),
                },
                status: None,
            };
            match api.create(&PostParams::default(), &pvr).await {
                Ok(_) => self.created += 1,
                Err(e) => outcome.error(Some(&ns), format!("pod {ns}/{}: creating the PodVolumeRestore of volume {:?}: {e}", item.name, pvb.spec.volume)),
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
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for key in labels::POD_VOLUME_RESTORE.spellings() {
        let lp = ListParams::default().labels(&format!("{key}=RestoreItemAction"));
        match api.list(&lp).await {
            Ok(list) => {
                if let Some(cm) = list.items.into_iter().next() {
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

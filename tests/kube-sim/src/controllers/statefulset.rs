//! StatefulSets: pods `<sts>-<ordinal>` created in order (each after the previous is Ready,
//! unless podManagementPolicy is Parallel), each with its claims `<template>-<sts>-<ordinal>`
//! made from volumeClaimTemplates and kept when the set scales down.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::pods::{controller_ref, create_if_absent, from_template, is_ready, is_terminal, owned_pods, selector_string, template_hash};
use super::status::patch_if_changed;
use super::{resync, Ctx, Error};

const REVISION_LABEL: &str = "controller-revision-hash";

pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let sets: Api<StatefulSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default()).owns(pods, watcher::Config::default());
    super::run(controller, ctx, reconcile)
}

pub fn pod_name(set: &str, ordinal: usize) -> String {
    format!("{set}-{ordinal}")
}

pub fn claim_name(template: &str, set: &str, ordinal: usize) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal of a pod of `set` (`web-3` -> 3).
pub fn ordinal(set: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let revision = format!("{name}-{}", template_hash(&spec.template, sts.status.as_ref().and_then(|s| s.collision_count)));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let (owned, _) = owned_pods(&pods, &selector_string(&spec.selector), &sts.uid().unwrap_or_default()).await?;
    let mut by_ordinal: BTreeMap<usize, Pod> = owned.into_iter().filter_map(|p| Some((ordinal(&name, &p.name_any())?, p))).collect();

    // Finished or outdated pods are deleted and come back from the current template.
    let terminating = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    let all_ready = by_ordinal.values().all(|p| is_ready(p) && !terminating(p));
    let outdated = by_ordinal
        .iter()
        .rev()
        .find(|(_, p)| p.labels().get(REVISION_LABEL) != Some(&revision) && !terminating(p))
        .map(|(o, _)| *o);
    for (o, pod) in &by_ordinal {
        let replace = is_terminal(pod) || (Some(*o) == outdated && all_ready && by_ordinal.len() == replicas);
        if replace && !terminating(pod) {
            delete(&pods, &pod.name_any()).await?;
        }
    }
    by_ordinal.retain(|_, p| !is_terminal(p));

    // Scale down from the highest ordinal.
    let extra: Vec<usize> = by_ordinal.keys().rev().copied().filter(|o| *o >= replicas).collect();
    for o in extra.iter().take(if parallel { usize::MAX } else { 1 }) {
        if !terminating(&by_ordinal[o]) {
            delete(&pods, &pod_name(&name, *o)).await?;
        }
    }

    // Scale up from the lowest missing ordinal.
    let owner = controller_ref(sts.as_ref())?;
    for o in 0..replicas {
        if let Some(p) = by_ordinal.get(&o) {
            if !parallel && (!is_ready(p) || terminating(p)) {
                break;
            }
            continue;
        }
        ensure_claims(&ctx, &sts, o).await?;
        create_if_absent(&pods, &new_pod(&sts, o, &revision, owner.clone())).await?;
        tracing::debug!(statefulset = %name, ordinal = o, "created pod");
        if !parallel {
            break;
        }
    }

    let active: Vec<&Pod> = by_ordinal.values().filter(|p| !terminating(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let updated = active.iter().filter(|p| p.labels().get(REVISION_LABEL) == Some(&revision)).count();
    let status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": updated,
        "updatedReplicas": updated,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    patch_if_changed(&sets, &sts, status).await?;
    Ok(resync())
}

async fn delete(pods: &Api<Pod>, name: &str) -> Result<(), Error> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The claims of one ordinal; existing ones (kept from before a scale-down) are reused.
async fn ensure_claims(ctx: &Ctx, sts: &StatefulSet, ordinal: usize) -> Result<(), Error> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims_for(sts, ordinal)? {
        if api.get_opt(claim.metadata.name.as_deref().unwrap_or("")).await?.is_none() {
            create_if_absent(&api, &claim).await?;
        }
    }
    Ok(())
}

fn claims_for(sts: &StatefulSet, ordinal: usize) -> Result<Vec<PersistentVolumeClaim>, Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let name = sts.name_any();
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let owner = if delete_with_set { Some(vec![controller_ref(sts)?]) } else { None };
    Ok(spec
        .volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&tname, &name, ordinal)),
                    namespace: sts.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owner.clone(),
                    ..Default::default()
                },
                spec: t.spec,
                status: None,
            }
        })
        .collect())
}

fn new_pod(
    sts: &StatefulSet,
    ordinal: usize,
    revision: &str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.name_any();
    let name = pod_name(&set, ordinal);
    let labels = BTreeMap::from([
        ("statefulset.kubernetes.io/pod-name".to_string(), name.clone()),
        ("apps.kubernetes.io/pod-index".to_string(), ordinal.to_string()),
        (REVISION_LABEL.to_string(), revision.to_string()),
    ]);
    let mut pod = from_template(&spec.template, &sts.namespace().unwrap_or_default(), &name, owner, labels);
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(name.clone());
        ps.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
        let volumes = ps.volumes.get_or_insert_with(Vec::new);
        for t in spec.volume_claim_templates.iter().flatten() {
            let tname = t.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != tname);
            volumes.push(Volume {
                name: tname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&tname, &set, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ordinals() {
        assert_eq!(pod_name("db", 2), "db-2");
        assert_eq!(claim_name("data", "db", 2), "data-db-2");
        assert_eq!(ordinal("db", "db-12"), Some(12));
        assert_eq!(ordinal("db", "db-x"), None);
        assert_eq!(ordinal("db", "dbx-1"), None);
    }

    #[test]
    fn pods_mount_their_own_claims() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "c", "image": "pg",
                                           "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Gi"}}}}]}}))
        .unwrap();
        let pod = new_pod(&sts, 1, "db-abc", controller_ref(&sts).unwrap());
        assert_eq!(pod.metadata.name.as_deref(), Some("db-1"));
        assert_eq!(pod.labels()["statefulset.kubernetes.io/pod-name"], "db-1");
        assert_eq!(pod.labels()["app"], "db");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-1"));
        let vol = &spec.volumes.unwrap()[0];
        assert_eq!(vol.persistent_volume_claim.as_ref().unwrap().claim_name, "data-db-1");
        let claims = claims_for(&sts, 1).unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-db-1"));
        assert_eq!(claims[0].labels()["app"], "db");
        assert!(claims[0].metadata.owner_references.is_none());
    }
}

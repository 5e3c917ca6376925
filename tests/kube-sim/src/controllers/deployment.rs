//! Deployments: one ReplicaSet per distinct pod template (`<deploy>-<pod-template-hash>`),
//! the current one scaled to the desired replicas and the older ones to zero.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::pods::{controller_ref, controller_uid, create_if_absent, selector_string, template_hash};
use super::status::{conditions, patch_if_changed, Cond};
use super::{resync, Ctx, Error};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    let sets: Api<ReplicaSet> = Api::all(ctx.client.clone());
    let controller = Controller::new(deployments, watcher::Config::default()).owns(sets, watcher::Config::default());
    super::run(controller, ctx, reconcile)
}

/// The name of the ReplicaSet for a template hash.
pub fn replica_set_name(deployment: &str, hash: &str) -> String {
    format!("{deployment}-{hash}")
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = selector_string(&spec.selector);
    let mut owned = Vec::new();
    for rs in api.list(&ListParams::default().labels(&selector)).await?.items {
        match controller_uid(&rs.metadata) {
            Some(owner) if owner == uid => owned.push(rs),
            Some(_) => {}
            // As the real controller manager does: an orphan matching the selector (a restored
            // ReplicaSet, say) is adopted rather than duplicated.
            None => {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(d.as_ref())?);
                let patch = json!({"metadata": {"ownerReferences": refs}});
                let adopted = api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
                tracing::info!(deployment = %d.name_any(), replicaset = %rs.name_any(), "adopted replica set");
                owned.push(adopted);
            }
        }
    }

    let hash = template_hash(&spec.template, d.status.as_ref().and_then(|s| s.collision_count));
    let name = replica_set_name(&d.name_any(), &hash);
    let revision = |rs: &ReplicaSet| rs.annotations().get(REVISION).and_then(|r| r.parse::<i64>().ok()).unwrap_or(0);
    let current = owned.iter().find(|rs| rs.name_any() == name).cloned();
    let new_rs = match current {
        Some(rs) => {
            if rs.spec.as_ref().and_then(|s| s.replicas) != Some(desired) {
                scale(&api, &rs.name_any(), desired).await?;
            }
            rs
        }
        None => {
            let next_revision = owned.iter().map(revision).max().unwrap_or(0) + 1;
            let rs = new_replica_set(&d, &name, &hash, desired, next_revision)?;
            create_if_absent(&api, &rs).await?;
            tracing::info!(deployment = %d.name_any(), replicaset = %name, "created replica set");
            rs
        }
    };
    // Recreate rather than roll: the old sets go to zero at once.
    for old in owned.iter().filter(|rs| rs.name_any() != name) {
        if old.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) != 0 {
            scale(&api, &old.name_any(), 0).await?;
        }
    }

    let sum = |f: fn(&ReplicaSet) -> i32| owned.iter().map(f).sum::<i32>();
    let replicas = sum(|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let available = sum(|rs| rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0));
    let updated = new_rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let existing = serde_json::to_value(d.status.as_ref().and_then(|s| s.conditions.clone())).unwrap_or_default();
    let complete = updated == desired && replicas == desired && available == desired;
    let progress_msg = format!("ReplicaSet \"{name}\" {}", if complete { "has successfully progressed." } else { "is progressing." });
    let conds = conditions(
        &existing,
        &[
            Cond {
                kind: "Available",
                status: available >= desired,
                reason: if available >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                message: if available >= desired {
                    "Deployment has minimum availability."
                } else {
                    "Deployment does not have minimum availability."
                },
            },
            Cond {
                kind: "Progressing",
                status: true,
                reason: if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                message: &progress_msg,
            },
        ],
        true,
    );
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": conds,
    });
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    patch_if_changed(&deployments, &d, status).await?;
    Ok(resync())
}

async fn scale(api: &Api<ReplicaSet>, name: &str, replicas: i32) -> Result<(), Error> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

fn new_replica_set(d: &Deployment, name: &str, hash: &str, replicas: i32, revision: i64) -> Result<ReplicaSet, Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.unwrap_or_default();
    tmeta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    let labels = tmeta.labels.clone();
    template.metadata = Some(tmeta);
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    let annotations = BTreeMap::from([
        (REVISION.to_string(), revision.to_string()),
        ("deployment.kubernetes.io/desired-replicas".to_string(), replicas.to_string()),
        ("deployment.kubernetes.io/max-replicas".to_string(), (replicas + 1).to_string()),
    ]);
    Ok(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: d.namespace(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(d)?]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_set_carries_the_hash_in_name_labels_and_selector() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
        .unwrap();
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        let rs = new_replica_set(&d, &replica_set_name("web", &hash), &hash, 2, 1).unwrap();
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let spec = rs.spec.unwrap();
        assert_eq!(spec.selector.match_labels.unwrap()[HASH_LABEL], hash);
        assert_eq!(spec.template.unwrap().metadata.unwrap().labels.unwrap()[HASH_LABEL], hash);
        let owner = &rs.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Deployment", "u1", Some(true)));
    }
}

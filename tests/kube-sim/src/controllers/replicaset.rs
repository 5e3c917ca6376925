//! ReplicaSets: keep `spec.replicas` active pods named `<rs>-<5 chars>`, adopting orphans that
//! match the selector, and report how many are ready.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::pods::{
    controller_ref, create_if_absent, deletion_order, from_template, is_active, is_ready, owned_pods, random_suffix,
    selector_string,
};
use super::status::patch_if_changed;
use super::{resync, Ctx, Error};

pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let sets: Api<ReplicaSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default()).owns(pods, watcher::Config::default());
    super::run(controller, ctx, reconcile)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let spec = rs.spec.clone().unwrap_or_default();
    let Some(template) = spec.template.clone() else {
        return Err(Error::Invalid(format!("replicaset {ns}/{name} has no pod template")));
    };
    let selector = selector_string(&spec.selector);
    if selector.is_empty() {
        return Err(Error::Invalid(format!("replicaset {ns}/{name} has an empty selector")));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let (mut owned, orphans) = owned_pods(&pods, &selector, &rs.uid().unwrap_or_default()).await?;
    let owner = controller_ref(rs.as_ref())?;
    for orphan in orphans {
        let mut refs = orphan.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs}});
        pods.patch(&orphan.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        tracing::info!(replicaset = %name, pod = %orphan.name_any(), "adopted pod");
        owned.push(orphan);
    }
    let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
    let desired = spec.replicas.unwrap_or(1).max(0) as usize;
    if active.len() < desired {
        for _ in active.len()..desired {
            let pod_name = format!("{name}-{}", random_suffix());
            let pod = from_template(&template, &ns, &pod_name, owner.clone(), BTreeMap::new());
            create_if_absent(&pods, &pod).await?;
            tracing::debug!(replicaset = %name, pod = %pod_name, "created pod");
        }
    } else if active.len() > desired {
        deletion_order(&mut active);
        let excess = active.len() - desired;
        for pod in active.drain(..excess) {
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => tracing::debug!(replicaset = %name, pod = %pod.name_any(), "deleted pod"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let ready = active.iter().filter(|p| is_ready(p)).count();
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .count();
    let status = json!({
        "observedGeneration": rs.metadata.generation,
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    patch_if_changed(&sets, &rs, status).await?;
    Ok(resync())
}

//! DaemonSets: one pod per node whose labels match the template's nodeSelector, bound to its
//! node directly; pods of an older template are replaced.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::pods::{controller_ref, create_if_absent, from_template, is_ready, is_terminal, owned_pods, random_suffix, selector_string, template_hash};
use super::status::patch_if_changed;
use super::{resync, Ctx, Error};

const REVISION_LABEL: &str = "controller-revision-hash";

pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let sets: Api<DaemonSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default()).owns(pods, watcher::Config::default());
    super::run(controller, ctx, reconcile)
}

/// Nodes the set's pods belong on: every Node (or the configured names if none are listed)
/// whose labels satisfy the template's nodeSelector.
async fn eligible_nodes(ctx: &Ctx, ds: &DaemonSet) -> Result<Vec<String>, Error> {
    let selector = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|s| s.node_selector.clone()).unwrap_or_default();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes.list(&ListParams::default()).await?.items;
    if list.is_empty() {
        return Ok(if selector.is_empty() { ctx.config.nodes.clone() } else { Vec::new() });
    }
    Ok(list
        .into_iter()
        .filter(|n| selector.iter().all(|(k, v)| n.labels().get(k) == Some(v)))
        .map(|n| n.name_any())
        .collect())
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let spec = ds.spec.clone().unwrap_or_default();
    let revision = template_hash(&spec.template, ds.status.as_ref().and_then(|s| s.collision_count));
    let nodes = eligible_nodes(&ctx, &ds).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let (owned, _) = owned_pods(&pods, &selector_string(&spec.selector), &ds.uid().unwrap_or_default()).await?;

    let mut by_node: HashMap<String, Vec<Pod>> = HashMap::new();
    for p in owned.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    // Off-node, finished, outdated or surplus pods go; missing ones are created.
    let mut doomed: Vec<String> = Vec::new();
    let mut kept: Vec<&Pod> = Vec::new();
    for (node, list) in &by_node {
        let mut live = 0;
        for p in list {
            let outdated = p.labels().get(REVISION_LABEL) != Some(&revision);
            if !nodes.contains(node) || is_terminal(p) || outdated || live > 0 {
                doomed.push(p.name_any());
            } else {
                live += 1;
                kept.push(p);
            }
        }
    }
    for pod in &doomed {
        let _ = pods.delete(pod, &DeleteParams::default()).await;
    }
    let owner = controller_ref(ds.as_ref())?;
    let generation = ds.metadata.generation.unwrap_or(1).to_string();
    for node in &nodes {
        if kept.iter().any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())) {
            continue;
        }
        let labels = BTreeMap::from([
            (REVISION_LABEL.to_string(), revision.clone()),
            ("pod-template-generation".to_string(), generation.clone()),
        ]);
        let mut pod = from_template(&spec.template, &ns, &format!("{name}-{}", random_suffix()), owner.clone(), labels);
        if let Some(ps) = pod.spec.as_mut() {
            ps.node_name = Some(node.clone());
        }
        create_if_absent(&pods, &pod).await?;
        tracing::debug!(daemonset = %name, %node, "created pod");
    }

    let ready = kept.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": nodes.len(),
        "currentNumberScheduled": kept.len(),
        "updatedNumberScheduled": kept.len(),
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": nodes.len().saturating_sub(ready),
    });
    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    patch_if_changed(&sets, &ds, status).await?;
    Ok(resync())
}

//! The scheduler: binds each pending pod without a node to one of the simulator's nodes,
//! round-robin, honouring a `kubernetes.io/hostname` node selector.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

use super::Ctx;

pub async fn run(ctx: Arc<Ctx>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut events = watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    let mut resync = tokio::time::interval(Duration::from_secs(5));
    let mut next = 0usize;
    loop {
        let pods = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(pod)) => vec![pod],
                Some(Err(e)) => {
                    tracing::warn!("scheduler watch: {e}");
                    continue;
                }
                None => return,
            },
            _ = resync.tick() => match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    tracing::warn!("scheduler resync: {e}");
                    continue;
                }
            },
        };
        for pod in pods.iter().filter(|p| needs_node(p)) {
            let Some(node) = pick(&ctx.config.nodes, pod, &mut next) else {
                tracing::warn!(pod = ?pod.metadata.name, "no node fits");
                continue;
            };
            bind(&ctx, pod, &node).await;
        }
    }
}

fn needs_node(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The node a hostname selector asks for, or the next one in turn.
fn pick(nodes: &[String], pod: &Pod, next: &mut usize) -> Option<String> {
    let wanted = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()).and_then(|s| s.get("kubernetes.io/hostname"));
    if let Some(w) = wanted {
        return nodes.iter().find(|n| *n == w).cloned();
    }
    if nodes.is_empty() {
        return None;
    }
    let node = nodes[*next % nodes.len()].clone();
    *next += 1;
    Some(node)
}

async fn bind(ctx: &Ctx, pod: &Pod, node: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"spec": {"nodeName": node}});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::debug!(pod = %name, %node, "scheduled"),
        Err(e) => tracing::debug!(pod = %name, "binding to {node}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(selector: Option<&str>) -> Pod {
        let sel = selector.map(|n| json!({"kubernetes.io/hostname": n}));
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeSelector": sel}})).unwrap()
    }

    #[test]
    fn round_robin_unless_a_hostname_is_asked_for() {
        let nodes = vec!["a".to_string(), "b".to_string()];
        let mut next = 0;
        assert_eq!(pick(&nodes, &pod(None), &mut next).unwrap(), "a");
        assert_eq!(pick(&nodes, &pod(None), &mut next).unwrap(), "b");
        assert_eq!(pick(&nodes, &pod(None), &mut next).unwrap(), "a");
        assert_eq!(pick(&nodes, &pod(Some("b")), &mut next).unwrap(), "b");
        assert!(pick(&nodes, &pod(Some("zz")), &mut next).is_none());
        assert!(needs_node(&pod(None)));
    }
}

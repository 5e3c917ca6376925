//! The simulated kubelet: one per node, an ordinary API client that watches the pods bound to
//! its node, runs a worker per pod (see `worker`), reports the node Ready, and cleans a pod's
//! directory up when the pod is deleted.
pub mod layout;
pub mod process;

mod env;
mod probe;
mod status;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::SimConfig;
use worker::NodeContext;

/// How often the pod list is compared with the running workers, in case a watch event was lost.
const RESYNC: Duration = Duration::from_secs(10);

/// Starts the kubelet of `node`.
pub fn spawn(client: Client, config: Arc<SimConfig>, node: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let index = config.nodes.iter().position(|n| *n == node).unwrap_or(0);
        let host_ip = register_node(&client, &node, index).await;
        let ctx = Arc::new(NodeContext { client, config, node, host_ip });
        Kubelet { ctx, workers: HashMap::new() }.run().await
    })
}

struct PodWorker {
    name: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Kubelet {
    ctx: Arc<NodeContext>,
    workers: HashMap<String, PodWorker>,
}

impl Kubelet {
    async fn run(mut self) {
        let node = self.ctx.node.clone();
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let selector = format!("spec.nodeName={node}");
        let mut events = watcher(api.clone(), watcher::Config::default().fields(&selector)).default_backoff().boxed();
        let mut resync = tokio::time::interval(RESYNC);
        // Uids seen since the last (re)list started; the others were deleted meanwhile.
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(watcher::Event::Apply(pod))) => self.observe(pod),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                            seen.insert(uid);
                        }
                        self.observe(pod)
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.forget(uid);
                        }
                    }
                    Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(seen) = listing.take() {
                            self.keep_only(&seen);
                        }
                    }
                    Some(Err(e)) => tracing::warn!(%node, "kubelet watch: {e}"),
                    None => return,
                },
                _ = resync.tick() => {
                    match api.list(&ListParams::default().fields(&selector)).await {
                        Ok(list) => {
                            let seen = list.items.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                            self.keep_only(&seen);
                            for pod in list.items {
                                self.observe(pod);
                            }
                        }
                        Err(e) => tracing::warn!(%node, "kubelet resync: {e}"),
                    }
                }
            }
        }
    }

    /// Starts a worker for a new pod; finishes the deletion of a pod being deleted.
    fn observe(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.ctx.node.as_str());
        if !on_node {
            // The field selector should have kept it out; be safe if a server ignores it.
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.forget(&uid);
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
            let name = pod.metadata.name.clone().unwrap_or_default();
            // Graceful deletion waits for the kubelet: confirm that the containers are gone.
            tokio::spawn(async move {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                if let Err(e) = api.delete(&name, &dp).await {
                    tracing::debug!(pod = %name, "confirming pod deletion: {e}");
                }
            });
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.workers.contains_key(&uid) || matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let name = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""));
        tracing::info!(node = %self.ctx.node, pod = %name, %uid, "starting pod");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(worker::run(self.ctx.clone(), pod, stop_rx));
        self.workers.insert(uid, PodWorker { name, stop, task });
    }

    /// Stops the pod's processes and removes its directory (never the PV storage behind links).
    fn forget(&mut self, uid: &str) {
        let worker = self.workers.remove(uid);
        let dir = layout::pod_dir(&self.ctx.config.kubelet_root, uid);
        tokio::spawn(async move {
            if let Some(w) = worker {
                tracing::info!(pod = %w.name, "stopping pod");
                let _ = w.stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), w.task).await;
            }
            if dir.exists() {
                if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
            }
        });
    }

    fn keep_only(&mut self, uids: &HashSet<String>) {
        let gone: Vec<String> = self.workers.keys().filter(|u| !uids.contains(*u)).cloned().collect();
        for uid in gone {
            self.forget(&uid);
        }
    }
}

/// Reports the node Ready (unless the server already did) and returns its internal IP.
async fn register_node(client: &Client, node: &str, index: usize) -> String {
    let fallback = format!("172.18.0.{}", index + 2);
    let nodes: Api<Node> = Api::all(client.clone());
    let existing = match nodes.get_opt(node).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::warn!(%node, "node object does not exist");
            return fallback;
        }
        Err(e) => {
            tracing::warn!(%node, "reading node: {e}");
            return fallback;
        }
    };
    let status = existing.status.unwrap_or_default();
    let ip = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone());
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready");
    if !ready {
        let now = status::now();
        let ip = ip.clone().unwrap_or_else(|| fallback.clone());
        let patch = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": node}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-kube-sim", "kubeProxyVersion": "", "architecture": std::env::consts::ARCH,
                         "operatingSystem": "linux", "osImage": "kube-sim", "kernelVersion": "", "containerRuntimeVersion": "kube-sim://1",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }});
        if let Err(e) = nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(%node, "reporting node status: {e}");
        }
    }
    ip.unwrap_or(fallback)
}

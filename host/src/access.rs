//! Access pods (DESIGN §6): short-lived pods Stowage creates to reach claims no running pod
//! mounts — the volumes of a workload scaled to zero, unmounted claims a backup asks for, and
//! claims a restore fills before any application pod mounts them. The restore helper image in
//! `--hold` mode does nothing but mount the claims; the node agent copies them like any other
//! pod volume. An access pod is deleted once its volumes are done, whatever happened.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::context::Context;

/// Label on access pods: the uid of the backup or restore that made them.
pub const ACCESS_LABEL: &str = "stowage.io/access-pod";
/// Where the hold container mounts each claim: `/volumes/<volume name>`.
const MOUNT_ROOT: &str = "/volumes";
/// How long an access pod may take to run.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One claim an access pod mounts, under the volume name the backup records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessVolume {
    pub volume: String,
    pub claim: String,
}

/// A running access pod.
#[derive(Clone, Debug)]
pub struct AccessPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// The pod as the API returned it once it ran.
    pub object: Value,
}

/// What an access pod is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Backups mount the claims read-only.
    Backup,
    /// A restore writes into them, held by the restore helper until the data is back.
    Restore,
}

/// The node a claim's volume is bound to, from its PersistentVolume's node affinity (local and
/// topology-constrained volumes); None when it can be attached anywhere.
pub async fn node_of_claim(client: &Client, namespace: &str, claim: &str) -> Option<String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace).get_opt(claim).await.ok()??;
    let pv_name = pvc.spec?.volume_name?;
    let pv = Api::<PersistentVolume>::all(client.clone()).get_opt(&pv_name).await.ok()??;
    let terms = pv.spec?.node_affinity?.required?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_expressions.iter().flatten()).find_map(|e| {
        (e.key == "kubernetes.io/hostname" && e.operator == "In").then(|| e.values.as_ref()?.first().cloned()).flatten()
    })
}

/// Creates an access pod in `namespace` mounting `volumes` and waits until it runs (a restore's
/// waits in its init container instead: `init` is the restore helper container to add). `node`
/// pins it where the volumes are attached; otherwise the claims' node affinity does, if any.
pub async fn start(
    ctx: &Context,
    namespace: &str,
    volumes: &[AccessVolume],
    purpose: Purpose,
    operation_uid: &str,
    node: Option<&str>,
    init: Option<Value>,
) -> Result<AccessPod, String> {
    let mut node = node.filter(|n| !n.is_empty()).map(str::to_string);
    if node.is_none() {
        for v in volumes {
            if let Some(n) = node_of_claim(&ctx.client, namespace, &v.claim).await {
                node = Some(n);
                break;
            }
        }
    }
    let read_only = purpose == Purpose::Backup;
    let mounts: Vec<Value> =
        volumes.iter().map(|v| json!({"name": v.volume, "mountPath": format!("{MOUNT_ROOT}/{}", v.volume), "readOnly": read_only})).collect();
    let claims: Vec<Value> =
        volumes.iter().map(|v| json!({"name": v.volume, "persistentVolumeClaim": {"claimName": v.claim, "readOnly": read_only}})).collect();
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "hold", "image": ctx.restore_helper_image, "args": ["--hold"], "volumeMounts": mounts}],
        "volumes": claims,
    });
    if let Some(n) = &node {
        spec["nodeName"] = json!(n);
    }
    if let Some(init) = init {
        spec["initContainers"] = json!([init]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "stowage-access-", "namespace": namespace, "labels": {ACCESS_LABEL: operation_uid},
            "annotations": {"stowage.io/purpose": format!("{purpose:?}").to_lowercase()}},
        "spec": spec,
    }))
    .map_err(|e| format!("building the access pod: {e}"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let created = api.create(&PostParams::default(), &pod).await.map_err(|e| format!("creating an access pod in {namespace}: {e}"))?;
    let name = created.name_any();
    if purpose == Purpose::Restore {
        return Ok(access_pod(namespace, &created));
    }
    let started = Instant::now();
    loop {
        match api.get_opt(&name).await {
            Ok(Some(p)) => {
                let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                let placed = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
                if phase == "Running" && placed {
                    return Ok(access_pod(namespace, &p));
                }
                if phase == "Failed" || phase == "Succeeded" {
                    stop(&ctx.client, namespace, &name).await;
                    return Err(format!("access pod {namespace}/{name} ended ({phase}) before its volumes could be copied"));
                }
            }
            Ok(None) => return Err(format!("access pod {namespace}/{name} was deleted before it ran")),
            Err(e) => tracing::debug!("reading access pod {namespace}/{name}: {e}"),
        }
        if started.elapsed() > START_TIMEOUT {
            stop(&ctx.client, namespace, &name).await;
            return Err(format!("access pod {namespace}/{name} did not run within {}s (are the claims bound?)", START_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn access_pod(namespace: &str, pod: &Pod) -> AccessPod {
    AccessPod {
        namespace: namespace.to_string(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        object: serde_json::to_value(pod).unwrap_or_default(),
    }
}

/// Deletes an access pod; a failure is logged (the label lets an admin find strays).
pub async fn stop(client: &Client, namespace: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    if let Err(e) = api.delete(name, &dp).await {
        if !matches!(&e, kube::Error::Api(r) if r.code == 404) {
            tracing::warn!("deleting access pod {namespace}/{name}: {e}; it carries the label {ACCESS_LABEL}");
        }
    }
}

/// At server start: deletes the access pods a stopped server left behind.
pub async fn sweep(ctx: &Context) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    for pod in api.list(&kube::api::ListParams::default().labels(ACCESS_LABEL)).await?.items {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        tracing::info!("deleting access pod {ns}/{name}, left by a stopped server");
        stop(&ctx.client, &ns, &name).await;
    }
    Ok(())
}

/// The claims of a namespace that no pod mounts, with the volume names their backups use.
pub fn unmounted_claims(claims: &[Value], pods: &[Value]) -> Vec<String> {
    let mounted: std::collections::BTreeSet<String> = pods
        .iter()
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .flat_map(|p| p.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut names: Vec<String> = claims
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|n| !mounted.contains(*n))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// The volume name under which an unmounted claim's backup is recorded.
pub fn claim_volume_name(claim: &str) -> String {
    let name: String = format!("claim-{}", claim.replace('.', "-")).chars().take(63).collect();
    name.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_that_no_live_pod_mounts() {
        let claim = |n: &str| json!({"metadata": {"name": n}});
        let pod = |phase: &str, claims: &[&str]| {
            let volumes: Vec<Value> = claims.iter().map(|c| json!({"name": "v", "persistentVolumeClaim": {"claimName": c}})).collect();
            json!({"spec": {"volumes": volumes}, "status": {"phase": phase}})
        };
        let claims = [claim("a"), claim("b"), claim("c"), claim("d")];
        let pods = [pod("Running", &["a"]), pod("Pending", &["b"]), pod("Succeeded", &["c"])];
        assert_eq!(unmounted_claims(&claims, &pods), vec!["c", "d"]);
    }
}

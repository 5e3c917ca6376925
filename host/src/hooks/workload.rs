//! The workload a pod belongs to, for hook extensions called per workload (`target:
//! workload`): the pod's controller, followed up from a ReplicaSet to its Deployment.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::Client;
use serde_json::Value;
use stowage_runtime::ObjectRef;

/// A workload: what a hook is called on, and its uid (the key of its journal entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadRef {
    pub object: ObjectRef,
    pub uid: String,
}

fn controller_of(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners.iter().find(|o| o.controller == Some(true))
}

fn reference(owner: &OwnerReference, namespace: &str) -> WorkloadRef {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), owner.api_version.clone()),
    };
    WorkloadRef {
        object: ObjectRef { group, version, kind: owner.kind.clone(), namespace: namespace.to_string(), name: owner.name.clone() },
        uid: owner.uid.clone(),
    }
}

/// The workload that controls `pod`: a StatefulSet, DaemonSet, Job, or the Deployment of its
/// ReplicaSet (the ReplicaSet itself when no Deployment owns it). None for a pod no controller
/// owns; an error when the ReplicaSet cannot be read.
pub async fn workload_of(client: &Client, pod: &Value) -> Result<Option<WorkloadRef>, kube::Error> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let owners: Vec<OwnerReference> =
        pod.pointer("/metadata/ownerReferences").and_then(|o| serde_json::from_value(o.clone()).ok()).unwrap_or_default();
    let Some(owner) = controller_of(&owners) else { return Ok(None) };
    if owner.kind != "ReplicaSet" || !owner.api_version.starts_with("apps/") {
        return Ok(Some(reference(owner, namespace)));
    }
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let Some(set) = sets.get_opt(&owner.name).await? else { return Ok(Some(reference(owner, namespace))) };
    let above = set.metadata.owner_references.unwrap_or_default();
    Ok(Some(match controller_of(&above) {
        Some(deployment) if deployment.kind == "Deployment" => reference(deployment, namespace),
        _ => reference(owner, namespace),
    }))
}

//! Pods and jobs carry values the cluster derived from the original objects' placement and
//! identity; the target cluster derives them again.

use serde_json::Value;

use super::remove_at;

/// Job labels holding the old job's UID (the second is the spelling since Kubernetes 1.27).
const CONTROLLER_UID_LABELS: &[&str] = &["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Lets the scheduler place the pod anew: `nodeName` names a node of the old cluster, and
/// `priority` is recomputed from `priorityClassName` (a stale value is rejected). Legacy
/// service-account token volumes (`<account>-token-*`) name secrets the target cluster
/// does not have; the token controller mounts a fresh one.
pub(super) fn drop_node_binding(pod: &mut Value) {
    remove_at(pod, &["spec", "nodeName"]);
    remove_at(pod, &["spec", "priority"]);
    let Some(account) = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str) else { return };
    let token_prefix = format!("{account}-token-");
    let is_token =
        |entry: &Value| entry.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(&token_prefix));
    if let Some(volumes) = pod.pointer_mut("/spec/volumes").and_then(Value::as_array_mut) {
        volumes.retain(|v| !is_token(v));
    }
    for list in ["containers", "initContainers"] {
        let containers = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            if let Some(mounts) = container.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                mounts.retain(|m| !is_token(m));
            }
        }
    }
}

/// A job's generated selector matches its old UID, which the new job will not have: drop
/// it with the UID labels and the API server generates both again. A selector the user chose
/// (`manualSelector: true`) stays, less any UID label.
pub(super) fn drop_generated_job_selector(job: &mut Value) {
    let manual = job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    if manual {
        for label in CONTROLLER_UID_LABELS {
            remove_at(job, &["spec", "selector", "matchLabels", label]);
        }
    } else {
        remove_at(job, &["spec", "selector"]);
    }
    for label in CONTROLLER_UID_LABELS {
        remove_at(job, &["spec", "template", "metadata", "labels", label]);
    }
}

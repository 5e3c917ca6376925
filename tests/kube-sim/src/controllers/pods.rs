//! What the workload controllers share about the pods (and claims) they own: names, ownership,
//! selectors, and classifying pods as active or ready.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource};

use super::Error;

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters, as in a ReplicaSet's pod names (`web-7d4b9c5f6-x2x8q`).
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().as_bytes()[..5].iter().map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char).collect()
}

/// Kubernetes' `rand.SafeEncodeString`: maps each byte into the alphabet above.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// FNV-1a (32 bit), the hash Kubernetes uses for template hashes.
pub fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x01000193))
}

/// The `pod-template-hash` / `controller-revision-hash` of a template: stable for equal
/// templates, different when anything in the template changes.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend(c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// The controller owner reference pointing at `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference, Error> {
    owner.controller_owner_ref(&()).ok_or_else(|| Error::Invalid("owner has no name or uid".into()))
}

/// The uid of the object's controller, if it has one.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

/// A label selector in the query-string syntax.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Pods matching `selector` in `ns` whose controller is `owner_uid`, and the orphans among the
/// matches (no controller at all), which a ReplicaSet-like controller adopts.
pub async fn owned_pods(api: &Api<Pod>, selector: &str, owner_uid: &str) -> Result<(Vec<Pod>, Vec<Pod>), Error> {
    let list = api.list(&ListParams::default().labels(selector)).await?;
    let (mut owned, mut orphans) = (Vec::new(), Vec::new());
    for pod in list.items {
        match controller_uid(&pod.metadata) {
            Some(uid) if uid == owner_uid => owned.push(pod),
            None if pod.metadata.deletion_timestamp.is_none() => orphans.push(pod),
            _ => {}
        }
    }
    Ok((owned, orphans))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Counts toward the replicas: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Which pods to remove first when scaling down: unscheduled, then pending, then unready, then
/// the youngest (what a ReplicaSet does, roughly).
pub fn deletion_order(pods: &mut [Pod]) {
    pods.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = phase(p) == "Running";
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        (scheduled, running, is_ready(p), std::cmp::Reverse(created))
    });
}

/// A pod stamped out from a template.
pub fn from_template(
    template: &PodTemplateSpec,
    ns: &str,
    name: &str,
    owner: OwnerReference,
    extra_labels: BTreeMap<String, String>,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.extend(extra_labels);
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `obj`; one that already exists (a name collision, a retried create) is not an error.
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_look_like_kubernetes_names() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_ne!(random_suffix(), random_suffix());
        // rand.SafeEncodeString("1234567890") in Kubernetes
        assert_eq!(safe_encode("1234567890"), "56789bcdf4");
    }

    #[test]
    fn template_hash_follows_the_template() {
        let t = |image: &str| -> PodTemplateSpec {
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}))
            .unwrap()
        };
        assert_eq!(template_hash(&t("nginx:1"), None), template_hash(&t("nginx:1"), None));
        assert_ne!(template_hash(&t("nginx:1"), None), template_hash(&t("nginx:2"), None));
        assert_ne!(template_hash(&t("nginx:1"), None), template_hash(&t("nginx:1"), Some(1)));
        assert!(template_hash(&t("nginx:1"), None).bytes().all(|b| ALPHANUMS.contains(&b)));
    }

    #[test]
    fn selectors_render_in_query_syntax() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web", "tier": "fe"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]},
                                 {"key": "x", "operator": "DoesNotExist"}]}))
        .unwrap();
        assert_eq!(selector_string(&sel), "app=web,tier=fe,env in (a,b),!x");
    }

    #[test]
    fn scale_down_removes_pending_and_young_pods_first() {
        let pod = |name: &str, node: Option<&str>, phase: &str, created: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}}))
            .unwrap()
        };
        let mut pods = vec![
            pod("old-running", Some("n"), "Running", "2024-01-01T00:00:00Z"),
            pod("new-running", Some("n"), "Running", "2024-01-02T00:00:00Z"),
            pod("unscheduled", None, "Pending", "2024-01-01T00:00:00Z"),
            pod("pending", Some("n"), "Pending", "2024-01-01T00:00:00Z"),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["unscheduled", "pending", "new-running", "old-running"]);
    }
}

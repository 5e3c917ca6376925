//! Fluent builders for test objects and a discovery fixture, so tests state only what matters
//! to them: `ItemBuilder::pod("shop", "web").label("app", "web").pvc_volume("data", "claim")`.
//! Compiled for this crate's tests and, with the `builders` feature, for other crates' tests.

use serde_json::{json, Value};

use crate::item::{ApiResourceInfo, Item};

/// Resource types of a typical cluster: built-ins, a CRD, Stowage's own kinds, and a Knative
/// Service to make `services` ambiguous.
pub fn discovery() -> Vec<ApiResourceInfo> {
    let r = ApiResourceInfo::new;
    vec![
        r("", "v1", "pods", "Pod", true).with_short_names(&["po"]),
        r("", "v1", "services", "Service", true).with_short_names(&["svc"]),
        r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true).with_short_names(&["pvc"]),
        r("", "v1", "persistentvolumes", "PersistentVolume", false).with_short_names(&["pv"]),
        r("", "v1", "namespaces", "Namespace", false).with_short_names(&["ns"]),
        r("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"]),
        r("", "v1", "secrets", "Secret", true),
        r("", "v1", "serviceaccounts", "ServiceAccount", true).with_short_names(&["sa"]),
        r("", "v1", "endpoints", "Endpoints", true).with_short_names(&["ep"]),
        r("", "v1", "limitranges", "LimitRange", true).with_short_names(&["limits"]),
        r("", "v1", "events", "Event", true).with_short_names(&["ev"]),
        r("", "v1", "nodes", "Node", false).with_short_names(&["no"]),
        r("events.k8s.io", "v1", "events", "Event", true).with_short_names(&["ev"]),
        r("apps", "v1", "deployments", "Deployment", true).with_short_names(&["deploy"]),
        r("apps", "v1", "replicasets", "ReplicaSet", true).with_short_names(&["rs"]),
        r("apps", "v1", "statefulsets", "StatefulSet", true).with_short_names(&["sts"]),
        r("batch", "v1", "jobs", "Job", true),
        r("storage.k8s.io", "v1", "storageclasses", "StorageClass", false).with_short_names(&["sc"]),
        r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false)
            .with_short_names(&["crd", "crds"]),
        r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false),
        r("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", true).with_short_names(&["vs"]),
        r("serving.knative.dev", "v1", "services", "Service", true).with_short_names(&["ksvc"]),
        r("example.com", "v1", "widgets", "Widget", true).with_short_names(&["wdg"]),
        r("stowage.io", "v1alpha1", "backups", "Backup", true),
        r("stowage.io", "v1alpha1", "schedules", "Schedule", true),
    ]
}

/// Builds one [`Item`]; every setter returns the builder.
#[derive(Clone, Debug)]
pub struct ItemBuilder {
    info: ApiResourceInfo,
    object: Value,
}

impl ItemBuilder {
    /// An object of any type; `namespace` must be given exactly for namespaced types.
    pub fn new(info: ApiResourceInfo, namespace: Option<&str>, name: &str) -> ItemBuilder {
        let mut metadata = json!({"name": name});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        let object = json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": metadata});
        ItemBuilder { info, object }
    }

    fn known(plural: &str, group: &str, namespace: Option<&str>, name: &str) -> ItemBuilder {
        let info = discovery().into_iter().find(|i| i.plural == plural && i.group == group);
        ItemBuilder::new(info.unwrap_or_else(|| panic!("{plural}.{group} is not in the fixture")), namespace, name)
    }

    pub fn pod(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("pods", "", Some(namespace), name)
            .set("/spec/containers", json!([{"name": "main", "image": "app:1"}]))
    }

    pub fn deployment(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("deployments", "apps", Some(namespace), name)
    }

    pub fn pvc(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("persistentvolumeclaims", "", Some(namespace), name)
    }

    pub fn pv(name: &str) -> ItemBuilder {
        Self::known("persistentvolumes", "", None, name)
    }

    pub fn service(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("services", "", Some(namespace), name)
    }

    pub fn job(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("jobs", "batch", Some(namespace), name)
    }

    pub fn namespace(name: &str) -> ItemBuilder {
        Self::known("namespaces", "", None, name)
    }

    pub fn config_map(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("configmaps", "", Some(namespace), name)
    }

    /// A `Widget` of the fixture's CRD `widgets.example.com`.
    pub fn widget(namespace: &str, name: &str) -> ItemBuilder {
        Self::known("widgets", "example.com", Some(namespace), name)
    }

    /// Sets the value at a JSON pointer, creating objects on the way (`-` appends to an array).
    pub fn set(mut self, pointer: &str, value: Value) -> ItemBuilder {
        set_at(&mut self.object, pointer, value);
        self
    }

    pub fn label(self, key: &str, value: &str) -> ItemBuilder {
        self.set(&format!("/metadata/labels/{}", escape(key)), json!(value))
    }

    pub fn annotate(self, key: &str, value: &str) -> ItemBuilder {
        self.set(&format!("/metadata/annotations/{}", escape(key)), json!(value))
    }

    /// Server-populated metadata, as a listed object has it.
    pub fn as_listed(self) -> ItemBuilder {
        self.set("/metadata/uid", json!("0b3c-uid"))
            .set("/metadata/resourceVersion", json!("4711"))
            .set("/metadata/creationTimestamp", json!("2024-05-01T03:00:00Z"))
            .set("/metadata/generation", json!(3))
            .set("/metadata/managedFields", json!([{"manager": "kubectl", "operation": "Update"}]))
            .set("/status", json!({"phase": "Running"}))
    }

    /// A pod volume backed by a claim.
    pub fn pvc_volume(self, volume: &str, claim: &str) -> ItemBuilder {
        self.set("/spec/volumes/-", json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}}))
    }

    pub fn service_account(self, name: &str) -> ItemBuilder {
        self.set("/spec/serviceAccountName", json!(name))
    }

    /// A claim bound to a volume.
    pub fn volume_name(self, pv: &str) -> ItemBuilder {
        self.set("/spec/volumeName", json!(pv)).set("/status/phase", json!("Bound"))
    }

    /// A volume's claim reference, as the PV controller sets it.
    pub fn claim_ref(self, namespace: &str, claim: &str) -> ItemBuilder {
        let claim_ref = json!({"kind": "PersistentVolumeClaim", "namespace": namespace, "name": claim,
            "uid": "claim-uid", "resourceVersion": "12"});
        self.set("/spec/claimRef", claim_ref)
    }

    /// A service port; `node_port` as the API server assigned or the user specified it.
    pub fn port(self, name: &str, port: u16, node_port: Option<u16>) -> ItemBuilder {
        let mut entry = json!({"name": name, "port": port, "protocol": "TCP"});
        if let Some(np) = node_port {
            entry["nodePort"] = json!(np);
        }
        self.set("/spec/ports/-", entry)
    }

    pub fn build(self) -> Item {
        Item::new(self.object, &self.info).expect("builders make well-formed items")
    }

    /// The object alone, as the cluster would return it.
    pub fn object(self) -> Value {
        self.build().object
    }
}

/// Escapes a map key for a JSON pointer (`/` in label keys).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn set_at(target: &mut Value, pointer: &str, value: Value) {
    let tokens: Vec<String> = pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let (last, parents) = tokens.split_last().expect("a pointer below the root");
    let mut here = target;
    for (i, token) in parents.iter().enumerate() {
        let next_is_array = tokens[i + 1] == "-" || tokens[i + 1].parse::<usize>().is_ok();
        here = child(here, token, if next_is_array { json!([]) } else { json!({}) });
    }
    match here {
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => items[last.parse::<usize>().expect("an array index")] = value,
        other => {
            if !other.is_object() {
                *other = json!({});
            }
            other[last.as_str()] = value;
        }
    }
}

fn child<'a>(here: &'a mut Value, token: &str, empty: Value) -> &'a mut Value {
    match here {
        Value::Array(items) => {
            let index = match token {
                "-" => {
                    items.push(empty);
                    items.len() - 1
                }
                _ => token.parse::<usize>().expect("an array index"),
            };
            &mut items[index]
        }
        other => {
            if !other.is_object() {
                *other = json!({});
            }
            other.as_object_mut().expect("an object").entry(token).or_insert(empty)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_write_what_they_say() {
        let pod = ItemBuilder::pod("shop", "web")
            .label("app.kubernetes.io/name", "web")
            .pvc_volume("data", "data-web")
            .pvc_volume("logs", "logs-web")
            .build();
        assert_eq!(pod.object["metadata"]["labels"]["app.kubernetes.io/name"], "web");
        assert_eq!(pod.object["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"], "logs-web");
        assert_eq!(pod.object["spec"]["containers"][0]["name"], "main");
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        let pv = ItemBuilder::pv("pv-1").build();
        assert_eq!((pv.namespace, pv.object["apiVersion"].as_str()), (None, Some("v1")));
    }
}

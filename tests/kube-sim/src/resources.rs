//! The resource types the simulator serves: the built-in ones and those added by CRDs.

use serde_json::{json, Value};

/// One served resource type (one group/version/plural), as discovery describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources served under `<plural>/<name>/<sub>`: status, scale, exec, log, binding, proxy.
    pub subresources: Vec<String>,
    /// `.spec.replicas`-style paths for the scale subresource (CRDs may set their own).
    pub scale: Option<ScalePaths>,
    /// Printer columns for `kubectl get` (server-side tables), beyond NAME.
    pub columns: Vec<Column>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    /// "string", "integer", "number", "boolean" or "date" (rendered as an age).
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
}

/// Identifies where a resource's objects are stored, whatever version is asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: String,
    pub plural: String,
}

pub const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceType {
    pub fn key(&self) -> ResourceKey {
        ResourceKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    /// Discovery entries for this type and its subresources.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        for sub in &self.subresources {
            let (kind, verbs, group, version): (&str, Vec<&str>, Option<&str>, Option<&str>) = match sub.as_str() {
                "status" => (&self.kind, vec!["get", "patch", "update"], None, None),
                "scale" => ("Scale", vec!["get", "patch", "update"], Some("autoscaling"), Some("v1")),
                "exec" => ("PodExecOptions", vec!["create", "get"], None, None),
                "log" => ("Pod", vec!["get"], None, None),
                "binding" => ("Binding", vec!["create"], None, None),
                "finalize" => ("Namespace", vec!["update"], None, None),
                "proxy" => ("ServiceProxyOptions", vec!["create", "delete", "get", "patch", "update"], None, None),
                _ => continue,
            };
            let mut e = json!({
                "name": format!("{}/{}", self.plural, sub),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let (Some(g), Some(v)) = (group, version) {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
        out
    }
}

fn col(name: &str, type_: &str, json_path: &str) -> Column {
    Column { name: name.into(), type_: type_.into(), json_path: json_path.into(), priority: 0 }
}

fn age() -> Column {
    col("Age", "date", ".metadata.creationTimestamp")
}

struct Builtin<'a> {
    gv: &'a str,
    plural: &'a str,
    kind: &'a str,
    namespaced: bool,
    short: &'a [&'a str],
    subs: &'a [&'a str],
}

const fn b<'a>(
    gv: &'a str,
    plural: &'a str,
    kind: &'a str,
    namespaced: bool,
    short: &'a [&'a str],
    subs: &'a [&'a str],
) -> Builtin<'a> {
    Builtin { gv, plural, kind, namespaced, short, subs }
}

const NS: bool = true;
const CLUSTER: bool = false;

const BUILTINS: &[Builtin<'static>] = &[
    b("v1", "namespaces", "Namespace", CLUSTER, &["ns"], &["status", "finalize"]),
    b("v1", "pods", "Pod", NS, &["po"], &["status", "exec", "log", "binding"]),
    b("v1", "services", "Service", NS, &["svc"], &["status", "proxy"]),
    b("v1", "endpoints", "Endpoints", NS, &["ep"], &[]),
    b("v1", "configmaps", "ConfigMap", NS, &["cm"], &[]),
    b("v1", "secrets", "Secret", NS, &[], &[]),
    b("v1", "serviceaccounts", "ServiceAccount", NS, &["sa"], &[]),
    b("v1", "persistentvolumes", "PersistentVolume", CLUSTER, &["pv"], &["status"]),
    b("v1", "persistentvolumeclaims", "PersistentVolumeClaim", NS, &["pvc"], &["status"]),
    b("v1", "events", "Event", NS, &["ev"], &[]),
    b("v1", "nodes", "Node", CLUSTER, &["no"], &["status"]),
    b("v1", "limitranges", "LimitRange", NS, &["limits"], &[]),
    b("v1", "resourcequotas", "ResourceQuota", NS, &["quota"], &["status"]),
    b("v1", "replicationcontrollers", "ReplicationController", NS, &["rc"], &["status", "scale"]),
    b("v1", "podtemplates", "PodTemplate", NS, &[], &[]),
    b("apps/v1", "deployments", "Deployment", NS, &["deploy"], &["status", "scale"]),
    b("apps/v1", "replicasets", "ReplicaSet", NS, &["rs"], &["status", "scale"]),
    b("apps/v1", "statefulsets", "StatefulSet", NS, &["sts"], &["status", "scale"]),
    b("apps/v1", "daemonsets", "DaemonSet", NS, &["ds"], &["status"]),
    b("apps/v1", "controllerrevisions", "ControllerRevision", NS, &[], &[]),
    b("batch/v1", "jobs", "Job", NS, &[], &["status"]),
    b("batch/v1", "cronjobs", "CronJob", NS, &["cj"], &["status"]),
    b("networking.k8s.io/v1", "ingresses", "Ingress", NS, &["ing"], &["status"]),
    b("networking.k8s.io/v1", "ingressclasses", "IngressClass", CLUSTER, &[], &[]),
    b("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", NS, &["netpol"], &[]),
    b("rbac.authorization.k8s.io/v1", "roles", "Role", NS, &[], &[]),
    b("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", NS, &[], &[]),
    b("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", CLUSTER, &[], &[]),
    b("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, &[], &[]),
    b("storage.k8s.io/v1", "storageclasses", "StorageClass", CLUSTER, &["sc"], &[]),
    b("storage.k8s.io/v1", "csidrivers", "CSIDriver", CLUSTER, &[], &[]),
    b("storage.k8s.io/v1", "volumeattachments", "VolumeAttachment", CLUSTER, &[], &["status"]),
    b("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, &["crd", "crds"], &["status"]),
    b("coordination.k8s.io/v1", "leases", "Lease", NS, &[], &[]),
    b("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", NS, &["pdb"], &["status"]),
    b("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", NS, &["hpa"], &["status"]),
];

fn builtin_columns(plural: &str) -> Vec<Column> {
    match plural {
        "namespaces" => vec![col("Status", "string", ".status.phase"), age()],
        "pods" => vec![
            col("Status", "string", ".status.phase"),
            col("Node", "string", ".spec.nodeName"),
            age(),
        ],
        "services" => vec![
            col("Type", "string", ".spec.type"),
            col("Cluster-IP", "string", ".spec.clusterIP"),
            age(),
        ],
        "persistentvolumes" => vec![
            col("Capacity", "string", ".spec.capacity.storage"),
            col("Reclaim Policy", "string", ".spec.persistentVolumeReclaimPolicy"),
            col("Status", "string", ".status.phase"),
            col("Claim", "string", ".spec.claimRef.name"),
            col("StorageClass", "string", ".spec.storageClassName"),
            age(),
        ],
        "persistentvolumeclaims" => vec![
            col("Status", "string", ".status.phase"),
            col("Volume", "string", ".spec.volumeName"),
            col("StorageClass", "string", ".spec.storageClassName"),
            age(),
        ],
        "deployments" | "statefulsets" | "replicasets" => vec![
            col("Desired", "integer", ".spec.replicas"),
            col("Ready", "integer", ".status.readyReplicas"),
            age(),
        ],
        "jobs" => vec![col("Succeeded", "integer", ".status.succeeded"), age()],
        "storageclasses" => vec![col("Provisioner", "string", ".provisioner"), age()],
        _ => vec![age()],
    }
}

/// The built-in resource types, with the subresources and short names a real cluster serves.
pub fn builtins() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|bt| {
            let (group, version) = match bt.gv.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), bt.gv.to_string()),
            };
            let scale = bt.subs.contains(&"scale").then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".spec.selector".into()),
            });
            let categories = match bt.plural {
                "pods" | "services" | "deployments" | "replicasets" | "statefulsets" | "daemonsets" | "jobs"
                | "cronjobs" | "replicationcontrollers" => vec!["all".to_string()],
                _ => vec![],
            };
            ResourceType {
                group,
                version,
                plural: bt.plural.into(),
                singular: bt.kind.to_lowercase(),
                kind: bt.kind.into(),
                namespaced: bt.namespaced,
                short_names: bt.short.iter().map(|s| s.to_string()).collect(),
                categories,
                subresources: bt.subs.iter().map(|s| s.to_string()).collect(),
                scale,
                columns: builtin_columns(bt.plural),
            }
        })
        .collect()
}

/// The resource types a CustomResourceDefinition serves, one per served version.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = spec["group"].as_str().filter(|g| !g.is_empty()).ok_or("spec.group is required")?;
    let names = &spec["names"];
    let plural = names["plural"].as_str().filter(|p| !p.is_empty()).ok_or("spec.names.plural is required")?;
    let kind = names["kind"].as_str().filter(|k| !k.is_empty()).ok_or("spec.names.kind is required")?;
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!("metadata.name must be spec.names.plural+\".\"+spec.group: {expected:?}"));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => return Err(format!("spec.scope must be Namespaced or Cluster, not {other:?}")),
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let versions = spec["versions"].as_array().filter(|v| !v.is_empty()).ok_or("spec.versions must not be empty")?;
    let mut out = Vec::new();
    for v in versions {
        let name = v["name"].as_str().ok_or("spec.versions[].name is required")?;
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let mut subresources = Vec::new();
        if v["subresources"].get("status").is_some() {
            subresources.push("status".to_string());
        }
        let scale = v["subresources"].get("scale").map(|s| ScalePaths {
            spec_replicas: s["specReplicasPath"].as_str().unwrap_or(".spec.replicas").into(),
            status_replicas: s["statusReplicasPath"].as_str().unwrap_or(".status.replicas").into(),
            label_selector: s["labelSelectorPath"].as_str().map(String::from),
        });
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        let mut columns: Vec<Column> = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some(Column {
                            name: c["name"].as_str()?.to_string(),
                            type_: c["type"].as_str().unwrap_or("string").to_string(),
                            json_path: c["jsonPath"].as_str()?.to_string(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if columns.is_empty() {
            columns.push(age());
        }
        out.push(ResourceType {
            group: group.to_string(),
            version: name.to_string(),
            plural: plural.to_string(),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.to_string(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            subresources,
            scale,
            columns,
        });
    }
    Ok(out)
}

/// Evaluates the simple JSONPath expressions printer columns use (`.a.b`, `.a[0].b`).
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let path = path.trim_start_matches('{').trim_end_matches('}');
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_expected_scope_and_subresources() {
        let all = builtins();
        let find = |p: &str| all.iter().find(|r| r.plural == p).unwrap();
        assert!(!find("namespaces").namespaced);
        assert!(find("pods").namespaced);
        assert!(find("pods").has_subresource("exec"));
        assert!(find("deployments").has_subresource("scale"));
        assert_eq!(find("deployments").api_version(), "apps/v1");
        assert_eq!(find("persistentvolumeclaims").short_names, vec!["pvc"]);
        assert_eq!(find("horizontalpodautoscalers").version, "v2");
    }

    #[test]
    fn crd_types_follow_spec() {
        let crd = json!({
            "metadata": {"name": "backups.stowage.io"},
            "spec": {"group": "stowage.io", "scope": "Namespaced",
                "names": {"plural": "backups", "kind": "Backup", "shortNames": ["bk"]},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]}]}
        });
        let types = from_crd(&crd).unwrap();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].kind, "Backup");
        assert!(types[0].has_subresource("status"));
        assert_eq!(types[0].columns[0].name, "Phase");
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("wrong");
        assert!(from_crd(&bad).unwrap_err().contains("backups.stowage.io"));
    }

    #[test]
    fn json_path_walks_maps_and_lists() {
        let v = json!({"status": {"conditions": [{"type": "Ready"}]}});
        assert_eq!(json_path(&v, ".status.conditions[0].type"), Some(&json!("Ready")));
        assert_eq!(json_path(&v, ".status.missing"), None);
    }
}

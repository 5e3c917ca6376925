//! Environment of a container run as a local process: its `env`/`envFrom`, resolved as a
//! kubelet does (downward API, ConfigMap and Secret keys), plus the simulator's own variables.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret};
use kube::{Api, Client};

/// The value of a downward-API `fieldRef` (`metadata.name`, `metadata.labels['app']`, ...).
pub fn field_ref(pod: &Pod, sel: &ObjectFieldSelector) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let path = sel.field_path.as_str();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map?.get(key).cloned()
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).or(Some("default".into())),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        _ if path.starts_with("metadata.labels['") => keyed("metadata.labels['", m.labels.as_ref()),
        _ if path.starts_with("metadata.annotations['") => keyed("metadata.annotations['", m.annotations.as_ref()),
        _ => None,
    }
}

/// Resolves a container's variables; a missing ConfigMap or Secret key leaves the variable out
/// (a real kubelet would refuse to start the container, which helps nobody in a test).
pub async fn resolve(client: &Client, pod: &Pod, container: &Container) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            if let Ok(Some(cm)) = cms.get_opt(&r.name).await {
                for (k, v) in cm.data.unwrap_or_default() {
                    out.push((format!("{prefix}{k}"), v));
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            if let Ok(Some(s)) = secrets.get_opt(&r.name).await {
                for (k, v) in s.data.unwrap_or_default() {
                    out.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned()));
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(expand(v, &out)),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_ref(pod, f)
                } else if let Some(k) = &from.config_map_key_ref {
                    cms.get_opt(&k.name).await.ok().flatten().and_then(|cm| cm.data?.get(&k.key).cloned())
                } else if let Some(k) = &from.secret_key_ref {
                    let secret = secrets.get_opt(&k.name).await.ok().flatten();
                    secret.and_then(|s| s.data?.get(&k.key).map(|b| String::from_utf8_lossy(&b.0).into_owned()))
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            out.retain(|(k, _)| k != &var.name);
            out.push((var.name.clone(), v));
        }
    }
    out
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them in `env` values.
fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match earlier.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector { field_path: path.into(), api_version: None }
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": []}
        }))
        .unwrap();
        assert_eq!(field_ref(&pod, &sel("metadata.name")).as_deref(), Some("p"));
        assert_eq!(field_ref(&pod, &sel("metadata.namespace")).as_deref(), Some("ns"));
        assert_eq!(field_ref(&pod, &sel("spec.nodeName")).as_deref(), Some("node-1"));
        assert_eq!(field_ref(&pod, &sel("metadata.labels['app']")).as_deref(), Some("web"));
        assert_eq!(field_ref(&pod, &sel("metadata.labels['nope']")), None);
    }

    #[test]
    fn expands_earlier_variables() {
        let earlier = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x-$(A)-$(B)-$(A", &earlier), "x-1-$(B)-$(A");
    }
}

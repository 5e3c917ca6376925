//! The restore helper init container (DESIGN §6): a restored pod whose volumes were backed up
//! file by file starts with `restore-wait`, which mounts each such volume under `/restores` and
//! holds the pod until the node agent has put the data back. Its image, resources and security
//! context come from a ConfigMap labelled `stowage.io/pod-volume-restore: RestoreItemAction`,
//! with Velero's keys.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use stowage_api::names::{RESTORE_HELPER_CONTAINER, RESTORE_HELPER_VOLUMES_DIR};

/// How the init container is built.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreHelper {
    pub image: String,
    pub resources: Value,
    pub security_context: Value,
}

/// The ConfigMap keys understood (Velero's names).
const KEYS: &[&str] = &[
    "image",
    "cpuRequest",
    "memRequest",
    "cpuLimit",
    "memLimit",
    "secCtxRunAsUser",
    "secCtxRunAsGroup",
    "secCtxAllowPrivilegeEscalation",
    "secCtx",
];

impl RestoreHelper {
    /// The defaults: small requests and limits, no privilege escalation, no capabilities.
    pub fn new(image: &str) -> RestoreHelper {
        RestoreHelper {
            image: image.to_string(),
            resources: json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}}),
            security_context: json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
        }
    }

    /// The defaults overridden by a ConfigMap's data; what cannot be used is returned as
    /// messages for the restore log (the defaults stay in place for those keys).
    pub fn configured(default_image: &str, config_map: &str, data: &BTreeMap<String, String>) -> (RestoreHelper, Vec<String>) {
        let mut helper = RestoreHelper::new(default_image);
        let mut problems = Vec::new();
        for key in data.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            problems.push(format!("ConfigMap {config_map}: unknown key {key:?} ignored; known keys: {}", KEYS.join(", ")));
        }
        if let Some(image) = data.get("image").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            helper.image = image.to_string();
        }
        for (key, section, resource) in
            [("cpuRequest", "requests", "cpu"), ("memRequest", "requests", "memory"), ("cpuLimit", "limits", "cpu"), ("memLimit", "limits", "memory")]
        {
            match data.get(key).map(|s| s.trim()) {
                None => {}
                // "0" removes the default (Velero: unbounded).
                Some("0") => {
                    if let Some(m) = helper.resources.get_mut(section).and_then(Value::as_object_mut) {
                        m.remove(resource);
                    }
                }
                Some(q) if is_quantity(q) => helper.resources[section][resource] = Value::String(q.to_string()),
                Some(q) => problems.push(format!("ConfigMap {config_map}: {key}={q:?} is not a quantity such as 200m or 256Mi; kept the default")),
            }
        }
        if let Some(text) = data.get("secCtx") {
            match serde_yaml::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => helper.security_context = v,
                _ => problems.push(format!("ConfigMap {config_map}: secCtx is not a YAML securityContext object; kept the default")),
            }
        }
        for (key, field) in [("secCtxRunAsUser", "runAsUser"), ("secCtxRunAsGroup", "runAsGroup")] {
            if let Some(v) = data.get(key).map(|s| s.trim()) {
                match v.parse::<i64>() {
                    Ok(n) if n >= 0 => helper.security_context[field] = json!(n),
                    _ => problems.push(format!("ConfigMap {config_map}: {key}={v:?} is not a user or group id")),
                }
            }
        }
        if let Some(v) = data.get("secCtxAllowPrivilegeEscalation").map(|s| s.trim()) {
            match v.parse::<bool>() {
                Ok(b) => helper.security_context["allowPrivilegeEscalation"] = json!(b),
                Err(_) => problems.push(format!("ConfigMap {config_map}: secCtxAllowPrivilegeEscalation={v:?} is not true or false")),
            }
        }
        (helper, problems)
    }

    /// Adds the init container first in the pod, mounting `volumes` (those the pod has) under
    /// `/restores/<volume>`; an earlier restore's helper is replaced. Returns the volumes mounted.
    pub fn add_to(&self, pod: &mut Value, volumes: &[String], restore_uid: &str) -> Vec<String> {
        let have: Vec<String> = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from)).collect())
            .unwrap_or_default();
        let mounted: Vec<String> = volumes.iter().filter(|v| have.contains(v)).cloned().collect();
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Vec::new() };
        if mounted.is_empty() {
            return mounted;
        }
        let mounts: Vec<Value> =
            mounted.iter().map(|v| json!({"name": v, "mountPath": format!("{RESTORE_HELPER_VOLUMES_DIR}/{v}")})).collect();
        let container = json!({
            "name": RESTORE_HELPER_CONTAINER,
            "image": self.image,
            "args": [restore_uid],
            "env": [{"name": "STOWAGE_RESTORE_UID", "value": restore_uid}],
            "volumeMounts": mounts,
            "resources": self.resources,
            "securityContext": self.security_context,
        });
        let inits = spec.entry("initContainers").or_insert_with(|| Value::Array(Vec::new()));
        if !inits.is_array() {
            *inits = Value::Array(Vec::new());
        }
        let list = inits.as_array_mut().expect("an array");
        list.retain(|c| c.get("name").and_then(Value::as_str) != Some(RESTORE_HELPER_CONTAINER));
        list.insert(0, container);
        mounted
    }
}

/// A Kubernetes quantity, loosely: digits (with an optional fraction) and a known suffix.
fn is_quantity(q: &str) -> bool {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &q[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

/// Removes the helper from a pod spec (a pod backed up after an earlier restore carries it).
pub fn strip(pod: &mut Map<String, Value>) {
    if let Some(list) = pod.get_mut("initContainers").and_then(Value::as_array_mut) {
        list.retain(|c| c.get("name").and_then(Value::as_str) != Some(RESTORE_HELPER_CONTAINER));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}, {"name": "cache", "emptyDir": {}}],
            "initContainers": [{"name": "restore-wait", "image": "old"}, {"name": "setup", "image": "busybox"}],
            "containers": [{"name": "nginx", "image": "nginx"}]}})
    }

    #[test]
    fn helper_goes_first_with_each_volume_mounted() {
        let mut p = pod();
        let mounted = RestoreHelper::new("stowage/restore-helper:1").add_to(&mut p, &["data".into(), "gone".into()], "uid-1");
        assert_eq!(mounted, vec!["data"]);
        let inits = p["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits.len(), 2, "the old helper is replaced, the user's init container kept: {inits:?}");
        assert_eq!(inits[0]["name"], "restore-wait");
        assert_eq!(inits[0]["image"], "stowage/restore-helper:1");
        assert_eq!(inits[0]["args"], json!(["uid-1"]));
        assert_eq!(inits[0]["volumeMounts"], json!([{"name": "data", "mountPath": "/restores/data"}]));
        assert_eq!(inits[1]["name"], "setup");
        let mut untouched = pod();
        assert!(RestoreHelper::new("x").add_to(&mut untouched, &["gone".into()], "u").is_empty());
        assert_eq!(untouched, pod());
    }

    #[test]
    fn config_map_overrides_with_velero_keys_and_reports_bad_values() {
        let data: BTreeMap<String, String> = [
            ("image", "registry.local/helper:v2"),
            ("cpuLimit", "0"),
            ("memRequest", "64Mi"),
            ("memLimit", "lots"),
            ("secCtxRunAsUser", "1000"),
            ("secCtxAllowPrivilegeEscalation", "maybe"),
            ("colour", "blue"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (h, problems) = RestoreHelper::configured("default:1", "helper-config", &data);
        assert_eq!(h.image, "registry.local/helper:v2");
        assert_eq!(h.resources["requests"]["memory"], "64Mi");
        assert_eq!(h.resources["limits"]["memory"], "128Mi", "a bad value keeps the default");
        assert!(h.resources["limits"].get("cpu").is_none(), "0 removes the limit");
        assert_eq!(h.security_context["runAsUser"], 1000);
        assert_eq!(h.security_context["allowPrivilegeEscalation"], false);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"colour\"")));
        assert!(problems.iter().any(|p| p.contains("memLimit=\"lots\"")));
        assert!(problems.iter().all(|p| p.starts_with("ConfigMap helper-config:")));
        let (yaml, none) = RestoreHelper::configured("d", "c", &[("secCtx".to_string(), "runAsNonRoot: true\n".to_string())].into());
        assert!(none.is_empty());
        assert_eq!(yaml.security_context, json!({"runAsNonRoot": true}));
    }
}

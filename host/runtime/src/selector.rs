//! Which items an extension sees, and which resources a capability names.
//!
//! The runtime has no API discovery: a resource is named by its plural (`persistentvolumeclaims`,
//! `deployments.apps`), its singular or its kind (`PersistentVolumeClaim`), optionally followed
//! by `.group`, and `*` matches every resource. A name without a group matches the kind in any
//! group.

use crate::item::Item;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSelector {
    #[serde(default)]
    pub included_namespaces: Vec<String>,
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    #[serde(default)]
    pub included_resources: Vec<String>,
    #[serde(default)]
    pub excluded_resources: Vec<String>,
    #[serde(default)]
    pub label_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

impl ResourceSelector {
    /// Whether the item passes every part of the selector. Namespace lists apply to
    /// namespaced items only.
    pub fn matches(&self, item: &Item) -> bool {
        let id = &item.id;
        if !id.namespace.is_empty() {
            if !self.included_namespaces.is_empty()
                && !self.included_namespaces.iter().any(|n| n == "*" || *n == id.namespace)
            {
                return false;
            }
            if self.excluded_namespaces.contains(&id.namespace) {
                return false;
            }
        }
        if !self.included_resources.is_empty()
            && !self.included_resources.iter().any(|r| resource_matches(r, &id.group, &id.kind))
        {
            return false;
        }
        if self.excluded_resources.iter().any(|r| resource_matches(r, &id.group, &id.kind)) {
            return false;
        }
        match &self.label_selector {
            Some(selector) => {
                let labels = item.object.pointer("/metadata/labels");
                selector.matches_with(|key| labels?.get(key)?.as_str())
            }
            None => true,
        }
    }

    /// Checks the operators; returns the failing key relative to the selector.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(selector) = &self.label_selector {
            for (i, requirement) in selector.match_expressions.iter().enumerate() {
                if !OPERATORS.contains(&requirement.operator.as_str()) {
                    return Err((
                        format!("labelSelector.matchExpressions[{i}].operator"),
                        format!("{:?} is not one of {}", requirement.operator, OPERATORS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Matches the labels `label` looks up (without copying them out of an object).
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels.iter().all(|(k, v)| label(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let value = label(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// Whether a resource name from a selector or a capability names this kind.
pub fn resource_matches(pattern: &str, group: &str, kind: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (name, pattern_group) = match pattern.split_once('.') {
        Some((name, pattern_group)) => (name, Some(pattern_group)),
        None => (pattern, None),
    };
    if pattern_group.is_some_and(|g| g != group && g != "*") {
        return false;
    }
    let name = name.to_ascii_lowercase();
    let singular = kind.to_ascii_lowercase();
    name == "*" || name == singular || name == plural(&singular)
}

/// English plural of a lower-case kind, the way Kubernetes names resources.
fn plural(singular: &str) -> String {
    if singular.ends_with('s') || singular.ends_with('x') || singular.ends_with("ch") || singular.ends_with("sh") {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(group: &str, kind: &str, namespace: &str, labels: serde_json::Value) -> Item {
        let api_version = if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") };
        Item::from_object(json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": "x", "namespace": namespace, "labels": labels},
        }))
        .unwrap()
    }

    #[test]
    fn resource_names() {
        assert!(resource_matches("persistentvolumeclaims", "", "PersistentVolumeClaim"));
        assert!(resource_matches("PersistentVolumeClaim", "", "PersistentVolumeClaim"));
        assert!(resource_matches("deployments.apps", "apps", "Deployment"));
        assert!(resource_matches("deployments", "apps", "Deployment"));
        assert!(!resource_matches("deployments.extensions", "apps", "Deployment"));
        assert!(resource_matches("ingresses.networking.k8s.io", "networking.k8s.io", "Ingress"));
        assert!(resource_matches("networkpolicies", "networking.k8s.io", "NetworkPolicy"));
        assert!(resource_matches("gateways", "gateway.networking.k8s.io", "Gateway"));
        assert!(resource_matches("*", "apps", "StatefulSet"));
        assert!(resource_matches("*.apps", "apps", "StatefulSet"));
        assert!(!resource_matches("pods", "", "PodTemplate"));
    }

    #[test]
    fn selector_parts() {
        let selector = ResourceSelector {
            included_namespaces: vec!["shop".into()],
            excluded_resources: vec!["secrets".into()],
            label_selector: Some(LabelSelector {
                match_labels: [("app".to_owned(), "db".to_owned())].into(),
                match_expressions: vec![LabelRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: vec!["cache".into()],
                }],
            }),
            ..Default::default()
        };
        assert!(selector.matches(&item("", "ConfigMap", "shop", json!({"app": "db"}))));
        assert!(!selector.matches(&item("", "ConfigMap", "other", json!({"app": "db"}))));
        assert!(!selector.matches(&item("", "Secret", "shop", json!({"app": "db"}))));
        assert!(!selector.matches(&item("", "ConfigMap", "shop", json!({"app": "web"}))));
        assert!(!selector.matches(&item("", "ConfigMap", "shop", json!({"app": "db", "tier": "cache"}))));
        assert!(ResourceSelector::default().matches(&item("apps", "Deployment", "any", json!({}))));
    }
}

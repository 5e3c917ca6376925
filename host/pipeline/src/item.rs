//! The unit every stage works on: one Kubernetes object as JSON, with the identity that the
//! filters, the archive and the restore order need.

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

/// One resource type as discovery describes it; the controller fills these in, one per served
/// group version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResourceInfo {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    /// The resource name used in URLs and archive paths (`deployments`).
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Whether `version` is the group's preferred version: the one objects are backed up in.
    pub preferred: bool,
}

impl ApiResourceInfo {
    /// A resource in its group's preferred version, without short names.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> ApiResourceInfo {
        ApiResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced,
            short_names: Vec::new(),
            preferred: true,
        }
    }

    pub fn with_short_names(mut self, names: &[&str]) -> ApiResourceInfo {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    /// `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// A resource type independent of version, written `resource[.group]` as in Velero's archive
/// directories and `kubectl` (`pods`, `deployments.apps`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> GroupResource {
        GroupResource { group: group.to_string(), resource: resource.to_string() }
    }

    pub fn core(resource: &str) -> GroupResource {
        GroupResource::new("", resource)
    }

    /// Reads `resource[.group]`. Resource names never contain a dot, so the first dot
    /// separates them.
    pub fn parse(text: &str) -> GroupResource {
        match text.split_once('.') {
            Some((resource, group)) => GroupResource::new(group, resource),
            None => GroupResource::core(text),
        }
    }

    pub fn is(&self, group: &str, resource: &str) -> bool {
        self.group == group && self.resource == resource
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// API groups served by Kubernetes itself. Custom resources live in other groups (CRD groups
/// need a dot, and the few CRDs under `*.k8s.io`, such as volume snapshots, are not listed).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "metrics.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Whether the group is one Kubernetes serves itself (its types have no CRD).
pub fn is_built_in_group(group: &str) -> bool {
    BUILT_IN_GROUPS.contains(&group)
}

/// Where an object lives: enough to fetch it from the cluster or find it in an archive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemRef {
    pub group_resource: GroupResource,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

impl ItemRef {
    pub fn namespaced(group_resource: GroupResource, namespace: &str, name: &str) -> ItemRef {
        ItemRef { group_resource, namespace: Some(namespace.to_string()), name: name.to_string() }
    }

    pub fn cluster(group_resource: GroupResource, name: &str) -> ItemRef {
        ItemRef { group_resource, namespace: None, name: name.to_string() }
    }
}

impl fmt::Display for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.group_resource, self.name),
            None => write!(f, "{} {}", self.group_resource, self.name),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ItemError {
    #[error("{resource} object has no metadata.name; the API server always sets one, so the object is malformed")]
    MissingName { resource: String },
    #[error("{resource} {name:?} is namespaced but has no metadata.namespace")]
    MissingNamespace { resource: String, name: String },
    #[error("{resource} {name:?} has no apiVersion or kind; Stowage and Velero archives always store both")]
    MissingType { resource: String, name: String },
}

/// One object with its identity. `namespace` and `name` mirror `object.metadata`; change them
/// through [`Item::set_namespace`] or re-read them with [`Item::refresh_identity`] so the two stay equal.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub group: String,
    pub version: String,
    /// The plural resource name (`deployments`).
    pub resource: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub object: Value,
}

impl Item {
    /// An object as listed from the cluster. List responses omit `apiVersion` and `kind` on
    /// their items, so they are set here: archived objects are self-describing, as Velero's are.
    pub fn new(mut object: Value, info: &ApiResourceInfo) -> Result<Item, ItemError> {
        let resource = info.group_resource().to_string();
        let name = meta_str(&object, "name").ok_or(ItemError::MissingName { resource: resource.clone() })?;
        let namespace = if info.namespaced {
            let missing = || ItemError::MissingNamespace { resource: resource.clone(), name: name.clone() };
            Some(meta_str(&object, "namespace").ok_or_else(missing)?)
        } else {
            None
        };
        if let Some(map) = object.as_object_mut() {
            map.entry("apiVersion").or_insert_with(|| Value::String(info.api_version()));
            map.entry("kind").or_insert_with(|| Value::String(info.kind.clone()));
        }
        Ok(Item {
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.plural.clone(),
            kind: info.kind.clone(),
            namespace,
            name,
            object,
        })
    }

    /// An object read from an archive: the type comes from the object itself.
    pub fn from_archive(
        group_resource: &GroupResource,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Item, ItemError> {
        let resource = group_resource.to_string();
        let name = meta_str(&object, "name").ok_or(ItemError::MissingName { resource: resource.clone() })?;
        let (api_version, kind) = match (object.get("apiVersion"), object.get("kind")) {
            (Some(Value::String(a)), Some(Value::String(k))) => (a.clone(), k.clone()),
            _ => return Err(ItemError::MissingType { resource, name }),
        };
        let version = api_version.rsplit('/').next().unwrap_or_default().to_string();
        Ok(Item {
            group: group_resource.group.clone(),
            version,
            resource: group_resource.resource.clone(),
            kind,
            namespace: namespace.map(str::to_string),
            name,
            object,
        })
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.resource)
    }

    pub fn item_ref(&self) -> ItemRef {
        ItemRef { group_resource: self.group_resource(), namespace: self.namespace.clone(), name: self.name.clone() }
    }

    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// Whether this is an object of the given group and resource.
    pub fn is(&self, group: &str, resource: &str) -> bool {
        self.group == group && self.resource == resource
    }

    /// The `metadata.labels` map, if any.
    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.object.get("metadata")?.get("labels")?.as_object()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels()?.get(key)?.as_str()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.object.get("metadata")?.get("annotations")?.get(key)?.as_str()
    }

    /// Moves a namespaced object to another namespace (object and identity together).
    pub fn set_namespace(&mut self, namespace: &str) {
        if self.namespace.is_none() {
            return;
        }
        if let Some(meta) = self.object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
        }
        self.namespace = Some(namespace.to_string());
    }

    /// Re-reads name and namespace from the object after something edited its metadata
    /// (a resource modifier may rename an object).
    pub fn refresh_identity(&mut self) {
        if let Some(name) = meta_str(&self.object, "name") {
            self.name = name;
        }
        if self.namespace.is_some() {
            if let Some(ns) = meta_str(&self.object, "namespace") {
                self.namespace = Some(ns);
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.item_ref().fmt(f)
    }
}

fn meta_str(object: &Value, field: &str) -> Option<String> {
    let value = object.get("metadata")?.get(field)?.as_str()?;
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listed_objects_get_their_type() {
        let info = ApiResourceInfo::new("apps", "v1", "deployments", "Deployment", true);
        let item = Item::new(json!({"metadata": {"name": "web", "namespace": "shop"}}), &info).unwrap();
        assert_eq!(item.object["apiVersion"], "apps/v1");
        assert_eq!(item.object["kind"], "Deployment");
        assert_eq!(item.namespace.as_deref(), Some("shop"));
        assert_eq!(item.to_string(), "deployments.apps shop/web");
    }

    #[test]
    fn malformed_objects_are_named_in_errors() {
        let pods = ApiResourceInfo::new("", "v1", "pods", "Pod", true);
        let err = Item::new(json!({"metadata": {"name": "p"}}), &pods).unwrap_err();
        assert_eq!(err, ItemError::MissingNamespace { resource: "pods".into(), name: "p".into() });
        assert!(matches!(Item::new(json!({"metadata": {}}), &pods), Err(ItemError::MissingName { .. })));
        let gr = GroupResource::core("pods");
        let err = Item::from_archive(&gr, Some("ns"), json!({"metadata": {"name": "p"}})).unwrap_err();
        assert!(err.to_string().contains("no apiVersion or kind"), "{err}");
    }

    #[test]
    fn group_resource_round_trips_through_its_text() {
        for text in ["pods", "deployments.apps", "volumesnapshots.snapshot.storage.k8s.io"] {
            assert_eq!(GroupResource::parse(text).to_string(), text);
        }
        assert_eq!(GroupResource::parse("deployments.apps").group, "apps");
    }

    #[test]
    fn set_namespace_keeps_object_and_identity_equal() {
        let pods = ApiResourceInfo::new("", "v1", "pods", "Pod", true);
        let mut item = Item::new(json!({"metadata": {"name": "p", "namespace": "a"}}), &pods).unwrap();
        item.set_namespace("b");
        assert_eq!(item.object["metadata"]["namespace"], "b");
        assert_eq!(item.namespace.as_deref(), Some("b"));
    }
}

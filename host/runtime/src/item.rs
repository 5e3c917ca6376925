//! The data that crosses into extensions: items, object references and the operation context.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Identifies one Kubernetes object. `group` is empty for the core group, `namespace` for
/// cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ObjectRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        if self.namespace.is_empty() {
            write!(f, "{}{group} {}", self.kind, self.name)
        } else {
            write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A kind, for `kube_list`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct KindRef {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// One object as the pipelines carry it: its identity and the whole object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    #[serde(flatten)]
    pub id: ObjectRef,
    pub object: Value,
}

impl Item {
    /// An item from a whole object, reading its identity from `apiVersion`, `kind` and
    /// `metadata`.
    pub fn from_object(object: Value) -> Result<Item, String> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
        let api_version = text("/apiVersion").ok_or("object has no apiVersion")?;
        let kind = text("/kind").ok_or("object has no kind")?;
        let name = text("/metadata/name").ok_or("object has no metadata.name")?;
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group.to_owned(), version.to_owned()),
            None => (String::new(), api_version),
        };
        let namespace = text("/metadata/namespace").unwrap_or_default();
        Ok(Item { id: ObjectRef { group, version, kind, namespace, name }, object })
    }

    /// The object's labels (`metadata.labels`).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    Backup,
    Restore,
}

/// The stage an extension is called in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    ItemFilter,
    ItemAction,
    RestoreItemAction,
    PreBackup,
    PostBackup,
    PostRestore,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::ItemFilter => "item-filter",
            Phase::ItemAction => "item-action",
            Phase::RestoreItemAction => "restore-item-action",
            Phase::PreBackup => "pre-backup",
            Phase::PostBackup => "post-backup",
            Phase::PostRestore => "post-restore",
        }
    }
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPhase {
    PreBackup,
    PostBackup,
    PostRestore,
}

impl From<HookPhase> for Phase {
    fn from(phase: HookPhase) -> Phase {
        match phase {
            HookPhase::PreBackup => Phase::PreBackup,
            HookPhase::PostBackup => Phase::PostBackup,
            HookPhase::PostRestore => Phase::PostRestore,
        }
    }
}

/// The backup or restore a session serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationContext {
    pub kind: OperationKind,
    /// The Backup's or Restore's name and uid.
    pub name: String,
    pub uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_object_reads_identity() {
        let item = Item::from_object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        }))
        .unwrap();
        assert_eq!(item.id.group, "apps");
        assert_eq!(item.id.version, "v1");
        assert_eq!(item.id.to_string(), "Deployment.apps shop/web");
        assert_eq!(item.labels()["app"], "web");
        let core = Item::from_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).unwrap();
        assert_eq!((core.id.group.as_str(), core.id.namespace.as_str()), ("", ""));
        assert!(Item::from_object(json!({"kind": "Pod"})).unwrap_err().contains("apiVersion"));
    }
}

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

/// The parts of objects an extension reads: its `object-fields`, JSON Pointers split into
/// their tokens once.
#[derive(Debug)]
pub(crate) struct ObjectFields(Vec<Vec<String>>);

impl ObjectFields {
    pub(crate) fn parse(fields: &[String]) -> Result<ObjectFields, String> {
        let paths = fields
            .iter()
            .map(|field| match field.strip_prefix('/') {
                _ if field.is_empty() => Ok(Vec::new()),
                Some(rest) => Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect()),
                None => Err(format!("{field:?} is not a JSON Pointer; write e.g. /metadata/labels")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ObjectFields(paths))
    }

    /// The parts of `object` at these fields, at the same paths; parts it does not have are
    /// left out. A pointer into an array takes the whole array (`/spec/containers/0/image`
    /// gives all of `spec.containers`), and `""` the whole object.
    pub(crate) fn view(&self, object: &Value) -> Value {
        let mut view = serde_json::Map::new();
        'fields: for tokens in &self.0 {
            if tokens.is_empty() {
                return object.clone();
            }
            let (mut source, mut at) = (object, &mut view);
            for (i, token) in tokens.iter().enumerate() {
                let Some(next) = source.as_object().and_then(|m| m.get(token)) else { continue 'fields };
                if i + 1 == tokens.len() || !next.is_object() {
                    at.insert(token.clone(), next.clone());
                    continue 'fields;
                }
                source = next;
                match at.entry(token.clone()).or_insert_with(|| Value::Object(serde_json::Map::new())) {
                    Value::Object(map) => at = map,
                    // Taken whole by an earlier field.
                    _ => continue 'fields,
                }
            }
        }
        Value::Object(view)
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
    fn views_hold_only_the_fields_asked_for() {
        let object = serde_json::json!({"metadata": {"name": "web", "labels": {"app": "a"}, "annotations": {"a/b": "1"}},
            "spec": {"containers": [{"image": "x"}], "nodeName": "n"}, "data": {"k": "v"}});
        let fields = |f: &[&str]| ObjectFields::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let object_view = |object: &Value, fields: &ObjectFields| fields.view(object);
        assert_eq!(
            object_view(&object, &fields(&["/metadata/labels", "/metadata/annotations/a~1b", "/spec/containers/0/image", "/status", "/data/k/deeper"])),
            serde_json::json!({"metadata": {"labels": {"app": "a"}, "annotations": {"a/b": "1"}}, "spec": {"containers": [{"image": "x"}]},
                "data": {"k": "v"}})
        );
        assert_eq!(object_view(&object, &fields(&["/metadata", "/metadata/labels"]))["metadata"], object["metadata"]);
        assert_eq!(object_view(&object, &fields(&[])), serde_json::json!({}));
        assert_eq!(object_view(&object, &fields(&[""])), object);
        let e = ObjectFields::parse(&["metadata.labels".to_string()]).unwrap_err();
        assert_eq!(e, "\"metadata.labels\" is not a JSON Pointer; write e.g. /metadata/labels");
    }

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

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

/// The parts of objects an extension reads: its `object-fields`, JSON Pointers merged into a
/// tree of keys once, so that a view is written straight from the object (as JSON text for a
/// component, as a map for a script) without building it first.
#[derive(Debug, Default)]
pub(crate) struct ObjectFields {
    /// Take the whole value here (a pointer ends here, or `""`).
    whole: bool,
    /// The keys below, in the order of a JSON object's keys.
    keys: BTreeMap<String, ObjectFields>,
}

impl ObjectFields {
    pub(crate) fn parse(fields: &[String]) -> Result<ObjectFields, String> {
        let mut tree = ObjectFields::default();
        for field in fields {
            let tokens: Vec<String> = match field.strip_prefix('/') {
                _ if field.is_empty() => Vec::new(),
                Some(rest) => rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect(),
                None => return Err(format!("{field:?} is not a JSON Pointer; write e.g. /metadata/labels")),
            };
            let mut at = &mut tree;
            for token in tokens {
                at = at.keys.entry(token).or_default();
            }
            at.whole = true;
        }
        Ok(tree)
    }

    /// The parts of `object` at these fields, at the same paths; parts it does not have are
    /// left out. A pointer into an array takes the whole array (`/spec/containers/0/image`
    /// gives all of `spec.containers`), and `""` the whole object.
    pub(crate) fn view(&self, object: &Value) -> Value {
        match self.part(object) {
            Part::Whole(value) => value.clone(),
            Part::Keys(map) => {
                Value::Object(self.parts_of(map).map(|(key, fields, value)| (key.clone(), fields.view(value))).collect())
            }
        }
    }

    /// [`ObjectFields::view`] as JSON text, written from `object` directly.
    pub(crate) fn view_text(&self, object: &Value) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_view(object, &mut out);
        // serde_json writes UTF-8.
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    fn write_view(&self, object: &Value, out: &mut Vec<u8>) {
        match self.part(object) {
            Part::Whole(value) => serde_json::to_writer(&mut *out, value).expect("a JSON value always serialises"),
            Part::Keys(map) => {
                out.push(b'{');
                for (i, (key, fields, value)) in self.parts_of(map).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).expect("a string always serialises");
                    out.push(b':');
                    fields.write_view(value, out);
                }
                out.push(b'}');
            }
        }
    }

    /// What the view holds at this level of `object`: all of it, or some of its keys.
    fn part<'a>(&self, object: &'a Value) -> Part<'a> {
        match object {
            Value::Object(map) if !self.whole => Part::Keys(map),
            // A pointer that goes on into an array or a scalar takes it whole.
            whole => Part::Whole(whole),
        }
    }

    /// The keys of `map` the view holds, with the fields below each and its value.
    fn parts_of<'a>(
        &'a self,
        map: &'a serde_json::Map<String, Value>,
    ) -> impl Iterator<Item = (&'a String, &'a ObjectFields, &'a Value)> {
        self.keys.iter().filter_map(move |(key, fields)| map.get(key).map(|value| (key, fields, value)))
    }

    /// Walks the view of `object` for a script's map: `whole` converts a value taken whole,
    /// `object` assembles a level from its keys.
    pub(crate) fn fold_view<T>(
        &self,
        object: &Value,
        whole: &impl Fn(&Value) -> T,
        level: &impl Fn(Vec<(&str, T)>) -> T,
    ) -> T {
        match self.part(object) {
            Part::Whole(value) => whole(value),
            Part::Keys(map) => {
                level(self.parts_of(map).map(|(key, fields, value)| (key.as_str(), fields.fold_view(value, whole, level))).collect())
            }
        }
    }
}

enum Part<'a> {
    Whole(&'a Value),
    Keys(&'a serde_json::Map<String, Value>),
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
        // The text written straight from the object is the view's text.
        for f in [&["/metadata/labels", "/spec/containers/0/image", "/spec/nope", "/data/k/deeper"][..], &["/metadata"], &[""], &[]] {
            let f = fields(f);
            assert_eq!(f.view_text(&object), serde_json::to_string(&f.view(&object)).unwrap());
        }
        assert_eq!(fields(&["/spec/nope"]).view_text(&object), r#"{"spec":{}}"#);
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

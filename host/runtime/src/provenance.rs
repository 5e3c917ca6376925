//! What extensions did during one backup or restore: the `<name>-extensions.json.zst` record.

use crate::host::Denial;
use crate::item::{ObjectRef, Phase};
use crate::policy::Scope;
use crate::source::{Digest, ExtensionId, ExtensionKind, Language};
use serde::{Deserialize, Serialize};

/// One extension that took part in an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRecord {
    pub id: ExtensionId,
    pub kind: ExtensionKind,
    pub language: Language,
    pub scope: Scope,
    pub digest: Digest,
    pub counts: Counts,
    /// The items it changed, added to, filtered, skipped, was denied on or failed on.
    pub items: Vec<ItemRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Calls made (items given to it, hooks run).
    pub calls: u64,
    pub changed: u64,
    pub filtered: u64,
    pub skipped: u64,
    pub added: u64,
    pub denied: u64,
    pub errors: u64,
}

/// What one call did to one item (or hook target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    pub item: ObjectRef,
    pub phase: Phase,
    /// The change to the object, as a JSON Patch (RFC 6902) from the object it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Vec<PatchOperation>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<ObjectRef>,
    /// Why it excluded the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<Denial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ItemRecord {
    /// A record of a call; the item is filled in when it is kept (most calls leave no trace,
    /// and copying the identity for each would cost more than some calls).
    pub(crate) fn new(phase: Phase) -> ItemRecord {
        ItemRecord { item: ObjectRef::default(), phase, patch: None, added: Vec::new(), filtered: None, skipped: false, denied: Vec::new(), error: None }
    }

    fn is_noteworthy(&self) -> bool {
        self.patch.is_some()
            || !self.added.is_empty()
            || self.filtered.is_some()
            || self.skipped
            || !self.denied.is_empty()
            || self.error.is_some()
    }
}

impl ExtensionRecord {
    /// Counts a call on `item` and keeps its record when it did something.
    pub(crate) fn add(&mut self, mut record: ItemRecord, item: &ObjectRef) {
        let c = &mut self.counts;
        c.calls += 1;
        c.changed += u64::from(record.patch.is_some());
        c.filtered += u64::from(record.filtered.is_some());
        c.skipped += u64::from(record.skipped);
        c.added += record.added.len() as u64;
        c.denied += record.denied.len() as u64;
        c.errors += u64::from(record.error.is_some());
        if record.is_noteworthy() {
            item.clone_into(&mut record.item);
            self.items.push(record);
        }
    }
}

/// Every extension that ran in an operation, for the backup's or restore's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtensionReport {
    pub extensions: Vec<ExtensionRecord>,
}

impl ExtensionReport {
    /// The content of `<name>-extensions.json.zst`.
    pub fn to_json_zst(&self) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        zstd::encode_all(json.as_slice(), 3)
    }

    pub fn from_json_zst(bytes: &[u8]) -> std::io::Result<ExtensionReport> {
        let json = zstd::decode_all(bytes)?;
        serde_json::from_slice(&json).map_err(std::io::Error::other)
    }
}

/// One operation of a JSON Patch (RFC 6902): `add`, `remove` or `replace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOperation {
    pub op: String,
    /// A JSON Pointer (RFC 6901).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// The operations that turn `before` into `after`: objects key by key, arrays of the same
/// length element by element, anything else replaced whole. Equal subtrees are skipped, so
/// a small edit of a large object costs little.
pub(crate) fn diff(before: &serde_json::Value, after: &serde_json::Value) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    diff_at(before, after, &mut String::new(), &mut operations);
    operations
}

fn diff_at(before: &serde_json::Value, after: &serde_json::Value, path: &mut String, out: &mut Vec<PatchOperation>) {
    use serde_json::Value;
    if before == after {
        return;
    }
    let op = |op: &str, path: &str, value: Option<&Value>| PatchOperation { op: op.into(), path: path.into(), value: value.cloned() };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                let len = path.len();
                push_token(path, key);
                match b.get(key) {
                    Some(new) => diff_at(old, new, path, out),
                    None => out.push(op("remove", path, None)),
                }
                path.truncate(len);
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    let len = path.len();
                    push_token(path, key);
                    out.push(op("add", path, Some(new)));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                diff_at(old, new, path, out);
                path.truncate(len);
            }
        }
        _ => out.push(op("replace", path, Some(after))),
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target` in place and returns the operations
/// that changed it, as [`diff`] of the object before and after would: setting a value a
/// field already has is no change, removing an absent one neither.
pub(crate) fn merge(target: &mut serde_json::Value, patch: serde_json::Value) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    merge_at(target, patch, &mut String::new(), &mut operations);
    operations
}

fn merge_at(target: &mut serde_json::Value, patch: serde_json::Value, path: &mut String, out: &mut Vec<PatchOperation>) {
    use serde_json::Value;
    let Value::Object(fields) = patch else {
        // Recorded as `diff` records it: an array of the same length element by element.
        diff_at(target, &patch, path, out);
        *target = patch;
        return;
    };
    if !target.is_object() {
        // A patch object replaces whatever else was there.
        *target = Value::Object(serde_json::Map::new());
        merge_at(target, Value::Object(fields), path, &mut Vec::new());
        out.push(PatchOperation { op: "replace".into(), path: path.clone(), value: Some(target.clone()) });
        return;
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        let len = path.len();
        push_token(path, &key);
        match (map.get_mut(&key), value) {
            (None, Value::Null) => {}
            (Some(_), Value::Null) => {
                map.remove(&key);
                out.push(PatchOperation { op: "remove".into(), path: path.clone(), value: None });
            }
            (Some(existing), value) => merge_at(existing, value, path, out),
            (None, value) => {
                // A new field: the patch's value without its nulls.
                let mut added = Value::Null;
                merge_at(&mut added, value, path, &mut Vec::new());
                out.push(PatchOperation { op: "add".into(), path: path.clone(), value: Some(added.clone()) });
                map.insert(key, added);
            }
        }
        path.truncate(len);
    }
}

/// The merge patch (RFC 7386) that turns `before` into `after`: the fields that differ,
/// `null` for those removed (a `null` value in `after` cannot be told from a removal).
pub(crate) fn merge_patch_between(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (key, old) in a {
                match b.get(key) {
                    None => {
                        patch.insert(key.clone(), Value::Null);
                    }
                    Some(new) if new != old => {
                        patch.insert(key.clone(), merge_patch_between(old, new));
                    }
                    Some(_) => {}
                }
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    patch.insert(key.clone(), new.clone());
                }
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

fn push_token(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_applies_rfc_7386_and_reports_what_changed() {
        let mut object = json!({"metadata": {"name": "x", "labels": {"a": "1", "gone": "y"}}, "spec": {"list": [1, 2], "n": 1}, "data": "s"});
        let patch = json!({
            "metadata": {"labels": {"a": "1", "gone": null, "absent": null, "b/c": "2"}},
            "spec": {"list": [3], "n": 1, "fresh": {"k": "v", "dropped": null}},
            "data": {"now": "an object"},
        });
        let operations = serde_json::to_value(merge(&mut object, patch)).unwrap();
        assert_eq!(
            object,
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b/c": "2"}}, "spec": {"list": [3], "n": 1, "fresh": {"k": "v"}},
                   "data": {"now": "an object"}})
        );
        assert_eq!(
            operations,
            json!([
                {"op": "replace", "path": "/data", "value": {"now": "an object"}},
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/gone"},
                {"op": "add", "path": "/spec/fresh", "value": {"k": "v"}},
                {"op": "replace", "path": "/spec/list", "value": [3]},
            ])
        );
        // Arrays of the same length are recorded element by element.
        assert_eq!(
            serde_json::to_value(merge(&mut object, json!({"spec": {"list": [4]}}))).unwrap(),
            json!([{"op": "replace", "path": "/spec/list/0", "value": 4}])
        );
        // The same patch again changes nothing.
        let mut again = object.clone();
        assert!(merge(&mut again, json!({"metadata": {"labels": {"a": "1", "gone": null}}, "spec": {"list": [4]}})).is_empty());
        assert_eq!(again, object);
    }

    #[test]
    fn a_patch_between_two_objects_merges_one_into_the_other() {
        let before = json!({"metadata": {"labels": {"a": "1", "gone": "x"}}, "spec": {"list": [1, 2]}});
        let after = json!({"metadata": {"labels": {"a": "2"}, "annotations": {"n": "y"}}, "spec": {"list": [1, 2]}});
        let patch = merge_patch_between(&before, &after);
        assert_eq!(patch, json!({"metadata": {"labels": {"a": "2", "gone": null}, "annotations": {"n": "y"}}}));
        let mut merged = before.clone();
        merge(&mut merged, patch);
        assert_eq!(merged, after);
    }

    #[test]
    fn diff_is_minimal_and_escapes_keys() {
        let before = json!({"metadata": {"annotations": {"a/b": "1"}, "name": "x"}, "spec": {"list": [1, 2], "gone": true}});
        let after = json!({"metadata": {"annotations": {"a/b": "2", "new~": "y"}, "name": "x"}, "spec": {"list": [1, 3, 4]}});
        let patch = serde_json::to_value(diff(&before, &after)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
                {"op": "add", "path": "/metadata/annotations/new~0", "value": "y"},
                {"op": "remove", "path": "/spec/gone"},
                {"op": "replace", "path": "/spec/list", "value": [1, 3, 4]},
            ])
        );
        assert!(diff(&before, &before).is_empty());
    }
}

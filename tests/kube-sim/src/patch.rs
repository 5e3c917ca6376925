//! Patch types the API server accepts: JSON merge, JSON patch, strategic merge (approximated)
//! and server-side apply (approximated).

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PatchKind {
    Merge,
    Json,
    StrategicMerge,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` to `target`, returning the patched object.
pub fn apply(kind: PatchKind, target: &Value, patch: &[u8]) -> Result<Value, String> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| format!("invalid JSON patch: {e}"))?;
            let mut out = target.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| format!("JSON patch failed: {e}"))?;
            Ok(out)
        }
        PatchKind::Merge => {
            let p: Value = serde_json::from_slice(patch).map_err(|e| format!("invalid merge patch: {e}"))?;
            let mut out = target.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        PatchKind::StrategicMerge => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| format!("invalid strategic merge patch: {e}"))?;
            Ok(strategic_merge(target, &p))
        }
        PatchKind::Apply => {
            // Apply configurations arrive as YAML or JSON; without field ownership tracking the
            // closest behaviour is a strategic merge of the applied fields.
            let p: Value = serde_yaml::from_slice(patch).map_err(|e| format!("invalid apply configuration: {e}"))?;
            Ok(strategic_merge(target, &p))
        }
    }
}

/// The keys Kubernetes uses to merge lists of objects element by element.
const MERGE_KEYS: &[&str] = &["name", "containerPort", "port", "mountPath", "devicePath", "ip", "type", "uid"];

fn merge_key(list: &[Value]) -> Option<&'static str> {
    let first = list.first()?.as_object()?;
    MERGE_KEYS.iter().copied().find(|k| first.contains_key(*k) && list.iter().all(|e| e.get(*k).is_some()))
}

/// Strategic merge, approximated: maps merge recursively, `null` deletes, lists of objects
/// with a recognised merge key (`name`, `containerPort`, ...) merge element-wise, and other
/// lists are replaced. `$patch: replace|delete` directives are honoured on maps and elements.
pub fn strategic_merge(target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => return strip_directives(patch),
                Some("delete") => return Value::Null,
                _ => {}
            }
            let mut out: Map<String, Value> = t.clone();
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(tv) => strategic_merge(tv, pv),
                    None => strip_directives(pv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => match merge_key(t).or_else(|| merge_key(p)) {
            Some(key) if merge_key(p) == Some(key) || p.is_empty() => {
                let mut out: Vec<Value> = t.clone();
                for pe in p {
                    let id = &pe[key];
                    let delete = pe.get("$patch").and_then(Value::as_str) == Some("delete");
                    match out.iter().position(|te| &te[key] == id) {
                        Some(i) if delete => {
                            out.remove(i);
                        }
                        Some(i) => out[i] = strategic_merge(&out[i], pe),
                        None if delete => {}
                        None => out.push(strip_directives(pe)),
                    }
                }
                Value::Array(out)
            }
            _ => strip_directives(patch),
        },
        _ => strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_deletes() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply(PatchKind::Merge, &t, br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#).unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"spec": {"replicas": 1}});
        let out = apply(PatchKind::Json, &t, br#"[{"op":"replace","path":"/spec/replicas","value":3}]"#).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let err = apply(PatchKind::Json, &t, br#"[{"op":"test","path":"/spec/replicas","value":9}]"#);
        assert!(err.is_err());
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                                 "args": ["1", "2"]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}],
                                 "args": ["3"]}});
        let out = strategic_merge(&t, &p);
        let c = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0]["image"], "x");
        assert_eq!(c[1]["image"], "z");
        assert_eq!(c[2]["name"], "c");
        assert_eq!(out["spec"]["args"], json!(["3"]));
    }

    #[test]
    fn strategic_merge_delete_directive() {
        let t = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let p = json!({"containers": [{"name": "a", "$patch": "delete"}]});
        assert_eq!(strategic_merge(&t, &p), json!({"containers": [{"name": "b"}]}));
    }

    #[test]
    fn apply_accepts_yaml() {
        let t = json!({"metadata": {"name": "x"}, "data": {"k": "v"}});
        let out = apply(PatchKind::Apply, &t, b"data:\n  k2: v2\n").unwrap();
        assert_eq!(out["data"], json!({"k": "v", "k2": "v2"}));
    }
}

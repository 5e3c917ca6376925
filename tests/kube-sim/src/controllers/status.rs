//! Writing controller status: conditions that keep their transition times while unchanged,
//! and patches only when something changed (a status write wakes every watcher).
use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::Error;

/// A condition a controller wants to report.
pub struct Cond<'a> {
    pub kind: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: &'a str,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `wanted` rendered as conditions, keeping `lastTransitionTime` (and, for kinds whose
/// conditions have one, `lastUpdateTime`) from `existing` where the status did not change.
pub fn conditions(existing: &Value, wanted: &[Cond], with_update_time: bool) -> Value {
    let now = now();
    let old = existing.as_array().cloned().unwrap_or_default();
    let rendered: Vec<Value> = wanted
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let prev = old.iter().find(|o| o["type"] == c.kind);
            let same = |field: &str, value: &str| prev.is_some_and(|p| p[field] == value);
            let unchanged = same("status", status);
            let since = match prev {
                Some(p) if unchanged => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            let updated = match prev {
                Some(p) if unchanged && same("reason", c.reason) && same("message", c.message) => {
                    p.get("lastUpdateTime").cloned().unwrap_or(since.clone())
                }
                _ => json!(now),
            };
            let mut v = json!({"type": c.kind, "status": status, "reason": c.reason, "message": c.message,
                               "lastTransitionTime": since});
            if with_update_time {
                v["lastUpdateTime"] = updated;
            }
            v
        })
        .collect();
    Value::Array(rendered)
}

/// Whether writing `wanted` would change any of its fields in `current` (a field absent from
/// `current` equals an empty or zero one, as Kubernetes omits those).
pub fn differs(current: &Value, wanted: &Value) -> bool {
    !contains(current, wanted)
}

fn contains(current: &Value, wanted: &Value) -> bool {
    match (current, wanted) {
        (Value::Null, w) if is_empty(w) => true,
        (c, Value::Object(w)) => {
            let null = Value::Null;
            c.is_object() && w.iter().all(|(k, v)| contains(c.get(k).unwrap_or(&null), v))
        }
        (Value::Array(c), Value::Array(w)) => c.len() == w.len() && c.iter().zip(w).all(|(c, w)| contains(c, w)),
        (c, w) => c == w,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
    }
}

/// Merge-patches the status subresource with `wanted` unless it is already there.
pub async fn patch_if_changed<K>(api: &Api<K>, obj: &K, wanted: Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
{
    let current = serde_json::to_value(obj).map(|v| v["status"].clone()).unwrap_or(Value::Null);
    if !differs(&current, &wanted) {
        return Ok(());
    }
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": wanted}))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let existing = json!([{"type": "Available", "status": "True", "reason": "R", "message": "m",
                               "lastTransitionTime": "2020-01-01T00:00:00Z", "lastUpdateTime": "2020-01-01T00:00:00Z"}]);
        let same = conditions(&existing, &[Cond { kind: "Available", status: true, reason: "R", message: "m" }], true);
        assert_eq!(same[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert!(!differs(&json!({"conditions": existing.clone()}), &json!({"conditions": same})));
        let flipped = conditions(&existing, &[Cond { kind: "Available", status: false, reason: "R", message: "m" }], false);
        assert!(flipped[0].get("lastUpdateTime").is_none());
        assert_ne!(flipped[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn differs_compares_only_wanted_fields() {
        let current = json!({"replicas": 2, "readyReplicas": 2, "other": 1});
        assert!(!differs(&current, &json!({"replicas": 2, "readyReplicas": 2})));
        assert!(differs(&current, &json!({"replicas": 3})));
        assert!(!differs(&json!({}), &json!({"replicas": 0, "conditions": []})));
        assert!(differs(&json!({"replicas": 1}), &json!({"replicas": 0})));
    }
}

//! Strategic merge patches for built-in types, without their Go schemas: maps merge, `null`
//! deletes, and lists of objects whose Kubernetes merge key is known here merge by that key
//! (`$patch: delete` removes an element); other lists are replaced, as in a merge patch.
//! Custom resources have no strategic merge (Kubernetes refuses it too): use mergePatches.

use serde_json::{Map, Value};

/// The merge key of a list field, by field name. The same names mean the same types across
/// the built-in API (containers, volumes, env, ports), which is what makes this table enough.
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "resourceClaims" | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        // Container ports merge by containerPort, service ports by port.
        "ports" if elements.iter().any(|p| p.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

pub(super) fn apply(target: &mut Value, patch: &Value) -> Result<(), String> {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
        return Err("a strategic merge patch must be a map".into());
    };
    merge_maps(target, patch)
}

fn merge_maps(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return Ok(());
    }
    for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        match (target.get_mut(key), value) {
            (_, Value::Null) => {
                target.remove(key);
            }
            (Some(Value::Object(existing)), Value::Object(p)) => merge_maps(existing, p)?,
            (Some(Value::Array(existing)), Value::Array(p)) => match merge_key(key, existing) {
                Some(merge_key) => merge_lists(existing, p, merge_key)?,
                None => *existing = p.clone(),
            },
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn merge_lists(target: &mut Vec<Value>, patch: &[Value], key: &str) -> Result<(), String> {
    for element in patch {
        let Some(id) = element.get(key) else {
            return Err(format!("a list element has no merge key {key:?}: {element}"));
        };
        let position = target.iter().position(|t| t.get(key) == Some(id));
        let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_maps(
                target[i].as_object_mut().ok_or("a list element is not a map")?,
                element.as_object().ok_or("a list element is not a map")?,
            )?,
            (None, false) => target
                .push(Value::Object(without_directives(element.as_object().ok_or("a list element is not a map")?))),
        }
    }
    Ok(())
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_other_lists_are_replaced() {
        let mut pod = json!({"spec": {
            "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "name": "http"}]},
                           {"name": "sidecar", "image": "proxy:1"}],
            "tolerations": [{"key": "a"}],
        }});
        let patch = json!({"spec": {
            "containers": [{"name": "app", "image": "app:2", "ports": [{"containerPort": 80, "name": "web"}]},
                           {"name": "sidecar", "$patch": "delete"},
                           {"name": "new", "image": "new:1"}],
            "tolerations": [{"key": "b"}],
        }});
        apply(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["containers"],
            json!([
                {"name": "app", "image": "app:2", "ports": [{"containerPort": 80, "name": "web"}]},
                {"name": "new", "image": "new:1"},
            ])
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "b"}]));
    }

    #[test]
    fn null_deletes_and_replace_directive_replaces() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"selector": {"x": "1", "y": "2"}}});
        apply(
            &mut obj,
            &json!({"metadata": {"labels": {"a": null}}, "spec": {"selector": {"$patch": "replace", "z": "3"}}}),
        )
        .unwrap();
        assert_eq!(obj, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"selector": {"z": "3"}}}));
    }

    #[test]
    fn elements_without_their_merge_key_are_an_error() {
        let mut obj = json!({"spec": {"volumes": [{"name": "a"}]}});
        let err = apply(&mut obj, &json!({"spec": {"volumes": [{"emptyDir": {}}]}})).unwrap_err();
        assert!(err.contains("merge key \"name\""), "{err}");
    }
}

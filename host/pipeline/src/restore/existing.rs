//! What to do with an object the restore finds already in the cluster. Restores never delete:
//! with policy `none` a differing object is left alone with a warning, with `update` it is
//! patched toward the backup.
//!
//! The live object has what the cluster populated (defaults, assigned IPs and ports, status,
//! a node name), none of which the restored object carries. So "differs" means: some field
//! the restored object sets is missing or different in the live one. Fields only the live
//! object has are not differences, and the patch never removes them.

use serde_json::{Map, Value};
use stowage_api::labels::{BACKUP_NAME, RESTORE_NAME};
use stowage_api::restore::ExistingResourcePolicy;

use crate::item::Item;

#[derive(Clone, Debug, PartialEq)]
pub enum ExistingAction {
    /// The live object already has everything the backup sets.
    Unchanged,
    /// Left alone (policy `none`); the warning says where it differs.
    Skip { warning: String },
    /// A JSON merge patch (`application/merge-patch+json`) bringing it in line (policy `update`).
    Patch { merge_patch: Value },
}

/// Decides for `desired` (the item as the restore would create it) against `live`.
pub fn compare(desired: &Item, live: &Value, policy: ExistingResourcePolicy) -> ExistingAction {
    if desired.is("", "serviceaccounts") {
        return merge_service_account(&desired.object, live);
    }
    let Some(path) = first_difference(&comparable(&desired.object), &comparable(live), String::new()) else {
        return ExistingAction::Unchanged;
    };
    match policy {
        ExistingResourcePolicy::None => ExistingAction::Skip {
            warning: format!(
                "{desired} already exists and differs from the backup (first at {path}); it was left as it is; restore with existingResourcePolicy: update to patch it"
            ),
        },
        ExistingResourcePolicy::Update => {
            ExistingAction::Patch { merge_patch: merge_patch(&desired.object, live).unwrap_or(Value::Object(Map::new())) }
        }
    }
}

/// A ServiceAccount that exists already (a namespace's `default` one, which Kubernetes makes
/// with the namespace) is merged with the backed-up one whatever the policy, as Velero's
/// service-account action does: the labels, annotations, `secrets` and `imagePullSecrets` the
/// backup has and the live one lacks are added; nothing is removed or replaced, and that is no
/// difference worth a warning.
fn merge_service_account(desired: &Value, live: &Value) -> ExistingAction {
    let desired = comparable(desired);
    let mut patch = Map::new();
    let mut metadata = Map::new();
    for field in ["labels", "annotations"] {
        let missing: Map<String, Value> = desired
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| live.pointer(&format!("/metadata/{field}")).and_then(|m| m.get(k.as_str())).is_none())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !missing.is_empty() {
            metadata.insert(field.into(), Value::Object(missing));
        }
    }
    if !metadata.is_empty() {
        patch.insert("metadata".into(), Value::Object(metadata));
    }
    for list in ["secrets", "imagePullSecrets"] {
        let have: Vec<Value> = live.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
        let add: Vec<Value> =
            desired.get(list).and_then(Value::as_array).into_iter().flatten().filter(|e| !have.contains(e)).cloned().collect();
        if !add.is_empty() {
            // A merge patch replaces a list whole: the live entries go first, kept.
            patch.insert(list.into(), Value::Array(have.into_iter().chain(add).collect()));
        }
    }
    match patch.is_empty() {
        true => ExistingAction::Unchanged,
        false => ExistingAction::Patch { merge_patch: Value::Object(patch) },
    }
}

/// The object without what says which run restored it, so an object restored by an
/// earlier restore of the same backup compares equal.
fn comparable(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(labels) = copy.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        for key in BACKUP_NAME.spellings().chain(RESTORE_NAME.spellings()) {
            labels.remove(key);
        }
    }
    if let Some(map) = copy.as_object_mut() {
        map.remove("status");
    }
    copy
}

/// The JSON pointer of the first field `desired` sets that `live` lacks or has otherwise.
/// Lists must have the same length and each element must be contained in its counterpart.
fn first_difference(desired: &Value, live: &Value, path: String) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(key, value)| match l.get(key) {
            Some(live_value) => first_difference(value, live_value, format!("{path}/{}", escape(key))),
            // An empty map (labels that held only restore labels) is no more than a missing one.
            None if value.as_object().is_some_and(Map::is_empty) => None,
            None => Some(format!("{path}/{}", escape(key))),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            d.iter().zip(l).enumerate().find_map(|(i, (dv, lv))| first_difference(dv, lv, format!("{path}/{i}")))
        }
        (d, l) if d == l => None,
        _ => Some(if path.is_empty() { "/".into() } else { path }),
    }
}

/// A merge patch setting every field of `desired` that differs in `live`; `None` if there is none.
fn merge_patch(desired: &Value, live: &Value) -> Option<Value> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            let patch: Map<String, Value> = d
                .iter()
                .filter_map(|(key, value)| match l.get(key) {
                    Some(live_value) => merge_patch(value, live_value).map(|p| (key.clone(), p)),
                    None => Some((key.clone(), value.clone())),
                })
                .collect();
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        // Merge patches replace lists whole.
        _ => first_difference(desired, live, String::new()).map(|_| desired.clone()),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ItemBuilder;
    use serde_json::json;

    fn desired() -> Item {
        ItemBuilder::deployment("shop", "web")
            .label("app", "web")
            .label("stowage.io/restore-name", "r2")
            .set("/spec/replicas", json!(3))
            .set("/spec/template/spec/containers", json!([{"name": "app", "image": "app:2"}]))
            .build()
    }

    /// The same deployment as the cluster returns it: defaults, status, server metadata.
    fn live() -> Value {
        ItemBuilder::deployment("shop", "web")
            .as_listed()
            .label("app", "web")
            .label("stowage.io/restore-name", "r1")
            .set("/spec/replicas", json!(3))
            .set("/spec/strategy", json!({"type": "RollingUpdate"}))
            .set(
                "/spec/template/spec/containers",
                json!([{"name": "app", "image": "app:2", "imagePullPolicy": "IfNotPresent"}]),
            )
            .object()
    }

    #[test]
    fn an_existing_service_account_is_merged_with_the_backed_up_one_whatever_the_policy() {
        let info = crate::item::ApiResourceInfo::new("", "v1", "serviceaccounts", "ServiceAccount", true);
        let sa = |object: Value| Item::new(object, &info).unwrap();
        // What Kubernetes made with the namespace, and the backup's, restore labels and all.
        let live = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "shop", "uid": "u"}});
        let backed_up = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "shop", "labels": {"stowage.io/backup-name": "b", "stowage.io/restore-name": "r"}}});
        for policy in [ExistingResourcePolicy::None, ExistingResourcePolicy::Update] {
            assert_eq!(compare(&sa(backed_up.clone()), &live, policy), ExistingAction::Unchanged, "a clean restore says nothing");
        }
        let mut pulls = backed_up.clone();
        pulls["imagePullSecrets"] = json!([{"name": "registry"}, {"name": "mirror"}]);
        pulls["metadata"]["annotations"] = json!({"team": "shop"});
        let mut live_pulls = live.clone();
        live_pulls["imagePullSecrets"] = json!([{"name": "mirror"}]);
        live_pulls["metadata"]["annotations"] = json!({"team": "ops"});
        let ExistingAction::Patch { merge_patch } = compare(&sa(pulls), &live_pulls, ExistingResourcePolicy::None) else {
            panic!("a merge")
        };
        assert_eq!(merge_patch, json!({"imagePullSecrets": [{"name": "mirror"}, {"name": "registry"}]}), "added, nothing replaced");
    }

    #[test]
    fn server_populated_fields_and_restore_labels_are_not_differences() {
        assert_eq!(compare(&desired(), &live(), ExistingResourcePolicy::None), ExistingAction::Unchanged);
        assert_eq!(compare(&desired(), &live(), ExistingResourcePolicy::Update), ExistingAction::Unchanged);
    }

    #[test]
    fn policy_none_skips_with_a_warning_naming_the_difference() {
        let mut scaled = live();
        scaled["spec"]["replicas"] = json!(1);
        let ExistingAction::Skip { warning } = compare(&desired(), &scaled, ExistingResourcePolicy::None) else {
            panic!("expected a skip");
        };
        assert_eq!(
            warning,
            "deployments.apps shop/web already exists and differs from the backup (first at /spec/replicas); it was left as it is; restore with existingResourcePolicy: update to patch it"
        );
    }

    #[test]
    fn a_missing_label_and_a_changed_list_are_differences() {
        let mut unlabelled = live();
        unlabelled["metadata"]["labels"].as_object_mut().unwrap().remove("app");
        let action = compare(&desired(), &unlabelled, ExistingResourcePolicy::None);
        assert!(matches!(action, ExistingAction::Skip { warning } if warning.contains("/metadata/labels/app")));
        let mut old_image = live();
        old_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:1");
        let action = compare(&desired(), &old_image, ExistingResourcePolicy::None);
        assert!(
            matches!(action, ExistingAction::Skip { warning } if warning.contains("/spec/template/spec/containers/0/image"))
        );
    }

    #[test]
    fn policy_update_patches_only_what_differs_and_removes_nothing() {
        let mut drifted = live();
        drifted["spec"]["replicas"] = json!(1);
        drifted["metadata"]["labels"]["extra"] = json!("kept");
        let ExistingAction::Patch { merge_patch } = compare(&desired(), &drifted, ExistingResourcePolicy::Update)
        else {
            panic!("expected a patch");
        };
        assert_eq!(
            merge_patch,
            json!({"metadata": {"labels": {"stowage.io/restore-name": "r2"}}, "spec": {"replicas": 3}})
        );
        let mut patched = drifted.clone();
        json_patch::merge(&mut patched, &merge_patch);
        assert_eq!(patched["metadata"]["labels"]["extra"], "kept");
        assert_eq!(patched["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(compare(&desired(), &patched, ExistingResourcePolicy::Update), ExistingAction::Unchanged);
    }
}

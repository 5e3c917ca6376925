//! Restore item action: maps storage classes on restore, from its parameters
//! (`old-class: new-class`). Changes `spec.storageClassName` (and the legacy
//! `volume.beta.kubernetes.io/storage-class` annotation) of PersistentVolumeClaims and
//! PersistentVolumes, and the claim templates of StatefulSets.

wit_bindgen::generate!({ path: "../../wit", world: "restore-item-action" });

use exports::stowage::extension::restore_item_action_handler::{Guest, RestoreActionOutput};
use serde_json::Value;
use stowage::extension::log::{log, Level};
use serde_json::json;
use stowage::extension::types::{Item, ObjectChange, OperationContext, ResourceSelector};

const LEGACY_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

struct ChangeStorageClass;

impl Guest for ChangeStorageClass {
    fn applies_to() -> ResourceSelector {
        ResourceSelector {
            included_namespaces: vec![],
            excluded_namespaces: vec![],
            included_resources: vec![
                "persistentvolumeclaims".into(),
                "persistentvolumes".into(),
                "statefulsets.apps".into(),
            ],
            excluded_resources: vec![],
            label_selector: None,
        }
    }

    /// Only the fields it may change cross into the component.
    fn object_fields(_parameters: Vec<(String, String)>) -> Option<Vec<String>> {
        Some(vec![
            "/spec/storageClassName".into(),
            "/metadata/annotations".into(),
            "/spec/volumeClaimTemplates".into(),
        ])
    }

    fn execute(
        context: OperationContext,
        item: Item,
        _backed_up: Item,
    ) -> Result<RestoreActionOutput, String> {
        let mut object: Value = serde_json::from_str(&item.object)
            .map_err(|e| format!("{} {}: object is not JSON: {e}", item.kind, item.name))?;
        let map = |class: &str| {
            context.parameters.iter().find(|(from, _)| from == class).map(|(_, to)| to.clone())
        };
        // Only what changed goes back, as a merge patch.
        let mut patch = json!({});
        let mut changed = Vec::new();
        match item.kind.as_str() {
            "PersistentVolumeClaim" | "PersistentVolume" => {
                changed.extend(remap_object(&mut object, &map, Some(&mut patch)));
            }
            "StatefulSet" => {
                if let Some(templates) = object
                    .pointer_mut("/spec/volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for template in templates.iter_mut() {
                        changed.extend(remap_object(template, &map, None));
                    }
                    if !changed.is_empty() {
                        // A merge patch replaces arrays whole.
                        patch = json!({"spec": {"volumeClaimTemplates": templates}});
                    }
                }
            }
            _ => {}
        }
        if changed.is_empty() {
            return Ok(RestoreActionOutput { change: ObjectChange::Unchanged, additional_items: vec![], skip: false });
        }
        let message = format!("{} {}/{}: {}", item.kind, item.namespace, item.name, changed.join(", "));
        // Logging is optional: without the capability the change is still made.
        let _ = log(Level::Info, &message);
        Ok(RestoreActionOutput { change: ObjectChange::MergePatch(patch.to_string()), additional_items: vec![], skip: false })
    }
}

/// Maps the class of one claim-like object (a PVC, a PV or a claim template), recording each
/// change in `patch` when given; returns what changed.
fn remap_object(object: &mut Value, map: &impl Fn(&str) -> Option<String>, mut patch: Option<&mut Value>) -> Vec<String> {
    let mut changed = Vec::new();
    if let Some(class) = object.pointer_mut("/spec/storageClassName") {
        if let Some(new) = class.as_str().and_then(map) {
            changed.push(format!("storageClassName {} -> {new}", class.as_str().unwrap_or_default()));
            if let Some(patch) = patch.as_deref_mut() {
                patch["spec"]["storageClassName"] = Value::String(new.clone());
            }
            *class = Value::String(new);
        }
    }
    if let Some(class) = object.pointer_mut("/metadata/annotations").and_then(|a| a.get_mut(LEGACY_ANNOTATION)) {
        if let Some(new) = class.as_str().and_then(map) {
            changed.push(format!("{LEGACY_ANNOTATION} {} -> {new}", class.as_str().unwrap_or_default()));
            if let Some(patch) = patch.as_deref_mut() {
                patch["metadata"]["annotations"][LEGACY_ANNOTATION] = Value::String(new.clone());
            }
            *class = Value::String(new);
        }
    }
    changed
}

export!(ChangeStorageClass);

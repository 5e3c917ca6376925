//! Restore item action: maps storage classes on restore, from its parameters
//! (`old-class: new-class`). Changes `spec.storageClassName` (and the legacy
//! `volume.beta.kubernetes.io/storage-class` annotation) of PersistentVolumeClaims and
//! PersistentVolumes, and the claim templates of StatefulSets.

wit_bindgen::generate!({ path: "../../wit", world: "restore-item-action" });

use exports::stowage::extension::restore_item_action_handler::{Guest, RestoreActionOutput};
use serde_json::Value;
use stowage::extension::log::{log, Level};
use stowage::extension::types::{Item, OperationContext, ResourceSelector};

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

    fn execute(
        context: OperationContext,
        mut item: Item,
        _backed_up: Item,
    ) -> Result<RestoreActionOutput, String> {
        let mut object: Value = serde_json::from_str(&item.object)
            .map_err(|e| format!("{} {}: object is not JSON: {e}", item.kind, item.name))?;
        let map = |class: &str| {
            context.parameters.iter().find(|(from, _)| from == class).map(|(_, to)| to.clone())
        };
        let mut changed = Vec::new();
        match item.kind.as_str() {
            "PersistentVolumeClaim" | "PersistentVolume" => {
                changed.extend(remap_object(&mut object, &map));
            }
            "StatefulSet" => {
                if let Some(templates) = object
                    .pointer_mut("/spec/volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for template in templates {
                        changed.extend(remap_object(template, &map));
                    }
                }
            }
            _ => {}
        }
        if !changed.is_empty() {
            let message = format!("{} {}/{}: {}", item.kind, item.namespace, item.name, changed.join(", "));
            // Logging is optional: without the capability the change is still made.
            let _ = log(Level::Info, &message);
            item.object = serde_json::to_string(&object).map_err(|e| e.to_string())?;
        }
        Ok(RestoreActionOutput { item, additional_items: vec![], skip: false })
    }
}

/// Maps the class of one claim-like object (a PVC, a PV or a claim template); returns what
/// changed.
fn remap_object(object: &mut Value, map: &impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut changed = Vec::new();
    if let Some(class) = object.pointer_mut("/spec/storageClassName") {
        if let Some(new) = class.as_str().and_then(map) {
            changed.push(format!("storageClassName {} -> {new}", class.as_str().unwrap_or_default()));
            *class = Value::String(new);
        }
    }
    if let Some(class) = object.pointer_mut("/metadata/annotations").and_then(|a| a.get_mut(LEGACY_ANNOTATION)) {
        if let Some(new) = class.as_str().and_then(map) {
            changed.push(format!("{LEGACY_ANNOTATION} {} -> {new}", class.as_str().unwrap_or_default()));
            *class = Value::String(new);
        }
    }
    changed
}

export!(ChangeStorageClass);

//! Built-in restore item actions: each a small pure function that makes a backed-up object
//! creatable in the target cluster (Velero's restore item actions plus its metadata reset).
//! Kind-specific actions run first, because they read metadata the reset removes (a service's
//! managed fields tell which node ports the user chose).

mod service;
mod volumes;
mod workloads;

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use stowage_api::labels::{BACKUP_NAME, RESTORE_NAME};

use super::plan::NamespaceMapping;
use crate::item::Item;

pub use volumes::{decide_volume, VolumeDecision};

/// What the transforms need from the plan; see [`super::plan::RestorePlan::transform_context`].
#[derive(Clone, Copy, Debug)]
pub struct TransformContext<'a> {
    pub backup_name: &'a str,
    pub restore_name: &'a str,
    pub namespace_mapping: &'a NamespaceMapping,
    pub preserve_node_ports: bool,
    /// PersistentVolumes this restore creates: claims stay bound only to those.
    pub restored_volumes: &'a BTreeSet<String>,
}

/// A transformed item and what is worth telling the user about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transformed {
    pub item: Item,
    pub warnings: Vec<String>,
}

/// Applies every built-in restore action that concerns the item.
pub fn transform(mut item: Item, ctx: &TransformContext<'_>) -> Transformed {
    let mut warnings = Vec::new();
    let object = &mut item.object;
    match (item.group.as_str(), item.resource.as_str()) {
        ("", "services") => {
            service::clear_cluster_ips(object);
            if !ctx.preserve_node_ports {
                if let Err(why) = service::drop_assigned_node_ports(object) {
                    warnings.push(format!("services {}/{}: {why}", item.namespace.as_deref().unwrap_or(""), item.name));
                }
            }
        }
        ("", "pods") => {
            workloads::drop_node_binding(object);
            // A pod backed up after an earlier restore still has that restore's helper, which
            // would wait forever for markers nobody writes; the helper is added anew if needed.
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                crate::restore::helper::strip(spec);
            }
        }
        ("batch", "jobs") => workloads::drop_generated_job_selector(object),
        ("", "persistentvolumeclaims") => {
            volumes::drop_claim_binding_annotations(object);
            volumes::keep_volume_name_if_restored(object, ctx.restored_volumes);
        }
        ("", "persistentvolumes") => volumes::reset_claim_ref(object, ctx.namespace_mapping),
        _ => {}
    }
    reset_metadata(object);
    drop_status(object);
    map_namespace(&mut item, ctx.namespace_mapping);
    add_restore_labels(&mut item.object, ctx.backup_name, ctx.restore_name);
    Transformed { item, warnings }
}

/// Metadata the API server owns. `ownerReferences` go too, as in Velero: they hold the old
/// owners' UIDs, and the garbage collector deletes a restored object whose owners it cannot
/// find; controllers re-adopt their objects by label selector.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "generation",
    "generateName",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

fn reset_metadata(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|key, _| !SERVER_METADATA.contains(&key.as_str()));
    }
}

/// Status is observed state: the target cluster's controllers write it anew.
fn drop_status(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
}

fn map_namespace(item: &mut Item, mapping: &NamespaceMapping) {
    if let Some(ns) = item.namespace.clone() {
        item.set_namespace(mapping.target(&ns));
    } else if item.is("", "namespaces") {
        let target = mapping.target(&item.name).to_string();
        if let Some(meta) = item.object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), Value::String(target.clone()));
        }
        item.name = target;
    }
}

fn add_restore_labels(object: &mut Value, backup: &str, restore: &str) {
    let Some(map) = object.as_object_mut() else { return };
    let labels = child_object(child_object(map, "metadata"), "labels");
    labels.insert(BACKUP_NAME.name.into(), Value::String(backup.to_string()));
    labels.insert(RESTORE_NAME.name.into(), Value::String(restore.to_string()));
}

/// The map under `key`, created (or replacing a non-map) if need be.
fn child_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut().expect("made a map above")
}

/// Removes the entry at `path` (object keys), if there.
fn remove_at(value: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut here = value;
    for key in parents {
        here = here.get_mut(*key)?;
    }
    here.as_object_mut()?.remove(*last)
}

#[cfg(test)]
mod tests;

//! Restore item actions configured by ConfigMap, the way Velero users configure them: one
//! labelled `velero.io/change-storage-class: RestoreItemAction` (or `stowage.io/...`) maps
//! storage classes (`old: new`), one labelled `velero.io/change-image-name: RestoreItemAction`
//! rewrites container images (each value `"old,new"`: the first entry, in key order, whose
//! `old` is part of an image replaces it with `new`). They are built in: no extension needs to
//! be installed for them to take effect.

use std::collections::BTreeMap;

use serde_json::Value;
use thiserror::Error;

use crate::item::Item;

/// The annotation older clusters read a claim's class from.
const LEGACY_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Where a pod template sits in each workload kind whose images are rewritten.
const POD_SPECS: &[(&str, &str, &str)] = &[
    ("", "pods", "/spec"),
    ("", "replicationcontrollers", "/spec/template/spec"),
    ("apps", "deployments", "/spec/template/spec"),
    ("apps", "statefulsets", "/spec/template/spec"),
    ("apps", "daemonsets", "/spec/template/spec"),
    ("apps", "replicasets", "/spec/template/spec"),
    ("batch", "jobs", "/spec/template/spec"),
    ("batch", "cronjobs", "/spec/jobTemplate/spec/template/spec"),
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfiguredActionError {
    #[error(
        "ConfigMap {config_map:?} (change-image-name): entry {key:?} is {value:?}; write \"<old part>,<new part>\", \
         e.g. \"registry.old:5000,registry.new:5000\""
    )]
    ImageEntry { config_map: String, key: String, value: String },
    #[error("ConfigMap {config_map:?} (change-storage-class): entry {key:?} maps to an empty class; write `<old class>: <new class>`")]
    EmptyClass { config_map: String, key: String },
}

/// One image rewrite: the ConfigMap and key it came from, and the parts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ImageRule {
    source: String,
    old: String,
    new: String,
}

/// The storage-class and image-name mappings a restore applies, merged from every
/// ConfigMap carrying the labels (ConfigMaps in name order, later ones winning a class).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfiguredActions {
    storage_classes: BTreeMap<String, String>,
    images: Vec<ImageRule>,
}

impl ConfiguredActions {
    pub fn is_empty(&self) -> bool {
        self.storage_classes.is_empty() && self.images.is_empty()
    }

    /// Adds a change-storage-class ConfigMap's data (`old: new`).
    pub fn add_storage_classes(&mut self, config_map: &str, data: &BTreeMap<String, String>) -> Result<(), ConfiguredActionError> {
        let mut classes = Vec::new();
        for (old, new) in data {
            let new = new.trim();
            if new.is_empty() {
                return Err(ConfiguredActionError::EmptyClass { config_map: config_map.into(), key: old.clone() });
            }
            classes.push((old.trim().to_string(), new.to_string()));
        }
        self.storage_classes.extend(classes);
        Ok(())
    }

    /// Adds a change-image-name ConfigMap's data (values `"old,new"`).
    pub fn add_image_names(&mut self, config_map: &str, data: &BTreeMap<String, String>) -> Result<(), ConfiguredActionError> {
        let mut rules = Vec::new();
        for (key, value) in data {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            match parts.as_slice() {
                [old, new] if !old.is_empty() => rules.push(ImageRule {
                    source: format!("{config_map}/{key}"),
                    old: old.to_string(),
                    new: new.to_string(),
                }),
                _ => {
                    return Err(ConfiguredActionError::ImageEntry {
                        config_map: config_map.into(),
                        key: key.clone(),
                        value: value.clone(),
                    })
                }
            }
        }
        self.images.extend(rules);
        Ok(())
    }

    /// The classes objects are mapped to (the controller checks they exist).
    pub fn target_classes(&self) -> impl Iterator<Item = &str> {
        self.storage_classes.values().map(String::as_str)
    }

    /// Applies the mappings to one item; returns a line per change, for the restore log.
    pub fn apply(&self, item: &mut Item) -> Vec<String> {
        let mut changes = Vec::new();
        let what = item.item_ref().to_string();
        match (item.group.as_str(), item.resource.as_str()) {
            ("", "persistentvolumeclaims") | ("", "persistentvolumes") => {
                changes.extend(self.map_class(&mut item.object));
            }
            ("apps", "statefulsets") => {
                if let Some(templates) = item.object.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
                    for template in templates {
                        changes.extend(self.map_class(template));
                    }
                }
            }
            _ => {}
        }
        if let Some((_, _, path)) = POD_SPECS.iter().find(|(g, r, _)| item.is(g, r)) {
            if let Some(spec) = item.object.pointer_mut(path) {
                changes.extend(self.map_images(spec));
            }
        }
        changes.into_iter().map(|c| format!("{what}: {c}")).collect()
    }

    fn map_class(&self, object: &mut Value) -> Vec<String> {
        let mut changes = Vec::new();
        if let Some(class) = object.pointer_mut("/spec/storageClassName") {
            if let Some(new) = class.as_str().and_then(|c| self.storage_classes.get(c)) {
                changes.push(format!("storageClassName {} -> {new} (change-storage-class)", class.as_str().unwrap_or_default()));
                *class = Value::String(new.clone());
            }
        }
        let legacy = object.pointer_mut("/metadata/annotations").and_then(|a| a.get_mut(LEGACY_CLASS_ANNOTATION));
        if let Some(class) = legacy {
            if let Some(new) = class.as_str().and_then(|c| self.storage_classes.get(c)) {
                changes.push(format!("{LEGACY_CLASS_ANNOTATION} {} -> {new} (change-storage-class)", class.as_str().unwrap_or_default()));
                *class = Value::String(new.clone());
            }
        }
        changes
    }

    fn map_images(&self, pod_spec: &mut Value) -> Vec<String> {
        let mut changes = Vec::new();
        if self.images.is_empty() {
            return changes;
        }
        for list in ["initContainers", "containers"] {
            let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
            for container in containers {
                let Some(image) = container.get_mut("image") else { continue };
                let Some(old) = image.as_str().map(str::to_string) else { continue };
                if let Some(rule) = self.images.iter().find(|r| old.contains(&r.old)) {
                    let new = old.replace(&rule.old, &rule.new);
                    changes.push(format!("image {old} -> {new} (change-image-name {})", rule.source));
                    *image = Value::String(new);
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ItemBuilder;
    use crate::item::ApiResourceInfo;
    use serde_json::json;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The entries of Velero's documentation example, verbatim.
    fn velero_image_cases() -> ConfiguredActions {
        let mut a = ConfiguredActions::default();
        a.add_image_names(
            "change-image-name-config",
            &data(&[
                ("case1", "1.1.1.1:5000,2.2.2.2:3000"),
                ("case2", "5000,3000"),
                ("case3", "abc:test,edf:test"),
                ("case5", "test,latest"),
                ("case4", "1.1.1.1:5000/abc:test,2.2.2.2:3000/edf:test"),
            ]),
        )
        .unwrap();
        a
    }

    #[test]
    fn images_of_every_workload_kind_are_rewritten_by_the_first_matching_entry() {
        let a = velero_image_cases();
        let mut deploy = ItemBuilder::deployment("shop", "web")
            .set("/spec/template/spec", json!({
                "initContainers": [{"name": "init", "image": "busybox:test"}],
                "containers": [{"name": "app", "image": "1.1.1.1:5000/abc:test"}, {"name": "side", "image": "nginx:1.27"}]}))
            .build();
        let changes = a.apply(&mut deploy);
        // case1 comes first in key order and matches the registry part.
        assert_eq!(deploy.object.pointer("/spec/template/spec/containers/0/image").unwrap(), "2.2.2.2:3000/abc:test");
        assert_eq!(deploy.object.pointer("/spec/template/spec/containers/1/image").unwrap(), "nginx:1.27");
        assert_eq!(deploy.object.pointer("/spec/template/spec/initContainers/0/image").unwrap(), "busybox:latest");
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.iter().any(|c| c.contains("1.1.1.1:5000/abc:test -> 2.2.2.2:3000/abc:test") && c.contains("case1")), "{changes:?}");

        let cronjobs = ApiResourceInfo::new("batch", "v1", "cronjobs", "CronJob", true);
        let mut cron = ItemBuilder::new(cronjobs, Some("shop"), "nightly")
            .set("/spec/jobTemplate/spec/template/spec/containers", json!([{"name": "c", "image": "tool:test"}]))
            .build();
        a.apply(&mut cron);
        assert_eq!(cron.object.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image").unwrap(), "tool:latest");

        let mut pod = ItemBuilder::pod("shop", "p").set("/spec/containers", json!([{"name": "c", "image": "x:5000"}])).build();
        a.apply(&mut pod);
        assert_eq!(pod.object.pointer("/spec/containers/0/image").unwrap(), "x:3000");

        // A ConfigMap holding an image is not a workload.
        let mut cm = ItemBuilder::config_map("shop", "c").set("/spec/containers", json!([{"name": "c", "image": "x:5000"}])).build();
        assert!(a.apply(&mut cm).is_empty());
    }

    #[test]
    fn storage_classes_of_claims_volumes_and_claim_templates_are_mapped() {
        let mut a = ConfiguredActions::default();
        a.add_storage_classes("change-storage-class-config", &data(&[("standard", "fast-ssd")])).unwrap();
        let mut pvc = ItemBuilder::pvc("shop", "data")
            .annotate(LEGACY_CLASS_ANNOTATION, "standard")
            .set("/spec/storageClassName", json!("standard"))
            .build();
        assert_eq!(a.apply(&mut pvc).len(), 2);
        assert_eq!(pvc.object["spec"]["storageClassName"], "fast-ssd");
        assert_eq!(pvc.object["metadata"]["annotations"][LEGACY_CLASS_ANNOTATION], "fast-ssd");

        let mut pv = ItemBuilder::pv("pv-1").set("/spec/storageClassName", json!("slow")).build();
        assert!(a.apply(&mut pv).is_empty(), "a class the map does not name stays");
        assert_eq!(pv.object["spec"]["storageClassName"], "slow");

        let statefulsets = ApiResourceInfo::new("apps", "v1", "statefulsets", "StatefulSet", true);
        let mut sts = ItemBuilder::new(statefulsets, Some("shop"), "db")
            .set("/spec/volumeClaimTemplates", json!([{"metadata": {"name": "d"}, "spec": {"storageClassName": "standard"}}]))
            .build();
        a.apply(&mut sts);
        assert_eq!(sts.object.pointer("/spec/volumeClaimTemplates/0/spec/storageClassName").unwrap(), "fast-ssd");
    }

    #[test]
    fn malformed_entries_are_named_with_what_to_write() {
        let mut a = ConfiguredActions::default();
        let e = a.add_image_names("imgs", &data(&[("bad", "no-comma")])).unwrap_err();
        assert!(e.to_string().contains("\"bad\"") && e.to_string().contains("<old part>,<new part>"), "{e}");
        assert!(a.add_image_names("imgs", &data(&[("bad", "a,b,c")])).is_err());
        assert!(a.add_image_names("imgs", &data(&[("bad", ",new")])).is_err());
        assert!(a.add_storage_classes("classes", &data(&[("standard", " ")])).is_err());
        assert!(a.add_image_names("imgs", &data(&[("a", "x,y"), ("b", "oops")])).is_err(), "one bad entry refuses the ConfigMap");
        assert!(a.is_empty(), "nothing half-added");
    }
}

//! Which archived objects a restore recreates. Namespaced ones by the filters. Cluster-scoped
//! ones by `includeClusterResources`, as in backups: with `true` (or every namespace selected)
//! all that the filters select; with `false` none; unset with some namespaces selected, only
//! those the restored objects need — a claim's volume, a custom resource's definition.

use std::collections::BTreeSet;

use super::plan::RestorePlan;
use crate::archive::{ArchiveError, ExtractedArchive};
use crate::item::{is_built_in_group, Item, ItemRef};
use crate::related::related;

pub struct RestoreScope<'a> {
    plan: &'a RestorePlan,
    /// Cluster-scoped objects named by namespaced objects the restore recreates.
    needed: BTreeSet<ItemRef>,
}

impl<'a> RestoreScope<'a> {
    /// Reads the archive's claims and custom resources that the plan restores for the
    /// cluster-scoped objects they need. Unreadable items are skipped here; the restore
    /// reports them when it gets to them.
    pub fn new(plan: &'a RestorePlan, archive: &ExtractedArchive) -> Result<RestoreScope<'a>, ArchiveError> {
        let mut needed = BTreeSet::new();
        for resource in archive.resources()? {
            let gr = &resource.group_resource;
            let claims = gr.is("", "persistentvolumeclaims");
            if !claims && is_built_in_group(&gr.group) {
                continue;
            }
            let namespaced = archive.items(&resource)?.into_iter().filter(|l| l.item_ref.namespace.is_some());
            for location in namespaced {
                let Ok(item) = archive.read(&location) else { continue };
                if plan.includes_item(&item).is_err() {
                    continue;
                }
                needed.extend(related(&item).into_iter().map(|r| r.target).filter(|t| t.namespace.is_none()));
                if !claims {
                    // Every custom resource of a type names the same definition.
                    break;
                }
            }
        }
        Ok(RestoreScope { plan, needed })
    }

    /// Whether an archived item is restored.
    pub fn includes(&self, item: &Item) -> bool {
        if self.plan.includes_item(item).is_ok() {
            return true;
        }
        item.namespace.is_none()
            && self.needed.contains(&item.item_ref())
            && self.plan.includes_related(item).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{ArchiveReader, ArchiveWriter};
    use crate::builders::{discovery, ItemBuilder};
    use crate::item::ApiResourceInfo;
    use crate::restore::plan::{plan, RestoreOptions};
    use crate::selection::SelectionOptions;
    use serde_json::json;

    fn archive(items: &[Item]) -> ExtractedArchive {
        let mut writer = ArchiveWriter::new(Vec::new()).unwrap();
        for item in items {
            writer.add_item(item).unwrap();
        }
        let bytes = writer.finish().unwrap();
        ArchiveReader::new(bytes.as_slice()).unwrap().extract_to_temp().unwrap()
    }

    fn crd(name: &str) -> Item {
        let info =
            ApiResourceInfo::new("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false);
        ItemBuilder::new(info, None, name).build()
    }

    fn cluster_role(name: &str) -> Item {
        let info = ApiResourceInfo::new("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false);
        ItemBuilder::new(info, None, name).build()
    }

    fn items() -> Vec<Item> {
        vec![
            ItemBuilder::pvc("shop", "data").volume_name("pv-shop").label("app", "shop").build(),
            ItemBuilder::pvc("dev", "data").volume_name("pv-dev").build(),
            ItemBuilder::pv("pv-shop").claim_ref("shop", "data").build(),
            ItemBuilder::pv("pv-dev").claim_ref("dev", "data").build(),
            ItemBuilder::widget("shop", "w1").label("app", "shop").build(),
            crd("widgets.example.com"),
            crd("gadgets.example.com"),
            cluster_role("reader"),
            ItemBuilder::namespace("shop").build(),
            ItemBuilder::namespace("dev").build(),
        ]
    }

    /// What a restore with these filters recreates, as `resource name` strings.
    fn restored(selection: SelectionOptions) -> Vec<String> {
        let options = RestoreOptions { restore_name: "r".into(), backup_name: "b".into(), selection, ..Default::default() };
        let plan = plan(&options, &discovery()).unwrap();
        let all = items();
        let extracted = archive(&all);
        let scope = RestoreScope::new(&plan, &extracted).unwrap();
        all.iter().filter(|i| scope.includes(i)).map(|i| format!("{} {}", i.resource, i.name)).collect()
    }

    #[test]
    fn with_namespaces_selected_only_needed_cluster_objects_come_back() {
        let shop = || SelectionOptions { included_namespaces: vec!["shop".into()], ..Default::default() };
        assert_eq!(
            restored(shop()),
            vec![
                "persistentvolumeclaims data",
                "persistentvolumes pv-shop",
                "widgets w1",
                "customresourcedefinitions widgets.example.com",
                "namespaces shop"
            ]
        );
        // Claims and custom resources left out by a label selector need nothing.
        let labelled = SelectionOptions { label_selector: Some(json!({"matchLabels": {"app": "web"}})), ..shop() };
        assert_eq!(restored(labelled), Vec::<String>::new());
        let only_widgets =
            SelectionOptions { included_resources: vec!["widgets".into(), "customresourcedefinitions".into()], ..shop() };
        assert_eq!(restored(only_widgets), vec!["widgets w1", "customresourcedefinitions widgets.example.com"]);
    }

    #[test]
    fn cluster_resources_true_or_everything_takes_them_all_and_false_none() {
        let all = restored(SelectionOptions::default());
        assert_eq!(all.len(), items().len(), "{all:?}");
        let asked = restored(SelectionOptions {
            included_namespaces: vec!["shop".into()],
            include_cluster_resources: Some(true),
            ..Default::default()
        });
        assert!(asked.contains(&"clusterroles reader".to_string()) && asked.contains(&"persistentvolumes pv-dev".to_string()));
        let none = restored(SelectionOptions { include_cluster_resources: Some(false), ..Default::default() });
        let namespaced_or_namespace = |r: &String| {
            ["persistentvolumeclaims ", "widgets ", "namespaces "].iter().any(|prefix| r.starts_with(prefix))
        };
        assert!(none.iter().all(namespaced_or_namespace), "{none:?}");
    }
}

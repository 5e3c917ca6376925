//! A Restore resolved once into an immutable [`RestorePlan`]: the same filters as backups,
//! the namespace mapping checked against them, the order, and the resource modifiers parsed.

use std::collections::{BTreeMap, BTreeSet};

use stowage_api::restore::ExistingResourcePolicy;
use stowage_api::RestoreSpec;
use thiserror::Error;

use super::configured::ConfiguredActions;
use super::modifiers::{ModifierError, ResourceModifiers};
use super::order::Priorities;
use super::transform::TransformContext;
use crate::item::{ApiResourceInfo, Item};
use crate::selection::{Exclusion, ResourceSelection, SelectionError, SelectionOptions};

/// A restore as requested, with what the controller looked up for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestoreOptions {
    pub restore_name: String,
    /// The backup restored (a schedule's latest, resolved by the controller).
    pub backup_name: String,
    pub selection: SelectionOptions,
    /// Source namespace in the backup → namespace restored into.
    pub namespace_mapping: BTreeMap<String, String>,
    pub restore_pvs: bool,
    pub preserve_node_ports: bool,
    pub existing_resource_policy: ExistingResourcePolicy,
    pub priorities: Priorities,
    pub resource_modifiers: Option<ModifierSource>,
    /// Storage-class and image-name mappings from the labelled ConfigMaps.
    pub configured_actions: ConfiguredActions,
}

/// The ConfigMap named by `spec.resourceModifier`, as fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifierSource {
    pub config_map: String,
    pub data: BTreeMap<String, String>,
}

impl RestoreOptions {
    /// The options a Restore's spec gives; the controller adds the modifiers' ConfigMap and
    /// any server-wide priority override.
    pub fn from_spec(restore_name: &str, backup_name: &str, spec: &RestoreSpec) -> RestoreOptions {
        RestoreOptions {
            restore_name: restore_name.to_string(),
            backup_name: backup_name.to_string(),
            selection: SelectionOptions::from(spec),
            namespace_mapping: spec.namespace_mapping.clone(),
            restore_pvs: spec.restore_pvs.unwrap_or(true),
            preserve_node_ports: spec.preserve_node_ports.unwrap_or(false),
            existing_resource_policy: spec.existing_resource_policy.unwrap_or_default(),
            priorities: Priorities::default(),
            resource_modifiers: None,
            configured_actions: ConfiguredActions::default(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("namespaceMapping: {namespace:?} is not a valid namespace name ({reason}); use lowercase letters, digits and '-', at most 63")]
    InvalidMappedNamespace { namespace: String, reason: &'static str },
    #[error("namespaceMapping: {namespace:?} is mapped to itself; remove the entry")]
    MappedToItself { namespace: String },
    #[error(
        "namespaceMapping maps {namespace:?}, but the restore leaves it out ({why}); include it or remove the entry"
    )]
    MappedButExcluded { namespace: String, why: Exclusion },
    #[error(transparent)]
    Modifiers(#[from] ModifierError),
}

/// Source namespace → target namespace; unmapped namespaces keep their name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMapping(BTreeMap<String, String>);

impl NamespaceMapping {
    pub fn new(mapping: BTreeMap<String, String>) -> Result<NamespaceMapping, PlanError> {
        for (source, target) in &mapping {
            check_namespace_name(source)?;
            check_namespace_name(target)?;
            if source == target {
                return Err(PlanError::MappedToItself { namespace: source.clone() });
            }
        }
        Ok(NamespaceMapping(mapping))
    }

    pub fn target<'a>(&'a self, source: &'a str) -> &'a str {
        self.0.get(source).map(String::as_str).unwrap_or(source)
    }

    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The namespace of the backup whose objects go to `target`; None when `target` is a
    /// namespace of the backup that the mapping moves elsewhere (nothing is restored into it).
    pub fn source_of<'a>(&'a self, target: &'a str) -> Option<&'a str> {
        match self.0.iter().find(|(_, t)| t.as_str() == target) {
            Some((source, _)) => Some(source),
            None if self.0.contains_key(target) => None,
            None => Some(target),
        }
    }
}

fn check_namespace_name(name: &str) -> Result<(), PlanError> {
    let invalid = |reason| Err(PlanError::InvalidMappedNamespace { namespace: name.to_string(), reason });
    if name.is_empty() || name.len() > 63 {
        return invalid("must be 1 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return invalid("has a character other than a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid("starts or ends with '-'");
    }
    Ok(())
}

/// Everything a restore run needs to decide, resolved; read-only while the restore runs.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub restore_name: String,
    pub backup_name: String,
    pub selection: ResourceSelection,
    pub namespace_mapping: NamespaceMapping,
    pub restore_pvs: bool,
    pub preserve_node_ports: bool,
    pub existing_resource_policy: ExistingResourcePolicy,
    pub priorities: Priorities,
    pub modifiers: Option<ResourceModifiers>,
    pub configured_actions: ConfiguredActions,
}

/// Resolves the options against the resource types known to the cluster and the archive.
pub fn plan(options: &RestoreOptions, known: &[ApiResourceInfo]) -> Result<RestorePlan, PlanError> {
    let selection = ResourceSelection::resolve(&options.selection, known)?;
    let namespace_mapping = NamespaceMapping::new(options.namespace_mapping.clone())?;
    for source in namespace_mapping.sources() {
        if let Err(why) = selection.includes_namespace(source) {
            return Err(PlanError::MappedButExcluded { namespace: source.to_string(), why });
        }
    }
    let modifiers = match &options.resource_modifiers {
        Some(source) => Some(ResourceModifiers::from_config_map(&source.config_map, &source.data)?),
        None => None,
    };
    Ok(RestorePlan {
        restore_name: options.restore_name.clone(),
        backup_name: options.backup_name.clone(),
        selection,
        namespace_mapping,
        restore_pvs: options.restore_pvs,
        preserve_node_ports: options.preserve_node_ports,
        existing_resource_policy: options.existing_resource_policy,
        priorities: options.priorities.clone(),
        modifiers,
        configured_actions: options.configured_actions.clone(),
    })
}

impl RestorePlan {
    /// Whether an archived item is restored: the filters, then what a restore never
    /// recreates. Ask before transforming: completion is read from the backed-up status.
    pub fn includes_item(&self, item: &Item) -> Result<(), Exclusion> {
        self.selection.includes_item(item)?;
        check_not_completed(item)
    }

    /// Whether an item an extension added (its namespace already a target namespace) is
    /// restored: the rule of related objects (type, namespace, cluster-scope policy and the
    /// exclude label; not the label selectors), its namespace read back through the mapping,
    /// so an extension cannot reach past what the restore covers.
    pub fn includes_added(&self, item: &Item) -> Result<(), String> {
        let mut probe = item.clone();
        if let Some(target) = &item.namespace {
            match self.namespace_mapping.source_of(target) {
                Some(source) => probe.namespace = Some(source.to_string()),
                None => {
                    return Err(format!(
                        "namespace {target} is mapped to {}: this restore writes nothing into it",
                        self.namespace_mapping.target(target)
                    ))
                }
            }
        }
        self.includes_related(&probe).map_err(|e| e.to_string())
    }

    /// Like [`RestorePlan::includes_item`] for objects pulled in by restored ones.
    pub fn includes_related(&self, item: &Item) -> Result<(), Exclusion> {
        self.selection.includes_related(item)?;
        check_not_completed(item)
    }

    /// The context of [`super::transform::transform`]: `restored_volumes` are the names of
    /// the PersistentVolumes this restore creates (see [`super::transform::decide_volume`]).
    pub fn transform_context<'a>(&'a self, restored_volumes: &'a BTreeSet<String>) -> TransformContext<'a> {
        TransformContext {
            backup_name: &self.backup_name,
            restore_name: &self.restore_name,
            namespace_mapping: &self.namespace_mapping,
            preserve_node_ports: self.preserve_node_ports,
            restored_volumes,
        }
    }
}

/// Finished pods and jobs are not recreated (as in Velero): a finished pod would not run
/// again, and a job would run its work a second time.
fn check_not_completed(item: &Item) -> Result<(), Exclusion> {
    let status = |field: &str| item.object.get("status")?.get(field)?.as_str().map(str::to_string);
    let completed = match (item.group.as_str(), item.resource.as_str()) {
        ("", "pods") => status("phase").filter(|p| p == "Succeeded" || p == "Failed"),
        ("batch", "jobs") => status("completionTime").map(|t| format!("completed at {t}")),
        _ => None,
    };
    match completed {
        Some(state) => Err(Exclusion::Completed { item: item.to_string(), state }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::{discovery, ItemBuilder};
    use serde_json::json;

    fn options() -> RestoreOptions {
        RestoreOptions {
            restore_name: "r1".into(),
            backup_name: "nightly".into(),
            restore_pvs: true,
            ..Default::default()
        }
    }

    fn mapping(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_plan_carries_the_resolved_request() {
        let mut opts = options();
        opts.namespace_mapping = mapping(&[("shop", "shop-copy")]);
        opts.selection.included_namespaces = vec!["shop".into()];
        let plan = plan(&opts, &discovery()).unwrap();
        assert_eq!(plan.namespace_mapping.target("shop"), "shop-copy");
        assert_eq!(plan.namespace_mapping.target("other"), "other");
        assert!(plan.includes_item(&ItemBuilder::pod("shop", "web").build()).is_ok());
        assert!(plan.includes_item(&ItemBuilder::pod("dev", "web").build()).is_err());
    }

    #[test]
    fn added_items_stay_within_the_restores_scope_after_mapping() {
        let mut opts = options();
        opts.selection.included_namespaces = vec!["shop".into(), "shared".into()];
        opts.selection.excluded_resources = vec!["secrets".into()];
        opts.selection.include_cluster_resources = Some(false);
        opts.namespace_mapping = mapping(&[("shop", "shop-copy")]);
        let plan = plan(&opts, &discovery()).unwrap();
        let cm = |ns: &str| ItemBuilder::config_map(ns, "extra").build();
        assert!(plan.includes_added(&cm("shop-copy")).is_ok(), "the target of an included namespace");
        assert!(plan.includes_added(&cm("shared")).is_ok(), "an included namespace nothing maps");
        assert!(plan.includes_added(&cm("bank")).unwrap_err().contains("namespace \"bank\""));
        assert_eq!(plan.includes_added(&cm("shop")).unwrap_err(), "namespace shop is mapped to shop-copy: this restore writes nothing into it");
        let secret = ItemBuilder::new(crate::item::ApiResourceInfo::new("", "v1", "secrets", "Secret", true), Some("shop-copy"), "s").build();
        assert!(plan.includes_added(&secret).unwrap_err().contains("excludedResources"));
        let role = ItemBuilder::new(crate::item::ApiResourceInfo::new("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false), None, "admin").build();
        assert!(plan.includes_added(&role).is_err(), "cluster-scoped objects follow includeClusterResources");
    }

    #[test]
    fn mapping_must_agree_with_the_filters() {
        let mut opts = options();
        opts.selection.excluded_namespaces = vec!["shop".into()];
        opts.namespace_mapping = mapping(&[("shop", "shop-copy")]);
        let err = plan(&opts, &discovery()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespaceMapping maps \"shop\", but the restore leaves it out (namespace \"shop\" is excluded by excludedNamespaces); include it or remove the entry"
        );
    }

    #[test]
    fn mapping_names_are_checked() {
        let bad = |pairs: &[(&str, &str)]| NamespaceMapping::new(mapping(pairs)).unwrap_err();
        assert_eq!(bad(&[("a", "a")]), PlanError::MappedToItself { namespace: "a".into() });
        assert!(
            matches!(bad(&[("a", "Shop")]), PlanError::InvalidMappedNamespace { namespace, .. } if namespace == "Shop")
        );
        assert!(matches!(bad(&[("-a", "b")]), PlanError::InvalidMappedNamespace { .. }));
        assert!(matches!(bad(&[("a", &"x".repeat(64))]), PlanError::InvalidMappedNamespace { .. }));
    }

    #[test]
    fn selection_errors_surface_as_plan_errors() {
        let mut opts = options();
        opts.selection.included_resources = vec!["podz".into()];
        assert!(matches!(plan(&opts, &discovery()), Err(PlanError::Selection(SelectionError::UnknownResource { .. }))));
    }

    #[test]
    fn finished_pods_and_jobs_are_not_restored() {
        let plan = plan(&options(), &discovery()).unwrap();
        let done = ItemBuilder::pod("shop", "migrate").set("/status/phase", json!("Succeeded")).build();
        let running = ItemBuilder::pod("shop", "web").set("/status/phase", json!("Running")).build();
        let job = ItemBuilder::job("shop", "once").set("/status/completionTime", json!("2024-05-01T03:00:00Z")).build();
        let err = plan.includes_item(&done).unwrap_err();
        assert_eq!(err.to_string(), "pods shop/migrate has finished (Succeeded); it is not recreated");
        assert!(plan.includes_item(&running).is_ok());
        assert!(plan.includes_item(&job).is_err());
    }

    #[test]
    fn spec_defaults_follow_velero() {
        let spec: RestoreSpec = serde_json::from_value(json!({"backupName": "nightly"})).unwrap();
        let opts = RestoreOptions::from_spec("r1", "nightly", &spec);
        assert!(opts.restore_pvs);
        assert!(!opts.preserve_node_ports);
        assert_eq!(opts.existing_resource_policy, ExistingResourcePolicy::None);
        assert_eq!(opts.priorities, Priorities::default());
    }
}

//! Which objects a backup or restore takes: the request's filters resolved once, against
//! discovery, into an immutable [`ResourceSelection`] that the plan carries. Velero's semantics
//! (see its resource-filtering docs), with contradictions rejected up front instead of
//! silently selecting nothing or everything.

mod labels;
mod namespaces;
mod resources;

use serde_json::Value;
use stowage_api::labels::EXCLUDE_FROM_BACKUP;
use stowage_api::{BackupSpec, RestoreSpec};
use thiserror::Error;

use crate::item::{ApiResourceInfo, GroupResource, Item};

pub use labels::LabelSelector;
pub use resources::{is_never_included, ResourceName};

pub use namespaces::NamespaceFilter;
use resources::ResourceFilter;

/// The filters as a Backup or Restore spells them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelectionOptions {
    pub included_namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    pub included_resources: Vec<String>,
    pub excluded_resources: Vec<String>,
    /// `None`: automatic (see [`ClusterResources`]).
    pub include_cluster_resources: Option<bool>,
    /// A `metav1.LabelSelector` as JSON.
    pub label_selector: Option<Value>,
    pub or_label_selectors: Vec<Value>,
}

impl From<&BackupSpec> for SelectionOptions {
    fn from(spec: &BackupSpec) -> Self {
        SelectionOptions {
            included_namespaces: spec.included_namespaces.clone(),
            excluded_namespaces: spec.excluded_namespaces.clone(),
            included_resources: spec.included_resources.clone(),
            excluded_resources: spec.excluded_resources.clone(),
            include_cluster_resources: spec.include_cluster_resources,
            label_selector: spec.label_selector.as_ref().map(to_json),
            or_label_selectors: spec.or_label_selectors.iter().map(to_json).collect(),
        }
    }
}

impl From<&RestoreSpec> for SelectionOptions {
    fn from(spec: &RestoreSpec) -> Self {
        SelectionOptions {
            included_namespaces: spec.included_namespaces.clone(),
            excluded_namespaces: spec.excluded_namespaces.clone(),
            included_resources: spec.included_resources.clone(),
            excluded_resources: spec.excluded_resources.clone(),
            include_cluster_resources: spec.include_cluster_resources,
            label_selector: spec.label_selector.as_ref().map(to_json),
            or_label_selectors: spec.or_label_selectors.iter().map(to_json).collect(),
        }
    }
}

fn to_json(selector: &impl serde::Serialize) -> Value {
    // A typed selector always serialises; Null would make resolution report it.
    serde_json::to_value(selector).unwrap_or(Value::Null)
}

/// What `includeClusterResources` resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterResources {
    /// Every cluster-scoped resource the resource filters select.
    All,
    /// Only those related to selected namespaced objects (a PVC's PV, a custom resource's
    /// CRD): `includeClusterResources` unset on a request that selects some namespaces.
    Related,
    /// None, not even related ones: `includeClusterResources: false`.
    None,
}

/// Filters that contradict themselves or name things that do not exist.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("{field}: {entry:?} is not a valid namespace or glob: {reason}")]
    InvalidNamespace { field: &'static str, entry: String, reason: String },
    #[error("{field}: \"*\" already means everything; list \"*\" alone, or only the names you want")]
    StarWithOthers { field: &'static str },
    #[error("{field} cannot be \"*\": that would exclude everything; list what to leave out instead")]
    ExcludesEverything { field: &'static str },
    #[error(
        "namespace {namespace:?} is both included and excluded (by {exclusion:?}); remove it from one of the lists"
    )]
    NamespaceIncludedAndExcluded { namespace: String, exclusion: String },
    #[error(
        "{field}: no resource named {name:?} is served by the cluster{}; use a plural, kind, short name or resource.group as `kubectl api-resources` lists them",
        suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
    )]
    UnknownResource { field: &'static str, name: String, suggestion: Option<String> },
    #[error("resource {resource} is both included and excluded (excludedResources entry {entry:?}); remove it from one of the lists")]
    ResourceIncludedAndExcluded { resource: String, entry: String },
    #[error("{field}: invalid label selector: {reason}")]
    InvalidLabelSelector { field: String, reason: String },
    #[error("labelSelector and orLabelSelectors are both set; use one (orLabelSelectors can hold a single selector)")]
    BothLabelSelectors,
}

/// Why an object or resource type is left out; for logs and `describe` output.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Exclusion {
    #[error("{resource} are never backed up or restored")]
    NeverIncluded { resource: String },
    #[error("resource {resource} is excluded by excludedResources")]
    ResourceExcluded { resource: String },
    #[error("resource {resource} is not in includedResources")]
    ResourceNotIncluded { resource: String },
    #[error("namespace {namespace:?} is excluded by excludedNamespaces")]
    NamespaceExcluded { namespace: String },
    #[error("namespace {namespace:?} is not in includedNamespaces")]
    NamespaceNotIncluded { namespace: String },
    #[error("{resource} is cluster-scoped and includeClusterResources is false")]
    ClusterScopedExcluded { resource: String },
    #[error(
        "{resource} is cluster-scoped; with includeClusterResources unset and not every namespace selected, only those related to selected objects are taken"
    )]
    ClusterScopedUnrelated { resource: String },
    #[error("labelled {key}=true")]
    ExcludeLabel { key: &'static str },
    #[error("labels do not match labelSelector")]
    LabelSelector,
    #[error("labels match none of orLabelSelectors")]
    OrLabelSelectors,
    #[error("{item} has finished ({state}); it is not recreated")]
    Completed { item: String, state: String },
}

#[derive(Clone, Debug)]
enum LabelFilter {
    Everything,
    All(LabelSelector),
    Any(Vec<LabelSelector>),
}

/// Resolved filters: what a backup collects or a restore creates.
#[derive(Clone, Debug)]
pub struct ResourceSelection {
    namespaces: NamespaceFilter,
    resources: ResourceFilter,
    cluster_resources: ClusterResources,
    labels: LabelFilter,
}

impl ResourceSelection {
    /// Resolves the filters against the resource types the cluster serves (for a restore,
    /// add the archive's types, which may not be installed yet).
    pub fn resolve(options: &SelectionOptions, known: &[ApiResourceInfo]) -> Result<ResourceSelection, SelectionError> {
        let namespaces = NamespaceFilter::resolve(&options.included_namespaces, &options.excluded_namespaces)?;
        let resources = ResourceFilter::resolve(&options.included_resources, &options.excluded_resources, known)?;
        let cluster_resources = match options.include_cluster_resources {
            Some(true) => ClusterResources::All,
            Some(false) => ClusterResources::None,
            None if namespaces.includes_everything() => ClusterResources::All,
            None => ClusterResources::Related,
        };
        let labels = label_filter(options)?;
        Ok(ResourceSelection { namespaces, resources, cluster_resources, labels })
    }

    pub fn cluster_resources(&self) -> ClusterResources {
        self.cluster_resources
    }

    /// Whether objects of this type are listed at all.
    pub fn includes_resource(&self, info: &ApiResourceInfo) -> Result<(), Exclusion> {
        let resource = info.group_resource();
        self.resources.check(&resource, Some(&info.kind))?;
        self.check_scope(&resource, !info.namespaced, false)
    }

    pub fn includes_namespace(&self, namespace: &str) -> Result<(), Exclusion> {
        self.namespaces.check(namespace)
    }

    /// Whether a listed object is taken: type, namespace, scope, exclude label, label selectors.
    pub fn includes_item(&self, item: &Item) -> Result<(), Exclusion> {
        self.includes_related(item)?;
        self.check_scope(&item.group_resource(), item.namespace.is_none(), false)?;
        self.check_labels(item)
    }

    /// Whether an object pulled in by another one (see [`crate::related`]) is taken. As in
    /// Velero, label selectors do not apply (a PV does not carry its app's labels) and
    /// related cluster-scoped objects are taken unless `includeClusterResources` is false.
    pub fn includes_related(&self, item: &Item) -> Result<(), Exclusion> {
        let resource = item.group_resource();
        self.resources.check(&resource, Some(&item.kind))?;
        match &item.namespace {
            Some(ns) => self.namespaces.check(ns)?,
            // A Namespace object goes with the namespace it is.
            None if resource.is("", "namespaces") => self.namespaces.check(&item.name)?,
            None => self.check_scope(&resource, true, true)?,
        }
        if let Some(found) = exclude_label(&item.object) {
            return Err(Exclusion::ExcludeLabel { key: found });
        }
        Ok(())
    }

    fn check_scope(&self, resource: &GroupResource, cluster_scoped: bool, related: bool) -> Result<(), Exclusion> {
        // Namespaces are cluster-scoped but follow the namespace filter, whatever the policy.
        if !cluster_scoped || resource.is("", "namespaces") {
            return Ok(());
        }
        match self.cluster_resources {
            ClusterResources::All => Ok(()),
            ClusterResources::Related if related => Ok(()),
            ClusterResources::Related => Err(Exclusion::ClusterScopedUnrelated { resource: resource.to_string() }),
            ClusterResources::None => Err(Exclusion::ClusterScopedExcluded { resource: resource.to_string() }),
        }
    }

    fn check_labels(&self, item: &Item) -> Result<(), Exclusion> {
        match &self.labels {
            LabelFilter::Everything => Ok(()),
            LabelFilter::All(sel) if sel.matches_object(&item.object) => Ok(()),
            LabelFilter::All(_) => Err(Exclusion::LabelSelector),
            LabelFilter::Any(sels) if sels.iter().any(|s| s.matches_object(&item.object)) => Ok(()),
            LabelFilter::Any(_) => Err(Exclusion::OrLabelSelectors),
        }
    }
}

/// The exclude label's spelling (Stowage's or Velero's) set to `true` on the object, if any.
fn exclude_label(object: &Value) -> Option<&'static str> {
    let labels = object.get("metadata")?.get("labels")?;
    EXCLUDE_FROM_BACKUP.spellings().find(|key| labels.get(*key).and_then(Value::as_str) == Some("true"))
}

fn label_filter(options: &SelectionOptions) -> Result<LabelFilter, SelectionError> {
    let parse = |field: String, value: &Value| {
        LabelSelector::from_json(value).map_err(|reason| SelectionError::InvalidLabelSelector { field, reason })
    };
    match (&options.label_selector, options.or_label_selectors.as_slice()) {
        (Some(_), [_, ..]) => Err(SelectionError::BothLabelSelectors),
        (Some(sel), []) => Ok(LabelFilter::All(parse("labelSelector".into(), sel)?)),
        (None, []) => Ok(LabelFilter::Everything),
        (None, sels) => {
            let parsed = sels.iter().enumerate().map(|(i, s)| parse(format!("orLabelSelectors[{i}]"), s));
            Ok(LabelFilter::Any(parsed.collect::<Result<_, _>>()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::{discovery, ItemBuilder};
    use serde_json::json;

    fn options() -> SelectionOptions {
        SelectionOptions::default()
    }

    fn select(options: SelectionOptions) -> ResourceSelection {
        ResourceSelection::resolve(&options, &discovery()).unwrap()
    }

    fn info(plural: &str) -> ApiResourceInfo {
        discovery().into_iter().find(|i| i.plural == plural).unwrap()
    }

    #[test]
    fn cluster_wide_backup_takes_cluster_resources() {
        let all = select(options());
        assert_eq!(all.cluster_resources(), ClusterResources::All);
        assert!(all.includes_resource(&info("persistentvolumes")).is_ok());
        assert!(all.includes_item(&ItemBuilder::pv("pv-1").build()).is_ok());
    }

    #[test]
    fn namespaced_backup_takes_only_related_cluster_resources() {
        let shop = select(SelectionOptions { included_namespaces: vec!["shop".into()], ..options() });
        assert_eq!(shop.cluster_resources(), ClusterResources::Related);
        let pv = ItemBuilder::pv("pv-1").build();
        assert!(matches!(
            shop.includes_resource(&info("persistentvolumes")),
            Err(Exclusion::ClusterScopedUnrelated { .. })
        ));
        assert!(shop.includes_item(&pv).is_err());
        assert!(shop.includes_related(&pv).is_ok(), "a PVC's PV comes along");
        assert!(shop.includes_item(&ItemBuilder::namespace("shop").build()).is_ok(), "its Namespace object too");
        assert_eq!(
            shop.includes_item(&ItemBuilder::namespace("dev").build()),
            Err(Exclusion::NamespaceNotIncluded { namespace: "dev".into() })
        );
    }

    #[test]
    fn include_cluster_resources_false_takes_none_even_related() {
        let none = select(SelectionOptions { include_cluster_resources: Some(false), ..options() });
        let pv = ItemBuilder::pv("pv-1").build();
        assert_eq!(
            none.includes_related(&pv),
            Err(Exclusion::ClusterScopedExcluded { resource: "persistentvolumes".into() })
        );
        assert!(none.includes_item(&ItemBuilder::namespace("shop").build()).is_ok());
        assert!(none.includes_item(&ItemBuilder::pod("shop", "web").build()).is_ok());
    }

    #[test]
    fn include_cluster_resources_true_respects_resource_filters() {
        let sel = select(SelectionOptions {
            included_namespaces: vec!["shop".into()],
            include_cluster_resources: Some(true),
            excluded_resources: vec!["storageclasses".into()],
            ..options()
        });
        assert!(sel.includes_resource(&info("persistentvolumes")).is_ok());
        assert!(matches!(sel.includes_resource(&info("storageclasses")), Err(Exclusion::ResourceExcluded { .. })));
    }

    #[test]
    fn exclude_label_under_either_spelling() {
        let sel = select(options());
        let ours = ItemBuilder::pod("shop", "a").label("stowage.io/exclude-from-backup", "true").build();
        let velero = ItemBuilder::pod("shop", "b").label("velero.io/exclude-from-backup", "true").build();
        let not_true = ItemBuilder::pod("shop", "c").label("stowage.io/exclude-from-backup", "false").build();
        assert_eq!(sel.includes_item(&ours), Err(Exclusion::ExcludeLabel { key: "stowage.io/exclude-from-backup" }));
        assert_eq!(sel.includes_item(&velero), Err(Exclusion::ExcludeLabel { key: "velero.io/exclude-from-backup" }));
        assert!(sel.includes_item(&not_true).is_ok());
        assert!(sel.includes_related(&ours).is_err(), "the label also keeps related objects out");
    }

    #[test]
    fn label_selector_applies_to_listed_items_only() {
        let sel =
            select(SelectionOptions { label_selector: Some(json!({"matchLabels": {"app": "web"}})), ..options() });
        let web = ItemBuilder::pod("shop", "web").label("app", "web").build();
        let db = ItemBuilder::pod("shop", "db").label("app", "db").build();
        assert!(sel.includes_item(&web).is_ok());
        assert_eq!(sel.includes_item(&db), Err(Exclusion::LabelSelector));
        assert!(sel.includes_related(&ItemBuilder::pvc("shop", "data").build()).is_ok());
    }

    #[test]
    fn or_label_selectors_take_any() {
        let sel = select(SelectionOptions {
            or_label_selectors: vec![json!({"matchLabels": {"app": "web"}}), json!({"matchLabels": {"app": "db"}})],
            ..options()
        });
        assert!(sel.includes_item(&ItemBuilder::pod("s", "a").label("app", "db").build()).is_ok());
        let cache = ItemBuilder::pod("s", "b").label("app", "cache").build();
        assert_eq!(sel.includes_item(&cache), Err(Exclusion::OrLabelSelectors));
    }

    #[test]
    fn selector_errors_name_the_field() {
        let both =
            SelectionOptions { label_selector: Some(json!({})), or_label_selectors: vec![json!({})], ..options() };
        assert_eq!(ResourceSelection::resolve(&both, &discovery()).unwrap_err(), SelectionError::BothLabelSelectors);
        let bad = SelectionOptions {
            or_label_selectors: vec![
                json!({}),
                json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}),
            ],
            ..options()
        };
        let err = ResourceSelection::resolve(&bad, &discovery()).unwrap_err().to_string();
        assert!(
            err.starts_with("orLabelSelectors[1]: invalid label selector: matchExpressions[0]: unknown operator"),
            "{err}"
        );
    }

    #[test]
    fn resource_and_namespace_filters_combine() {
        let sel = select(SelectionOptions {
            included_namespaces: vec!["prod-*".into()],
            included_resources: vec!["deploy".into(), "pvc".into()],
            ..options()
        });
        assert!(sel.includes_item(&ItemBuilder::deployment("prod-eu", "web").build()).is_ok());
        assert_eq!(
            sel.includes_item(&ItemBuilder::pod("prod-eu", "web-1").build()),
            Err(Exclusion::ResourceNotIncluded { resource: "pods".into() })
        );
        assert!(sel.includes_item(&ItemBuilder::deployment("dev", "web").build()).is_err());
        assert!(sel.includes_namespace("prod-us").is_ok());
        assert!(matches!(sel.includes_resource(&info("events")), Err(Exclusion::NeverIncluded { .. })));
    }

    #[test]
    fn exclusions_read_well_in_logs() {
        let e = Exclusion::ClusterScopedExcluded { resource: "persistentvolumes".into() };
        assert_eq!(e.to_string(), "persistentvolumes is cluster-scoped and includeClusterResources is false");
        assert_eq!(
            Exclusion::NeverIncluded { resource: "events".into() }.to_string(),
            "events are never backed up or restored"
        );
    }

    #[test]
    fn specs_convert_to_options() {
        let spec: BackupSpec = serde_json::from_value(json!({
            "includedNamespaces": ["shop"],
            "labelSelector": {"matchLabels": {"app": "web"}},
            "includeClusterResources": false,
        }))
        .unwrap();
        let options = SelectionOptions::from(&spec);
        assert_eq!(options.included_namespaces, vec!["shop"]);
        assert_eq!(options.label_selector, Some(json!({"matchLabels": {"app": "web"}})));
        assert_eq!(options.include_cluster_resources, Some(false));
        let restore: RestoreSpec = serde_json::from_value(json!({"excludedResources": ["secrets"]})).unwrap();
        assert_eq!(SelectionOptions::from(&restore).excluded_resources, vec!["secrets"]);
    }
}

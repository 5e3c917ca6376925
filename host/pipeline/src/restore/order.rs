//! The order resource types are restored in: what others depend on first (definitions,
//! namespaces, storage, identities), pods before their controllers so volume restores run
//! before controllers adopt them, then everything else alphabetically, then the few types
//! that must come last.

use std::collections::BTreeSet;

use thiserror::Error;

use crate::item::GroupResource;
use crate::selection::ResourceName;

/// An ordered list of resource names, as Velero's `--restore-resource-priorities` takes them:
/// names are matched like filter entries (`pods`, `replicasets.apps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priorities {
    /// Restored first, in this order.
    pub high: Vec<String>,
    /// Restored last, in this order.
    pub low: Vec<String>,
}

impl Default for Priorities {
    /// Velero's defaults. Service accounts come before secrets so that token secrets find
    /// their account; `volumesnapshotclasses` is spelt right here (Velero's list says
    /// `volumesnapshotclass`, which matches nothing).
    fn default() -> Self {
        let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        Priorities {
            high: list(&[
                "customresourcedefinitions",
                "namespaces",
                "storageclasses",
                "volumesnapshotclasses.snapshot.storage.k8s.io",
                "volumesnapshotcontents.snapshot.storage.k8s.io",
                "volumesnapshots.snapshot.storage.k8s.io",
                "persistentvolumes",
                "persistentvolumeclaims",
                "serviceaccounts",
                "secrets",
                "configmaps",
                "limitranges",
                "pods",
                "replicasets.apps",
                "clusterclasses.cluster.x-k8s.io",
                "endpoints",
                "services",
            ]),
            low: list(&[
                "clusterbootstraps.run.tanzu.vmware.com",
                "clusters.cluster.x-k8s.io",
                "clusterresourcesets.addons.cluster.x-k8s.io",
            ]),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrioritiesError {
    #[error("resource priorities {0:?}: an entry is empty; separate names with single commas")]
    EmptyEntry(String),
    #[error("resource priorities {0:?}: \"-\" appears twice; it separates the first and the last resources once")]
    TwoSeparators(String),
}

impl Priorities {
    /// Parses `a,b,-,c`: names before `-` go first, names after it go last.
    pub fn parse(text: &str) -> Result<Priorities, PrioritiesError> {
        let mut priorities = Priorities { high: Vec::new(), low: Vec::new() };
        let mut after_separator = false;
        for entry in text.split(',').map(str::trim) {
            match entry {
                "" => return Err(PrioritiesError::EmptyEntry(text.to_string())),
                "-" if after_separator => return Err(PrioritiesError::TwoSeparators(text.to_string())),
                "-" => after_separator = true,
                name if after_separator => priorities.low.push(name.to_string()),
                name => priorities.high.push(name.to_string()),
            }
        }
        Ok(priorities)
    }
}

/// Orders the resource types of a backup for restoring.
pub fn by_priority(resources: impl IntoIterator<Item = GroupResource>, priorities: &Priorities) -> Vec<GroupResource> {
    let mut remaining: BTreeSet<GroupResource> = resources.into_iter().collect();
    let mut take = |names: &[String]| -> Vec<GroupResource> {
        let mut taken = Vec::new();
        for name in names {
            for found in ResourceName::parse(name).resolve_among(&remaining) {
                remaining.remove(&found);
                taken.push(found);
            }
        }
        taken
    };
    let first = take(&priorities.high);
    let last = take(&priorities.low);
    let mut middle: Vec<GroupResource> = remaining.into_iter().collect();
    middle.sort_by_key(|r| r.to_string());
    first.into_iter().chain(middle).chain(last).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(resources: &[&str], priorities: &Priorities) -> Vec<String> {
        let resources = resources.iter().map(|r| GroupResource::parse(r));
        by_priority(resources, priorities).iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn velero_defaults_then_alphabetical_then_last() {
        let backup = [
            "services",
            "deployments.apps",
            "clusters.cluster.x-k8s.io",
            "pods",
            "widgets.example.com",
            "persistentvolumeclaims",
            "persistentvolumes",
            "customresourcedefinitions.apiextensions.k8s.io",
            "namespaces",
            "secrets",
            "serviceaccounts",
            "replicasets.apps",
            "configmaps",
            "storageclasses.storage.k8s.io",
        ];
        assert_eq!(
            order(&backup, &Priorities::default()),
            vec![
                "customresourcedefinitions.apiextensions.k8s.io",
                "namespaces",
                "storageclasses.storage.k8s.io",
                "persistentvolumes",
                "persistentvolumeclaims",
                "serviceaccounts",
                "secrets",
                "configmaps",
                "pods",
                "replicasets.apps",
                "services",
                "deployments.apps",
                "widgets.example.com",
                "clusters.cluster.x-k8s.io",
            ]
        );
    }

    #[test]
    fn a_bare_name_means_the_core_type_when_there_is_one() {
        let resources = ["services.serving.knative.dev", "services", "configmaps"];
        let priorities = Priorities { high: vec!["services".into()], low: vec![] };
        assert_eq!(order(&resources, &priorities), vec!["services", "configmaps", "services.serving.knative.dev"]);
    }

    #[test]
    fn overrides_parse_like_velero_flags() {
        let p = Priorities::parse("namespaces, pods ,-,widgets.example.com").unwrap();
        assert_eq!(p.high, vec!["namespaces", "pods"]);
        assert_eq!(p.low, vec!["widgets.example.com"]);
        assert_eq!(
            order(&["widgets.example.com", "configmaps", "pods", "namespaces"], &p),
            vec!["namespaces", "pods", "configmaps", "widgets.example.com"]
        );
        assert!(matches!(Priorities::parse("a,,b"), Err(PrioritiesError::EmptyEntry(_))));
        assert!(matches!(Priorities::parse("a,-,b,-"), Err(PrioritiesError::TwoSeparators(_))));
    }
}

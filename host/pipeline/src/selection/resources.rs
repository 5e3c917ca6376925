//! Resource filters: names as users write them (`deployments`, `deploy`, `Deployment`,
//! `deployments.apps`, `*`), resolved against discovery once.

use std::collections::BTreeSet;

use crate::item::{ApiResourceInfo, GroupResource};

use super::{Exclusion, SelectionError};

/// Resources never backed up or restored: node-bound or short-lived objects that mean nothing
/// in another cluster, and the operation kinds of Stowage and Velero themselves (restoring a
/// Backup would start a backup; a restore would restore itself).
const NEVER: &[(&str, &str)] = &[
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "nodes"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
    ("stowage.io", "backups"),
    ("stowage.io", "restores"),
    ("stowage.io", "podvolumebackups"),
    ("stowage.io", "podvolumerestores"),
    ("stowage.io", "deletebackuprequests"),
    ("stowage.io", "downloadrequests"),
    ("stowage.io", "backuprepositories"),
    ("velero.io", "backups"),
    ("velero.io", "restores"),
    ("velero.io", "podvolumebackups"),
    ("velero.io", "podvolumerestores"),
    ("velero.io", "deletebackuprequests"),
    ("velero.io", "downloadrequests"),
    ("velero.io", "backuprepositories"),
    ("velero.io", "resticrepositories"),
    ("velero.io", "datauploads"),
    ("velero.io", "datadownloads"),
];

/// Whether objects of this resource are never backed up or restored, whatever the filters say.
pub fn is_never_included(resource: &GroupResource) -> bool {
    NEVER.iter().any(|(g, r)| resource.is(g, r))
}

/// A resource as a user names it: plural, singular/kind, or short name, optionally qualified
/// by its group. Matching ignores case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceName {
    name: String,
    group: Option<String>,
}

impl ResourceName {
    pub fn parse(text: &str) -> ResourceName {
        let text = text.trim().to_ascii_lowercase();
        match text.split_once('.') {
            Some((name, group)) => ResourceName { name: name.to_string(), group: Some(group.to_string()) },
            None => ResourceName { name: text, group: None },
        }
    }

    fn names_info(&self, info: &ApiResourceInfo) -> bool {
        self.group_matches(&info.group)
            && (self.name == info.plural
                || self.name == info.kind.to_ascii_lowercase()
                || info.short_names.iter().any(|s| s.eq_ignore_ascii_case(&self.name)))
    }

    /// Matching when only the resource and kind are known (items, archive directories).
    fn names(&self, resource: &GroupResource, kind: Option<&str>) -> bool {
        self.group_matches(&resource.group)
            && (self.name == resource.resource || kind.is_some_and(|k| k.eq_ignore_ascii_case(&self.name)))
    }

    fn group_matches(&self, group: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == group)
    }

    /// The served resources this name means. An unqualified name served by several groups
    /// means the core group's when there is one (`services` is the core Service, not Knative's),
    /// as `kubectl` resolves it; otherwise every group's.
    pub fn resolve(&self, known: &[ApiResourceInfo]) -> BTreeSet<GroupResource> {
        let found = known.iter().filter(|i| self.names_info(i)).map(ApiResourceInfo::group_resource);
        self.prefer_core(found.collect())
    }

    /// Like [`ResourceName::resolve`], among resource types known only by group and plural.
    pub fn resolve_among<'a>(&self, resources: impl IntoIterator<Item = &'a GroupResource>) -> BTreeSet<GroupResource> {
        let found = resources.into_iter().filter(|r| self.names(r, None)).cloned();
        self.prefer_core(found.collect())
    }

    fn prefer_core(&self, found: BTreeSet<GroupResource>) -> BTreeSet<GroupResource> {
        if self.group.is_none() && found.len() > 1 && found.iter().any(|r| r.group.is_empty()) {
            return found.into_iter().filter(|r| r.group.is_empty()).collect();
        }
        found
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ResourceFilter {
    /// `None`: every resource.
    included: Option<BTreeSet<GroupResource>>,
    excluded: BTreeSet<GroupResource>,
    /// Excluded names nothing serves yet. Excluding a type that does not exist cannot hide a
    /// mistake that matters, and a schedule shared by clusters may name one some lack; kept
    /// to match resource types the archive has but discovery does not.
    unresolved_excluded: Vec<ResourceName>,
}

const INCLUDED: &str = "includedResources";
const EXCLUDED: &str = "excludedResources";

impl ResourceFilter {
    pub(crate) fn resolve(
        included: &[String],
        excluded: &[String],
        known: &[ApiResourceInfo],
    ) -> Result<ResourceFilter, SelectionError> {
        if included.len() > 1 && included.iter().any(|n| n == "*") {
            return Err(SelectionError::StarWithOthers { field: INCLUDED });
        }
        if excluded.iter().any(|n| n == "*") {
            return Err(SelectionError::ExcludesEverything { field: EXCLUDED });
        }
        let everything = included.is_empty() || included == ["*"];
        let included = if everything { None } else { Some(resolve_included(included, known)?) };
        let mut filter = ResourceFilter { included, excluded: BTreeSet::new(), unresolved_excluded: Vec::new() };
        for entry in excluded {
            let name = ResourceName::parse(entry);
            let resolved = name.resolve(known);
            if let Some(both) = filter.included.as_ref().and_then(|inc| resolved.iter().find(|r| inc.contains(*r))) {
                return Err(SelectionError::ResourceIncludedAndExcluded {
                    resource: both.to_string(),
                    entry: entry.clone(),
                });
            }
            if resolved.is_empty() {
                filter.unresolved_excluded.push(name);
            } else {
                filter.excluded.extend(resolved);
            }
        }
        Ok(filter)
    }

    /// Checks a resource type; `kind` lets exclusions written as kinds match archive types.
    pub(crate) fn check(&self, resource: &GroupResource, kind: Option<&str>) -> Result<(), Exclusion> {
        if is_never_included(resource) {
            return Err(Exclusion::NeverIncluded { resource: resource.to_string() });
        }
        if self.excluded.contains(resource) || self.unresolved_excluded.iter().any(|n| n.names(resource, kind)) {
            return Err(Exclusion::ResourceExcluded { resource: resource.to_string() });
        }
        match &self.included {
            Some(set) if !set.contains(resource) => {
                Err(Exclusion::ResourceNotIncluded { resource: resource.to_string() })
            }
            _ => Ok(()),
        }
    }
}

fn resolve_included(entries: &[String], known: &[ApiResourceInfo]) -> Result<BTreeSet<GroupResource>, SelectionError> {
    let mut set = BTreeSet::new();
    for entry in entries {
        let resolved = ResourceName::parse(entry).resolve(known);
        if resolved.is_empty() {
            return Err(SelectionError::UnknownResource {
                field: INCLUDED,
                name: entry.clone(),
                suggestion: closest_name(entry, known),
            });
        }
        set.extend(resolved);
    }
    Ok(set)
}

/// The served name closest to a misspelt one, if it is close enough to be the likely intent.
fn closest_name(entry: &str, known: &[ApiResourceInfo]) -> Option<String> {
    let entry = entry.to_ascii_lowercase();
    let (bare, _) = entry.split_once('.').unwrap_or((&entry, ""));
    known
        .iter()
        .map(|i| (edit_distance(bare, &i.plural), i.group_resource().to_string()))
        .filter(|(d, _)| *d <= 2.max(bare.len() / 4))
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::discovery;

    fn filter(included: &[&str], excluded: &[&str]) -> Result<ResourceFilter, SelectionError> {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ResourceFilter::resolve(&v(included), &v(excluded), &discovery())
    }

    fn gr(text: &str) -> GroupResource {
        GroupResource::parse(text)
    }

    #[test]
    fn every_spelling_of_a_resource_resolves_to_it() {
        for spelling in ["deployments", "deploy", "Deployment", "deployments.apps", "deploy.apps"] {
            let f = filter(&[spelling], &[]).unwrap();
            assert!(f.check(&gr("deployments.apps"), None).is_ok(), "{spelling}");
            assert!(f.check(&gr("pods"), None).is_err(), "{spelling}");
        }
    }

    #[test]
    fn an_unqualified_name_means_the_core_group_first() {
        let f = filter(&["services"], &[]).unwrap();
        assert!(f.check(&gr("services"), None).is_ok());
        assert!(f.check(&gr("services.serving.knative.dev"), None).is_err());
        let knative = filter(&["services.serving.knative.dev"], &[]).unwrap();
        assert!(knative.check(&gr("services.serving.knative.dev"), None).is_ok());
    }

    #[test]
    fn unknown_included_names_fail_with_a_suggestion() {
        let err = filter(&["deploymnets"], &[]).unwrap_err();
        assert_eq!(
            err,
            SelectionError::UnknownResource {
                field: "includedResources",
                name: "deploymnets".into(),
                suggestion: Some("deployments.apps".into())
            }
        );
        assert!(err.to_string().contains("did you mean \"deployments.apps\""), "{err}");
        let far = filter(&["zzzzzz"], &[]).unwrap_err();
        assert!(matches!(far, SelectionError::UnknownResource { suggestion: None, .. }));
    }

    #[test]
    fn unknown_excluded_names_still_match_archive_types_by_kind() {
        let f = filter(&[], &["Gadget.example.com"]).unwrap();
        let gadgets = gr("gadgets.example.com");
        assert_eq!(
            f.check(&gadgets, Some("Gadget")),
            Err(Exclusion::ResourceExcluded { resource: gadgets.to_string() })
        );
        assert!(f.check(&gr("gadgets.other.io"), Some("Gadget")).is_ok());
    }

    #[test]
    fn included_and_excluded_at_once_is_an_error() {
        let err = filter(&["pods", "deploy"], &["deployments.apps"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource deployments.apps is both included and excluded (excludedResources entry \"deployments.apps\"); remove it from one of the lists"
        );
    }

    #[test]
    fn never_included_resources_win_over_filters() {
        let f = filter(&["*"], &[]).unwrap();
        for never in ["events", "events.events.k8s.io", "nodes", "backups.stowage.io", "restores.velero.io"] {
            assert_eq!(f.check(&gr(never), None), Err(Exclusion::NeverIncluded { resource: never.into() }));
        }
        assert!(f.check(&gr("schedules.stowage.io"), None).is_ok(), "schedules are restorable (migration)");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("deploymnets", "deployments"), 2);
        assert_eq!(edit_distance("", "pods"), 4);
        assert_eq!(edit_distance("pods", "pods"), 0);
    }
}

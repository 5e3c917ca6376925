//! Stowage's API: the custom resources (group `stowage.io`, version `v1alpha1`), the label and
//! annotation keys it reads and writes, the well-known object names an install creates, and the
//! object-store and archive layout.
//!
//! The kinds are modelled on Velero's, field for field where Stowage does the same thing, so a
//! Velero user's manifests read naturally. This crate is kept light (no client, no runtime) so
//! the node agent can use it.

// kube's `printcolumn(name = .., type_ = ..)` repeats keys across columns, which this lint
// takes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod duration;
pub mod hooks;
pub mod labels;
pub mod layout;
pub mod location;
pub mod names;
pub mod podvolume;
pub mod repo_keys;
pub mod repository;
pub mod requests;
pub mod restore;
pub mod schedule;

mod error;
mod serde_util;

pub use backup::{Backup, BackupPhase, BackupSpec, BackupStatus};
pub use error::ApiError;
pub use location::{BackupStorageLocation, BackupStorageLocationSpec, BackupStorageLocationStatus};
pub use podvolume::{PodVolumeBackup, PodVolumeRestore};
pub use repository::BackupRepository;
pub use requests::{DeleteBackupRequest, DownloadRequest};
pub use restore::{Restore, RestorePhase, RestoreSpec, RestoreStatus};
pub use schedule::{Schedule, ScheduleSpec, ScheduleStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Stowage kind.
pub const GROUP: &str = "stowage.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "stowage.io/v1alpha1";
/// The category every kind is in: `kubectl get stowage` lists them all.
pub const CATEGORY: &str = "stowage";

/// The CustomResourceDefinitions of every Stowage kind, sorted by name so that generated files
/// and install output are deterministic.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Backup::crd(),
        Restore::crd(),
        Schedule::crd(),
        BackupStorageLocation::crd(),
        PodVolumeBackup::crd(),
        PodVolumeRestore::crd(),
        BackupRepository::crd(),
        DeleteBackupRequest::crd(),
        DownloadRequest::crd(),
    ];
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_namespaced_with_status_and_category() {
        let crds = all_crds();
        assert_eq!(crds.len(), 9);
        for crd in &crds {
            let name = crd.metadata.name.as_deref().unwrap();
            assert!(name.ends_with(".stowage.io"), "{name}");
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced", "{name}");
            assert_eq!(crd.spec.names.categories.as_deref(), Some(&[CATEGORY.to_string()][..]), "{name}");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name}");
            assert!(version.additional_printer_columns.as_ref().is_some_and(|c| !c.is_empty()), "{name}");
        }
    }

    #[test]
    fn short_names_do_not_collide() {
        // Built-in and widely installed short names that would make `kubectl get <short>` ambiguous.
        const TAKEN: &[&str] = &[
            "po", "svc", "ns", "no", "pv", "pvc", "cm", "sa", "ds", "deploy", "rs", "sts", "ing", "ep", "ev", "hpa",
            "pdb", "psp", "sc", "crd", "crds", "netpol", "limits", "quota", "rc", "csr", "cs", "dr", "vs", "gw", "se",
            "pa", "vsl",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for crd in all_crds() {
            for short in crd.spec.names.short_names.unwrap_or_default() {
                assert!(!TAKEN.contains(&short.as_str()), "short name {short} is taken");
                assert!(seen.insert(short.clone()), "short name {short} used twice");
            }
        }
    }
}

//! The backup archive in Velero's layout (format 1.1.0), so Velero archives restore and
//! Stowage archives read familiarly:
//!
//! ```text
//! metadata/version                                              "1.1.0"
//! resources/<resource>[.<group>]/namespaces/<ns>/<name>.json    every item, namespaced
//! resources/<resource>[.<group>]/cluster/<name>.json            every item, cluster-scoped
//! resources/<resource>[.<group>]/<version>-preferredversion/... the same items, under the
//!                                                               version they were read in
//! ```
//!
//! Stowage writes `tar.zst` ([`ArchiveWriter`]); [`ArchiveReader`] also reads Velero's `tar.gz`,
//! and extracts into a directory ([`ExtractedArchive`]) because a restore visits resources in
//! priority order, not archive order, without holding the backup in memory.

mod extracted;
mod reader;
mod writer;

use thiserror::Error;

use crate::item::{GroupResource, ItemError};

pub use extracted::{ArchivedResource, ExtractedArchive, ItemLocation};
pub use reader::{ArchiveEntry, ArchiveReader, Compression, ExtractLimits};
pub use stowage_api::layout::archive::{FORMAT_VERSION, METADATA_VERSION};
pub use writer::ArchiveWriter;

/// The suffix of the directory holding items in the version they were backed up in.
const PREFERRED_SUFFIX: &str = "-preferredversion";

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("archive I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "not a backup archive: it starts with bytes {magic}; expected zstd (Stowage's .tar.zst) or gzip (Velero's .tar.gz)"
    )]
    UnknownFormat { magic: String },
    /// The compressed stream or the tar inside it could not be read: damaged or cut short.
    /// (The cause is in the message, not chained, so it is not printed twice.)
    #[error("the archive is damaged or cut short ({0}); restore from another backup, or put an intact copy of the archive back")]
    Damaged(std::io::Error),
    #[error("archive entry {entry:?} {reason}; refusing to extract an archive that could write outside its directory")]
    UnsafeEntry { entry: String, reason: String },
    /// Over an [`ExtractLimits`] bound.
    #[error("the archive {0}, over the limits for extracting one; nothing is restored from it")]
    OverLimit(String),
    #[error("archive entry {entry:?} is not a JSON object: {source}")]
    BadJson { entry: String, source: serde_json::Error },
    #[error("archive entry {entry:?}: {source}")]
    BadItem { entry: String, source: ItemError },
    #[error("{item} cannot be archived: its {field} {value:?} is not usable as a file name")]
    UnsafeName { item: String, field: &'static str, value: String },
    #[error("{0} has no resources/ directory; is it a Stowage or Velero backup archive?")]
    NotABackup(String),
    #[error("could not serialise {item}: {source}")]
    Serialize { item: String, source: serde_json::Error },
}

/// Which copy of an item an archive path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionDir {
    /// `resources/<gr>/namespaces|cluster/...`: the copy every format has.
    Plain,
    /// `resources/<gr>/<version>-preferredversion/...`.
    Preferred(String),
    /// `resources/<gr>/<version>/...`: another served version (Velero's EnableAPIGroupVersions).
    Other(String),
}

/// What an item's path in the archive says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemPath {
    pub group_resource: GroupResource,
    pub version_dir: VersionDir,
    pub namespace: Option<String>,
    pub name: String,
}

impl ItemPath {
    /// Parses `resources/...` paths; anything else (metadata, unexpected files) is `None`.
    pub fn parse(path: &str) -> Option<ItemPath> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let ["resources", resource, rest @ ..] = parts.as_slice() else { return None };
        let (version_dir, scoped) = match rest {
            [scope, ..] if *scope == "namespaces" || *scope == "cluster" => (VersionDir::Plain, rest),
            [version, scoped @ ..] => match version.strip_suffix(PREFERRED_SUFFIX) {
                Some(v) => (VersionDir::Preferred(v.to_string()), scoped),
                None => (VersionDir::Other(version.to_string()), scoped),
            },
            [] => return None,
        };
        let (namespace, file) = match scoped {
            ["namespaces", ns, file] => (Some(ns.to_string()), *file),
            ["cluster", file] => (None, *file),
            _ => return None,
        };
        let name = file.strip_suffix(".json")?.to_string();
        Some(ItemPath { group_resource: GroupResource::parse(resource), version_dir, namespace, name })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn paths_of_every_copy_parse() {
        let plain = ItemPath::parse("resources/deployments.apps/namespaces/shop/web.json").unwrap();
        assert_eq!(plain.group_resource, GroupResource::new("apps", "deployments"));
        assert_eq!((plain.namespace.as_deref(), plain.name.as_str()), (Some("shop"), "web"));
        assert_eq!(plain.version_dir, VersionDir::Plain);
        let preferred = ItemPath::parse("resources/persistentvolumes/v1-preferredversion/cluster/pv-1.json").unwrap();
        assert_eq!(preferred.version_dir, VersionDir::Preferred("v1".into()));
        assert_eq!(preferred.namespace, None);
        let other = ItemPath::parse("./resources/hpa.autoscaling/v2beta2/namespaces/a/h.json").unwrap();
        assert_eq!(other.version_dir, VersionDir::Other("v2beta2".into()));
        for not_an_item in
            ["metadata/version", "resources/pods/namespaces/a", "resources/pods/cluster/x.yaml", "resources"]
        {
            assert_eq!(ItemPath::parse(not_an_item), None, "{not_an_item}");
        }
    }
}

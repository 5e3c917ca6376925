//! An archive extracted on disk: resource types listed, items read one at a time, each
//! from the preferred-version copy when the archive has one.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{ArchiveError, PREFERRED_SUFFIX};
use crate::item::{ApiResourceInfo, GroupResource, Item, ItemRef};
use stowage_api::layout::archive::{METADATA_VERSION, RESOURCES_DIR};

/// One resource type of the archive and the directory its items are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedResource {
    pub group_resource: GroupResource,
    /// The version the items were backed up in, when the archive records it
    /// (`<version>-preferredversion/`); Velero archives before format 1.1.0 do not.
    pub version: Option<String>,
    dir: PathBuf,
}

/// Where one item is; read it with [`ExtractedArchive::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLocation {
    pub item_ref: ItemRef,
    path: PathBuf,
}

pub struct ExtractedArchive {
    root: PathBuf,
    format_version: Option<String>,
    /// Keeps a temporary extraction alive as long as this value.
    _temp: Option<TempDir>,
}

impl ExtractedArchive {
    /// An archive already extracted into `root`.
    pub fn open(root: &Path) -> Result<ExtractedArchive, ArchiveError> {
        if !root.join(RESOURCES_DIR).is_dir() {
            return Err(ArchiveError::NotABackup(root.display().to_string()));
        }
        let format_version = fs::read_to_string(root.join(METADATA_VERSION)).ok().map(|v| v.trim().to_string());
        Ok(ExtractedArchive { root: root.to_path_buf(), format_version, _temp: None })
    }

    pub(super) fn owning(mut self, temp: TempDir) -> ExtractedArchive {
        self._temp = Some(temp);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `metadata/version` (`1.1.0`), if the archive has one.
    pub fn format_version(&self) -> Option<&str> {
        self.format_version.as_deref()
    }

    /// Every resource type in the archive, sorted by name.
    pub fn resources(&self) -> Result<Vec<ArchivedResource>, ArchiveError> {
        let mut resources = Vec::new();
        for entry in sorted_dirs(&self.root.join(RESOURCES_DIR))? {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let preferred = sorted_dirs(&entry)?.into_iter().find_map(|d| {
                let version = d.file_name()?.to_str()?.strip_suffix(PREFERRED_SUFFIX)?.to_string();
                Some((version, d))
            });
            let (version, dir) = match preferred {
                Some((version, dir)) => (Some(version), dir),
                None => (None, entry),
            };
            resources.push(ArchivedResource { group_resource: GroupResource::parse(&name), version, dir });
        }
        Ok(resources)
    }

    /// The items of one resource type: cluster-scoped first, then by namespace and name.
    pub fn items(&self, resource: &ArchivedResource) -> Result<Vec<ItemLocation>, ArchiveError> {
        let gr = &resource.group_resource;
        let mut found = Vec::new();
        for file in json_files(&resource.dir.join("cluster"))? {
            found.push(location(ItemRef::cluster(gr.clone(), &stem(&file)), file));
        }
        for ns_dir in sorted_dirs(&resource.dir.join("namespaces"))? {
            let ns = ns_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            for file in json_files(&ns_dir)? {
                found.push(location(ItemRef::namespaced(gr.clone(), &ns, &stem(&file)), file));
            }
        }
        Ok(found)
    }

    /// Reads one item.
    pub fn read(&self, location: &ItemLocation) -> Result<Item, ArchiveError> {
        let entry = location.path.strip_prefix(&self.root).unwrap_or(&location.path).display().to_string();
        let bytes = fs::read(&location.path)?;
        let object =
            serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson { entry: entry.clone(), source })?;
        let r = &location.item_ref;
        Item::from_archive(&r.group_resource, r.namespace.as_deref(), object)
            .map_err(|source| ArchiveError::BadItem { entry, source })
    }

    /// The archive's resource types as discovery would describe them (kind, version and scope
    /// read from their first item), for resolving a restore's filters against types the
    /// target cluster does not serve yet (a CRD restored by the same restore).
    pub fn api_resources(&self) -> Result<Vec<ApiResourceInfo>, ArchiveError> {
        let mut infos = Vec::new();
        for resource in self.resources()? {
            let Some(first) = self.items(&resource)?.into_iter().next() else { continue };
            let item = self.read(&first)?;
            let gr = &resource.group_resource;
            let mut info =
                ApiResourceInfo::new(&gr.group, &item.version, &gr.resource, &item.kind, item.namespace.is_some());
            info.preferred = resource.version.as_deref().is_none_or(|v| v == item.version);
            infos.push(info);
        }
        Ok(infos)
    }

    /// Looks an item up by identity (a restored PVC's PV, a pod's claims), if it was backed up.
    pub fn find(&self, item_ref: &ItemRef) -> Result<Option<Item>, ArchiveError> {
        let name = &item_ref.name;
        let ns = item_ref.namespace.as_deref();
        if name.contains('/') || name == ".." || ns.is_some_and(|n| n.contains('/') || n == "..") {
            return Ok(None);
        }
        let resources = self.resources()?;
        let Some(resource) = resources.iter().find(|r| r.group_resource == item_ref.group_resource) else {
            return Ok(None);
        };
        let path = match ns {
            Some(ns) => resource.dir.join("namespaces").join(ns).join(format!("{name}.json")),
            None => resource.dir.join("cluster").join(format!("{name}.json")),
        };
        if !path.is_file() {
            return Ok(None);
        }
        self.read(&location(item_ref.clone(), path)).map(Some)
    }
}

fn location(item_ref: ItemRef, path: PathBuf) -> ItemLocation {
    ItemLocation { item_ref, path }
}

fn stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

/// Subdirectories, sorted; none when `dir` does not exist.
fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    listing(dir, |p| p.is_dir())
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    listing(dir, |p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
}

fn listing(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, ArchiveError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if keep(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

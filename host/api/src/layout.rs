//! Where things live: keys in a storage location (DESIGN §5) and paths inside a backup archive
//! (Velero's layout, so Velero archives restore and Stowage archives read familiarly).

use crate::requests::DownloadTargetKind;
use crate::ApiError;

/// Object keys in one storage location, under its optional prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLayout {
    /// Empty, or the prefix with exactly one trailing `/`.
    root: String,
}

/// The files of a backup, all under `backups/<name>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupFile {
    /// The Backup object; uploaded last, so sync never sees a half-written backup.
    Metadata,
    /// The archive of objects.
    Contents,
    Log,
    PodVolumeBackups,
    ResourceList,
    Results,
    /// Extensions that ran, with their digests and the items they touched.
    Extensions,
}

impl BackupFile {
    pub fn file_name(self, backup: &str) -> String {
        match self {
            BackupFile::Metadata => "stowage-backup.json".to_string(),
            BackupFile::Contents => format!("{backup}.tar.zst"),
            BackupFile::Log => format!("{backup}-logs.zst"),
            BackupFile::PodVolumeBackups => format!("{backup}-podvolumebackups.json.zst"),
            BackupFile::ResourceList => format!("{backup}-resource-list.json.zst"),
            BackupFile::Results => format!("{backup}-results.json.zst"),
            BackupFile::Extensions => format!("{backup}-extensions.json.zst"),
        }
    }
}

/// The files of a restore, all under `restores/<name>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreFile {
    Log,
    Results,
    ResourceList,
    /// Extensions that ran, with their digests and the items they touched.
    Extensions,
}

impl RestoreFile {
    pub fn file_name(self, restore: &str) -> String {
        match self {
            RestoreFile::Log => format!("{restore}-logs.zst"),
            RestoreFile::Results => format!("{restore}-results.json.zst"),
            RestoreFile::ResourceList => format!("{restore}-resource-list.json.zst"),
            RestoreFile::Extensions => format!("{restore}-extensions.json.zst"),
        }
    }
}

impl StoreLayout {
    pub fn new(prefix: Option<&str>) -> StoreLayout {
        let trimmed = prefix.unwrap_or("").trim_matches('/');
        let root = if trimmed.is_empty() { String::new() } else { format!("{trimmed}/") };
        StoreLayout { root }
    }

    /// `[prefix/]backups/`: listing it finds every backup (sync).
    pub fn backups_dir(&self) -> String {
        format!("{}backups/", self.root)
    }

    pub fn backup_dir(&self, backup: &str) -> String {
        format!("{}backups/{backup}/", self.root)
    }

    pub fn backup_file(&self, backup: &str, file: BackupFile) -> String {
        format!("{}{}", self.backup_dir(backup), file.file_name(backup))
    }

    pub fn restores_dir(&self) -> String {
        format!("{}restores/", self.root)
    }

    pub fn restore_dir(&self, restore: &str) -> String {
        format!("{}restores/{restore}/", self.root)
    }

    pub fn restore_file(&self, restore: &str, file: RestoreFile) -> String {
        format!("{}{}", self.restore_dir(restore), file.file_name(restore))
    }

    /// `[prefix/]restic/<namespace>/`: the volume repository of one namespace.
    pub fn repository_dir(&self, namespace: &str) -> String {
        format!("{}restic/{namespace}/", self.root)
    }

    /// The object a DownloadRequest target refers to.
    pub fn download_target(&self, kind: DownloadTargetKind, name: &str) -> String {
        use DownloadTargetKind as K;
        match kind {
            K::BackupLog => self.backup_file(name, BackupFile::Log),
            K::BackupContents => self.backup_file(name, BackupFile::Contents),
            K::BackupResults => self.backup_file(name, BackupFile::Results),
            K::BackupResourceList => self.backup_file(name, BackupFile::ResourceList),
            // A listing is computed from the repository the volume backups name.
            K::BackupVolumeInfos | K::BackupVolumeListing => self.backup_file(name, BackupFile::PodVolumeBackups),
            K::BackupExtensions => self.backup_file(name, BackupFile::Extensions),
            K::RestoreLog => self.restore_file(name, RestoreFile::Log),
            K::RestoreResults => self.restore_file(name, RestoreFile::Results),
        }
    }

    /// The backup name in a key under `backups/` (`[prefix/]backups/<name>/...`), as found when
    /// listing a location.
    pub fn backup_name_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("backups/")?;
        let name = rest.split('/').next()?;
        (!name.is_empty()).then_some(name)
    }
}

/// Checks that a backup or restore name found in a bucket is a Kubernetes object name, so that
/// a crafted key cannot make Stowage read or write outside the object's directory.
pub fn check_object_name(name: &str) -> Result<(), ApiError> {
    let invalid = |reason| Err(ApiError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > 253 {
        return invalid("must be 1 to 253 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
        return invalid("may only contain lowercase letters, digits, '-' and '.'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return invalid("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return invalid("must not contain '..'");
    }
    Ok(())
}

/// Paths inside a backup archive.
pub mod archive {
    /// Holds the archive format version.
    pub const METADATA_VERSION: &str = "metadata/version";
    /// The format written: Velero's 1.1.0 (with `<version>-preferredversion/` copies).
    pub const FORMAT_VERSION: &str = "1.1.0";
    pub const RESOURCES_DIR: &str = "resources";

    /// `resources/<resource>[.<group>]`: the core group has no suffix.
    pub fn resource_dir(resource: &str, group: &str) -> String {
        if group.is_empty() {
            format!("{RESOURCES_DIR}/{resource}")
        } else {
            format!("{RESOURCES_DIR}/{resource}.{group}")
        }
    }

    /// The item's path: `.../namespaces/<ns>/<name>.json` or `.../cluster/<name>.json`.
    pub fn item_path(resource: &str, group: &str, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", resource_dir(resource, group), scoped(namespace, name))
    }

    /// The copy of the item in its preferred version:
    /// `resources/<resource>[.<group>]/<version>-preferredversion/...`.
    pub fn preferred_version_item_path(
        resource: &str,
        group: &str,
        version: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> String {
        format!("{}/{version}-preferredversion/{}", resource_dir(resource, group), scoped(namespace, name))
    }

    fn scoped(namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) => format!("namespaces/{ns}/{name}.json"),
            None => format!("cluster/{name}.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_keys_with_and_without_prefix() {
        let bare = StoreLayout::new(None);
        assert_eq!(bare.backup_file("nightly", BackupFile::Contents), "backups/nightly/nightly.tar.zst");
        assert_eq!(bare.backup_file("nightly", BackupFile::Metadata), "backups/nightly/stowage-backup.json");
        let prefixed = StoreLayout::new(Some("/cluster-a/"));
        assert_eq!(prefixed.backup_file("n", BackupFile::Log), "cluster-a/backups/n/n-logs.zst");
        assert_eq!(prefixed.repository_dir("shop"), "cluster-a/restic/shop/");
        assert_eq!(prefixed.restore_file("r", RestoreFile::Results), "cluster-a/restores/r/r-results.json.zst");
        assert_eq!(StoreLayout::new(Some("")), bare);
    }

    #[test]
    fn every_backup_file_sits_in_the_backup_dir() {
        let layout = StoreLayout::new(Some("p"));
        for file in [
            BackupFile::Metadata,
            BackupFile::Contents,
            BackupFile::Log,
            BackupFile::PodVolumeBackups,
            BackupFile::ResourceList,
            BackupFile::Results,
            BackupFile::Extensions,
        ] {
            let key = layout.backup_file("b1", file);
            assert!(key.starts_with("p/backups/b1/"), "{key}");
            assert_eq!(layout.backup_name_of(&key), Some("b1"));
        }
        assert_eq!(layout.backup_name_of("p/restores/b1/x"), None);
        assert_eq!(layout.backup_name_of("other/backups/b1/x"), None);
    }

    #[test]
    fn download_targets() {
        let layout = StoreLayout::new(None);
        assert_eq!(layout.download_target(DownloadTargetKind::BackupContents, "b"), "backups/b/b.tar.zst");
        assert_eq!(layout.download_target(DownloadTargetKind::RestoreLog, "r"), "restores/r/r-logs.zst");
    }

    #[test]
    fn object_names_are_checked() {
        assert!(check_object_name("nightly-20240501030000").is_ok());
        for bad in ["", "../etc", "a/b", "UPPER", "-a", "a..b", "a-"] {
            assert!(check_object_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn archive_paths_follow_velero() {
        use archive::*;
        assert_eq!(item_path("pods", "", Some("shop"), "web-0"), "resources/pods/namespaces/shop/web-0.json");
        assert_eq!(item_path("namespaces", "", None, "shop"), "resources/namespaces/cluster/shop.json");
        assert_eq!(
            preferred_version_item_path("deployments", "apps", "v1", Some("shop"), "web"),
            "resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json"
        );
    }
}

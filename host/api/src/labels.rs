//! Every label and annotation key Stowage reads or writes, in one place.
//!
//! Each key has Stowage's spelling and the Velero spellings that mean the same thing, so
//! workloads already annotated for Velero work unchanged. Lookups try Stowage's spelling first;
//! Stowage always writes its own.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

/// A label or annotation key and its Velero aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// Stowage's spelling: the one written.
    pub name: &'static str,
    /// Other spellings honoured on read, in order of preference.
    pub aliases: &'static [&'static str],
}

/// A key found on an object: which spelling matched, and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub key: &'static str,
    pub value: &'a str,
}

impl Key {
    pub const fn new(name: &'static str, aliases: &'static [&'static str]) -> Key {
        Key { name, aliases }
    }

    /// Stowage's spelling, then the aliases.
    pub fn spellings(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    /// Looks the key up in a label or annotation map.
    pub fn find<'a>(&self, map: &'a BTreeMap<String, String>) -> Option<Found<'a>> {
        self.spellings().find_map(|key| map.get(key).map(|value| Found { key, value }))
    }

    /// The value on the labels map, under any spelling.
    pub fn get<'a>(&self, map: &'a BTreeMap<String, String>) -> Option<&'a str> {
        self.find(map).map(|f| f.value)
    }

    /// The label's value on an object.
    pub fn label<'a>(&self, meta: &'a ObjectMeta) -> Option<&'a str> {
        self.get(meta.labels.as_ref()?)
    }

    /// The annotation's value on an object.
    pub fn annotation<'a>(&self, meta: &'a ObjectMeta) -> Option<&'a str> {
        self.get(meta.annotations.as_ref()?)
    }

    /// The label's value on an untyped item (`metadata.labels`), as pipelines hold them.
    pub fn item_label<'a>(&self, item: &'a Value) -> Option<&'a str> {
        self.in_item(item, "labels")
    }

    /// The annotation's value on an untyped item (`metadata.annotations`).
    pub fn item_annotation<'a>(&self, item: &'a Value) -> Option<&'a str> {
        self.in_item(item, "annotations")
    }

    fn in_item<'a>(&self, item: &'a Value, field: &str) -> Option<&'a str> {
        let map = item.get("metadata")?.get(field)?.as_object()?;
        self.spellings().find_map(|key| map.get(key)?.as_str())
    }

    /// Whether the label is set to `true` on an object (Velero compares the same way).
    pub fn is_true_label(&self, meta: &ObjectMeta) -> bool {
        self.label(meta) == Some("true")
    }
}

/// Splits a comma-separated annotation value (`backup-volumes: a, b,c`) into its names.
pub fn split_list(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

// Objects created for or restored by an operation.

/// On everything a backup creates (PodVolumeBackups, ...) and on Backups from a schedule's sync.
pub const BACKUP_NAME: Key = Key::new("stowage.io/backup-name", &["velero.io/backup-name"]);
pub const BACKUP_UID: Key = Key::new("stowage.io/backup-uid", &["velero.io/backup-uid"]);
/// On everything a restore creates, including the restored objects.
pub const RESTORE_NAME: Key = Key::new("stowage.io/restore-name", &["velero.io/restore-name"]);
pub const RESTORE_UID: Key = Key::new("stowage.io/restore-uid", &["velero.io/restore-uid"]);
/// On Backups created by a schedule.
pub const SCHEDULE_NAME: Key = Key::new("stowage.io/schedule-name", &["velero.io/schedule-name"]);
/// On Backups: the location they are stored in (used by sync).
pub const STORAGE_LOCATION: Key = Key::new("stowage.io/storage-location", &["velero.io/storage-location"]);
/// On Backups garbage collection could not delete: why (`LocationReadOnly`, `LocationNotFound`,
/// `LocationUnavailable`); removed once it can.
pub const GC_FAILURE: Key = Key::new("stowage.io/gc-failure", &["velero.io/gc-failure"]);
/// On PodVolumeBackups: the PVC whose data it holds, so incremental chains survive reschedules.
pub const PVC_UID: Key = Key::new("stowage.io/pvc-uid", &["velero.io/pvc-uid"]);

// Set by users.

/// Label: `true` keeps an object out of every backup.
pub const EXCLUDE_FROM_BACKUP: Key = Key::new("stowage.io/exclude-from-backup", &["velero.io/exclude-from-backup"]);
/// Pod annotation: the volumes to back up (opt-in mode), comma-separated.
pub const BACKUP_VOLUMES: Key = Key::new("backup.stowage.io/backup-volumes", &["backup.velero.io/backup-volumes"]);
/// Pod annotation: the volumes not to back up (opt-out mode), comma-separated.
pub const BACKUP_VOLUMES_EXCLUDES: Key =
    Key::new("backup.stowage.io/backup-volumes-excludes", &["backup.velero.io/backup-volumes-excludes"]);
/// PersistentVolumeClaim annotation: `true` backs up the claim's data even when no pod mounts it
/// (through an access pod), as the Backup's `backupUnmountedVolumes` does for all claims.
pub const INCLUDE_UNMOUNTED: Key = Key::new("backup.stowage.io/include-unmounted", &["backup.velero.io/include-unmounted"]);
/// Workload annotation the host sets while a backup keeps it at zero replicas: its replica
/// count and the backup's name and uid (the scale-to-zero undo journal).
pub const QUIESCED_REPLICAS: Key = Key::new("stowage.io/quiesced-replicas", &[]);

// ConfigMaps that configure Stowage.

/// Label on a ConfigMap holding an extension; the value is the extension kind.
pub const EXTENSION: Key = Key::new("stowage.io/extension", &[]);
/// Label on the ConfigMap configuring the restore helper init container (image, resources).
pub const POD_VOLUME_RESTORE: Key =
    Key::new("stowage.io/pod-volume-restore", &["velero.io/pod-volume-restore", "velero.io/restic"]);
/// Label (value `RestoreItemAction`) on ConfigMaps mapping storage classes on restore (`old: new`).
pub const CHANGE_STORAGE_CLASS: Key = Key::new("stowage.io/change-storage-class", &["velero.io/change-storage-class"]);
/// Label (value `RestoreItemAction`) on ConfigMaps rewriting images on restore (`"old,new"`).
pub const CHANGE_IMAGE_NAME: Key = Key::new("stowage.io/change-image-name", &["velero.io/change-image-name"]);

/// The annotations of an exec hook declared on a pod (backup hooks).
#[derive(Clone, Copy, Debug)]
pub struct ExecHookKeys {
    pub container: Key,
    pub command: Key,
    pub on_error: Key,
    pub timeout: Key,
}

/// Run in the pod before its volumes are backed up.
pub const PRE_BACKUP_HOOK: ExecHookKeys = ExecHookKeys {
    container: Key::new("pre.hook.backup.stowage.io/container", &["pre.hook.backup.velero.io/container"]),
    command: Key::new("pre.hook.backup.stowage.io/command", &["pre.hook.backup.velero.io/command"]),
    on_error: Key::new("pre.hook.backup.stowage.io/on-error", &["pre.hook.backup.velero.io/on-error"]),
    timeout: Key::new("pre.hook.backup.stowage.io/timeout", &["pre.hook.backup.velero.io/timeout"]),
};

/// Run in the pod after its volumes are backed up.
pub const POST_BACKUP_HOOK: ExecHookKeys = ExecHookKeys {
    container: Key::new("post.hook.backup.stowage.io/container", &["post.hook.backup.velero.io/container"]),
    command: Key::new("post.hook.backup.stowage.io/command", &["post.hook.backup.velero.io/command"]),
    on_error: Key::new("post.hook.backup.stowage.io/on-error", &["post.hook.backup.velero.io/on-error"]),
    timeout: Key::new("post.hook.backup.stowage.io/timeout", &["post.hook.backup.velero.io/timeout"]),
};

/// The annotations of an exec hook run in a restored pod. Velero splits the timeout in two
/// (waiting for the container, running the command); the same suffixes are used here.
#[derive(Clone, Copy, Debug)]
pub struct RestoreExecHookKeys {
    pub container: Key,
    pub command: Key,
    pub on_error: Key,
    pub exec_timeout: Key,
    pub wait_timeout: Key,
    pub wait_for_ready: Key,
}

pub const POST_RESTORE_HOOK: RestoreExecHookKeys = RestoreExecHookKeys {
    container: Key::new("post.hook.restore.stowage.io/container", &["post.hook.restore.velero.io/container"]),
    command: Key::new("post.hook.restore.stowage.io/command", &["post.hook.restore.velero.io/command"]),
    on_error: Key::new("post.hook.restore.stowage.io/on-error", &["post.hook.restore.velero.io/on-error"]),
    exec_timeout: Key::new("post.hook.restore.stowage.io/exec-timeout", &["post.hook.restore.velero.io/exec-timeout"]),
    wait_timeout: Key::new("post.hook.restore.stowage.io/wait-timeout", &["post.hook.restore.velero.io/wait-timeout"]),
    wait_for_ready: Key::new(
        "post.hook.restore.stowage.io/wait-for-ready",
        &["post.hook.restore.velero.io/wait-for-ready"],
    ),
};

/// The annotations of an init container added to a restored pod (Velero's spelling: an image,
/// a container name and a command).
#[derive(Clone, Copy, Debug)]
pub struct InitRestoreHookKeys {
    pub container_image: Key,
    pub container_name: Key,
    pub command: Key,
    pub timeout: Key,
}

pub const INIT_RESTORE_HOOK: InitRestoreHookKeys = InitRestoreHookKeys {
    container_image: Key::new(
        "init.hook.restore.stowage.io/container-image",
        &["init.hook.restore.velero.io/container-image"],
    ),
    container_name: Key::new(
        "init.hook.restore.stowage.io/container-name",
        &["init.hook.restore.velero.io/container-name"],
    ),
    command: Key::new("init.hook.restore.stowage.io/command", &["init.hook.restore.velero.io/command"]),
    timeout: Key::new("init.hook.restore.stowage.io/timeout", &["init.hook.restore.velero.io/timeout"]),
};

/// Pod annotation: hook extensions to run on the pod (comma-separated; `name` is looked up in the
/// pod's namespace, then in Stowage's; `namespace/name` names one outright), besides those whose
/// `appliesTo` selects the pod.
pub const HOOK_EXTENSIONS: Key = Key::new("hooks.stowage.io/extensions", &[]);
/// Prefix of the pod annotations that give the hook extensions a parameter
/// (`hooks.stowage.io/param.databases: shop`).
pub const HOOK_PARAMETER_PREFIX: &str = "hooks.stowage.io/param.";

/// Every key above, for documentation and for checks that none is misspelt.
pub fn all() -> Vec<Key> {
    let mut keys = vec![
        BACKUP_NAME,
        BACKUP_UID,
        RESTORE_NAME,
        RESTORE_UID,
        SCHEDULE_NAME,
        STORAGE_LOCATION,
        GC_FAILURE,
        PVC_UID,
        EXCLUDE_FROM_BACKUP,
        BACKUP_VOLUMES,
        BACKUP_VOLUMES_EXCLUDES,
        INCLUDE_UNMOUNTED,
        QUIESCED_REPLICAS,
        EXTENSION,
        POD_VOLUME_RESTORE,
        HOOK_EXTENSIONS,
    ];
    for hook in [PRE_BACKUP_HOOK, POST_BACKUP_HOOK] {
        keys.extend([hook.container, hook.command, hook.on_error, hook.timeout]);
    }
    let r = POST_RESTORE_HOOK;
    keys.extend([r.container, r.command, r.on_error, r.exec_timeout, r.wait_timeout, r.wait_for_ready]);
    let i = INIT_RESTORE_HOOK;
    keys.extend([i.container_image, i.container_name, i.command, i.timeout]);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        ObjectMeta { labels: map(labels), annotations: map(annotations), ..Default::default() }
    }

    #[test]
    fn ours_then_velero() {
        let velero_only = meta(&[("velero.io/exclude-from-backup", "true")], &[]);
        assert!(EXCLUDE_FROM_BACKUP.is_true_label(&velero_only));
        let both = meta(&[], &[("backup.velero.io/backup-volumes", "a"), ("backup.stowage.io/backup-volumes", "b")]);
        assert_eq!(BACKUP_VOLUMES.annotation(&both), Some("b"), "Stowage's spelling wins");
        let found = BACKUP_VOLUMES.find(both.annotations.as_ref().unwrap()).unwrap();
        assert_eq!(found.key, "backup.stowage.io/backup-volumes");
        assert_eq!(BACKUP_VOLUMES.label(&both), None, "annotations are not labels");
        assert_eq!(EXCLUDE_FROM_BACKUP.label(&ObjectMeta::default()), None);
    }

    #[test]
    fn exclusion_needs_true() {
        assert!(!EXCLUDE_FROM_BACKUP.is_true_label(&meta(&[("stowage.io/exclude-from-backup", "false")], &[])));
        assert!(EXCLUDE_FROM_BACKUP.is_true_label(&meta(&[("stowage.io/exclude-from-backup", "true")], &[])));
    }

    #[test]
    fn hook_annotations_on_untyped_items() {
        let pod = json!({"metadata": {"annotations": {
            "pre.hook.backup.velero.io/command": "[\"/bin/sh\", \"-c\", \"sync\"]",
            "pre.hook.backup.stowage.io/container": "db",
        }}});
        assert_eq!(PRE_BACKUP_HOOK.container.item_annotation(&pod), Some("db"));
        assert_eq!(PRE_BACKUP_HOOK.command.item_annotation(&pod), Some("[\"/bin/sh\", \"-c\", \"sync\"]"));
        assert_eq!(PRE_BACKUP_HOOK.timeout.item_annotation(&pod), None);
        assert_eq!(PRE_BACKUP_HOOK.container.item_label(&pod), None);
    }

    #[test]
    fn older_velero_restic_label_is_honoured() {
        let cm = meta(&[("velero.io/restic", "RestoreItemAction")], &[]);
        assert_eq!(POD_VOLUME_RESTORE.label(&cm), Some("RestoreItemAction"));
    }

    #[test]
    fn every_key_is_well_formed_and_aliased_to_velero() {
        let all = all();
        let mut seen = std::collections::BTreeSet::new();
        for key in &all {
            assert!(key.name.contains("stowage.io/"), "{}", key.name);
            assert!(!key.name.starts_with(HOOK_PARAMETER_PREFIX), "{}", key.name);
            for spelling in key.spellings() {
                assert!(seen.insert(spelling), "{spelling} listed twice");
                let (prefix, name) = spelling.split_once('/').unwrap();
                assert!(!prefix.is_empty() && !name.is_empty() && name.len() <= 63, "{spelling}");
            }
            // Velero has no such keys.
            let stowage_only = [EXTENSION.name, HOOK_EXTENSIONS.name, QUIESCED_REPLICAS.name];
            if !stowage_only.contains(&key.name) {
                let velero = key.name.replace("stowage.io", "velero.io");
                assert_eq!(key.aliases[0], velero, "{}", key.name);
            }
        }
    }

    #[test]
    fn splits_volume_lists() {
        assert_eq!(split_list(" data, logs ,,cache"), vec!["data", "logs", "cache"]);
        assert!(split_list("").is_empty());
    }
}

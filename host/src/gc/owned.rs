//! What a backup owns besides its own directory, removed with it: its restores (their
//! directories in the bucket and their Restore objects) and its PodVolumeBackups.

use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use stowage_api::layout::StoreLayout;
use stowage_api::{labels, PodVolumeBackup, Restore};
use stowage_storage::ObjectStore;

use crate::context::Context;

/// What was removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub restores: usize,
    pub pod_volume_backups: usize,
}

/// Whether a restore read this backup: named it, or was labelled with it when it ran.
pub fn restores_backup(restore: &Restore, backup: &str) -> bool {
    restore.spec.backup_name.as_deref() == Some(backup) || labels::BACKUP_NAME.label(&restore.metadata) == Some(backup)
}

/// Removes the backup's restores (directory first, then object) and its PodVolumeBackups.
pub async fn remove(ctx: &Context, store: &dyn ObjectStore, backup: &str) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let layout = StoreLayout::new(None);
    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for restore in restores.list(&ListParams::default()).await?.items {
        if !restores_backup(&restore, backup) {
            continue;
        }
        let name = restore.name_any();
        // The trailing slash keeps `r` from matching `r-2`'s files.
        let prefix = format!("{}/", layout.restore_dir(&name).trim_end_matches('/'));
        store.delete_prefix(&prefix).await.map_err(|e| {
            anyhow::anyhow!("backup {backup:?}: deleting the files of its restore {name:?}: {e}; retry the deletion")
        })?;
        delete_ignoring_gone(&restores, &name).await?;
        removed.restores += 1;
    }
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={backup}", labels::BACKUP_NAME.name);
    for pvb in pvbs.list(&ListParams::default().labels(&selector)).await?.items {
        delete_ignoring_gone(&pvbs, &pvb.name_any()).await?;
        removed.pod_volume_backups += 1;
    }
    Ok(removed)
}

async fn delete_ignoring_gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_api::RestoreSpec;

    #[test]
    fn restores_are_matched_by_name_or_label_exactly() {
        let mut r = Restore::new("r", RestoreSpec { backup_name: Some("nightly".into()), ..Default::default() });
        assert!(restores_backup(&r, "nightly"));
        assert!(!restores_backup(&r, "nightly-2"));
        r.spec.backup_name = None;
        r.metadata.labels = Some([("stowage.io/backup-name".to_string(), "nightly-2".to_string())].into());
        assert!(restores_backup(&r, "nightly-2"));
        assert!(!restores_backup(&r, "nightly"));
    }
}

//! Backup storage locations: opening their object stores, checking them, and syncing the
//! backups they hold into the cluster (the migration and disaster-recovery path).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::layout::{BackupFile, StoreLayout};
use stowage_api::location::LocationPhase;
use stowage_api::{Backup, BackupPhase, BackupStorageLocation};
use stowage_storage::ObjectStore;

use crate::context::Context;
use crate::locations::{now, open, synced_from, SYNCED_FROM};
use crate::velero;

/// How often locations are checked and synced when they do not say.
const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// Checks every location now and then, records the result in its status, and syncs backups.
pub async fn run(ctx: Arc<Context>) {
    loop {
        let api: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for loc in list.items {
                    validate_and_sync(&ctx, &api, &loc).await;
                }
            }
            Err(e) => tracing::warn!("listing storage locations: {e}"),
        }
        tokio::time::sleep(ctx.location_period.unwrap_or(DEFAULT_PERIOD)).await;
    }
}

async fn validate_and_sync(ctx: &Context, api: &Api<BackupStorageLocation>, loc: &BackupStorageLocation) {
    let name = loc.metadata.name.clone().unwrap_or_default();
    let checked = match open(ctx, loc).await {
        Ok(store) => store.check().await.map(|_| store).map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let (phase, message, store) = match checked {
        Ok(store) => (LocationPhase::Available, None, Some(store)),
        Err(e) => (LocationPhase::Unavailable, Some(format!("{e:#}")), None),
    };
    ctx.metrics.schedules.location(&name, phase == LocationPhase::Available);
    let mut status = json!({"phase": phase, "lastValidationTime": now(), "message": message});
    if let Some(store) = store {
        let period = loc.spec.backup_sync_period.as_deref().map(stowage_api::duration::parse);
        let sync_enabled = !matches!(period, Some(Ok(d)) if d.is_zero());
        if sync_enabled {
            match sync(ctx, &name, store.as_ref()).await {
                Ok(synced) => {
                    if synced != Synced::default() {
                        tracing::info!(location = %name, "synced from the bucket: {} backup(s) added, {} removed",
                            synced.created, synced.removed);
                    }
                    status["lastSyncedTime"] = json!(now());
                }
                Err(e) => tracing::warn!(location = %name, "sync failed: {e:#}"),
            }
        }
    }
    let patch = json!({"status": status});
    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!(location = %name, "updating status: {e}");
    }
}

/// What one sync changed in the cluster.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub created: usize,
    pub removed: usize,
}

/// Creates Backup objects for backups present in the bucket but not in the cluster: Stowage's,
/// and Velero's (see [`crate::velero`]). A backup that cannot be synced is logged and skipped;
/// it never keeps the others from syncing. Backups this location's sync created whose data
/// has since gone from the bucket (deleted from another cluster) are removed, as Velero does.
pub async fn sync(ctx: &Context, location: &str, store: &dyn ObjectStore) -> anyhow::Result<Synced> {
    let layout = StoreLayout::new(None);
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let in_bucket: BTreeSet<String> = store.list_dirs(&layout.backups_dir()).await?.into_iter().collect();
    let in_cluster: BTreeMap<String, Backup> =
        backups.list(&ListParams::default()).await?.items.into_iter().map(|b| (b.name_any(), b)).collect();
    let mut done = Synced::default();
    for name in &in_bucket {
        if let Err(e) = stowage_api::layout::check_object_name(name) {
            tracing::warn!(location, "not syncing {:?}: {e}", layout.backup_dir(name));
            continue;
        }
        let existing = in_cluster.get(name);
        // A synced Backup whose status did not get written (the server stopped in between) is
        // finished now; any other existing Backup is this cluster's own.
        let unfinished_sync =
            existing.is_some_and(|b| synced_from(b).is_some() && b.status.as_ref().and_then(|s| s.phase).is_none());
        if existing.is_some() && !unfinished_sync {
            continue;
        }
        match stored_backup(&layout, store, name).await {
            Ok(Some(stored)) if unfinished_sync => write_synced_status(&backups, name, &stored).await?,
            Ok(Some(stored)) => {
                create_synced(ctx, &backups, location, name, stored).await?;
                done.created += 1;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(location, backup = %name, "not syncing: {e:#}"),
        }
    }
    for (name, backup) in &in_cluster {
        let phase = backup.status.as_ref().and_then(|s| s.phase);
        let finished = matches!(phase, Some(BackupPhase::Completed | BackupPhase::PartiallyFailed));
        if synced_from(backup) == Some(location) && finished && !in_bucket.contains(name) {
            backups.delete(name, &DeleteParams::default()).await?;
            tracing::info!(location, backup = %name, "removed synced backup: its data is no longer in the storage location");
            done.removed += 1;
        }
    }
    Ok(done)
}


/// A backup's object as stored, or None while it is incomplete (metadata is uploaded last).
async fn stored_backup(layout: &StoreLayout, store: &dyn ObjectStore, name: &str) -> anyhow::Result<Option<Backup>> {
    let get = |key: String| async move {
        match store.get(&key).await {
            Ok(raw) => Ok(Some(raw)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    };
    if let Some(raw) = get(layout.backup_file(name, BackupFile::Metadata)).await? {
        let stored: Backup = serde_json::from_slice(&raw).map_err(|e| anyhow::anyhow!("unreadable metadata: {e}"))?;
        return Ok(Some(stored));
    }
    let Some(raw) = get(velero::metadata_key(layout, name)).await? else { return Ok(None) };
    let Some(v) = velero::read_metadata(&raw).map_err(anyhow::Error::msg)? else { return Ok(None) };
    let mut backup = Backup::new(name, v.spec);
    backup.metadata.labels = Some(v.labels);
    backup.status = Some(v.status);
    Ok(Some(backup))
}

async fn create_synced(ctx: &Context, backups: &Api<Backup>, location: &str, name: &str, stored: Backup) -> anyhow::Result<()> {
    let mut obj = Backup::new(name, stored.spec.clone());
    obj.metadata.namespace = Some(ctx.namespace.clone());
    let mut labels = stored.metadata.labels.clone().unwrap_or_default();
    // The location is this cluster's, whatever the writer called it.
    for key in stowage_api::labels::STORAGE_LOCATION.spellings() {
        labels.remove(key);
    }
    labels.insert(stowage_api::labels::STORAGE_LOCATION.name.to_string(), location.to_string());
    obj.metadata.labels = Some(labels);
    obj.spec.storage_location = Some(location.to_string());
    // The status cannot be set on create: until it is, the annotation keeps the backup
    // controller from taking this for a new backup to run (and overwriting the stored one).
    obj.metadata.annotations = Some([(SYNCED_FROM.to_string(), location.to_string())].into());
    backups.create(&PostParams::default(), &obj).await?;
    write_synced_status(backups, name, &stored).await?;
    tracing::info!(location, backup = %name, "synced backup from the bucket");
    Ok(())
}

async fn write_synced_status(backups: &Api<Backup>, name: &str, stored: &Backup) -> anyhow::Result<()> {
    let status = json!({"status": stored.status});
    backups.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}


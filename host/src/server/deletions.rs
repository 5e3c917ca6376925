//! DeleteBackupRequests: remove one backup's data from its storage location (its directory,
//! its volume snapshots, its restores' directories), its restores and PodVolumeBackups, then
//! the Backup object — and nothing that belongs to another backup.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use stowage_api::layout::StoreLayout;
use stowage_api::requests::DeleteBackupRequestPhase;
use stowage_api::{Backup, BackupPhase, DeleteBackupRequest};

use crate::context::Context;
use crate::locations;

pub async fn run(ctx: Arc<Context>) {
    let api: Api<DeleteBackupRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Controller::new(api, watcher::Config::default())
        .run(reconcile, |_, e, _| {
            tracing::warn!("delete backup request: {e}");
            Action::requeue(Duration::from_secs(5))
        }, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(req: Arc<DeleteBackupRequest>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    if req.status.as_ref().and_then(|s| s.phase) == Some(DeleteBackupRequestPhase::Processed) {
        return Ok(Action::await_change());
    }
    let api: Api<DeleteBackupRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let errors = match delete_backup(&ctx, &req.spec.backup_name).await {
        Ok(()) => {
            ctx.metrics.backup_deletions.inc();
            vec![]
        }
        Err(e) => vec![format!("{e:#}")],
    };
    let status = json!({"status": {"phase": "Processed", "errors": errors}});
    api.patch_status(&req.name_any(), &PatchParams::default(), &Patch::Merge(status)).await?;
    Ok(Action::await_change())
}

pub async fn delete_backup(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(backup) = backups.get_opt(name).await? else {
        anyhow::bail!("backup {name:?} not found in namespace {}", ctx.namespace);
    };
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    use BackupPhase as P;
    if matches!(phase, None | Some(P::New | P::InProgress | P::WaitingForVolumes | P::Finalizing)) {
        // Deleting its files now would leave the rest of its upload behind, for sync to find.
        anyhow::bail!(
            "backup {name:?} is {}; delete it once it has finished (`stowage backup get {name}` shows its phase)",
            phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "New".into())
        );
    }
    let loc = locations::resolve(ctx, backup.spec.storage_location.as_deref()).await?;
    locations::ensure_writable(&loc).map_err(|e| anyhow::anyhow!("cannot delete backup {name:?}: {e}"))?;
    backups.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Deleting"}}))).await?;
    let store = locations::open(ctx, &loc).await?;
    forget_snapshots(ctx, &loc, store.clone(), name).await?;
    // The trailing slash keeps `nightly` from matching `nightly-2`'s files.
    let prefix = format!("{}/", StoreLayout::new(None).backup_dir(name).trim_end_matches('/'));
    store.delete_prefix(&prefix).await?;
    let removed = crate::gc::owned::remove(ctx, store.as_ref(), name).await?;
    tracing::info!(backup = name, "deleting: removed {} restore(s) and {} pod volume backup(s)",
        removed.restores, removed.pod_volume_backups);
    backups.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Forgets snapshots (ids by volume namespace) of backup `backup` in each namespace's
/// repository; a namespace without a repository has nothing to forget.
pub async fn forget_in(
    ctx: &Context,
    loc: &stowage_api::BackupStorageLocation,
    store: Arc<dyn stowage_storage::ObjectStore>,
    backup: &str,
    by_namespace: std::collections::BTreeMap<String, Vec<String>>,
) -> anyhow::Result<()> {
    if by_namespace.is_empty() {
        return Ok(());
    }
    let key = stowage_access::master_key(&ctx.client, &ctx.namespace).await?;
    for (ns, ids) in by_namespace {
        let repo = stowage_access::repository_of(loc, &ns)?;
        let password = stowage_api::repo_keys::repository_password(&key, &repo.identity)?;
        let config = stowage_restic::RepoConfig { store: store.clone(), namespace: ns.clone(), password };
        let opened = match stowage_restic::Repo::open(config).await {
            Ok(r) => r,
            Err(stowage_restic::EngineError::NotInitialised { .. }) => continue,
            Err(e) => anyhow::bail!("opening the repository of namespace {ns} to forget its snapshots: {e}"),
        };
        let forgotten = opened
            .forget(&ids)
            .await
            .map_err(|e| anyhow::anyhow!("forgetting its snapshots in {}: {e}", repo.restic_identifier))?;
        tracing::info!(backup, namespace = %ns, "forgot {forgotten} of {} snapshots", ids.len());
    }
    Ok(())
}

/// Forgets the backup's volume snapshots in each namespace's repository; the data other
/// snapshots share stays (a prune, not a forget, reclaims space).
async fn forget_snapshots(
    ctx: &Context,
    loc: &stowage_api::BackupStorageLocation,
    store: Arc<dyn stowage_storage::ObjectStore>,
    backup: &str,
) -> anyhow::Result<()> {
    let pvbs = crate::podvolumes::load(store.as_ref(), backup).await?;
    let mut by_namespace: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for pvb in pvbs {
        if let (Some(ns), Some(id)) = (pvb.spec.pod.namespace.clone(), pvb.status.and_then(|s| s.snapshot_id)) {
            by_namespace.entry(ns).or_default().push(id);
        }
    }
    forget_in(ctx, loc, store, backup, by_namespace)
        .await
        .map_err(|e| anyhow::anyhow!("backup {backup:?}: {e:#}; the backup is kept, retry the deletion"))
}

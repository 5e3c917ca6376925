//! Upload: archive, resource list, results and log first, the Backup object last, so a
//! half-written backup is never visible to another cluster's sync.

use std::path::Path;

use bytes::Bytes;
use kube::api::Api;
use serde_json::json;
use stowage_api::layout::{BackupFile, StoreLayout};
use stowage_api::Backup;
use stowage_storage::ObjectStore;

use super::{BackupOutcome, BackupPlan};
use crate::oplog::{compress_json, OperationLog};
use crate::context::Context;
use crate::locations;

pub async fn upload_log(store: &dyn ObjectStore, name: &str, log: &OperationLog) -> anyhow::Result<()> {
    let key = StoreLayout::new(None).backup_file(name, BackupFile::Log);
    store.put(&key, Bytes::from(log.compressed()?)).await?;
    Ok(())
}

pub async fn upload(
    ctx: &Context,
    store: &dyn ObjectStore,
    plan: &BackupPlan,
    done: &BackupOutcome,
    archive: &Path,
    log: &OperationLog,
) -> anyhow::Result<()> {
    let layout = StoreLayout::new(None);
    let name = &plan.name;
    ctx.patch_status::<Backup>(name, json!({"phase": "Finalizing",
        "progress": {"totalItems": done.items, "itemsBackedUp": done.items}})).await?;
    let mut file = tokio::fs::File::open(archive).await?;
    let size = file.metadata().await?.len();
    store.put_stream(&layout.backup_file(name, BackupFile::Contents), &mut file, Some(size)).await?;
    store.put(&layout.backup_file(name, BackupFile::ResourceList), Bytes::from(compress_json(&done.resource_list)?)).await?;
    store.put(&layout.backup_file(name, BackupFile::Results), Bytes::from(compress_json(&done.outcome)?)).await?;
    if !done.pod_volume_backups.is_empty() {
        let key = layout.backup_file(name, BackupFile::PodVolumeBackups);
        store.put(&key, Bytes::from(compress_json(&done.pod_volume_backups)?)).await?;
    }
    let mut extension_runs = Vec::new();
    if let Some(report) = &done.extension_report {
        store.put(&layout.backup_file(name, BackupFile::Extensions), Bytes::from(report.to_json_zst()?)).await?;
        extension_runs = crate::extensions::runs(report);
    }
    log.outcome(&done.outcome);
    let phase = if done.outcome.error_count() > 0 { "PartiallyFailed" } else { "Completed" };
    log.info(format!("backup {phase}: {} items, {} warnings, {} errors", done.items,
        done.outcome.warning_count(), done.outcome.error_count()));
    upload_log(store, name, log).await?;

    let final_status = json!({
        "phase": phase,
        "completionTimestamp": locations::now(),
        "warnings": done.outcome.warning_count(),
        "errors": done.outcome.error_count(),
        "progress": {"totalItems": done.items, "itemsBackedUp": done.items},
        "extensions": extension_runs,
    });
    // The Backup object as it will be once finished: what sync recreates elsewhere.
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut metadata = serde_json::to_value(api.get(name).await?)?;
    json_patch::merge(&mut metadata["status"], &final_status);
    if let Some(m) = metadata["metadata"].as_object_mut() {
        for server_owned in ["resourceVersion", "uid", "managedFields", "generation"] {
            m.remove(server_owned);
        }
    }
    store.put(&layout.backup_file(name, BackupFile::Metadata), Bytes::from(serde_json::to_vec_pretty(&metadata)?)).await?;
    ctx.patch_status::<Backup>(name, final_status).await?;
    Ok(())
}

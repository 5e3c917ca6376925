//! Backup storage locations as operations use them: which one, its object store, whether it
//! may be written to.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use stowage_api::location::AccessMode;
use stowage_api::{Backup, BackupStorageLocation};
use stowage_storage::ObjectStore;

use crate::context::Context;

/// Annotation on Backups created by sync: the storage location they were found in.
pub const SYNCED_FROM: &str = "stowage.io/synced-from";

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The location named, or the default one when `name` is None.
pub async fn resolve(ctx: &Context, name: Option<&str>) -> anyhow::Result<BackupStorageLocation> {
    let api: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match name {
        Some(n) => api.get_opt(n).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "storage location {n:?} does not exist in namespace {}; create it with `stowage backup-location create`",
                ctx.namespace
            )
        }),
        None => {
            let all = api.list(&ListParams::default()).await?;
            all.items.into_iter().find(|l| l.spec.default).ok_or_else(|| {
                anyhow::anyhow!(
                    "no default storage location in namespace {}; name one with --storage-location or mark one `default: true`",
                    ctx.namespace
                )
            })
        }
    }
}

/// Opens the object store behind a location, with the credentials its Secret holds.
pub async fn open(ctx: &Context, loc: &BackupStorageLocation) -> anyhow::Result<Arc<dyn ObjectStore>> {
    stowage_access::open_location(&ctx.client, &ctx.namespace, loc).await
}

/// The location a Backup was synced from, for Backups that sync created (and that are never
/// run here).
pub fn synced_from(backup: &Backup) -> Option<&str> {
    backup.metadata.annotations.as_ref()?.get(SYNCED_FROM).map(String::as_str)
}

/// Refuses to write to a ReadOnly location, with a message that says what to do.
pub fn ensure_writable(loc: &BackupStorageLocation) -> Result<(), String> {
    if loc.spec.access_mode() == AccessMode::ReadOnly {
        return Err(format!(
            "storage location {:?} is ReadOnly; use a ReadWrite location",
            loc.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}

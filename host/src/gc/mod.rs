//! Garbage collection: expired backups (status.expiration past, whatever their outcome) become
//! DeleteBackupRequests, which the deletion controller carries out. A backup whose location is
//! ReadOnly, missing or unavailable is labelled `stowage.io/gc-failure=<reason>` and kept;
//! it is looked at again every `--garbage-collection-frequency`, never in a hot loop.

pub mod owned;
pub mod verdict;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use stowage_api::requests::{DeleteBackupRequestPhase, DeleteBackupRequestSpec};
use stowage_api::{labels, Backup, BackupStorageLocation, DeleteBackupRequest};

use self::verdict::Verdict;
use crate::context::Context;

/// Velero's default.
pub const DEFAULT_FREQUENCY: Duration = Duration::from_secs(3600);

/// Watches backups (reacting to each change and to each one's expiry) and looks at them all
/// every `frequency`.
pub async fn run(ctx: Arc<Context>, frequency: Duration) {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let ticks = {
        let ctx = ctx.clone();
        futures::stream::unfold((), move |()| {
            let ctx = ctx.clone();
            async move {
                tokio::time::sleep(frequency).await;
                ctx.metrics.schedules.gc_runs.inc();
                Some(((), ()))
            }
        })
    };
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(ticks)
        .run(
            move |b, ctx| reconcile(b, ctx, frequency),
            move |b, e: &GcError, _| {
                tracing::warn!(backup = %b.name_any(), "garbage collection: {:#}", e.0);
                Action::requeue(frequency)
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct GcError(#[from] anyhow::Error);

async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>, frequency: Duration) -> Result<Action, GcError> {
    let location = location_of(&ctx, &backup).await?;
    let now = Timestamp::now();
    let name = backup.name_any();
    let blocked = labels::GC_FAILURE.label(&backup.metadata).map(str::to_string);
    match verdict::verdict(&backup, location.as_ref(), now) {
        Verdict::NotMine => Ok(Action::requeue(frequency)),
        Verdict::Keep { expires } => {
            let until = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
            Ok(Action::requeue(until.min(frequency) + Duration::from_millis(100)))
        }
        Verdict::Blocked(reason) => {
            if blocked.as_deref() != Some(reason.label()) {
                tracing::warn!(backup = %name, reason = reason.label(),
                    "expired backup kept: its storage location cannot be written to; it is retried every {}",
                    humantime::format_duration(frequency));
                set_label(&ctx, &name, Some(reason.label())).await?;
            }
            let blocked_now = count_blocked(&ctx, reason.label()).await.unwrap_or(1);
            ctx.metrics.schedules.gc_blocked.get_or_create(&vec![("reason".into(), reason.label().into())]).set(blocked_now);
            Ok(Action::requeue(frequency))
        }
        Verdict::Delete => {
            if blocked.is_some() {
                set_label(&ctx, &name, None).await?;
            }
            if request_deletion(&ctx, &backup, "expired").await? {
                tracing::info!(backup = %name, "expired: deletion requested");
            }
            Ok(Action::requeue(frequency))
        }
    }
}

/// The backup's location as the cluster has it (None: it does not exist).
async fn location_of(ctx: &Context, backup: &Backup) -> anyhow::Result<Option<BackupStorageLocation>> {
    let api: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match &backup.spec.storage_location {
        Some(name) => Ok(api.get_opt(name).await?),
        None => Ok(api.list(&ListParams::default()).await?.items.into_iter().find(|l| l.spec.default)),
    }
}

async fn set_label(ctx: &Context, backup: &str, value: Option<&str>) -> anyhow::Result<()> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = json!({"metadata": {"labels": {labels::GC_FAILURE.name: value}}});
    api.patch(backup, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn count_blocked(ctx: &Context, reason: &str) -> anyhow::Result<i64> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let list = api.list(&ListParams::default().labels(&format!("{}={reason}", labels::GC_FAILURE.name))).await?;
    Ok(list.items.len() as i64)
}

/// Requests the backup's deletion unless a request for it is pending. Returns whether one
/// was made. `reason` (`expired`, `retention`) is counted in the metrics.
pub async fn request_deletion(ctx: &Context, backup: &Backup, reason: &str) -> anyhow::Result<bool> {
    let name = backup.name_any();
    let api: Api<DeleteBackupRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={name}", labels::BACKUP_NAME.name);
    let pending = api.list(&ListParams::default().labels(&selector)).await?.items.into_iter().any(|r| {
        r.spec.backup_name == name && r.status.as_ref().and_then(|s| s.phase) != Some(DeleteBackupRequestPhase::Processed)
    });
    if pending {
        return Ok(false);
    }
    let mut request = DeleteBackupRequest::new("", DeleteBackupRequestSpec { backup_name: name.clone() });
    request.metadata.name = None;
    request.metadata.generate_name = Some(format!("{name}-"));
    let mut request_labels = std::collections::BTreeMap::from([(labels::BACKUP_NAME.name.to_string(), name.clone())]);
    if let Some(uid) = backup.uid() {
        request_labels.insert(labels::BACKUP_UID.name.to_string(), uid);
    }
    request.metadata.labels = Some(request_labels);
    api.create(&PostParams::default(), &request)
        .await
        .map_err(|e| anyhow::anyhow!("requesting the deletion of backup {name:?}: {e}"))?;
    ctx.metrics.schedules.gc_deletion(reason);
    Ok(true)
}

//! The Backup and Restore controllers: thin reconcilers that hand new requests to their runs,
//! and the restart rule — an operation found in progress at start-up is marked Failed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use stowage_api::{Backup, BackupPhase, Restore, RestorePhase};

use crate::context::Context;
use crate::locations;

const INTERRUPTED: &str = "the server restarted while this was in progress; nothing was left running. Create it again";

/// Marks operations a previous server left InProgress as Failed, with the reason.
pub async fn fail_interrupted(ctx: &Context) -> anyhow::Result<()> {
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for b in backups.list(&ListParams::default()).await?.items {
        let phase = b.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(BackupPhase::InProgress | BackupPhase::WaitingForVolumes | BackupPhase::Finalizing)) {
            tracing::warn!(backup = %b.name_any(), "marking interrupted backup Failed");
            ctx.patch_status::<Backup>(&b.name_any(), json!({"phase": "Failed", "failureReason": INTERRUPTED,
                "completionTimestamp": locations::now()})).await?;
        }
    }
    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for r in restores.list(&ListParams::default()).await?.items {
        let phase = r.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(RestorePhase::InProgress | RestorePhase::WaitingForVolumes | RestorePhase::Finalizing)) {
            tracing::warn!(restore = %r.name_any(), "marking interrupted restore Failed");
            ctx.patch_status::<Restore>(&r.name_any(), json!({"phase": "Failed", "failureReason": INTERRUPTED,
                "completionTimestamp": locations::now()})).await?;
        }
    }
    Ok(())
}

/// A Backup to run: created without a phase (or New), and not synced from a bucket, where
/// it was already taken.
fn is_new(backup: &Backup) -> bool {
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    matches!(phase, None | Some(BackupPhase::New)) && locations::synced_from(backup).is_none()
}

fn on_error<K>(_: Arc<K>, e: &anyhow::Error, _: Arc<Context>) -> Action {
    tracing::warn!("{e:#}");
    Action::requeue(Duration::from_secs(10))
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RunError(#[from] anyhow::Error);

pub async fn run_backups(ctx: Arc<Context>) {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Controller::new(api, watcher::Config::default())
        .run(
            |b: Arc<Backup>, ctx: Arc<Context>| async move {
                if is_new(&b) {
                    crate::backup::run(ctx, b).await.map_err(RunError)?;
                }
                Ok::<_, RunError>(Action::await_change())
            },
            |b, e, ctx| on_error(b, &e.0, ctx),
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

pub async fn run_restores(ctx: Arc<Context>) {
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Controller::new(api, watcher::Config::default())
        .run(
            |r: Arc<Restore>, ctx: Arc<Context>| async move {
                let phase = r.status.as_ref().and_then(|s| s.phase);
                if phase.is_none() || phase == Some(RestorePhase::New) {
                    crate::restore::run(ctx, r).await.map_err(RunError)?;
                }
                Ok::<_, RunError>(Action::await_change())
            },
            |r, e, ctx| on_error(r, &e.0, ctx),
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_api::{BackupSpec, BackupStatus};

    #[test]
    fn synced_backups_are_never_run_even_before_their_status_is_written() {
        let mut b = Backup::new("nightly", BackupSpec::default());
        assert!(is_new(&b));
        b.status = Some(BackupStatus { phase: Some(BackupPhase::New), ..Default::default() });
        assert!(is_new(&b));
        b.status = Some(BackupStatus { phase: Some(BackupPhase::Completed), ..Default::default() });
        assert!(!is_new(&b));
        let mut synced = Backup::new("nightly", BackupSpec::default());
        synced.metadata.annotations = Some([(locations::SYNCED_FROM.to_string(), "default".to_string())].into());
        assert!(!is_new(&synced), "a synced Backup without status yet is not a new backup");
    }
}

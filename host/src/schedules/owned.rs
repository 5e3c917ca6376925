//! `useOwnerReferencesInBackup`: deleting the schedule deletes its backups — their data too.
//! Kubernetes' garbage collector would only remove the Backup objects, leaving their files,
//! which sync would then bring back; so such a schedule carries a finalizer, and on deletion
//! its backups are deleted through DeleteBackupRequests before the schedule goes.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;
use stowage_api::{Backup, Schedule};

use crate::context::Context;

pub const FINALIZER: &str = "stowage.io/delete-owned-backups";

fn owns_backups(schedule: &Schedule) -> bool {
    schedule.spec.use_owner_references_in_backup == Some(true)
}

/// Adds or removes the finalizer as the spec asks (not while the schedule is being deleted).
pub async fn sync_finalizer(ctx: &Context, schedule: &Schedule) -> anyhow::Result<()> {
    let has = schedule.finalizers().iter().any(|f| f == FINALIZER);
    if has == owns_backups(schedule) || schedule.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut finalizers: Vec<String> = schedule.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if owns_backups(schedule) {
        finalizers.push(FINALIZER.to_string());
    }
    set_finalizers(ctx, schedule, finalizers).await
}

async fn set_finalizers(ctx: &Context, schedule: &Schedule, finalizers: Vec<String>) -> anyhow::Result<()> {
    let api: Api<Schedule> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // The resourceVersion makes this a compare-and-swap with other writers of the list.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": schedule.resource_version()}});
    api.patch(&schedule.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// A schedule being deleted: request the deletion of each of its backups that has finished;
/// let the schedule go once none is left.
pub async fn finalize(ctx: &Context, schedule: &Schedule, backups: &[Backup]) -> anyhow::Result<Action> {
    if !schedule.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if backups.is_empty() {
        let rest = schedule.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        set_finalizers(ctx, schedule, rest).await?;
        tracing::info!(schedule = %schedule.name_any(), "schedule deleted with its backups");
        return Ok(Action::await_change());
    }
    for backup in backups {
        // A running backup is deleted once it has finished (the next look).
        if super::is_running(backup) {
            continue;
        }
        if crate::gc::request_deletion(ctx, backup, "schedule-deleted").await? {
            tracing::info!(schedule = %schedule.name_any(), backup = %backup.name_any(), "deleting with its schedule");
        }
    }
    Ok(Action::requeue(Duration::from_secs(2)))
}

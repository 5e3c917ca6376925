//! The Backup and Restore controllers: thin reconcilers that hand new requests to their runs
//! when the queue lets them start, and the restart rule — an operation found in progress when
//! a server starts leading is started again, up to `--max-attempts` times.

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
use super::queue::{Queue, Scope, Slot};

/// Starts again the operations a stopped server (a leader that died or lost its Lease) left in
/// progress: each goes back to New and is run again, keeping its name and counting its
/// attempts; one that was already started `--max-attempts` times fails with the reason.
/// Backups restart from the beginning (nothing of an unfinished backup is visible in the
/// bucket: its metadata goes up last) and reuse the pod volume backups completed for them;
/// restores resume, recognising what they already created by its restore label.
pub async fn resume_interrupted(ctx: &Context) -> anyhow::Result<()> {
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for b in backups.list(&ListParams::default()).await?.items {
        let status = b.status.clone().unwrap_or_default();
        if let Some(phase @ (BackupPhase::InProgress | BackupPhase::WaitingForVolumes | BackupPhase::Finalizing)) = status.phase {
            resume::<Backup>(ctx, &b.name_any(), "backup", &format!("{phase:?}"), status.attempts).await?;
        }
    }
    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for r in restores.list(&ListParams::default()).await?.items {
        let status = r.status.clone().unwrap_or_default();
        if let Some(phase @ (RestorePhase::InProgress | RestorePhase::WaitingForVolumes | RestorePhase::Finalizing)) = status.phase {
            resume::<Restore>(ctx, &r.name_any(), "restore", &format!("{phase:?}"), status.attempts).await?;
        }
    }
    Ok(())
}

async fn resume<K>(ctx: &Context, name: &str, kind: &str, phase: &str, attempts: u32) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let attempts = attempts.max(1);
    if attempts >= ctx.max_attempts {
        let reason = format!(
            "the server running this {kind} stopped while it was {phase}, {attempts} times (--max-attempts {}); \
             see the server's log for why it stopped, then create the {kind} again",
            ctx.max_attempts
        );
        tracing::warn!(%kind, %name, "{reason}");
        ctx.patch_status::<K>(name, json!({"phase": "Failed", "failureReason": reason, "completionTimestamp": locations::now()})).await?;
        return Ok(());
    }
    tracing::warn!(%kind, %name, attempt = attempts + 1, "the server running it stopped while it was {phase}: starting it again");
    ctx.patch_status::<K>(name, json!({"phase": "New"})).await?;
    Ok(())
}

/// A Backup to run: created without a phase (or New), and not synced from a bucket, where
/// it was already taken.
fn is_new(backup: &Backup) -> bool {
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    matches!(phase, None | Some(BackupPhase::New | BackupPhase::Queued)) && locations::synced_from(backup).is_none()
}

fn restore_is_new(restore: &Restore) -> bool {
    let phase = restore.status.as_ref().and_then(|s| s.phase);
    matches!(phase, None | Some(RestorePhase::New | RestorePhase::Queued))
}

/// Oldest first, by creation time then name.
fn by_age<K: ResourceExt>(items: &mut [K]) {
    items.sort_by_key(|k| (k.meta().creation_timestamp.clone().map(|t| t.0), k.name_any()));
}

/// The operations waiting before `name` (scopes, oldest first), from `waiting` sorted by age.
fn ahead_of<K: ResourceExt>(waiting: &[K], name: &str, scope: impl Fn(&K) -> Scope) -> Vec<Scope> {
    waiting.iter().take_while(|k| k.name_any() != name).map(scope).collect()
}

fn backup_scope(b: &Backup) -> Scope {
    Scope::of(&b.spec.included_namespaces)
}

fn restore_scope(r: &Restore) -> Scope {
    Scope::of_restore(&r.spec.included_namespaces, &r.spec.namespace_mapping)
}

/// Whether `op` may start now: its slot in `queue`, or None once it is marked Queued with its
/// position among the waiting operations of its kind (`waiting`), oldest first.
async fn admit<K>(
    ctx: &Context,
    op: &K,
    queue: &Queue,
    waiting: fn(&K) -> bool,
    scope: fn(&K) -> Scope,
    queued: fn(&K) -> (bool, u32),
) -> anyhow::Result<Option<Slot>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut all: Vec<K> = api.list(&ListParams::default()).await?.items.into_iter().filter(|k| waiting(k)).collect();
    by_age(&mut all);
    let ahead = ahead_of(&all, &op.name_any(), scope);
    match queue.try_start(&op.name_any(), &scope(op), &ahead) {
        Ok(slot) => Ok(Some(slot)),
        Err(position) => {
            if queued(op) != (true, position) {
                ctx.patch_status::<K>(&op.name_any(), json!({"phase": "Queued", "queuePosition": position})).await?;
            }
            Ok(None)
        }
    }
}

/// Runs a new Backup when the queue lets it start, else marks it Queued with its position.
async fn reconcile_backup(b: Arc<Backup>, ctx: Arc<Context>) -> anyhow::Result<Action> {
    if !is_new(&b) {
        return Ok(Action::await_change());
    }
    let queued = |b: &Backup| b.status.as_ref().map_or((false, 0), |s| (s.phase == Some(BackupPhase::Queued), s.queue_position));
    let Some(_slot) = admit(&ctx, &*b, &ctx.backup_queue, is_new, backup_scope, queued).await? else {
        return Ok(Action::requeue(QUEUE_POLL));
    };
    crate::backup::run(ctx.clone(), b).await?;
    Ok(Action::await_change())
}

/// Runs a new Restore when the queue lets it start, else marks it Queued with its position.
async fn reconcile_restore(r: Arc<Restore>, ctx: Arc<Context>) -> anyhow::Result<Action> {
    if !restore_is_new(&r) {
        return Ok(Action::await_change());
    }
    let queued = |r: &Restore| r.status.as_ref().map_or((false, 0), |s| (s.phase == Some(RestorePhase::Queued), s.queue_position));
    let Some(_slot) = admit(&ctx, &*r, &ctx.restore_queue, restore_is_new, restore_scope, queued).await? else {
        return Ok(Action::requeue(QUEUE_POLL));
    };
    crate::restore::run(ctx.clone(), r).await?;
    Ok(Action::await_change())
}

/// How often a queued operation looks again whether it may start.
const QUEUE_POLL: Duration = Duration::from_secs(2);

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
            |b: Arc<Backup>, ctx: Arc<Context>| async move { reconcile_backup(b, ctx).await.map_err(RunError) },
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
            |r: Arc<Restore>, ctx: Arc<Context>| async move { reconcile_restore(r, ctx).await.map_err(RunError) },
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

//! Repository maintenance (DESIGN §5): each BackupRepository is maintained on its own schedule
//! (`spec.maintenanceFrequency`, else `--default-repo-maintain-frequency`, weekly), or at once
//! when `stowage repo maintain` asks (the annotation [`REQUESTED`]): stale locks are removed,
//! then the repository is pruned in restic's format (the engine's `Repo::maintain`).
//!
//! Maintenance takes the repository's namespace in both operation queues, so no backup or
//! restore of that namespace starts while it runs (they wait Queued), and it waits for those
//! running; a lock someone else holds (a `restic` CLI, an agent's backup) makes it wait for
//! the next round without touching anything. A failed run is recorded and tried again only
//! after [`RETRY_AFTER_FAILURE`] (or the frequency, if shorter): never in a loop holding an
//! exclusive lock.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::repository::{BackupRepositoryPhase, MaintenanceResult, MaintenanceRun};
use stowage_api::BackupRepository;
use stowage_restic::{MaintenanceOptions, MaintenanceSummary};

use super::queue::Scope;
use crate::context::Context;
use crate::commands::output::human_bytes;
use crate::{locations, repositories};

/// Annotation on a BackupRepository: maintenance was asked for at this time (RFC 3339).
pub const REQUESTED: &str = "stowage.io/maintenance-requested";
/// How many runs `status.recentMaintenance` keeps (as Velero does).
const KEEP_RUNS: usize = 3;
/// How long after a failed run the next one is tried, at most.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// What the maintenance loop is told by the server's flags.
#[derive(Clone, Copy, Debug)]
pub struct MaintenanceConfig {
    pub default_frequency: Duration,
    pub max_unused_percent: f64,
    pub check_period: Duration,
}

/// Runs due maintenance, one repository at a time, forever.
pub async fn run(ctx: Arc<Context>, config: MaintenanceConfig) {
    loop {
        if let Err(e) = round(&ctx, config).await {
            tracing::warn!("repository maintenance: {e:#}");
        }
        tokio::time::sleep(config.check_period).await;
    }
}

async fn round(ctx: &Context, config: MaintenanceConfig) -> anyhow::Result<()> {
    let api: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let now = k8s_openapi::jiff::Timestamp::now();
    for repo in api.list(&ListParams::default()).await?.items {
        match due(&repo, config.default_frequency, now) {
            Ok(Due::Now(why)) => maintain(ctx, &repo, config, why).await,
            Ok(Due::Later) => {}
            Err(e) => tracing::warn!(repository = %repo.name_any(), "{e}"),
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Due {
    Now(&'static str),
    Later,
}

/// Whether `repo` is due: asked for, or its frequency passed since the last success (or its
/// creation), and not within the back-off of a failed run.
fn due(repo: &BackupRepository, default_frequency: Duration, now: k8s_openapi::jiff::Timestamp) -> Result<Due, String> {
    let status = repo.status.clone().unwrap_or_default();
    if status.phase != Some(BackupRepositoryPhase::Ready) {
        return Ok(Due::Later);
    }
    let frequency = match &repo.spec.maintenance_frequency {
        Some(f) => stowage_api::duration::parse(f).map_err(|e| format!("spec.maintenanceFrequency {f:?}: {e}; using the default"))
            .unwrap_or(default_frequency),
        None => default_frequency,
    };
    let requested = repo.annotations().get(REQUESTED).and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let last_run = status.recent_maintenance.last();
    // A request made after the last run is answered now, failure or not: someone is waiting.
    if let Some(at) = requested {
        if last_run.is_none_or(|r| r.start_timestamp.0 < at) {
            return Ok(Due::Now("requested"));
        }
    }
    if frequency.is_zero() {
        return Ok(Due::Later);
    }
    let since = |t: k8s_openapi::jiff::Timestamp| now.duration_since(t).unsigned_abs();
    if let Some(failed) = last_run.filter(|r| r.result == MaintenanceResult::Failed) {
        if since(failed.completion_timestamp.0) < frequency.min(RETRY_AFTER_FAILURE) {
            return Ok(Due::Later);
        }
    }
    let base = status
        .last_maintenance_time
        .map(|t| t.0)
        .or_else(|| repo.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    Ok(if since(base) >= frequency { Due::Now("scheduled") } else { Due::Later })
}

/// One run: waits for nothing — a repository in use is left for the next round.
async fn maintain(ctx: &Context, repo: &BackupRepository, config: MaintenanceConfig, why: &str) {
    let name = repo.name_any();
    let ns = &repo.spec.volume_namespace;
    let slot_name = format!("maintenance/{name}");
    let scope = Scope::Namespaces([ns.clone()].into());
    let Ok(_backups) = ctx.backup_queue.try_start(&slot_name, &scope, &[]) else {
        waiting(ctx, &name, format!("a backup of namespace {ns} is running (or too many are)")).await;
        return;
    };
    let Ok(_restores) = ctx.restore_queue.try_start(&slot_name, &scope, &[]) else {
        waiting(ctx, &name, format!("a restore into namespace {ns} is running (or too many are)")).await;
        return;
    };
    tracing::info!(repository = %name, "maintenance ({why}) of {}", repo.spec.restic_identifier);
    let started = locations::now();
    let result = async {
        let loc = locations::resolve(ctx, Some(&repo.spec.backup_storage_location)).await?;
        let store = locations::open(ctx, &loc).await?;
        let opened = stowage_restic::Repo::open(repositories::config(ctx, &loc, store, ns).await?).await?;
        let summary = opened.maintain(MaintenanceOptions { max_unused_percent: config.max_unused_percent, dry_run: false }).await?;
        let size = opened.size().await.ok();
        anyhow::Ok((summary, size))
    }
    .await;
    let (run, size) = match result {
        Ok((summary, size)) => {
            tracing::info!(repository = %name, "maintenance done: {}", describe(&summary));
            let run = MaintenanceRun {
                result: MaintenanceResult::Succeeded,
                start_timestamp: started,
                completion_timestamp: locations::now(),
                bytes_freed: summary.bytes_freed,
                message: describe(&summary),
            };
            (run, size)
        }
        Err(e) if e.downcast_ref::<stowage_restic::EngineError>().is_some_and(stowage_restic::EngineError::is_busy) => {
            waiting(ctx, &name, format!("{e:#}")).await;
            return;
        }
        Err(e) => {
            tracing::warn!(repository = %name, "maintenance failed: {e:#}");
            let message = format!(
                "{e:#}; tried again in {} (or run `stowage repo maintain {ns}` once fixed)",
                humantime::format_duration(RETRY_AFTER_FAILURE)
            );
            let run = MaintenanceRun {
                result: MaintenanceResult::Failed,
                start_timestamp: started,
                completion_timestamp: locations::now(),
                bytes_freed: 0,
                message,
            };
            (run, None)
        }
    };
    let mut runs = repo.status.clone().unwrap_or_default().recent_maintenance;
    runs.push(run.clone());
    let keep_from = runs.len().saturating_sub(KEEP_RUNS);
    let mut status = json!({"recentMaintenance": runs[keep_from..], "message": null});
    if run.result == MaintenanceResult::Succeeded {
        status["lastMaintenanceTime"] = json!(run.completion_timestamp);
        if let Some(size) = size {
            status["sizeBytes"] = json!(size);
        }
    }
    if let Err(e) = ctx.patch_status::<BackupRepository>(&name, status).await {
        tracing::warn!(repository = %name, "recording the maintenance: {e}");
    }
}

/// Says in the repository's status what its due maintenance waits for.
async fn waiting(ctx: &Context, name: &str, why: String) {
    tracing::info!(repository = %name, "maintenance waits: {why}");
    let _ = ctx.patch_status::<BackupRepository>(name, json!({"message": format!("maintenance waits: {why}")})).await;
}

fn describe(s: &MaintenanceSummary) -> String {
    format!(
        "{} stale lock(s) removed, {} unused pack(s) deleted, {} pack(s) repacked, {} freed ({} -> {}), {} blobs",
        s.stale_locks_removed,
        s.packs_removed,
        s.packs_repacked,
        human_bytes(s.bytes_freed),
        human_bytes(s.bytes_before),
        human_bytes(s.bytes_after),
        s.blobs
    )
}


#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn repo(created: Timestamp, status: serde_json::Value, annotations: serde_json::Value) -> BackupRepository {
        let mut r: BackupRepository = serde_json::from_value(json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupRepository",
            "metadata": {"name": "app-default", "namespace": "stowage", "annotations": annotations},
            "spec": {"volumeNamespace": "app", "backupStorageLocation": "default", "resticIdentifier": "/b/restic/app"},
            "status": status}))
        .unwrap();
        r.metadata.creation_timestamp = Some(Time(created));
        r
    }

    fn run(result: &str, at: Timestamp) -> serde_json::Value {
        json!({"result": result, "startTimestamp": at.to_string(), "completionTimestamp": at.to_string(), "bytesFreed": 0})
    }

    #[test]
    fn a_repository_is_due_a_frequency_after_its_last_success_or_creation() {
        let now = Timestamp::now();
        let days = |d: i64| now - SignedDuration::from_hours(24 * d);
        let fresh = repo(days(1), json!({"phase": "Ready"}), json!({}));
        assert_eq!(due(&fresh, WEEK, now), Ok(Due::Later));
        let old = repo(days(8), json!({"phase": "Ready"}), json!({}));
        assert_eq!(due(&old, WEEK, now), Ok(Due::Now("scheduled")));
        let maintained = repo(days(30), json!({"phase": "Ready", "lastMaintenanceTime": days(2).to_string()}), json!({}));
        assert_eq!(due(&maintained, WEEK, now), Ok(Due::Later));
        let not_ready = repo(days(30), json!({"phase": "NotReady"}), json!({}));
        assert_eq!(due(&not_ready, WEEK, now), Ok(Due::Later));
        let daily = repo(days(30), json!({"phase": "Ready", "lastMaintenanceTime": days(2).to_string()}), json!({}));
        let mut daily = daily;
        daily.spec.maintenance_frequency = Some("24h".into());
        assert_eq!(due(&daily, WEEK, now), Ok(Due::Now("scheduled")), "its own frequency wins");
    }

    #[test]
    fn a_failed_run_is_not_retried_at_once_but_a_request_is_answered() {
        let now = Timestamp::now();
        let failed = now - SignedDuration::from_mins(5);
        let status = json!({"phase": "Ready", "recentMaintenance": [run("Failed", failed)]});
        let r = repo(now - SignedDuration::from_hours(24 * 30), status.clone(), json!({}));
        assert_eq!(due(&r, WEEK, now), Ok(Due::Later), "no retry within the back-off");
        assert_eq!(due(&r, WEEK, now + SignedDuration::from_hours(2)), Ok(Due::Now("scheduled")));
        let asked = repo(now - SignedDuration::from_hours(24 * 30), status, json!({REQUESTED: now.to_string()}));
        assert_eq!(due(&asked, WEEK, now), Ok(Due::Now("requested")), "asked after the failure");
        let answered = repo(now, json!({"phase": "Ready", "recentMaintenance": [run("Succeeded", now)]}),
            json!({REQUESTED: failed.to_string()}));
        assert_eq!(due(&answered, WEEK, now), Ok(Due::Later), "a request is answered once");
    }
}

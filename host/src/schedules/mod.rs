//! The Schedule controller: creates each due backup from the schedule's template, records runs
//! and skips in the schedule's status, applies count-based retention, and keeps per-schedule
//! metrics. The decisions are pure ([`plan`], [`retention`]); this module carries them out.

pub mod cadence;
pub mod metrics;
pub mod owned;
pub mod plan;
pub mod retention;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::schedule::SchedulePhase;
use stowage_api::{labels, Backup, BackupPhase, Schedule};

use self::cadence::Cadence;
use self::plan::{Decision, ScheduleState};
use crate::context::Context;

pub async fn run(ctx: Arc<Context>) {
    let schedules: Api<Schedule> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let namespace = ctx.namespace.clone();
    let controller = Controller::new(schedules.clone(), watcher::Config::default())
        // A schedule's backup finishing updates its metrics (and may end an overlap).
        .watches(backups, watcher::Config::default(), move |b: Backup| {
            let schedule = labels::SCHEDULE_NAME.label(&b.metadata)?;
            Some(ObjectRef::<Schedule>::new(schedule).within(&namespace))
        })
        .run(reconcile, on_error, ctx.clone())
        .for_each(|_| async {});
    tokio::join!(controller, sweep_metrics(ctx, schedules));
}

/// Deleted schedules are not reconciled: their series are dropped here, so a deleted
/// schedule never looks overdue.
async fn sweep_metrics(ctx: Arc<Context>, schedules: Api<Schedule>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if let Ok(list) = schedules.list(&ListParams::default()).await {
            ctx.metrics.schedules.retain(&list.items.iter().map(|s| s.name_any()).collect());
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("schedule {schedule:?}: {cause:#}")]
pub struct ScheduleError {
    schedule: String,
    cause: anyhow::Error,
}

fn on_error(s: Arc<Schedule>, e: &ScheduleError, _: Arc<Context>) -> Action {
    tracing::warn!(schedule = %s.name_any(), "{e}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(schedule: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action, ScheduleError> {
    let name = schedule.name_any();
    step(&schedule, &ctx).await.map_err(|cause| ScheduleError { schedule: name, cause })
}

/// Whole seconds: backups are named to the second, and anchors must be too.
fn now_seconds() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Why a schedule cannot run, field by field.
pub fn validate(schedule: &Schedule) -> Result<Cadence, Vec<String>> {
    let mut errors = Vec::new();
    let name = schedule.name_any();
    if name.len() > plan::MAX_SCHEDULE_NAME {
        errors.push(format!(
            "metadata.name {name:?} is longer than {} characters: its backups' names (NAME-YYYYMMDDhhmmss) would not fit in a label; choose a shorter name",
            plan::MAX_SCHEDULE_NAME
        ));
    }
    if let Err(e) = schedule.spec.template.ttl_duration() {
        errors.push(format!("spec.template.ttl {:?}: {e}; write a Go duration such as 720h", schedule.spec.template.ttl));
    }
    let cadence = Cadence::parse(&schedule.spec.schedule).map_err(|e| e.to_string());
    match cadence {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.insert(0, e);
            Err(errors)
        }
    }
}

/// Backups still running: a new run would overlap them.
fn is_running(backup: &Backup) -> bool {
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    crate::locations::synced_from(backup).is_none()
        && backup.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some(p) if p.is_terminal() || p == BackupPhase::Deleting)
}

/// One reconcile: validate, follow pausing, decide, act, and say when to look again.
async fn step(schedule: &Schedule, ctx: &Context) -> anyhow::Result<Action> {
    let name = schedule.name_any();
    if schedule.metadata.deletion_timestamp.is_some() {
        return owned::finalize(ctx, schedule, &backups_of(schedule, ctx).await?).await;
    }
    owned::sync_finalizer(ctx, schedule).await?;
    let status = schedule.status.clone().unwrap_or_default();
    let cadence = match validate(schedule) {
        Ok(c) => c,
        Err(errors) => {
            if status.phase != Some(SchedulePhase::FailedValidation) || status.validation_errors != errors {
                tracing::warn!(schedule = %name, "invalid: {}", errors.join("; "));
                ctx.patch_status::<Schedule>(&name, json!({"phase": "FailedValidation", "validationErrors": errors,
                    "nextRun": null})).await?;
            }
            ctx.metrics.schedules.forget(&name);
            return Ok(Action::await_change());
        }
    };
    let now = now_seconds();
    if schedule.spec.paused {
        if status.paused_at.is_none() || status.phase != Some(SchedulePhase::Enabled) {
            ctx.patch_status::<Schedule>(&name, json!({"phase": "Enabled", "validationErrors": null,
                "pausedAt": time(now), "nextRun": null})).await?;
        }
        ctx.metrics.schedules.paused(&name);
        return Ok(Action::await_change());
    }
    let mut resumed_at = status.resumed_at.as_ref().map(|t| t.0);
    if status.paused_at.is_some() {
        resumed_at = Some(now);
        ctx.patch_status::<Schedule>(&name, json!({"pausedAt": null, "resumedAt": time(now)})).await?;
    }

    let backups = backups_of(schedule, ctx).await?;
    ctx.metrics.schedules.observe(&name, &backups);
    let created = schedule.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let state = ScheduleState {
        name: name.clone(),
        anchor: resumed_at.map_or(created, |r| r.max(created)),
        last_run: [status.last_backup.as_ref(), status.last_skipped.as_ref()].into_iter().flatten().map(|t| t.0).max(),
        paused: false,
        skip_immediately: schedule.spec.skips_immediately(),
        running: backups.iter().filter(|b| is_running(b)).map(|b| b.name_any()).collect(),
    };
    ctx.metrics.schedules.enabled(&name, cadence.interval_near(now, state.anchor), state.anchor);
    let decision = plan::decide(&cadence, &state, now);
    let enabled = status.phase != Some(SchedulePhase::Enabled) || !status.validation_errors.is_empty();
    let next = match decision {
        Decision::Paused | Decision::Never => {
            ctx.patch_status::<Schedule>(&name, json!({"phase": "Enabled", "validationErrors": null, "nextRun": null})).await?;
            return Ok(Action::await_change());
        }
        Decision::Wait { next } => {
            if enabled || status.next_run.as_ref().map(|t| t.0) != Some(next) {
                ctx.patch_status::<Schedule>(&name, json!({"phase": "Enabled", "validationErrors": null,
                    "nextRun": time(next)})).await?;
            }
            Some(next)
        }
        Decision::Take { due, next } => {
            take(schedule, ctx, due).await?;
            ctx.patch_status::<Schedule>(&name, json!({"phase": "Enabled", "validationErrors": null,
                "lastBackup": time(due), "nextRun": next.map(time)})).await?;
            retention::apply(ctx, schedule, &cadence, &backups_of(schedule, ctx).await?).await;
            next
        }
        Decision::Skip { due, next } => {
            tracing::warn!(schedule = %name, due = %due, running = ?state.running,
                "run skipped: the schedule's previous backup is still running");
            ctx.metrics.schedules.skipped(&name);
            ctx.patch_status::<Schedule>(&name, json!({"phase": "Enabled", "validationErrors": null,
                "lastSkipped": time(due), "nextRun": next.map(time)})).await?;
            next
        }
    };
    let Some(next) = next else { return Ok(Action::await_change()) };
    let wait = next.duration_since(Timestamp::now()).as_millis().max(0) as u64;
    // A little past the due second, so the clock has reached it on the next look.
    Ok(Action::requeue(Duration::from_millis(wait + 50)))
}

/// This schedule's backups (by Stowage's label, or Velero's on synced ones).
async fn backups_of(schedule: &Schedule, ctx: &Context) -> anyhow::Result<Vec<Backup>> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = schedule.name_any();
    let mut all = Vec::new();
    for key in labels::SCHEDULE_NAME.spellings() {
        let found = api.list(&ListParams::default().labels(&format!("{key}={name}"))).await?;
        for b in found.items {
            if !all.iter().any(|a: &Backup| a.name_any() == b.name_any()) {
                all.push(b);
            }
        }
    }
    Ok(all)
}

/// Creates the run's backup. Its name is the run's: if it exists, this run was taken
/// already (by this server before a restart, or by another), and is not taken twice.
async fn take(schedule: &Schedule, ctx: &Context, due: Timestamp) -> anyhow::Result<()> {
    let schedule_name = schedule.name_any();
    let name = plan::backup_name(&schedule_name, due);
    let mut backup = Backup::new(&name, schedule.spec.template.clone());
    backup.metadata.namespace = Some(ctx.namespace.clone());
    backup.metadata.labels = Some([(labels::SCHEDULE_NAME.name.to_string(), schedule_name.clone())].into());
    if schedule.spec.use_owner_references_in_backup == Some(true) {
        backup.metadata.owner_references = schedule.controller_owner_ref(&()).map(|r| vec![r]);
    }
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match api.create(&PostParams::default(), &backup).await {
        Ok(_) => {
            tracing::info!(schedule = %schedule_name, backup = %name, "created scheduled backup");
            ctx.metrics.schedules.attempted(&schedule_name);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(schedule = %schedule_name, backup = %name, "run already taken: backup exists");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("creating backup {name:?}: {e}; the run is retried")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_api::{BackupSpec, BackupStatus, ScheduleSpec};

    fn schedule(name: &str, expr: &str) -> Schedule {
        Schedule::new(name, ScheduleSpec { schedule: expr.into(), ..Default::default() })
    }

    #[test]
    fn validation_names_the_field_and_what_to_do() {
        assert!(validate(&schedule("nightly", "@every 24h")).is_ok());
        let errors = validate(&schedule("nightly", "0 25 * * *")).unwrap_err();
        assert!(errors[0].starts_with("spec.schedule \"0 25 * * *\""), "{errors:?}");
        let mut s = schedule(&"n".repeat(49), "@daily");
        s.spec.template.ttl = "a month".into();
        let errors = validate(&s).unwrap_err();
        assert!(errors[0].contains("metadata.name") && errors[1].contains("spec.template.ttl"), "{errors:?}");
    }

    #[test]
    fn only_unfinished_backups_block_a_run() {
        let with = |phase: Option<BackupPhase>| {
            let mut b = Backup::new("b", BackupSpec::default());
            b.status = phase.map(|p| BackupStatus { phase: Some(p), ..Default::default() });
            b
        };
        assert!(is_running(&with(None)));
        assert!(is_running(&with(Some(BackupPhase::WaitingForVolumes))));
        assert!(is_running(&with(Some(BackupPhase::Finalizing))));
        assert!(!is_running(&with(Some(BackupPhase::Failed))));
        assert!(!is_running(&with(Some(BackupPhase::Completed))));
        assert!(!is_running(&with(Some(BackupPhase::Deleting))));
    }
}

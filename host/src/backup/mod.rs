//! A backup, from its request to its uploaded files:
//! validate → plan → collect (+ related) → write → upload → status.
//! Item failures become warnings or errors on the outcome; they never abort the run.

mod collect;
mod stage;
mod upload;
pub mod volumes;

use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::{Backup, BackupStorageLocation};
use stowage_pipeline::{Outcome, ResourceSelection, SelectionOptions};
use stowage_storage::ObjectStore;

use crate::discovery::{self, Discovered};
use crate::hooks::backup::BackupHookRunner;
use stowage_pipeline::hooks::BackupHookSpecs;
use crate::extensions::Extensions;
use stowage_runtime::OperationKind;
use crate::oplog::OperationLog;
use crate::context::Context;
use crate::locations;

/// Everything a backup resolved before it started collecting; never changed afterwards.
pub struct BackupPlan {
    pub name: String,
    pub location: BackupStorageLocation,
    pub selection: ResourceSelection,
    pub resources: Vec<Discovered>,
    pub ttl: std::time::Duration,
    /// Whether every pod volume is backed up unless opted out (the Backup's, else the server's).
    pub default_volumes_to_fs_backup: bool,
    /// How long the pod volume backups may take.
    pub pod_volume_timeout: std::time::Duration,
    /// The hook sets of `spec.hooks`, checked.
    pub hook_specs: BackupHookSpecs,
    /// Whether any pod may have hooks without saying so in its annotations: the backup has hook
    /// sets, or hook extensions are loaded.
    pub any_pod_may_have_hooks: bool,
    /// Whether the data of claims no pod mounts is copied too (`spec.backupUnmountedVolumes`).
    pub backup_unmounted_volumes: bool,
    /// Which start of the backup this is (1 unless a server stopped while it ran).
    pub attempt: u32,
}

/// What a backup run produced, apart from the plan.
#[derive(Default)]
pub struct BackupOutcome {
    pub outcome: Outcome,
    pub items: u32,
    /// `apiVersion/Kind` -> `namespace/name` (or `name`), as Velero's resource list has it.
    pub resource_list: std::collections::BTreeMap<String, Vec<String>>,
    /// Pods whose volumes are to be copied.
    pub volume_candidates: volumes::Candidates,
    /// The PodVolumeBackups as they ended.
    pub pod_volume_backups: Vec<stowage_api::PodVolumeBackup>,
    /// What the extensions did (None: no extension was active).
    pub extension_report: Option<stowage_runtime::ExtensionReport>,
}

/// Checks the request and resolves it into a plan; the errors are the backup's validationErrors.
async fn validate(ctx: &Context, backup: &Backup) -> Result<(BackupPlan, Arc<dyn ObjectStore>), Vec<String>> {
    let name = backup.name_any();
    let mut errors = Vec::new();
    let ttl = backup.spec.ttl_duration().map_err(|e| errors.push(format!("spec.ttl: {e}"))).ok();
    let pod_volume_timeout = crate::podvolumes::timeout_of(backup, ctx.pod_volume_timeout).map_err(|e| errors.push(e)).ok();
    let hook_specs = BackupHookSpecs::compile(&backup.spec.hooks).map_err(|e| errors.extend(e)).ok();
    let location = match locations::resolve(ctx, backup.spec.storage_location.as_deref()).await {
        Ok(l) => Some(l),
        Err(e) => {
            errors.push(format!("{e:#}"));
            None
        }
    };
    if let Some(loc) = &location {
        if let Err(e) = locations::ensure_writable(loc) {
            errors.push(format!("backup {name:?}: {e}"));
        }
    }
    errors.extend(crate::extensions::check_requested(&ctx.extensions, &ctx.namespace, &backup.spec.extensions));
    let resources = match discovery::discover(&ctx.client).await {
        Ok(r) => r,
        Err(e) => return Err(vec![format!("discovering the cluster's resources: {e:#}")]),
    };
    let known: Vec<_> = resources.iter().map(|d| d.info.clone()).collect();
    let selection = ResourceSelection::resolve(&SelectionOptions::from(&backup.spec), &known)
        .map_err(|e| errors.push(e.to_string()))
        .ok();
    let store = match &location {
        Some(loc) if errors.is_empty() => match locations::open(ctx, loc).await {
            Ok(s) => match s.check().await {
                Ok(()) => Some(s),
                Err(e) => {
                    errors.push(format!("{e}"));
                    None
                }
            },
            Err(e) => {
                errors.push(format!("{e:#}"));
                None
            }
        },
        _ => None,
    };
    match (errors.is_empty(), location, selection, ttl, store, pod_volume_timeout, hook_specs) {
        (true, Some(location), Some(selection), Some(ttl), Some(store), Some(pod_volume_timeout), Some(hook_specs)) => {
            let default_volumes_to_fs_backup =
                backup.spec.default_volumes_to_fs_backup.unwrap_or(ctx.default_volumes_to_fs_backup);
            let any_pod_may_have_hooks = !backup.spec.hooks.is_empty()
                || ctx.extensions.snapshot().of_kind(stowage_runtime::ExtensionKind::Hook).next().is_some();
            let plan = BackupPlan {
                name,
                location,
                selection,
                resources,
                ttl,
                default_volumes_to_fs_backup,
                pod_volume_timeout,
                hook_specs,
                any_pod_may_have_hooks,
                backup_unmounted_volumes: backup.spec.backup_unmounted_volumes,
                attempt: backup.status.as_ref().map_or(0, |s| s.attempts) + 1,
            };
            Ok((plan, store))
        }
        _ => Err(errors),
    }
}

/// Runs a new backup to its end, recording everything in its status.
pub async fn run(ctx: Arc<Context>, backup: Arc<Backup>) -> anyhow::Result<()> {
    let name = backup.name_any();
    let log = OperationLog::new("backup", &name);
    let started = Instant::now();
    ctx.metrics.backup_attempts.inc();
    let (plan, store) = match validate(&ctx, &backup).await {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                log.error(format!("validation: {e}"));
            }
            ctx.metrics.backup_validation_failures.inc();
            ctx.patch_status::<Backup>(&name, json!({"phase": "FailedValidation", "validationErrors": errors,
                "completionTimestamp": locations::now()})).await?;
            return Ok(());
        }
    };
    let start = locations::now();
    let expiration = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        start.0 + k8s_openapi::jiff::SignedDuration::try_from(plan.ttl).unwrap_or_default(),
    );
    // A new attempt starts with clean counts: nothing of an earlier one was uploaded.
    ctx.patch_status::<Backup>(&name, json!({"phase": "InProgress", "startTimestamp": start, "expiration": expiration,
        "formatVersion": stowage_pipeline::archive::FORMAT_VERSION, "attempts": plan.attempt, "queuePosition": null,
        "progress": null, "warnings": null, "errors": null, "failureReason": null,
        "podVolumeBackupsAttempted": null, "podVolumeBackupsCompleted": null, "podVolumeBackupsFailed": null})).await?;
    if backup.spec.storage_location.is_none() {
        // Record which location "the default" was, as Velero does: `get` and `describe` show it,
        // and a later change of default does not move this backup.
        let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let spec = json!({"spec": {"storageLocation": plan.location.name_any()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&spec)).await?;
    }
    if plan.attempt > 1 {
        log.warn(format!(
            "attempt {} of {}: the server running attempt {} stopped before it ended (it restarted or lost its leadership); \
             starting again from the beginning, reusing the pod volume backups it completed",
            plan.attempt,
            ctx.max_attempts,
            plan.attempt - 1
        ));
    }
    log.info(format!("backup started, storage location {:?}", plan.location.name_any()));

    let result = async {
        let archive = tempfile::NamedTempFile::new()?;
        let uid = backup.metadata.uid.clone().unwrap_or_default();
        let mut extensions = Extensions::start(&ctx, OperationKind::Backup, (&name, &uid), &backup.spec.extensions, plan.resources.clone(), &log);
        let mut collected = collect::collect_and_write(&ctx, &plan, &mut extensions, &log, archive.reopen()?).await?;
        collected.extension_report = extensions.report();
        let candidates = std::mem::take(&mut collected.volume_candidates);
        if !candidates.is_empty() {
            let hooks = BackupHookRunner::new(&ctx, &backup, &plan.hook_specs, plan.resources.clone(), &log);
            collected.pod_volume_backups =
                volumes::back_up(&ctx, &plan, &backup, store.clone(), candidates, &hooks, &log, &mut collected.outcome).await?;
            if let Some(hook_report) = hooks.extension_report().await {
                let report = collected.extension_report.get_or_insert_with(Default::default);
                report.extensions.extend(hook_report.extensions);
            }
        }
        upload::upload(&ctx, store.as_ref(), &plan, &collected, archive.path(), &log).await?;
        anyhow::Ok(collected)
    }
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    ctx.metrics.backup_duration.observe(elapsed);
    match result {
        Ok(done) => {
            let phase = if done.outcome.error_count() > 0 { "PartiallyFailed" } else { "Completed" };
            if phase == "Completed" {
                ctx.metrics.backup_successes.inc();
            } else {
                ctx.metrics.backup_partial_failures.inc();
            }
            ctx.metrics.backup_items.set(i64::from(done.items));
            Ok(())
        }
        Err(e) => {
            let reason = crate::context::failure_reason(&e);
            log.error(format!("backup failed: {reason}"));
            ctx.metrics.backup_failures.inc();
            // Keep what happened readable: the log goes up even when the backup failed.
            let _ = upload::upload_log(store.as_ref(), &name, &log).await;
            // The API server may be what failed.
            let status = json!({"phase": "Failed", "failureReason": reason, "completionTimestamp": locations::now()});
            ctx.record_end::<Backup>(&name, status).await?;
            Ok(())
        }
    }
}

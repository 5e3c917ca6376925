//! A restore: validate → download and read the archive → plan → for each resource in priority
//! order: filter → transform → modify → create (or compare with what exists) → status.
//! A restore never deletes anything in the cluster.

mod apply;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::layout::{BackupFile, RestoreFile, StoreLayout};
use stowage_api::{Backup, BackupPhase, BackupStorageLocation, Restore};
use stowage_pipeline::archive::{ArchiveReader, ExtractedArchive};
use stowage_pipeline::restore::configured::ConfiguredActions;
use stowage_pipeline::restore::plan::{plan, ModifierSource, RestoreOptions, RestorePlan};
use stowage_storage::ObjectStore;

use crate::discovery;
use crate::hooks::restore::RestoreHookRunner;
use stowage_pipeline::hooks::RestoreHookSpecs;
use crate::extensions::{self, Extensions};
use crate::oplog::{compress_json, OperationLog};
use crate::context::Context;
use crate::{locations, velero};

/// The backup a restore reads: named, or the latest completed one of a schedule.
async fn backup_of(ctx: &Context, restore: &Restore) -> Result<Backup, String> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match (&restore.spec.backup_name, &restore.spec.schedule_name) {
        (Some(name), _) => api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("backup {name:?} not found in namespace {}; list backups with `stowage backup get`", ctx.namespace)),
        (None, Some(schedule)) => {
            // Velero's label too: a Velero schedule's backups synced from the bucket count.
            let mut all = Vec::new();
            for key in stowage_api::labels::SCHEDULE_NAME.spellings() {
                let lp = ListParams::default().labels(&format!("{key}={schedule}"));
                all.extend(api.list(&lp).await.map_err(|e| e.to_string())?.items);
            }
            all.retain(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed));
            all.sort_by_key(|b| b.metadata.creation_timestamp.clone().map(|t| t.0));
            all.pop().ok_or_else(|| format!("schedule {schedule:?} has no completed backup yet"))
        }
        (None, None) => Err("spec.backupName or spec.scheduleName is required".to_string()),
    }
}

/// The ConfigMaps in the server's namespace carrying a configuration label (any spelling) with
/// the value `RestoreItemAction`, in name order.
pub(crate) async fn action_config_maps(ctx: &Context, key: &stowage_api::labels::Key) -> kube::Result<Vec<ConfigMap>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut found = BTreeMap::new();
    for spelling in key.spellings() {
        let lp = ListParams::default().labels(&format!("{spelling}=RestoreItemAction"));
        for cm in api.list(&lp).await?.items {
            found.entry(cm.name_any()).or_insert(cm);
        }
    }
    Ok(found.into_values().collect())
}

/// The storage-class and image-name mappings of the labelled ConfigMaps, and the classes they
/// map to that the cluster does not have (a claim of such a class would stay Pending).
async fn configured_actions(ctx: &Context) -> Result<(ConfiguredActions, Vec<String>), Vec<String>> {
    use stowage_api::labels::{CHANGE_IMAGE_NAME, CHANGE_STORAGE_CLASS};
    let mut actions = ConfiguredActions::default();
    let reading = |what: &str, e: kube::Error| vec![format!("reading the {what} ConfigMaps: {e}")];
    for cm in action_config_maps(ctx, &CHANGE_STORAGE_CLASS).await.map_err(|e| reading("change-storage-class", e))? {
        actions.add_storage_classes(&cm.name_any(), &cm.data.unwrap_or_default()).map_err(|e| vec![e.to_string()])?;
    }
    for cm in action_config_maps(ctx, &CHANGE_IMAGE_NAME).await.map_err(|e| reading("change-image-name", e))? {
        actions.add_image_names(&cm.name_any(), &cm.data.unwrap_or_default()).map_err(|e| vec![e.to_string()])?;
    }
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut missing = Vec::new();
    for class in actions.target_classes().collect::<BTreeSet<_>>() {
        if let Ok(None) = classes.get_opt(class).await {
            missing.push(format!(
                "change-storage-class maps to storage class {class:?}, which this cluster does not have: claims of that class will stay Pending until it is created"
            ));
        }
    }
    Ok((actions, missing))
}

struct Validated {
    plan: RestorePlan,
    backup: Backup,
    location: BackupStorageLocation,
    store: Arc<dyn ObjectStore>,
    pod_volume_timeout: std::time::Duration,
    /// The cluster's types when the restore started (what extensions' host calls reach).
    resources: Vec<discovery::Discovered>,
    hook_specs: RestoreHookSpecs,
    /// What is worth a warning in the log before the restore starts.
    notes: Vec<String>,
}

async fn validate(ctx: &Context, restore: &Restore) -> Result<Validated, Vec<String>> {
    let name = restore.name_any();
    let backup = backup_of(ctx, restore).await.map_err(|e| vec![e])?;
    let backup_name = backup.name_any();
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    if !matches!(phase, Some(BackupPhase::Completed | BackupPhase::PartiallyFailed)) {
        return Err(vec![format!(
            "backup {backup_name:?} is {}; only Completed or PartiallyFailed backups can be restored",
            phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "not started".into())
        )]);
    }
    let unknown = crate::extensions::check_requested(&ctx.extensions, &ctx.namespace, &restore.spec.extensions);
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let location = locations::resolve(ctx, backup.spec.storage_location.as_deref()).await.map_err(|e| vec![format!("{e:#}")])?;
    let store = locations::open(ctx, &location).await.map_err(|e| vec![format!("{e:#}")])?;
    let resources = discovery::discover(&ctx.client).await.map_err(|e| vec![format!("discovery: {e:#}")])?;
    let known: Vec<_> = resources.iter().map(|d| d.info.clone()).collect();
    let mut options = RestoreOptions::from_spec(&name, &backup_name, &restore.spec);
    if let Some(cm_ref) = &restore.spec.resource_modifier {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let cm = cms.get_opt(&cm_ref.name).await.map_err(|e| vec![e.to_string()])?.ok_or_else(|| {
            vec![format!("resource modifier ConfigMap {:?} not found in namespace {}", cm_ref.name, ctx.namespace)]
        })?;
        options.resource_modifiers =
            Some(ModifierSource { config_map: cm_ref.name.clone(), data: cm.data.unwrap_or_default() });
    }
    let (configured, notes) = configured_actions(ctx).await?;
    options.configured_actions = configured;
    let plan = plan(&options, &known).map_err(|e| vec![e.to_string()])?;
    let pod_volume_timeout =
        crate::podvolumes::timeout_of(restore, ctx.pod_volume_timeout).map_err(|e| vec![e])?;
    let hook_specs = RestoreHookSpecs::compile(&restore.spec.hooks)?;
    Ok(Validated { plan, backup, location, store, pod_volume_timeout, resources, hook_specs, notes })
}

/// The backup's archive: Stowage's `tar.zst`, or Velero's `tar.gz` for a backup Velero wrote.
async fn open_archive(store: &dyn ObjectStore, backup: &str) -> anyhow::Result<stowage_storage::ObjectReader> {
    let layout = StoreLayout::new(None);
    let ours = layout.backup_file(backup, BackupFile::Contents);
    let velero = velero::archive_key(&layout, backup);
    for key in [&ours, &velero] {
        match store.get_stream(key).await {
            Ok(reader) => return Ok(reader),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the storage location has no archive for it (neither {ours} nor {velero}); the backup's data is gone")
}

/// Downloads the backup's archive and unpacks it (checking every path) before anything is
/// created, so a corrupt or truncated archive fails the restore with nothing half-done.
async fn read_archive(store: &dyn ObjectStore, backup: &str, limits: stowage_pipeline::archive::ExtractLimits) -> anyhow::Result<ExtractedArchive> {
    let tmp = tempfile::NamedTempFile::new()?;
    let mut reader = open_archive(store, backup).await?;
    let mut file = tokio::fs::File::create(tmp.path()).await?;
    tokio::io::copy(&mut reader, &mut file).await?;
    drop(file);
    let extracted = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(tmp.path())?;
        ArchiveReader::new(f)?.with_limits(limits).extract_to_temp().map_err(|e| match e {
            e @ stowage_pipeline::archive::ArchiveError::OverLimit(_) => anyhow::anyhow!(
                "{e} (stowage server --archive-max-entries, --archive-max-bytes and --archive-max-entry-bytes set the limits)"
            ),
            e => anyhow::Error::from(e),
        })
    })
    .await??;
    Ok(extracted)
}

pub async fn run(ctx: Arc<Context>, restore: Arc<Restore>) -> anyhow::Result<()> {
    let name = restore.name_any();
    let log = OperationLog::new("restore", &name);
    let started = Instant::now();
    ctx.metrics.restore_attempts.inc();
    let v = match validate(&ctx, &restore).await {
        Ok(v) => v,
        Err(errors) => {
            for e in &errors {
                log.error(format!("validation: {e}"));
            }
            ctx.metrics.restore_validation_failures.inc();
            ctx.patch_status::<Restore>(&name, json!({"phase": "FailedValidation", "validationErrors": errors,
                "completionTimestamp": locations::now()})).await?;
            return Ok(());
        }
    };
    if restore.spec.backup_name.is_none() {
        // A restore of a schedule's latest backup records which backup that was, as Velero
        // does: `describe` shows it, and deleting the backup finds its restores.
        let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let spec = json!({"spec": {"backupName": v.backup.name_any()}});
        api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&spec)).await?;
    }
    let attempt = restore.status.as_ref().map_or(0, |s| s.attempts) + 1;
    ctx.patch_status::<Restore>(&name, json!({"phase": "InProgress", "startTimestamp": locations::now(), "attempts": attempt,
        "queuePosition": null, "failureReason": null})).await?;
    if attempt > 1 {
        log.warn(format!(
            "attempt {attempt} of {}: the server running attempt {} stopped before it ended (it restarted or lost its leadership); \
             resuming: objects this restore already created are recognised by its label, volumes already restored are kept",
            ctx.max_attempts,
            attempt - 1
        ));
    }
    log.info(format!("restoring backup {:?} from storage location {:?}", v.backup.name_any(), v.location.name_any()));
    for note in &v.notes {
        log.warn(note);
    }
    let result = async {
        let archive = read_archive(v.store.as_ref(), &v.backup.name_any(), ctx.archive_limits)
            .await
            .with_context(|| format!("reading the archive of backup {:?}", v.backup.name_any()))?;
        let volume_backups = crate::podvolumes::load(v.store.as_ref(), &v.backup.name_any())
            .await
            .map_err(|e| anyhow::anyhow!("reading the pod volume backups of backup {:?}: {e:#}", v.backup.name_any()))?;
        let mut restorer = volumes::Restorer::new(&ctx, &restore, &v.location.name_any(), volume_backups, v.pod_volume_timeout, &log).await;
        let uid = restore.metadata.uid.clone().unwrap_or_default();
        let mut extensions =
            Extensions::start(&ctx, stowage_runtime::OperationKind::Restore, (&name, &uid), &restore.spec.extensions, v.resources.clone(), &log);
        let mut hooks = RestoreHookRunner::new(&ctx, &restore, &v.hook_specs, v.resources.clone(), &log);
        let mut done = apply::apply_all(&ctx, &v.plan, &archive, &mut restorer, &mut hooks, &mut extensions, &log).await?;
        done.extension_report = extensions.report();
        if restorer.created > 0 {
            let uid = restore.metadata.uid.clone().unwrap_or_default();
            let waited = volumes::wait(&ctx, &name, &uid, restorer.created, v.pod_volume_timeout, &log, &mut done.outcome).await;
            restorer.finish(&ctx).await;
            waited?;
        }
        hooks.run(v.pod_volume_timeout, &mut done.outcome).await;
        done.hook_status = hooks.ledger.status();
        if let Some(hook_report) = hooks.extension_report().await {
            let report = done.extension_report.get_or_insert_with(Default::default);
            report.extensions.extend(hook_report.extensions);
        }
        anyhow::Ok(done)
    }
    .await;
    ctx.metrics.restore_duration.observe(started.elapsed().as_secs_f64());
    let writable = locations::ensure_writable(&v.location).is_ok();
    match result {
        Ok(done) => {
            let phase = if done.outcome.error_count() > 0 { "PartiallyFailed" } else { "Completed" };
            log.outcome(&done.outcome);
            log.info(format!("restore {phase}: {} items restored, {} warnings, {} errors", done.restored,
                done.outcome.warning_count(), done.outcome.error_count()));
            if writable {
                upload(v.store.as_ref(), &name, &log, Some(&done)).await?;
            }
            if phase == "Completed" {
                ctx.metrics.restore_successes.inc();
            } else {
                ctx.metrics.restore_partial_failures.inc();
            }
            ctx.metrics.restore_items.set(i64::from(done.restored));
            let runs = done.extension_report.as_ref().map(extensions::runs).unwrap_or_default();
            ctx.patch_status::<Restore>(&name, json!({"phase": phase, "completionTimestamp": locations::now(),
                "extensions": runs, "hookStatus": done.hook_status,
                "warnings": done.outcome.warning_count(), "errors": done.outcome.error_count(),
                "progress": {"totalItems": done.total, "itemsRestored": done.restored}})).await?;
        }
        Err(e) => {
            log.error(format!("restore failed: {e:#}"));
            ctx.metrics.restore_failures.inc();
            if writable {
                let _ = upload(v.store.as_ref(), &name, &log, None).await;
            }
            // The API server may be what failed.
            let reason = crate::context::failure_reason(&e);
            ctx.record_end::<Restore>(&name, json!({"phase": "Failed", "failureReason": reason,
                "completionTimestamp": locations::now()})).await?;
        }
    }
    Ok(())
}

async fn upload(store: &dyn ObjectStore, name: &str, log: &OperationLog, done: Option<&apply::Applied>) -> anyhow::Result<()> {
    let layout = StoreLayout::new(None);
    if let Some(done) = done {
        store.put(&layout.restore_file(name, RestoreFile::Results), compress_json(&done.outcome)?.into()).await?;
        let list: BTreeMap<&String, &Vec<String>> = done.resource_list.iter().collect();
        store.put(&layout.restore_file(name, RestoreFile::ResourceList), compress_json(&list)?.into()).await?;
        if let Some(report) = &done.extension_report {
            store.put(&layout.restore_file(name, RestoreFile::Extensions), report.to_json_zst()?.into()).await?;
        }
    }
    store.put(&layout.restore_file(name, RestoreFile::Log), log.compressed()?.into()).await?;
    Ok(())
}

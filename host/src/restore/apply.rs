//! Creating the restored objects, resource by resource in priority order.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_pipeline::archive::ExtractedArchive;
use stowage_pipeline::restore::existing::{compare, ExistingAction};
use stowage_pipeline::restore::order::by_priority;
use stowage_pipeline::restore::plan::RestorePlan;
use stowage_pipeline::restore::scope::RestoreScope;
use stowage_pipeline::restore::transform::{decide_volume, transform, VolumeDecision};
use stowage_pipeline::{Item, Outcome};

use super::volumes::Restorer;
use crate::extensions::Extensions;
use crate::discovery::{self, Discovered};
use crate::oplog::OperationLog;
use crate::context::Context;
use crate::hooks::restore::RestoreHookRunner;

#[derive(Default)]
pub struct Applied {
    pub outcome: Outcome,
    pub total: u32,
    pub restored: u32,
    /// `apiVersion/Kind` -> `namespace/name` of what was created or updated.
    pub resource_list: BTreeMap<String, Vec<String>>,
    /// The hooks that ran (None: none).
    pub hook_status: Option<stowage_api::hooks::HookStatus>,
    /// What the extensions did (None: no extension was active).
    pub extension_report: Option<stowage_runtime::ExtensionReport>,
}

/// The PersistentVolumes recreated as they were (the others are provisioned anew for their claims).
fn restored_volumes(
    plan: &RestorePlan,
    scope: &RestoreScope,
    archive: &ExtractedArchive,
    log: &OperationLog,
) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for res in archive.resources()?.iter().filter(|r| r.group_resource.is("", "persistentvolumes")) {
        for loc in archive.items(res)? {
            let pv = archive.read(&loc)?;
            if !scope.includes(&pv) {
                continue;
            }
            match decide_volume(&pv, plan.restore_pvs, false) {
                VolumeDecision::Restore => {
                    out.insert(pv.name.clone());
                }
                VolumeDecision::Reprovision { reason } => log.info(format!("not restoring persistent volume {}: {reason}", pv.name)),
            }
        }
    }
    Ok(out)
}

pub async fn apply_all(
    ctx: &Context,
    plan: &RestorePlan,
    archive: &ExtractedArchive,
    volumes_restorer: &mut Restorer,
    hooks: &mut RestoreHookRunner<'_>,
    extensions: &mut Extensions,
    log: &OperationLog,
) -> anyhow::Result<Applied> {
    let mut done = Applied::default();
    let resources = archive.resources()?;
    let order = by_priority(resources.iter().map(|r| r.group_resource.clone()), &plan.priorities);
    let scope = RestoreScope::new(plan, archive)?;
    let volumes = restored_volumes(plan, &scope, archive, log)?;
    let tctx = plan.transform_context(&volumes);
    let mut discovered = discovery::discover(&ctx.client).await?;
    let mut namespaces_ready = BTreeSet::new();
    for res in &resources {
        done.total += archive.items(res)?.len() as u32;
    }
    for gr in order {
        let Some(res) = resources.iter().find(|r| r.group_resource == gr) else { continue };
        let Some(d) = discovery::find(&discovered, &gr.group, &gr.resource).cloned() else {
            done.outcome.error(None, format!("{gr} is not served by this cluster; install its CustomResourceDefinition or exclude it"));
            continue;
        };
        for loc in archive.items(res)? {
            let item = match archive.read(&loc) {
                Ok(i) => i,
                Err(e) => {
                    done.outcome.error(loc.item_ref.namespace.as_deref(), format!("reading {}: {e}", loc.item_ref));
                    continue;
                }
            };
            if !scope.includes(&item) || (gr.is("", "persistentvolumes") && !volumes.contains(&item.name)) {
                continue;
            }
            let source_namespace = item.namespace.clone().unwrap_or_default();
            let backed_up = extensions.is_active().then(|| item.clone());
            let t = transform(item, &tctx);
            let mut item = t.item;
            for w in t.warnings {
                done.outcome.warn(item.namespace.as_deref(), w);
            }
            for change in plan.configured_actions.apply(&mut item) {
                log.info(change);
            }
            let mut additional = Vec::new();
            if let Some(original) = &backed_up {
                // Extensions after the built-in restore item actions, before resource modifiers.
                if let Err(why) = extensions.filter(&mut item, &mut done.outcome) {
                    log.info(format!("{}: {why}", item.item_ref()));
                    continue;
                }
                match extensions.restore_item_actions(item, original, &mut done.outcome) {
                    Some((changed, extra)) => {
                        item = changed;
                        additional = extra;
                    }
                    None => {
                        log.info(format!("{}: skipped by a restore item action", original.item_ref()));
                        continue;
                    }
                }
            }
            if let Some(m) = &plan.modifiers {
                for e in m.apply(&mut item) {
                    done.outcome.error(item.namespace.as_deref(), e);
                }
            }
            if let Some(ns) = item.namespace.clone() {
                if namespaces_ready.insert(ns.clone()) {
                    ensure_namespace(ctx, plan, &ns, &mut done.outcome).await;
                }
            }
            if item.is("", "pods") {
                volumes_restorer.before_pod(ctx, log, &mut done.outcome).await;
            }
            volumes_restorer.prepare(&source_namespace, &mut item);
            let pod_hooks = hooks.prepare(&mut item, &mut done.outcome);
            match create_or_compare(ctx, plan, &d, &item, volumes_restorer.resuming(), &mut done).await {
                Some(Created::New(obj)) => {
                    hooks.created(&obj, pod_hooks);
                    volumes_restorer.created(ctx, &source_namespace, &item, &obj, &mut done.outcome).await
                }
                Some(Created::Existing) => volumes_restorer.existing(&source_namespace, &item, &mut done.outcome),
                Some(Created::Earlier(obj)) => {
                    hooks.created(&obj, pod_hooks);
                    volumes_restorer.resumed(ctx, &source_namespace, &item, &obj, &mut done.outcome).await
                }
                None => {}
            }
            for extra in additional {
                if let Err(why) = plan.includes_added(&extra) {
                    let message = format!("{} added by an extension is outside this restore ({why}): not restored", extra.item_ref());
                    done.outcome.warn(extra.namespace.as_deref(), message);
                    continue;
                }
                match discovery::find(&discovered, &extra.group, &extra.resource).cloned() {
                    Some(d) => {
                        create_or_compare(ctx, plan, &d, &extra, volumes_restorer.resuming(), &mut done).await;
                    }
                    None => done.outcome.warn(extra.namespace.as_deref(), format!("{} added by an extension is not served", extra.item_ref())),
                }
            }
            if done.restored % 50 == 0 {
                let _ = ctx.patch_status::<stowage_api::Restore>(&plan.restore_name,
                    json!({"progress": {"totalItems": done.total, "itemsRestored": done.restored}})).await;
            }
        }
        if gr.is("apiextensions.k8s.io", "customresourcedefinitions") {
            // Custom resources restored next need their types served.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            discovered = discovery::discover(&ctx.client).await?;
        }
    }
    Ok(done)
}

/// Namespaces of namespaced objects exist before the objects; one missing from the backup is
/// created empty, as Velero does.
async fn ensure_namespace(ctx: &Context, plan: &RestorePlan, ns: &str, outcome: &mut Outcome) {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                stowage_api::labels::BACKUP_NAME.name: plan.backup_name,
                stowage_api::labels::RESTORE_NAME.name: plan.restore_name}}}))
            .unwrap_or_default();
            if let Err(e) = api.create(&PostParams::default(), &obj).await {
                outcome.error(Some(ns), format!("creating namespace {ns}: {e}"));
            }
        }
        Err(e) => outcome.error(Some(ns), format!("getting namespace {ns}: {e}")),
    }
}

/// What became of an object: created, found already there, or found created by an earlier
/// attempt of this restore (a server stopped while it ran).
enum Created {
    New(Box<DynamicObject>),
    Existing,
    Earlier(Box<DynamicObject>),
}

/// `resuming`: this is a later attempt of the restore; objects labelled with its name are its own.
async fn create_or_compare(ctx: &Context, plan: &RestorePlan, d: &Discovered, item: &Item, resuming: bool, done: &mut Applied) -> Option<Created> {
    let api: Api<DynamicObject> = match &item.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &d.api),
        None => Api::all_with(ctx.client.clone(), &d.api),
    };
    let ns = item.namespace.as_deref();
    let obj: DynamicObject = match serde_json::from_value(item.object.clone()) {
        Ok(o) => o,
        Err(e) => {
            done.outcome.error(ns, format!("{item}: not a Kubernetes object: {e}"));
            return None;
        }
    };
    let record = |done: &mut Applied| {
        done.restored += 1;
        let key = format!("{}/{}", item.api_version(), item.kind);
        let entry = ns.map(|n| format!("{n}/{}", item.name)).unwrap_or_else(|| item.name.clone());
        done.resource_list.entry(key).or_default().push(entry);
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => {
            record(done);
            Some(Created::New(Box::new(created)))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let live = match api.get(&item.name).await {
                Ok(l) if resuming && created_by(&l, &plan.restore_name) => {
                    record(done);
                    return Some(Created::Earlier(Box::new(l)));
                }
                Ok(l) => serde_json::to_value(l).unwrap_or_default(),
                Err(e) => {
                    done.outcome.error(ns, format!("{item} exists but cannot be read: {e}"));
                    return Some(Created::Existing);
                }
            };
            match compare(item, &live, plan.existing_resource_policy) {
                ExistingAction::Unchanged => {}
                ExistingAction::Skip { warning } => done.outcome.warn(ns, warning),
                ExistingAction::Patch { merge_patch } => {
                    match api.patch(&item.name, &PatchParams::default(), &Patch::Merge(&merge_patch)).await {
                        Ok(_) => record(done),
                        Err(e) => done.outcome.error(ns, format!("updating existing {item}: {e}")),
                    }
                }
            }
            Some(Created::Existing)
        }
        Err(e) => {
            done.outcome.error(ns, format!("creating {item}: {e}"));
            None
        }
    }
}


/// Whether `live` was created by the restore named `restore` (its label says so): an earlier
/// attempt of the same restore, not a conflict.
fn created_by(live: &DynamicObject, restore: &str) -> bool {
    live.labels().get(stowage_api::labels::RESTORE_NAME.name).is_some_and(|r| r == restore)
}

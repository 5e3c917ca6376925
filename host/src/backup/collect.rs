//! Collect: list every resource in scope (paged), take what the selection takes, pull in
//! related objects, and stream each item into the archive as it comes.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{json, Value};
use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::related::{related, Related};
use stowage_pipeline::seen::SeenItems;
use stowage_pipeline::{GroupResource, Item};

use super::stage::{ExtensionStage, StageStopped, Staged};
use super::{BackupOutcome, BackupPlan};
use crate::discovery::{self, Discovered};
use crate::oplog::OperationLog;
use crate::extensions::Extensions;
use crate::context::Context;

const PAGE: u32 = 500;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

struct Collector<'a, W: Write> {
    plan: &'a BackupPlan,
    extensions: &'a mut Extensions,
    /// The extensions at work on a thread of their own, when there are any.
    stage: Option<ExtensionStage>,
    /// Set when the stage's thread died: the backup takes no more items and fails.
    stage_error: Option<StageStopped>,
    /// Set while items back from the stage are being written (see [`Self::take_ready`]).
    draining: bool,
    log: &'a OperationLog,
    writer: ArchiveWriter<W>,
    seen: SeenItems,
    related: VecDeque<Related>,
    out: BackupOutcome,
    listed: u32,
}

impl<'a, W: Write> Collector<'a, W> {
    fn new(
        plan: &'a BackupPlan,
        extensions: &'a mut Extensions,
        stage: Option<ExtensionStage>,
        log: &'a OperationLog,
        writer: ArchiveWriter<W>,
    ) -> Self {
        Collector {
            plan,
            extensions,
            stage,
            stage_error: None,
            draining: false,
            log,
            writer,
            seen: SeenItems::default(),
            related: VecDeque::new(),
            out: BackupOutcome::default(),
            listed: 0,
        }
    }

    fn take(&mut self, mut item: Item) {
        if self.stage_error.is_some() {
            return;
        }
        let item_ref = item.item_ref();
        if !self.seen.insert(&item_ref) {
            return;
        }
        if let Some(stage) = self.stage.as_mut() {
            if let Err(e) = stage.send(item) {
                return self.stage_failed(e);
            }
            return self.take_ready();
        }
        // Extensions come after the built-in filters and actions.
        if let Err(why) = self.extensions.filter(&mut item, &mut self.out.outcome) {
            self.log.info(format!("{item_ref}: {why}"));
            return;
        }
        let (item, additional) = self.extensions.item_actions(item, &mut self.out.outcome);
        self.write(item);
        for extra in additional {
            if self.plan.selection.includes_related(&extra).is_ok() {
                self.take(extra);
            }
        }
    }

    /// Writes the items the stage is done with. The items they add go to the stage from
    /// within; only the outermost call takes what is ready, so the depth of calls does not
    /// grow with the items in flight.
    fn take_ready(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        while let Some(staged) = self.stage.as_mut().and_then(ExtensionStage::ready) {
            self.staged(staged);
        }
        self.draining = false;
    }

    /// An item back from the extension stage: written, or logged as excluded.
    fn staged(&mut self, staged: Staged) {
        self.out.outcome.merge(staged.outcome);
        match staged.verdict {
            Err(why) => self.log.info(format!("{}: {why}", staged.item.item_ref())),
            Ok(additional) => {
                self.write(staged.item);
                for extra in additional {
                    if self.plan.selection.includes_related(&extra).is_ok() {
                        self.take(extra);
                    }
                }
            }
        }
    }

    /// Waits for the items still in the extension stage, and writes them and what they add.
    fn settle(&mut self) {
        let draining = std::mem::replace(&mut self.draining, true);
        while let Some(stage) = self.stage.as_mut() {
            match stage.next() {
                Ok(Some(staged)) => self.staged(staged),
                Ok(None) => break,
                Err(e) => self.stage_failed(e),
            }
        }
        self.draining = draining;
    }

    /// The stage's thread died (a bug). Its items in flight are lost, and the items after them
    /// would go unfiltered and unchanged (what an exclusion filter keeps out of backups would
    /// be in this one): the backup takes no more items and fails.
    fn stage_failed(&mut self, e: StageStopped) {
        self.stage_error.get_or_insert(e);
        self.stage = None;
    }

    /// Ends the extension stage, if there is one, and gives the extensions back for the
    /// report; an error when the stage died.
    fn finish_stage(&mut self) -> anyhow::Result<()> {
        if let Some(stage) = self.stage.take() {
            match stage.finish() {
                Ok(extensions) => *self.extensions = extensions,
                Err(e) => self.stage_failed(e),
            }
        }
        match self.stage_error.take() {
            None => Ok(()),
            Some(e) => anyhow::bail!(
                "{e}; the backup stopped there, since the items after it would have missed their extensions. \
                 This is a bug: please report it with the server's log. A new backup may succeed"
            ),
        }
    }

    fn write(&mut self, mut item: Item) {
        // A workload another backup keeps at zero replicas is archived as it was before.
        unquiesce(&mut item);
        let item_ref = item.item_ref();
        if let Err(e) = self.writer.add_item(&item) {
            self.out.outcome.error(item.namespace.as_deref(), format!("writing {item_ref}: {e}"));
            return;
        }
        self.related.extend(related(&item));
        self.out.volume_candidates.observe(&item, self.plan.default_volumes_to_fs_backup, self.plan.any_pod_may_have_hooks);
        let key = format!("{}/{}", item.api_version(), item.kind);
        let entry = match &item.namespace {
            Some(ns) => format!("{ns}/{}", item.name),
            None => item.name.clone(),
        };
        self.out.resource_list.entry(key).or_default().push(entry);
        self.out.items += 1;
    }
}

fn item_of(obj: DynamicObject, d: &Discovered) -> Result<Item, String> {
    let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    Item::new(value, &d.info).map_err(|e| e.to_string())
}

/// Lists, filters and writes; returns what was written and what went wrong on the way.
pub async fn collect_and_write(
    ctx: &Context,
    plan: &BackupPlan,
    extensions: &mut Extensions,
    log: &OperationLog,
    file: std::fs::File,
) -> anyhow::Result<BackupOutcome> {
    let writer = ArchiveWriter::new(BufWriter::new(file))?;
    let stage = if extensions.is_active() { Some(ExtensionStage::start(extensions.take())?) } else { None };
    let mut c = Collector::new(plan, extensions, stage, log, writer);
    let mut last_progress = Instant::now();
    'resources: for d in &plan.resources {
        if plan.selection.includes_resource(&d.info).is_err() {
            continue;
        }
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &d.api);
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let page = match api.list(&lp).await {
                Ok(p) => p,
                Err(e) => {
                    c.out.outcome.error(None, format!("listing {}: {e}", d.info.group_resource()));
                    break;
                }
            };
            for obj in page.items {
                c.listed += 1;
                match item_of(obj, d) {
                    Ok(item) if plan.selection.includes_item(&item).is_ok() => c.take(item),
                    Ok(_) => {}
                    Err(e) => c.out.outcome.warn(None, format!("skipping a {} object: {e}", d.info.group_resource())),
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                report_progress(ctx, plan, &c).await;
                last_progress = Instant::now();
            }
            if c.stage_error.is_some() {
                break 'resources;
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
    }
    if c.stage_error.is_none() {
        take_namespaces(ctx, &mut c).await;
        take_related(ctx, &mut c).await;
    }
    c.finish_stage()?;
    let mut sink = c.writer.finish()?;
    sink.flush()?;
    c.log.info(format!("backed up {} items ({} listed)", c.out.items, c.listed));
    Ok(c.out)
}

async fn report_progress<W: Write>(ctx: &Context, plan: &BackupPlan, c: &Collector<'_, W>) {
    let progress = json!({"progress": {"totalItems": c.listed.max(c.out.items), "itemsBackedUp": c.out.items}});
    if let Err(e) = ctx.patch_status::<stowage_api::Backup>(&plan.name, progress).await {
        tracing::debug!("progress update for backup {}: {e}", plan.name);
    }
}

/// The Namespace objects of the namespaces a backup covers, so a restore can recreate them with
/// their labels and annotations.
async fn take_namespaces<W: Write>(ctx: &Context, c: &mut Collector<'_, W>) {
    let Some(d) = discovery::find(&c.plan.resources, "", "namespaces") else { return };
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &d.api);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            for obj in list.items {
                if let Ok(item) = item_of(obj, d) {
                    if c.plan.selection.includes_related(&item).is_ok() && c.plan.selection.includes_namespace(&item.name).is_ok() {
                        c.take(item);
                    }
                }
            }
        }
        Err(e) => c.out.outcome.error(None, format!("listing namespaces: {e}")),
    }
}

/// Objects named by the ones taken: a pod's claims and service account, a claim's volume, a
/// custom resource's definition.
async fn take_related<W: Write>(ctx: &Context, c: &mut Collector<'_, W>) {
    // Items still in the extension stage may name more: they are waited for when the queue
    // runs dry.
    while let Some(rel) = c.related.pop_front().or_else(|| {
        c.settle();
        c.related.pop_front()
    }) {
        if c.stage_error.is_some() {
            break;
        }
        if c.seen.contains(&rel.target) {
            continue;
        }
        let GroupResource { group, resource } = &rel.target.group_resource;
        let Some(d) = discovery::find(&c.plan.resources, group, resource) else {
            if !rel.may_be_absent() {
                c.out.outcome.warn(rel.target.namespace.as_deref(), format!("{} is not served by the cluster", rel.target));
            }
            continue;
        };
        let api: Api<DynamicObject> = match &rel.target.namespace {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &d.api),
            None => Api::all_with(ctx.client.clone(), &d.api),
        };
        match api.get_opt(&rel.target.name).await {
            Ok(Some(obj)) => match item_of(obj, d) {
                Ok(item) if c.plan.selection.includes_related(&item).is_ok() => {
                    c.log.info(format!("including {} ({:?})", rel.target, rel.relation));
                    c.take(item);
                }
                Ok(_) => {}
                Err(e) => c.out.outcome.warn(rel.target.namespace.as_deref(), format!("{}: {e}", rel.target)),
            },
            Ok(None) if rel.may_be_absent() => {}
            Ok(None) => c.out.outcome.warn(
                rel.target.namespace.as_deref(),
                format!("{} is referenced ({:?}) but does not exist", rel.target, rel.relation),
            ),
            Err(e) => c.out.outcome.error(rel.target.namespace.as_deref(), format!("getting {}: {e}", rel.target)),
        }
    }
}

/// Takes the scale-to-zero journal (`stowage.io/quiesced-replicas`) out of an archived
/// workload, and gives it back the replicas it records.
fn unquiesce(item: &mut Item) {
    let key = stowage_api::labels::QUIESCED_REPLICAS.name;
    let Some(annotations) = item.object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else { return };
    let Some(mark) = annotations.remove(key) else { return };
    if annotations.is_empty() {
        if let Some(metadata) = item.object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("annotations");
        }
    }
    let replicas = mark.as_str().and_then(|m| serde_json::from_str::<Value>(m).ok()).and_then(|m| m.get("replicas").cloned());
    if let (Some(replicas), Some(spec)) = (replicas, item.object.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert("replicas".into(), replicas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::stage::Staged;
    use serde_json::json;
    use stowage_api::BackupStorageLocation;
    use stowage_pipeline::{ApiResourceInfo, Outcome, ResourceSelection, SelectionOptions};

    fn configmaps() -> ApiResourceInfo {
        ApiResourceInfo::new("", "v1", "configmaps", "ConfigMap", true)
    }

    fn configmap(n: u32) -> Item {
        Item::new(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{n}"), "namespace": "shop"}}), &configmaps())
            .unwrap()
    }

    #[test]
    fn an_archived_workload_carries_no_quiesce_journal_and_its_own_replicas() {
        let info = ApiResourceInfo::new("apps", "v1", "statefulsets", "StatefulSet", true);
        let mark = r#"{"replicas":2,"backup":"nightly","uid":"u1"}"#;
        let object = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop",
            "annotations": {"stowage.io/quiesced-replicas": mark}}, "spec": {"replicas": 0}});
        let mut item = Item::new(object, &info).unwrap();
        unquiesce(&mut item);
        assert_eq!(item.object["spec"]["replicas"], 2);
        assert!(item.object["metadata"].get("annotations").is_none());
        let untouched = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"}, "spec": {"replicas": 0}});
        let mut item = Item::new(untouched.clone(), &info).unwrap();
        unquiesce(&mut item);
        assert_eq!(item.object, untouched);
    }

    fn plan() -> BackupPlan {
        BackupPlan {
            name: "b".into(),
            location: BackupStorageLocation::new("default", Default::default()),
            selection: ResourceSelection::resolve(&SelectionOptions::default(), &[configmaps()]).unwrap(),
            resources: Vec::new(),
            ttl: Duration::from_secs(3600),
            default_volumes_to_fs_backup: false,
            pod_volume_timeout: Duration::from_secs(60),
            hook_specs: stowage_pipeline::hooks::BackupHookSpecs::compile(&Default::default()).unwrap(),
            any_pod_may_have_hooks: false,
            backup_unmounted_volumes: false,
            attempt: 1,
        }
    }

    /// A stage that dies (a bug) on cm-100: the items after it would miss their extensions, so
    /// none of them is written and the backup fails, naming the panic.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_whose_extension_stage_dies_takes_no_more_items_and_fails() {
        let plan = plan();
        let log = OperationLog::new("backup", "b");
        let mut extensions = Extensions::inactive();
        let stage = ExtensionStage::spawn(Extensions::inactive(), |_, item| {
            assert_ne!(item.name, "cm-100", "a bug in the stage");
            Staged { verdict: Ok(Vec::new()), item, outcome: Outcome::default() }
        })
        .unwrap();
        let mut c = Collector::new(&plan, &mut extensions, Some(stage), &log, ArchiveWriter::new(Vec::new()).unwrap());
        for n in 0..300 {
            c.take(configmap(n));
        }
        c.settle();
        let err = c.finish_stage().unwrap_err().to_string();
        assert!(err.contains("extension stage stopped") && err.contains("a bug in the stage"), "{err}");
        // Only items of the batch the stage finished (cm-0 to cm-63), if any, are written.
        let written = c.out.resource_list.get("v1/ConfigMap").cloned().unwrap_or_default();
        assert_eq!(written.len(), c.out.items as usize);
        for name in &written {
            let n: u32 = name.trim_start_matches("shop/cm-").parse().unwrap();
            assert!(n < 64, "{name} was written after the stage died: {written:?}");
        }
    }

    /// Items come back from the stage in order, with the items their actions add taken after
    /// them, however many batches are in flight.
    #[tokio::test(flavor = "multi_thread")]
    async fn items_and_what_their_actions_add_are_written_in_order_through_many_batches() {
        let plan = plan();
        let log = OperationLog::new("backup", "b");
        let mut extensions = Extensions::inactive();
        // Every item adds one (cm-N adds cm-(N+10000)), which the stage sees too.
        let stage = ExtensionStage::spawn(Extensions::inactive(), |_, item| {
            let n: u32 = item.name.trim_start_matches("cm-").parse().unwrap();
            let additional = if n < 10_000 { vec![configmap(n + 10_000)] } else { Vec::new() };
            std::thread::sleep(Duration::from_micros(20));
            Staged { verdict: Ok(additional), item, outcome: Outcome::default() }
        })
        .unwrap();
        let mut c = Collector::new(&plan, &mut extensions, Some(stage), &log, ArchiveWriter::new(Vec::new()).unwrap());
        for n in 0..2_000 {
            c.take(configmap(n));
        }
        c.settle();
        c.finish_stage().unwrap();
        let written = &c.out.resource_list["v1/ConfigMap"];
        assert_eq!(written.len(), 4_000);
        // Each item is written before the one it added, and the listed ones in their order.
        let at: std::collections::HashMap<&str, usize> = written.iter().enumerate().map(|(i, w)| (w.as_str(), i)).collect();
        let position = |n: u32| at[format!("shop/cm-{n}").as_str()];
        let listed: Vec<usize> = (0..2_000).map(position).collect();
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "listed items in order");
        for n in 0..2_000 {
            assert!(position(n) < position(n + 10_000), "cm-{n} before what it added");
        }
    }
}

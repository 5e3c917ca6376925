//! Collect: list every resource in scope (paged), take what the selection takes, pull in
//! related objects, and stream each item into the archive as it comes.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;
use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::related::{related, Related};
use stowage_pipeline::seen::SeenItems;
use stowage_pipeline::{GroupResource, Item};

use super::stage::{ExtensionStage, StageStopped, Staged};
use super::{BackupOutcome, BackupPlan};
use crate::discovery::{self, Discovered};
use crate::server::oplog::OperationLog;
use crate::server::extensions::Extensions;
use crate::server::Context;

const PAGE: u32 = 500;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

struct Collector<'a, W: Write> {
    plan: &'a BackupPlan,
    extensions: &'a mut Extensions,
    /// The extensions at work on a thread of their own, when there are any.
    stage: Option<ExtensionStage>,
    log: &'a OperationLog,
    writer: ArchiveWriter<W>,
    seen: SeenItems,
    related: VecDeque<Related>,
    out: BackupOutcome,
    listed: u32,
}

impl<W: Write> Collector<'_, W> {
    fn take(&mut self, mut item: Item) {
        let item_ref = item.item_ref();
        if !self.seen.insert(&item_ref) {
            return;
        }
        if let Some(stage) = self.stage.as_mut() {
            if let Err(e) = stage.send(item) {
                self.stage_failed(e);
            }
            while let Some(staged) = self.stage.as_mut().and_then(ExtensionStage::ready) {
                self.staged(staged);
            }
            return;
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
        loop {
            let Some(stage) = self.stage.as_mut() else { return };
            match stage.next() {
                Ok(Some(staged)) => self.staged(staged),
                Ok(None) => return,
                Err(e) => return self.stage_failed(e),
            }
        }
    }

    /// The stage's thread died (a bug): its items in flight are lost, the backup says so, and
    /// the rest of the items go without extensions.
    fn stage_failed(&mut self, e: StageStopped) {
        self.out.outcome.error(None, e.to_string());
        self.stage = None;
    }

    fn write(&mut self, item: Item) {
        let item_ref = item.item_ref();
        if let Err(e) = self.writer.add_item(&item) {
            self.out.outcome.error(item.namespace.as_deref(), format!("writing {item_ref}: {e}"));
            return;
        }
        self.related.extend(related(&item));
        self.out.volume_candidates.observe(&item, self.plan.default_volumes_to_fs_backup);
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
    let mut c = Collector {
        plan,
        extensions,
        stage,
        log,
        writer,
        seen: SeenItems::default(),
        related: VecDeque::new(),
        out: BackupOutcome::default(),
        listed: 0,
    };
    let mut last_progress = Instant::now();
    for d in &plan.resources {
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
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
    }
    take_namespaces(ctx, &mut c).await;
    take_related(ctx, &mut c).await;
    if let Some(stage) = c.stage.take() {
        match stage.finish() {
            Ok(extensions) => *c.extensions = extensions,
            Err(e) => c.out.outcome.error(None, e.to_string()),
        }
    }
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

//! The extension stage of a backup, on a thread of its own.
//!
//! Item filters and actions run guest code and scripts: CPU work, one item after another.
//! While the stage works on one core, the collector lists pages, selects items and writes the
//! archive on another, so a backup with extensions keeps more of the throughput it has without
//! them (BENCHMARKS.md: 0.56× instead of 0.38× with three extensions on every item, on two
//! cores). Items come back in the order they went in. The stage owns the operation's
//! [`Extensions`] while it runs and hands them back when it is finished, for the report.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use stowage_pipeline::{Item, Outcome};

use crate::extensions::Extensions;

/// Items are handed over in batches of this many, each way: one hand-over (and at most one
/// wake-up of the other thread) per batch, not per item, which would cost more than a cheap
/// extension's call.
const BATCH: usize = 64;

/// Batches handed to the stage and not yet taken by it; the collector waits when it is this far
/// ahead (the batches coming back are not bounded, but at most this many more are in flight).
const QUEUE: usize = 4;

/// What the stage made of one item.
pub(super) struct Staged {
    /// The item after the item actions, and the items they add; `Err` with the reason when a
    /// filter excluded it (`item` is then the item as given, for its name).
    pub verdict: Result<Vec<Item>, String>,
    pub item: Item,
    /// The extensions' warnings and errors on this item.
    pub outcome: Outcome,
}

pub(super) struct ExtensionStage {
    input: Option<Sender<Vec<Item>>>,
    output: Receiver<Vec<Staged>>,
    thread: Option<JoinHandle<Extensions>>,
    /// Items not handed over yet (a batch filling up).
    pending: Vec<Item>,
    /// Items back from the stage, not taken yet.
    done: VecDeque<Staged>,
    /// Items handed over or pending, not taken back yet.
    in_flight: usize,
}

/// The stage's thread ended before it was finished: it panicked (a bug), with this message.
#[derive(Debug, thiserror::Error)]
#[error("the backup's extension stage stopped: {0}")]
pub(super) struct StageStopped(String);

impl ExtensionStage {
    /// Starts the stage with the operation's extensions. Host calls the extensions make are
    /// run on the tokio runtime current here.
    pub fn start(extensions: Extensions) -> std::io::Result<ExtensionStage> {
        Self::spawn(extensions, run_one)
    }

    /// Starts the stage's thread, which puts each item through `each`.
    pub(super) fn spawn(
        mut extensions: Extensions,
        mut each: impl FnMut(&mut Extensions, Item) -> Staged + Send + 'static,
    ) -> std::io::Result<ExtensionStage> {
        let (input, batches) = crossbeam_channel::bounded::<Vec<Item>>(QUEUE);
        let (done, output) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("backup-extensions".into())
            .stack_size(stowage_runtime::EXTENSION_STACK_SIZE)
            .spawn(move || {
                for batch in batches {
                    let staged: Vec<Staged> = batch.into_iter().map(|item| each(&mut extensions, item)).collect();
                    if done.send(staged).is_err() {
                        break;
                    }
                }
                extensions
            })?;
        Ok(ExtensionStage {
            input: Some(input),
            output,
            thread: Some(thread),
            pending: Vec::with_capacity(BATCH),
            done: VecDeque::new(),
            in_flight: 0,
        })
    }

    /// Hands `item` to the stage (with the next full batch); waits (off the async runtime)
    /// while the stage is [`QUEUE`] batches behind.
    pub fn send(&mut self, item: Item) -> Result<(), StageStopped> {
        self.pending.push(item);
        self.in_flight += 1;
        if self.pending.len() < BATCH {
            return Ok(());
        }
        self.hand_over()
    }

    /// Hands over the pending items, if any.
    fn hand_over(&mut self) -> Result<(), StageStopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let input = self.input.as_ref().expect("the stage is not finished");
        let sent = match input.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(batch)) => tokio::task::block_in_place(|| input.send(batch)).is_ok(),
            Err(TrySendError::Disconnected(_)) => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.stopped())
        }
    }

    /// The next item the stage is done with, if one is ready.
    pub fn ready(&mut self) -> Option<Staged> {
        if self.done.is_empty() {
            self.done.extend(self.output.try_recv().ok()?);
        }
        let staged = self.done.pop_front()?;
        self.in_flight -= 1;
        Some(staged)
    }

    /// The next item the stage is done with, handing over the pending ones and waiting for it;
    /// `None` when none is in flight.
    pub fn next(&mut self) -> Result<Option<Staged>, StageStopped> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        self.hand_over()?;
        if self.done.is_empty() {
            match tokio::task::block_in_place(|| self.output.recv()) {
                Ok(batch) => self.done.extend(batch),
                Err(_) => return Err(self.stopped()),
            }
        }
        self.in_flight -= 1;
        Ok(self.done.pop_front())
    }

    /// Ends the stage (every item must have come back) and returns the extensions.
    pub fn finish(mut self) -> Result<Extensions, StageStopped> {
        debug_assert_eq!(self.in_flight, 0, "items still in the stage");
        self.input = None;
        let thread = self.thread.take().expect("finished once");
        tokio::task::block_in_place(|| thread.join()).map_err(|panic| StageStopped(panic_message(&*panic)))
    }

    /// Why the stage's thread is gone: the message of its panic.
    fn stopped(&mut self) -> StageStopped {
        match self.thread.take().map(|t| tokio::task::block_in_place(|| t.join())) {
            Some(Err(panic)) => StageStopped(panic_message(&*panic)),
            _ => StageStopped("its thread ended".into()),
        }
    }
}

/// The item filters, then (when they keep it) the item actions.
fn run_one(extensions: &mut Extensions, mut item: Item) -> Staged {
    let mut outcome = Outcome::default();
    match extensions.filter(&mut item, &mut outcome) {
        Err(why) => Staged { verdict: Err(why), item, outcome },
        Ok(()) => {
            let (item, additional) = extensions.item_actions(item, &mut outcome);
            Staged { verdict: Ok(additional), item, outcome }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::registry;
    use serde_json::json;
    use std::sync::Arc;
    use stowage_pipeline::ApiResourceInfo;
    use stowage_runtime::{ExtensionId, ExtensionKind, ExtensionSource, Module, OfflineHost, OperationContext, OperationKind};

    fn stage() -> ExtensionStage {
        let registry = registry("stowage", Default::default()).unwrap();
        let source = |name: &str, kind, script: &str| ExtensionSource {
            id: ExtensionId::new("stowage", name),
            kind,
            module: Module::Rhai(script.into()),
            config_yaml: String::new(),
        };
        registry.upsert(source("odd", ExtensionKind::ItemFilter, r#"
fn filter(ctx, item) { if item.object.data.n % 2 == 1 { "odd" } else { true } }"#)).unwrap();
        registry.upsert(source("mark", ExtensionKind::ItemAction, r#"
fn execute(ctx, item) { item.object.data.marked = "yes"; if item.object.data.n == 40 { throw "not 40" } item }"#)).unwrap();
        let context = OperationContext { kind: OperationKind::Backup, name: "b".into(), uid: "u".into() };
        let session = registry.snapshot().session(context, Arc::new(OfflineHost));
        ExtensionStage::start(Extensions::with_session(session)).unwrap()
    }

    fn item(n: u64) -> Item {
        let info = ApiResourceInfo::new("", "v1", "configmaps", "ConfigMap", true);
        Item::new(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{n}"), "namespace": "shop"},
            "data": {"n": n}}), &info).unwrap()
    }

    #[test]
    fn items_come_back_in_order_with_what_the_extensions_made_of_them() {
        let mut stage = stage();
        // More than a batch, and a part of one: the rest is handed over when waited for.
        let mut back = Vec::new();
        for n in 0..150 {
            stage.send(item(n)).unwrap();
            back.extend(std::iter::from_fn(|| stage.ready()));
        }
        assert!(back.len() <= 128, "a partial batch waits to be handed over: {}", back.len());
        while let Some(staged) = stage.next().unwrap() {
            back.push(staged);
        }
        assert!(stage.next().unwrap().is_none());
        let names: Vec<String> = back.iter().map(|s| s.item.name.clone()).collect();
        assert_eq!(names, (0..150).map(|n| format!("cm-{n}")).collect::<Vec<_>>(), "in the order they went in");
        for (n, staged) in back.iter().enumerate() {
            match &staged.verdict {
                Err(why) => assert!(n % 2 == 1 && why.contains("excluded by extension stowage/odd: odd"), "{n}: {why}"),
                Ok(additional) => {
                    assert!(n % 2 == 0 && additional.is_empty(), "{n}");
                    let marked = staged.item.object["data"]["marked"].as_str();
                    assert_eq!(marked, (n != 40).then_some("yes"), "{n}");
                }
            }
            // The action's failure on cm-40 is a warning on that item, and only there.
            assert_eq!(staged.outcome.warning_count(), usize::from(n == 40), "{n}: {:?}", staged.outcome);
        }
        let extensions = stage.finish().unwrap();
        let report = extensions.report().unwrap();
        let calls: Vec<(&str, u64)> = report.extensions.iter().map(|e| (e.id.name.as_str(), e.counts.calls)).collect();
        assert_eq!(calls, [("mark", 75), ("odd", 150)], "each item through the filter, the kept ones through the action");
    }
}

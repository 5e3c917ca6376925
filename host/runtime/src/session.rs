//! One backup's or restore's use of its extensions.
//!
//! A [`Session`] owns the instances of its extensions: created on first use, one per
//! extension, reused across the operation's items and never shared with another operation.
//! An instance that traps, runs out of time or memory is dropped and the next item gets a
//! fresh one. Hooks get a fresh instance per call.
//!
//! Every method is blocking (guest code runs on the calling thread) and never panics on an
//! extension's failure: failures come back as [`ItemIssue`]s naming the extension.

use crate::config::OnError;

/// Additional items one call may return: each is backed up or restored with the item, and the
/// host holds them all.
pub const MAX_ADDED_ITEMS: usize = 1000;
use crate::host::{Gate, HostServices};
use crate::item::{HookPhase, ObjectFields, Item, ObjectRef, OperationContext, Phase};
use crate::provenance::{Counts, ExtensionRecord, ExtensionReport, ItemRecord};
use crate::registry::{Code, Extension, ExtensionSet};
use crate::script::{ScriptInstance, ScriptOutput};
use crate::selector::ResourceSelector;
use crate::source::{ExtensionId, ExtensionKind};
use crate::wasm::{
    identity_in, json_text, to_wit_context, wit_item, ActionCall, CallError, Change, WasmInstance, WitContext, WitItem,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// A failure of an extension on one item (or hook target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemIssue {
    pub extension: ExtensionId,
    pub item: ObjectRef,
    /// Says what happened: `extension stowage/x on Pod shop/web: timed out after 5s`.
    pub message: String,
    /// The extension's `onError` is `Fail`: an error on the item, not a warning.
    pub fatal: bool,
}

/// The filters' verdict on an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterOutcome {
    /// `None`: included. Otherwise the first extension that excluded it and its reason.
    pub excluded_by: Option<(ExtensionId, String)>,
    /// Filters that failed; a failed filter includes the item.
    pub issues: Vec<ItemIssue>,
}

impl FilterOutcome {
    pub fn included(&self) -> bool {
        self.excluded_by.is_none()
    }
}

/// The item after the item actions.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutcome {
    pub item: Item,
    /// Items to back up or restore with it.
    pub additional: Vec<Item>,
    /// Restore only: an extension asked not to restore the item.
    pub skipped_by: Option<ExtensionId>,
    pub issues: Vec<ItemIssue>,
    /// Whether an extension changed the object.
    pub changed: bool,
}

enum Instance {
    Wasm(WasmInstance),
    Rhai(Box<ScriptInstance>),
}

struct Slot {
    extension: Arc<Extension>,
    instance: Option<(Instance, Arc<Gate>)>,
    /// What the extension's own `applies-to` returned when instantiated.
    own_selector: Option<ResourceSelector>,
    /// The parts of objects it reads (its `object-fields`), `None` for whole objects.
    fields: Option<Arc<ObjectFields>>,
    /// The context argument of its calls, made once per phase.
    context: Option<(Phase, CallContext)>,
    record: ExtensionRecord,
}

enum CallContext {
    Wasm(WitContext),
    Rhai(rhai::Dynamic),
}

/// Extensions at work for one backup or restore; see the module documentation.
pub struct Session {
    set: Arc<ExtensionSet>,
    context: OperationContext,
    host: Arc<dyn HostServices>,
    handle: Option<Handle>,
    slots: Vec<Slot>,
    /// When the call under way started.
    call_started: Option<Instant>,
    observer: Option<CallObserver>,
}

/// Told of every call as it ends: the extension, how it ended (`unchanged`, `changed`,
/// `filtered`, `skipped`, `denied` — it made a host call its capabilities do not allow —, or
/// `error`) and how long it took (`None` when it could not be started). For the host's
/// metrics.
pub type CallObserver = Arc<dyn Fn(&ExtensionId, &'static str, Option<Duration>) + Send + Sync>;

/// How a call ended, as [`CallObserver`] names it.
fn outcome_of(record: &ItemRecord) -> &'static str {
    if record.error.is_some() {
        "error"
    } else if !record.denied.is_empty() {
        "denied"
    } else if record.filtered.is_some() {
        "filtered"
    } else if record.skipped {
        "skipped"
    } else if record.patch.is_some() {
        "changed"
    } else {
        "unchanged"
    }
}

impl ExtensionSet {
    /// Starts the extensions' part of one operation. Host calls are made on the tokio
    /// runtime current here (if any): create the session inside the runtime, then use it from
    /// a blocking thread (`spawn_blocking`) or a multi-threaded runtime's worker.
    pub fn session(self: &Arc<Self>, context: OperationContext, host: Arc<dyn HostServices>) -> Session {
        let slots = self
            .extensions()
            .iter()
            .map(|e| Slot {
                extension: e.clone(),
                instance: None,
                own_selector: None,
                fields: None,
                context: None,
                record: ExtensionRecord {
                    id: e.id.clone(),
                    kind: e.kind,
                    language: e.language,
                    scope: e.scope.clone(),
                    digest: e.digest.clone(),
                    counts: Counts::default(),
                    items: Vec::new(),
                },
            })
            .collect();
        Session {
            set: self.clone(),
            context,
            host,
            handle: Handle::try_current().ok(),
            slots,
            call_started: None,
            observer: None,
        }
    }
}

impl Session {
    /// Reports every call from now on to `observer`.
    pub fn observe_calls(&mut self, observer: CallObserver) {
        self.observer = Some(observer);
    }

    pub fn context(&self) -> &OperationContext {
        &self.context
    }

    /// Runs the item filters in order; the first exclusion wins.
    pub fn filter(&mut self, item: &Item) -> FilterOutcome {
        let mut outcome = FilterOutcome {
            excluded_by: None,
            issues: Vec::new(),
        };
        // The item as components take it, serialised for the first one and shared; and its
        // identity, for those that take a view.
        let mut sent: Option<WitItem> = None;
        let mut shell: Option<WitItem> = None;
        for index in self.indices(ExtensionKind::ItemFilter) {
            let Some((call, fields)) = self.prepare(index, item, Phase::ItemFilter, &mut outcome.issues) else { continue };
            let result = match (call, fields) {
                (Prepared::Wasm(i, ctx), None) => i.filter(
                    ctx,
                    sent.get_or_insert_with(|| wit_item(&item.id, json_text(&item.object))),
                ),
                (Prepared::Wasm(i, ctx), Some(fields)) => {
                    i.filter(ctx, carrying(&mut shell, &item.id, fields.view_text(&item.object)))
                }
                (Prepared::Rhai(i, ctx), None) => i.filter(ctx, crate::script::item_map(item)),
                (Prepared::Rhai(i, ctx), Some(fields)) => i.filter(ctx, crate::script::item_view_map(item, &fields)),
            };
            let mut record = ItemRecord::new(Phase::ItemFilter);
            match result {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    record.filtered = Some(reason.clone());
                    outcome.excluded_by = Some((self.slots[index].extension.id.clone(), reason));
                }
                Err(error) => outcome.issues.push(self.failed(index, &item.id, error, &mut record)),
            }
            self.finish(index, record, &item.id);
            if outcome.excluded_by.is_some() {
                break;
            }
        }
        outcome
    }

    /// Runs the (backup) item actions in order, each on the previous one's output.
    pub fn item_actions(&mut self, item: Item) -> ActionOutcome {
        self.actions(ExtensionKind::ItemAction, item, None)
    }

    /// Runs the restore item actions in order; `backed_up` is the item as in the backup.
    /// Stops at the first that asks to skip the item.
    pub fn restore_item_actions(&mut self, item: Item, backed_up: &Item) -> ActionOutcome {
        self.actions(ExtensionKind::RestoreItemAction, item, Some(backed_up))
    }

    fn actions(
        &mut self,
        kind: ExtensionKind,
        item: Item,
        backed_up: Option<&Item>,
    ) -> ActionOutcome {
        let phase = if kind == ExtensionKind::ItemAction {
            Phase::ItemAction
        } else {
            Phase::RestoreItemAction
        };
        let mut outcome = ActionOutcome {
            item,
            additional: Vec::new(),
            skipped_by: None,
            issues: Vec::new(),
            changed: false,
        };
        // The current item and the backed-up one as components take them: serialised when a
        // component first needs them, kept while unchanged (a component's output is the next
        // one's input as it is).
        let mut sent: Option<WitItem> = None;
        let mut sent_backed_up: Option<WitItem> = None;
        let mut shell: Option<WitItem> = None;
        for index in self.indices(kind) {
            let current = &outcome.item;
            let Some((call, fields)) = self.prepare(index, current, phase, &mut outcome.issues) else {
                continue;
            };
            let result = match (call, fields) {
                (Prepared::Wasm(i, ctx), None) => {
                    let item = sent
                        .get_or_insert_with(|| wit_item(&current.id, json_text(&current.object)));
                    match backed_up {
                        None => i.item_action(ctx, item, false),
                        Some(original) => {
                            let original = sent_backed_up.get_or_insert_with(|| {
                                wit_item(&original.id, json_text(&original.object))
                            });
                            i.restore_item_action(ctx, item, original, false)
                        }
                    }
                }
                (Prepared::Wasm(i, ctx), Some(fields)) => {
                    let item = carrying(&mut shell, &current.id, fields.view_text(&current.object));
                    match backed_up {
                        None => i.item_action(ctx, item, true),
                        Some(original) => {
                            let original = wit_item(&original.id, fields.view_text(&original.object));
                            i.restore_item_action(ctx, item, &original, true)
                        }
                    }
                }
                (Prepared::Rhai(i, ctx), fields) => {
                    // A script given a view answers with the view changed: the change becomes
                    // a merge patch on the whole object.
                    let view = fields.as_ref().map(|f| view_of(current, f));
                    let given = view.as_ref().unwrap_or(current);
                    let original = backed_up.map(|o| match &fields {
                        Some(f) => std::borrow::Cow::Owned(view_of(o, f)),
                        None => std::borrow::Cow::Borrowed(o),
                    });
                    match &original {
                        None => i.item_action(ctx, given),
                        Some(original) => i.restore_item_action(ctx, given, original),
                    }
                    .map(|ScriptOutput { item, additional, skip }| ActionCall {
                        change: match (item, &view) {
                            (None, _) => Change::Unchanged,
                            (Some(item), None) => Change::Replace { item, sent: None },
                            (Some(item), Some(view)) => Change::Patch {
                                patch: crate::provenance::merge_patch_between(&view.object, &item.object),
                                id: Some(item.id),
                            },
                        },
                        additional,
                        skip,
                    })
                }
            };
            let mut record = ItemRecord::new(phase);
            match result.and_then(|output| self.check_output(index, &outcome.item, output)) {
                Ok(ActionCall { change, additional, skip }) => {
                    // Only a restore item action may skip an item (a backup's item action
                    // asking to would stop the actions after it).
                    let skip = skip && kind == ExtensionKind::RestoreItemAction;
                    let patch = match change {
                        Change::Unchanged => Vec::new(),
                        Change::Patch { id, patch } => {
                            let renamed = id.as_ref().is_some_and(|id| *id != outcome.item.id);
                            if let Some(id) = id {
                                outcome.item.id = id;
                            }
                            let patch = crate::provenance::merge(&mut outcome.item.object, patch);
                            // Serialised again when a component needs it; the identity a view
                            // is sent with stays while the item keeps it.
                            if renamed || !patch.is_empty() {
                                sent = None;
                            }
                            if renamed {
                                shell = None;
                            }
                            patch
                        }
                        Change::Replace { item, sent: text } => {
                            let patch = crate::provenance::diff(&outcome.item.object, &item.object);
                            outcome.item = item;
                            // A component's text goes on as it is; a script's output is
                            // serialised again when a component needs it.
                            sent = text;
                            shell = None;
                            patch
                        }
                    };
                    if !patch.is_empty() {
                        record.patch = Some(patch);
                        outcome.changed = true;
                    }
                    record.added = additional.iter().map(|i| i.id.clone()).collect();
                    record.skipped = skip;
                    outcome.additional.extend(additional);
                    if skip {
                        outcome.skipped_by = Some(self.slots[index].extension.id.clone());
                    }
                }
                Err(error) => {
                    let issue = self.failed(index, &outcome.item.id, error, &mut record);
                    outcome.issues.push(issue);
                }
            }
            self.finish(index, record, &outcome.item.id);
            if outcome.skipped_by.is_some() {
                break;
            }
        }
        outcome
    }

    /// Runs one hook extension on a target in a fresh instance. `parameters` are added to the
    /// extension's own (and win over them): a pod's `hooks.stowage.io/param.<key>` annotations.
    #[allow(clippy::result_large_err, reason = "hooks are called a few times per operation")]
    pub fn run_hook(
        &mut self,
        extension: &ExtensionId,
        phase: HookPhase,
        hook_target: &crate::host::HookTarget,
        parameters: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ItemIssue> {
        let target = &hook_target.object;
        let index = self
            .slots
            .iter()
            .position(|s| s.extension.kind == ExtensionKind::Hook && s.extension.id == *extension)
            .ok_or_else(|| ItemIssue {
                extension: extension.clone(),
                item: target.clone(),
                message: format!("extension {extension}: no such hook in this operation"),
                fatal: true,
            })?;
        let mut record = ItemRecord::new(phase.into());
        if !self.slots[index].extension.scope.allows(&target.namespace) {
            let error = CallError::Returned(format!("{target} is outside its scope"));
            let issue = self.failed(index, target, error, &mut record);
            self.finish(index, record, target);
            return Err(issue);
        }
        self.slots[index].instance = None;
        self.call_started = Some(Instant::now());
        let result = match self.instantiate(index) {
            Err(message) => Err(CallError::Trapped(message)),
            Ok(()) => {
                let slot = &mut self.slots[index];
                let gate = &slot.instance.as_ref().unwrap().1;
                gate.set_hook(hook_target.volumes.clone(), phase == HookPhase::PreBackup);
                let mut merged = slot.extension.config.parameters.clone();
                merged.extend(parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
                match &mut slot.instance.as_mut().unwrap().0 {
                    Instance::Wasm(i) => i.hook(&to_wit_context(&self.context, phase.into(), &merged), target),
                    Instance::Rhai(i) => {
                        i.hook(crate::script::context_map(&self.context, phase.into(), &merged), phase, target)
                    }
                }
            }
        };
        let outcome = result.map_err(|error| self.failed(index, target, error, &mut record));
        self.finish(index, record, target);
        self.slots[index].instance = None;
        outcome
    }

    /// What each extension did so far, for the operation's record. Extensions that were
    /// never called are left out.
    pub fn report(&self) -> ExtensionReport {
        ExtensionReport {
            extensions: self.slots.iter().filter(|s| s.record.counts.calls > 0).map(|s| s.record.clone()).collect(),
        }
    }

    /// The extensions of the operation, called or not (name, scope, digest...).
    pub fn extensions(&self) -> &ExtensionSet {
        &self.set
    }

    fn indices(&self, kind: ExtensionKind) -> Vec<usize> {
        (0..self.slots.len()).filter(|&i| self.slots[i].extension.kind == kind).collect()
    }

    /// The instance to call for `item`, or `None` when the extension does not apply (or
    /// could not be instantiated: then an issue is added).
    fn prepare(
        &mut self,
        index: usize,
        item: &Item,
        phase: Phase,
        issues: &mut Vec<ItemIssue>,
    ) -> Option<(Prepared<'_>, Option<Arc<ObjectFields>>)> {
        let extension = &self.slots[index].extension;
        // A namespaced extension's scope excludes cluster-scoped items (empty namespace).
        if !extension.scope.allows(&item.id.namespace) || !extension.config.applies_to.matches(item) {
            return None;
        }
        if self.slots[index].instance.is_none() {
            if let Err(message) = self.instantiate(index) {
                let mut record = ItemRecord::new(phase);
                issues.push(self.failed(index, &item.id, CallError::Trapped(message), &mut record));
                self.finish(index, record, &item.id);
                return None;
            }
        }
        if self.slots[index].own_selector.as_ref().is_some_and(|s| !s.matches(item)) {
            return None;
        }
        self.call_started = Some(Instant::now());
        let slot = &mut self.slots[index];
        let instance = &mut slot.instance.as_mut().unwrap().0;
        if slot.context.as_ref().is_none_or(|(p, _)| *p != phase) {
            let parameters = &slot.extension.config.parameters;
            let context = match instance {
                Instance::Wasm(_) => {
                    CallContext::Wasm(to_wit_context(&self.context, phase, parameters))
                }
                Instance::Rhai(_) => {
                    CallContext::Rhai(crate::script::context_map(&self.context, phase, parameters))
                }
            };
            slot.context = Some((phase, context));
        }
        let prepared = match (instance, &slot.context.as_ref().unwrap().1) {
            (Instance::Wasm(i), CallContext::Wasm(ctx)) => Prepared::Wasm(i, ctx),
            // A script may change its argument: each call gets its own copy.
            (Instance::Rhai(i), CallContext::Rhai(ctx)) => Prepared::Rhai(i, ctx.clone()),
            _ => unreachable!("the context is made for the instance's language"),
        };
        Some((prepared, slot.fields.clone()))
    }

    fn instantiate(&mut self, index: usize) -> Result<(), String> {
        let slot = &mut self.slots[index];
        let extension = &slot.extension;
        let gate = Arc::new(Gate::new(
            extension.id.clone(),
            extension.scope.clone(),
            extension.capabilities.clone(),
            self.host.clone(),
            self.handle.clone(),
        ));
        let timeout = Duration::from_secs(extension.config.timeout_seconds.into());
        let asked = |what: &str, e: CallError| match e {
            CallError::Returned(m) | CallError::Trapped(m) => format!("{what}: {m}"),
        };
        let parameters = &extension.config.parameters;
        let (instance, own_selector, fields) = match &extension.code {
            Code::Wasm(component) => {
                let mut instance =
                    component.instantiate(gate.clone(), extension.config.memory_limit.bytes(), timeout)?;
                let selector = instance.applies_to().map_err(|e| asked("applies-to", e))?;
                let fields = instance.object_fields(parameters).map_err(|e| asked("object-fields", e))?;
                (Instance::Wasm(instance), selector, fields)
            }
            Code::Rhai(script) => {
                let mut instance = self.set.runtime.scripts.instantiate(
                    script,
                    gate.clone(),
                    extension.config.memory_limit.bytes(),
                    timeout,
                );
                let fields = instance.object_fields(parameters).map_err(|e| asked("object_fields", e))?;
                (Instance::Rhai(Box::new(instance)), None, fields)
            }
        };
        let fields = match fields {
            Some(f) => Some(Arc::new(ObjectFields::parse(&f).map_err(|e| format!("object-fields: {e}"))?)),
            None => None,
        };
        slot.instance = Some((instance, gate));
        slot.own_selector = own_selector;
        slot.fields = fields;
        Ok(())
    }

    /// Refuses output outside a namespaced extension's scope, an item made into another kind,
    /// and an added item whose object says another identity than the item beside it. The host
    /// goes by what the objects say, so their identity is checked as well as the one stated.
    fn check_output(&self, index: usize, current: &Item, output: ActionCall) -> Result<ActionCall, CallError> {
        let scope = &self.slots[index].extension.scope;
        let refuse = |m: String| Err(CallError::Returned(m));
        let stated = output.change.id().unwrap_or(&current.id);
        let object_says = match &output.change {
            Change::Unchanged => None,
            Change::Patch { id, patch } => Some(identity_in(id.as_ref().unwrap_or(&current.id), patch)),
            Change::Replace { item, .. } => Some(identity_in(&item.id, &item.object)),
        };
        for after in std::iter::once(stated).chain(&object_says) {
            if after.group != current.id.group || after.kind != current.id.kind {
                return refuse(format!(
                    "returned {} as a {}{}: an item action changes an object, it does not make it another kind",
                    current.id,
                    after.kind,
                    if after.group.is_empty() { String::new() } else { format!(".{}", after.group) }
                ));
            }
        }
        if output.additional.len() > MAX_ADDED_ITEMS {
            return refuse(format!("added {} items in one call, more than {MAX_ADDED_ITEMS}", output.additional.len()));
        }
        for added in &output.additional {
            let says = identity_in(&added.id, &added.object);
            if says != added.id {
                return refuse(format!("added {} whose object says it is {says}", added.id));
            }
        }
        let produced = std::iter::once(stated).chain(&object_says).chain(output.additional.iter().map(|i| &i.id));
        for produced in produced {
            if produced.kind.is_empty() || produced.name.is_empty() {
                return refuse("returned an item without a kind or name".into());
            }
            if !scope.allows(&produced.namespace) {
                return refuse(format!("returned {produced} outside its {scope}"));
            }
        }
        Ok(output)
    }

    /// Turns a failure into an issue and records it; a trapped instance is dropped.
    fn failed(&mut self, index: usize, item: &ObjectRef, error: CallError, record: &mut ItemRecord) -> ItemIssue {
        let slot = &mut self.slots[index];
        if let Some((_, gate)) = &slot.instance {
            record.denied.extend(gate.take_denials());
        }
        let message = match error {
            CallError::Returned(m) => m,
            CallError::Trapped(m) => {
                slot.instance = None;
                m
            }
        };
        record.error = Some(message.clone());
        ItemIssue {
            extension: slot.extension.id.clone(),
            item: item.clone(),
            message: format!("extension {} on {item}: {message}", slot.extension.id),
            fatal: slot.extension.config.on_error == OnError::Fail,
        }
    }

    /// Collects the call's denied host calls and records it.
    fn finish(&mut self, index: usize, mut record: ItemRecord, item: &ObjectRef) {
        let elapsed = self.call_started.take().map(|started| started.elapsed());
        let slot = &mut self.slots[index];
        if let Some((_, gate)) = &slot.instance {
            record.denied.extend(gate.take_denials());
        }
        if let Some(observer) = &self.observer {
            observer(&slot.extension.id, outcome_of(&record), elapsed);
        }
        slot.record.add(record, item);
    }
}

/// `item` with only the parts of its object at `fields`.
fn view_of(item: &Item, fields: &ObjectFields) -> Item {
    Item { id: item.id.clone(), object: fields.view(&item.object) }
}

/// `shell` (the item's identity, made once per item) carrying `text` as its object.
fn carrying<'a>(shell: &'a mut Option<WitItem>, id: &ObjectRef, text: String) -> &'a WitItem {
    let shell = shell.get_or_insert_with(|| wit_item(id, String::new()));
    shell.object = text;
    shell
}

enum Prepared<'a> {
    Wasm(&'a mut WasmInstance, &'a WitContext),
    Rhai(&'a mut ScriptInstance, rhai::Dynamic),
}


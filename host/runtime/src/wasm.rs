//! WebAssembly components: one compiled [`Component`] and [`InstancePre`] per content
//! digest, a fresh [`Store`] with limits for every instance, a wall-clock deadline per call
//! through epoch interruption.
//!
//! Guests get no WASI: the `wasi:*` imports a `wasm32-wasip2` standard library brings along
//! are linked to functions that trap, so a guest that touches the filesystem, the
//! environment, the network or stdio stops with an error naming the import. Any other import
//! outside `stowage:extension` is refused at load time.

use crate::host::{ExecRequest, Gate, LogLevel};
use crate::item::{Item, ObjectRef, OperationContext, Phase};
use crate::selector::{LabelRequirement, LabelSelector, ResourceSelector};
use crate::source::ExtensionKind;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder};

mod bindings {
    wasmtime::component::bindgen!({ path: "../../wit", world: "host" });
}

use bindings::exports::stowage::extension::{hook_handler, item_action_handler, item_filter_handler, restore_item_action_handler};
use bindings::stowage::extension as wit;

/// The operation context as the WIT bindings carry it.
pub(crate) type WitContext = wit::types::OperationContext;

/// How often the epoch advances: the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The wasmtime engine shared by every component, with its epoch ticker.
pub(crate) struct WasmEngine {
    engine: Engine,
    linker: Linker<HostState>,
    _ticker: EpochTicker,
}

impl WasmEngine {
    /// `max_instances`: how many instances may be alive at once (the pool's size).
    pub fn new(max_instances: u32) -> wasmtime::Result<WasmEngine> {
        let mut pool = PoolingAllocationConfig::default();
        // A wasm32-wasip2 Rust component has ~5 core instances, 1-2 memories, a few tables.
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * 8)
            .total_memories(max_instances * 2)
            .total_tables(max_instances * 4)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(crate::config::MAX_MEMORY_LIMIT as usize);
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("STOWAGE_WASM_PERFMAP").is_some() {
            // For profiling guests with `perf`: names compiled functions in /tmp/perf-<pid>.map.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        bindings::Host_::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(WasmEngine { engine, linker, _ticker: ticker })
    }

    /// Compiles a component and checks that it implements the world of `kind`.
    pub fn compile(&self, bytes: &[u8], kind: ExtensionKind) -> Result<WasmComponent, String> {
        let component = Component::new(&self.engine, bytes).map_err(|e| format!("not a valid component: {e:#}"))?;
        let mut linker = self.linker.clone();
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if !name.starts_with("stowage:extension/") && !name.starts_with("wasi:") {
                return Err(format!("imports {name}, which Stowage does not provide"));
            }
        }
        stub_wasi_imports(&mut linker, &component, &self.engine).map_err(|e| format!("{e:#}"))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| format!("cannot be linked: {e:#}"))?;
        let exports = ExportIndices::new(&pre, kind)
            .map_err(|e| format!("does not implement the {kind} world of stowage:extension@0.1: {e:#}"))?;
        Ok(WasmComponent { pre, exports })
    }
}

/// Links every `wasi:*` import of `component` to functions that trap. (wasmtime's
/// `define_unknown_imports_as_traps` would also stub the `stowage:extension` interfaces of an
/// older 0.1.x version under their exact names, shadowing the host's semver-compatible ones.)
fn stub_wasi_imports(linker: &mut Linker<HostState>, component: &Component, engine: &Engine) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::ResourceType;
    for (name, item) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if !name.starts_with("wasi:") {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let qualified = format!("{name}#{export}");
                    stubs.func_new(export, move |_, _, _, _| {
                        wasmtime::bail!("unknown import: `{qualified}` has not been defined")
                    })?;
                }
                ComponentItem::Resource(_) => stubs.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
enum ExportIndices {
    ItemAction(item_action_handler::GuestIndices),
    RestoreItemAction(restore_item_action_handler::GuestIndices),
    ItemFilter(item_filter_handler::GuestIndices),
    Hook(hook_handler::GuestIndices),
}

impl ExportIndices {
    fn new(pre: &InstancePre<HostState>, kind: ExtensionKind) -> wasmtime::Result<ExportIndices> {
        Ok(match kind {
            ExtensionKind::ItemAction => ExportIndices::ItemAction(item_action_handler::GuestIndices::new(pre)?),
            ExtensionKind::RestoreItemAction => {
                ExportIndices::RestoreItemAction(restore_item_action_handler::GuestIndices::new(pre)?)
            }
            ExtensionKind::ItemFilter => ExportIndices::ItemFilter(item_filter_handler::GuestIndices::new(pre)?),
            ExtensionKind::Hook => ExportIndices::Hook(hook_handler::GuestIndices::new(pre)?),
        })
    }
}

enum Exports {
    ItemAction(item_action_handler::Guest),
    RestoreItemAction(restore_item_action_handler::Guest),
    ItemFilter(item_filter_handler::Guest),
    Hook(hook_handler::Guest),
}

/// A compiled component, ready to instantiate.
pub(crate) struct WasmComponent {
    pre: InstancePre<HostState>,
    exports: ExportIndices,
}

/// What the store of an instance holds: the gate to the host and the memory limits.
pub(crate) struct HostState {
    gate: Arc<Gate>,
    limits: StoreLimits,
}

/// One live instance, for one extension in one operation.
pub(crate) struct WasmInstance {
    store: Store<HostState>,
    exports: Exports,
    timeout: Duration,
    memory_limit: u64,
}

/// Why a call failed.
pub(crate) enum CallError {
    /// The extension returned an error.
    Returned(String),
    /// It trapped, ran out of time or memory: the instance is unusable.
    Trapped(String),
}

impl WasmComponent {
    pub fn instantiate(&self, gate: Arc<Gate>, memory_limit: u64, timeout: Duration) -> Result<WasmInstance, String> {
        let limits = StoreLimitsBuilder::new().memory_size(memory_limit as usize).trap_on_grow_failure(true).build();
        let mut store = Store::new(self.pre.engine(), HostState { gate, limits });
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(timeout));
        let instance = self.pre.instantiate(&mut store).map_err(|e| describe_trap(&e, timeout, memory_limit))?;
        let exports = self.load(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
        Ok(WasmInstance { store, exports, timeout, memory_limit })
    }

    fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Exports> {
        Ok(match &self.exports {
            ExportIndices::ItemAction(i) => Exports::ItemAction(i.load(&mut *store, instance)?),
            ExportIndices::RestoreItemAction(i) => Exports::RestoreItemAction(i.load(&mut *store, instance)?),
            ExportIndices::ItemFilter(i) => Exports::ItemFilter(i.load(&mut *store, instance)?),
            ExportIndices::Hook(i) => Exports::Hook(i.load(&mut *store, instance)?),
        })
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1
}

fn describe_trap(error: &wasmtime::Error, timeout: Duration, memory_limit: u64) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return format!("timed out after {}s", timeout.as_secs_f32());
        }
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return format!("exceeded its memory limit of {}", crate::config::MemoryLimit(memory_limit));
    }
    if text.contains("unknown import: `wasi:") {
        return format!("trapped: {text} (extensions get no WASI; a Rust panic ends here when it prints)");
    }
    format!("trapped: {text}")
}

impl WasmInstance {
    /// Arms the deadline of the next call.
    fn arm(&mut self) {
        self.store.data().gate.set_deadline(Instant::now() + self.timeout);
        self.store.set_epoch_deadline(deadline_ticks(self.timeout));
    }

    fn finish<T>(&self, outcome: wasmtime::Result<Result<T, String>>) -> Result<T, CallError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(CallError::Returned(message)),
            Err(error) => {
                Err(CallError::Trapped(describe_trap(&error, self.timeout, self.memory_limit)))
            }
        }
    }

    pub fn applies_to(&mut self) -> Result<Option<ResourceSelector>, CallError> {
        self.arm();
        let outcome = match &self.exports {
            Exports::ItemAction(g) => g.call_applies_to(&mut self.store),
            Exports::RestoreItemAction(g) => g.call_applies_to(&mut self.store),
            Exports::ItemFilter(_) | Exports::Hook(_) => return Ok(None),
        };
        self.finish(outcome.map(Ok)).map(|s| Some(from_wit_selector(s)))
    }

    /// The parts of the object the extension reads (`None`: all of it).
    pub fn object_fields(
        &mut self,
        parameters: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Vec<String>>, CallError> {
        self.arm();
        let parameters: Vec<(String, String)> = parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let outcome = match &self.exports {
            Exports::ItemAction(g) => g.call_object_fields(&mut self.store, &parameters),
            Exports::RestoreItemAction(g) => g.call_object_fields(&mut self.store, &parameters),
            Exports::ItemFilter(g) => g.call_object_fields(&mut self.store, &parameters),
            Exports::Hook(_) => return Ok(None),
        };
        self.finish(outcome.map(Ok))
    }

    /// Runs an item action on `sent` (made with [`wit_item`]; the caller keeps it while the
    /// item is unchanged: serialising the object is a good part of a call's cost).
    pub fn item_action(
        &mut self,
        ctx: &WitContext,
        sent: &WitItem,
        partial: bool,
    ) -> Result<ActionCall, CallError> {
        self.arm();
        let Exports::ItemAction(g) = &self.exports else {
            unreachable!("checked at load")
        };
        let outcome = g.call_execute(&mut self.store, ctx, sent);
        let output = self.finish(outcome)?;
        ActionCall::new(sent, output.change, output.additional_items, false, partial)
    }

    /// Runs a restore item action; `backed_up` is the item as in the backup, made once per
    /// item with [`wit_item`].
    pub fn restore_item_action(
        &mut self,
        ctx: &WitContext,
        sent: &WitItem,
        backed_up: &WitItem,
        partial: bool,
    ) -> Result<ActionCall, CallError> {
        self.arm();
        let Exports::RestoreItemAction(g) = &self.exports else {
            unreachable!("checked at load")
        };
        let outcome = g.call_execute(&mut self.store, ctx, sent, backed_up);
        let output = self.finish(outcome)?;
        ActionCall::new(sent, output.change, output.additional_items, output.skip, partial)
    }

    /// `None` to include, `Some(reason)` to exclude.
    pub fn filter(
        &mut self,
        ctx: &WitContext,
        sent: &WitItem,
    ) -> Result<Option<String>, CallError> {
        self.arm();
        let Exports::ItemFilter(g) = &self.exports else {
            unreachable!("checked at load")
        };
        let outcome = g.call_filter(&mut self.store, ctx, sent);
        Ok(match self.finish(outcome)? {
            item_filter_handler::Decision::Include => None,
            item_filter_handler::Decision::Exclude(reason) => Some(reason),
        })
    }

    pub fn hook(&mut self, ctx: &wit::types::OperationContext, target: &ObjectRef) -> Result<(), CallError> {
        self.arm();
        let Exports::Hook(g) = &self.exports else { unreachable!("checked at load") };
        let target = to_wit_ref(target);
        let outcome = match ctx.phase {
            wit::types::Phase::PreBackup => g.call_pre_backup(&mut self.store, ctx, &target),
            wit::types::Phase::PostBackup => g.call_post_backup(&mut self.store, ctx, &target),
            _ => g.call_post_restore(&mut self.store, ctx, &target),
        };
        self.finish(outcome)
    }
}

pub(crate) fn to_wit_context(ctx: &OperationContext, phase: Phase, parameters: &std::collections::BTreeMap<String, String>) -> wit::types::OperationContext {
    use crate::item::OperationKind;
    wit::types::OperationContext {
        kind: match ctx.kind {
            OperationKind::Backup => wit::types::OperationKind::Backup,
            OperationKind::Restore => wit::types::OperationKind::Restore,
        },
        name: ctx.name.clone(),
        uid: ctx.uid.clone(),
        phase: match phase {
            Phase::ItemFilter => wit::types::Phase::ItemFilter,
            Phase::ItemAction => wit::types::Phase::ItemAction,
            Phase::RestoreItemAction => wit::types::Phase::RestoreItemAction,
            Phase::PreBackup => wit::types::Phase::PreBackup,
            Phase::PostBackup => wit::types::Phase::PostBackup,
            Phase::PostRestore => wit::types::Phase::PostRestore,
        },
        parameters: parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// An item as WASM components take it: the identity and the object as JSON text.
pub(crate) type WitItem = wit::types::Item;

/// What an action did to the object it was given.
pub(crate) enum Change {
    Unchanged,
    /// A merge patch to apply to the object, and the item's identity after it when the
    /// patch sets any of it (`None`: as it was).
    Patch { id: Option<ObjectRef>, patch: Value },
    /// A new object; `sent` is it as the next component takes it, when it came as JSON text.
    Replace { item: Item, sent: Option<WitItem> },
}

impl Change {
    /// The item's identity after the change, when it may differ from the one sent.
    pub(crate) fn id(&self) -> Option<&ObjectRef> {
        match self {
            Change::Unchanged => None,
            Change::Patch { id, .. } => id.as_ref(),
            Change::Replace { item, .. } => Some(&item.id),
        }
    }
}

/// What an item action returned.
pub(crate) struct ActionCall {
    pub change: Change,
    pub additional: Vec<Item>,
    pub skip: bool,
}

impl ActionCall {
    fn new(
        sent: &WitItem,
        change: wit::types::ObjectChange,
        additional: Vec<WitItem>,
        skip: bool,
        partial: bool,
    ) -> Result<ActionCall, CallError> {
        let additional = additional
            .into_iter()
            .map(from_wit_item)
            .collect::<Result<_, _>>()
            .map_err(CallError::Returned)?;
        // The identity is copied only when the object changed (most calls leave it as it was).
        let change = match change {
            wit::types::ObjectChange::Unchanged => Change::Unchanged,
            // Handed back byte for byte: nothing to parse.
            wit::types::ObjectChange::Replace(text) if text == sent.object => Change::Unchanged,
            wit::types::ObjectChange::Replace(_) if partial => {
                return Err(CallError::Returned(format!(
                    "returned a whole object for {} but was given only the parts its object-fields name; \
                     answer with a merge patch or unchanged",
                    sent_id(sent)
                )))
            }
            wit::types::ObjectChange::Replace(text) => {
                let id = sent_id(sent);
                let object = parse_object(&id, &text).map_err(CallError::Returned)?;
                let id = identity_in(&id, &object);
                let sent = wit_item(&id, text);
                Change::Replace { item: Item { id, object }, sent: Some(sent) }
            }
            wit::types::ObjectChange::MergePatch(text) => {
                let patch: Value = serde_json::from_str(&text).map_err(|e| {
                    CallError::Returned(format!("returned a merge patch for {} that is not JSON: {e}", sent_id(sent)))
                })?;
                if !patch.is_object() {
                    let start: String = text.chars().take(80).collect();
                    return Err(CallError::Returned(format!(
                        "returned a merge patch for {} that is not a JSON object: {start}",
                        sent_id(sent)
                    )));
                }
                // Most patches leave the identity alone: it is copied only when one sets it.
                let id = sets_identity(&patch).then(|| identity_in(&sent_id(sent), &patch));
                Change::Patch { id, patch }
            }
        };
        Ok(ActionCall { change, additional, skip })
    }
}

fn sent_id(sent: &WitItem) -> ObjectRef {
    ObjectRef {
        group: sent.group.clone(),
        version: sent.version.clone(),
        kind: sent.kind.clone(),
        namespace: sent.namespace.clone(),
        name: sent.name.clone(),
    }
}

/// Whether an object (or a merge patch) states any part of an identity: `apiVersion`, `kind`,
/// `metadata.name` or `metadata.namespace`.
fn sets_identity(object: &Value) -> bool {
    object.get("apiVersion").is_some()
        || object.get("kind").is_some()
        || object.get("metadata").is_some_and(|m| m.get("name").is_some() || m.get("namespace").is_some())
}

/// The identity an object (or a merge patch on it) gives an item that had `id`: what it
/// states of `apiVersion`, `kind`, `metadata.name` and `metadata.namespace` (`null` there:
/// cluster-scoped), the rest unchanged.
pub(crate) fn identity_in(id: &ObjectRef, object: &Value) -> ObjectRef {
    let mut id = id.clone();
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str) {
        (id.group, id.version) = match api_version.split_once('/') {
            Some((group, version)) => (group.to_owned(), version.to_owned()),
            None => (String::new(), api_version.to_owned()),
        };
    }
    if let Some(kind) = object.get("kind").and_then(Value::as_str) {
        kind.clone_into(&mut id.kind);
    }
    if let Some(metadata) = object.get("metadata") {
        if let Some(name) = metadata.get("name").and_then(Value::as_str) {
            name.clone_into(&mut id.name);
        }
        match metadata.get("namespace") {
            Some(Value::String(namespace)) => namespace.clone_into(&mut id.namespace),
            Some(Value::Null) => id.namespace.clear(),
            _ => {}
        }
    }
    id
}

/// An item as the WIT bindings carry it, its object already serialised.
pub(crate) fn wit_item(id: &ObjectRef, object: String) -> WitItem {
    WitItem {
        group: id.group.clone(),
        version: id.version.clone(),
        kind: id.kind.clone(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        object,
    }
}

/// An object as JSON text (`serde_json::to_string` writes to a buffer directly, faster than
/// going through `Display`).
pub(crate) fn json_text(object: &Value) -> String {
    serde_json::to_string(object).expect("a JSON value always serialises")
}

/// Parses an object an extension returned.
pub(crate) fn parse_object(id: &ObjectRef, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "returned {} {} whose object is not JSON: {e}",
            id.kind, id.name
        )
    })
}

fn from_wit_item(item: WitItem) -> Result<Item, String> {
    let WitItem {
        group,
        version,
        kind,
        namespace,
        name,
        object,
    } = item;
    let id = ObjectRef {
        group,
        version,
        kind,
        namespace,
        name,
    };
    let object = parse_object(&id, &object)?;
    Ok(Item { id, object })
}

fn to_wit_ref(object: &ObjectRef) -> wit::types::ObjectRef {
    wit::types::ObjectRef {
        group: object.group.clone(),
        version: object.version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    }
}

fn from_wit_ref(object: wit::types::ObjectRef) -> ObjectRef {
    ObjectRef { group: object.group, version: object.version, kind: object.kind, namespace: object.namespace, name: object.name }
}

fn from_wit_selector(selector: wit::types::ResourceSelector) -> ResourceSelector {
    ResourceSelector {
        included_namespaces: selector.included_namespaces,
        excluded_namespaces: selector.excluded_namespaces,
        included_resources: selector.included_resources,
        excluded_resources: selector.excluded_resources,
        label_selector: selector.label_selector.map(|s| LabelSelector {
            match_labels: s.match_labels.into_iter().collect(),
            match_expressions: s
                .match_expressions
                .into_iter()
                .map(|r| LabelRequirement { key: r.key, operator: r.operator, values: r.values })
                .collect(),
        }),
    }
}

// The host interfaces: each call goes through the gate.

impl wit::types::Host for HostState {}

impl wit::log::Host for HostState {
    fn log(&mut self, level: wit::log::Level, message: String) -> Result<(), String> {
        let level = match level {
            wit::log::Level::Trace => LogLevel::Trace,
            wit::log::Level::Debug => LogLevel::Debug,
            wit::log::Level::Info => LogLevel::Info,
            wit::log::Level::Warn => LogLevel::Warn,
            wit::log::Level::Error => LogLevel::Error,
        };
        self.gate.log(level, &message)
    }
}

impl wit::clock::Host for HostState {
    fn now(&mut self) -> Result<wit::clock::Instant, String> {
        let since_epoch = self.gate.now()?.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(wit::clock::Instant { seconds: since_epoch.as_secs(), nanoseconds: since_epoch.subsec_nanos() })
    }
}

impl wit::kube_read::Host for HostState {
    fn get(&mut self, object: wit::types::ObjectRef) -> Result<Option<String>, String> {
        Ok(self.gate.kube_get(&from_wit_ref(object))?.map(|o| o.to_string()))
    }

    fn list(&mut self, kind: wit::types::KindRef, namespace: String, label_selector: String) -> Result<Vec<String>, String> {
        let kind = crate::item::KindRef { group: kind.group, version: kind.version, kind: kind.kind };
        Ok(self.gate.kube_list(&kind, &namespace, &label_selector)?.iter().map(Value::to_string).collect())
    }
}

impl wit::kube_write::Host for HostState {
    fn patch(&mut self, object: wit::types::ObjectRef, merge_patch: String) -> Result<String, String> {
        let patch: Value = serde_json::from_str(&merge_patch).map_err(|e| format!("merge patch is not JSON: {e}"))?;
        Ok(self.gate.kube_patch(&from_wit_ref(object), &patch)?.to_string())
    }

    fn scale(&mut self, object: wit::types::ObjectRef, replicas: u32) -> Result<(), String> {
        self.gate.kube_scale(&from_wit_ref(object), replicas)
    }
}

impl wit::hook_target::Host for HostState {
    fn volumes(&mut self) -> Vec<wit::hook_target::Volume> {
        let volume = |v: crate::host::TargetVolume| wit::hook_target::Volume {
            pod: v.pod,
            name: v.name,
            claim: v.claim,
            mounts: v
                .mounts
                .into_iter()
                .map(|m| wit::hook_target::VolumeMount { container: m.container, path: m.path, read_only: m.read_only })
                .collect(),
        };
        self.gate.target_volumes().into_iter().map(volume).collect()
    }
}

impl wit::quiesce::Host for HostState {
    fn freeze(&mut self, request: wit::quiesce::FreezeRequest) -> Result<(), String> {
        self.gate.freeze(crate::host::FreezeRequest {
            namespace: request.namespace,
            pod: request.pod,
            container: request.container,
            path: request.path,
        })
    }

    fn scale_to_zero(&mut self, workload: wit::types::ObjectRef) -> Result<u32, String> {
        self.gate.scale_to_zero(&from_wit_ref(workload))
    }
}

impl wit::exec::Host for HostState {
    fn run(&mut self, request: wit::exec::ExecRequest) -> Result<wit::exec::ExecOutput, String> {
        let output = self.gate.exec(ExecRequest {
            namespace: request.namespace,
            pod: request.pod,
            container: request.container,
            command: request.command,
            timeout: Duration::from_millis(request.timeout_ms.into()),
        })?;
        Ok(wit::exec::ExecOutput { stdout: output.stdout, stderr: output.stderr, exit_code: output.exit_code })
    }
}

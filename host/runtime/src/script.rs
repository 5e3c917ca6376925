//! Rhai scripts: one compiled [`AST`] per content digest; an engine with the host functions,
//! the limits and a wall-clock deadline per instance.
//!
//! Scripts define the same entry points as the WIT worlds, in snake case, over the same data
//! shapes as native Rhai maps (an item is `#{group, version, kind, namespace, name, object}`,
//! `object` being the whole Kubernetes object as a map):
//!
//! - item-action: `fn execute(ctx, item)` returns the item, `#{item, additional_items}` or `()`
//!   (unchanged);
//! - restore-item-action: `fn execute(ctx, item, backed_up)` returns the item,
//!   `#{item, additional_items, skip}` or `()`;
//! - item-filter: `fn filter(ctx, item)` returns `true` (include), `false` or a reason string
//!   (exclude);
//! - hook: any of `fn pre_backup(ctx, target)`, `fn post_backup(ctx, target)`,
//!   `fn post_restore(ctx, target)`; throwing fails the hook;
//! - optionally `fn object_fields(parameters)`: the JSON Pointers of the parts of the object
//!   the script reads (`object` then holds only those), as the WIT `object-fields`.
//!
//! Host functions, each checked like the WIT interfaces and throwing when denied: `log(level,
//! message)`, `now()` (`#{seconds, nanoseconds}`), `kube_get(ref)`, `kube_list(kind, namespace,
//! selector)`, `kube_patch(ref, patch)`, `kube_scale(ref, replicas)`, `exec(request)`; for
//! hooks (WIT 0.1.1) `volumes()` (the target's volumes: `#{pod, name, claim, mounts: [#{container,
//! path, readOnly}]}`), `freeze(#{namespace, pod, container, path})` and `scale_to_zero(ref)`.

use crate::host::{ExecRequest, Gate, LogLevel};
use crate::item::{Item, KindRef, ObjectRef};
use crate::source::ExtensionKind;
use rhai::packages::{Package, StandardPackage};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Module, Scope, Shared, AST};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

pub(crate) use crate::wasm::CallError;

/// The limits of every Rhai instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RhaiLimits {
    /// Operations per call; the wall-clock deadline applies too.
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    /// Bytes per string.
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for RhaiLimits {
    fn default() -> Self {
        RhaiLimits {
            max_operations: 10_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 4 << 20,
            max_array_size: 100_000,
            max_map_size: 100_000,
        }
    }
}

/// Builds the engines: the standard library is made once and shared.
pub(crate) struct ScriptEngine {
    limits: RhaiLimits,
    standard: Shared<Module>,
}

/// A compiled script.
pub(crate) struct Script {
    ast: Arc<AST>,
}

/// What an item action script returned.
#[derive(Default)]
pub(crate) struct ScriptOutput {
    /// `None`: the item is unchanged.
    pub item: Option<Item>,
    pub additional: Vec<Item>,
    pub skip: bool,
}

/// One engine and scope, for one extension in one operation.
pub(crate) struct ScriptInstance {
    engine: Engine,
    scope: Scope<'static>,
    ast: Arc<AST>,
    gate: Arc<Gate>,
    timeout: Duration,
    memory_limit: u64,
    /// This thread's net heap ([`crate::heap`]) when the running call started.
    heap_start: Arc<AtomicI64>,
}

/// What `on_progress` ends a call with when its heap outgrew the memory limit.
const OUT_OF_MEMORY: &str = "memory limit";

impl ScriptEngine {
    pub fn new(limits: RhaiLimits) -> ScriptEngine {
        ScriptEngine { limits, standard: StandardPackage::new().as_shared_module() }
    }

    fn engine(&self) -> Engine {
        let mut engine = Engine::new_raw();
        engine.register_global_module(self.standard.clone());
        let l = &self.limits;
        engine
            .set_max_operations(l.max_operations)
            .set_max_call_levels(l.max_call_levels)
            .set_max_expr_depths(l.max_expr_depth, l.max_function_expr_depth)
            .set_max_string_size(l.max_string_size)
            .set_max_array_size(l.max_array_size)
            .set_max_map_size(l.max_map_size)
            .set_strict_variables(true);
        engine.disable_symbol("eval");
        engine
    }

    /// Compiles a script and checks it defines the entry points of `kind`.
    pub fn compile(&self, text: &str, kind: ExtensionKind) -> Result<Script, String> {
        let mut engine = self.engine();
        // Host functions must be known for strict variables; their bodies do not matter here.
        register_host_functions(&mut engine, None);
        let ast = engine.compile(text).map_err(|e| format!("script.rhai: {e}"))?;
        let has = |name: &str, params: usize| ast.iter_functions().any(|f| f.name == name && f.params.len() == params);
        let missing = match kind {
            ExtensionKind::ItemAction if !has("execute", 2) => Some("fn execute(ctx, item)"),
            ExtensionKind::RestoreItemAction if !has("execute", 3) => Some("fn execute(ctx, item, backed_up)"),
            ExtensionKind::ItemFilter if !has("filter", 2) => Some("fn filter(ctx, item)"),
            ExtensionKind::Hook if !["pre_backup", "post_backup", "post_restore"].iter().any(|f| has(f, 2)) => {
                Some("fn pre_backup(ctx, target), fn post_backup(ctx, target) or fn post_restore(ctx, target)")
            }
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(format!("script.rhai does not define {missing}, which a {kind} needs"));
        }
        Ok(Script { ast: Arc::new(ast) })
    }

    pub fn instantiate(&self, script: &Script, gate: Arc<Gate>, memory_limit: u64, timeout: Duration) -> ScriptInstance {
        let mut engine = self.engine();
        register_host_functions(&mut engine, Some(gate.clone()));
        let deadline_gate = gate.clone();
        let heap_start = Arc::new(AtomicI64::new(0));
        let start = heap_start.clone();
        let counted = crate::heap::installed();
        engine.on_progress(move |operations| {
            // One operation grows the heap by at most a few strings of `max_string_size`.
            if counted && crate::heap::net() - start.load(Ordering::Relaxed) > memory_limit as i64 {
                return Some(OUT_OF_MEMORY.into());
            }
            // Reading the clock on every operation would cost more than the operation.
            if operations % 1024 == 0 && Instant::now() > deadline_gate.deadline() {
                Some(Dynamic::UNIT)
            } else {
                None
            }
        });
        let print_gate = gate.clone();
        engine.on_print(move |text| {
            let _ = print_gate.log(LogLevel::Info, text);
        });
        let debug_gate = gate.clone();
        engine.on_debug(move |text, _, _| {
            let _ = debug_gate.log(LogLevel::Debug, text);
        });
        ScriptInstance { engine, scope: Scope::new(), ast: script.ast.clone(), gate, timeout, memory_limit, heap_start }
    }
}

/// ` (line 3, position 7)`, or nothing when the position is unknown.
fn at(pos: rhai::Position) -> String {
    if pos.is_none() {
        String::new()
    } else {
        format!(" ({pos})")
    }
}

fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    message.into().into()
}

fn from_map<T: for<'de> Deserialize<'de>>(what: &str, map: Map) -> Result<T, Box<EvalAltResult>> {
    rhai::serde::from_dynamic(&Dynamic::from_map(map)).map_err(|e| error(format!("{what}: {e}")))
}

fn to_dynamic(value: &impl Serialize) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(value)
}

/// Registers the host functions; without a gate (at compile time) they only fail.
fn register_host_functions(engine: &mut Engine, gate: Option<Arc<Gate>>) {
    let g = move || gate.clone().ok_or_else(|| error("host functions are not available while compiling"));
    let gate = g.clone();
    engine.register_fn("log", move |level: &str, message: &str| -> Result<(), Box<EvalAltResult>> {
        let level = match level {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            other => return Err(error(format!("log: unknown level {other:?}"))),
        };
        gate()?.log(level, message).map_err(error)
    });
    let gate = g.clone();
    engine.register_fn("now", move || -> Result<Map, Box<EvalAltResult>> {
        let since = gate()?.now().map_err(error)?.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut map = Map::new();
        map.insert("seconds".into(), (since.as_secs() as i64).into());
        map.insert("nanoseconds".into(), (since.subsec_nanos() as i64).into());
        Ok(map)
    });
    let gate = g.clone();
    engine.register_fn("kube_get", move |object: Map| -> Result<Dynamic, Box<EvalAltResult>> {
        let object: ObjectRef = from_map("kube_get", object)?;
        match gate()?.kube_get(&object).map_err(error)? {
            Some(found) => to_dynamic(&found),
            None => Ok(Dynamic::UNIT),
        }
    });
    let gate = g.clone();
    engine.register_fn(
        "kube_list",
        move |kind: Map, namespace: &str, selector: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let kind: KindRef = from_map("kube_list", kind)?;
            to_dynamic(&gate()?.kube_list(&kind, namespace, selector).map_err(error)?)
        },
    );
    let gate = g.clone();
    engine.register_fn("kube_patch", move |object: Map, patch: Map| -> Result<Dynamic, Box<EvalAltResult>> {
        let object: ObjectRef = from_map("kube_patch", object)?;
        let patch: Value = from_map("kube_patch", patch)?;
        to_dynamic(&gate()?.kube_patch(&object, &patch).map_err(error)?)
    });
    let gate = g.clone();
    engine.register_fn("kube_scale", move |object: Map, replicas: i64| -> Result<(), Box<EvalAltResult>> {
        let object: ObjectRef = from_map("kube_scale", object)?;
        let replicas = u32::try_from(replicas).map_err(|_| error(format!("kube_scale: {replicas} replicas")))?;
        gate()?.kube_scale(&object, replicas).map_err(error)
    });
    let gate = g.clone();
    engine.register_fn("volumes", move || -> Result<Dynamic, Box<EvalAltResult>> { to_dynamic(&gate()?.target_volumes()) });
    let gate = g.clone();
    engine.register_fn("freeze", move |request: Map| -> Result<(), Box<EvalAltResult>> {
        let request: crate::host::FreezeRequest = from_map("freeze", request)?;
        gate()?.freeze(request).map_err(error)
    });
    let gate = g.clone();
    engine.register_fn("scale_to_zero", move |workload: Map| -> Result<i64, Box<EvalAltResult>> {
        let workload: ObjectRef = from_map("scale_to_zero", workload)?;
        gate()?.scale_to_zero(&workload).map(i64::from).map_err(error)
    });
    let gate = g;
    engine.register_fn("exec", move |request: Map| -> Result<Dynamic, Box<EvalAltResult>> {
        #[derive(Deserialize)]
        struct Request {
            namespace: String,
            pod: String,
            container: String,
            command: Vec<String>,
            #[serde(default = "default_exec_ms")]
            timeout_ms: u64,
        }
        fn default_exec_ms() -> u64 {
            5_000
        }
        let r: Request = from_map("exec", request)?;
        let output = gate()?
            .exec(ExecRequest {
                namespace: r.namespace,
                pod: r.pod,
                container: r.container,
                command: r.command,
                timeout: Duration::from_millis(r.timeout_ms),
            })
            .map_err(error)?;
        to_dynamic(&output)
    });
}

/// The `ctx` argument.
pub(crate) fn context_map(ctx: &crate::item::OperationContext, phase: crate::item::Phase, parameters: &std::collections::BTreeMap<String, String>) -> Dynamic {
    let mut map = Map::new();
    map.insert("kind".into(), match ctx.kind {
        crate::item::OperationKind::Backup => "backup",
        crate::item::OperationKind::Restore => "restore",
    }.into());
    map.insert("name".into(), ctx.name.clone().into());
    map.insert("uid".into(), ctx.uid.clone().into());
    map.insert("phase".into(), phase.as_str().into());
    let parameters: Map = parameters.iter().map(|(k, v)| (k.into(), v.clone().into())).collect();
    map.insert("parameters".into(), parameters.into());
    map.into()
}

/// An item as a script sees it: `#{group, version, kind, namespace, name, object}`.
pub(crate) fn item_map(item: &Item) -> Dynamic {
    identity_map(item, to_rhai(&item.object))
}

/// [`item_map`] with only the parts of the object at `fields`, converted straight from the
/// object.
pub(crate) fn item_view_map(item: &Item, fields: &crate::item::ObjectFields) -> Dynamic {
    let level = |keys: Vec<(&str, Dynamic)>| Dynamic::from_map(keys.into_iter().map(|(k, v)| (k.into(), v)).collect());
    identity_map(item, fields.fold_view(&item.object, &to_rhai, &level))
}

fn identity_map(item: &Item, object: Dynamic) -> Dynamic {
    let mut map = Map::new();
    map.insert("group".into(), item.id.group.as_str().into());
    map.insert("version".into(), item.id.version.as_str().into());
    map.insert("kind".into(), item.id.kind.as_str().into());
    map.insert("namespace".into(), item.id.namespace.as_str().into());
    map.insert("name".into(), item.id.name.as_str().into());
    map.insert("object".into(), object);
    map.into()
}

/// A JSON value as native Rhai values, built directly: rhai's serde bridge costs about twice
/// as much.
pub(crate) fn to_rhai(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_rhai).collect()),
        Value::Object(o) => Dynamic::from_map(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), to_rhai(v)))
                .collect(),
        ),
    }
}

/// Native Rhai values as JSON; fails on values JSON cannot hold (functions, timestamps, NaN).
pub(crate) fn from_rhai(value: &Dynamic) -> Result<Value, String> {
    from_rhai_at(value, 0)
}

/// Arrays and maps nested deeper than this do not become JSON (serde_json reads no deeper
/// either); the recursion stays bounded whatever a script builds.
const MAX_DEPTH: usize = 128;

fn from_rhai_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("a value nested deeper than {MAX_DEPTH} levels has no JSON form"));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a JSON number"));
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return Ok(Value::String(s.as_str().to_owned()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Ok(a) = value.as_array_ref() {
        return a
            .iter()
            .map(|v| from_rhai_at(v, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if let Ok(m) = value.as_map_ref() {
        return m
            .iter()
            .map(|(k, v)| Ok((k.to_string(), from_rhai_at(v, depth + 1)?)))
            .collect::<Result<_, _>>()
            .map(Value::Object);
    }
    if let Ok(b) = value.as_blob_ref() {
        return Ok(Value::Array(
            b.iter().map(|&byte| Value::from(byte)).collect(),
        ));
    }
    Err(format!("a {} has no JSON form", value.type_name()))
}

fn ref_map(object: &ObjectRef) -> Dynamic {
    rhai::serde::to_dynamic(object).unwrap_or(Dynamic::UNIT)
}

/// An item map a script returned.
fn item_from(value: Dynamic) -> Result<Item, String> {
    let Some(mut map) = value.try_cast::<Map>() else {
        return Err("returned something other than an item map".into());
    };
    let mut text = |key: &str| -> Result<String, String> {
        match map.remove(key) {
            None => Ok(String::new()),
            Some(v) => v
                .into_string()
                .map_err(|t| format!("returned an item whose {key} is a {t}, not a string")),
        }
    };
    let id = ObjectRef {
        group: text("group")?,
        version: text("version")?,
        kind: text("kind")?,
        namespace: text("namespace")?,
        name: text("name")?,
    };
    let object = map
        .get("object")
        .ok_or("returned an item without its object; return the item map it was given")?;
    let object =
        from_rhai(object).map_err(|e| format!("returned an item that is not JSON data: {e}"))?;
    Ok(Item { id, object })
}

fn items_from(value: Option<Dynamic>) -> Result<Vec<Item>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(v) if v.is_unit() => Ok(Vec::new()),
        Some(v) => v
            .into_array()
            .map_err(|t| format!("additional_items is a {t}, not an array"))?
            .into_iter()
            .map(item_from)
            .collect(),
    }
}

impl ScriptInstance {
    fn call(&mut self, function: &str, args: Vec<Dynamic>) -> Result<Dynamic, CallError> {
        self.gate.set_deadline(Instant::now() + self.timeout);
        self.heap_start.store(crate::heap::net(), Ordering::Relaxed);
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        self.engine
            .call_fn_with_options::<Dynamic>(options, &mut self.scope, &self.ast, function, args)
            .map_err(|e| self.describe(*e))
    }

    fn describe(&self, error: EvalAltResult) -> CallError {
        match error {
            EvalAltResult::ErrorTerminated(value, pos) if value.clone().into_string().is_ok_and(|s| s == OUT_OF_MEMORY) => {
                CallError::Trapped(format!(
                    "exceeded its memory limit of {}{}",
                    crate::config::MemoryLimit(self.memory_limit),
                    at(pos)
                ))
            }
            EvalAltResult::ErrorTerminated(..) => {
                CallError::Trapped(format!("timed out after {}s", self.timeout.as_secs_f32()))
            }
            EvalAltResult::ErrorTooManyOperations(pos) => CallError::Trapped(format!(
                "exceeded its limit of {} operations{}",
                self.engine.max_operations(),
                at(pos)
            )),
            EvalAltResult::ErrorStackOverflow(pos) => CallError::Trapped(format!(
                "exceeded its limit of {} nested calls{}",
                self.engine.max_call_levels(),
                at(pos)
            )),
            EvalAltResult::ErrorRuntime(value, pos) => CallError::Returned(format!("{value}{}", at(pos))),
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => self.describe(*inner),
            other => CallError::Trapped(other.to_string()),
        }
    }

    /// The parts of the object the script reads: what its optional `fn object_fields(parameters)`
    /// returns (an array of JSON Pointers), `None` without it or when it returns `()`.
    pub fn object_fields(
        &mut self,
        parameters: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Vec<String>>, CallError> {
        if !self.ast.iter_functions().any(|f| f.name == "object_fields" && f.params.len() == 1) {
            return Ok(None);
        }
        let parameters: Map = parameters.iter().map(|(k, v)| (k.into(), v.clone().into())).collect();
        let out = self.call("object_fields", vec![parameters.into()])?;
        if out.is_unit() {
            return Ok(None);
        }
        let fields = out
            .into_array()
            .map_err(|t| CallError::Returned(format!("object_fields returned {t}, not an array of strings")))?;
        fields
            .into_iter()
            .map(|f| f.into_string().map_err(|t| CallError::Returned(format!("object_fields returned a {t}, not a string"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Runs `execute`; the item is `None` when the script returned `()` or the item as given.
    pub fn item_action(&mut self, ctx: Dynamic, item: &Item) -> Result<ScriptOutput, CallError> {
        let out = self.call("execute", vec![ctx, item_map(item)])?;
        self.action_output(out, item)
    }

    pub fn restore_item_action(
        &mut self,
        ctx: Dynamic,
        item: &Item,
        backed_up: &Item,
    ) -> Result<ScriptOutput, CallError> {
        let out = self.call("execute", vec![ctx, item_map(item), item_map(backed_up)])?;
        self.action_output(out, item)
    }

    fn action_output(&self, out: Dynamic, input: &Item) -> Result<ScriptOutput, CallError> {
        let if_changed = |item: Item| (item != *input).then_some(item);
        if out.is_unit() {
            return Ok(ScriptOutput::default());
        }
        if out.as_map_ref().is_ok_and(|m| m.contains_key("object")) {
            let item = item_from(out).map_err(CallError::Returned)?;
            return Ok(ScriptOutput {
                item: if_changed(item),
                ..Default::default()
            });
        }
        let Some(mut map) = out.try_cast::<Map>() else {
            return Err(CallError::Returned("returned something other than an item map".into()));
        };
        let item = match map.remove("item") {
            Some(item) if !item.is_unit() => {
                if_changed(item_from(item).map_err(CallError::Returned)?)
            }
            _ => None,
        };
        let additional = items_from(map.remove("additional_items")).map_err(CallError::Returned)?;
        let skip = map
            .remove("skip")
            .and_then(|s| s.as_bool().ok())
            .unwrap_or(false);
        Ok(ScriptOutput {
            item,
            additional,
            skip,
        })
    }

    /// `None` to include, `Some(reason)` to exclude.
    /// Runs `filter` on an item map ([`item_map`], [`item_view_map`]).
    pub fn filter(&mut self, ctx: Dynamic, item: Dynamic) -> Result<Option<String>, CallError> {
        let out = self.call("filter", vec![ctx, item])?;
        if out.is_unit() {
            return Ok(None);
        }
        if let Ok(include) = out.as_bool() {
            return Ok((!include).then(|| "excluded by the script".to_owned()));
        }
        match out.into_immutable_string() {
            Ok(reason) => Ok(Some(reason.to_string())),
            Err(t) => Err(CallError::Returned(format!("filter returned a {t}; return true, false or a reason"))),
        }
    }

    /// Runs the hook function of `phase`; a script without one does nothing.
    pub fn hook(&mut self, ctx: Dynamic, phase: crate::item::HookPhase, target: &ObjectRef) -> Result<(), CallError> {
        let function = match phase {
            crate::item::HookPhase::PreBackup => "pre_backup",
            crate::item::HookPhase::PostBackup => "post_backup",
            crate::item::HookPhase::PostRestore => "post_restore",
        };
        if !self.ast.iter_functions().any(|f| f.name == function && f.params.len() == 2) {
            return Ok(());
        }
        self.call(function, vec![ctx, ref_map(target)]).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_rhai_values() {
        let value = json!({
            "s": "text", "i": -3, "big": 9_007_199_254_740_993_i64, "f": 1.5, "t": true, "n": null,
            "list": [1, "two", {"three": [3.25]}], "empty": {}, "none": [],
        });
        let dynamic = to_rhai(&value);
        assert_eq!(from_rhai(&dynamic).unwrap(), value);
        // The same shapes rhai's own serde bridge makes.
        let bridged: Value = rhai::serde::from_dynamic(&dynamic).unwrap();
        assert_eq!(bridged, value);
        assert_eq!(
            from_rhai(&rhai::serde::to_dynamic(&value).unwrap()).unwrap(),
            value
        );
    }

    #[test]
    fn values_json_cannot_hold_are_named() {
        assert!(from_rhai(&Dynamic::from(f64::NAN))
            .unwrap_err()
            .contains("not a JSON number"));
        let timestamp = Dynamic::from(std::time::Instant::now());
        assert!(from_rhai(&timestamp)
            .unwrap_err()
            .contains("has no JSON form"));
        assert_eq!(from_rhai(&Dynamic::from('x')).unwrap(), json!("x"));
        let shared = Dynamic::from(7_i64).into_shared();
        assert_eq!(from_rhai(&shared).unwrap(), json!(7));
    }
}

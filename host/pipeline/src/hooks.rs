//! Which exec hooks run on a pod (DESIGN §3, §4, §8), resolved into plain data for the hook
//! engine: the hooks a pod's annotations declare (Stowage's keys or Velero's), else those of the
//! Backup's or Restore's `spec.hooks` that select the pod. An annotation hook replaces the spec
//! hooks of its phase for that pod, as in Velero.
//!
//! Annotations are the application team's and arrive with the pod: a malformed one is a
//! warning naming the pod and the key, never a failed backup. `spec.hooks` is the operation's
//! own request: a malformed one fails its validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stowage_api::hooks::{
    BackupHooks, BackupResourceHookSpec, ExecHook, ExecRestoreHook, HookErrorMode, RestoreHooks, RestoreResourceHookSpec,
};
use stowage_api::labels::{
    ExecHookKeys, Key, INIT_RESTORE_HOOK, POST_BACKUP_HOOK, POST_RESTORE_HOOK, PRE_BACKUP_HOOK,
};

use crate::item::GroupResource;
use crate::selection::{LabelSelector, NamespaceFilter, ResourceName};

/// How long a hook command may run when it does not say (Velero's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// When a hook runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum HookPhase {
    /// Before the pod's volumes are backed up.
    Pre,
    /// After the pod's volumes are backed up, whatever became of them.
    Post,
    /// In a restored pod, once it runs.
    PostRestore,
}

impl HookPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
            HookPhase::PostRestore => "post-restore",
        }
    }
}

/// One command to run in a container of a pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecHookPlan {
    /// Where it was declared: `annotation` or `spec <hook set name>`.
    pub source: String,
    /// The container; the pod's first container when the hook names none.
    pub container: String,
    pub command: Vec<String>,
    pub on_error: HookErrorMode,
    #[serde(with = "seconds")]
    pub timeout: Duration,
}

/// A command run in a restored pod, once its container runs (or is ready).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreExecHookPlan {
    pub exec: ExecHookPlan,
    /// How long to wait for the container; `None`: the restore's pod volume timeout.
    #[serde(default, with = "seconds_opt")]
    pub wait_timeout: Option<Duration>,
    pub wait_for_ready: bool,
    /// Attempts after the first one that fail (Velero's `maxRetries`).
    pub max_retries: u32,
}

/// The backup hooks of one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodBackupHooks {
    pub pre: Vec<ExecHookPlan>,
    pub post: Vec<ExecHookPlan>,
    /// Malformed annotations, each naming the pod and the key.
    pub warnings: Vec<String>,
}

impl PodBackupHooks {
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }
}

/// The restore hooks of one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodRestoreHooks {
    /// Init containers to add after the restore helper's.
    pub init_containers: Vec<Value>,
    pub exec: Vec<RestoreExecHookPlan>,
    pub warnings: Vec<String>,
}

/// Which pods a hook set of `spec.hooks` applies to.
struct PodMatcher {
    name: String,
    namespaces: NamespaceFilter,
    /// Whether the resource filters let pods through.
    takes_pods: bool,
    labels: Option<LabelSelector>,
}

impl PodMatcher {
    fn compile(field: &str, f: &SetFilters<'_>) -> Result<PodMatcher, String> {
        let namespaces = NamespaceFilter::resolve(f.included_namespaces, f.excluded_namespaces).map_err(|e| format!("{field}: {e}"))?;
        let pods = GroupResource::new("", "pods");
        let names_pods = |list: &[String]| list.iter().any(|r| !ResourceName::parse(r).resolve_among([&pods]).is_empty());
        let takes_pods = (f.included_resources.is_empty() || names_pods(f.included_resources)) && !names_pods(f.excluded_resources);
        let labels = match &f.label_selector {
            None => None,
            Some(json) => Some(LabelSelector::from_json(json).map_err(|e| format!("{field}.labelSelector: {e}"))?),
        };
        Ok(PodMatcher { name: f.name.to_string(), namespaces, takes_pods, labels })
    }

    fn matches(&self, pod: &Value) -> bool {
        let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        self.takes_pods && self.namespaces.check(ns).is_ok() && self.labels.as_ref().is_none_or(|l| l.matches_object(pod))
    }
}

/// What selects the pods of a hook set, as Backup and Restore hook sets both spell it.
struct SetFilters<'a> {
    name: &'a str,
    included_namespaces: &'a [String],
    excluded_namespaces: &'a [String],
    included_resources: &'a [String],
    excluded_resources: &'a [String],
    /// As JSON (a `metav1.LabelSelector`).
    label_selector: Option<Value>,
}

fn to_json(selector: &impl Serialize) -> Value {
    // A typed selector always serialises; Null would make compiling it report it.
    serde_json::to_value(selector).unwrap_or(Value::Null)
}

trait HookSet {
    fn filters(&self) -> SetFilters<'_>;
}

impl HookSet for BackupResourceHookSpec {
    fn filters(&self) -> SetFilters<'_> {
        SetFilters {
            name: &self.name,
            included_namespaces: &self.included_namespaces,
            excluded_namespaces: &self.excluded_namespaces,
            included_resources: &self.included_resources,
            excluded_resources: &self.excluded_resources,
            label_selector: self.label_selector.as_ref().map(to_json),
        }
    }
}

impl HookSet for RestoreResourceHookSpec {
    fn filters(&self) -> SetFilters<'_> {
        SetFilters {
            name: &self.name,
            included_namespaces: &self.included_namespaces,
            excluded_namespaces: &self.excluded_namespaces,
            included_resources: &self.included_resources,
            excluded_resources: &self.excluded_resources,
            label_selector: self.label_selector.as_ref().map(to_json),
        }
    }
}

/// Compiles each hook set: its pod selection, and what `hooks` makes of its hooks (adding
/// what is wrong with them to the errors). The errors are the operation's validation errors.
fn compile_sets<S: HookSet, T>(
    sets: &[S],
    mut hooks: impl FnMut(&str, &S, &mut Vec<String>) -> T,
) -> Result<Vec<(PodMatcher, T)>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let filters = set.filters();
        let field = format!("spec.hooks.resources[{i}] ({:?})", filters.name);
        let matcher = PodMatcher::compile(&field, &filters);
        let compiled = hooks(&field, set, &mut errors);
        match matcher {
            Ok(m) => out.push((m, compiled)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A Backup's `spec.hooks`, checked once.
pub struct BackupHookSpecs {
    sets: Vec<(PodMatcher, Vec<ExecHook>, Vec<ExecHook>)>,
}

impl BackupHookSpecs {
    /// Checks every hook set; the errors are the Backup's validation errors.
    pub fn compile(hooks: &BackupHooks) -> Result<BackupHookSpecs, Vec<String>> {
        let sets = compile_sets(&hooks.resources, |field, set, errors| {
            for (phase, list) in [("pre", &set.pre), ("post", &set.post)] {
                for (j, hook) in list.iter().enumerate() {
                    let at = format!("{field}.{phase}[{j}].exec");
                    if hook.exec.command.is_empty() {
                        errors.push(format!("{at}.command is empty; give the command as a list, e.g. [\"/bin/sh\", \"-c\", \"sync\"]"));
                    }
                    if let Some(t) = &hook.exec.timeout {
                        if let Err(e) = parse_timeout(t) {
                            errors.push(format!("{at}.timeout: {e}"));
                        }
                    }
                }
            }
            let exec = |list: &[stowage_api::hooks::BackupResourceHook]| list.iter().map(|h| h.exec.clone()).collect::<Vec<_>>();
            (exec(&set.pre), exec(&set.post))
        })?;
        Ok(BackupHookSpecs { sets: sets.into_iter().map(|(m, (pre, post))| (m, pre, post)).collect() })
    }

    /// The hooks of one pod: its annotations', else the matching hook sets', per phase.
    pub fn for_pod(&self, pod: &Value) -> PodBackupHooks {
        let mut out = PodBackupHooks::default();
        let first = first_container(pod);
        for (phase, keys) in [(HookPhase::Pre, PRE_BACKUP_HOOK), (HookPhase::Post, POST_BACKUP_HOOK)] {
            let hooks = match annotation_hook(pod, &keys, &first, &mut out.warnings) {
                Some(hook) => vec![hook],
                None => self
                    .sets
                    .iter()
                    .filter(|(m, _, _)| m.matches(pod))
                    .flat_map(|(m, pre, post)| {
                        let list = if phase == HookPhase::Pre { pre } else { post };
                        list.iter().map(|h| spec_hook(&m.name, h, &first, HookErrorMode::Fail))
                    })
                    .collect(),
            };
            match phase {
                HookPhase::Pre => out.pre = hooks,
                _ => out.post = hooks,
            }
        }
        out
    }
}

/// A Restore's `spec.hooks`, checked once.
pub struct RestoreHookSpecs {
    sets: Vec<(PodMatcher, Vec<Value>, Vec<ExecRestoreHook>)>,
}

impl RestoreHookSpecs {
    pub fn compile(hooks: &RestoreHooks) -> Result<RestoreHookSpecs, Vec<String>> {
        let sets = compile_sets(&hooks.resources, |field, set, errors| {
            let (mut init, mut exec) = (Vec::new(), Vec::new());
            for (j, hook) in set.post_hooks.iter().enumerate() {
                let at = format!("{field}.postHooks[{j}]");
                match (&hook.exec, &hook.init) {
                    (Some(e), None) => {
                        if e.command.is_empty() {
                            errors.push(format!("{at}.exec.command is empty; give the command as a list"));
                        }
                        for (name, value) in [("execTimeout", &e.exec_timeout), ("waitTimeout", &e.wait_timeout)] {
                            if let Some(Err(err)) = value.as_deref().map(parse_timeout) {
                                errors.push(format!("{at}.exec.{name}: {err}"));
                            }
                        }
                        exec.push(e.clone());
                    }
                    (None, Some(i)) => init.extend(i.init_containers.iter().map(|c| serde_json::to_value(c).unwrap_or(Value::Null))),
                    _ => errors.push(format!("{at}: give exactly one of exec and init")),
                }
            }
            (init, exec)
        })?;
        Ok(RestoreHookSpecs { sets: sets.into_iter().map(|(m, (init, exec))| (m, init, exec)).collect() })
    }

    /// The hooks of one restored pod (as it will be created: its namespace is the target one).
    pub fn for_pod(&self, pod: &Value) -> PodRestoreHooks {
        let mut out = PodRestoreHooks::default();
        let first = first_container(pod);
        let matching: Vec<_> = self.sets.iter().filter(|(m, _, _)| m.matches(pod)).collect();
        out.init_containers = match annotation_init_container(pod, &mut out.warnings) {
            Some(c) => vec![c],
            None => matching.iter().flat_map(|(_, init, _)| init.iter().cloned()).collect(),
        };
        out.exec = match annotation_restore_hook(pod, &first, &mut out.warnings) {
            Some(h) => vec![h],
            None => matching
                .iter()
                .flat_map(|(m, _, exec)| exec.iter().map(|h| restore_spec_hook(&m.name, h, &first)))
                .collect(),
        };
        out
    }
}

fn first_container(pod: &Value) -> String {
    pod.pointer("/spec/containers/0/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn pod_name(pod: &Value) -> String {
    let get = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    format!("{}/{}", get("/metadata/namespace"), get("/metadata/name"))
}

/// A hook timeout: a Go duration (`30s`, `5m`, `1m30s`) or a bare number of seconds (`300`,
/// which Velero silently replaced by its 30 s default).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|e| format!("{t:?}: {e}"));
    }
    stowage_api::duration::parse(t).map_err(|e| format!("{e}; use a duration such as 30s or 5m, or a number of seconds"))
}

/// A command as an annotation spells it: a JSON list of strings, or one word (a program run
/// without arguments, as Velero reads it).
pub fn parse_command(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    if t.starts_with('[') {
        let command: Vec<String> =
            serde_json::from_str(t).map_err(|e| format!("is not a JSON list of strings ({e}); write it as [\"/bin/sh\", \"-c\", \"...\"]"))?;
        if command.is_empty() || command[0].is_empty() {
            return Err("is an empty command".to_string());
        }
        return Ok(command);
    }
    if t.is_empty() {
        return Err("is empty".to_string());
    }
    Ok(vec![t.to_string()])
}

fn parse_on_error(text: &str) -> Option<HookErrorMode> {
    match text.trim().to_ascii_lowercase().as_str() {
        "continue" => Some(HookErrorMode::Continue),
        "fail" => Some(HookErrorMode::Fail),
        _ => None,
    }
}

/// Looks a key up on the pod's annotations: which spelling, and the value.
fn annotation<'a>(pod: &'a Value, key: &Key) -> Option<(&'static str, &'a str)> {
    let map = pod.pointer("/metadata/annotations")?.as_object()?;
    key.spellings().find_map(|k| map.get(k)?.as_str().map(|v| (k, v)))
}

/// The timeout under `key`, the default when absent or malformed (with a warning).
fn timeout_annotation(pod: &Value, key: &Key, default: Duration, warnings: &mut Vec<String>) -> Duration {
    match annotation(pod, key) {
        None => default,
        Some((k, v)) => parse_timeout(v).unwrap_or_else(|e| {
            warnings.push(format!(
                "pod {}: annotation {k}={v:?} is not a timeout ({e}); using {}",
                pod_name(pod),
                humantime_secs(default)
            ));
            default
        }),
    }
}

fn on_error_annotation(pod: &Value, key: &Key, default: HookErrorMode, warnings: &mut Vec<String>) -> HookErrorMode {
    match annotation(pod, key) {
        None => default,
        Some((k, v)) => parse_on_error(v).unwrap_or_else(|| {
            warnings.push(format!("pod {}: annotation {k}={v:?} is neither Continue nor Fail; using {default:?}", pod_name(pod)));
            default
        }),
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The command under `key`, or None (with a warning when it is there but malformed).
fn command_annotation(pod: &Value, key: &Key, warnings: &mut Vec<String>) -> Option<Vec<String>> {
    let (k, v) = annotation(pod, key)?;
    match parse_command(v) {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(format!("pod {}: annotation {k} {e}; the hook is not run", pod_name(pod)));
            None
        }
    }
}

fn annotation_hook(pod: &Value, keys: &ExecHookKeys, first: &str, warnings: &mut Vec<String>) -> Option<ExecHookPlan> {
    let command = command_annotation(pod, &keys.command, warnings)?;
    Some(ExecHookPlan {
        source: "annotation".to_string(),
        container: annotation(pod, &keys.container).map_or(first.to_string(), |(_, c)| c.to_string()),
        command,
        on_error: on_error_annotation(pod, &keys.on_error, HookErrorMode::Fail, warnings),
        timeout: timeout_annotation(pod, &keys.timeout, DEFAULT_TIMEOUT, warnings),
    })
}

fn spec_hook(set: &str, hook: &ExecHook, first: &str, default_on_error: HookErrorMode) -> ExecHookPlan {
    ExecHookPlan {
        source: format!("spec {set}"),
        container: hook.container.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| first.to_string()),
        command: hook.command.clone(),
        on_error: hook.on_error.unwrap_or(default_on_error),
        // Checked when the spec was compiled.
        timeout: hook.timeout.as_deref().and_then(|t| parse_timeout(t).ok()).unwrap_or(DEFAULT_TIMEOUT),
    }
}

fn annotation_restore_hook(pod: &Value, first: &str, warnings: &mut Vec<String>) -> Option<RestoreExecHookPlan> {
    let keys = POST_RESTORE_HOOK;
    let command = command_annotation(pod, &keys.command, warnings)?;
    let wait_for_ready = match annotation(pod, &keys.wait_for_ready) {
        None => false,
        Some((_, v)) if v.trim().eq_ignore_ascii_case("true") => true,
        Some((_, v)) if v.trim().eq_ignore_ascii_case("false") => false,
        Some((k, v)) => {
            warnings.push(format!("pod {}: annotation {k}={v:?} is neither true nor false; not waiting for readiness", pod_name(pod)));
            false
        }
    };
    let wait_timeout = annotation(pod, &keys.wait_timeout).and_then(|(k, v)| match parse_timeout(v) {
        Ok(d) => Some(d),
        Err(e) => {
            warnings.push(format!(
                "pod {}: annotation {k}={v:?} is not a timeout ({e}); waiting up to the restore's pod volume timeout",
                pod_name(pod)
            ));
            None
        }
    });
    Some(RestoreExecHookPlan {
        exec: ExecHookPlan {
            source: "annotation".to_string(),
            container: annotation(pod, &keys.container).map_or(first.to_string(), |(_, c)| c.to_string()),
            command,
            on_error: on_error_annotation(pod, &keys.on_error, HookErrorMode::Continue, warnings),
            timeout: timeout_annotation(pod, &keys.exec_timeout, DEFAULT_TIMEOUT, warnings),
        },
        wait_timeout,
        wait_for_ready,
        max_retries: 0,
    })
}

fn restore_spec_hook(set: &str, hook: &ExecRestoreHook, first: &str) -> RestoreExecHookPlan {
    let exec = ExecHook {
        container: hook.container.clone(),
        command: hook.command.clone(),
        on_error: hook.on_error,
        timeout: hook.exec_timeout.clone(),
    };
    RestoreExecHookPlan {
        exec: spec_hook(set, &exec, first, HookErrorMode::Continue),
        wait_timeout: hook.wait_timeout.as_deref().and_then(|t| parse_timeout(t).ok()),
        wait_for_ready: hook.wait_for_ready.unwrap_or(false),
        max_retries: hook.max_retries,
    }
}

/// The init container an annotation declares: an image and a command are required, the name
/// defaults to `restore-hook`.
fn annotation_init_container(pod: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    let keys = INIT_RESTORE_HOOK;
    let image = annotation(pod, &keys.container_image);
    let command = annotation(pod, &keys.command);
    if image.is_none() && command.is_none() {
        return None;
    }
    let Some((_, image)) = image.filter(|(_, i)| !i.trim().is_empty()) else {
        warnings.push(format!("pod {}: init hook annotations without {}; no init container added", pod_name(pod), keys.container_image.name));
        return None;
    };
    let command = command_annotation(pod, &keys.command, warnings)?;
    let name = annotation(pod, &keys.container_name).map_or("restore-hook", |(_, n)| n);
    let mut container = BTreeMap::new();
    container.insert("name", Value::from(name));
    container.insert("image", Value::from(image));
    container.insert("command", Value::from(command));
    Some(serde_json::to_value(container).unwrap_or(Value::Null))
}

/// Adds init containers to a pod after `after` (the restore helper), or first when it has none.
pub fn add_init_containers(pod: &mut Value, containers: &[Value], after: &str) {
    if containers.is_empty() {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let list = spec.entry("initContainers").or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else { return };
    let names: Vec<&str> = containers.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
    list.retain(|c| !c.get("name").and_then(Value::as_str).is_some_and(|n| names.contains(&n)));
    let at = list.iter().position(|c| c.get("name").and_then(Value::as_str) == Some(after)).map_or(0, |i| i + 1);
    for (i, c) in containers.iter().enumerate() {
        list.insert(at + i, c.clone());
    }
}

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

mod seconds_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests;

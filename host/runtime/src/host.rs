//! What extensions may call back into: the controller's [`HostServices`], behind a
//! capability and scope check on every call.

use crate::config::Capabilities;
use crate::item::{KindRef, ObjectRef};
use crate::policy::Scope;
use crate::source::ExtensionId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use std::panic::AssertUnwindSafe;
use tokio::runtime::Handle;

/// Denied host calls recorded per call at most (a guest may call again and again).
const MAX_DENIALS: usize = 100;
/// Log lines an extension may write per call, and bytes per line: the host keeps them in the
/// operation's log.
pub const MAX_LOG_LINES: usize = 1000;
pub const MAX_LOG_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// The extension's timeout, capped by what is left of its call's deadline.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Where a container of a hook's target pod mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub container: String,
    pub path: String,
    pub read_only: bool,
}

/// One volume of a hook's target that the operation copies (`hook-target.volumes`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetVolume {
    pub pod: String,
    pub name: String,
    /// Empty when the volume is not a PersistentVolumeClaim.
    pub claim: String,
    pub mounts: Vec<VolumeMount>,
}

/// What a hook is called on: a pod or a workload, and the volumes of it the operation copies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookTarget {
    pub object: ObjectRef,
    pub volumes: Vec<TargetVolume>,
}

impl HookTarget {
    pub fn new(object: ObjectRef) -> HookTarget {
        HookTarget { object, volumes: Vec::new() }
    }
}

/// `quiesce.freeze`: the filesystem mounted at `path` in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub path: String,
}

/// The cluster as extensions see it, implemented by the controller. The runtime has
/// checked the capability and the scope of every call before it reaches these methods;
/// errors are returned to the extension as they are.
#[async_trait]
pub trait HostServices: Send + Sync {
    /// A line from an extension, for the operation's log.
    fn log(&self, extension: &ExtensionId, level: LogLevel, message: &str) {
        match level {
            LogLevel::Trace => tracing::trace!(extension = %extension, "{message}"),
            LogLevel::Debug => tracing::debug!(extension = %extension, "{message}"),
            LogLevel::Info => tracing::info!(extension = %extension, "{message}"),
            LogLevel::Warn => tracing::warn!(extension = %extension, "{message}"),
            LogLevel::Error => tracing::error!(extension = %extension, "{message}"),
        }
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// The object, or `None` when it does not exist.
    async fn kube_get(&self, object: &ObjectRef) -> Result<Option<Value>, String>;
    /// Objects of a kind in a namespace (empty: all namespaces) matching a label selector in
    /// text form.
    async fn kube_list(&self, kind: &KindRef, namespace: &str, label_selector: &str) -> Result<Vec<Value>, String>;
    /// Applies a JSON merge patch; returns the patched object.
    async fn kube_patch(&self, object: &ObjectRef, merge_patch: &Value) -> Result<Value, String>;
    async fn kube_scale(&self, object: &ObjectRef, replicas: u32) -> Result<(), String>;
    async fn exec(&self, request: &ExecRequest) -> Result<ExecOutput, String>;
    /// Freezes a filesystem after recording the thaw the host owes (`quiesce.freeze`).
    async fn freeze(&self, extension: &ExtensionId, request: &FreezeRequest) -> Result<(), String> {
        let _ = (extension, request);
        Err("quiescing is not available here: it needs a backup in a cluster".into())
    }
    /// Scales a workload to zero after recording the scale-back the host owes, and waits for
    /// its pods to be gone (`quiesce.scale-to-zero`); returns the replicas it had.
    async fn scale_to_zero(&self, extension: &ExtensionId, workload: &ObjectRef, timeout: Duration) -> Result<u32, String> {
        let _ = (extension, workload, timeout);
        Err("quiescing is not available here: it needs a backup in a cluster".into())
    }
}

/// Host services for running extensions without a cluster (`stowage extension test`): logs
/// go to tracing, every cluster call fails.
pub struct OfflineHost;

#[async_trait]
impl HostServices for OfflineHost {
    async fn kube_get(&self, _: &ObjectRef) -> Result<Option<Value>, String> {
        Err("no cluster: running offline".into())
    }
    async fn kube_list(&self, _: &KindRef, _: &str, _: &str) -> Result<Vec<Value>, String> {
        Err("no cluster: running offline".into())
    }
    async fn kube_patch(&self, _: &ObjectRef, _: &Value) -> Result<Value, String> {
        Err("no cluster: running offline".into())
    }
    async fn kube_scale(&self, _: &ObjectRef, _: u32) -> Result<(), String> {
        Err("no cluster: running offline".into())
    }
    async fn exec(&self, _: &ExecRequest) -> Result<ExecOutput, String> {
        Err("no cluster: running offline".into())
    }
}

/// A host call the extension was not allowed to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// `kube-read.get`, `exec.run`, ...
    pub call: String,
    /// What it was called on, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    pub reason: String,
}

/// One extension instance's door to the host: checks each call against the extension's
/// capabilities and scope, records refusals, bounds host calls by the call's deadline and
/// bridges into the async [`HostServices`].
pub(crate) struct Gate {
    pub extension: ExtensionId,
    scope: Scope,
    capabilities: Capabilities,
    host: Arc<dyn HostServices>,
    handle: Option<Handle>,
    deadline: Mutex<Instant>,
    denials: Mutex<Vec<Denial>>,
    /// Log lines written in the current call.
    log_lines: Mutex<usize>,
    /// The volumes of the current hook call's target, and whether it may quiesce (pre-backup).
    hook: Mutex<(Vec<TargetVolume>, bool)>,
}

impl Gate {
    pub fn new(
        extension: ExtensionId,
        scope: Scope,
        capabilities: Capabilities,
        host: Arc<dyn HostServices>,
        handle: Option<Handle>,
    ) -> Gate {
        Gate {
            extension,
            scope,
            capabilities,
            host,
            handle,
            deadline: Mutex::new(Instant::now()),
            denials: Mutex::new(Vec::new()),
            log_lines: Mutex::new(0),
            hook: Mutex::new((Vec::new(), false)),
        }
    }

    /// Arms the next call: its deadline, and a fresh count of its log lines.
    pub fn set_deadline(&self, deadline: Instant) {
        *self.deadline.lock().unwrap() = deadline;
        *self.log_lines.lock().unwrap() = 0;
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap()
    }

    /// Sets what the next hook call acts on; `may_quiesce` in pre-backup calls only.
    pub fn set_hook(&self, volumes: Vec<TargetVolume>, may_quiesce: bool) {
        *self.hook.lock().unwrap() = (volumes, may_quiesce);
    }

    /// `hook-target.volumes`: needs no capability (it says what the call is about).
    pub fn target_volumes(&self) -> Vec<TargetVolume> {
        self.hook.lock().unwrap().0.clone()
    }

    /// The refusals since the last call.
    pub fn take_denials(&self) -> Vec<Denial> {
        std::mem::take(&mut *self.denials.lock().unwrap())
    }

    fn deny(&self, call: &str, target: String, reason: String) -> String {
        let message = if target.is_empty() {
            format!("{call} denied: {reason}")
        } else {
            format!("{call} {target} denied: {reason}")
        };
        let mut denials = self.denials.lock().unwrap();
        // A guest can call again and again: what is recorded stays bounded.
        if denials.len() < MAX_DENIALS {
            let target = target.chars().take(256).collect();
            denials.push(Denial { call: call.into(), target, reason });
        }
        message
    }

    /// Refuses names that are not one path segment of the API: the host puts them into request
    /// paths, where `web/ephemeralcontainers` or `web/exec?container=other` would reach another
    /// subresource or container than the one checked. `may_be_empty` is for a namespace that
    /// may be left out.
    fn check_names(&self, call: &str, target: &str, names: &[(&str, &str, bool)]) -> Result<(), String> {
        for &(what, name, may_be_empty) in names {
            let valid = if name.is_empty() {
                may_be_empty
            } else {
                name.len() <= 253
                    && name != "."
                    && name != ".."
                    && !name.chars().any(|c| matches!(c, '/' | '%' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control())
            };
            if !valid {
                let shown: String = name.chars().take(64).collect();
                return Err(self.deny(call, target.chars().take(256).collect(), format!("{what} {shown:?} is not a valid Kubernetes name")));
            }
        }
        Ok(())
    }

    fn check_scope(&self, call: &str, target: &str, namespace: &str) -> Result<(), String> {
        if self.scope.allows(namespace) {
            return Ok(());
        }
        let Scope::Namespace(own) = &self.scope else { unreachable!() };
        let what = if namespace.is_empty() { "cluster-wide".to_owned() } else { format!("namespace {namespace}") };
        Err(self.deny(call, target.into(), format!("{what} is outside this extension's namespace {own}")))
    }

    pub fn log(&self, level: LogLevel, message: &str) -> Result<(), String> {
        if !self.capabilities.log {
            return Err(self.deny("log", String::new(), "capability log is not granted".into()));
        }
        {
            let mut lines = self.log_lines.lock().unwrap();
            if *lines >= MAX_LOG_LINES {
                return Err(format!("log: more than {MAX_LOG_LINES} lines in one call; the rest are dropped"));
            }
            *lines += 1;
        }
        if message.len() > MAX_LOG_LINE_BYTES {
            let cut = (0..=MAX_LOG_LINE_BYTES).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            let line = format!("{}... ({} bytes cut)", &message[..cut], message.len() - cut);
            self.host.log(&self.extension, level, &line);
        } else {
            self.host.log(&self.extension, level, message);
        }
        Ok(())
    }

    pub fn now(&self) -> Result<SystemTime, String> {
        if !self.capabilities.clock {
            return Err(self.deny("clock.now", String::new(), "capability clock is not granted".into()));
        }
        Ok(self.host.now())
    }

    pub fn kube_get(&self, object: &ObjectRef) -> Result<Option<Value>, String> {
        let call = "kube-read.get";
        let target = object.to_string();
        if !self.capabilities.may_read(&object.group, &object.kind) {
            return Err(self.deny(call, target, format!("capability kubeRead does not include {}", object.kind)));
        }
        self.check_names(call, &target, &[("namespace", &object.namespace, true), ("name", &object.name, false)])?;
        self.check_scope(call, &target, &object.namespace)?;
        self.block_on(call, None, self.host.kube_get(object))
    }

    pub fn kube_list(&self, kind: &KindRef, namespace: &str, label_selector: &str) -> Result<Vec<Value>, String> {
        let call = "kube-read.list";
        let target = if namespace.is_empty() { kind.kind.clone() } else { format!("{} in {namespace}", kind.kind) };
        if !self.capabilities.may_read(&kind.group, &kind.kind) {
            return Err(self.deny(call, target, format!("capability kubeRead does not include {}", kind.kind)));
        }
        self.check_names(call, &target, &[("namespace", namespace, true)])?;
        self.check_scope(call, &target, namespace)?;
        self.block_on(call, None, self.host.kube_list(kind, namespace, label_selector))
    }

    pub fn kube_patch(&self, object: &ObjectRef, merge_patch: &Value) -> Result<Value, String> {
        let call = "kube-write.patch";
        let target = object.to_string();
        if !self.capabilities.may_write(&object.group, &object.kind) {
            return Err(self.deny(call, target, format!("capability kubeWrite does not include {}", object.kind)));
        }
        self.check_names(call, &target, &[("namespace", &object.namespace, true), ("name", &object.name, false)])?;
        self.check_scope(call, &target, &object.namespace)?;
        self.block_on(call, None, self.host.kube_patch(object, merge_patch))
    }

    pub fn kube_scale(&self, object: &ObjectRef, replicas: u32) -> Result<(), String> {
        let call = "kube-write.scale";
        let target = object.to_string();
        if !self.capabilities.may_write(&object.group, &object.kind) {
            return Err(self.deny(call, target, format!("capability kubeWrite does not include {}", object.kind)));
        }
        self.check_names(call, &target, &[("namespace", &object.namespace, true), ("name", &object.name, false)])?;
        self.check_scope(call, &target, &object.namespace)?;
        self.block_on(call, None, self.host.kube_scale(object, replicas))
    }

    pub fn exec(&self, mut request: ExecRequest) -> Result<ExecOutput, String> {
        let call = "exec.run";
        let target = format!("{}/{} container {}", request.namespace, request.pod, request.container);
        if !self.capabilities.may_exec(&request.container) {
            return Err(self.deny(
                call,
                target,
                format!("capability exec does not include container {}", request.container),
            ));
        }
        let names = [("namespace", request.namespace.as_str(), false), ("pod", &request.pod, false), ("container", &request.container, false)];
        self.check_names(call, &target, &names)?;
        self.check_scope(call, &target, &request.namespace)?;
        let remaining = self.deadline().saturating_duration_since(Instant::now());
        request.timeout = request.timeout.min(remaining);
        let timeout = request.timeout;
        self.block_on(call, Some(timeout), self.host.exec(&request))
    }

    fn check_quiesce(&self, call: &str, target: &str) -> Result<(), String> {
        match self.hook.lock().unwrap().1 {
            true => Ok(()),
            false => Err(self.deny(call, target.into(), "quiescing is allowed in pre-backup hooks only".into())),
        }
    }

    pub fn freeze(&self, request: FreezeRequest) -> Result<(), String> {
        let call = "quiesce.freeze";
        let target = format!("{}/{} container {} path {}", request.namespace, request.pod, request.container, request.path);
        self.check_quiesce(call, &target)?;
        if !self.capabilities.may_exec(&request.container) {
            return Err(self.deny(call, target, format!("capability exec does not include container {}", request.container)));
        }
        let names = [("namespace", request.namespace.as_str(), false), ("pod", &request.pod, false), ("container", &request.container, false)];
        self.check_names(call, &target, &names)?;
        self.check_scope(call, &target, &request.namespace)?;
        if !request.path.starts_with('/') || request.path.split('/').any(|c| c == "..") || request.path.chars().any(char::is_control) {
            return Err(self.deny(call, target, "path must be an absolute mount path without `..`".into()));
        }
        self.block_on(call, None, self.host.freeze(&self.extension, &request))
    }

    pub fn scale_to_zero(&self, workload: &ObjectRef) -> Result<u32, String> {
        let call = "quiesce.scale-to-zero";
        let target = workload.to_string();
        self.check_quiesce(call, &target)?;
        if !self.capabilities.may_write(&workload.group, &workload.kind) {
            return Err(self.deny(call, target, format!("capability kubeWrite does not include {}", workload.kind)));
        }
        if workload.group != "apps" || !matches!(workload.kind.as_str(), "Deployment" | "StatefulSet") {
            return Err(self.deny(call, target, "only Deployments and StatefulSets (group apps) can be scaled to zero".into()));
        }
        self.check_names(call, &target, &[("namespace", &workload.namespace, false), ("name", &workload.name, false)])?;
        self.check_scope(call, &target, &workload.namespace)?;
        let remaining = self.deadline().saturating_duration_since(Instant::now());
        self.block_on(call, None, self.host.scale_to_zero(&self.extension, workload, remaining))
    }

    /// Runs a host future to completion from the extension's (blocking) thread, bounded by
    /// the call's deadline: epoch interruption stops guest code, not a host call it waits on.
    fn block_on<T>(
        &self,
        call: &str,
        limit: Option<Duration>,
        future: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let remaining = self.deadline().saturating_duration_since(Instant::now());
        let limit = limit.unwrap_or(remaining).min(remaining);
        if limit.is_zero() {
            return Err(format!("{call}: the extension's deadline has passed"));
        }
        let Some(handle) = &self.handle else {
            return Err(format!("{call}: no async runtime to call the host from"));
        };
        let bounded = async { tokio::time::timeout(limit, future).await };
        let outcome = match Handle::try_current() {
            // On a runtime thread (a worker, or a blocking thread of spawn_blocking): step out
            // of the runtime first. Only inside a current-thread runtime's own async code is
            // that impossible; tokio panics then, which becomes an error for the extension.
            Ok(_) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                tokio::task::block_in_place(|| handle.block_on(bounded))
            }))
            .map_err(|_| {
                format!("{call}: cannot wait for the host on this thread; use the session from spawn_blocking")
            })?,
            Err(_) => handle.block_on(bounded),
        };
        outcome.map_err(|_| format!("{call}: timed out after {limit:?}"))?
    }
}

//! The hook engine (DESIGN §4, §7, §8): runs the exec hooks and hook extensions of pods around
//! their volume backups ([`backup`]) and in restored pods ([`restore`]).
//!
//! Which hooks a pod has is decided by `stowage_pipeline::hooks` (annotations, `spec.hooks`)
//! and [`extension::HookExtensions`] (hook extensions). Once a pod's pre hooks start, its post
//! hooks are owed: the debt is written to the cluster first ([`journal`]), paid whatever
//! happens to the volumes, and paid by the next server to start if this one dies.

pub mod backup;
mod exec;
pub mod extension;
pub mod journal;
pub mod quiesce;
pub mod restore;
pub mod workload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use stowage_api::hooks::{HookRun, HookStatus};

use crate::oplog::OperationLog;

pub use exec::{redact, run_exec, HookOutcome};

/// A pod as the hooks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub fn of(pod: &Value) -> PodRef {
        let get = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        PodRef { namespace: get("/metadata/namespace"), name: get("/metadata/name"), uid: get("/metadata/uid") }
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether a pod is Running, and whether `container` of it runs (and is ready).
pub fn container_state(pod: &Value, container: &str) -> ContainerState {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return ContainerState::PodNotRunning;
    }
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let Some(status) = statuses.into_iter().flatten().find(|s| s.get("name").and_then(Value::as_str) == Some(container)) else {
        let declared = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten();
        return match declared.clone().any(|c| c.get("name").and_then(Value::as_str) == Some(container)) {
            true => ContainerState::NotRunning,
            false => ContainerState::Missing,
        };
    };
    if status.pointer("/state/running").is_none() {
        return ContainerState::NotRunning;
    }
    match status.get("ready").and_then(Value::as_bool) {
        Some(true) => ContainerState::Ready,
        _ => ContainerState::Running,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    PodNotRunning,
    /// The pod has no such container.
    Missing,
    NotRunning,
    Running,
    Ready,
}

/// The hook runs of one backup or restore: counted and listed for its status, and logged.
#[derive(Clone)]
pub struct Ledger {
    status: Arc<Mutex<HookStatus>>,
    log: OperationLog,
}

impl Ledger {
    pub fn new(log: &OperationLog) -> Ledger {
        Ledger { status: Arc::default(), log: log.clone() }
    }

    /// A ledger that goes on from what an operation's status already lists.
    pub fn resume(status: HookStatus, log: &OperationLog) -> Ledger {
        Ledger { status: Arc::new(Mutex::new(status)), log: log.clone() }
    }

    pub fn log(&self) -> &OperationLog {
        &self.log
    }

    fn record(&self, run: HookRun) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).record(run);
    }

    fn runs_len(&self) -> usize {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).runs.len()
    }

    /// Marks the runs listed from `from` on as made by a server that paid a stopped one's debt.
    fn mark_after_restart(&self, from: usize) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        for run in status.runs.iter_mut().skip(from) {
            run.after_restart = true;
        }
    }

    /// What the operation's `status.hookStatus` says (None: no hook ran).
    pub fn status(&self) -> Option<HookStatus> {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (s.hooks_attempted > 0).then_some(s)
    }
}

/// Puts a hook's outcome on the operation's outcome; true when it fails the pod.
fn note(result: HookOutcome, ns: Option<&str>, outcome: &mut stowage_pipeline::Outcome) -> bool {
    match result {
        HookOutcome::Succeeded => false,
        HookOutcome::Skipped(m) => {
            outcome.warn(ns, m);
            false
        }
        HookOutcome::Failed { message, fatal: true } => {
            outcome.error(ns, message);
            true
        }
        HookOutcome::Failed { message, fatal: false } => {
            outcome.warn(ns, message);
            false
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

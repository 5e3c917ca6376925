//! Quiesce steps hook extensions take through the host (`quiesce.freeze`,
//! `quiesce.scale-to-zero`, WIT 0.1.1), and their undo, which the host owns (DESIGN §4, §7).
//!
//! Each step is written to the cluster before it is taken: an annotation on the Backup
//! (`owed-undo.stowage.io/<key>`) and, for a workload scaled to zero, one on the workload
//! (`stowage.io/quiesced-replicas`, naming the backup). The host undoes the steps of a pod or
//! workload once its volumes are copied, whatever happened to them, with no help from the
//! extension; a frozen filesystem is thawed at the latest after the server's maximum frozen
//! time (velero#2113), and a server that starts undoes what a stopped one left (velero#511).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stowage_api::hooks::HookRun;
use stowage_api::Backup;
use stowage_runtime::{ExtensionId, FreezeRequest, ObjectRef};

use super::{millis, Ledger};
use crate::context::Context;
use crate::oplog::OperationLog;
use crate::podexec::{exec, tail};

/// Annotations on a Backup under this prefix, one per quiesce step it owes the undo of.
pub const UNDO_PREFIX: &str = "owed-undo.stowage.io/";
/// Annotation on a workload scaled to zero: its replicas and the backup that did it.
pub const QUIESCED_REPLICAS: &str = stowage_api::labels::QUIESCED_REPLICAS.name;

/// How long one `fsfreeze` command may take.
const FREEZE_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// What undoes one quiesce step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "undo", rename_all = "camelCase")]
pub enum Undo {
    /// `fsfreeze --unfreeze <path>` in the container.
    #[serde(rename_all = "camelCase")]
    Thaw { namespace: String, pod: String, container: String, path: String },
    /// Sets the workload's replicas back (and removes its `stowage.io/quiesced-replicas`).
    #[serde(rename_all = "camelCase")]
    ScaleBack { namespace: String, kind: String, name: String, replicas: u32 },
}

impl Undo {
    /// The Backup annotation that records it.
    fn key(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        format!("{UNDO_PREFIX}{:016x}", hasher.finish())
    }

    pub fn describe(&self) -> String {
        match self {
            Undo::Thaw { namespace, pod, container, path } => format!("thaw {path} in pod {namespace}/{pod} (container {container})"),
            Undo::ScaleBack { namespace, kind, name, replicas } => format!("scale {kind} {namespace}/{name} back to {replicas} replicas"),
        }
    }

    /// What the ledger lists it under: the pod, or the workload as `namespace/name`.
    fn subject(&self) -> String {
        match self {
            Undo::Thaw { namespace, pod, .. } => format!("{namespace}/{pod}"),
            Undo::ScaleBack { namespace, name, .. } => format!("{namespace}/{name}"),
        }
    }

    /// Takes the step back. `backup_uid`: only a workload this backup quiesced is scaled back.
    pub async fn run(&self, client: &Client, backup_uid: &str) -> Result<(), String> {
        match self {
            Undo::Thaw { namespace, pod, container, path } => {
                let command = ["fsfreeze".to_string(), "--unfreeze".to_string(), path.clone()];
                let out = exec(client, namespace, pod, container, &command, FREEZE_COMMAND_TIMEOUT).await.map_err(|e| e.to_string())?;
                match out.exit_code {
                    0 => Ok(()),
                    // Not frozen (any more): what the undo wants.
                    _ if out.stderr.contains("Invalid argument") => Ok(()),
                    code => Err(format!("fsfreeze --unfreeze exited with {code}: {}", tail(&out.stderr, 3))),
                }
            }
            Undo::ScaleBack { namespace, kind, name, replicas } => {
                let workload = Workload::new(client, namespace, kind).map_err(|e| e.to_string())?;
                let Some(current) = workload.get(name).await? else {
                    return Err(format!("{kind} {namespace}/{name} is gone"));
                };
                let mark = quiesced_mark(&current);
                if mark.as_ref().is_some_and(|m| !backup_uid.is_empty() && m.uid != backup_uid) {
                    return Err(format!("{kind} {namespace}/{name} is now quiesced by backup {}: left to it", mark.map(|m| m.backup).unwrap_or_default()));
                }
                workload.scale(name, *replicas).await?;
                workload.patch(name, json!({"metadata": {"annotations": {QUIESCED_REPLICAS: Value::Null}}})).await
            }
        }
    }
}

/// The value of `stowage.io/quiesced-replicas`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuiescedMark {
    pub replicas: u32,
    pub backup: String,
    pub uid: String,
}

fn quiesced_mark(object: &Value) -> Option<QuiescedMark> {
    let text = object.pointer("/metadata/annotations")?.get(QUIESCED_REPLICAS)?.as_str()?;
    serde_json::from_str(text).ok()
}

/// A Deployment or StatefulSet, through the API of its kind.
struct Workload(Api<DynamicObject>);

impl Workload {
    fn new(client: &Client, namespace: &str, kind: &str) -> Result<Workload, String> {
        let resource = match kind {
            "Deployment" => ApiResource::erase::<Deployment>(&()),
            "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
            other => return Err(format!("{other} cannot be scaled to zero: only Deployments and StatefulSets")),
        };
        Ok(Workload(Api::namespaced_with(client.clone(), namespace, &resource)))
    }

    async fn get(&self, name: &str) -> Result<Option<Value>, String> {
        let found = self.0.get_opt(name).await.map_err(|e| format!("reading {name}: {e}"))?;
        Ok(found.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    async fn patch(&self, name: &str, patch: Value) -> Result<(), String> {
        self.0.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).map_err(|e| format!("patching {name}: {e}"))
    }

    async fn scale(&self, name: &str, replicas: u32) -> Result<(), String> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let done = self.0.patch_scale(name, &PatchParams::default(), &patch).await;
        done.map(|_| ()).map_err(|e| format!("scaling {name} to {replicas}: {e}"))
    }
}

/// How an undo ended.
#[derive(Debug)]
pub struct Undone {
    pub undo: Undo,
    pub error: Option<String>,
    /// Thawed by the maximum frozen time, before the volume's copy ended.
    pub expired: bool,
}

/// The state of one step the host owes the undo of.
#[derive(Default)]
struct UndoState {
    done: bool,
    expired: bool,
    error: Option<String>,
}

struct Owed {
    owner: String,
    undo: Undo,
    state: Arc<tokio::sync::Mutex<UndoState>>,
}

/// The quiesce steps of one backup: taken for its hook extensions, undone by it.
pub struct Quiescer {
    client: Client,
    backups: Api<Backup>,
    backup: (String, String),
    max_frozen: Duration,
    log: OperationLog,
    /// The pod uid or workload the hook running now is for: its steps are undone with it.
    owner: Mutex<String>,
    owed: Mutex<Vec<Owed>>,
}

impl Quiescer {
    pub fn new(ctx: &Context, (name, uid): (&str, &str), log: &OperationLog) -> Arc<Quiescer> {
        Arc::new(Quiescer {
            client: ctx.client.clone(),
            backups: Api::namespaced(ctx.client.clone(), &ctx.namespace),
            backup: (name.to_string(), uid.to_string()),
            max_frozen: ctx.max_frozen_time,
            log: log.clone(),
            owner: Mutex::default(),
            owed: Mutex::default(),
        })
    }

    /// Says whose hook runs next; the steps it takes are undone by [`Quiescer::undo`] for it.
    pub fn set_owner(&self, owner: &str) {
        owner.clone_into(&mut self.owner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn record(&self, undo: &Undo) -> Result<Arc<tokio::sync::Mutex<UndoState>>, String> {
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut value = serde_json::to_value(undo).unwrap_or_default();
        value["owner"] = json!(owner);
        let patch = json!({"metadata": {"annotations": {undo.key(): value.to_string()}}});
        self.backups
            .patch(&self.backup.0, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("recording the undo on Backup {} failed, so the step is not taken: {e}", self.backup.0))?;
        let state = Arc::new(tokio::sync::Mutex::new(UndoState::default()));
        self.owed.lock().unwrap_or_else(|p| p.into_inner()).push(Owed { owner, undo: undo.clone(), state: state.clone() });
        Ok(state)
    }

    async fn forget(&self, undo: &Undo) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": {undo.key(): Value::Null}}});
        self.backups.patch(&self.backup.0, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }

    /// Takes a step back once: by the undo or by the watchdog, whichever comes first.
    async fn take_back(&self, undo: &Undo, state: &tokio::sync::Mutex<UndoState>, expired: bool) {
        let mut state = state.lock().await;
        if state.done {
            return;
        }
        state.done = true;
        state.expired = expired;
        state.error = undo.run(&self.client, &self.backup.1).await.err();
        if state.error.is_none() {
            if let Err(e) = self.forget(undo).await {
                self.log.warn(format!("{}: done, but clearing its record on the Backup failed: {e}; the next server start does it again", undo.describe()));
            }
        }
    }

    /// `quiesce.freeze`: records the thaw, freezes, and arms the maximum frozen time.
    pub async fn freeze(self: &Arc<Self>, extension: &ExtensionId, request: &FreezeRequest) -> Result<(), String> {
        let FreezeRequest { namespace, pod, container, path } = request.clone();
        let undo = Undo::Thaw { namespace: namespace.clone(), pod: pod.clone(), container: container.clone(), path: path.clone() };
        let state = self.record(&undo).await?;
        let command = ["fsfreeze".to_string(), "--freeze".to_string(), path.clone()];
        let what = format!("{path} in pod {namespace}/{pod} (container {container})");
        let result = match exec(&self.client, &namespace, &pod, &container, &command, FREEZE_COMMAND_TIMEOUT).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => {
                let reason = tail(&out.stderr, 3);
                let hint = match reason.contains("not supported") || reason.contains("Inappropriate ioctl") {
                    true => " (NFS and other network or FUSE filesystems cannot be frozen: quiesce this volume another way, e.g. with an exec hook in the application)",
                    false => "",
                };
                Err(format!("the filesystem at {what} cannot be frozen: fsfreeze exited with {}: {reason}{hint}", out.exit_code))
            }
            // Timed out: it may have frozen; the thaw below makes sure it is not left so.
            Err(e) => Err(format!("freezing {what}: {e}")),
        };
        if let Err(e) = result {
            // Thawed in case it froze after all (a timeout); either way nothing is owed any more.
            self.take_back(&undo, &state, false).await;
            self.owed.lock().unwrap_or_else(|p| p.into_inner()).retain(|o| o.undo != undo);
            if let Err(forget) = self.forget(&undo).await {
                self.log.warn(format!("clearing the record of {} on the Backup: {forget}", undo.describe()));
            }
            return Err(e);
        }
        self.log.info(format!("extension {extension}: froze {what}; the host thaws it after the volume is copied, at the latest in {}", humantime::format_duration(self.max_frozen)));
        let (this, max) = (self.clone(), self.max_frozen);
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            if state.lock().await.done {
                return;
            }
            this.log.error(format!("{what} stayed frozen for the maximum frozen time ({}): thawing it now", humantime::format_duration(max)));
            this.take_back(&undo, &state, true).await;
        });
        Ok(())
    }

    /// `quiesce.scale-to-zero`: waits for another backup's quiesce of the workload to end,
    /// records the replicas on the workload and the Backup, scales it to zero and waits until
    /// its pods are gone.
    pub async fn scale_to_zero(&self, extension: &ExtensionId, target: &ObjectRef, timeout: Duration) -> Result<u32, String> {
        let deadline = Instant::now() + timeout;
        let (namespace, kind, name) = (&target.namespace, &target.kind, &target.name);
        let what = format!("{kind} {namespace}/{name}");
        let workload = Workload::new(&self.client, namespace, kind)?;
        let mut waiting = false;
        let (object, replicas) = loop {
            let object = workload.get(name).await?.ok_or_else(|| format!("{what} does not exist"))?;
            match quiesced_mark(&object) {
                Some(mark) if mark.uid == self.backup.1 => return Ok(mark.replicas),
                Some(mark) if Instant::now() + POLL < deadline => {
                    if !waiting {
                        waiting = true;
                        self.log.info(format!("{what} is kept at zero replicas by backup {}: waiting until it is scaled back", mark.backup));
                    }
                    tokio::time::sleep(POLL).await;
                }
                Some(mark) => {
                    return Err(format!(
                        "{what} is quiesced by backup {} (uid {}); waited {}s for it to scale the workload back",
                        mark.backup,
                        mark.uid,
                        timeout.as_secs()
                    ))
                }
                None => {
                    let replicas = object.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
                    break (object, u32::try_from(replicas).unwrap_or(u32::MAX));
                }
            }
        };
        let mark = QuiescedMark { replicas, backup: self.backup.0.clone(), uid: self.backup.1.clone() };
        // The resource version makes the mark a compare-and-swap: two backups never both win.
        let patch = json!({"metadata": {"resourceVersion": object.pointer("/metadata/resourceVersion"),
            "annotations": {QUIESCED_REPLICAS: serde_json::to_string(&mark).unwrap_or_default()}}});
        workload.patch(name, patch).await.map_err(|e| format!("marking {what} as quiesced: {e}"))?;
        let undo = Undo::ScaleBack { namespace: namespace.clone(), kind: kind.clone(), name: name.clone(), replicas };
        if let Err(e) = self.record(&undo).await {
            let _ = workload.patch(name, json!({"metadata": {"annotations": {QUIESCED_REPLICAS: Value::Null}}})).await;
            return Err(e);
        }
        workload.scale(name, 0).await?;
        self.log.info(format!("extension {extension}: scaled {what} from {replicas} replicas to 0; the host scales it back after its volumes are copied"));
        let selector = object
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        if selector.is_empty() {
            return Err(format!("{what} has no spec.selector.matchLabels: cannot tell when its pods are gone"));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        loop {
            let left = pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| format!("listing the pods of {what}: {e}"))?;
            if left.items.is_empty() {
                return Ok(replicas);
            }
            if Instant::now() + POLL >= deadline {
                let names: Vec<String> = left.items.iter().map(|p| p.name_any()).collect();
                return Err(format!("{what} was scaled to 0 but its pods {} were still there after {}s", names.join(", "), timeout.as_secs()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Undoes, in the reverse order, the steps taken for `owner`, and lists them in the ledger.
    pub async fn undo(&self, owner: &str, ledger: &Ledger) -> Vec<Undone> {
        let mine: Vec<Owed> = {
            let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
            let (mine, rest) = std::mem::take(&mut *owed).into_iter().partition(|o| o.owner == owner);
            *owed = rest;
            mine
        };
        let mut undone = Vec::new();
        for owed in mine.into_iter().rev() {
            let started = Instant::now();
            self.take_back(&owed.undo, &owed.state, false).await;
            let state = owed.state.lock().await;
            let error = state.error.clone();
            record_undo(ledger, &owed.undo, started.elapsed(), error.clone());
            undone.push(Undone { undo: owed.undo, error, expired: state.expired });
        }
        undone
    }
}

fn record_undo(ledger: &Ledger, undo: &Undo, took: Duration, error: Option<String>) {
    match &error {
        None => ledger.log().info(format!("undo: {}: done", undo.describe())),
        Some(e) => ledger.log().error(format!("undo: {} failed: {e}", undo.describe())),
    }
    let container = match undo {
        Undo::Thaw { container, .. } => container.clone(),
        Undo::ScaleBack { .. } => String::new(),
    };
    ledger.record(HookRun {
        pod: undo.subject(),
        container,
        phase: "undo".into(),
        hook: format!("host: {}", undo.describe()),
        duration_millis: millis(took),
        error,
        ..Default::default()
    });
}


/// Takes back every step a stopped server left recorded on `backup`; returns the annotations to
/// clear.
pub async fn pay_owed(ctx: &Context, backup: &Backup, ledger: &Ledger) -> BTreeMap<String, Value> {
    let uid = backup.uid().unwrap_or_default();
    let mut cleared = BTreeMap::new();
    for (key, undo) in super::journal::records::<Undo>(backup, UNDO_PREFIX) {
        let key = format!("{UNDO_PREFIX}{key}");
        match undo {
            Ok(undo) => {
                ledger.log().warn(format!("the server stopped while a hook's quiesce step was in force: {} now", undo.describe()));
                let started = Instant::now();
                let error = undo.run(&ctx.client, &uid).await.err();
                record_undo(ledger, &undo, started.elapsed(), error);
            }
            Err(e) => ledger.log().error(format!("{e}; that quiesce step cannot be undone")),
        }
        cleared.insert(key, Value::Null);
    }
    cleared
}

/// At server start, after the Backups' debts are paid: scales back every workload still marked
/// quiesced (its backup was deleted, or its record lost), so none is left at zero replicas.
pub async fn sweep_workloads(ctx: &Context) -> anyhow::Result<()> {
    let deployments: Vec<Value> = Api::<Deployment>::all(ctx.client.clone()).list(&ListParams::default()).await?.items.into_iter().map(|d| serde_json::to_value(d).unwrap_or_default()).collect();
    let sets: Vec<Value> = Api::<StatefulSet>::all(ctx.client.clone()).list(&ListParams::default()).await?.items.into_iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect();
    for (kind, object) in deployments.iter().map(|d| ("Deployment", d)).chain(sets.iter().map(|s| ("StatefulSet", s))) {
        let Some(mark) = quiesced_mark(object) else { continue };
        let get = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        let undo = Undo::ScaleBack { namespace: get("/metadata/namespace"), kind: kind.into(), name: get("/metadata/name"), replicas: mark.replicas };
        tracing::warn!("{kind} {}/{} was left quiesced by backup {}: {}", get("/metadata/namespace"), get("/metadata/name"), mark.backup, undo.describe());
        if let Err(e) = undo.run(&ctx.client, "").await {
            tracing::error!("{}: {e}", undo.describe());
        }
    }
    Ok(())
}

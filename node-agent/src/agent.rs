//! The node agent's controllers: PodVolumeBackups and PodVolumeRestores of the pods on this
//! node, a few at a time. Each operation reports progress in its status while it runs and ends
//! Completed, Failed (with the reason) or Canceled (the server gave up on it: the operation stops
//! and its repository lock is released).
//!
//! A restore from a damaged repository (a pack missing or corrupted) restores every file it
//! can and ends Failed, naming the files it could not restore and the packs; the restore
//! marker is still written, so the pod starts with what was restored rather than wait for
//! files no retry can bring back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use stowage_api::podvolume::{PodVolumePhase, PodVolumeStatus};
use stowage_api::repo_keys::repository_password;
use stowage_api::{labels, names, BackupStorageLocation, PodVolumeBackup, PodVolumeRestore};
use stowage_restic::{BackupRequest, Progress, Repo, RepoConfig, RestoreSummary};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::paths;

/// How often a running operation writes its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How many times an agent starts one PodVolumeBackup or PodVolumeRestore before it gives up
/// on a volume that brings it down (killed for memory, say).
pub const MAX_ATTEMPTS: u32 = 3;

pub struct Agent {
    pub client: Client,
    pub namespace: String,
    pub node: String,
    pub pods_dir: PathBuf,
    pub metrics: Arc<Metrics>,
    slots: Semaphore,
    running: Mutex<HashMap<String, CancellationToken>>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The status of an operation an agent restart interrupted after `attempts` starts: New again
/// (the agent takes it up), or Failed once it was started [`MAX_ATTEMPTS`] times.
fn retry_or_fail(what: &str, attempts: u32) -> serde_json::Value {
    if attempts >= MAX_ATTEMPTS {
        let message = format!(
            "the node agent restarted while this volume {what} ran, {attempts} times; look at why it stopped \
             (kubectl describe pod of the node agent: OOMKilled?), then run the {what} again"
        );
        json!({"status": {"phase": "Failed", "message": message, "completionTimestamp": now()}})
    } else {
        let message = format!("the node agent restarted while this ran (attempt {attempts}); started again");
        json!({"status": {"phase": "New", "message": message}})
    }
}

fn phase(status: Option<&PodVolumeStatus>) -> Option<PodVolumePhase> {
    status.and_then(|s| s.phase)
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReconcileError(#[from] anyhow::Error);

impl Agent {
    pub fn new(client: Client, namespace: String, node: String, pods_dir: PathBuf, concurrency: usize, metrics: Arc<Metrics>) -> Agent {
        Agent { client, namespace, node, pods_dir, metrics, slots: Semaphore::new(concurrency), running: Mutex::new(HashMap::new()) }
    }

    fn pvbs(&self) -> Api<PodVolumeBackup> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pvrs(&self) -> Api<PodVolumeRestore> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Runs both controllers until the process stops.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        self.retry_interrupted().await?;
        tracing::info!(node = %self.node, namespace = %self.namespace, "node agent started");
        let backups = Controller::new(self.pvbs(), watcher::Config::default())
            .run(
                |pvb: Arc<PodVolumeBackup>, agent: Arc<Agent>| async move { agent.reconcile_backup(&pvb) },
                |_, e: &ReconcileError, _| {
                    tracing::warn!("{e:#}");
                    Action::requeue(Duration::from_secs(5))
                },
                self.clone(),
            )
            .for_each(|_| async {});
        let restores = Controller::new(self.pvrs(), watcher::Config::default())
            .run(
                |pvr: Arc<PodVolumeRestore>, agent: Arc<Agent>| async move { agent.reconcile_restore(&pvr).await },
                |_, e: &ReconcileError, _| {
                    tracing::warn!("{e:#}");
                    Action::requeue(Duration::from_secs(5))
                },
                self.clone(),
            )
            .for_each(|_| async {});
        tokio::join!(backups, restores);
        Ok(())
    }

    /// Operations a previous incarnation of this agent left InProgress are started again (a
    /// backup's packs and index files already uploaded are not uploaded twice), up to
    /// [`MAX_ATTEMPTS`] times; then they fail, saying so.
    async fn retry_interrupted(&self) -> anyhow::Result<()> {
        for pvb in self.pvbs().list(&ListParams::default()).await?.items {
            if pvb.spec.node == self.node && phase(pvb.status.as_ref()) == Some(PodVolumePhase::InProgress) {
                let attempts = pvb.status.as_ref().map_or(0, |s| s.attempts);
                let patch = retry_or_fail("backup", attempts);
                tracing::warn!(pvb = %pvb.name_any(), attempts, "interrupted by a restart of the node agent: {}", patch["status"]["message"]);
                self.pvbs().patch_status(&pvb.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        for pvr in self.pvrs().list(&ListParams::default()).await?.items {
            if phase(pvr.status.as_ref()) == Some(PodVolumePhase::InProgress) && self.pod_node(&pvr).await.as_deref() == Some(&self.node) {
                let attempts = pvr.status.as_ref().map_or(0, |s| s.attempts);
                let patch = retry_or_fail("restore", attempts);
                tracing::warn!(pvr = %pvr.name_any(), attempts, "interrupted by a restart of the node agent: {}", patch["status"]["message"]);
                self.pvrs().patch_status(&pvr.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        Ok(())
    }

    async fn pod_node(&self, pvr: &PodVolumeRestore) -> Option<String> {
        let pod = self.pod_of(&pvr.spec.pod).await.ok()??;
        pod.spec?.node_name
    }

    async fn pod_of(&self, r: &k8s_openapi::api::core::v1::ObjectReference) -> anyhow::Result<Option<Pod>> {
        let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
            anyhow::bail!("spec.pod needs a namespace and a name")
        };
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns).get_opt(name).await?)
    }

    /// Starts `work` for object `key` unless it already runs; the token cancels it.
    fn start<F, Fut>(self: &Arc<Self>, key: String, work: F)
    where
        F: FnOnce(Arc<Agent>, CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        {
            let mut running = self.running.lock().unwrap();
            if running.contains_key(&key) {
                return;
            }
            running.insert(key.clone(), token.clone());
        }
        let agent = self.clone();
        tokio::spawn(async move {
            let permit = tokio::select! {
                p = agent.slots.acquire() => p.ok(),
                () = token.cancelled() => None,
            };
            if permit.is_some() {
                work(agent.clone(), token).await;
            }
            drop(permit);
            agent.running.lock().unwrap().remove(&key);
        });
    }

    fn cancel(&self, key: &str) {
        if let Some(token) = self.running.lock().unwrap().get(key) {
            tracing::info!("canceling {key}");
            token.cancel();
        }
    }

    fn reconcile_backup(self: &Arc<Self>, pvb: &PodVolumeBackup) -> Result<Action, ReconcileError> {
        if pvb.spec.node != self.node {
            return Ok(Action::await_change());
        }
        let key = format!("PodVolumeBackup/{}", pvb.name_any());
        match phase(pvb.status.as_ref()) {
            None | Some(PodVolumePhase::New) => {
                let pvb = pvb.clone();
                self.start(key, move |agent, token| async move { agent.back_up(pvb, token).await });
            }
            Some(PodVolumePhase::Canceled) => self.cancel(&key),
            _ => {}
        }
        Ok(Action::await_change())
    }

    async fn reconcile_restore(self: &Arc<Self>, pvr: &PodVolumeRestore) -> Result<Action, ReconcileError> {
        let key = format!("PodVolumeRestore/{}", pvr.name_any());
        match phase(pvr.status.as_ref()) {
            None | Some(PodVolumePhase::New) => {}
            Some(PodVolumePhase::Canceled) => {
                self.cancel(&key);
                return Ok(Action::await_change());
            }
            _ => return Ok(Action::await_change()),
        }
        if self.running.lock().unwrap().contains_key(&key) {
            return Ok(Action::await_change());
        }
        // Wait for the pod to be scheduled here and for its restore helper to run: then its
        // volumes are mounted and nothing but the helper looks at them yet.
        let Some(pod) = self.pod_of(&pvr.spec.pod).await? else {
            return Ok(Action::requeue(Duration::from_secs(2)));
        };
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            None => return Ok(Action::requeue(Duration::from_secs(1))),
            Some(n) if n != self.node => return Ok(Action::await_change()),
            Some(_) => {}
        }
        if pvr.spec.is_file_restore() {
            // Files into a running pod: no helper holds it, the pod's volume is live.
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if !running {
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            let pvr = pvr.clone();
            self.start(key, move |agent, token| async move { agent.restore(pvr, pod, token).await });
            return Ok(Action::await_change());
        }
        if pvr.spec.pod.uid.is_some() && pod.metadata.uid != pvr.spec.pod.uid {
            let message = format!(
                "pod {}/{} was replaced by another pod (uid {}) before its volume was restored; restore again",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                pod.metadata.uid.as_deref().unwrap_or("?")
            );
            self.patch_restore(&pvr.name_any(), json!({"phase": "Failed", "message": message, "completionTimestamp": now()})).await?;
            return Ok(Action::await_change());
        }
        let helper_running = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.name == names::RESTORE_HELPER_CONTAINER && c.state.as_ref().is_some_and(|s| s.running.is_some()));
        if !helper_running {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let pvr = pvr.clone();
        self.start(key, move |agent, token| async move { agent.restore(pvr, pod, token).await });
        Ok(Action::await_change())
    }

    async fn patch_backup(&self, name: &str, status: Value) -> anyhow::Result<PodVolumeBackup> {
        Ok(self.pvbs().patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?)
    }

    async fn patch_restore(&self, name: &str, status: Value) -> anyhow::Result<PodVolumeRestore> {
        Ok(self.pvrs().patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?)
    }

    /// The directory of volume `volume` of `pod` on this node.
    async fn volume_path(&self, pod: &Pod, volume: &str) -> anyhow::Result<PathBuf> {
        let ns = pod.namespace().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or_else(|| anyhow::anyhow!("pod {ns}/{} has no spec", pod.name_any()))?;
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .ok_or_else(|| anyhow::anyhow!("pod {ns}/{} has no volume {volume:?}", pod.name_any()))?;
        let dir_name = match &v.persistent_volume_claim {
            Some(claim) => {
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                let pvc = pvcs
                    .get_opt(&claim.claim_name)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("claim {ns}/{} of volume {volume:?} does not exist", claim.claim_name))?;
                pvc.spec.and_then(|s| s.volume_name).ok_or_else(|| {
                    anyhow::anyhow!("claim {ns}/{} of volume {volume:?} is not bound to a volume yet", claim.claim_name)
                })?
            }
            None => volume.to_string(),
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        paths::volume_dir(&self.pods_dir, &uid, &dir_name).map_err(|e| anyhow::anyhow!("volume {volume:?}: {e}"))
    }

    /// The repository of `volume_namespace` in storage location `location`.
    async fn repository(&self, location: &str, volume_namespace: &str) -> anyhow::Result<Repo> {
        let locs: Api<BackupStorageLocation> = Api::namespaced(self.client.clone(), &self.namespace);
        let loc = locs.get_opt(location).await?.ok_or_else(|| {
            anyhow::anyhow!("storage location {location:?} not found in namespace {}", self.namespace)
        })?;
        let store = stowage_access::open_location(&self.client, &self.namespace, &loc).await?;
        let repo = stowage_access::repository_of(&loc, volume_namespace)?;
        let key = stowage_access::master_key(&self.client, &self.namespace).await?;
        let password = repository_password(&key, &repo.identity)?;
        Ok(Repo::open(RepoConfig { store, namespace: volume_namespace.to_string(), password }).await?)
    }

    async fn back_up(self: Arc<Self>, pvb: PodVolumeBackup, cancel: CancellationToken) {
        let name = pvb.name_any();
        let started = std::time::Instant::now();
        let result = self.try_back_up(&pvb, cancel.clone()).await;
        let status = match result {
            Ok((snapshot, total, warnings)) => {
                self.metrics.backups_completed.inc();
                self.metrics.bytes_backed_up.inc_by(total);
                let mut s = json!({"phase": "Completed", "snapshotID": snapshot, "completionTimestamp": now(),
                    "progress": {"totalBytes": total, "bytesDone": total}});
                if !warnings.is_empty() {
                    s["message"] = json!(format!("{} entries could not be read: {}", warnings.len(), warnings.join("; ")));
                }
                s
            }
            Err(e) if cancel.is_cancelled() => {
                self.metrics.backups_failed.inc();
                tracing::info!("PodVolumeBackup {name} canceled: {e:#}");
                return;
            }
            Err(e) => {
                self.metrics.backups_failed.inc();
                json!({"phase": "Failed", "message": format!("{e:#}"), "completionTimestamp": now()})
            }
        };
        self.metrics.backup_seconds.observe(started.elapsed().as_secs_f64());
        // The server may have canceled it meanwhile (timeout): its word stands.
        if let Ok(Some(current)) = self.pvbs().get_opt(&name).await {
            if phase(current.status.as_ref()) == Some(PodVolumePhase::Canceled) {
                return;
            }
        }
        if let Err(e) = self.patch_backup(&name, status).await {
            tracing::warn!("PodVolumeBackup {name}: recording the result: {e:#}");
        }
    }

    async fn try_back_up(&self, pvb: &PodVolumeBackup, cancel: CancellationToken) -> anyhow::Result<(String, u64, Vec<String>)> {
        let name = pvb.name_any();
        let pod = self.pod_of(&pvb.spec.pod).await?.ok_or_else(|| anyhow::anyhow!("the pod no longer exists"))?;
        if pvb.spec.pod.uid.is_some() && pod.metadata.uid != pvb.spec.pod.uid {
            anyhow::bail!("the pod was replaced by another of the same name before its volume was backed up");
        }
        let path = self.volume_path(&pod, &pvb.spec.volume).await?;
        let attempts = pvb.status.as_ref().map_or(0, |s| s.attempts) + 1;
        self.patch_backup(&name, json!({"phase": "InProgress", "startTimestamp": now(), "path": path.display().to_string(), "attempts": attempts}))
            .await?;
        let ns = pvb.spec.pod.namespace.clone().unwrap_or_default();
        let repo = self.repository(&pvb.spec.backup_storage_location, &ns).await?;
        let tags: Vec<String> = pvb.spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parent_tags = match pvb.spec.tags.get("pvc-uid") {
            Some(uid) => vec![format!("pvc-uid={uid}")],
            None => vec![
                format!("pod-uid={}", pvb.spec.tags.get("pod-uid").cloned().unwrap_or_default()),
                format!("volume={}", pvb.spec.volume),
            ],
        };
        let request = BackupRequest { path, tags, parent_tags, hostname: self.node.clone() };
        let (progress, reporter) = self.reporter(name.clone(), true);
        let summary = repo.backup(request, progress, cancel).await;
        reporter.abort();
        let summary = summary?;
        tracing::info!(
            "PodVolumeBackup {name}: snapshot {} (parent {:?}), {} bytes, {} added",
            summary.snapshot_id,
            summary.parent,
            summary.total_bytes,
            summary.data_added
        );
        Ok((summary.snapshot_id, summary.total_bytes, summary.warnings))
    }

    /// A progress callback and the task that writes the latest progress to the status.
    fn reporter(&self, name: String, backup: bool) -> (Arc<dyn Fn(Progress) + Send + Sync>, tokio::task::JoinHandle<()>) {
        let latest = Arc::new(Mutex::new(None::<Progress>));
        let sink = latest.clone();
        let callback: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p| *sink.lock().unwrap() = Some(p));
        let (pvbs, pvrs) = (self.pvbs(), self.pvrs());
        let task = tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let now = *latest.lock().unwrap();
                if now == last {
                    continue;
                }
                last = now;
                let Some(p) = now else { continue };
                let patch = json!({"status": {"progress": {"totalBytes": p.total_bytes, "bytesDone": p.bytes_done}}});
                let r = if backup {
                    pvbs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
                } else {
                    pvrs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
                };
                if let Err(e) = r {
                    tracing::debug!("progress of {name}: {e}");
                }
            }
        });
        (callback, task)
    }

    async fn restore(self: Arc<Self>, pvr: PodVolumeRestore, pod: Pod, cancel: CancellationToken) {
        let name = pvr.name_any();
        let started = std::time::Instant::now();
        let status = match self.try_restore(&pvr, &pod, cancel.clone()).await {
            Ok(summary) if summary.damaged.is_empty() => {
                self.metrics.restores_completed.inc();
                let bytes = summary.bytes;
                json!({"phase": "Completed", "completionTimestamp": now(), "progress": {"totalBytes": bytes, "bytesDone": bytes}})
            }
            Ok(summary) => {
                self.metrics.restores_failed.inc();
                let bytes = summary.bytes;
                json!({"phase": "Failed", "message": damaged_message(&pvr, &summary), "completionTimestamp": now(),
                    "progress": {"totalBytes": bytes, "bytesDone": bytes}})
            }
            Err(e) if cancel.is_cancelled() => {
                self.metrics.restores_failed.inc();
                tracing::info!("PodVolumeRestore {name} canceled: {e:#}");
                return;
            }
            Err(e) => {
                self.metrics.restores_failed.inc();
                json!({"phase": "Failed", "message": format!("{e:#}"), "completionTimestamp": now()})
            }
        };
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(e) = self.patch_restore(&name, status).await {
            tracing::warn!("PodVolumeRestore {name}: recording the result: {e:#}");
        }
    }

    async fn try_restore(&self, pvr: &PodVolumeRestore, pod: &Pod, cancel: CancellationToken) -> anyhow::Result<RestoreSummary> {
        let name = pvr.name_any();
        if pvr.spec.is_file_restore() {
            return self.restore_files(pvr, pod, cancel).await;
        }
        let restore_uid = labels::RESTORE_UID
            .label(&pvr.metadata)
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("label {} is missing: the restore helper could not be told", labels::RESTORE_UID.name))?;
        let path = self.volume_path(pod, &pvr.spec.volume).await?;
        let attempts = pvr.status.as_ref().map_or(0, |s| s.attempts) + 1;
        self.patch_restore(&name, json!({"phase": "InProgress", "startTimestamp": now(), "path": path.display().to_string(), "attempts": attempts}))
            .await?;
        let repo = self.repository(&pvr.spec.backup_storage_location, &source_namespace(pvr)).await?;
        let (progress, reporter) = self.reporter(name.clone(), false);
        let summary = repo.restore(&pvr.spec.snapshot_id, &path, progress, cancel).await;
        reporter.abort();
        let summary = summary?;
        // Also after damage: what is missing stays missing, the pod need not wait for it.
        write_marker(&path, &restore_uid)?;
        tracing::info!("PodVolumeRestore {name}: {} files, {} bytes into {}", summary.files, summary.bytes, path.display());
        if !summary.damaged.is_empty() {
            tracing::warn!("PodVolumeRestore {name}: {}", summary.damaged);
        }
        Ok(summary)
    }
}

impl Agent {
    /// Chosen paths of a volume backup into a running pod's volume, under its target
    /// directory; no restore helper is told (none runs).
    async fn restore_files(&self, pvr: &PodVolumeRestore, pod: &Pod, cancel: CancellationToken) -> anyhow::Result<RestoreSummary> {
        let name = pvr.name_any();
        let path = self.volume_path(pod, &pvr.spec.volume).await?;
        let attempts = pvr.status.as_ref().map_or(0, |s| s.attempts) + 1;
        let into = pvr.spec.target_dir.clone().unwrap_or_default();
        let shown = path.join(&into);
        self.patch_restore(&name, json!({"phase": "InProgress", "startTimestamp": now(), "path": shown.display().to_string(), "attempts": attempts}))
            .await?;
        let repo = self.repository(&pvr.spec.backup_storage_location, &source_namespace(pvr)).await?;
        let (progress, reporter) = self.reporter(name.clone(), false);
        let include: Vec<std::path::PathBuf> = pvr.spec.include_paths.iter().map(Into::into).collect();
        let summary = repo.restore_paths(&pvr.spec.snapshot_id, &path, &include, std::path::Path::new(&into), progress, cancel).await;
        reporter.abort();
        let summary = summary?;
        tracing::info!("PodVolumeRestore {name}: {} files, {} bytes into {}", summary.files, summary.bytes, shown.display());
        Ok(summary)
    }
}

/// The namespace whose repository a PodVolumeRestore reads: the one it was backed up from.
fn source_namespace(pvr: &PodVolumeRestore) -> String {
    pvr.spec.source_namespace.clone().or_else(|| pvr.spec.pod.namespace.clone()).unwrap_or_default()
}

/// Why a restore that met damage in the repository failed, and what to do.
fn damaged_message(pvr: &PodVolumeRestore, summary: &RestoreSummary) -> String {
    format!(
        "the repository is damaged: {}; the other {} files are restored and the pod starts with them. \
         See the damage with `eval \"$(stowage repo restic-env {} --location {})\"; restic check --read-data`, \
         and restore the missing files from an earlier backup",
        summary.damaged,
        summary.files,
        source_namespace(pvr),
        pvr.spec.backup_storage_location
    )
}

/// `.stowage/<restore-uid>` in the volume: the restore helper's signal. The directory is open to
/// every user, as the helper runs as whatever user the pod's security context says and removes it.
///
/// What is in the volume is the application's, restored from its backup: `.stowage` may be a
/// symlink (say to the node's `/var/lib/kubelet`) or a file. Only a real directory is used,
/// anything else in its place is removed first, and neither the directory nor the marker is
/// reached through a symlink: the agent runs as root.
fn write_marker(volume: &std::path::Path, restore_uid: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = volume.join(names::RESTORE_MARKER_DIR);
    let context = |what: &str, e: std::io::Error| anyhow::anyhow!("{what} {}: {e}", dir.display());
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => std::fs::remove_file(&dir).map_err(|e| context("removing what is not a directory at", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("reading", e)),
    }
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(context("creating", e)),
        _ => {}
    }
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&dir)
        .map_err(|e| context("opening", e))?;
    handle.set_permissions(std::fs::Permissions::from_mode(0o777)).map_err(|e| context("opening up", e))?;
    // Through the handle: the directory just checked, whatever is at its path by now.
    let marker = std::path::PathBuf::from(format!("/proc/self/fd/{}/{restore_uid}", handle.as_raw_fd()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&marker)
        .map_err(|e| context(&format!("writing {restore_uid} in"), e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o666)).map_err(|e| context("opening up the marker in", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// A restored volume whose `.stowage` is a symlink elsewhere, or a file: the marker goes
    /// into a real directory of that name, and nothing outside the volume is touched.
    #[test]
    fn the_restore_marker_never_goes_through_what_the_volume_holds_in_its_place() {
        let root = tempfile::tempdir().unwrap();
        let (volume, outside) = (root.path().join("volume"), root.path().join("outside"));
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = volume.join(names::RESTORE_MARKER_DIR);
        std::os::unix::fs::symlink(&outside, &dir).unwrap();

        write_marker(&volume, "uid-1").unwrap();
        assert_eq!(mode(&outside), 0o700, "the symlink's target keeps its mode");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside the volume");
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir(), "a real directory in its place");
        assert_eq!((mode(&dir), mode(&dir.join("uid-1"))), (0o777, 0o666));

        // A file in its place, and a directory already there.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        write_marker(&volume, "uid-2").unwrap();
        write_marker(&volume, "uid-3").unwrap();
        let mut markers: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        markers.sort();
        assert_eq!(markers, ["uid-2", "uid-3"]);
    }

    #[test]
    fn a_restore_from_a_damaged_repository_names_the_files_the_packs_and_what_to_do() {
        use stowage_restic::{DamagedFile, DamagedFiles, DamagedPack};
        let pvr: PodVolumeRestore = serde_json::from_value(json!({"metadata": {"name": "r-1"},
            "spec": {"pod": {"namespace": "shop-copy", "name": "db-0"}, "volume": "data", "backupStorageLocation": "default",
                "repoIdentifier": "s3:http://s3/bucket/restic/shop", "snapshotID": "3f1e2d4c", "sourceNamespace": "shop"}}))
        .unwrap();
        let file = |path: &str, pack: &str| DamagedFile { path: path.into(), pack: pack.into(), reason: "missing".into() };
        let paths = ["a/1", "a/2", "b", "c", "d", "e"];
        let damaged = DamagedFiles {
            count: 7,
            files: paths.iter().map(|p| file(p, "aa11")).collect(),
            pack_count: 2,
            packs: vec![
                DamagedPack { id: "aa11".into(), reason: "missing".into() },
                DamagedPack { id: "bb22".into(), reason: "blob at offset 0: authentication failed".into() },
            ],
        };
        let message = damaged_message(&pvr, &RestoreSummary { files: 40, bytes: 1 << 20, damaged });
        assert_eq!(
            message,
            "the repository is damaged: 7 files could not be restored (a/1, a/2, b, c, d and 2 more): pack aa11: missing; \
             pack bb22: blob at offset 0: authentication failed; the other 40 files are restored and the pod starts with them. \
             See the damage with `eval \"$(stowage repo restic-env shop --location default)\"; restic check --read-data`, \
             and restore the missing files from an earlier backup"
        );
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn an_interrupted_volume_operation_is_retried_then_fails_naming_the_cause() {
        for attempts in 0..MAX_ATTEMPTS {
            let patch = retry_or_fail("backup", attempts);
            assert_eq!(patch["status"]["phase"], "New", "attempt {attempts} is retried");
        }
        let patch = retry_or_fail("restore", MAX_ATTEMPTS);
        assert_eq!(patch["status"]["phase"], "Failed");
        let message = patch["status"]["message"].as_str().unwrap();
        assert!(message.contains("3 times") && message.contains("run the restore again"), "{message}");
    }
}

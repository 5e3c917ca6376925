//! What backups and restores share about pod volumes (DESIGN §6): the operations' names and
//! timeouts, waiting for PodVolumeBackups and PodVolumeRestores to end, and the list of a
//! backup's volume backups as it was uploaded.

use std::io::Read;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::layout::{BackupFile, StoreLayout};
use stowage_api::podvolume::{PodVolumePhase, PodVolumeStatus};
use stowage_api::{PodVolumeBackup, PodVolumeRestore};
use stowage_storage::ObjectStore;

use crate::context::Context;
use crate::oplog::OperationLog;

/// Annotation on a Backup: how long its pod volume backups may take (Go duration).
pub const TIMEOUT_ANNOTATION: &str = "stowage.io/pod-volume-timeout";
/// How often an operation looks at its PodVolumeBackups while it waits.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// A Backup's or Restore's pod volume timeout: its annotation, else the server's default.
pub fn timeout_of(operation: &impl ResourceExt, default: Duration) -> Result<Duration, String> {
    match operation.annotations().get(TIMEOUT_ANNOTATION) {
        None => Ok(default),
        Some(v) => stowage_api::duration::parse(v)
            .map_err(|e| format!("annotation {TIMEOUT_ANNOTATION}={v:?}: {e}; use a duration such as 30m or 4h")),
    }
}

/// `<operation>-`, short enough for the API server to append its random suffix.
pub fn generate_name(operation: &str) -> String {
    let head = match operation.char_indices().nth(57) {
        Some((i, _)) => &operation[..i],
        None => operation,
    };
    format!("{head}-")
}

/// A PodVolumeBackup or PodVolumeRestore, as [`wait_for_volumes`] waits for it.
pub trait VolumeOperation:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + 'static
{
    fn volume_status(&self) -> Option<&PodVolumeStatus>;
    /// Why it is canceled when it is still running `after` the operation's timeout, and what
    /// to do about it.
    fn timed_out(&self, after: &str) -> String;
}

impl VolumeOperation for PodVolumeBackup {
    fn volume_status(&self) -> Option<&PodVolumeStatus> {
        self.status.as_ref()
    }

    fn timed_out(&self, after: &str) -> String {
        let unseen = self.status.as_ref().and_then(|s| s.phase).is_none();
        format!(
            "timed out after {after} (node {}{}); raise the backup's {TIMEOUT_ANNOTATION} annotation or the server's --pod-volume-timeout if the volume is large",
            self.spec.node,
            if unseen { ", whose node agent never picked it up" } else { "" }
        )
    }
}

impl VolumeOperation for PodVolumeRestore {
    fn volume_status(&self) -> Option<&PodVolumeStatus> {
        self.status.as_ref()
    }

    fn timed_out(&self, after: &str) -> String {
        let pod = format!("{}/{}", self.spec.pod.namespace.as_deref().unwrap_or(""), self.spec.pod.name.as_deref().unwrap_or(""));
        match self.status.as_ref().and_then(|s| s.phase) {
            None | Some(PodVolumePhase::New) => format!(
                "timed out after {after}: no node agent restored it — is pod {pod} scheduled, is its restore-wait init container running, and is a node agent running on its node?"
            ),
            _ => format!("timed out after {after} while restoring; raise the restore's {TIMEOUT_ANNOTATION} annotation if the volume is large"),
        }
    }
}

/// How many of the operations completed, and how many failed or were canceled.
pub fn ended<K: VolumeOperation>(all: &[K]) -> (usize, usize) {
    let phase = |p: &K| p.volume_status().and_then(|s| s.phase);
    let completed = all.iter().filter(|p| phase(p) == Some(PodVolumePhase::Completed)).count();
    let failed = all.iter().filter(|p| matches!(phase(p), Some(PodVolumePhase::Failed | PodVolumePhase::Canceled))).count();
    (completed, failed)
}

/// Waits until every volume operation labelled `selector` has ended (at least `expected` of
/// them), or `timeout` passes: then the unfinished ones are canceled (their node agents stop
/// and release the repository) and say why. With `report`, the operation `O` (a Backup or
/// Restore) of that name shows the counts in its status fields (completed, failed) as they
/// change.
pub async fn wait_for_volumes<K: VolumeOperation, O>(
    ctx: &Context,
    report: Option<(&str, (&str, &str))>,
    selector: &str,
    expected: usize,
    timeout: Duration,
    log: &OperationLog,
) -> anyhow::Result<Vec<K>>
where
    O: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lp = ListParams::default().labels(selector);
    let deadline = tokio::time::Instant::now() + timeout;
    // Changes wake the wait at once (an application frozen until its volumes are copied waits
    // for nothing longer than it must); the poll stays as the floor should the watch break.
    let mut changes = kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default().labels(selector)).boxed();
    let phase = |p: &K| p.volume_status().and_then(|s| s.phase);
    let mut reported = (usize::MAX, usize::MAX);
    loop {
        let all = api.list(&lp).await?.items;
        let (completed, failed) = ended(&all);
        if (completed, failed) != reported {
            reported = (completed, failed);
            if let Some((owner, counts)) = report {
                let _ = ctx.patch_status::<O>(owner, json!({counts.0: completed, counts.1: failed})).await;
            }
        }
        if all.len() >= expected && completed + failed == all.len() {
            return Ok(all);
        }
        if tokio::time::Instant::now() >= deadline {
            let after = humantime::format_duration(timeout).to_string();
            for p in all.iter().filter(|p| !phase(p).is_some_and(PodVolumePhase::is_terminal)) {
                let message = p.timed_out(&after);
                log.error(format!("{} {}: {message}", K::kind(&()), p.name_any()));
                let status = PodVolumeStatus {
                    phase: Some(PodVolumePhase::Canceled),
                    message: Some(message),
                    completion_timestamp: Some(crate::locations::now()),
                    ..p.volume_status().cloned().unwrap_or_default()
                };
                let _ = ctx.patch_status::<K>(&p.name_any(), serde_json::to_value(&status)?).await;
            }
            let all = api.list(&lp).await?.items;
            let failed = all.iter().filter(|p| phase(p) != Some(PodVolumePhase::Completed)).count();
            if let Some((owner, counts)) = report {
                let _ = ctx.patch_status::<O>(owner, json!({counts.0: all.len() - failed, counts.1: failed})).await;
            }
            return Ok(all);
        }
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        // Events come in bursts (one per status patch): take what is there before listing again.
        tokio::select! {
            _ = changes.next() => {
                while let Some(Some(_)) = changes.next().now_or_never() {}
            }
            () = &mut poll => {}
        }
    }
}
/// The backup's `-podvolumebackups.json.zst`; none (a backup without volume data) is empty.
pub async fn load(store: &dyn ObjectStore, backup: &str) -> anyhow::Result<Vec<PodVolumeBackup>> {
    let key = StoreLayout::new(None).backup_file(backup, BackupFile::PodVolumeBackups);
    let data = match store.get(&key).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut text = Vec::new();
    zstd::Decoder::new(&data[..])?.read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{key} is not a list of PodVolumeBackups: {e}"))
}


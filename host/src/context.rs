//! What backups, restores and the controllers share: the cluster client, Stowage's namespace,
//! the server's settings and its extension registry. The server wires it up; the operations
//! only read it.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics;

/// What every controller shares.
pub struct Context {
    pub client: kube::Client,
    /// The namespace Stowage's own objects live in.
    pub namespace: String,
    pub metrics: Arc<metrics::Metrics>,
    /// How often locations are checked and synced (None: the default).
    pub location_period: Option<Duration>,
    pub default_volumes_to_fs_backup: bool,
    /// How long a backup's or restore's pod volumes may take, unless it says otherwise.
    pub pod_volume_timeout: Duration,
    /// How long a hook may leave a filesystem frozen before the server thaws it.
    pub max_frozen_time: Duration,
    /// What a restore may extract from one archive.
    pub archive_limits: stowage_pipeline::archive::ExtractLimits,
    /// The image of the init container that holds restored pods until their volumes are back.
    pub restore_helper_image: String,
    /// Repositories are created and initialised one at a time.
    pub repository_lock: tokio::sync::Mutex<()>,
    /// The extensions loaded from ConfigMaps; each operation takes a snapshot when it starts.
    pub extensions: stowage_runtime::Registry,
    /// The Backups running, and how many may.
    pub backup_queue: crate::server::queue::Queue,
    /// The Restores running, and how many may.
    pub restore_queue: crate::server::queue::Queue,
    /// How many times an operation is started before it fails, when servers stop under it.
    pub max_attempts: u32,
}

/// Why an operation failed, for its `failureReason`: the API server or the server's own
/// scratch space named when one of them is what failed, with what to do.
pub fn failure_reason(e: &anyhow::Error) -> String {
    if e.downcast_ref::<kube::Error>().is_some() {
        return format!("a request to the API server failed: {e:#}");
    }
    // A full storage location says so itself, naming the location.
    let names_location = e.chain().any(|c| c.downcast_ref::<stowage_storage::StorageError>().is_some());
    let disk_full = e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull));
    if disk_full && !names_location {
        return format!(
            "the server's temporary directory {} is full ({e:#}); give the server more scratch space \
             (a larger `scratch` volume in its Deployment, or TMPDIR on a larger disk) and run it again",
            std::env::temp_dir().display()
        );
    }
    format!("{e:#}")
}

/// How often, and how many times, an operation's end is written again when the API server
/// does not take it (3 minutes in all).
const END_RETRY: Duration = Duration::from_secs(2);
const END_TRIES: u32 = 90;

impl Context {
    /// Writes an operation's end into its status, again and again for a while when the API
    /// server does not take it (it may be what failed): an operation left in progress is never
    /// run again by this server.
    pub async fn record_end<K>(&self, name: &str, status: serde_json::Value) -> Result<K, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let mut tries = 0;
        loop {
            match self.patch_status::<K>(name, status.clone()).await {
                Ok(k) => return Ok(k),
                Err(e) if tries + 1 >= END_TRIES => return Err(e),
                Err(e) => {
                    tries += 1;
                    tracing::warn!(%name, "recording the end of {}: {e}; trying again in {END_RETRY:?}", K::kind(&()));
                    tokio::time::sleep(END_RETRY).await;
                }
            }
        }
    }

    /// Merges `status` into the status of one of Stowage's objects in its namespace.
    pub async fn patch_status<K>(&self, name: &str, status: serde_json::Value) -> Result<K, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), &self.namespace);
        let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
        api.patch_status(name, &kube::api::PatchParams::default(), &patch).await
    }
}

#[cfg(test)]
mod tests {
    use super::failure_reason;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_full_disk_is_blamed_on_the_scratch_space_unless_a_location_is_named() {
        let local = anyhow::Error::from(Error::from(ErrorKind::StorageFull)).context("writing the archive");
        let reason = failure_reason(&local);
        assert!(reason.starts_with("the server's temporary directory "), "{reason}");
        assert!(reason.contains("writing the archive") && reason.contains("give the server more scratch space"), "{reason}");

        let location = anyhow::Error::from(stowage_storage::StorageError::Io {
            location: "nfs".into(),
            action: "writing backups/b/b.tar.zst".into(),
            source: Error::from(ErrorKind::StorageFull),
        });
        let reason = failure_reason(&location);
        assert!(reason.starts_with("storage location \"nfs\": writing backups/b/b.tar.zst"), "{reason}");

        assert_eq!(failure_reason(&anyhow::anyhow!("archive truncated")), "archive truncated");
    }
}

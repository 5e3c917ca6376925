//! `stowage server`: the controllers for backups, restores, schedules, garbage collection,
//! storage locations, deletions and downloads, and the metrics endpoint.

mod args;
pub mod deletions;
pub mod downloads;
pub mod extensions;
pub mod locations;
pub mod metrics;
pub mod oplog;
mod operations;
pub mod repositories;
pub mod velero;

use std::sync::Arc;
use std::time::Duration;

pub use args::ServerArgs;

use crate::cluster::ClusterArgs;

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
    /// The image of the init container that holds restored pods until their volumes are back.
    pub restore_helper_image: String,
    /// Repositories are created and initialised one at a time.
    pub repository_lock: tokio::sync::Mutex<()>,
    /// The extensions loaded from ConfigMaps; each operation takes a snapshot when it starts.
    pub extensions: stowage_runtime::Registry,
}

impl Context {
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

pub async fn run(args: ServerArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let ctx = Arc::new(Context {
        client,
        namespace: args.namespace.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        location_period: args.location_check_period,
        default_volumes_to_fs_backup: args.default_volumes_to_fs_backup,
        pod_volume_timeout: args.pod_volume_timeout,
        restore_helper_image: args.restore_helper_image.clone(),
        repository_lock: tokio::sync::Mutex::new(()),
        extensions: extensions::registry(
            &args.namespace,
            args.namespaced_extension_capabilities.clone(),
        )?,
    });
    operations::fail_interrupted(&ctx).await?;
    tracing::info!(namespace = %ctx.namespace, "stowage server started; metrics on {}", args.metrics_address);
    tokio::select! {
        r = metrics::serve(args.metrics_address, ctx.metrics.clone()) => r?,
        () = operations::run_backups(ctx.clone()) => {}
        () = operations::run_restores(ctx.clone()) => {}
        () = locations::run(ctx.clone()) => {}
        () = deletions::run(ctx.clone()) => {}
        () = extensions::watch(ctx.clone()) => {}
        () = downloads::run(ctx.clone()) => {}
        () = crate::schedules::run(ctx.clone()) => {}
        () = crate::gc::run(ctx.clone(), args.garbage_collection_frequency) => {}
        r = tokio::signal::ctrl_c() => { r?; tracing::info!("stopping"); }
    }
    Ok(())
}

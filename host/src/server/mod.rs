//! `stowage server`: the controllers for backups, restores, schedules, garbage collection,
//! storage locations, deletions and downloads, and the metrics endpoint.

mod args;
pub mod deletions;
pub mod downloads;
pub mod extensions;
pub mod locations;
mod operations;

use std::sync::Arc;

pub use args::ServerArgs;

use crate::cluster::ClusterArgs;
use crate::context::Context;
use crate::metrics;

pub async fn run(args: ServerArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let ctx = Arc::new(Context {
        client,
        namespace: args.namespace.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        location_period: args.location_check_period,
        default_volumes_to_fs_backup: args.default_volumes_to_fs_backup,
        pod_volume_timeout: args.pod_volume_timeout,
        max_frozen_time: args.max_frozen_time,
        restore_helper_image: args.restore_helper_image.clone(),
        repository_lock: tokio::sync::Mutex::new(()),
        extensions: crate::extensions::registry(
            &args.namespace,
            args.namespaced_extension_capabilities.clone(),
        )?,
    });
    if let Err(e) = extensions::load_all(&ctx).await {
        tracing::warn!("loading the extension ConfigMaps: {e:#}");
    }
    // Post hooks a stopped server owed run first: a filesystem left frozen or a database left
    // locked cannot wait for anything else.
    if let Err(e) = crate::hooks::journal::pay_owed(&ctx).await {
        tracing::error!("running the post hooks owed by interrupted backups: {e:#}");
    }
    if let Err(e) = crate::hooks::quiesce::sweep_workloads(&ctx).await {
        tracing::error!("scaling back workloads left at zero replicas by interrupted backups: {e:#}");
    }
    if let Err(e) = crate::access::sweep(&ctx).await {
        tracing::error!("deleting the access pods of interrupted operations: {e:#}");
    }
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

//! `stowage server`: the controllers for backups, restores, schedules, garbage collection,
//! storage locations, deletions, downloads and repository maintenance, the metrics endpoint and,
//! when asked for, the read-only dashboard.

mod args;
pub mod deletions;
pub mod downloads;
pub mod extensions;
pub mod leader;
pub mod locations;
pub mod maintenance;
mod operations;
pub mod queue;

use std::sync::Arc;

pub use args::ServerArgs;

use crate::cluster::ClusterArgs;
use crate::context::Context;
use crate::metrics;

pub async fn run(args: ServerArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let lease = leader::LeaseConfig {
        namespace: args.namespace.clone(),
        identity: leader::identity(),
        duration: args.lease_duration,
        renew_deadline: args.lease_renew_deadline,
        retry_period: args.lease_retry_period,
    };
    lease.check().map_err(anyhow::Error::msg)?;
    let client = cluster.client().await?;
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: args.namespace.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        location_period: args.location_check_period,
        default_volumes_to_fs_backup: args.default_volumes_to_fs_backup,
        pod_volume_timeout: args.pod_volume_timeout,
        max_frozen_time: args.max_frozen_time,
        archive_limits: stowage_pipeline::archive::ExtractLimits {
            max_entries: args.archive_max_entries,
            max_total_bytes: args.archive_max_bytes,
            max_entry_bytes: args.archive_max_entry_bytes,
        },
        restore_helper_image: args.restore_helper_image.clone(),
        repository_lock: tokio::sync::Mutex::new(()),
        extensions: crate::extensions::registry(
            &args.namespace,
            args.namespaced_extension_capabilities.clone(),
        )?,
        backup_queue: queue::Queue::new(args.concurrent_backups),
        restore_queue: queue::Queue::new(args.concurrent_restores),
        max_attempts: args.max_attempts,
    });
    // Every replica serves health and metrics, leading or not: a standby is ready too, or it
    // would stall rolling updates and node drains.
    let serving = tokio::spawn(metrics::serve(args.metrics_address, ctx.metrics.clone(), downloads::router(ctx.clone())));
    tracing::info!("serving /metrics, /healthz, /readyz and /downloads on {}", args.metrics_address);
    // The dashboard only reads, so standbys serve it too: a port-forward to any replica works.
    if let Some(addr) = args.dashboard_address {
        let listener = crate::dashboard::bind(addr).await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::dashboard::serve(listener, ctx).await {
                tracing::error!("the dashboard stopped: {e:#}");
            }
        });
        tracing::info!("serving the dashboard on http://{addr}/");
    }
    let mut elector = leader::Elector::new(client, lease.clone());
    tokio::select! {
        () = elector.acquire() => {}
        r = serving => return Err(r.map_err(anyhow::Error::from).and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("the metrics server stopped"))),
        r = stop_signal() => { r?; return Ok(()); }
    }
    ctx.metrics.leader.set(1);
    tracing::info!(identity = %lease.identity, "leading (Lease {}/{})", lease.namespace, leader::LEASE_NAME);
    tokio::select! {
        lost = elector.keep() => {
            ctx.metrics.leader.set(0);
            // Stop at once, before another replica may take over; Kubernetes restarts us.
            tracing::error!("no longer leading: {lost}; stopping so that only one server acts");
            std::process::exit(1);
        }
        r = lead(ctx.clone(), args.garbage_collection_frequency, maintenance::MaintenanceConfig {
            default_frequency: args.default_repo_maintain_frequency,
            max_unused_percent: args.repo_maintain_max_unused,
            check_period: args.repo_maintain_check_period,
        }) => r,
        r = stop_signal() => {
            // Operations in flight are started again by the next leader; handing the Lease
            // over now lets it start at once.
            tracing::info!("stopping");
            elector.release().await;
            r
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => Ok(r?),
    }
}

/// What the leader does: pays what a stopped server owed, then runs the controllers.
async fn lead(ctx: Arc<Context>, gc_frequency: std::time::Duration, maintenance: maintenance::MaintenanceConfig) -> anyhow::Result<()> {
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
    operations::resume_interrupted(&ctx).await?;
    tracing::info!(namespace = %ctx.namespace, "stowage server started");
    tokio::select! {
        () = operations::run_backups(ctx.clone()) => {}
        () = operations::run_restores(ctx.clone()) => {}
        () = locations::run(ctx.clone()) => {}
        () = deletions::run(ctx.clone()) => {}
        () = extensions::watch(ctx.clone()) => {}
        () = downloads::run(ctx.clone()) => {}
        () = crate::schedules::run(ctx.clone()) => {}
        () = crate::gc::run(ctx.clone(), gc_frequency) => {}
        () = maintenance::run(ctx.clone(), maintenance) => {}
    }
    Ok(())
}

//! `stowage-node-agent`: runs on every node (DaemonSet) and executes the PodVolumeBackups and
//! PodVolumeRestores of the pods on its node, with the restic-format engine of `stowage-restic`.

pub mod agent;
pub mod metrics;
pub mod paths;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use stowage_api::names;

/// Back up and restore the pod volumes of this node for Stowage.
#[derive(Debug, Parser)]
#[command(name = "stowage-node-agent", version, max_term_width = 100)]
pub struct Args {
    /// The node this agent runs on; it only acts on work items for this node.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// The namespace Stowage is installed in.
    #[arg(short, long, env = names::NAMESPACE_ENV, default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// The kubelet's pod directory as seen by this process (`<dir>/<pod-uid>/volumes/...`).
    #[arg(long, default_value = names::DEFAULT_KUBELET_PODS_DIR, value_name = "DIR")]
    pub kubelet_pods_dir: PathBuf,

    /// How many pod volumes to back up or restore at once.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Where to serve Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:8085")]
    pub metrics_address: SocketAddr,

    /// A kubeconfig to use instead of the in-cluster service account (or $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no cluster to talk to ({e}): run in a pod with a service account, or pass --kubeconfig")
        })?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn check(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kubelet_pods_dir.is_dir(),
        "--kubelet-pods-dir {} is not a directory; mount the kubelet's pod directory there (hostPath)",
        args.kubelet_pods_dir.display()
    );
    anyhow::ensure!(!args.node_name.trim().is_empty(), "--node-name (or NODE_NAME from the downward API) is empty");
    Ok(())
}

/// Runs the agent until the process is stopped.
pub async fn run(args: Args) -> anyhow::Result<()> {
    check(&args)?;
    stowage_restic::forward_log_to_tracing();
    let client = client(&args).await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let agent = Arc::new(agent::Agent::new(
        client,
        args.namespace.clone(),
        args.node_name.clone(),
        args.kubelet_pods_dir.clone(),
        args.concurrency as usize,
        metrics.clone(),
    ));
    tokio::select! {
        r = metrics::serve(args.metrics_address, metrics) => r,
        r = agent.run() => r,
        r = tokio::signal::ctrl_c() => { r?; tracing::info!("stopping"); Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse_and_bad_ones_are_explained() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let args = Args::try_parse_from([
            "stowage-node-agent",
            "--node-name",
            "node-1",
            "--kubelet-pods-dir",
            dir,
            "--concurrency",
            "4",
        ])
        .unwrap();
        assert_eq!(args.concurrency, 4);
        check(&args).unwrap();

        let missing =
            Args::try_parse_from(["x", "--node-name", "n", "--kubelet-pods-dir", "/nonexistent/pods"]).unwrap();
        assert!(check(&missing).unwrap_err().to_string().contains("is not a directory"));
        assert!(Args::try_parse_from(["x", "--node-name", "n", "--concurrency", "0"]).is_err());
    }
}

//! `stowage-node-agent`: runs on every node (DaemonSet) and executes the PodVolumeBackups and
//! PodVolumeRestores of the pods on its node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stowage_api::names;

/// Back up and restore the pod volumes of this node for Stowage.
#[derive(Debug, Parser)]
#[command(name = "stowage-node-agent", version, max_term_width = 100)]
struct Args {
    /// The node this agent runs on; it only acts on work items for this node.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// The namespace Stowage is installed in.
    #[arg(short, long, env = names::NAMESPACE_ENV, default_value = names::DEFAULT_NAMESPACE)]
    namespace: String,

    /// The kubelet's pod directory as seen by this process (`<dir>/<pod-uid>/volumes/...`).
    #[arg(long, default_value = names::DEFAULT_KUBELET_PODS_DIR, value_name = "DIR")]
    kubelet_pods_dir: PathBuf,

    /// How many pod volumes to back up or restore at once.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,

    /// Where to serve Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:8085")]
    metrics_address: SocketAddr,
}

fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kubelet_pods_dir.is_dir(),
        "--kubelet-pods-dir {} is not a directory; mount the kubelet's pod directory there (hostPath)",
        args.kubelet_pods_dir.display()
    );
    anyhow::bail!(
        "volume backup and restore are not implemented in this build (node {:?}); use a release that includes them",
        args.node_name
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
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
    fn flags_parse_and_run_explains() {
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
        assert!(run(&args).unwrap_err().to_string().contains("not implemented in this build"));

        let missing =
            Args::try_parse_from(["x", "--node-name", "n", "--kubelet-pods-dir", "/nonexistent/pods"]).unwrap();
        assert!(run(&missing).unwrap_err().to_string().contains("is not a directory"));
        assert!(Args::try_parse_from(["x", "--node-name", "n", "--concurrency", "0"]).is_err());
    }
}

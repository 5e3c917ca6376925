//! `kube-sim`: runs the Kubernetes API server simulator as a process.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;
use kube_sim::{ExecFallback, KubeSim, SimConfig};

#[derive(Parser, Debug)]
#[command(name = "kube-sim", version, about = "A Kubernetes API server simulator for tests (plain HTTP on 127.0.0.1)")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig that points at the simulator.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Root directory of the simulated nodes (pod volume directories live under it).
    #[arg(long)]
    kubelet_root: PathBuf,
    /// Node names to create (repeatable).
    #[arg(long = "node", default_values_t = vec!["node-1".to_string()])]
    nodes: Vec<String>,
    /// Map a container image to a local binary the kubelet runs: IMAGE=PATH (repeatable).
    #[arg(long = "image", value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    /// Run `kubectl exec` commands as local processes in the container's stand-in directory.
    #[arg(long)]
    exec_local: bool,
    /// How long a command run by `--exec-local` may take before it is killed (e.g. 90s, 10m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    exec_local_timeout: std::time::Duration,
    /// Serve the API only: no scheduler, kubelet, provisioner or workload controllers.
    #[arg(long)]
    no_controllers: bool,
    /// A user authenticated by a bearer token and authorized by the stored RBAC objects:
    /// TOKEN=NAME (repeatable). The admin token `kube-sim` keeps full access.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, String)>,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((token, name)) if !token.is_empty() && !name.is_empty() => Ok((token.to_string(), name.to_string())),
        _ => Err(format!("expected TOKEN=NAME (e.g. alice-token=alice), got {s:?}")),
    }
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    let (image, path) = s.split_once('=').ok_or_else(|| format!("expected IMAGE=PATH, got {s:?}"))?;
    Ok((image.to_string(), PathBuf::from(path)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    ).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let mut config = SimConfig::new(&args.kubelet_root);
    config.port = args.port;
    config.nodes = args.nodes;
    config.images = args.images.into_iter().collect::<HashMap<_, _>>();
    config.exec_fallback = if args.exec_local { ExecFallback::RunLocal } else { ExecFallback::Deny };
    config.exec_local_timeout = args.exec_local_timeout;
    config.run_controllers = !args.no_controllers;
    config.users = args.users;
    let sim = KubeSim::start(config).await?;
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path)?;
    }
    println!("kube-sim serving on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exec_local_timeout_takes_a_duration_and_defaults_to_ten_minutes() {
        let args = Args::try_parse_from(["kube-sim", "--kubelet-root", "/x", "--exec-local-timeout", "90s"]).unwrap();
        assert_eq!(args.exec_local_timeout, Duration::from_secs(90));
        let args = Args::try_parse_from(["kube-sim", "--kubelet-root", "/x"]).unwrap();
        assert_eq!(args.exec_local_timeout, kube_sim::DEFAULT_EXEC_LOCAL_TIMEOUT);
        assert!(Args::try_parse_from(["kube-sim", "--kubelet-root", "/x", "--exec-local-timeout", "soon"]).is_err());
    }

    #[test]
    fn users_are_token_equals_name_and_repeatable() {
        let args = Args::try_parse_from(["kube-sim", "--kubelet-root", "/x", "--user", "t1=alice", "--user", "t2=bob"]).unwrap();
        assert_eq!(args.users, vec![("t1".to_string(), "alice".to_string()), ("t2".to_string(), "bob".to_string())]);
        assert!(Args::try_parse_from(["kube-sim", "--kubelet-root", "/x", "--user", "alice"]).is_err());
        assert!(Args::try_parse_from(["kube-sim", "--kubelet-root", "/x", "--user", "=alice"]).is_err());
    }
}

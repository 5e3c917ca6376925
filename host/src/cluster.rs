//! Which cluster the CLI talks to: the current kubeconfig context, or the one named by flags.

use std::path::PathBuf;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Flags choosing the cluster, shared by every command that talks to one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, visible_alias = "kubecontext", value_name = "NAME", help_heading = "Global options")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// A client for the chosen cluster.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).with_context(|| {
                    format!("cannot read kubeconfig {}; check the --kubeconfig path", path.display())
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(anyhow::Error::from)
            }
            None if self.context.is_some() => {
                kube::Config::from_kubeconfig(&options).await.map_err(anyhow::Error::from)
            }
            None => kube::Config::infer().await.map_err(anyhow::Error::from),
        }
        .context("cannot load a cluster configuration; set KUBECONFIG or pass --kubeconfig/--context")?;
        kube::Client::try_from(config).context("cannot build a Kubernetes client from the kubeconfig")
    }
}

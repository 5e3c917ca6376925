//! The day-to-day commands: `stowage backup ...`, `stowage restore ...`, `stowage schedule ...`,
//! `stowage backup-location ...`. Each talks to the cluster only through Stowage's custom
//! resources (and the Secrets the server serves downloads in), never to the object store.

pub mod backup;
pub mod download;
pub mod extension;
pub mod files;
pub mod filters;
pub mod location;
pub mod migrate;
pub mod output;
pub mod repo;
pub mod restore;
pub mod schedule;
pub mod selector;
pub mod wait;

mod describe;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use stowage_api::names;

use crate::cluster::ClusterArgs;

/// `-n/--namespace`, shared by every command group: where Stowage is installed and its
/// objects live.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallNamespace {
    /// The namespace Stowage is installed in.
    #[arg(
        short,
        long,
        global = true,
        env = names::NAMESPACE_ENV,
        default_value = names::DEFAULT_NAMESPACE,
        help_heading = "Global options"
    )]
    pub namespace: String,
}

/// A client for the chosen cluster and the install namespace: what every command needs.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub namespace: String,
}

impl Context {
    pub async fn connect(cluster: &ClusterArgs, namespace: &InstallNamespace) -> anyhow::Result<Context> {
        Ok(Context { client: cluster.client().await?, namespace: namespace.namespace.clone() })
    }

    /// The namespaced API of one of Stowage's kinds (or Secrets) in the install namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Gets one object, saying what to do when it does not exist. `kind` is how users name it
    /// (`backup`), `list_hint` the command that lists them (`stowage backup get`).
    pub async fn get<K>(&self, kind: &str, name: &str, list_hint: &str) -> anyhow::Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        self.api::<K>()
            .get_opt(name)
            .await
            .explain(|| format!("getting {kind} {name:?}"), &self.namespace)?
            .ok_or_else(|| not_found(kind, name, &self.namespace, list_hint))
    }

    /// The named objects, or all of them (those matching `selector`), sorted by name.
    pub async fn get_or_list<K>(
        &self,
        kind: &str,
        names: &[String],
        selector: Option<&LabelSelector>,
        list_hint: &str,
    ) -> anyhow::Result<Vec<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let mut objects = Vec::new();
        if names.is_empty() {
            let mut params = ListParams::default();
            if let Some(s) = selector {
                params = params.labels(&selector::format(Some(s)));
            }
            let list = self.api::<K>().list(&params).await.explain(|| format!("listing {kind}s"), &self.namespace)?;
            objects = list.items;
        } else {
            for name in names {
                objects.push(self.get::<K>(kind, name, list_hint).await?);
            }
        }
        objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        Ok(objects)
    }
}

pub fn not_found(kind: &str, name: &str, namespace: &str, list_hint: &str) -> anyhow::Error {
    anyhow::anyhow!("{kind} {name:?} not found in namespace {namespace}; list {kind}s with `{list_hint}`")
}

/// Turns kube errors into messages that say what failed and what to do about the usual causes:
/// Stowage not installed (no CRD), missing permissions, an unreachable cluster.
pub trait Explain<T> {
    fn explain(self, action: impl FnOnce() -> String, namespace: &str) -> anyhow::Result<T>;
}

impl<T> Explain<T> for Result<T, kube::Error> {
    fn explain(self, action: impl FnOnce() -> String, namespace: &str) -> anyhow::Result<T> {
        self.map_err(|error| explain_error(action(), error, namespace))
    }
}

fn explain_error(action: String, error: kube::Error, namespace: &str) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                404 => format!(
                    "; is Stowage installed in namespace {namespace}? (check with `kubectl get crd backups.stowage.io`, \
                     install with `stowage install`)"
                ),
                403 => format!("; your user needs access to Stowage's resources in namespace {namespace}"),
                _ => String::new(),
            };
            anyhow::anyhow!("{action}: {} ({}){hint}", status.message, status.code)
        }
        other => anyhow::Error::new(other)
            .context(format!("{action}: cannot talk to the Kubernetes API; check --kubeconfig and --context")),
    }
}

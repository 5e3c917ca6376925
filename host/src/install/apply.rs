//! Applying the install to a cluster with server-side apply, CRDs first.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stowage_api::names;
use stowage_api::BackupStorageLocation;

use super::objects::InstallObject;

/// What the apply did that the user must hear about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// False when an existing master key was kept.
    pub master_key_created: bool,
}

/// Applies `objects` in order. Namespace and CRDs go first; the rest waits until every CRD is
/// Established. An existing master key is never replaced. `report` hears one line per object.
pub async fn apply(
    client: &Client,
    objects: &[InstallObject],
    crd_timeout: Duration,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ApplyOutcome> {
    let params = PatchParams::apply(names::FIELD_MANAGER).force();
    let (first, rest): (Vec<_>, Vec<_>) =
        objects.iter().partition(|o| matches!(o, InstallObject::Namespace(_) | InstallObject::Crd(_)));
    for object in &first {
        apply_one(client, object, &params).await?;
        report(format!("applied {}", object.describe()));
    }
    wait_for_crds(client, &first, crd_timeout).await?;
    let mut outcome = ApplyOutcome::default();
    for object in rest {
        match object {
            InstallObject::Secret(secret) if object.is_master_key() => {
                outcome.master_key_created = create_master_key(client, secret).await?;
                let verb = if outcome.master_key_created { "created" } else { "kept existing" };
                report(format!("{verb} {}", object.describe()));
            }
            _ => {
                apply_one(client, object, &params).await?;
                report(format!("applied {}", object.describe()));
            }
        }
    }
    Ok(outcome)
}

async fn apply_one(client: &Client, object: &InstallObject, params: &PatchParams) -> anyhow::Result<()> {
    let ns = object.metadata().namespace.as_deref().unwrap_or_default();
    let result = match object {
        InstallObject::Namespace(o) => patch(Api::<Namespace>::all(client.clone()), o, params).await,
        InstallObject::Crd(o) => patch(Api::<CustomResourceDefinition>::all(client.clone()), o.as_ref(), params).await,
        InstallObject::ServiceAccount(o) => {
            patch(Api::<ServiceAccount>::namespaced(client.clone(), ns), o, params).await
        }
        InstallObject::ClusterRole(o) => patch(Api::<ClusterRole>::all(client.clone()), o, params).await,
        InstallObject::ClusterRoleBinding(o) => patch(Api::<ClusterRoleBinding>::all(client.clone()), o, params).await,
        InstallObject::Role(o) => patch(Api::<Role>::namespaced(client.clone(), ns), o, params).await,
        InstallObject::RoleBinding(o) => patch(Api::<RoleBinding>::namespaced(client.clone(), ns), o, params).await,
        InstallObject::Secret(o) => patch(Api::<Secret>::namespaced(client.clone(), ns), o, params).await,
        InstallObject::BackupStorageLocation(o) => {
            patch(Api::<BackupStorageLocation>::namespaced(client.clone(), ns), o.as_ref(), params).await
        }
        InstallObject::Deployment(o) => {
            patch(Api::<Deployment>::namespaced(client.clone(), ns), o.as_ref(), params).await
        }
        InstallObject::Service(o) => {
            patch(Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns), o.as_ref(), params).await
        }
        InstallObject::PodDisruptionBudget(o) => {
            patch(Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), ns), o.as_ref(), params).await
        }
        InstallObject::DaemonSet(o) => {
            patch(Api::<DaemonSet>::namespaced(client.clone(), ns), o.as_ref(), params).await
        }
    };
    result.map_err(|e| explain(e, &format!("applying {}", object.describe())))
}

async fn patch<K>(api: Api<K>, object: &K, params: &PatchParams) -> Result<(), kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object.meta().name.as_deref().unwrap_or_default();
    api.patch(name, params, &Patch::Apply(object)).await.map(|_| ())
}

/// Creates the master key unless one exists; returns whether it was created.
async fn create_master_key(client: &Client, secret: &Secret) -> anyhow::Result<bool> {
    let ns = secret.metadata.namespace.as_deref().unwrap_or_default();
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let params = PostParams { field_manager: Some(names::FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, secret).await {
        Ok(_) => return Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(explain(e, &format!("creating Secret {ns}/{}", names::MASTER_KEY_SECRET))),
    }
    let existing = api
        .get(names::MASTER_KEY_SECRET)
        .await
        .map_err(|e| explain(e, &format!("reading Secret {ns}/{}", names::MASTER_KEY_SECRET)))?;
    let key_len = existing.data.as_ref().and_then(|d| d.get(names::MASTER_KEY_SECRET_KEY)).map(|k| k.0.len());
    anyhow::ensure!(
        key_len == Some(names::MASTER_KEY_LEN),
        "Secret {ns}/{} exists but has no {}-byte key {:?}; it was not replaced, because existing volume \
         backups may depend on it. Restore it from your copy, or delete it to have a new key generated",
        names::MASTER_KEY_SECRET,
        names::MASTER_KEY_LEN,
        names::MASTER_KEY_SECRET_KEY
    );
    Ok(false)
}

async fn wait_for_crds(client: &Client, objects: &[&InstallObject], timeout: Duration) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for object in objects.iter().filter(|o| matches!(o, InstallObject::Crd(_))) {
        let name = object.name();
        tokio::time::timeout(timeout, await_condition(api.clone(), name, conditions::is_crd_established()))
            .await
            .with_context(|| {
                format!("CRD {name} was not Established within {timeout:?}; check `kubectl describe crd {name}`")
            })?
            .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// Waits until the server Deployment is available and the node agents are ready (`--wait`).
pub async fn wait_for_pods(
    client: &Client,
    namespace: &str,
    node_agent: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let available = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).and_then(|s| s.available_replicas).is_some_and(|n| n >= 1)
    };
    tokio::time::timeout(timeout, await_condition(deployments, names::SERVER, available))
        .await
        .with_context(|| {
            format!(
                "the server was not available within {timeout:?}; check `kubectl -n {namespace} describe deployment {}`",
                names::SERVER
            )
        })??;
    if node_agent {
        let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), namespace);
        let ready = |d: Option<&DaemonSet>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled)
        };
        tokio::time::timeout(timeout, await_condition(daemon_sets, names::NODE_AGENT, ready))
            .await
            .with_context(|| {
                format!(
                    "the node agents were not ready within {timeout:?}; check `kubectl -n {namespace} describe daemonset {}`",
                    names::NODE_AGENT
                )
            })??;
    }
    Ok(())
}

/// Turns an API error into one that says what to do.
pub(super) fn explain(error: kube::Error, doing: &str) -> anyhow::Error {
    let hint = match &error {
        kube::Error::Api(status) if status.code == 403 => {
            "; installing Stowage creates cluster-wide objects (CRDs, ClusterRoles): use a kubeconfig with \
             cluster-admin rights"
        }
        kube::Error::Api(status) if status.code == 401 => "; your kubeconfig credentials were rejected: log in again",
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            "; is the cluster reachable? check `kubectl cluster-info`, or use --dry-run -o yaml to only print the objects"
        }
        _ => "",
    };
    anyhow::anyhow!("{doing}: {error}{hint}")
}

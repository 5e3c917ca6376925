//! The control plane's moving parts, written as ordinary API clients (kube-rs watchers and
//! controllers) so that they exercise the simulator's watch like real components would:
//! the scheduler, the volume provisioner and binder, the kubelets, and the workload
//! controllers (Deployment, ReplicaSet, StatefulSet, Job, DaemonSet).
//!
//! Every reconciler reads fresh state from the API, is idempotent, and requeues itself for a
//! periodic resync; a 409 Conflict or any other error just means "try again shortly".
mod daemonset;
mod deployment;
mod job;
mod pods;
mod provisioner;
mod replicaset;
mod scheduler;
mod statefulset;
mod status;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::SimConfig;

/// Starts the scheduler, provisioner, one kubelet per node and the workload controllers.
pub fn spawn_all(client: kube::Client, config: Arc<SimConfig>) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = Arc::new(Ctx { client: client.clone(), config: config.clone() });
    let mut tasks = vec![
        tokio::spawn(scheduler::run(ctx.clone())),
        provisioner::spawn_claims(ctx.clone()),
        provisioner::spawn_volumes(ctx.clone()),
        deployment::spawn(ctx.clone()),
        replicaset::spawn(ctx.clone()),
        statefulset::spawn(ctx.clone()),
        job::spawn(ctx.clone()),
        daemonset::spawn(ctx.clone()),
    ];
    for node in &config.nodes {
        tasks.push(crate::kubelet::spawn(client.clone(), config.clone(), node.clone()));
    }
    tasks
}

pub struct Ctx {
    pub client: Client,
    pub config: Arc<SimConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Every object is looked at again this often even without events.
pub const RESYNC: Duration = Duration::from_secs(30);

pub fn resync() -> Action {
    Action::requeue(RESYNC)
}

fn error_policy<K>(obj: Arc<K>, err: &Error, _ctx: Arc<Ctx>) -> Action
where
    K: Resource,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match err {
        Error::Kube(kube::Error::Api(e)) if e.code == 409 => Action::requeue(Duration::from_millis(100)),
        _ => {
            tracing::warn!(kind = %std::any::type_name::<K>(), %name, "reconcile failed: {err}");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

/// Runs a kube-rs controller until the simulator stops.
fn run<K, F, Fut>(controller: Controller<K>, ctx: Arc<Ctx>, reconcile: F) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    tokio::spawn(async move {
        controller
            .run(reconcile, error_policy::<K>, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(kind = %std::any::type_name::<K>(), "controller: {e}");
                }
            })
            .await
    })
}

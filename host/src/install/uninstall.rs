//! `stowage uninstall`: deletes what `stowage install` created, last applied first. The bucket is
//! never touched, and the master key Secret and the namespace stay unless `--purge`: without the
//! key, the volume backups already in the bucket cannot be restored.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::{Client, Resource};
use stowage_api::{names, BackupStorageLocation};

use super::objects::InstallObject;
use super::rbac;
use crate::cluster::ClusterArgs;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stowage uninstall --dry-run            # what would be deleted
  stowage uninstall                      # keeps the namespace and the master key Secret
  stowage uninstall --keep-crds          # also keeps Backups, Restores and Schedules in the cluster
  stowage uninstall --purge              # the master key and the namespace too")]
pub struct UninstallArgs {
    /// The namespace Stowage was installed into.
    #[arg(short, long, default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep the CustomResourceDefinitions, and with them the Backups, Restores, Schedules and
    /// storage locations recorded in the cluster.
    #[arg(long)]
    pub keep_crds: bool,

    /// Also delete the master key Secret and the namespace. Volume backups in the bucket cannot
    /// be restored afterwards without a copy of the key.
    #[arg(long)]
    pub purge: bool,
}

/// One object to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
}

impl Target {
    fn of<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> Target {
        Target { resource: ApiResource::erase::<K>(&()), namespace: namespace.map(str::to_string), name: name.into() }
    }

    /// `Kind namespace/name` or `Kind name`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }
}

/// What uninstalling from `namespace` deletes, in order (workloads first, so nothing runs while
/// its permissions go). `shared_kept` is true when another install still uses the cluster-wide
/// objects (CRDs and ClusterRoles), which then stay.
pub fn targets(namespace: &str, keep_crds: bool, purge: bool, shared_kept: bool) -> Vec<Target> {
    let ns = Some(namespace);
    let mut targets = vec![
        Target::of::<DaemonSet>(ns, names::NODE_AGENT),
        Target::of::<PodDisruptionBudget>(ns, names::SERVER),
        Target::of::<Deployment>(ns, names::SERVER),
        Target::of::<Service>(ns, names::SERVER),
        // Made by the servers, not by install: which replica leads.
        Target::of::<Lease>(ns, crate::server::leader::LEASE_NAME),
        Target::of::<BackupStorageLocation>(ns, names::DEFAULT_LOCATION),
        Target::of::<Secret>(ns, names::CREDENTIALS_SECRET),
    ];
    if purge {
        targets.push(Target::of::<Secret>(ns, names::MASTER_KEY_SECRET));
    }
    for object in rbac::objects(namespace).iter().rev() {
        if shared_kept && matches!(object, InstallObject::ClusterRole(_)) {
            continue;
        }
        let target = match object {
            InstallObject::ServiceAccount(_) => Target::of::<ServiceAccount>(ns, object.name()),
            InstallObject::ClusterRole(_) => Target::of::<ClusterRole>(None, object.name()),
            InstallObject::ClusterRoleBinding(_) => Target::of::<ClusterRoleBinding>(None, object.name()),
            InstallObject::Role(_) => Target::of::<Role>(ns, object.name()),
            InstallObject::RoleBinding(_) => Target::of::<RoleBinding>(ns, object.name()),
            _ => continue,
        };
        targets.push(target);
    }
    if !keep_crds && !shared_kept {
        for crd in stowage_api::all_crds() {
            targets.push(Target::of::<CustomResourceDefinition>(None, crd.metadata.name.as_deref().unwrap_or_default()));
        }
    }
    if purge {
        targets.push(Target::of::<Namespace>(None, namespace));
    }
    targets
}

/// The namespaces of the other installs in the cluster: those whose server ClusterRoleBinding
/// (`stowage-server-<namespace>`) exists.
async fn other_installs(client: &Client, namespace: &str) -> anyhow::Result<BTreeSet<String>> {
    let bindings = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/part-of=stowage"))
        .await
        .map_err(|e| super::apply::explain(e, "listing Stowage's ClusterRoleBindings"))?;
    Ok(bindings
        .items
        .iter()
        .filter_map(|b| b.metadata.name.as_deref()?.strip_prefix("stowage-server-").map(str::to_string))
        .filter(|ns| ns != namespace)
        .collect())
}

/// Runs `stowage uninstall`.
pub async fn run(args: UninstallArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let others = other_installs(&client, &args.namespace).await?;
    let shared_kept = !others.is_empty();
    let targets = targets(&args.namespace, args.keep_crds, args.purge, shared_kept);
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    for target in &targets {
        if args.dry_run {
            println!("{verb} {}", target.describe());
            continue;
        }
        let api: Api<DynamicObject> = match &target.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &target.resource),
            None => Api::all_with(client.clone(), &target.resource),
        };
        match api.delete(&target.name, &DeleteParams::background()).await {
            Ok(_) => println!("{verb} {}", target.describe()),
            Err(kube::Error::Api(status)) if status.code == 404 => println!("{} was not there", target.describe()),
            Err(e) => return Err(super::apply::explain(e, &format!("deleting {}", target.describe()))),
        }
    }
    let ns = &args.namespace;
    if shared_kept {
        let list = others.into_iter().collect::<Vec<_>>().join(", ");
        eprintln!(
            "kept the CustomResourceDefinitions and ClusterRoles: Stowage is also installed in namespace(s) {list}"
        );
    } else if args.keep_crds {
        eprintln!("kept the CustomResourceDefinitions, with the Backups, Restores and Schedules recorded in the cluster");
    } else {
        eprintln!(
            "the Backups, Restores and Schedules recorded in the cluster {} with their CustomResourceDefinitions \
             (--keep-crds keeps them); the backups in the bucket are untouched and appear again once Stowage is \
             installed with the same location",
            if args.dry_run { "would go" } else { "went" }
        );
    }
    if args.purge {
        eprintln!("the master key Secret {ns}/{} and namespace {ns} are {}: volume backups in the bucket can only be restored with a copy of that key",
            names::MASTER_KEY_SECRET, if args.dry_run { "to be deleted" } else { "deleted" });
    } else {
        eprintln!(
            "kept Secret {ns}/{} (the master key of the volume backups: without it they cannot be restored) and namespace {ns}; \
             the bucket is untouched. `stowage uninstall --purge` deletes the key and the namespace too; keep a copy first: \
             kubectl -n {ns} get secret {} -o yaml > master-key.yaml",
            names::MASTER_KEY_SECRET,
            names::MASTER_KEY_SECRET
        );
    }
    Ok(())
}

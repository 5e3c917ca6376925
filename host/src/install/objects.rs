//! The objects of an install, typed, in the order they are applied.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, SecretKeySelector, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde::{Serialize, Serializer};
use stowage_api::location::{BackupStorageLocation, BackupStorageLocationSpec, ObjectStorageLocation};
use stowage_api::names;

use super::master_key::MasterKey;
use super::options::InstallPlan;
use super::{rbac, workloads};

/// Which part of Stowage an object belongs to (the `app.kubernetes.io/component` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Server,
    NodeAgent,
    /// Shared by both: namespace, CRDs, secrets, storage location.
    Core,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Server => "server",
            Component::NodeAgent => "node-agent",
            Component::Core => "core",
        }
    }
}

/// Labels that select a component's pods; never change them (Deployment selectors are immutable).
pub fn selector_labels(component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "stowage".to_string()),
        ("app.kubernetes.io/component".to_string(), component.as_str().to_string()),
    ])
}

pub fn labels(component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(component);
    labels.insert("app.kubernetes.io/part-of".into(), "stowage".into());
    labels.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
    labels
}

pub fn meta(name: &str, namespace: Option<&str>, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

/// One object of the install. Debug shows kind and name only: Secrets must not reach logs.
#[derive(Clone)]
pub enum InstallObject {
    Namespace(Namespace),
    Crd(Box<CustomResourceDefinition>),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Secret(Secret),
    BackupStorageLocation(Box<BackupStorageLocation>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    PodDisruptionBudget(Box<k8s_openapi::api::policy::v1::PodDisruptionBudget>),
    DaemonSet(Box<DaemonSet>),
}

impl InstallObject {
    pub fn kind(&self) -> &'static str {
        match self {
            InstallObject::Namespace(_) => "Namespace",
            InstallObject::Crd(_) => "CustomResourceDefinition",
            InstallObject::ServiceAccount(_) => "ServiceAccount",
            InstallObject::ClusterRole(_) => "ClusterRole",
            InstallObject::ClusterRoleBinding(_) => "ClusterRoleBinding",
            InstallObject::Role(_) => "Role",
            InstallObject::RoleBinding(_) => "RoleBinding",
            InstallObject::Secret(_) => "Secret",
            InstallObject::BackupStorageLocation(_) => "BackupStorageLocation",
            InstallObject::Deployment(_) => "Deployment",
            InstallObject::Service(_) => "Service",
            InstallObject::PodDisruptionBudget(_) => "PodDisruptionBudget",
            InstallObject::DaemonSet(_) => "DaemonSet",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            InstallObject::Namespace(o) => &o.metadata,
            InstallObject::Crd(o) => &o.metadata,
            InstallObject::ServiceAccount(o) => &o.metadata,
            InstallObject::ClusterRole(o) => &o.metadata,
            InstallObject::ClusterRoleBinding(o) => &o.metadata,
            InstallObject::Role(o) => &o.metadata,
            InstallObject::RoleBinding(o) => &o.metadata,
            InstallObject::Secret(o) => &o.metadata,
            InstallObject::BackupStorageLocation(o) => &o.metadata,
            InstallObject::Deployment(o) => &o.metadata,
            InstallObject::Service(o) => &o.metadata,
            InstallObject::PodDisruptionBudget(o) => &o.metadata,
            InstallObject::DaemonSet(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `Kind namespace/name` or `Kind name`: what messages say about an object.
    pub fn describe(&self) -> String {
        match &self.metadata().namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    pub fn is_master_key(&self) -> bool {
        matches!(self, InstallObject::Secret(s) if s.metadata.name.as_deref() == Some(names::MASTER_KEY_SECRET))
    }
}

impl std::fmt::Debug for InstallObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Serialize for InstallObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            InstallObject::Namespace(o) => o.serialize(s),
            InstallObject::Crd(o) => o.serialize(s),
            InstallObject::ServiceAccount(o) => o.serialize(s),
            InstallObject::ClusterRole(o) => o.serialize(s),
            InstallObject::ClusterRoleBinding(o) => o.serialize(s),
            InstallObject::Role(o) => o.serialize(s),
            InstallObject::RoleBinding(o) => o.serialize(s),
            InstallObject::Secret(o) => o.serialize(s),
            InstallObject::BackupStorageLocation(o) => o.serialize(s),
            InstallObject::Deployment(o) => o.serialize(s),
            InstallObject::Service(o) => o.serialize(s),
            InstallObject::PodDisruptionBudget(o) => o.serialize(s),
            InstallObject::DaemonSet(o) => o.serialize(s),
        }
    }
}

/// Every object of the install, in apply order: namespace and CRDs first, the storage location
/// after them (its CRD must exist), the workloads last (their Secrets and RBAC must exist).
pub fn build(plan: &InstallPlan, master_key: &MasterKey) -> Vec<InstallObject> {
    let ns = plan.namespace.as_str();
    let mut objects =
        vec![InstallObject::Namespace(Namespace { metadata: meta(ns, None, Component::Core), ..Default::default() })];
    objects.extend(stowage_api::all_crds().into_iter().map(|mut crd| {
        crd.metadata.labels = Some(labels(Component::Core));
        InstallObject::Crd(Box::new(crd))
    }));
    objects.extend(rbac::objects(ns));
    if let Some(credentials) = &plan.credentials {
        objects.push(secret(
            ns,
            names::CREDENTIALS_SECRET,
            names::CREDENTIALS_SECRET_KEY,
            credentials.contents(),
            None,
        ));
    }
    let note = "Master key of Stowage's volume repositories. Keep a copy outside the cluster: without it, \
                volume backups cannot be restored on a new cluster.";
    objects.push(secret(ns, names::MASTER_KEY_SECRET, names::MASTER_KEY_SECRET_KEY, master_key.as_bytes(), Some(note)));
    if let Some(location) = backup_storage_location(plan) {
        objects.push(InstallObject::BackupStorageLocation(Box::new(location)));
    }
    objects.push(InstallObject::Deployment(Box::new(workloads::server(plan))));
    objects.push(InstallObject::Service(Box::new(workloads::server_service(plan))));
    if let Some(budget) = workloads::server_disruption_budget(plan) {
        objects.push(InstallObject::PodDisruptionBudget(Box::new(budget)));
    }
    if let Some(daemon_set) = workloads::node_agent(plan) {
        objects.push(InstallObject::DaemonSet(Box::new(daemon_set)));
    }
    objects
}

fn secret(ns: &str, name: &str, key: &str, value: &[u8], note: Option<&str>) -> InstallObject {
    let mut metadata = meta(name, Some(ns), Component::Core);
    metadata.annotations = note.map(|n| BTreeMap::from([("stowage.io/note".to_string(), n.to_string())]));
    InstallObject::Secret(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(key.to_string(), ByteString(value.to_vec()))])),
        ..Default::default()
    })
}

fn backup_storage_location(plan: &InstallPlan) -> Option<BackupStorageLocation> {
    let location = plan.location.as_ref()?;
    let credential = plan.credentials.as_ref().map(|_| SecretKeySelector {
        name: names::CREDENTIALS_SECRET.into(),
        key: names::CREDENTIALS_SECRET_KEY.into(),
        optional: None,
    });
    let mut bsl = BackupStorageLocation::new(
        names::DEFAULT_LOCATION,
        BackupStorageLocationSpec {
            provider: location.provider.as_str().into(),
            object_storage: ObjectStorageLocation {
                bucket: location.bucket.clone(),
                prefix: location.prefix.clone(),
                ca_cert: None,
            },
            config: location.config.clone(),
            credential,
            default: true,
            ..Default::default()
        },
    );
    bsl.metadata.namespace = Some(plan.namespace.clone());
    bsl.metadata.labels = Some(labels(Component::Core));
    Some(bsl)
}

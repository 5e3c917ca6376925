//! Service accounts and RBAC. The server reads everything (a backup may include any kind) and
//! must be able to create and patch anything (a restore recreates whatever the backup holds):
//! that is as broad as the job, and no broader — it never deletes outside its own kinds.
//! The node agent sees pods and its own work items, and Secrets only in the install namespace.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use stowage_api::names;

use super::objects::{meta, Component, InstallObject};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

/// The server's cluster-wide permissions, one rule per reason.
fn server_cluster_rules() -> Vec<PolicyRule> {
    vec![
        // Backups read every resource in scope, Secrets included.
        rule(&["*"], &["*"], &["get", "list", "watch"]),
        // Restores recreate (or, with existingResourcePolicy=update, patch) any kind in a backup.
        rule(&["*"], &["*"], &["create", "patch", "update"]),
        // Stowage's own kinds: full control, including deleting expired backups' objects.
        rule(&[stowage_api::GROUP], &["*"], &["*"]),
        // Exec hooks (pre/post backup, post restore), and quiesce hooks.
        rule(&[""], &["pods/exec"], &["create"]),
        // Events on the objects Stowage works on (broken extensions, hook failures).
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        // Extension ConfigMaps are watched cluster-wide (application namespaces may ship their own).
        rule(&[""], &["configmaps"], &["get", "list", "watch"]),
    ]
}

/// The server's permissions inside the install namespace only.
fn server_namespace_rules() -> Vec<PolicyRule> {
    vec![
        // (Secrets: read with everything else; downloads are streamed or pre-signed, never
        // written into Secrets, so the server needs no delete on them.)
        // Leader election, so a second replica cannot run the controllers twice.
        rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update"]),
    ]
}

fn node_agent_cluster_rules() -> Vec<PolicyRule> {
    vec![
        // To find the pods whose volumes it handles, and their volume directories.
        rule(&[""], &["pods"], &["get", "list", "watch"]),
        // A claim names the PersistentVolume whose directory holds the data.
        rule(&[""], &["persistentvolumeclaims"], &["get"]),
        rule(
            &[stowage_api::GROUP],
            &["podvolumebackups", "podvolumerestores"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(
            &[stowage_api::GROUP],
            &["podvolumebackups/status", "podvolumerestores/status"],
            &["get", "update", "patch"],
        ),
        rule(&[stowage_api::GROUP], &["backuprepositories", "backupstoragelocations"], &["get", "list", "watch"]),
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

fn node_agent_namespace_rules() -> Vec<PolicyRule> {
    // The credentials and the master key; nothing else.
    vec![rule(&[""], &["secrets"], &["get"])]
}

fn subject(name: &str, namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef { api_group: RBAC_GROUP.into(), kind: kind.into(), name: name.into() }
}

/// Both components' ServiceAccounts, Roles and bindings, in apply order.
pub fn objects(namespace: &str) -> Vec<InstallObject> {
    let mut objects = Vec::new();
    let components = [
        (Component::Server, names::SERVER, server_cluster_rules(), server_namespace_rules()),
        (
            Component::NodeAgent,
            names::NODE_AGENT_SERVICE_ACCOUNT,
            node_agent_cluster_rules(),
            node_agent_namespace_rules(),
        ),
    ];
    for (component, account, cluster_rules, namespace_rules) in components {
        // ClusterRoles are the same for every install; bindings are per install namespace.
        let cluster_role = format!("stowage-{}", component.as_str());
        let binding = format!("stowage-{}-{namespace}", component.as_str());
        objects.push(InstallObject::ServiceAccount(ServiceAccount {
            metadata: meta(account, Some(namespace), component),
            ..Default::default()
        }));
        objects.push(InstallObject::ClusterRole(ClusterRole {
            metadata: meta(&cluster_role, None, component),
            rules: Some(cluster_rules),
            ..Default::default()
        }));
        objects.push(InstallObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(&binding, None, component),
            role_ref: role_ref("ClusterRole", &cluster_role),
            subjects: Some(vec![subject(account, namespace)]),
        }));
        let role = format!("stowage-{}", component.as_str());
        objects.push(InstallObject::Role(Role {
            metadata: meta(&role, Some(namespace), component),
            rules: Some(namespace_rules),
        }));
        objects.push(InstallObject::RoleBinding(RoleBinding {
            metadata: meta(&role, Some(namespace), component),
            role_ref: role_ref("Role", &role),
            subjects: Some(vec![subject(account, namespace)]),
        }));
    }
    objects
}

//! Where an extension acts and what it may do, from the namespace of its ConfigMap.

use crate::config::{Capabilities, ExecGrant};
use crate::selector::resource_matches;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The server's rules for extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// ConfigMaps in this namespace act cluster-wide with the capabilities they ask for.
    pub server_namespace: String,
    /// The most an extension from any other namespace may be granted.
    pub namespaced_capabilities: Capabilities,
}

impl Policy {
    /// A policy that lets namespaced extensions log and read the clock, nothing more.
    pub fn new(server_namespace: impl Into<String>) -> Policy {
        Policy {
            server_namespace: server_namespace.into(),
            namespaced_capabilities: Capabilities { log: true, clock: true, ..Default::default() },
        }
    }

    /// A policy that grants namespaced extensions at most `cap`.
    pub fn with_namespaced_capabilities(
        server_namespace: impl Into<String>,
        cap: Capabilities,
    ) -> Policy {
        Policy {
            server_namespace: server_namespace.into(),
            namespaced_capabilities: cap,
        }
    }

    /// The scope and granted capabilities of an extension loaded from `namespace`, and a
    /// message for each capability the policy dropped.
    pub fn resolve(&self, namespace: &str, requested: &Capabilities) -> (Scope, Capabilities, Vec<String>) {
        if namespace == self.server_namespace {
            return (Scope::Cluster, requested.clone(), Vec::new());
        }
        let (granted, dropped) = requested.capped_by(&self.namespaced_capabilities);
        (Scope::Namespace(namespace.to_owned()), granted, dropped)
    }
}

/// Where an extension acts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Every namespace and cluster-scoped objects.
    Cluster,
    /// Only items in, and host calls on, this namespace.
    Namespace(String),
}

impl Scope {
    /// Whether an item or a host call in `namespace` (empty: cluster-scoped, or all
    /// namespaces for a list) is within the scope.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespace(own) => own == namespace,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("cluster"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
        }
    }
}

impl Capabilities {
    pub fn may_read(&self, group: &str, kind: &str) -> bool {
        self.kube_read.iter().any(|r| resource_matches(r, group, kind))
    }

    pub fn may_write(&self, group: &str, kind: &str) -> bool {
        self.kube_write.iter().any(|r| resource_matches(r, group, kind))
    }

    pub fn may_exec(&self, container: &str) -> bool {
        self.exec.iter().any(|g| g.container == "*" || g.container == container)
    }

    /// The capabilities that are both requested and within `cap`, and what was dropped.
    /// A resource or container is kept when the cap names it or holds `*`.
    pub fn capped_by(&self, cap: &Capabilities) -> (Capabilities, Vec<String>) {
        let mut dropped = Vec::new();
        let mut flag = |name: &str, requested: bool, allowed: bool| {
            if requested && !allowed {
                dropped.push(format!("capabilities.{name}: not allowed for namespaced extensions"));
            }
            requested && allowed
        };
        let log = flag("log", self.log, cap.log);
        let clock = flag("clock", self.clock, cap.clock);
        let mut resources = |name: &str, requested: &[String], allowed: &[String]| -> Vec<String> {
            requested
                .iter()
                .filter(|r| {
                    let keep = allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(r));
                    if !keep {
                        dropped.push(format!("capabilities.{name}: {r} not allowed for namespaced extensions"));
                    }
                    keep
                })
                .cloned()
                .collect()
        };
        let kube_read = resources("kubeRead", &self.kube_read, &cap.kube_read);
        let kube_write = resources("kubeWrite", &self.kube_write, &cap.kube_write);
        let exec = self
            .exec
            .iter()
            .filter(|g| {
                let keep = cap.may_exec(&g.container);
                if !keep {
                    dropped.push(format!(
                        "capabilities.exec: container {} not allowed for namespaced extensions",
                        g.container
                    ));
                }
                keep
            })
            .cloned()
            .collect::<Vec<ExecGrant>>();
        (Capabilities { log, clock, kube_read, kube_write, exec }, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(read: &[&str], write: &[&str], exec: &[&str]) -> Capabilities {
        Capabilities {
            log: true,
            clock: false,
            kube_read: read.iter().map(|s| s.to_string()).collect(),
            kube_write: write.iter().map(|s| s.to_string()).collect(),
            exec: exec.iter().map(|c| ExecGrant { container: c.to_string() }).collect(),
        }
    }

    #[test]
    fn an_admin_policy_is_read_from_yaml() {
        let cap = Capabilities::from_yaml(
            "{log: true, kubeRead: [pods, deployments.apps], exec: [{container: mysql}]}",
        )
        .unwrap();
        let policy = Policy::with_namespaced_capabilities("stowage", cap);
        let (_, granted, dropped) = policy.resolve("shop", &caps(&["pods"], &["pods"], &["mysql"]));
        assert_eq!(granted, caps(&["pods"], &[], &["mysql"]));
        assert_eq!(
            dropped,
            vec!["capabilities.kubeWrite: pods not allowed for namespaced extensions"]
        );
        assert_eq!(
            Capabilities::from_yaml("").unwrap(),
            Capabilities::default()
        );
        let bad = Capabilities::from_yaml("{kubeRaed: [pods]}")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("kubeRaed") && bad.contains("unknown key"),
            "{bad}"
        );
        let empty = Capabilities::from_yaml("{kubeWrite: [pods, '']}")
            .unwrap_err()
            .to_string();
        assert!(empty.contains("kubeWrite[1]"), "{empty}");
    }

    #[test]
    fn server_namespace_is_cluster_wide_and_uncapped() {
        let policy = Policy::new("stowage");
        let requested = caps(&["*"], &["deployments.apps"], &["*"]);
        let (scope, granted, dropped) = policy.resolve("stowage", &requested);
        assert_eq!(scope, Scope::Cluster);
        assert_eq!(granted, requested);
        assert!(dropped.is_empty());
    }

    #[test]
    fn other_namespaces_are_scoped_and_capped() {
        let policy = Policy {
            server_namespace: "stowage".into(),
            namespaced_capabilities: caps(&["pods", "configmaps"], &[], &["mysql"]),
        };
        let mut requested = caps(&["pods", "secrets"], &["deployments.apps"], &["mysql", "*"]);
        requested.clock = true;
        let (scope, granted, dropped) = policy.resolve("shop", &requested);
        assert_eq!(scope, Scope::Namespace("shop".into()));
        assert_eq!(granted.kube_read, vec!["pods"]);
        assert!(granted.kube_write.is_empty());
        assert_eq!(granted.exec, vec![ExecGrant { container: "mysql".into() }]);
        assert!(granted.log && !granted.clock);
        assert_eq!(
            dropped,
            vec![
                "capabilities.clock: not allowed for namespaced extensions",
                "capabilities.kubeRead: secrets not allowed for namespaced extensions",
                "capabilities.kubeWrite: deployments.apps not allowed for namespaced extensions",
                "capabilities.exec: container * not allowed for namespaced extensions",
            ]
        );
        assert!(scope.allows("shop") && !scope.allows("bank") && !scope.allows(""));
    }

    #[test]
    fn capability_checks() {
        let granted = caps(&["pods"], &["deployments.apps"], &["mysql"]);
        assert!(granted.may_read("", "Pod") && !granted.may_read("", "Secret"));
        assert!(granted.may_write("apps", "Deployment") && !granted.may_write("apps", "StatefulSet"));
        assert!(granted.may_exec("mysql") && !granted.may_exec("sidecar"));
    }
}

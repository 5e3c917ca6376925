//! Authentication by bearer token and RBAC authorization, as the API server does them.
//!
//! Opt-in: the admin token (`kube-sim`, the one every kubeconfig the simulator writes carries),
//! the service account token the simulated kubelet mounts into pods, and requests without an
//! `Authorization` header may do everything, as before. Only the users configured in
//! [`SimConfig::users`](crate::SimConfig::users) are authorized, by the Roles, ClusterRoles and
//! their bindings stored in the simulator. `Impersonate-User` is honoured too: kubectl sends no
//! bearer token over plain HTTP, but it does send that.

use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::SimConfig;

/// The token of the kubeconfigs [`KubeSim::write_kubeconfig`](crate::KubeSim::write_kubeconfig) writes.
pub const ADMIN_TOKEN: &str = "kube-sim";

/// The service account token the simulated kubelet projects into pods.
pub const POD_TOKEN: &str = "kube-sim-token";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// May do everything, unchecked.
    Admin,
    /// A configured user, authorized by RBAC.
    User(String),
}

/// The user a request's `Authorization` header names; an unknown token is refused (401).
pub fn authenticate(config: &SimConfig, headers: &HeaderMap) -> ApiResult<Identity> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Identity::Admin) };
    let unauthorized = || ApiError::Unauthorized("Unauthorized".into());
    let value = value.to_str().map_err(|_| unauthorized())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    if token == ADMIN_TOKEN || token == POD_TOKEN {
        return Ok(Identity::Admin);
    }
    config
        .users
        .iter()
        .find(|(t, _)| t == token)
        .map(|(_, name)| Identity::User(name.clone()))
        .ok_or_else(|| {
            tracing::debug!("refused a request with an unknown bearer token (add it with --user TOKEN=NAME)");
            unauthorized()
        })
}

/// The identity after `Impersonate-User` (kubectl's `--as`, a kubeconfig's `as:`): the admin may
/// act as anyone, a user as themselves or as whoever RBAC lets them `impersonate` (resource
/// `users`). kubectl sends no bearer token over plain HTTP, so impersonation is how kubectl acts
/// as a user against the simulator.
pub fn impersonate(store: &Store, who: Identity, headers: &HeaderMap) -> ApiResult<Identity> {
    let Some(value) = headers.get("impersonate-user") else { return Ok(who) };
    let target = value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::BadRequest("invalid Impersonate-User header: expected a user name".into()))?
        .to_string();
    if matches!(&who, Identity::User(me) if *me != target) {
        let attrs = Attributes {
            verb: "impersonate".into(),
            group: String::new(),
            resource: "users".into(),
            subresource: None,
            name: Some(target.clone()),
            namespace: None,
        };
        authorize(store, &who, &attrs)?;
    }
    Ok(Identity::User(target))
}

/// What a resource request asks to do, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl Attributes {
    /// `resource` or `resource/subresource`, as rules and messages spell it.
    fn full_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// The RBAC verb of an HTTP method: a GET without a name lists (or watches), a DELETE without a
/// name deletes the collection.
pub fn verb(method: &str, named: bool, watching: bool) -> String {
    match (method, named) {
        ("GET" | "HEAD", false) if watching => "watch",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return other.to_ascii_lowercase(),
    }
    .to_string()
}

/// Allows the request or refuses it with the API server's 403 message.
pub fn authorize(store: &Store, who: &Identity, attrs: &Attributes) -> ApiResult<()> {
    let Identity::User(user) = who else { return Ok(()) };
    if allowed(store, user, attrs) {
        return Ok(());
    }
    Err(ApiError::Forbidden(forbidden_message(user, attrs)))
}

/// `services "stowage" is forbidden: User "alice" cannot get resource "services/proxy" in API
/// group "" in the namespace "stowage"`, word for word as the API server says it.
fn forbidden_message(user: &str, a: &Attributes) -> String {
    let resource = if a.group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.group) };
    let subject = match &a.name {
        Some(name) => format!("{resource} \"{name}\""),
        None => resource,
    };
    let scope = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        a.verb,
        a.full_resource(),
        a.group
    )
}

fn rbac_type(store: &Store, plural: &str) -> Option<ResourceType> {
    store.resolve(RBAC_GROUP, "v1", plural)
}

fn list(store: &Store, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let Some(rt) = rbac_type(store, plural) else { return Vec::new() };
    store
        .list(&rt, ns, &LabelSelector::default(), &FieldSelector::default(), None, None)
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Whether a ClusterRoleBinding, or a RoleBinding in the request's namespace, grants the user a
/// rule that matches.
fn allowed(store: &Store, user: &str, a: &Attributes) -> bool {
    let cluster = list(store, "clusterrolebindings", None);
    if cluster.iter().filter(|b| binds(b, user, None)).any(|b| role_allows(store, b, None, a)) {
        return true;
    }
    let Some(ns) = a.namespace.as_deref() else { return false };
    list(store, "rolebindings", Some(ns)).iter().filter(|b| binds(b, user, Some(ns))).any(|b| role_allows(store, b, Some(ns), a))
}

/// Whether a binding's subjects include the user: by name, as `system:authenticated`, or as
/// the service account a `system:serviceaccount:<ns>:<name>` user name stands for.
fn binds(binding: &Value, user: &str, binding_ns: Option<&str>) -> bool {
    let subjects = binding["subjects"].as_array().map(Vec::as_slice).unwrap_or_default();
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str().unwrap_or_default() {
            "User" => name == user,
            "Group" => name == "system:authenticated"
                || (name == "system:serviceaccounts" && user.starts_with("system:serviceaccount:")),
            "ServiceAccount" => {
                let ns = s["namespace"].as_str().or(binding_ns).unwrap_or_default();
                user == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The rules of the Role or ClusterRole a binding refers to match the request.
fn role_allows(store: &Store, binding: &Value, binding_ns: Option<&str>, a: &Attributes) -> bool {
    let role_ref = &binding["roleRef"];
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match (role_ref["kind"].as_str(), binding_ns) {
        (Some("ClusterRole"), _) => rbac_type(store, "clusterroles").and_then(|rt| store.get(&rt, "", name).ok()),
        (Some("Role"), Some(ns)) => rbac_type(store, "roles").and_then(|rt| store.get(&rt, ns, name).ok()),
        _ => None,
    };
    let rules = role.as_ref().and_then(|r| r["rules"].as_array()).map(Vec::as_slice).unwrap_or_default();
    rules.iter().any(|r| rule_allows(r, a))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// One PolicyRule against the request: verbs, apiGroups, resources (`*`, `resource/sub`,
/// `*/sub`) and resourceNames, as the RBAC authorizer matches them.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let full = a.full_resource();
    let resource_ok = resources.iter().any(|r| {
        *r == "*" || *r == full || a.subresource.as_deref().is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    });
    verbs.iter().any(|v| *v == "*" || *v == a.verb)
        && groups.iter().any(|g| *g == "*" || *g == a.group)
        && resource_ok
        && (names.is_empty() || a.name.as_deref().is_some_and(|n| names.contains(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, resource: &str, sub: Option<&str>, name: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: sub.map(String::from),
            name: name.map(String::from),
            namespace: Some("stowage".into()),
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let proxy = json!({"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["stowage"], "verbs": ["get"]});
        assert!(rule_allows(&proxy, &attrs("get", "services", Some("proxy"), Some("stowage"))));
        assert!(!rule_allows(&proxy, &attrs("create", "services", Some("proxy"), Some("stowage"))));
        assert!(!rule_allows(&proxy, &attrs("get", "services", Some("proxy"), Some("other"))));
        assert!(!rule_allows(&proxy, &attrs("get", "services", None, Some("stowage"))));
        let all = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(&all, &attrs("delete", "pods", Some("exec"), None)));
        let any_status = json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]});
        assert!(rule_allows(&any_status, &attrs("get", "pods", Some("status"), Some("p"))));
        assert!(!rule_allows(&any_status, &attrs("get", "pods", None, Some("p"))));
        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["list"]});
        assert!(!rule_allows(&named, &attrs("list", "configmaps", None, None)), "resourceNames never match a list");
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        assert_eq!(verb("GET", true, false), "get");
        assert_eq!(verb("GET", false, false), "list");
        assert_eq!(verb("GET", false, true), "watch");
        assert_eq!(verb("DELETE", false, false), "deletecollection");
        assert_eq!(verb("POST", true, false), "create");
    }

    #[test]
    fn forbidden_messages_read_like_the_api_servers() {
        let a = attrs("get", "services", Some("proxy"), Some("stowage"));
        assert_eq!(
            forbidden_message("alice", &a),
            r#"services "stowage" is forbidden: User "alice" cannot get resource "services/proxy" in API group "" in the namespace "stowage""#
        );
        let a = Attributes { group: "stowage.io".into(), namespace: None, ..attrs("list", "backups", None, None) };
        assert_eq!(
            forbidden_message("bob", &a),
            r#"backups.stowage.io is forbidden: User "bob" cannot list resource "backups" in API group "stowage.io" at the cluster scope"#
        );
    }

    #[test]
    fn tokens_name_admin_users_or_nobody() {
        let mut config = SimConfig::new("/nonexistent");
        config.users.push(("t-alice".into(), "alice".into()));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            authenticate(&config, &h)
        };
        assert_eq!(authenticate(&config, &HeaderMap::new()).unwrap(), Identity::Admin);
        assert_eq!(with("Bearer kube-sim").unwrap(), Identity::Admin);
        assert_eq!(with("Bearer t-alice").unwrap(), Identity::User("alice".into()));
        assert!(matches!(with("Bearer nope"), Err(ApiError::Unauthorized(_))));
        assert!(matches!(with("Basic YTpi"), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn the_admin_impersonates_anyone_and_users_themselves() {
        let store = Store::new();
        let headers = |user: &str| {
            let mut h = HeaderMap::new();
            h.insert("impersonate-user", user.parse().unwrap());
            h
        };
        assert_eq!(impersonate(&store, Identity::Admin, &HeaderMap::new()).unwrap(), Identity::Admin);
        assert_eq!(impersonate(&store, Identity::Admin, &headers("bob")).unwrap(), Identity::User("bob".into()));
        let alice = Identity::User("alice".into());
        assert_eq!(impersonate(&store, alice.clone(), &headers("alice")).unwrap(), alice);
        let err = impersonate(&store, alice, &headers("bob")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
    }
}

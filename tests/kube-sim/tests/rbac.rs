//! Configured users are authorized by the Roles, ClusterRoles and bindings stored in the
//! simulator, through a real kube-rs client: what a binding grants works, everything else is
//! 403 with the API server's message.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde_json::{json, Value};

const CAROL: &str = "carol-token";
const DAVE: &str = "dave-token";
const ERIN: &str = "erin-token";

fn download_requests() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("stowage.io", "v1alpha1", "DownloadRequest"), "downloadrequests")
}

async fn create(client: &Client, ar: &ApiResource, obj: Value) {
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
}

fn rbac(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind), plural)
}

fn subject(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

/// carol reads configmaps and downloadrequests in `team` (a Role); dave edits configmaps in
/// `team` (a RoleBinding to a ClusterRole); erin lists namespaces (a ClusterRoleBinding); every
/// authenticated user lists configmaps in `public` (the `system:authenticated` group).
async fn start() -> (KubeSim, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig { run_controllers: false, ..SimConfig::new(dir.path().join("kubelet")) }
        .with_user(CAROL, "carol")
        .with_user(DAVE, "dave")
        .with_user(ERIN, "erin");
    let sim = KubeSim::start(config).await.unwrap();
    let admin = sim.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(admin.clone());
    for ns in ["team", "other", "public"] {
        nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap()).await.unwrap();
        Api::<ConfigMap>::namespaced(admin.clone(), ns).create(&PostParams::default(), &cm("a")).await.unwrap();
    }
    let crds = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    create(&admin, &crds, json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "downloadrequests.stowage.io"},
        "spec": {"group": "stowage.io", "scope": "Namespaced",
            "names": {"plural": "downloadrequests", "singular": "downloadrequest", "kind": "DownloadRequest"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).await;
    for ns in ["team", "other"] {
        create(&admin, &download_requests(), json!({"apiVersion": "stowage.io/v1alpha1", "kind": "DownloadRequest",
            "metadata": {"name": "d1", "namespace": ns}, "spec": {"backup": "b"}})).await;
    }

    create(&admin, &rbac("Role", "roles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader", "namespace": "team"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["stowage.io"], "resources": ["downloadrequests"], "verbs": ["get", "list"]},
        ]})).await;
    create(&admin, &rbac("RoleBinding", "rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "carol-reads", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [subject("User", "carol")]})).await;

    create(&admin, &rbac("ClusterRole", "clusterroles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "configmap-editor"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]})).await;
    create(&admin, &rbac("RoleBinding", "rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dave-edits", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-editor"},
        "subjects": [subject("User", "dave")]})).await;

    create(&admin, &rbac("ClusterRole", "clusterroles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "namespace-lister"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]})).await;
    create(&admin, &rbac("ClusterRoleBinding", "clusterrolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": "erin-lists-namespaces"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-lister"},
        "subjects": [subject("User", "erin")]})).await;

    create(&admin, &rbac("RoleBinding", "rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "everyone-reads", "namespace": "public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-editor"},
        "subjects": [subject("Group", "system:authenticated")]})).await;
    (sim, admin, dir)
}

/// The 403 message of a refused call.
fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => s.message,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn a_role_grants_reading_in_its_namespace_only() {
    let (sim, _admin, _dir) = start().await;
    let carol = sim.client_for(CAROL).await.unwrap();
    let team: Api<ConfigMap> = Api::namespaced(carol.clone(), "team");
    assert_eq!(team.get("a").await.unwrap().data.unwrap()["k"], "v");
    assert_eq!(team.list(&ListParams::default()).await.unwrap().items.len(), 1);

    assert_eq!(
        forbidden(team.create(&PostParams::default(), &cm("b")).await),
        r#"configmaps is forbidden: User "carol" cannot create resource "configmaps" in API group "" in the namespace "team""#
    );
    assert_eq!(
        forbidden(team.delete("a", &DeleteParams::default()).await),
        r#"configmaps "a" is forbidden: User "carol" cannot delete resource "configmaps" in API group "" in the namespace "team""#
    );
    let msg = forbidden(team.delete_collection(&DeleteParams::default(), &ListParams::default()).await);
    assert!(msg.contains("cannot deletecollection resource"), "{msg}");
    let other: Api<ConfigMap> = Api::namespaced(carol.clone(), "other");
    assert_eq!(
        forbidden(other.get("a").await),
        r#"configmaps "a" is forbidden: User "carol" cannot get resource "configmaps" in API group "" in the namespace "other""#
    );
    assert_eq!(
        forbidden(Api::<ConfigMap>::all(carol.clone()).list(&ListParams::default()).await),
        r#"configmaps is forbidden: User "carol" cannot list resource "configmaps" in API group "" at the cluster scope"#
    );

    // A custom resource, by its API group.
    let drs: Api<DynamicObject> = Api::namespaced_with(carol.clone(), "team", &download_requests());
    assert_eq!(drs.get("d1").await.unwrap().data["spec"]["backup"], "b");
    assert_eq!(drs.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let d2 = DynamicObject::new("d2", &download_requests()).data(json!({"spec": {"backup": "b"}}));
    assert_eq!(
        forbidden(drs.create(&PostParams::default(), &d2).await),
        r#"downloadrequests.stowage.io is forbidden: User "carol" cannot create resource "downloadrequests" in API group "stowage.io" in the namespace "team""#
    );
    let msg = forbidden(Api::<DynamicObject>::namespaced_with(carol.clone(), "other", &download_requests()).get("d1").await);
    assert!(msg.contains(r#"in the namespace "other""#), "{msg}");
}

#[tokio::test]
async fn watches_need_the_watch_verb() {
    let (sim, admin, _dir) = start().await;
    let carol = sim.client_for(CAROL).await.unwrap();
    let team: Api<ConfigMap> = Api::namespaced(carol.clone(), "team");
    let mut events = team.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    Api::<ConfigMap>::namespaced(admin.clone(), "team").create(&PostParams::default(), &cm("new")).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.try_next().await.unwrap() {
            if let WatchEvent::Added(c) = ev {
                if c.metadata.name.as_deref() == Some("new") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen);
    let drs: Api<DynamicObject> = Api::namespaced_with(carol, "team", &download_requests());
    let msg = forbidden(drs.watch(&WatchParams::default(), "0").await.map(|_| ()));
    assert!(msg.contains(r#"cannot watch resource "downloadrequests""#), "{msg}");
}

#[tokio::test]
async fn cluster_roles_through_role_and_cluster_role_bindings_and_groups() {
    let (sim, _admin, _dir) = start().await;
    let dave = sim.client_for(DAVE).await.unwrap();
    let team: Api<ConfigMap> = Api::namespaced(dave.clone(), "team");
    team.create(&PostParams::default(), &cm("b")).await.unwrap();
    team.delete("b", &DeleteParams::default()).await.unwrap();
    // A RoleBinding grants a ClusterRole's rules in its own namespace only.
    forbidden(Api::<ConfigMap>::namespaced(dave.clone(), "other").create(&PostParams::default(), &cm("b")).await);
    forbidden(Api::<Namespace>::all(dave.clone()).list(&ListParams::default()).await);

    let erin = sim.client_for(ERIN).await.unwrap();
    let names: Vec<String> = Api::<Namespace>::all(erin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"team".to_string()), "{names:?}");
    let msg = forbidden(Api::<Namespace>::all(erin.clone()).get("team").await);
    assert_eq!(msg, r#"namespaces "team" is forbidden: User "erin" cannot get resource "namespaces" in API group "" in the namespace "team""#);
    forbidden(Api::<ConfigMap>::namespaced(erin.clone(), "team").list(&ListParams::default()).await);

    // system:authenticated: every configured user.
    for client in [&dave, &erin] {
        let public: Api<ConfigMap> = Api::namespaced(client.clone(), "public");
        assert_eq!(public.list(&ListParams::default()).await.unwrap().items.len(), 1);
    }

    // The admin still does everything.
    let admin = sim.client().await.unwrap();
    Api::<ConfigMap>::namespaced(admin, "other").delete("a", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn an_unknown_token_is_unauthorized() {
    let (sim, _admin, _dir) = start().await;
    let stranger = sim.client_for("not-a-user").await.unwrap();
    match Api::<ConfigMap>::namespaced(stranger, "public").list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (401, "Unauthorized", "Unauthorized")),
        other => panic!("expected 401, got {other:?}"),
    }
}

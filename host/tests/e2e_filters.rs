//! Backup filters through the real server: each one shown to take what it selects and leave
//! out what it does not, read from the resource list uploaded with each backup.

mod e2e;

use e2e::apps::{config_map, static_volume};
use e2e::{Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams};
use serde_json::{json, Value};
use stowage_api::Backup;

/// Namespaces `app-a` (the subject), `app-b` and `other`, and cluster-scoped objects that only
/// some backups should take.
async fn populate(env: &Env) {
    for ns in ["app-a", "app-b", "other"] {
        env.create_namespace(ns).await;
    }
    for (name, labels) in [
        ("cm-web", json!({"app": "web"})),
        ("cm-db", json!({"app": "db"})),
        ("cm-cache", json!({"app": "cache"})),
        ("cm-skip", json!({"app": "web", "stowage.io/exclude-from-backup": "true"})),
        ("cm-velero-skip", json!({"app": "web", "velero.io/exclude-from-backup": "true"})),
        ("cm-not-skipped", json!({"app": "other", "stowage.io/exclude-from-backup": "false"})),
    ] {
        env.create_in::<ConfigMap>("app-a", config_map(name, labels)).await;
    }
    env.create_in::<Secret>("app-a", json!({"metadata": {"name": "web-tls", "labels": {"app": "web"}},
        "stringData": {"key": "k"}})).await;
    env.create_in::<Service>("app-a", json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    env.create_in::<Deployment>("app-a", json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "web", "image": "nginx:1.17.6"}]}}}})).await;
    static_volume(env, "app-a", "pv-app-a", "data").await;
    env.create_in::<ConfigMap>("app-b", config_map("cm-b", json!({"app": "web"}))).await;
    env.create_in::<ConfigMap>("other", config_map("cm-other", json!({"app": "web"}))).await;
    env.create_cluster::<StorageClass>(json!({"metadata": {"name": "fast"}, "provisioner": "example.com/none"})).await;
    env.create_cluster::<ClusterRole>(json!({"metadata": {"name": "app-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})).await;
}

/// A backup's resource list, checked for what must and must not be in it.
struct Listed {
    backup: &'static str,
    list: Value,
}

impl Listed {
    fn entries(&self, key: &str) -> Vec<String> {
        self.list[key].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default()
    }

    fn has(&self, key: &str, entry: &str) -> &Self {
        assert!(self.entries(key).iter().any(|e| e == entry), "backup {}: {key} {entry} missing from {}", self.backup, self.list);
        self
    }

    fn lacks(&self, key: &str, entry: &str) -> &Self {
        let present = self.entries(key).iter().any(|e| e == entry);
        assert!(!present, "backup {}: {key} {entry} should not be in {}", self.backup, self.list);
        self
    }

    fn lacks_kind(&self, key: &str) -> &Self {
        assert!(self.entries(key).is_empty(), "backup {}: no {key} expected in {}", self.backup, self.list);
        self
    }
}

const CM: &str = "v1/ConfigMap";
const PV: &str = "v1/PersistentVolume";
const SC: &str = "storage.k8s.io/v1/StorageClass";
const CR: &str = "rbac.authorization.k8s.io/v1/ClusterRole";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_takes_what_it_selects_and_leaves_out_the_rest() {
    let mut env = Env::start().await;
    populate(&env).await;
    env.start_server();

    let app_a = || json!(["app-a"]);
    let backups: Vec<(&'static str, Value)> = vec![
        ("everything", json!({})),
        ("ns-globs", json!({"includedNamespaces": ["app-*"], "excludedNamespaces": ["app-b"]})),
        ("res-included", json!({"includedNamespaces": app_a(),
            "includedResources": ["cm", "Secret", "deployments.apps", "persistentvolumeclaims"]})),
        ("res-excluded", json!({"includedNamespaces": app_a(),
            "excludedResources": ["configmaps", "secret", "rs", "Pod", "persistentvolumes"]})),
        ("label-selector", json!({"includedNamespaces": app_a(), "labelSelector": {"matchLabels": {"app": "web"}}})),
        ("or-label-selectors", json!({"includedNamespaces": app_a(), "orLabelSelectors": [
            {"matchLabels": {"app": "web"}},
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}]})),
        ("cluster-auto", json!({"includedNamespaces": app_a()})),
        ("cluster-true", json!({"includedNamespaces": app_a(), "includeClusterResources": true})),
        ("cluster-false", json!({"includedNamespaces": app_a(), "includeClusterResources": false})),
    ];
    for (name, spec) in &backups {
        env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec})).await;
    }
    let mut lists = std::collections::BTreeMap::new();
    for (name, _) in &backups {
        let status = env.wait_finished::<Backup>(name).await;
        assert_eq!(status["phase"], "Completed", "backup {name}: {status}\nserver log:\n{}", env.server_log());
        lists.insert(*name, Listed { backup: name, list: env.resource_list(name).await });
    }

    // A whole-cluster backup: every namespace and cluster-scoped object, but never events,
    // nodes or Stowage's own operations; the exclude label under either spelling is honoured.
    lists["everything"]
        .has(CM, "app-a/cm-web").has(CM, "app-b/cm-b").has(CM, "other/cm-other")
        .has(SC, "fast").has(CR, "app-reader").has(PV, "pv-app-a")
        .has("stowage.io/v1alpha1/BackupStorageLocation", "stowage/default")
        .lacks(CM, "app-a/cm-skip").lacks(CM, "app-a/cm-velero-skip").has(CM, "app-a/cm-not-skipped")
        .lacks_kind("v1/Node").lacks_kind("v1/Event").lacks_kind("events.k8s.io/v1/Event")
        .lacks_kind("stowage.io/v1alpha1/Backup").lacks_kind("stowage.io/v1alpha1/Restore");

    // Namespace globs: app-* minus app-b.
    lists["ns-globs"]
        .has(CM, "app-a/cm-web").has("v1/Namespace", "app-a")
        .lacks(CM, "app-b/cm-b").lacks("v1/Namespace", "app-b")
        .lacks(CM, "other/cm-other").lacks("v1/Namespace", "other")
        .lacks(CM, "app-a/cm-skip").lacks(CM, "app-a/cm-velero-skip");

    // Resources named by short name, kind, resource.group and plural.
    lists["res-included"]
        .has(CM, "app-a/cm-web").has("v1/Secret", "app-a/web-tls").has("apps/v1/Deployment", "app-a/web")
        .has("v1/PersistentVolumeClaim", "app-a/data")
        .lacks_kind("v1/Service").lacks_kind("apps/v1/ReplicaSet").lacks_kind("v1/Pod")
        .lacks_kind(PV).lacks(CM, "app-b/cm-b");
    lists["res-excluded"]
        .has("v1/Service", "app-a/web").has("apps/v1/Deployment", "app-a/web")
        .has("v1/PersistentVolumeClaim", "app-a/data")
        .lacks_kind(CM).lacks_kind("v1/Secret").lacks_kind("apps/v1/ReplicaSet").lacks_kind("v1/Pod").lacks_kind(PV);

    // Label selectors: one selector, or any of several. Related objects (the claim's volume)
    // are not subject to them, but the claim itself is.
    lists["label-selector"]
        .has(CM, "app-a/cm-web").has("v1/Secret", "app-a/web-tls").has("apps/v1/Deployment", "app-a/web")
        .lacks(CM, "app-a/cm-db").lacks(CM, "app-a/cm-cache").lacks(CM, "app-a/cm-skip")
        .lacks_kind("v1/PersistentVolumeClaim");
    lists["or-label-selectors"]
        .has(CM, "app-a/cm-web").has(CM, "app-a/cm-db")
        .lacks(CM, "app-a/cm-cache").lacks(CM, "app-a/cm-not-skipped");

    // Cluster-scoped objects: auto takes the claim's volume only; true takes them all; false none.
    lists["cluster-auto"]
        .has(PV, "pv-app-a").has("v1/PersistentVolumeClaim", "app-a/data").has("v1/Namespace", "app-a")
        .lacks_kind(SC).lacks_kind(CR).lacks(CM, "app-b/cm-b");
    lists["cluster-true"]
        .has(PV, "pv-app-a").has(SC, "fast").has(CR, "app-reader")
        .lacks(CM, "app-b/cm-b").lacks("v1/Namespace", "app-b");
    lists["cluster-false"]
        .has("v1/PersistentVolumeClaim", "app-a/data").has(CM, "app-a/cm-web")
        .lacks_kind(PV).lacks_kind(SC).lacks_kind(CR);

    // The same filters on a restore: from the whole-cluster backup, after a disaster, only
    // app-* minus app-b, only what is labelled app=web.
    for ns in ["app-a", "app-b", "other"] {
        env.delete_namespace_and_wait(ns).await;
    }
    Api::<ClusterRole>::all(env.client.clone()).delete("app-reader", &DeleteParams::default()).await.unwrap();
    Api::<StorageClass>::all(env.client.clone()).delete("fast", &DeleteParams::default()).await.unwrap();
    let status = env.restore("selective", json!({"backupName": "everything", "includedNamespaces": ["app-*"],
        "excludedNamespaces": ["app-b"], "labelSelector": {"matchLabels": {"app": "web"}}})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(env.get_in::<ConfigMap>("app-a", "cm-web").await.is_some());
    assert!(env.get_in::<Secret>("app-a", "web-tls").await.is_some());
    assert!(env.get_in::<Deployment>("app-a", "web").await.is_some());
    assert!(env.get_in::<ConfigMap>("app-a", "cm-db").await.is_none(), "labelSelector leaves app=db out");
    assert!(env.get_in::<ConfigMap>("app-a", "cm-not-skipped").await.is_none());
    assert!(env.get_cluster::<Namespace>("app-b").await.is_none(), "excludedNamespaces leaves app-b out");
    assert!(env.get_cluster::<Namespace>("other").await.is_none(), "includedNamespaces leaves other out");
    assert!(env.get_cluster::<ClusterRole>("app-reader").await.is_none(),
        "with namespaces selected and includeClusterResources unset, unrelated cluster-scoped objects stay out");
    assert!(env.get_cluster::<StorageClass>("fast").await.is_none());

    // Asked for, they come back.
    let status = env.restore("cluster-scoped", json!({"backupName": "everything", "includedNamespaces": ["app-a"],
        "includeClusterResources": true, "includedResources": ["clusterroles", "storageclasses"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(env.get_cluster::<ClusterRole>("app-reader").await.is_some());
    assert!(env.get_cluster::<StorageClass>("fast").await.is_some());
}

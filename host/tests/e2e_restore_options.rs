//! Restore options through the real server: what happens to objects that already exist
//! (existingResourcePolicy none and update), restore filters, and namespace mapping.

mod e2e;

use e2e::apps::{config_map, deploy_nginx, nginx_snapshot, static_volume, NGINX};
use e2e::{wait_for, Env};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{json, Value};

async fn restore_log(env: &Env, restore: &str) -> String {
    env.read_zstd_text(&format!("restores/{restore}/{restore}-logs.zst")).await
}

/// Every warning a restore's uploaded results hold, whatever namespace they are keyed by.
async fn restore_warnings(env: &Env, restore: &str) -> Vec<String> {
    let results = env.read_zstd_json(&format!("restores/{restore}/{restore}-results.json.zst")).await;
    let Some(by_ns) = results["warnings"].as_object() else { return vec![] };
    by_ns.values().flat_map(|v| v.as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_objects_are_left_alone_with_a_warning_or_updated() {
    let mut env = Env::start().await;
    env.create_namespace("shop").await;
    env.create_in::<ConfigMap>("shop", json!({"metadata": {"name": "settings", "labels": {"app": "shop"}},
        "data": {"mode": "prod", "replicas": "3"}})).await;
    env.create_in::<ConfigMap>("shop", config_map("extra", json!({"app": "shop"}))).await;
    env.create_in::<Secret>("shop", json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}})).await;
    env.start_server();
    let status = env.backup("shop", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());

    // Someone changes the live settings and deletes the rest.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "shop");
    cms.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": "debug"}}))).await.unwrap();
    cms.delete("extra", &DeleteParams::default()).await.unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "shop").delete("creds", &DeleteParams::default()).await.unwrap();
    let settings = || async { env.get_in::<ConfigMap>("shop", "settings").await.unwrap()["data"].clone() };

    // Policy none (the default), configmaps only: the changed object stays as it is and the
    // restore says so; the deleted configmap comes back; the secret is filtered out.
    let status = env.restore("none", json!({"backupName": "shop", "includedResources": ["configmaps"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(settings().await, json!({"mode": "debug", "replicas": "3"}), "policy none must not touch the live object");
    assert!(status["warnings"].as_u64().unwrap_or(0) >= 1, "a warning is reported: {status}");
    let warnings = restore_warnings(&env, "none").await;
    let about_settings: Vec<_> = warnings.iter().filter(|w| w.contains("configmaps shop/settings")).collect();
    assert_eq!(about_settings.len(), 1, "one warning names the object: {warnings:?}");
    assert!(about_settings[0].contains("existingResourcePolicy: update"), "and says what to do: {about_settings:?}");
    let log = restore_log(&env, "none").await;
    assert!(log.contains("configmaps shop/settings"), "`stowage restore logs` shows the warning too:\n{log}");
    assert!(env.get_in::<ConfigMap>("shop", "extra").await.is_some(), "a deleted configmap comes back");
    assert!(env.get_in::<Secret>("shop", "creds").await.is_none(), "includedResources leaves secrets out");

    // Policy update: the live object is patched back to the backed-up content.
    let status = env.restore("update", json!({"backupName": "shop", "existingResourcePolicy": "update"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(settings().await, json!({"mode": "prod", "replicas": "3"}));
    let secret = env.get_in::<Secret>("shop", "creds").await.expect("the secret comes back without a filter");
    assert_eq!(secret["data"]["password"], json!("czNjcmV0"));
    let labels = env.get_in::<ConfigMap>("shop", "settings").await.unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels["stowage.io/restore-name"], "update", "{labels}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_mapping_restores_into_another_namespace_with_its_volume() {
    let mut env = Env::start().await;
    deploy_nginx(&env, NGINX).await;
    static_volume(&env, NGINX, "nginx-static-pv", "static-claim").await;
    let original = nginx_snapshot(&env, NGINX).await;
    env.start_server();
    let status = env.backup("nginx-backup", json!({"includedNamespaces": [NGINX]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let list = env.resource_list("nginx-backup").await;
    assert!(list["v1/PersistentVolume"].as_array().unwrap().contains(&json!("nginx-static-pv")), "{list}");

    // The app and its retained volume are gone; it comes back under another name.
    env.delete_namespace_and_wait(NGINX).await;
    Api::<PersistentVolume>::all(env.client.clone()).delete("nginx-static-pv", &DeleteParams::default()).await.unwrap();
    wait_for("the volume to be deleted", 30, || async {
        env.get_cluster::<PersistentVolume>("nginx-static-pv").await.is_none().then_some(())
    })
    .await;

    let status = env.restore("nginx-copy", json!({"backupName": "nginx-backup",
        "namespaceMapping": {NGINX: "nginx-copy"}})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(nginx_snapshot(&env, "nginx-copy").await, original, "the app lands in nginx-copy unchanged");
    assert!(env.get_cluster::<Namespace>(NGINX).await.is_none(), "the source namespace is not recreated");

    let pv = env.get_cluster::<PersistentVolume>("nginx-static-pv").await.expect("the retained volume is restored");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "nginx-copy", "{}", pv["spec"]);
    assert_eq!(pv["spec"]["claimRef"]["name"], "static-claim");
    wait_for("the mapped claim to bind to its restored volume", 30, || async {
        let c: Value = env.get_in::<PersistentVolumeClaim>("nginx-copy", "static-claim").await?;
        (c["status"]["phase"] == "Bound" && c["spec"]["volumeName"] == "nginx-static-pv").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_over_the_servers_extraction_limits_restores_nothing() {
    let mut env = Env::start().await;
    // Every archive holds metadata/version and a directory or two besides its items.
    env.start_server_with(&["--archive-max-entries", "12"]);
    let ns = "limits";
    env.create_namespace(ns).await;
    for i in 0..20 {
        env.create_in::<ConfigMap>(ns, json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}})).await;
    }
    let backup = env.backup("many", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(backup["phase"], "Completed", "{backup}");
    env.delete_namespace_and_wait(ns).await;
    let restore = env.restore("too-many", json!({"backupName": "many"})).await;
    assert_eq!(restore["phase"], "Failed", "{restore}");
    let reason = restore["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("has more than 12 entries") && reason.contains("--archive-max-entries"), "{restore}");
    assert!(env.get_cluster::<Namespace>(ns).await.is_none(), "nothing was created: not even the namespace");
}

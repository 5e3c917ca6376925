//! Restore options through the real server: what happens to objects that already exist
//! (existingResourcePolicy none and update), restore filters, and namespace mapping.

mod e2e;

use e2e::apps::{config_map, deploy_nginx, nginx_snapshot, static_volume, NGINX};
use e2e::{wait_for, Env};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
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

/// Velero's documented change-storage-class ConfigMap, as users have it (namespace aside).
const VELERO_CHANGE_STORAGE_CLASS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  # any name can be used; Velero uses the labels (below)
  # to identify it rather than the name
  name: change-storage-class-config
  # must be in the velero namespace
  namespace: velero
  # the below labels should be used verbatim in your
  # ConfigMap.
  labels:
    # this value-less label identifies the ConfigMap as
    # config for a plugin (i.e. the built-in restore item action plugin)
    velero.io/plugin-config: ""
    # this label identifies the name and kind of plugin
    # that this ConfigMap is for.
    velero.io/change-storage-class: RestoreItemAction
data:
  # add 1+ key-value pairs here, where the key is the old
  # storage class name and the value is the new storage
  # class name.
  standard: fast-ssd
"#;

/// Velero's documented change-image-name ConfigMap.
const VELERO_CHANGE_IMAGE_NAME: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  # any name can be used; Velero uses the labels (below)
  # to identify it rather than the name
  name: change-image-name-config
  # must be in the velero namespace
  namespace: velero
  # the below labels should be used verbatim in your
  # ConfigMap.
  labels:
    # this value-less label identifies the ConfigMap as
    # config for a plugin (i.e. the built-in restore item action plugin)
    velero.io/plugin-config: ""
    # this label identifies the name and kind of plugin
    # that this ConfigMap is for.
    velero.io/change-image-name: RestoreItemAction
data:
  # add 1+ key-value pairs here, where the key can be any
  # words that ConfigMap accepts.
  # the value should be:
  # "<old_image_name_sub_part><delimiter><new_image_name_sub_part>"
  # for current implementation the <delimiter> can only be ","
  # e.x: in case your old image name is 1.1.1.1:5000/abc:test
  "case1": "1.1.1.1:5000,2.2.2.2:3000"
  "case2": "5000,3000"
  "case3": "abc:test,edf:test"
  "case5": "test,latest"
  "case4": "1.1.1.1:5000/abc:test,2.2.2.2:3000/edf:test"
"#;

/// A documentation ConfigMap moved into the server's namespace, optionally under Stowage's label.
async fn apply_docs_config_map(env: &Env, text: &str, label_prefix: &str) {
    let mut cm: Value = serde_yaml::from_str(text).unwrap();
    cm["metadata"]["namespace"] = json!(e2e::NS);
    if label_prefix != "velero.io" {
        let labels = cm["metadata"]["labels"].as_object_mut().unwrap();
        let renamed: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.replacen("velero.io", label_prefix, 1), v.clone())).collect();
        *labels = renamed;
    }
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), e2e::NS);
    api.create(&Default::default(), &serde_json::from_value(cm).unwrap()).await.unwrap();
}

async fn class_and_image_app(env: &Env, ns: &str) {
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "standard",
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).await;
    env.create_in::<Deployment>(ns, json!({"metadata": {"name": "web"}, "spec": {"replicas": 0,
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "1.1.1.1:5000/abc:test"}]}}}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_change_storage_class_and_image_name_config_maps_work_unchanged_without_an_extension() {
    for (prefix, ns) in [("velero.io", "shop"), ("stowage.io", "shop-2")] {
        let mut env = Env::start().await;
        class_and_image_app(&env, ns).await;
        env.create_cluster::<StorageClass>(json!({"metadata": {"name": "fast-ssd"}, "provisioner": "example.com/ssd"})).await;
        env.start_server();
        let status = env.backup("app", json!({"includedNamespaces": [ns]})).await;
        assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
        env.delete_namespace_and_wait(ns).await;

        apply_docs_config_map(&env, VELERO_CHANGE_STORAGE_CLASS, prefix).await;
        apply_docs_config_map(&env, VELERO_CHANGE_IMAGE_NAME, prefix).await;
        let status = env.restore("app", json!({"backupName": "app"})).await;
        assert_eq!(status["phase"], "Completed", "{prefix}: {status}\n{}", env.server_log());
        assert_eq!(status["warnings"].as_u64().unwrap_or(0), 0, "{prefix}: the class exists, nothing to warn about: {status}");
        let pvc = env.get_in::<PersistentVolumeClaim>(ns, "data").await.unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd", "{prefix}: {pvc}");
        let web = env.get_in::<Deployment>(ns, "web").await.unwrap();
        // case1 is the first entry, in key order, whose old part the image holds.
        assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], "2.2.2.2:3000/abc:test", "{prefix}: {web}");
        let log = restore_log(&env, "app").await;
        assert!(log.contains("storageClassName standard -> fast-ssd"), "{prefix}: the log says what changed:\n{log}");
        assert!(log.contains("change-image-name change-image-name-config/case1"), "{prefix}: and which entry:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_change_image_name_config_map_fails_validation_and_restores_nothing() {
    let mut env = Env::start().await;
    class_and_image_app(&env, "shop").await;
    env.start_server();
    let status = env.backup("app", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    env.delete_namespace_and_wait("shop").await;
    let bad = VELERO_CHANGE_IMAGE_NAME.replace(r#""case2": "5000,3000""#, r#""case2": "5000 to 3000""#);
    apply_docs_config_map(&env, &bad, "velero.io").await;
    apply_docs_config_map(&env, VELERO_CHANGE_STORAGE_CLASS, "velero.io").await;
    let status = env.restore("app", json!({"backupName": "app"})).await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    let errors = status["validationErrors"].to_string();
    assert!(errors.contains("case2") && errors.contains("<old part>,<new part>"), "{errors}");
    assert!(env.get_cluster::<Namespace>("shop").await.is_none(), "nothing restored");

    // Fixed, the same restore request goes through; the missing class is a warning in the log.
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), e2e::NS);
    api.delete("change-image-name-config", &DeleteParams::default()).await.unwrap();
    let status = env.restore("again", json!({"backupName": "app"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let log = restore_log(&env, "again").await;
    assert!(log.lines().any(|l| l.contains("fast-ssd") && l.contains("which this cluster does not have")), "{log}");
}

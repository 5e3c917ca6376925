//! Extensions end to end: the shipped extensions applied as ConfigMaps (a WASM component and two
//! Rhai scripts), a backup and a restore by the real `stowage server` showing each one's effect,
//! provenance in the statuses and the bucket, and a hot reload without a restart.

mod e2e;

use std::path::PathBuf;

use e2e::{wait_for, Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn extensions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../extensions")
}

/// A shipped extension's ConfigMap with its module filled in (what extensions/install.sh does).
fn shipped(name: &str) -> Value {
    let dir = extensions_dir().join(name);
    let mut cm: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("configmap.yaml")).unwrap()).unwrap();
    let script = dir.join("script.rhai");
    if script.is_file() {
        cm["data"]["script.rhai"] = Value::String(std::fs::read_to_string(script).unwrap());
    } else {
        let wasm = extensions_dir().join("dist").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&wasm).unwrap_or_else(|_| panic!("{} is missing: build the extensions first: bash extensions/build.sh", wasm.display()));
        use base64::Engine;
        cm["binaryData"] = json!({"extension.wasm": base64::engine::general_purpose::STANDARD.encode(bytes)});
    }
    cm
}

async fn apply_config_map(env: &Env, cm: &Value) {
    let ns = cm["metadata"]["namespace"].as_str().unwrap_or(NS).to_string();
    let name = cm["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    api.patch(&name, &PatchParams::apply("stowage-e2e").force(), &Patch::Apply(cm)).await.unwrap();
}

/// Waits until the server recorded the extension as Active; returns its digest.
async fn active_digest(env: &Env, name: &str, not: Option<&str>) -> String {
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    wait_for(&format!("extension {name} to be Active"), 30, || async {
        let cm = api.get(name).await.ok()?;
        let a = cm.metadata.annotations?;
        let digest = a.get("stowage.io/extension-digest")?.clone();
        (a.get("stowage.io/extension-state")? == "Active" && Some(digest.as_str()) != not).then_some(digest)
    })
    .await
}

fn names(runs: &Value) -> Vec<String> {
    runs.as_array().into_iter().flatten().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipped_extensions_change_filter_and_record_and_reload_without_a_restart() {
    let mut env = Env::start().await;
    env.start_server();
    for name in ["change-storage-class", "change-image-registry", "skip-helm-release-secrets"] {
        apply_config_map(&env, &shipped(name)).await;
    }
    let class_digest = active_digest(&env, "change-storage-class", None).await;
    let registry_digest = active_digest(&env, "change-image-registry", None).await;
    active_digest(&env, "skip-helm-release-secrets", None).await;

    let ns = "ext-app";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "standard",
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).await;
    env.create_in::<Deployment>(ns, json!({"metadata": {"name": "web"}, "spec": {"replicas": 0,
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.27"}]}}}})).await;
    env.create_in::<Secret>(ns, json!({"metadata": {"name": "sh.helm.release.v1.web.v1"}, "type": "helm.sh/release.v1",
        "data": {"release": "SDRzSQ=="}})).await;
    env.create_in::<Secret>(ns, json!({"metadata": {"name": "app-token"}, "data": {"token": "c2VjcmV0"}})).await;

    let status = env.backup("ext-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(names(&status["extensions"]).contains(&"stowage/skip-helm-release-secrets".to_string()), "{status}");
    let list = env.resource_list("ext-backup").await;
    let secrets: Vec<&str> = list["v1/Secret"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(secrets, vec!["ext-app/app-token"], "the Helm release Secret was filtered out");
    let record = env.read_zstd_json("backups/ext-backup/ext-backup-extensions.json.zst").await;
    assert!(record.to_string().contains("sh.helm.release.v1.web.v1"), "the record names what was filtered: {record}");

    env.delete_namespace_and_wait(ns).await;
    // change-image-registry is opt-in: this restore names it.
    let status = env.restore("ext-restore", json!({"backupName": "ext-backup", "extensions": ["change-image-registry"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let runs = &status["extensions"];
    let run = |n: &str| runs.as_array().unwrap().iter().find(|r| r["name"] == n).cloned().unwrap_or_else(|| panic!("{n} in {runs}"));
    assert_eq!(run("stowage/change-storage-class")["digest"], class_digest.as_str());
    assert_eq!(run("stowage/change-image-registry")["digest"], registry_digest.as_str());
    assert_eq!(run("stowage/change-storage-class")["scope"], "Cluster");
    let pvc = env.get_in::<PersistentVolumeClaim>(ns, "data").await.unwrap();
    assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd", "{pvc}");
    let deploy = env.get_in::<Deployment>(ns, "web").await.unwrap();
    assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.com/mirror/library/nginx:1.27");
    let record = env.read_zstd_json("restores/ext-restore/ext-restore-extensions.json.zst").await;
    assert!(record.to_string().contains("fast-ssd"), "the record holds the change: {record}");

    // Hot reload: a new version of the script and its parameters, no restart.
    let mut updated = shipped("change-image-registry");
    let script = updated["data"]["script.rhai"].as_str().unwrap().to_string();
    updated["data"]["script.rhai"] = Value::String(format!("// v2\n{script}"));
    updated["data"]["config.yaml"] = Value::String(
        updated["data"]["config.yaml"].as_str().unwrap().replace("registry.example.com/mirror", "mirror.internal:5000"),
    );
    apply_config_map(&env, &updated).await;
    let new_digest = active_digest(&env, "change-image-registry", Some(&registry_digest)).await;
    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("ext-restore-2", json!({"backupName": "ext-backup", "extensions": ["stowage/change-image-registry"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let runs = status["extensions"].as_array().unwrap();
    let registry_run = runs.iter().find(|r| r["name"] == "stowage/change-image-registry").unwrap();
    assert_eq!(registry_run["digest"], new_digest.as_str(), "the next operation runs the new version");
    let deploy = env.get_in::<Deployment>(ns, "web").await.unwrap();
    assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "mirror.internal:5000/library/nginx:1.27");

    // A restore that does not name the opt-in extension keeps the images as backed up.
    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("ext-restore-3", json!({"backupName": "ext-backup"})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let ran = names(&status["extensions"]);
    assert!(ran.contains(&"stowage/change-storage-class".to_string()) && !ran.iter().any(|n| n.ends_with("change-image-registry")), "{ran:?}");
    let deploy = env.get_in::<Deployment>(ns, "web").await.unwrap();
    assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "docker.io/library/nginx:1.27");

    // A broken extension is quarantined, never fatal.
    let mut broken = shipped("skip-helm-release-secrets");
    broken["metadata"]["name"] = json!("broken-filter");
    broken["data"]["config.yaml"] = json!("timeoutSecondz: 3\n");
    apply_config_map(&env, &broken).await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    let error = wait_for("broken-filter to be quarantined", 30, || async {
        let a = api.get("broken-filter").await.ok()?.metadata.annotations?;
        (a.get("stowage.io/extension-state")? == "Quarantined").then(|| a.get("stowage.io/extension-error").cloned()).flatten()
    })
    .await;
    assert!(error.contains("timeoutSecondz"), "{error}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["extension", "list", "-n", NS, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let broken_row = text.lines().find(|l| l.contains("broken-filter")).unwrap_or_else(|| panic!("{text}"));
    assert!(broken_row.contains("Quarantined") && broken_row.contains("timeoutSecondz"), "{text}");
    assert!(text.lines().any(|l| l.contains("change-storage-class") && l.contains("Active") && l.contains("WASM")), "{text}");
    // ... and counted, for the ExtensionQuarantined alert.
    let metrics = env.metrics().await;
    assert!(metrics.lines().any(|l| l == "stowage_extensions_quarantined 1"), "{metrics}");
}

/// An extension that never returns is stopped at its deadline on each item it is given; the
/// backup completes, with warnings naming it, and keeps every item. An application team's
/// extension sees only its own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runaway_extension_is_stopped_and_named_and_a_namespaced_one_stays_home() {
    let mut env = Env::start().await;
    env.start_server();
    let ns = "ext-loop";
    env.create_namespace(ns).await;
    env.create_namespace("team-b").await;
    let runaway = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "runaway", "namespace": NS, "labels": {"stowage.io/extension": "item-action"}},
        "data": {"config.yaml": "appliesTo: {includedResources: [configmaps]}\ntimeoutSeconds: 1\noptIn: true\n",
                 "script.rhai": "fn execute(ctx, item) { let n = 0; loop { n += 1; } }\n"}});
    apply_config_map(&env, &runaway).await;
    active_digest(&env, "runaway", None).await;
    // team-b's filter would drop everything it is shown: it must be shown only team-b's items.
    let greedy = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "greedy", "namespace": "team-b", "labels": {"stowage.io/extension": "item-filter"}},
        "data": {"script.rhai": "fn filter(ctx, item) { \"team-b leaves it out\" }\n"}});
    apply_config_map(&env, &greedy).await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), "team-b");
    wait_for("greedy to be Active", 30, || async {
        let a = api.get("greedy").await.ok()?.metadata.annotations?;
        (a.get("stowage.io/extension-state")? == "Active").then_some(())
    })
    .await;
    for name in ["a", "b"] {
        env.create_in::<ConfigMap>(ns, json!({"metadata": {"name": name}, "data": {"k": "v"}})).await;
    }
    env.create_in::<ConfigMap>("team-b", json!({"metadata": {"name": "mine"}, "data": {"k": "v"}})).await;

    // runaway is opt-in: a backup that does not name it does not run it.
    let status = env.backup("calm-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(status["warnings"].as_u64().unwrap_or(0), 0, "{status}");
    assert!(!names(&status["extensions"]).iter().any(|n| n.ends_with("runaway")), "{status}");
    let status = env.backup("loop-backup", json!({"includedNamespaces": [ns, "team-b"], "extensions": ["runaway"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(status["warnings"].as_u64().unwrap_or(0) >= 2, "{status}");
    let results = env.read_zstd_json("backups/loop-backup/loop-backup-results.json.zst").await;
    let warnings = results["warnings"][ns].to_string();
    // Stopped by its deadline or by its operation limit, whichever comes first.
    let stopped = warnings.contains("timed out after 1s") || warnings.contains("exceeded its limit of");
    assert!(warnings.contains("stowage/runaway") && stopped && !warnings.contains("(none)"), "{results}");
    let list = env.resource_list("loop-backup").await;
    let kept: Vec<&str> = list["v1/ConfigMap"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    assert!(kept.contains(&"ext-loop/a") && kept.contains(&"ext-loop/b"), "the items stay: {kept:?}");
    assert!(!kept.contains(&"team-b/mine"), "team-b's filter acts on its namespace: {kept:?}");
    let record = env.read_zstd_json("backups/loop-backup/loop-backup-extensions.json.zst").await;
    let greedy = record["extensions"].as_array().unwrap().iter().find(|e| e["id"]["name"] == "greedy").cloned();
    let greedy = greedy.unwrap_or_else(|| panic!("greedy ran: {record}"));
    assert!(greedy["items"].as_array().unwrap().iter().all(|i| i["item"]["namespace"] == "team-b"), "{greedy}");

    // A backup that names an extension which is not loaded fails validation, saying which.
    let status = env.backup("needs-missing", json!({"includedNamespaces": [ns], "extensions": ["runaway", "team-b/greedy", "nope"]})).await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    let errors = status["validationErrors"].to_string();
    assert!(errors.contains("no extension stowage/nope is loaded") && !errors.contains("runaway") && !errors.contains("greedy"), "{status}");
}

#[test]
fn extension_test_runs_offline_against_an_item_file() {
    let dir = tempfile::tempdir().unwrap();
    let item = dir.path().join("pvc.json");
    std::fs::write(&item, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop"}, "spec": {"storageClassName": "standard"}}).to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["extension", "test"])
        .arg(extensions_dir().join("change-storage-class/configmap.yaml"))
        .arg("--module")
        .arg(extensions_dir().join("dist/change-storage-class.wasm"))
        .arg("--item")
        .arg(&item)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("changes") && text.contains("fast-ssd") && text.contains("/spec/storageClassName"), "{text}");
}

/// Extensions run on a thread of their own during a backup: a backup of several batches of
/// items with a slow action takes the same items as one without it, plus what the action adds,
/// including the objects named by items still in the extension stage when listing ends (the
/// claim's volume).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_through_the_extension_stage_takes_related_and_added_items() {
    let mut env = Env::start().await;
    env.start_server();
    e2e::apps::deploy_nginx(&env, e2e::apps::NGINX).await;
    // Several batches' worth of items, so that the stage has a queue of them.
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), e2e::apps::NGINX);
    for n in 0..300 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("filler-{n}")}, "data": {"n": n.to_string()}})).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    // Slow on purpose (a few milliseconds an item), so that items are still in the stage when
    // the listing ends.
    let mark = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mark", "namespace": NS, "labels": {"stowage.io/extension": "item-action"}},
        "data": {"config.yaml": "optIn: true\n",
                 "script.rhai": r#"
fn execute(ctx, item) {
    let n = 0;
    for i in 0..30000 { n += i; }
    item.object.metadata.annotations = #{ "e2e/marked": "yes" };
    if item.kind == "ConfigMap" && item.name == "nginx-config" {
        let extra = #{ apiVersion: "v1", kind: "ConfigMap", metadata: #{ name: "nginx-config-extra", namespace: item.namespace },
                       data: #{ k: "v" } };
        let added = #{ group: "", version: "v1", kind: "ConfigMap", namespace: item.namespace, name: "nginx-config-extra",
                       object: extra };
        return #{ item: item, additional_items: [added] };
    }
    item
}
"#}});
    apply_config_map(&env, &mark).await;
    active_digest(&env, "mark", None).await;

    let spec = |extensions: Value| json!({"includedNamespaces": [e2e::apps::NGINX], "extensions": extensions});
    let status = env.backup("without-mark", spec(json!([]))).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let status = env.backup("with-mark", spec(json!(["mark"]))).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(names(&status["extensions"]).contains(&"stowage/mark".to_string()), "{status}");

    let without = env.resource_list("without-mark").await;
    let mut with = env.resource_list("with-mark").await;
    assert!(with["v1/PersistentVolume"].as_array().is_some_and(|pvs| pvs.len() == 1), "the claim's volume comes along: {with}");
    let configmaps = with["v1/ConfigMap"].as_array_mut().unwrap();
    let extra = configmaps.iter().position(|c| c == "nginx-example/nginx-config-extra");
    configmaps.remove(extra.unwrap_or_else(|| panic!("the added item is backed up: {configmaps:?}")));
    assert_eq!(with, without, "the same items with and without the extension stage");
    let record = env.read_zstd_json("backups/with-mark/with-mark-extensions.json.zst").await;
    let mark = record["extensions"].as_array().unwrap().iter().find(|e| e["id"]["name"] == "mark").cloned().unwrap();
    let items: usize = without.as_object().unwrap().values().map(|v| v.as_array().unwrap().len()).sum();
    assert_eq!(mark["counts"]["calls"].as_u64().unwrap() as usize, items + 1, "every item went through it once: {mark}");
}

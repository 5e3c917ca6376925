//! Velero's core job, end to end: the seed's nginx example is backed up to a real S3 server by
//! the real `stowage server`, its namespace is deleted, and a restore brings everything back.

mod e2e;

use std::time::Duration;

use e2e::apps::{deploy_nginx, nginx_snapshot};
use e2e::{wait_for, Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::{json, Value};
use stowage_api::{Backup, Restore};

const APP: &str = e2e::apps::NGINX;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_example_is_backed_up_and_restored_after_its_namespace_is_deleted() {
    let mut env = Env::start().await;
    deploy_nginx(&env, APP).await;
    let original = nginx_snapshot(&env, APP).await;
    env.start_server();

    // The location is checked and marked Available.
    let bsls: Api<stowage_api::BackupStorageLocation> = Api::namespaced(env.client.clone(), NS);
    wait_for("the default location to be Available", 60, || async {
        let l = bsls.get("default").await.ok()?;
        (l.status?.phase? == stowage_api::location::LocationPhase::Available).then_some(())
    })
    .await;

    env.create::<Backup>(json!({"metadata": {"name": "nginx-backup", "namespace": NS},
        "spec": {"includedNamespaces": [APP]}})).await;
    let status = env.wait_finished::<Backup>("nginx-backup").await;
    assert_eq!(status["phase"], "Completed", "backup status: {status}\nserver log:\n{}", env.server_log());
    assert!(status["progress"]["itemsBackedUp"].as_u64().unwrap() >= 6, "{status}");
    assert!(status["expiration"].is_string());
    let stored = Api::<Backup>::namespaced(env.client.clone(), NS).get("nginx-backup").await.unwrap();
    assert_eq!(stored.spec.storage_location.as_deref(), Some("default"), "the default location is recorded on the backup");

    // What a user would find in the bucket.
    let store = env.store();
    use stowage_storage::ObjectStore;
    let keys: Vec<String> = store.list("backups/nginx-backup/").await.unwrap().into_iter().map(|o| o.key).collect();
    for f in ["stowage-backup.json", "nginx-backup.tar.zst", "nginx-backup-logs.zst", "nginx-backup-resource-list.json.zst",
              "nginx-backup-results.json.zst"] {
        assert!(keys.iter().any(|k| k.ends_with(f)), "{f} missing from {keys:?}");
    }
    let list: Value = serde_json::from_slice(&zstd::decode_all(
        &store.get("backups/nginx-backup/nginx-backup-resource-list.json.zst").await.unwrap()[..]).unwrap()).unwrap();
    assert!(list["apps/v1/Deployment"].as_array().unwrap().contains(&json!("nginx-example/nginx-deployment")), "{list}");
    assert!(list["v1/PersistentVolume"].as_array().is_some_and(|pvs| pvs.len() == 1), "the claim's volume comes along: {list}");
    assert!(list["v1/Namespace"].as_array().unwrap().contains(&json!(APP)), "{list}");

    env.delete_namespace_and_wait(APP).await;

    env.create::<Restore>(json!({"metadata": {"name": "nginx-backup-restore", "namespace": NS},
        "spec": {"backupName": "nginx-backup"}})).await;
    let status = env.wait_finished::<Restore>("nginx-backup-restore").await;
    assert_eq!(status["phase"], "Completed", "restore status: {status}\nserver log:\n{}", env.server_log());

    let restored = nginx_snapshot(&env, APP).await;
    assert_eq!(restored, original, "restored objects differ from the originals");
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), APP).get("nginx-config").await.unwrap();
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(labels.get("stowage.io/restore-name").map(String::as_str), Some("nginx-backup-restore"));
    assert_eq!(labels.get("stowage.io/backup-name").map(String::as_str), Some("nginx-backup"));

    // Deployments come back running.
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), APP);
    wait_for("the restored deployment to be ready", 60, || async {
        let d = deploys.get("nginx-deployment").await.ok()?;
        (d.status?.ready_replicas? == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

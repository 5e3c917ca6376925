//! The server's handling of backups over their life, through the real binary: deletion of one
//! backup among others, logs served through DownloadRequests, metrics, validation errors that
//! say what to do, damaged archives, operations a previous server left unfinished, and the
//! queue of concurrent backups.

mod e2e;

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::apps::config_map;
use e2e::{wait_for, Env, NS};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use stowage_api::requests::{DeleteBackupRequest, DownloadRequest};
use stowage_api::{Backup, Restore};
use stowage_storage::ObjectStore;

async fn shop(env: &Env) {
    env.create_namespace("shop").await;
    for name in ["web", "db"] {
        env.create_in::<ConfigMap>("shop", config_map(name, json!({"app": name}))).await;
    }
}

/// A status list of messages as one text.
fn messages(list: &Value) -> String {
    list.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

/// The value of an unlabelled Prometheus sample, e.g. `stowage_backup_attempt_total`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backup_is_deleted_among_others_and_logs_and_metrics_are_served() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server();
    for name in ["nightly", "nightly-2"] {
        let status = env.backup(name, json!({"includedNamespaces": ["shop"]})).await;
        assert_eq!(status["phase"], "Completed", "{name}: {status}\n{}", env.server_log());
    }

    // Metrics count what happened.
    let metrics = env.metrics().await;
    assert_eq!(sample(&metrics, "stowage_backup_attempt_total"), Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "stowage_backup_success_total"), Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "stowage_backup_failure_total"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "stowage_backup_duration_seconds_count"), Some(2.0), "{metrics}");
    assert!(sample(&metrics, "stowage_backup_items").is_some_and(|n| n >= 3.0), "{metrics}");

    // The backup's log, served through a DownloadRequest: no bucket credentials, nothing in
    // etcd but the request. The server offers a pre-signed URL and its own stream.
    env.create::<DownloadRequest>(json!({"metadata": {"name": "nightly-2-log", "namespace": NS},
        "spec": {"target": {"kind": "BackupLog", "name": "nightly-2"}}})).await;
    let status = env.wait_processed::<DownloadRequest>("nightly-2-log").await;
    assert!(status["downloadURL"].as_str().is_some_and(|u| u.contains("nightly-2-logs.zst")), "{status}");
    assert_eq!(status["stream"]["path"], "/downloads/nightly-2-log", "{status}");
    assert_eq!(status["stream"]["token"].as_str().map(str::len), Some(64), "{status}");
    assert!(status["expiration"].is_string(), "{status}");
    assert!(env.get_in::<Secret>(NS, "nightly-2-log").await.is_none(), "no Secret holds the file");
    let log = e2e::cli(&env, &["backup", "logs", "nightly-2"]);
    assert!(log.lines().count() >= 2, "{log}");
    assert!(log.lines().all(|l| l.contains("backup=nightly-2")), "every line names the backup:\n{log}");
    assert!(log.contains("backup Completed"), "{log}");
    env.create::<DownloadRequest>(json!({"metadata": {"name": "missing-log", "namespace": NS},
        "spec": {"target": {"kind": "BackupLog", "name": "missing"}}})).await;
    let status = env.wait_processed::<DownloadRequest>("missing-log").await;
    assert!(status["message"].as_str().is_some_and(|m| m.contains("\"missing\" not found")), "{status}");

    // A backup still being written is not deleted (here one that failed validation, marked
    // InProgress by hand: nothing runs it again).
    env.backup("unfinished", json!({"storageLocation": "nowhere"})).await;
    Api::<Backup>::namespaced(env.client.clone(), NS)
        .patch_status("unfinished", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "InProgress"}})))
        .await
        .unwrap();
    env.create::<DeleteBackupRequest>(json!({"metadata": {"name": "delete-unfinished", "namespace": NS},
        "spec": {"backupName": "unfinished"}})).await;
    let status = env.wait_processed::<DeleteBackupRequest>("delete-unfinished").await;
    let errors = messages(&status["errors"]);
    assert!(errors.contains("backup \"unfinished\" is InProgress; delete it once it has finished"), "{status}");
    assert!(env.get_in::<Backup>(NS, "unfinished").await.is_some());

    // Deleting nightly removes exactly its files and its Backup object.
    let before = env.bucket_keys("").await;
    let (gone, kept): (BTreeSet<_>, BTreeSet<_>) = before.iter().cloned().partition(|k| k.starts_with("backups/nightly/"));
    assert!(gone.len() >= 4 && kept.iter().any(|k| k.starts_with("backups/nightly-2/")), "{before:?}");
    env.create::<DeleteBackupRequest>(json!({"metadata": {"name": "delete-nightly", "namespace": NS},
        "spec": {"backupName": "nightly"}})).await;
    let status = env.wait_processed::<DeleteBackupRequest>("delete-nightly").await;
    assert_eq!(status.get("errors"), None, "{status}");
    assert!(env.get_in::<Backup>(NS, "nightly").await.is_none(), "the Backup object is deleted");
    assert_eq!(env.bucket_keys("").await, kept, "exactly nightly's files are removed");
    // Sync runs every second here: it must not bring the deleted backup back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.get_in::<Backup>(NS, "nightly").await.is_none(), "a deleted backup stays deleted");
    assert!(env.get_in::<Backup>(NS, "nightly-2").await.is_some());

    // The other backup still restores.
    env.delete_namespace_and_wait("shop").await;
    let status = env.restore("after-delete", json!({"backupName": "nightly-2"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(env.get_in::<ConfigMap>("shop", "web").await.is_some() && env.get_in::<ConfigMap>("shop", "db").await.is_some());
    let metrics = env.metrics().await;
    assert_eq!(sample(&metrics, "stowage_backup_deletion_total"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "stowage_restore_success_total"), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_fail_validation_saying_what_to_do() {
    let mut env = Env::start().await;
    let bucket = env.bucket.clone();
    env.apply_location("archive", &bucket, false, "ReadOnly").await;
    env.start_server();
    let cases = [
        ("to-missing-location", json!({"storageLocation": "nowhere"}),
            vec!["storage location \"nowhere\" does not exist", "stowage backup-location create"]),
        ("to-read-only-location", json!({"storageLocation": "archive"}),
            vec!["\"archive\" is ReadOnly", "use a ReadWrite location"]),
        ("contradictory-namespaces", json!({"includedNamespaces": ["shop"], "excludedNamespaces": ["shop"]}),
            vec!["namespace \"shop\" is both included and excluded", "remove it from one of the lists"]),
        ("both-selectors",
            json!({"labelSelector": {"matchLabels": {"a": "b"}}, "orLabelSelectors": [{"matchLabels": {"c": "d"}}]}),
            vec!["labelSelector and orLabelSelectors are both set", "use one"]),
        ("unknown-resource", json!({"includedResources": ["deploymentz"]}),
            vec!["no resource named \"deploymentz\"", "did you mean \"deployments.apps\""]),
    ];
    for (name, spec, _) in &cases {
        env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec})).await;
    }
    for (name, _, expected) in &cases {
        let status = env.wait_finished::<Backup>(name).await;
        assert_eq!(status["phase"], "FailedValidation", "{name}: {status}");
        let errors = messages(&status["validationErrors"]);
        for e in expected {
            assert!(errors.contains(e), "{name}: {e:?} not in {errors}");
        }
        assert!(env.bucket_keys(&format!("backups/{name}/")).await.is_empty(), "{name} wrote to the bucket");
    }
    let status = env.restore("of-nothing", json!({"backupName": "never-made"})).await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    let errors = messages(&status["validationErrors"]);
    assert!(errors.contains("backup \"never-made\" not found") && errors.contains("stowage backup get"), "{errors}");
    let metrics = env.metrics().await;
    assert_eq!(sample(&metrics, "stowage_backup_validation_failure_total"), Some(cases.len() as f64), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_archives_fail_the_restore_and_create_nothing() {
    let mut env = Env::start().await;
    env.create_namespace("victim").await;
    env.create_in::<ConfigMap>("victim", config_map("precious", json!({"app": "victim"}))).await;
    env.start_server();
    let status = env.backup("good", json!({"includedNamespaces": ["victim"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());

    // Two copies of the good backup as another cluster would have uploaded them, one with
    // garbage for an archive and one cut short.
    let store = env.store();
    let archive = store.get("backups/good/good.tar.zst").await.unwrap();
    let metadata: Value = serde_json::from_slice(&store.get("backups/good/stowage-backup.json").await.unwrap()).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (name, contents) in [("garbage", garbage), ("truncated", archive[..archive.len() / 2].to_vec())] {
        store.put(&format!("backups/{name}/{name}.tar.zst"), contents.into()).await.unwrap();
        let mut m = metadata.clone();
        m["metadata"]["name"] = json!(name);
        store.put(&format!("backups/{name}/stowage-backup.json"), serde_json::to_vec(&m).unwrap().into()).await.unwrap();
    }
    env.delete_namespace_and_wait("victim").await;
    for name in ["garbage", "truncated"] {
        wait_for(&format!("backup {name} to be synced"), 30, || async {
            (env.get_in::<Backup>(NS, name).await?["status"]["phase"] == "Completed").then_some(())
        })
        .await;
    }

    for (backup, expected) in [("garbage", "not a backup archive"), ("truncated", "damaged or cut short")] {
        let restore = format!("from-{backup}");
        let status = env.restore(&restore, json!({"backupName": backup})).await;
        assert_eq!(status["phase"], "Failed", "{restore}: {status}");
        let reason = status["failureReason"].as_str().unwrap_or_default();
        assert!(reason.contains(&format!("reading the archive of backup \"{backup}\"")) && reason.contains(expected),
            "{restore}: {reason}");
    }
    assert!(env.get_cluster::<Namespace>("victim").await.is_none(), "a failed restore creates no namespace");
    let restored = Api::<ConfigMap>::all(env.client.clone())
        .list(&ListParams::default().labels("stowage.io/restore-name"))
        .await
        .unwrap();
    assert!(restored.items.is_empty(), "a failed restore creates nothing: {:?}", restored.items);
    let metrics = env.metrics().await;
    assert_eq!(sample(&metrics, "stowage_restore_failure_total"), Some(2.0), "{metrics}");

    // The intact backup still restores: what failed was the archives.
    let status = env.restore("from-good", json!({"backupName": "good"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(env.get_in::<ConfigMap>("victim", "precious").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_left_in_progress_by_a_previous_server_are_started_again_up_to_max_attempts() {
    let mut env = Env::start().await;
    let set_status = |kind: &'static str, name: &'static str, phase: &'static str, attempts: u32| {
        let env = &env;
        async move {
            let status = Patch::Merge(json!({"status": {"phase": phase, "startTimestamp": "2024-05-01T03:00:00Z", "attempts": attempts}}));
            let pp = PatchParams::default();
            let client = env.client.clone();
            match kind {
                "Backup" => drop(Api::<Backup>::namespaced(client, NS).patch_status(name, &pp, &status).await.unwrap()),
                _ => drop(Api::<Restore>::namespaced(client, NS).patch_status(name, &pp, &status).await.unwrap()),
            }
        }
    };
    env.create_namespace("app").await;
    env.create_in::<ConfigMap>("app", json!({"metadata": {"name": "settings"}, "data": {"k": "v"}})).await;
    for (name, phase, attempts) in [("interrupted", "InProgress", 1), ("finalizing", "Finalizing", 3), ("finished", "Completed", 1)] {
        env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": {"includedNamespaces": ["app"]}})).await;
        set_status("Backup", name, phase, attempts).await;
    }
    env.create::<Restore>(json!({"metadata": {"name": "interrupted-restore", "namespace": NS},
        "spec": {"backupName": "finished"}})).await;
    set_status("Restore", "interrupted-restore", "InProgress", 3).await;

    env.start_server();
    // Started once before: started again, and completed.
    let status = env.wait_finished::<Backup>("interrupted").await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(status["attempts"], 2, "{status}");
    assert!(status.get("failureReason").is_none(), "{status}");
    let log = env.read_zstd_text("backups/interrupted/interrupted-logs.zst").await;
    assert!(log.contains("attempt 2 of 3") && log.contains("stopped before it ended"), "{log}");
    // Started --max-attempts times already: failed, saying why and what to do.
    let status = env.wait_finished::<Backup>("finalizing").await;
    assert_eq!(status["phase"], "Failed", "{status}");
    let reason = status["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("stopped while it was Finalizing, 3 times") && reason.contains("create the backup again"), "{status}");
    assert!(status["completionTimestamp"].is_string(), "{status}");
    let status = env.wait_finished::<Restore>("interrupted-restore").await;
    assert_eq!(status["phase"], "Failed", "{status}");
    assert!(status["failureReason"].as_str().is_some_and(|r| r.contains("3 times")), "{status}");
    let finished = env.get_in::<Backup>(NS, "finished").await.unwrap();
    assert_eq!(finished["status"]["phase"], "Completed", "a finished backup is left alone: {finished}");
    assert!(finished["status"].get("failureReason").is_none());
}

/// A namespace with one running pod whose pre-backup hook takes `seconds`.
async fn slow_namespace(env: &Env, ns: &str, seconds: u32) {
    env.create_namespace(ns).await;
    let hook = serde_json::to_string(&["/bin/sh", "-c", &format!("sleep {seconds}")]).unwrap();
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "app", "annotations": {"pre.hook.backup.stowage.io/command": hook,
            "pre.hook.backup.stowage.io/timeout": "60s"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}}))
    .await;
    e2e::running_pods(env, ns, 1).await;
}

fn timestamp(status: &Value, field: &str) -> k8s_openapi::jiff::Timestamp {
    status[field].as_str().unwrap_or_else(|| panic!("no {field}: {status}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_backups_run_together_and_an_overlapping_one_waits_queued() {
    if e2e::skipped_on_real_cluster("the slow pre hooks run through kube-sim's local exec") {
        return;
    }
    let mut env = Env::start_with_local_exec().await;
    slow_namespace(&env, "left", 4).await;
    slow_namespace(&env, "right", 4).await;
    env.start_server();
    for (name, namespaces) in [("left", json!(["left"])), ("right", json!(["right"])), ("both", json!(["left", "right"]))] {
        env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": {"includedNamespaces": namespaces}})).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued = wait_for("the overlapping backup to be queued", 30, || async {
        let status = env.get_in::<Backup>(NS, "both").await?["status"].clone();
        (status["phase"] == "Queued").then_some(status)
    })
    .await;
    assert_eq!(queued["queuePosition"], 1, "{queued}");
    let describe = e2e::cli(&env, &["backup", "describe", "both"]);
    assert!(describe.contains("Queued (position 1"), "{describe}");
    let (left, right, both) =
        (env.wait_finished::<Backup>("left").await, env.wait_finished::<Backup>("right").await, env.wait_finished::<Backup>("both").await);
    for s in [&left, &right, &both] {
        assert_eq!(s["phase"], "Completed", "{s}\n{}", env.server_log());
        assert!(s.get("queuePosition").is_none(), "a running backup has no queue position: {s}");
    }
    // The two disjoint backups ran at the same time; the overlapping one after both.
    assert!(timestamp(&left, "startTimestamp") < timestamp(&right, "completionTimestamp"), "{left}\n{right}");
    assert!(timestamp(&right, "startTimestamp") < timestamp(&left, "completionTimestamp"), "{left}\n{right}");
    let started = timestamp(&both, "startTimestamp");
    assert!(started >= timestamp(&left, "completionTimestamp") && started >= timestamp(&right, "completionTimestamp"), "{both}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backups_of_the_same_namespace_run_one_after_the_other_and_both_restore() {
    if e2e::skipped_on_real_cluster("the slow pre hook runs through kube-sim's local exec") {
        return;
    }
    let mut env = Env::start_with_local_exec().await;
    slow_namespace(&env, "twice", 3).await;
    env.create_in::<ConfigMap>("twice", config_map("settings", json!({"app": "twice"}))).await;
    env.start_server();
    for name in ["twice-1", "twice-2"] {
        env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": {"includedNamespaces": ["twice"]}})).await;
    }
    let (first, second) = (env.wait_finished::<Backup>("twice-1").await, env.wait_finished::<Backup>("twice-2").await);
    for s in [&first, &second] {
        assert_eq!(s["phase"], "Completed", "{s}");
    }
    let (a, b) = if timestamp(&first, "startTimestamp") <= timestamp(&second, "startTimestamp") { (&first, &second) } else { (&second, &first) };
    assert!(timestamp(b, "startTimestamp") >= timestamp(a, "completionTimestamp"), "one after the other:\n{a}\n{b}");
    for (backup, target) in [("twice-1", "twice-a"), ("twice-2", "twice-b")] {
        let status = env.restore(&format!("{backup}-restore"), json!({"backupName": backup, "namespaceMapping": {"twice": target}})).await;
        assert_eq!(status["phase"], "Completed", "{status}");
        assert!(env.get_in::<ConfigMap>(target, "settings").await.is_some(), "{backup} restores");
    }
}

//! Pod volume backup and restore end to end: kube-sim (its kubelet lays out volume directories
//! and runs the restore helper as a local process), the real `stowage server`,
//! `stowage-node-agent` and `stowage-restore-helper` binaries, moto as the S3 server, and the
//! `restic` CLI reading what the node agent wrote.

mod e2e;

use std::path::PathBuf;
use std::process::Command;

use e2e::apps::{self, NGINX};
use e2e::{claim_dir, restic, restic_command, running_pods, wait_for, Env, NS};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{json, Value};
use stowage_api::{PodVolumeBackup, PodVolumeRestore};
use stowage_storage::ObjectStore;
use stowage_test_support::noise;

/// Volume data lives in kube-sim's node filesystem; on a real cluster these tests would need
/// a container to write it, so they run on kube-sim only.
async fn sim_env() -> Option<Env> {
    if e2e::skipped_on_real_cluster("pod volume tests write volume data through kube-sim's node filesystem") {
        return None;
    }
    let mut env = Env::start().await;
    env.start_server();
    env.start_node_agent();
    Some(env)
}

/// An nginx-style access log: `lines` request lines, each a little different.
fn access_log(lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("10.0.0.{} - - [21/Nov/2026:03:{:02}:{:02} +0000] \"GET /page/{i} HTTP/1.1\" 200 {}\n", i % 255, i / 60 % 60, i % 60, 512 + i % 997))
        .collect::<String>()
        .into_bytes()
}

/// A namespace with one running pod `app` whose emptyDir volume `state` is opted in to
/// volume backups.
async fn app_with_state_volume(env: &Env, ns: &str) -> Pod {
    env.create_namespace(ns).await;
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "app", "annotations": {"backup.stowage.io/backup-volumes": "state"}},
        "spec": {"volumes": [{"name": "state", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]}})).await;
    running_pods(env, ns, 1).await.remove(0)
}

async fn pod_volume_backups(env: &Env, backup: &str) -> Vec<PodVolumeBackup> {
    let api: Api<PodVolumeBackup> = Api::namespaced(env.client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("stowage.io/backup-name={backup}"))).await.unwrap().items
}

async fn repository_bytes(env: &Env, namespace: &str) -> u64 {
    env.store().list(&format!("restic/{namespace}/data/")).await.unwrap().iter().map(|o| o.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_access_log_survives_namespace_deletion() {
    let Some(env) = sim_env().await else { return };
    // Two replicas share the claim: one PodVolumeBackup, not two.
    apps::deploy_nginx_with_logs(&env, NGINX, 2).await;
    running_pods(&env, NGINX, 2).await;
    let log = access_log(5000);
    std::fs::write(claim_dir(&env, NGINX, "nginx-logs").await.join("access.log"), &log).unwrap();

    let status = env.backup("nginx-backup", json!({"includedNamespaces": [NGINX]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}\n{}", env.server_log(), env.node_agent_log());
    assert_eq!(status["podVolumeBackupsAttempted"], 1, "two pods share the claim: {status}");
    assert_eq!(status["podVolumeBackupsCompleted"], 1, "{status}");
    let pvbs = pod_volume_backups(&env, "nginx-backup").await;
    assert_eq!(pvbs.len(), 1);
    let pvb_status = pvbs[0].status.clone().unwrap();
    let snapshot = pvb_status.snapshot_id.clone().expect("a snapshot id");
    assert_eq!(pvb_status.progress.unwrap().total_bytes, log.len() as u64);
    let recorded = env.read_zstd_json("backups/nginx-backup/nginx-backup-podvolumebackups.json.zst").await;
    assert_eq!(recorded[0]["status"]["snapshotID"], snapshot.as_str());
    assert_eq!(recorded[0]["spec"]["volume"], "nginx-logs");

    // The restic CLI reads, checks and lists what the node agent wrote.
    let snapshots: Value = serde_json::from_str(&restic(&env, NGINX, &["snapshots", "--json"])).unwrap();
    let ours = snapshots.as_array().unwrap().iter().find(|s| s["id"] == snapshot.as_str()).expect("restic lists the snapshot");
    let tags: Vec<&str> = ours["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tags.contains(&"backup=nginx-backup") && tags.contains(&"volume=nginx-logs") && tags.contains(&format!("ns={NGINX}").as_str()), "{tags:?}");
    restic(&env, NGINX, &["check", "--read-data"]);
    let restic_out = tempfile::tempdir().unwrap();
    restic(&env, NGINX, &["restore", &snapshot, "--target", restic_out.path().to_str().unwrap()]);
    let restored_by_restic: Vec<PathBuf> = walk(restic_out.path()).into_iter().filter(|p| p.ends_with("access.log")).collect();
    assert_eq!(restored_by_restic.len(), 1, "{restored_by_restic:?}");
    assert_eq!(std::fs::read(&restored_by_restic[0]).unwrap(), log);

    // describe --details lists the volume with its snapshot.
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["backup", "describe", "nginx-backup", "--details", "-n", NS, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Pod Volume Backups:\n  Completed:\n"), "{text}");
    assert!(text.contains(": nginx-logs:") && text.contains(&format!("snapshot {}", &snapshot[..8])), "{text}");

    env.delete_namespace_and_wait(NGINX).await;
    let status = env.restore("nginx-restore", json!({"backupName": "nginx-backup"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}\n{}", env.server_log(), env.node_agent_log());
    assert_eq!(status["podVolumeRestoresCompleted"], 1, "{status}");
    let pods = running_pods(&env, NGINX, 2).await;
    let restored = claim_dir(&env, NGINX, "nginx-logs").await;
    assert_eq!(std::fs::read(restored.join("access.log")).unwrap(), log, "the access log is byte-identical");
    assert!(!has_markers(&restored), "the helper removed its marker");
    let with_helper = pods
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().init_containers.iter().flatten().any(|c| c.name == "restore-wait"))
        .count();
    assert_eq!(with_helper, 1, "only the pod whose volume was backed up waits for it");
}

fn has_markers(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join(".stowage")).map(|mut d| d.next().is_some()).unwrap_or(false)
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A pod with a claim and two emptyDir volumes, opting out of `scratch`.
fn app_pod(ns: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": "db"},
            "annotations": {"backup.stowage.io/backup-volumes-excludes": "scratch"}},
        "spec": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}},
            {"name": "cache", "emptyDir": {}},
            {"name": "scratch", "emptyDir": {}}],
          "containers": [{"name": "db", "image": "postgres:16", "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql"}, {"name": "cache", "mountPath": "/cache"},
            {"name": "scratch", "mountPath": "/tmp"}]}]}})
}

fn empty_dir(env: &Env, pod: &Pod, volume: &str) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().unwrap();
    env.sim.as_ref().unwrap().kubelet_root().join("pods").join(uid).join("volumes/kubernetes.io~empty-dir").join(volume)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opt_out_mode_skips_excluded_volumes_and_the_next_backup_is_incremental() {
    let Some(env) = sim_env().await else { return };
    let ns = "db";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "db-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).await;
    env.create_in::<Pod>(ns, app_pod(ns, "db-0")).await;
    let pod = running_pods(&env, ns, 1).await.remove(0);
    let data = claim_dir(&env, ns, "db-data").await;
    let table = noise(4 << 20, 7);
    std::fs::write(data.join("table.dat"), &table).unwrap();
    std::fs::write(empty_dir(&env, &pod, "cache").join("hot.txt"), b"cached").unwrap();
    std::fs::write(empty_dir(&env, &pod, "scratch").join("tmp.txt"), b"scratch").unwrap();

    let status = env.backup("db-1", json!({"includedNamespaces": [ns], "defaultVolumesToFsBackup": true})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let mut volumes: Vec<String> = pod_volume_backups(&env, "db-1").await.iter().map(|p| p.spec.volume.clone()).collect();
    volumes.sort();
    assert_eq!(volumes, vec!["cache", "data"], "opt-out takes every volume but the excluded one");
    let first = pod_volume_backups(&env, "db-1").await.into_iter().find(|p| p.spec.volume == "data").unwrap();
    let first_snapshot = first.status.unwrap().snapshot_id.unwrap();
    let before = repository_bytes(&env, ns).await;

    // The pod is recreated (a new UID, as after a reschedule) on the same claim; the log grows a little.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    pods.delete("db-0", &DeleteParams::default().grace_period(0)).await.unwrap();
    wait_for("db-0 to be gone", 30, || async { pods.get_opt("db-0").await.unwrap().is_none().then_some(()) }).await;
    env.create_in::<Pod>(ns, app_pod(ns, "db-0")).await;
    let pod2 = running_pods(&env, ns, 1).await.remove(0);
    assert_ne!(pod2.metadata.uid, pod.metadata.uid);
    std::fs::write(data.join("wal.log"), noise(64 << 10, 9)).unwrap();

    let status = env.backup("db-2", json!({"includedNamespaces": [ns], "defaultVolumesToFsBackup": true})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let second = pod_volume_backups(&env, "db-2").await.into_iter().find(|p| p.spec.volume == "data").unwrap();
    let second_snapshot = second.status.unwrap().snapshot_id.unwrap();
    let snapshots: Value = serde_json::from_str(&restic(&env, ns, &["snapshots", "--json"])).unwrap();
    let entry = snapshots.as_array().unwrap().iter().find(|s| s["id"] == second_snapshot.as_str()).unwrap();
    assert_eq!(entry["parent"], first_snapshot.as_str(), "the parent is found by the claim, across pod UIDs: {entry}");
    let added = repository_bytes(&env, ns).await - before;
    assert!(added < (1 << 20), "the second backup added {added} bytes for a 64 KiB change to a 4 MiB volume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_volume_makes_the_backup_partially_failed_and_the_others_still_restore() {
    let Some(env) = sim_env().await else { return };
    let ns = "shop";
    env.create_namespace(ns).await;
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "web", "annotations": {"backup.stowage.io/backup-volumes": "good,broken"}},
        "spec": {"volumes": [{"name": "good", "emptyDir": {}}, {"name": "broken", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "nginx", "volumeMounts": [
                {"name": "good", "mountPath": "/good"}, {"name": "broken", "mountPath": "/broken"}]}]}})).await;
    let pod = running_pods(&env, ns, 1).await.remove(0);
    std::fs::write(empty_dir(&env, &pod, "good").join("orders.csv"), b"id,total\n1,9.99\n").unwrap();
    // The broken volume's directory disappears from the node.
    std::fs::remove_dir_all(empty_dir(&env, &pod, "broken")).unwrap();

    let status = env.backup("shop-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!((status["podVolumeBackupsCompleted"].as_u64(), status["podVolumeBackupsFailed"].as_u64()), (Some(1), Some(1)));
    let results = env.read_zstd_json("backups/shop-backup/shop-backup-results.json.zst").await;
    let errors = results.to_string();
    assert!(errors.contains("broken") && errors.contains("no directory"), "the error names the volume: {errors}");

    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("shop-restore", json!({"backupName": "shop-backup"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let pod = running_pods(&env, ns, 1).await.remove(0);
    assert_eq!(std::fs::read(empty_dir(&env, &pod, "good").join("orders.csv")).unwrap(), b"id,total\n1,9.99\n");
    let restores: Api<PodVolumeRestore> = Api::namespaced(env.client.clone(), NS);
    let pvrs = restores.list(&ListParams::default().labels("stowage.io/restore-name=shop-restore")).await.unwrap().items;
    assert_eq!(pvrs.iter().map(|p| p.spec.volume.as_str()).collect::<Vec<_>>(), vec!["good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_whose_volumes_never_arrive_ends_with_a_clear_message() {
    let Some(mut env) = sim_env().await else { return };
    let ns = "lonely";
    let pod = app_with_state_volume(&env, ns).await;
    std::fs::write(empty_dir(&env, &pod, "state").join("s"), b"1").unwrap();
    assert_eq!(env.backup("lonely-backup", json!({"includedNamespaces": [ns]})).await["phase"], "Completed");
    env.delete_namespace_and_wait(ns).await;
    // No node agent: nobody will restore the volume.
    env.stop_node_agent();
    env.create::<stowage_api::Restore>(json!({"metadata": {"name": "lonely-restore", "namespace": NS,
        "annotations": {"stowage.io/pod-volume-timeout": "4s"}}, "spec": {"backupName": "lonely-backup"}})).await;
    let status = env.wait_finished::<stowage_api::Restore>("lonely-restore").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["podVolumeRestoresFailed"], 1, "{status}");
    let restores: Api<PodVolumeRestore> = Api::namespaced(env.client.clone(), NS);
    let pvr = restores.list(&ListParams::default().labels("stowage.io/restore-name=lonely-restore")).await.unwrap().items.remove(0);
    let status = pvr.status.unwrap();
    assert_eq!(status.phase, Some(stowage_api::podvolume::PodVolumePhase::Canceled));
    let message = status.message.unwrap();
    assert!(message.contains("timed out after 4s") && message.contains("node agent"), "{message}");
}

/// A volume no node agent picks up is canceled at the backup's timeout, saying so; the backup
/// ends PartiallyFailed with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_whose_volume_is_never_picked_up_times_out_with_a_clear_message() {
    let Some(mut env) = sim_env().await else { return };
    let ns = "unattended";
    app_with_state_volume(&env, ns).await;
    env.stop_node_agent();
    env.create::<stowage_api::Backup>(json!({"metadata": {"name": "unattended-backup", "namespace": NS,
        "annotations": {"stowage.io/pod-volume-timeout": "3s"}}, "spec": {"includedNamespaces": [ns]}})).await;
    let status = env.wait_finished::<stowage_api::Backup>("unattended-backup").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    // Zero counts are left out of the status.
    assert_eq!((status["podVolumeBackupsCompleted"].as_u64().unwrap_or(0), status["podVolumeBackupsFailed"].as_u64()), (0, Some(1)), "{status}");
    let pvbs = pod_volume_backups(&env, "unattended-backup").await;
    let status = pvbs[0].status.clone().unwrap();
    assert_eq!(status.phase, Some(stowage_api::podvolume::PodVolumePhase::Canceled));
    let message = status.message.unwrap();
    assert!(message.contains("timed out after 3s") && message.contains("never picked it up"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_written_by_the_restic_cli_restores_through_a_pod_volume_restore() {
    let Some(env) = sim_env().await else { return };
    let ns = "legacy";
    env.create_namespace(ns).await;
    // A first backup makes the server create and initialise the namespace's repository.
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "seed", "annotations": {"backup.stowage.io/backup-volumes": "v"}},
        "spec": {"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "c", "image": "busybox",
            "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}})).await;
    running_pods(&env, ns, 1).await;
    assert_eq!(env.backup("legacy-seed", json!({"includedNamespaces": [ns]})).await["phase"], "Completed");

    // A Velero user's data: written by `restic backup` into the same repository.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("conf.d")).unwrap();
    std::fs::write(src.path().join("conf.d/site.conf"), b"server { listen 80; }\n").unwrap();
    let blob = noise(300_000, 3);
    std::fs::write(src.path().join("blob.bin"), &blob).unwrap();
    let out = restic(&env, ns, &["backup", "--json", "--tag", "source=restic-cli", src.path().to_str().unwrap()]);
    let summary: Value = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["message_type"] == "summary").unwrap();
    let snapshot = summary["snapshot_id"].as_str().unwrap().to_string();

    // A pod waiting in the restore helper, and a PodVolumeRestore naming the restic snapshot.
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "target"}, "spec": {"volumes": [{"name": "site", "emptyDir": {}}],
        "initContainers": [{"name": "restore-wait", "image": "stowage/restore-helper", "args": ["legacy-restore-uid"],
            "volumeMounts": [{"name": "site", "mountPath": "/restores/site"}]}],
        "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "site", "mountPath": "/usr/share/nginx"}]}]}})).await;
    let repo = restic_repository(&env, ns);
    env.create::<PodVolumeRestore>(json!({"metadata": {"name": "legacy-pvr", "namespace": NS,
            "labels": {"stowage.io/restore-uid": "legacy-restore-uid"}},
        "spec": {"pod": {"kind": "Pod", "namespace": ns, "name": "target"}, "volume": "site",
            "backupStorageLocation": "default", "repoIdentifier": repo, "snapshotID": &snapshot[..8]}})).await;
    let api: Api<PodVolumeRestore> = Api::namespaced(env.client.clone(), NS);
    let done = wait_for("the PodVolumeRestore to end", 60, || async {
        let p = api.get("legacy-pvr").await.ok()?;
        p.status.clone().filter(|s| s.phase.is_some_and(|p| p.is_terminal()))
    })
    .await;
    assert_eq!(done.phase, Some(stowage_api::podvolume::PodVolumePhase::Completed), "{done:?}\n{}", env.node_agent_log());
    let pods = running_pods(&env, ns, 2).await;
    let target = pods.iter().find(|p| p.metadata.name.as_deref() == Some("target")).unwrap();
    let dir = empty_dir(&env, target, "site");
    assert_eq!(std::fs::read(dir.join("blob.bin")).unwrap(), blob);
    assert_eq!(std::fs::read(dir.join("conf.d/site.conf")).unwrap(), b"server { listen 80; }\n");
    assert!(!has_markers(&dir), "the helper removed the marker");
}

fn restic_repository(env: &Env, ns: &str) -> String {
    format!("s3:{}/{}/restic/{ns}", env.s3.endpoint(), env.bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_backup_forgets_its_snapshots_and_keeps_the_others_restorable() {
    let Some(env) = sim_env().await else { return };
    let ns = "keep";
    env.create_namespace(ns).await;
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "app", "annotations": {"backup.stowage.io/backup-volumes": "v"}},
        "spec": {"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "c", "image": "busybox",
            "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}})).await;
    let pod = running_pods(&env, ns, 1).await.remove(0);
    let dir = empty_dir(&env, &pod, "v");
    std::fs::write(dir.join("a.txt"), b"first").unwrap();
    assert_eq!(env.backup("keep-1", json!({"includedNamespaces": [ns]})).await["phase"], "Completed");
    std::fs::write(dir.join("a.txt"), b"second").unwrap();
    assert_eq!(env.backup("keep-2", json!({"includedNamespaces": [ns]})).await["phase"], "Completed");
    let snap = |b: &'static str| {
        let env = &env;
        async move { pod_volume_backups(env, b).await[0].status.clone().unwrap().snapshot_id.unwrap() }
    };
    let (s1, s2) = (snap("keep-1").await, snap("keep-2").await);

    env.create::<stowage_api::DeleteBackupRequest>(json!({"metadata": {"name": "del-keep-1", "namespace": NS},
        "spec": {"backupName": "keep-1"}})).await;
    let status = env.wait_processed::<stowage_api::DeleteBackupRequest>("del-keep-1").await;
    assert!(status["errors"].as_array().is_none_or(|e| e.is_empty()), "{status}");
    let snapshots: Value = serde_json::from_str(&restic(&env, ns, &["snapshots", "--json"])).unwrap();
    let ids: Vec<&str> = snapshots.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(!ids.contains(&s1.as_str()) && ids.contains(&s2.as_str()), "{ids:?}");
    restic(&env, ns, &["check"]);
    assert!(pod_volume_backups(&env, "keep-1").await.is_empty(), "its PodVolumeBackups go with it");
    assert_eq!(pod_volume_backups(&env, "keep-2").await.len(), 1, "the other backup's stay");

    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("keep-restore", json!({"backupName": "keep-2"})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let pod = running_pods(&env, ns, 1).await.remove(0);
    assert_eq!(std::fs::read(empty_dir(&env, &pod, "v").join("a.txt")).unwrap(), b"second");
}

/// Bytes of `ns`'s repository under `dir/` (`data`, `index`).
async fn repository_files(env: &Env, ns: &str, dir: &str) -> (usize, u64) {
    let objects = env.store().list(&format!("restic/{ns}/{dir}/")).await.unwrap();
    (objects.len(), objects.iter().map(|o| o.size).sum())
}

/// What a node agent killed while it copies a volume of `mib` MiB of random data (at
/// `kill_at` of its bytes) leaves, once the restarted agent finished the copy.
struct Retried {
    /// Bytes in `data/` and index files when the agent was killed.
    data_at_kill: u64,
    index_files_at_kill: usize,
    /// Bytes in `data/` once the retry completed.
    data_at_end: u64,
    volume_bytes: u64,
    seconds_after_restart: f64,
}

async fn kill_node_agent_mid_backup(env: &mut Env, ns: &str, mib: usize, kill_at: f64) -> Retried {
    let pod = app_with_state_volume(env, ns).await;
    let dir = empty_dir(env, &pod, "state");
    let data = noise(mib << 20, 7);
    std::fs::write(dir.join("blob.bin"), &data).unwrap();
    let backup = format!("{ns}-backup");
    env.create::<stowage_api::Backup>(json!({"metadata": {"name": backup, "namespace": NS}, "spec": {"includedNamespaces": [ns]}})).await;
    let target = (data.len() as f64 * kill_at) as u64;
    wait_for("the volume copy to get far enough", 600, || async {
        let pvb = pod_volume_backups(env, &backup).await.into_iter().next()?;
        let status = pvb.status?;
        assert_ne!(status.phase, Some(stowage_api::podvolume::PodVolumePhase::Completed), "copied before the agent could be killed: a larger volume is needed");
        (status.phase == Some(stowage_api::podvolume::PodVolumePhase::InProgress) && status.progress?.bytes_done >= target).then_some(())
    })
    .await;
    env.stop_node_agent();
    let (index_files_at_kill, _) = repository_files(env, ns, "index").await;
    let (_, data_at_kill) = repository_files(env, ns, "data").await;
    let restarted = std::time::Instant::now();
    env.start_node_agent();
    let status = env.wait_finished::<stowage_api::Backup>(&backup).await;
    let seconds_after_restart = restarted.elapsed().as_secs_f64();
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let pvb = pod_volume_backups(env, &backup).await.remove(0);
    let pvb_status = pvb.status.unwrap();
    assert_eq!(pvb_status.attempts, 2, "started again by the new agent: {pvb_status:?}");
    assert!(pvb_status.message.as_deref().unwrap_or("").contains("node agent restarted"), "{pvb_status:?}");
    let (_, data_at_end) = repository_files(env, ns, "data").await;
    Retried { data_at_kill, index_files_at_kill, data_at_end, volume_bytes: data.len() as u64, seconds_after_restart }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_agent_killed_mid_backup_and_mid_restore_is_retried_by_the_next_and_the_volume_restores() {
    let Some(mut env) = sim_env().await else { return };
    let ns = "retried";
    // 256 MiB take the debug build's engine about 5 s: killed at 30%, after a progress report or two.
    let retried = kill_node_agent_mid_backup(&mut env, ns, 256, 0.3).await;
    assert!(retried.data_at_end >= retried.volume_bytes, "random data is all stored");
    // The killed agent's lock is stale (its process is gone): restic's exclusive lock refuses
    // any lock, stale or not, until `unlock` removes the stale ones (repository maintenance does
    // the same).
    restic(&env, ns, &["unlock"]);
    restic(&env, ns, &["check", "--read-data"]);
    env.delete_namespace_and_wait(ns).await;

    // The restore: the agent is killed again as soon as it has started the volume (the
    // restore of 256 MiB takes about as long as two progress reports, so waiting for a share
    // of the bytes can miss it).
    env.create::<stowage_api::Restore>(json!({"metadata": {"name": "retried-restore", "namespace": NS},
        "spec": {"backupName": "retried-backup"}}))
    .await;
    let restores: Api<PodVolumeRestore> = Api::namespaced(env.client.clone(), NS);
    wait_for("the volume restore to start", 600, || async {
        let pvr = restores.list(&ListParams::default().labels("stowage.io/restore-name=retried-restore")).await.ok()?.items.pop()?;
        let status = pvr.status?;
        assert_ne!(status.phase, Some(stowage_api::podvolume::PodVolumePhase::Completed), "restored before the agent could be killed: a larger volume is needed");
        (status.phase == Some(stowage_api::podvolume::PodVolumePhase::InProgress)).then_some(())
    })
    .await;
    env.stop_node_agent();
    env.start_node_agent();
    let status = env.wait_finished::<stowage_api::Restore>("retried-restore").await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let pvrs = restores.list(&ListParams::default().labels("stowage.io/restore-name=retried-restore")).await.unwrap().items;
    assert_eq!(pvrs.len(), 1, "one PodVolumeRestore, retried in place");
    let pvr_status = pvrs[0].status.clone().unwrap();
    assert_eq!(pvr_status.attempts, 2, "started again by the new agent: {pvr_status:?}");
    let pod = running_pods(&env, ns, 1).await.remove(0);
    assert_eq!(std::fs::read(empty_dir(&env, &pod, "state").join("blob.bin")).unwrap(), noise(256 << 20, 7));
    // The agent killed mid-restore left its (non-exclusive) lock behind, stale like the first.
    restic(&env, ns, &["unlock"]);
    restic(&env, ns, &["check", "--read-data"]);
}

/// How much of a volume a retry uploads again after the node agent was killed half way:
/// `SIZE_MIB=1024 cargo test -p stowage --test e2e_volumes -- --ignored --nocapture retry_reupload`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run it by name"]
async fn retry_reupload() {
    let Some(mut env) = sim_env().await else { return };
    let mib: usize = std::env::var("SIZE_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let r = kill_node_agent_mid_backup(&mut env, "reupload", mib, 0.5).await;
    let again = r.data_at_end.saturating_sub(r.volume_bytes);
    println!(
        "BENCH retry volume={} MiB killed_at=50% data_at_kill={:.0} MiB index_files_at_kill={} data_at_end={:.0} MiB \
         stored_twice={:.0} MiB ({:.1}% of the volume) retry_seconds={:.1}",
        mib,
        r.data_at_kill as f64 / 1048576.0,
        r.index_files_at_kill,
        r.data_at_end as f64 / 1048576.0,
        again as f64 / 1048576.0,
        100.0 * again as f64 / r.volume_bytes as f64,
        r.seconds_after_restart
    );
}

/// Names of the repository's lock files.
async fn locks(env: &Env, ns: &str) -> Vec<String> {
    env.store().list(&format!("restic/{ns}/locks/")).await.unwrap().into_iter().map(|o| o.key).collect()
}

/// A `restic backup --stdin` holding its lock while its stdin stays open.
fn restic_holding_a_lock(env: &Env, ns: &str) -> std::process::Child {
    restic_command(env, ns)
        .args(["backup", "--stdin", "--stdin-filename", "held.txt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the restic CLI is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_maintenance_frees_deleted_backups_data_and_respects_fresh_locks() {
    if e2e::skipped_on_real_cluster("pod volume tests write volume data through kube-sim's node filesystem") {
        return;
    }
    let mut env = Env::start().await;
    env.start_server_with(&["--repo-maintain-check-period", "1s"]);
    env.start_node_agent();
    let ns = "pruned";
    let pod = app_with_state_volume(&env, ns).await;
    let dir = empty_dir(&env, &pod, "state");
    // Three backups: each of the first two holds data the last does not.
    for (i, name) in ["first", "second", "third"].iter().enumerate() {
        std::fs::write(dir.join(format!("{name}.bin")), noise(6 << 20, i as u64 + 10)).unwrap();
        if i > 0 {
            let _ = std::fs::remove_file(dir.join(if i == 1 { "first.bin" } else { "second.bin" }));
        }
        std::fs::write(dir.join("kept.txt"), b"in every backup").unwrap();
        let status = env.backup(name, json!({"includedNamespaces": [ns]})).await;
        assert_eq!(status["phase"], "Completed", "{status}");
    }
    for name in ["first", "second"] {
        e2e::cli(&env, &["backup", "delete", name, "--confirm"]);
        wait_for(&format!("backup {name} to be deleted"), 60, || async { env.get_in::<stowage_api::Backup>(NS, name).await.is_none().then_some(()) }).await;
    }
    let before = repository_bytes(&env, ns).await;

    // A lock left by a killed process on this host is stale; one held by a running one is not.
    let mut killed = restic_holding_a_lock(&env, ns);
    wait_for("the first lock", 30, || async { (!locks(&env, ns).await.is_empty()).then_some(()) }).await;
    killed.kill().unwrap();
    killed.wait().unwrap();
    let stale = locks(&env, ns).await;
    let mut holder = restic_holding_a_lock(&env, ns);
    let held = wait_for("the second lock", 30, || async {
        let now = locks(&env, ns).await;
        (now.len() == 2).then(|| now.into_iter().find(|l| !stale.contains(l)).unwrap())
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["repo", "maintain", ns, "--timeout", "4s", "-n", NS, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "maintenance must wait for the running backup: {err}");
    assert!(err.contains("maintenance waits") && err.contains(&format!("pid {}", holder.id())), "the message names the lock's holder: {err}");
    assert!(locks(&env, ns).await.contains(&held), "the fresh lock is left alone");
    assert_eq!(repository_bytes(&env, ns).await, before, "nothing was pruned while it was held");
    {
        use std::io::Write;
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"written while maintenance waited").unwrap();
    }
    assert!(holder.wait().unwrap().success(), "the running backup finishes and releases its lock");

    let run = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["repo", "maintain", ns, "--timeout", "120s", "-n", NS, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stderr), env.server_log());
    assert!(out.contains("Succeeded") && out.contains("1 stale lock(s) removed"), "{out}");
    let after = repository_bytes(&env, ns).await;
    assert!(after + (10 << 20) < before, "the deleted backups' data is gone: {before} -> {after} bytes");
    assert!(locks(&env, ns).await.is_empty(), "no lock is left");
    restic(&env, ns, &["check", "--read-data"]);
    let table = e2e::cli(&env, &["repo", "get"]);
    assert!(table.contains("MiB") && !table.contains("<unknown>"), "size and last maintenance are shown: {table}");
    let repo = Api::<stowage_api::BackupRepository>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap().items.remove(0);
    let status = repo.status.unwrap();
    assert!(status.last_maintenance_time.is_some());
    let run = status.recent_maintenance.last().unwrap();
    assert!(run.bytes_freed > 10 << 20, "{run:?}");

    // What is left restores byte for byte.
    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("third-restore", json!({"backupName": "third"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());
    let pod = running_pods(&env, ns, 1).await.remove(0);
    let restored = empty_dir(&env, &pod, "state");
    assert_eq!(std::fs::read(restored.join("third.bin")).unwrap(), noise(6 << 20, 12));
    assert_eq!(std::fs::read(restored.join("kept.txt")).unwrap(), b"in every backup");
    assert!(!restored.join("first.bin").exists() && !restored.join("second.bin").exists());
}

/// Per data pack of a namespace's repository, the files of the snapshots that need one of its
/// blobs, as the restic CLI reads the index and trees: pack -> [(blob id, offset, file name)].
fn files_by_pack(env: &Env, ns: &str) -> std::collections::BTreeMap<String, Vec<(String, u64, String)>> {
    let mut offsets = std::collections::BTreeMap::new();
    for index in restic(env, ns, &["list", "index"]).lines() {
        let index: Value = serde_json::from_str(&restic(env, ns, &["cat", "index", index])).unwrap();
        for pack in index["packs"].as_array().unwrap().iter().filter(|p| p["blobs"][0]["type"] == "data") {
            for blob in pack["blobs"].as_array().unwrap() {
                offsets.insert(blob["id"].as_str().unwrap().to_string(), (pack["id"].as_str().unwrap().to_string(), blob["offset"].as_u64().unwrap()));
            }
        }
    }
    let mut packs: std::collections::BTreeMap<String, Vec<(String, u64, String)>> = std::collections::BTreeMap::new();
    for pack in offsets.values().map(|(p, _)| p.clone()).collect::<std::collections::BTreeSet<_>>() {
        let found: Value = serde_json::from_str(&restic(env, ns, &["find", "--json", "--pack", &pack])).unwrap();
        for f in found.as_array().unwrap() {
            let blob = f["id"].as_str().unwrap().to_string();
            let name = f["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            packs.entry(pack.clone()).or_default().push((blob.clone(), offsets[&blob].1, name));
        }
    }
    packs
}

/// A pack with a corrupted byte and a pack deleted from the bucket: the volume restores but
/// for the files that need them; the PodVolumeRestore fails naming them, the packs and what to
/// do, the Restore ends PartiallyFailed saying which volume, and the pod starts with the other
/// files, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_and_a_missing_pack_lose_only_the_files_that_need_them() {
    let Some(env) = sim_env().await else { return };
    let ns = "damaged";
    let pod = app_with_state_volume(&env, ns).await;
    let dir = empty_dir(&env, &pod, "state");
    let contents = |i: u64| noise(400 << 10, 100 + i);
    for i in 0..72 {
        std::fs::write(dir.join(format!("f{i:03}.bin")), contents(i)).unwrap();
    }
    let status = env.backup("damaged-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.node_agent_log());

    // The pack with the most blobs gets a byte flipped in its first blob; another one goes.
    let packs = files_by_pack(&env, ns);
    assert!(packs.len() >= 3, "a corrupted, a missing and an intact pack: {}", packs.len());
    let mut by_size: Vec<&String> = packs.keys().collect();
    by_size.sort_by_key(|p| std::cmp::Reverse(packs[*p].len()));
    let (corrupted, missing) = (by_size[0].clone(), by_size[1].clone());
    let key = |pack: &str| format!("restic/{ns}/data/{}/{pack}", &pack[..2]);
    let first = packs[&corrupted].iter().map(|(_, offset, _)| *offset).min().unwrap();
    let mut data = env.store().get(&key(&corrupted)).await.unwrap().to_vec();
    data[first as usize + 1000] ^= 0x55;
    env.store().put(&key(&corrupted), data.into()).await.unwrap();
    env.store().delete(&key(&missing)).await.unwrap();
    let mut damaged: std::collections::BTreeSet<String> =
        packs[&corrupted].iter().filter(|(_, offset, _)| *offset == first).map(|(_, _, name)| name.clone()).collect();
    damaged.extend(packs[&missing].iter().map(|(_, _, name)| name.clone()));
    assert!(damaged.len() > 5, "more files than a message names: {damaged:?}");

    env.delete_namespace_and_wait(ns).await;
    let status = env.restore("damaged-restore", json!({"backupName": "damaged-backup"})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}\n{}", env.node_agent_log());
    assert_eq!(status["podVolumeRestoresFailed"], 1, "{status}");
    let restores: Api<PodVolumeRestore> = Api::namespaced(env.client.clone(), NS);
    let pvr = restores.list(&ListParams::default().labels("stowage.io/restore-name=damaged-restore")).await.unwrap().items.remove(0);
    let pvr_status = pvr.status.unwrap();
    assert_eq!(pvr_status.phase, Some(stowage_api::podvolume::PodVolumePhase::Failed));
    let message = pvr_status.message.unwrap();
    let named: Vec<&str> = damaged.iter().take(5).map(String::as_str).collect();
    let files = format!("{} files could not be restored ({} and {} more)", damaged.len(), named.join(", "), damaged.len() - 5);
    assert!(message.contains(&files), "{message}\nexpected: {files}");
    assert!(message.contains(&format!("pack {missing}: missing")), "{message}");
    assert!(message.contains(&format!("pack {corrupted}: blob at offset {first}: authentication failed")), "{message}");
    assert!(message.contains(&format!("restic-env {ns} --location default")) && message.contains("earlier backup"), "{message}");
    let results = env.read_zstd_json("restores/damaged-restore/damaged-restore-results.json.zst").await;
    let errors = results["errors"].to_string();
    assert!(errors.contains(&format!("volume \\\"state\\\" of pod {ns}/app")) && errors.contains(&files), "{errors}");

    // The pod starts with every other file, byte for byte.
    let pod = running_pods(&env, ns, 1).await.remove(0);
    let restored = empty_dir(&env, &pod, "state");
    for i in 0..72 {
        let name = format!("f{i:03}.bin");
        match std::fs::read(restored.join(&name)) {
            Ok(data) => assert!(!damaged.contains(&name) && data == contents(i), "{name}"),
            Err(e) => assert!(damaged.contains(&name) && e.kind() == std::io::ErrorKind::NotFound, "{name}: {e}"),
        }
    }
    assert!(!has_markers(&restored), "the helper found its marker and removed it");
}

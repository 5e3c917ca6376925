//! Quiescing end to end (the shipped fsfreeze and scale-to-zero hook extensions, access pods):
//! kube-sim runs hooks' commands as local processes in the container's stand-in directory; a
//! stand-in `fsfreeze` on the PATH records a volume's frozen state in the volume itself
//! (`.frozen`), so a snapshot shows whether the copy was taken frozen. The host owns every undo:
//! after success, a failed volume, the maximum frozen time, and a server killed mid-backup.

mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use e2e::{apply_extension, claim_dir, cli, pod_volume_backups, restic, running_pods, shipped_extension, wait_for, Env, NS};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use stowage_api::{Backup, PodVolumeBackup};

/// Puts a stand-in `fsfreeze` first on the PATH of this test process, whose kube-sim runs the
/// hooks' commands. It works on `.<path>` (the mount path, relative to the container's
/// directory) and fails as the real one does when frozen twice or thawed unfrozen.
fn stand_in_fsfreeze() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stowage-fsfreeze-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = r#"#!/bin/sh
# fsfreeze stand-in for tests: the frozen state is the file .frozen in the volume. A volume that
# is a real mount point (a loop-mounted ext4) is frozen for real, and logged beside this script.
real="$(readlink -f ".$2" 2>/dev/null)"
if [ -n "$real" ] && mountpoint -q "$real"; then
    echo "${1#--} $real" >>"$(dirname "$0")/real.log"
    for bin in /usr/sbin/fsfreeze /sbin/fsfreeze; do [ -x "$bin" ] && exec "$bin" "$1" "$real"; done
    echo "fsfreeze: not installed" >&2; exit 1
fi
state=".$2/.frozen"
case "$1" in
  --freeze)
    [ -d ".$2" ] || { echo "fsfreeze: cannot open $2: No such file or directory" >&2; exit 1; }
    [ -e ".$2/.nofreeze" ] && { echo "fsfreeze: $2: freeze failed: Operation not supported" >&2; exit 1; }
    [ -e "$state" ] && { echo "fsfreeze: $2: freeze failed: Device or resource busy" >&2; exit 1; }
    echo frozen >"$state"; echo freeze >>".$2/.fsfreeze-log" ;;
  --unfreeze)
    [ -e "$state" ] || { echo "fsfreeze: $2: unfreeze failed: Invalid argument" >&2; exit 1; }
    rm -f "$state"; echo thaw >>".$2/.fsfreeze-log" ;;
  *) echo "fsfreeze: unknown option $1" >&2; exit 2 ;;
esac
"#;
        let path = dir.join("fsfreeze");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let old = std::env::var("PATH").unwrap_or_default();
        // Set once, before any test of this binary starts a cluster.
        std::env::set_var("PATH", format!("{}:{old}", dir.display()));
        dir
    })
    .clone()
}

async fn quiesce_env(node_agent: bool, server_flags: &[&str]) -> Option<Env> {
    if e2e::skipped_on_real_cluster("quiesce tests read volume state through kube-sim's node filesystem") {
        return None;
    }
    stand_in_fsfreeze();
    let mut env = Env::start_with_local_exec().await;
    env.start_server_with(server_flags);
    if node_agent {
        env.start_node_agent();
    }
    for name in ["fsfreeze", "scale-to-zero"] {
        apply_extension(&env, &shipped_extension(name)).await;
    }
    Some(env)
}

/// A pod whose container `app` and sidecar `fsfreeze` mount its claim at /data, bound to the
/// fsfreeze extension; returns the claim's directory.
async fn frozen_app(env: &Env, ns: &str) -> PathBuf {
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    let mount = json!([{"name": "data", "mountPath": "/data"}]);
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "db", "annotations": {"backup.stowage.io/backup-volumes": "data",
            "hooks.stowage.io/extensions": "fsfreeze"}},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": mount}, {"name": "fsfreeze", "image": "busybox", "volumeMounts": mount}]}}))
    .await;
    running_pods(env, ns, 1).await;
    let dir = claim_dir(env, ns, "data").await;
    std::fs::write(dir.join("table.db"), b"rows").unwrap();
    dir
}

fn freeze_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".fsfreeze-log")).unwrap_or_default()
}



fn snapshot_of(pvb: &PodVolumeBackup) -> String {
    pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()).expect("a snapshot")
}

fn undo_runs(status: &Value) -> Vec<Value> {
    status["hookStatus"]["runs"].as_array().into_iter().flatten().filter(|r| r["phase"] == "undo").cloned().collect()
}

async fn access_pods(env: &Env, ns: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let pods = api.list(&ListParams::default().labels("stowage.io/access-pod")).await.unwrap().items;
    pods.into_iter().filter_map(|p| p.metadata.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsfreeze_copies_a_frozen_volume_and_the_host_thaws_it() {
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let ns = "freeze-ok";
    let data = frozen_app(&env, ns).await;
    let status = env.backup("frozen", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let pvbs = pod_volume_backups(&env, "frozen").await;
    let files = restic(&env, ns, &["ls", &snapshot_of(&pvbs[0])]);
    assert!(files.contains("/.frozen"), "the copy was taken while the filesystem was frozen: {files}");
    assert!(!data.join(".frozen").exists(), "the host thawed it");
    assert_eq!(freeze_log(&data), "freeze\nthaw\n");
    let undo = undo_runs(&status);
    assert_eq!(undo.len(), 1, "{status}");
    assert_eq!(undo[0]["hook"], "host: thaw /data in pod freeze-ok/db (container fsfreeze)", "{status}");
    assert!(undo[0]["error"].is_null(), "{status}");
    let describe = cli(&env, &["backup", "describe", "frozen"]);
    assert!(describe.contains("host: thaw /data in pod freeze-ok/db"), "{describe}");

    // A filesystem that refuses freezing is copied as it is, with a warning naming it.
    std::fs::write(data.join(".nofreeze"), b"").unwrap();
    let status = env.backup("unfreezable", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let log = env.read_zstd_text("backups/unfreezable/unfreezable-logs.zst").await;
    assert!(log.contains("volume data of pod freeze-ok/db is copied without freezing") && log.contains("Operation not supported"), "{log}");
    let backup = env.get_in::<Backup>(NS, "unfreezable").await.unwrap();
    assert!(!backup["metadata"]["annotations"].to_string().contains("owed-undo"), "a freeze that did not happen owes nothing: {backup}");
    assert!(undo_runs(&status).is_empty(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_volume_and_the_maximum_frozen_time_both_end_in_a_thaw() {
    // No node agent: the volume's copy never starts. The maximum frozen time (2s) thaws before
    // the backup's volume timeout (5s) gives up.
    let Some(env) = quiesce_env(false, &["--max-frozen-time", "2s"]).await else { return };
    let ns = "freeze-expire";
    let data = frozen_app(&env, ns).await;
    env.create::<Backup>(json!({"metadata": {"name": "stuck", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "5s"}},
        "spec": {"includedNamespaces": [ns]}}))
    .await;
    wait_for("the freeze", 30, || async { data.join(".frozen").exists().then_some(()) }).await;
    wait_for("the watchdog's thaw", 10, || async { (!data.join(".frozen").exists()).then_some(()) }).await;
    let status = env.wait_finished::<Backup>("stuck").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    let results = env.read_zstd_json("backups/stuck/stuck-results.json.zst").await;
    let errors = results["errors"][ns].to_string();
    assert!(errors.contains("stayed frozen past the maximum frozen time") && errors.contains("not consistent"), "{results}");
    assert_eq!(freeze_log(&data), "freeze\nthaw\n", "thawed once, by the watchdog");
    assert!(undo_runs(&status)[0]["error"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_whose_copy_fails_is_thawed_after_it() {
    // No node agent: the copy is canceled at the volume timeout (3s), long before the maximum
    // frozen time; the undo after the volume, not the watchdog, thaws it.
    let Some(env) = quiesce_env(false, &[]).await else { return };
    let ns = "freeze-fail";
    let data = frozen_app(&env, ns).await;
    env.create::<Backup>(json!({"metadata": {"name": "failed-copy", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "3s"}},
        "spec": {"includedNamespaces": [ns]}}))
    .await;
    let status = env.wait_finished::<Backup>("failed-copy").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["podVolumeBackupsFailed"], 1, "{status}");
    assert!(!data.join(".frozen").exists(), "thawed");
    assert_eq!(freeze_log(&data), "freeze\nthaw\n");
    let undo = undo_runs(&status);
    assert_eq!(undo.len(), 1, "{status}");
    assert!(undo[0]["error"].is_null(), "{status}");
    let results = env.read_zstd_json("backups/failed-copy/failed-copy-results.json.zst").await;
    assert!(!results.to_string().contains("maximum frozen time"), "{results}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_while_a_volume_is_frozen_thaws_it_when_it_starts_again() {
    // No node agent: the volume is never copied; the second attempt, after the restart, gives
    // up on it at the backup's timeout.
    let Some(mut env) = quiesce_env(false, &[]).await else { return };
    let ns = "freeze-kill";
    let data = frozen_app(&env, ns).await;
    env.create::<Backup>(json!({"metadata": {"name": "killed", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "8s"}},
        "spec": {"includedNamespaces": [ns]}})).await;
    wait_for("the freeze", 30, || async { data.join(".frozen").exists().then_some(()) }).await;
    let backup = env.get_in::<Backup>(NS, "killed").await.unwrap();
    assert!(backup["metadata"]["annotations"].to_string().contains("owed-undo.stowage.io/"), "the thaw is journalled: {backup}");
    env.kill_server();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(data.join(".frozen").exists(), "nothing thawed it yet");
    env.start_server();
    wait_for("the owed thaw", 60, || async { (!data.join(".frozen").exists()).then_some(()) }).await;
    let status = env.wait_finished::<Backup>("killed").await;
    assert_eq!(status["phase"], "PartiallyFailed", "the second attempt never got its volume: {status}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert!(!data.join(".frozen").exists(), "the second attempt thawed too");
    let undo = undo_runs(&status);
    assert_eq!(undo.len(), 2, "the owed thaw, then the second attempt's: {status}");
    assert_eq!(undo[0]["afterRestart"], true, "{status}");
    let backup = env.get_in::<Backup>(NS, "killed").await.unwrap();
    assert!(!backup["metadata"]["annotations"].to_string().contains("owed-undo"), "the journal is cleared: {backup}");
}

/// A StatefulSet `db` of 2 replicas, each with its own claim holding a file, bound to the
/// scale-to-zero extension; returns the claims' directories.
async fn quiesced_set(env: &Env, ns: &str) -> Vec<PathBuf> {
    env.create_namespace(ns).await;
    env.create_in::<StatefulSet>(ns, json!({"metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"backup.stowage.io/backup-volumes": "data",
                "hooks.stowage.io/extensions": "scale-to-zero"}},
            "spec": {"containers": [{"name": "db", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))
    .await;
    running_pods(env, ns, 2).await;
    let mut dirs = Vec::new();
    for i in 0..2 {
        let dir = claim_dir(env, ns, &format!("data-db-{i}")).await;
        std::fs::write(dir.join("rows"), format!("replica {i}\n").repeat(1000)).unwrap();
        dirs.push(dir);
    }
    dirs
}

async fn replicas(env: &Env, ns: &str) -> (i64, Value) {
    let set = env.get_in::<StatefulSet>(ns, "db").await.unwrap();
    (set["spec"]["replicas"].as_i64().unwrap_or(1), set["metadata"]["annotations"]["stowage.io/quiesced-replicas"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_to_zero_copies_the_claims_with_no_pod_running_and_scales_back() {
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let ns = "zero";
    let dirs = quiesced_set(&env, ns).await;
    let status = env.backup("zero", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let pvbs = pod_volume_backups(&env, "zero").await;
    assert_eq!(pvbs.len(), 2, "{pvbs:?}");
    for pvb in &pvbs {
        let through = pvb.spec.pod.name.clone().unwrap_or_default();
        assert!(through.starts_with("stowage-access-"), "copied through an access pod, not {through}");
        assert_eq!(pvb.metadata.labels.as_ref().unwrap()["stowage.io/access"], "pod-gone");
        assert!(["db-0", "db-1"].contains(&pvb.spec.tags["pod"].as_str()), "{:?}", pvb.spec.tags);
    }
    assert_eq!(replicas(&env, ns).await, (2, Value::Null), "scaled back, journal cleared");
    running_pods(&env, ns, 2).await;
    assert!(access_pods(&env, ns).await.is_empty(), "the access pods are gone");
    let undo = undo_runs(&status);
    assert_eq!(undo.len(), 1, "{status}");
    assert_eq!(undo[0]["hook"], "host: scale StatefulSet zero/db back to 2 replicas", "{status}");
    let listed = env.resource_list("zero").await;
    assert!(listed["apps/v1/StatefulSet"].to_string().contains("zero/db"), "the set was collected before its scale-down: {listed}");

    // Restored into a fresh namespace, byte for byte.
    env.delete_namespace_and_wait(ns).await;
    let restored = env.restore("zero-restore", json!({"backupName": "zero"})).await;
    assert_eq!(restored["phase"], "Completed", "{restored}\n{}", env.server_log());
    for i in 0..dirs.len() {
        let dir = claim_dir(&env, ns, &format!("data-db-{i}")).await;
        assert_eq!(std::fs::read_to_string(dir.join("rows")).unwrap(), format!("replica {i}\n").repeat(1000));
    }
    assert_eq!(replicas(&env, ns).await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_while_a_workload_is_at_zero_scales_it_back_when_it_starts_again() {
    // No node agent: the backup waits for the claims with the workload at zero; the second
    // attempt, after the restart, gives up on them at the backup's timeout.
    let Some(mut env) = quiesce_env(false, &[]).await else { return };
    let ns = "zero-kill";
    quiesced_set(&env, ns).await;
    env.create::<Backup>(json!({"metadata": {"name": "zero-killed", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "8s"}},
        "spec": {"includedNamespaces": [ns]}})).await;
    wait_for("the access pods", 60, || async { (access_pods(&env, ns).await.len() == 2).then_some(()) }).await;
    let (count, mark) = replicas(&env, ns).await;
    assert_eq!(count, 0);
    let mark: Value = serde_json::from_str(mark.as_str().expect("the workload carries its journal")).unwrap();
    assert_eq!(mark["replicas"], 2);
    assert_eq!(mark["backup"], "zero-killed");
    env.kill_server();
    env.start_server();
    let status = env.wait_finished::<Backup>("zero-killed").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(undo_runs(&status)[0]["afterRestart"], true, "the owed scale-back ran first: {status}");
    assert_eq!(replicas(&env, ns).await, (2, Value::Null), "scaled back, the mark gone");
    running_pods(&env, ns, 2).await;
    wait_for("the access pods to go", 30, || async { access_pods(&env, ns).await.is_empty().then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_is_found_through_its_replica_set_and_scaled_to_zero() {
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let ns = "zero-deploy";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "web-data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    env.create_in::<k8s_openapi::api::apps::v1::Deployment>(ns, json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"backup.stowage.io/backup-volumes": "data",
                "hooks.stowage.io/extensions": "scale-to-zero"}},
            "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}],
                "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}}))
    .await;
    running_pods(&env, ns, 1).await;
    std::fs::write(claim_dir(&env, ns, "web-data").await.join("page.html"), b"<h1>hi</h1>").unwrap();
    let status = env.backup("deploy-zero", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let undo = undo_runs(&status);
    assert_eq!(undo[0]["hook"], "host: scale Deployment zero-deploy/web back to 1 replicas", "{status}");
    let pvbs = pod_volume_backups(&env, "deploy-zero").await;
    assert_eq!(pvbs.len(), 1);
    assert!(pvbs[0].spec.pod.name.as_deref().unwrap_or_default().starts_with("stowage-access-"), "{pvbs:?}");
    let files = restic(&env, ns, &["ls", &snapshot_of(&pvbs[0])]);
    assert!(files.contains("page.html"), "{files}");
    let web = env.get_in::<k8s_openapi::api::apps::v1::Deployment>(ns, "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 1);
    running_pods(&env, ns, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workload_another_backup_keeps_at_zero_is_waited_for() {
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let ns = "zero-busy";
    quiesced_set(&env, ns).await;
    // Another backup's journal on the workload, as it stands while that backup runs.
    let mark = json!({"replicas": 2, "backup": "other", "uid": "u-other"}).to_string();
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), ns);
    let set_mark = |value: Value| json!({"metadata": {"annotations": {"stowage.io/quiesced-replicas": value}}});
    sets.patch("db", &PatchParams::default(), &Patch::Merge(set_mark(json!(mark)))).await.unwrap();
    env.create::<Backup>(json!({"metadata": {"name": "second", "namespace": NS}, "spec": {"includedNamespaces": [ns]}})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&env, ns).await.0, 2, "the second backup does not touch the workload meanwhile");
    let backup = env.get_in::<Backup>(NS, "second").await.unwrap();
    assert!(backup["status"]["phase"] != "Completed", "it waits: {backup}");
    // The other backup scales it back and clears its journal: the second one goes on.
    sets.patch("db", &PatchParams::default(), &Patch::Merge(set_mark(Value::Null))).await.unwrap();
    let status = env.wait_finished::<Backup>("second").await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(pod_volume_backups(&env, "second").await.len(), 2);
    assert_eq!(replicas(&env, ns).await, (2, Value::Null));
    let log = env.read_zstd_text("backups/second/second-logs.zst").await;
    assert!(log.contains("StatefulSet zero-busy/db is kept at zero replicas by backup other: waiting until it is scaled back"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_no_pod_mounts_is_backed_up_and_restored_through_access_pods() {
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let ns = "unmounted";
    env.create_namespace(ns).await;
    for claim in ["orphan", "ignored"] {
        let annotations = match claim {
            "orphan" => json!({"backup.velero.io/include-unmounted": "true"}),
            _ => json!({}),
        };
        env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": claim, "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .await;
    }
    // A pod that mounts neither: on restore it is created only once the claim is filled.
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})).await;
    running_pods(&env, ns, 1).await;
    let dir = claim_dir(&env, ns, "orphan").await;
    let payload: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("nested/blob"), &payload).unwrap();
    let status = env.backup("orphans", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let pvbs = pod_volume_backups(&env, "orphans").await;
    assert_eq!(pvbs.len(), 1, "only the annotated claim: {pvbs:?}");
    assert_eq!(pvbs[0].spec.tags["pvc"], "orphan");
    assert!(access_pods(&env, ns).await.is_empty());

    // The Backup's switch takes every unmounted claim.
    let all = env.backup("all-orphans", json!({"includedNamespaces": [ns], "backupUnmountedVolumes": true})).await;
    assert_eq!(all["phase"], "Completed", "{all}");
    assert_eq!(pod_volume_backups(&env, "all-orphans").await.len(), 2);

    env.delete_namespace_and_wait(ns).await;
    let restored = env.restore("orphans-restore", json!({"backupName": "orphans"})).await;
    assert_eq!(restored["phase"], "Completed", "{restored}\n{}", env.server_log());
    assert_eq!(restored["podVolumeRestoresCompleted"], 1, "{restored}");
    // A clean restore of a namespace says nothing of the `default` ServiceAccount Kubernetes
    // made with it: the backed-up one is merged in.
    assert_eq!(restored["warnings"].as_u64().unwrap_or(0), 0, "{restored}");
    let dir = claim_dir(&env, ns, "orphan").await;
    assert_eq!(std::fs::read(dir.join("nested/blob")).unwrap(), payload);
    assert!(access_pods(&env, ns).await.is_empty(), "the restore's access pod is gone");
    let log = env.read_zstd_text("restores/orphans-restore/orphans-restore-logs.zst").await;
    assert!(log.contains("waiting for 1 claim(s) to be filled before creating pods"), "{log}");
    let pvrs = Api::<stowage_api::PodVolumeRestore>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap().items;
    let filled = pvrs.iter().filter_map(|p| p.status.as_ref()?.completion_timestamp.clone()).max().expect("a completed restore of the claim");
    let web = env.get_in::<Pod>(ns, "web").await.unwrap();
    let created: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time = serde_json::from_value(web["metadata"]["creationTimestamp"].clone()).unwrap();
    assert!(created.0 >= filled.0, "the pod ({:?}) came after the claim's data ({:?})", created.0, filled.0);
}

/// A loop-mounted ext4 filesystem, thawed and unmounted when dropped.
struct LoopMount {
    image: PathBuf,
    at: PathBuf,
}

impl LoopMount {
    /// None (with the reason) where the machine does not allow loop mounts.
    fn over(at: &Path) -> Result<LoopMount, String> {
        if process_uid() != 0 {
            return Err("loop mounts need root".into());
        }
        let image = at.with_extension("ext4.img");
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            }
        };
        run(Command::new("truncate").args(["-s", "64M"]).arg(&image))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(at))?;
        Ok(LoopMount { image, at: at.to_path_buf() })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("--unfreeze").arg(&self.at).output();
        let _ = Command::new("umount").arg(&self.at).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn process_uid() -> u32 {
    // The uid of this process, from /proc (no libc binding needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_ext4_filesystem_is_frozen_until_the_host_thaws_it() {
    // No node agent and a maximum frozen time of 3s: the host's watchdog thaws the volume.
    let Some(env) = quiesce_env(false, &["--max-frozen-time", "3s"]).await else { return };
    let ns = "freeze-ext4";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    let dir = claim_dir(&env, ns, "data").await;
    let mount = match LoopMount::over(&dir) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: no loop-mounted ext4 here ({why}); the stand-in tests cover the host's freeze and thaw");
            return;
        }
    };
    let volume = json!([{"name": "data", "mountPath": "/data"}]);
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "db", "annotations": {"backup.stowage.io/backup-volumes": "data",
            "hooks.stowage.io/extensions": "fsfreeze"}},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": volume}, {"name": "fsfreeze", "image": "busybox", "volumeMounts": volume}]}}))
    .await;
    running_pods(&env, ns, 1).await;
    let log = stand_in_fsfreeze().join("real.log");
    let real = std::fs::canonicalize(&mount.at).unwrap();
    let frozen_line = format!("freeze {}", real.display());
    env.create::<Backup>(json!({"metadata": {"name": "ext4", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "8s"}},
        "spec": {"includedNamespaces": [ns]}}))
    .await;
    wait_for("the real freeze", 30, || async { std::fs::read_to_string(&log).unwrap_or_default().contains(&frozen_line).then_some(()) }).await;
    // A write blocks while the filesystem is frozen, and goes through once the host thaws it.
    let probe = mount.at.join("probe");
    let writer = std::thread::spawn(move || std::fs::write(probe, b"written"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!writer.is_finished(), "the filesystem is frozen: the write waits");
    let thawed_line = format!("unfreeze {}", real.display());
    wait_for("the host's thaw", 30, || async { std::fs::read_to_string(&log).unwrap_or_default().contains(&thawed_line).then_some(()) }).await;
    writer.join().unwrap().unwrap();
    assert_eq!(std::fs::read(mount.at.join("probe")).unwrap(), b"written");
    let status = env.wait_finished::<Backup>("ext4").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert!(undo_runs(&status)[0]["error"].is_null(), "{status}");
}

/// When each moment was first seen by a sampler polling every 20 ms.
#[derive(Default, Debug)]
struct Moments {
    quiesced: Option<std::time::Instant>,
    undone: Option<std::time::Instant>,
    copy_started: Option<std::time::Instant>,
    copy_ended: Option<std::time::Instant>,
}

impl Moments {
    fn report(&self, what: &str, total: Duration) {
        let secs = |a: Option<std::time::Instant>, b: Option<std::time::Instant>| b.unwrap().duration_since(a.unwrap()).as_secs_f64();
        let window = secs(self.quiesced, self.undone);
        let copy = secs(self.copy_started, self.copy_ended);
        println!(
            "BENCH {what}: quiesced window {window:.2}s, volume copy {copy:.2}s, overhead {:.2}s, backup total {:.2}s",
            window - copy,
            total.as_secs_f64()
        );
    }
}

/// Samples, until `done`, whether the volume or workload is quiesced (`quiesced()`) and the
/// phases of the backup's PodVolumeBackups.
async fn sample<F, Fut>(env: &Env, backup: &str, quiesced: F, done: &std::sync::atomic::AtomicBool) -> Moments
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut m = Moments::default();
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let now = std::time::Instant::now();
        let q = quiesced().await;
        if q && m.quiesced.is_none() {
            m.quiesced = Some(now);
        }
        if !q && m.quiesced.is_some() && m.undone.is_none() {
            m.undone = Some(now);
        }
        let pvbs = pod_volume_backups(env, backup).await;
        let phase = |p: &PodVolumeBackup| p.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}")).unwrap_or_default();
        if m.copy_started.is_none() && pvbs.iter().any(|p| phase(p) != "" && phase(p) != "New") {
            m.copy_started = Some(now);
        }
        if m.copy_ended.is_none() && !pvbs.is_empty() && pvbs.iter().all(|p| phase(p) == "Completed") {
            m.copy_ended = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m
}

fn random_file(path: &Path, mib: u64) {
    let out = Command::new("sh").arg("-c").arg(format!("head -c {}M /dev/urandom > '{}'", mib, path.display())).output().unwrap();
    assert!(out.status.success());
}

/// The benchmark in BENCHMARKS.md ("Quiescing"): `bench/quiesce.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bench/quiesce.sh runs it"]
async fn quiesce_window_of_a_large_volume() {
    let mib: u64 = std::env::var("SIZE_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let Some(env) = quiesce_env(true, &[]).await else { return };
    let done = std::sync::atomic::AtomicBool::new(false);

    let data = frozen_app(&env, "bench-freeze").await;
    random_file(&data.join("big"), mib);
    let started = std::time::Instant::now();
    let (status, moments) = tokio::join!(
        async {
            let s = env.backup("bench-freeze", json!({"includedNamespaces": ["bench-freeze"]})).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            s
        },
        sample(&env, "bench-freeze", || async { data.join(".frozen").exists() }, &done)
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    moments.report(&format!("fsfreeze, {mib} MiB"), started.elapsed());

    done.store(false, std::sync::atomic::Ordering::SeqCst);
    let dirs = quiesced_set(&env, "bench-zero").await;
    for dir in &dirs {
        random_file(&dir.join("big"), mib / 2);
    }
    let started = std::time::Instant::now();
    let (status, moments) = tokio::join!(
        async {
            let s = env.backup("bench-zero", json!({"includedNamespaces": ["bench-zero"]})).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            s
        },
        sample(&env, "bench-zero", || async { replicas(&env, "bench-zero").await.0 == 0 }, &done)
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    moments.report(&format!("scale-to-zero, 2 claims of {} MiB", mib / 2), started.elapsed());
}

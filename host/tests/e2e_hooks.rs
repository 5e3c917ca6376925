//! Hooks end to end: kube-sim runs `kubectl exec` (and so every hook) as a local process in the
//! container's stand-in directory, whose mount paths link to the pod's volumes; the real
//! `stowage server`, `stowage-node-agent` and restore helper binaries; moto as the S3 server.
//! What a pre hook writes into a volume must be in its snapshot, what a post hook writes must
//! not, and post hooks run whatever became of the volume — even after the server was killed.

mod e2e;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{apply_extension, claim_dir, cli, pod_volume_backups, restic, running_pods, wait_for, Env, NS};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::Api;
use serde_json::{json, Value};
use stowage_api::{Backup, PodVolumeBackup};

/// Hooks write into volumes through kube-sim's node filesystem; on a real cluster these tests
/// would need real containers with a shell, so they run on kube-sim only.
async fn hook_env(node_agent: bool) -> Option<Env> {
    if e2e::skipped_on_real_cluster("hook tests read what hooks wrote through kube-sim's node filesystem") {
        return None;
    }
    let mut env = Env::start_with_local_exec().await;
    env.start_server();
    if node_agent {
        env.start_node_agent();
    }
    Some(env)
}

/// A pod `name` in `ns` whose container `app` mounts the claim `<name>-data` at /data, with
/// these labels and annotations; returns the claim's directory once the pod runs.
async fn app(env: &Env, ns: &str, name: &str, labels: Value, annotations: Value) -> PathBuf {
    app_with(env, ns, name, labels, annotations, json!({})).await
}

/// The same, with more fields for the container (a readiness probe).
async fn app_with(env: &Env, ns: &str, name: &str, labels: Value, annotations: Value, container: Value) -> PathBuf {
    let claim = format!("{name}-data");
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    let mut c = json!({"name": "app", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
    c.as_object_mut().unwrap().extend(container.as_object().unwrap().clone());
    env.create_in::<Pod>(ns, json!({"metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}], "containers": [c]}}))
    .await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_for(&format!("pod {ns}/{name} to run"), 60, || async {
        let p = api.get(name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    claim_dir(env, ns, &claim).await
}

/// A hook command as an annotation spells it: `sh -c <script>`, run in the container's
/// stand-in directory (so `data/` is the volume mounted at /data).
fn sh(script: &str) -> String {
    serde_json::to_string(&["/bin/sh", "-c", script]).unwrap()
}



/// The files in the snapshot of `volume` of pod `pod` (the restic CLI lists it).
fn snapshot_files(env: &Env, ns: &str, pvbs: &[PodVolumeBackup], pod: &str) -> Vec<String> {
    let pvb = pvbs.iter().find(|p| p.spec.pod.name.as_deref() == Some(pod)).unwrap_or_else(|| panic!("no volume backup of pod {pod}"));
    let snapshot = pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()).expect("a snapshot");
    restic(env, ns, &["ls", &snapshot])
        .lines()
        .filter_map(|l| Path::new(l.trim()).file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn velero_annotated_hooks_run_around_the_volume_backup_and_after_the_restore() {
    let Some(env) = hook_env(true).await else { return };
    let ns = "hooks-db";
    env.create_namespace(ns).await;
    // Ready once the file `ready` is in its container's directory (not in a volume).
    let probe = json!({"readinessProbe": {"exec": {"command": ["test", "-f", "ready"]}, "periodSeconds": 1, "failureThreshold": 1}});
    let data = app_with(
        &env,
        ns,
        "db",
        json!({"app": "db"}),
        json!({
            "backup.velero.io/backup-volumes": "data",
            // Velero's keys, as a workload annotated for Velero has them; a password in the
            // command (which belongs in the container's environment) is not logged.
            "pre.hook.backup.velero.io/command": sh("MYSQL_PWD=hunter2 sh -c 'echo \"-- Dump completed\" > data/dump.sql' && touch data/pre-ran"),
            "pre.hook.backup.velero.io/timeout": "60",
            "post.hook.backup.velero.io/command": sh("touch data/post-ran"),
            "post.hook.restore.velero.io/command": sh("cp data/dump.sql data/loaded.sql"),
            "post.hook.restore.velero.io/wait-for-ready": "true",
        }),
        probe,
    )
    .await;
    std::fs::write(data.join("table.ibd"), b"rows").unwrap();
    // A pod without hooks of its own: the Restore's hook set runs in it, retried once.
    app(&env, ns, "cache", json!({"app": "cache"}), json!({"backup.velero.io/backup-volumes": "data"})).await;

    let status = env.backup("db-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(status["hookStatus"]["hooksAttempted"], 2, "the cache pod has no backup hooks: {status}");
    assert_eq!(status["hookStatus"]["hooksFailed"], json!(null), "{status}");
    let runs = status["hookStatus"]["runs"].as_array().unwrap();
    assert_eq!((runs[0]["phase"].as_str(), runs[0]["exitCode"].as_i64()), (Some("pre"), Some(0)), "{runs:?}");
    assert_eq!((runs[1]["phase"].as_str(), runs[1]["container"].as_str()), (Some("post"), Some("app")), "{runs:?}");
    assert!(data.join("post-ran").is_file(), "the post hook ran");
    let pvbs = pod_volume_backups(&env, "db-backup").await;
    let files = snapshot_files(&env, ns, &pvbs, "db");
    assert!(files.contains(&"dump.sql".to_string()) && files.contains(&"pre-ran".to_string()), "the pre hook ran before the copy: {files:?}");
    assert!(!files.contains(&"post-ran".to_string()), "the post hook ran after the copy: {files:?}");
    let backup: Value = env.get_in::<Backup>(NS, "db-backup").await.unwrap();
    let owed: Vec<&String> = backup["metadata"]["annotations"].as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| k.starts_with("owed-hooks")).collect();
    assert!(owed.is_empty(), "no debt is left once the post hooks ran: {owed:?}");

    let describe = cli(&env, &["backup", "describe", "db-backup"]);
    assert!(describe.contains("Hooks attempted:  2"), "{describe}");
    assert!(describe.contains("pre hook (annotation) pod hooks-db/db container app: succeeded"), "{describe}");
    let logs = cli(&env, &["backup", "logs", "db-backup"]);
    assert!(logs.contains("MYSQL_PWD=***") && !logs.contains("hunter2"), "the password is not logged:\n{logs}");

    // Restore: the dump comes back byte for byte, and the post-restore hook loads it once the
    // pod is ready; a spec init hook runs after the restore helper.
    env.delete_namespace_and_wait(ns).await;
    env.create::<stowage_api::Restore>(json!({"metadata": {"name": "db-restore", "namespace": NS},
        "spec": {"backupName": "db-backup", "hooks": {"resources": [{"name": "warm-up", "includedNamespaces": [ns],
            "postHooks": [{"init": {"initContainers": [{"name": "warm-up", "image": "busybox", "command": ["true"]}]}},
                {"exec": {"command": ["/bin/sh", "-c", "test -f data/attempted || { touch data/attempted; exit 1; }; touch data/warmed"],
                    "maxRetries": 1}}]}]}}}))
    .await;
    let pod = running_pods(&env, ns, 2).await.into_iter().find(|p| p.metadata.name.as_deref() == Some("db")).unwrap();
    let restored = claim_dir(&env, ns, "db-data").await;
    wait_for("the restored volume", 60, || async { restored.join("dump.sql").is_file().then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!restored.join("loaded.sql").exists(), "the post-restore hook waits for the pod to be ready");
    let uid = pod.metadata.uid.clone().unwrap();
    let rootfs = env.sim.as_ref().unwrap().kubelet_root().join("pods").join(uid).join("containers/app/rootfs");
    std::fs::write(rootfs.join("ready"), b"").unwrap();
    let status = env.wait_finished::<stowage_api::Restore>("db-restore").await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    // db: its annotation replaces the set's exec hook (1); cache: the set's hook, retried (2).
    assert_eq!(status["hookStatus"]["hooksAttempted"], 3, "{status}");
    assert_eq!(status["hookStatus"]["hooksFailed"], 1, "{status}");
    assert!(claim_dir(&env, ns, "cache-data").await.join("warmed").is_file(), "the failed attempt was retried");
    let pod = env.get_in::<Pod>(ns, "db").await.unwrap();
    let inits: Vec<&str> = pod["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(inits, ["restore-wait", "warm-up"], "the init hook goes after the restore helper");
    assert_eq!(std::fs::read(restored.join("table.ibd")).unwrap(), b"rows");
    assert_eq!(std::fs::read_to_string(restored.join("loaded.sql")).unwrap(), "-- Dump completed\n", "the post-restore hook ran");
    let describe = cli(&env, &["restore", "describe", "db-restore"]);
    assert!(describe.contains("post-restore hook (annotation) pod hooks-db/db container app: succeeded"), "{describe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_and_hanging_pre_hooks_fail_their_pods_volumes_and_post_hooks_still_run() {
    let Some(env) = hook_env(true).await else { return };
    let ns = "hooks-fail";
    env.create_namespace(ns).await;
    let post = sh("touch data/post-ran");
    let strict = app(&env, ns, "strict", json!({}), json!({"backup.stowage.io/backup-volumes": "data",
        "pre.hook.backup.stowage.io/command": sh("echo flushing; echo 'lock: table is busy' >&2; exit 3"),
        "post.hook.backup.stowage.io/command": post})).await;
    let lenient = app(&env, ns, "lenient", json!({}), json!({"backup.stowage.io/backup-volumes": "data",
        "pre.hook.backup.stowage.io/command": sh("exit 1"), "pre.hook.backup.stowage.io/on-error": "Continue",
        "post.hook.backup.stowage.io/command": post})).await;
    let slow = app(&env, ns, "slow", json!({}), json!({"backup.stowage.io/backup-volumes": "data",
        "pre.hook.backup.stowage.io/command": "[\"sleep\", \"30\"]", "pre.hook.backup.stowage.io/timeout": "2s",
        "post.hook.backup.stowage.io/command": post})).await;

    let started = Instant::now();
    let status = env.backup("fail-backup", json!({"includedNamespaces": [ns]})).await;
    assert!(started.elapsed() < Duration::from_secs(25), "the hanging hook was stopped at its timeout");
    assert_eq!(status["phase"], "PartiallyFailed", "{status}\n{}", env.server_log());
    assert_eq!(status["hookStatus"]["hooksAttempted"], 6, "{status}");
    assert_eq!(status["hookStatus"]["hooksFailed"], 3, "{status}");
    let pvbs = pod_volume_backups(&env, "fail-backup").await;
    let pods: Vec<&str> = pvbs.iter().filter_map(|p| p.spec.pod.name.as_deref()).collect();
    assert_eq!(pods, ["lenient"], "a failed pre hook (onError Fail) keeps its pod's volumes out");
    for dir in [&strict, &lenient, &slow] {
        assert!(dir.join("post-ran").is_file(), "post hooks run once the pre hooks ran: {}", dir.display());
    }
    let results = env.read_zstd_json("backups/fail-backup/fail-backup-results.json.zst").await;
    let errors = results["errors"][ns].to_string();
    assert!(errors.contains("pre hook (annotation) in pod hooks-fail/strict container \\\"app\\\" failed: exit code 3: lock: table is busy"), "{results}");
    assert!(errors.contains("pod hooks-fail/slow") && errors.contains("timed out after 2s"), "{results}");
    assert!(errors.contains("pod volume hooks-fail/strict/data is not backed up: a pre hook of pod hooks-fail/strict failed"), "{results}");
    let warnings = results["warnings"][ns].to_string();
    assert!(warnings.contains("pod hooks-fail/lenient") && warnings.contains("onError: Continue"), "{results}");
    let describe = cli(&env, &["backup", "describe", "fail-backup"]);
    assert!(describe.contains("pre hook (annotation) pod hooks-fail/strict container app: failed: exit code 3"), "{describe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_that_fails_still_gets_its_post_hook() {
    // No node agent: the volume backup is canceled at its timeout.
    let Some(env) = hook_env(false).await else { return };
    let ns = "hooks-volfail";
    env.create_namespace(ns).await;
    let data = app(&env, ns, "db", json!({}), json!({"backup.stowage.io/backup-volumes": "data",
        "pre.hook.backup.stowage.io/command": sh("touch data/pre-ran"), "post.hook.backup.stowage.io/command": sh("touch data/post-ran")}))
    .await;
    env.create::<Backup>(json!({"metadata": {"name": "volfail", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "3s"}},
        "spec": {"includedNamespaces": [ns]}}))
    .await;
    let status = env.wait_finished::<Backup>("volfail").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["podVolumeBackupsFailed"], 1, "{status}");
    assert!(data.join("pre-ran").is_file() && data.join("post-ran").is_file(), "{}", env.server_log());
    assert_eq!(status["hookStatus"]["hooksAttempted"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_hooks_owed_by_a_killed_server_run_when_it_starts_again() {
    // No node agent: the backup waits for its volume, between the pre and post hooks (up to
    // its timeout: the second attempt, after the restart, gives up on it).
    let Some(mut env) = hook_env(false).await else { return };
    let ns = "hooks-restart";
    env.create_namespace(ns).await;
    let data = app(&env, ns, "db", json!({}), json!({"backup.stowage.io/backup-volumes": "data",
        "pre.hook.backup.stowage.io/command": sh("touch data/frozen && echo pre >> data/runs"),
        "post.hook.backup.stowage.io/command": sh("rm data/frozen && touch data/thawed && echo post >> data/runs")}))
    .await;
    env.create::<Backup>(json!({"metadata": {"name": "killed", "namespace": NS, "annotations": {"stowage.io/pod-volume-timeout": "8s"}},
        "spec": {"includedNamespaces": [ns]}})).await;
    wait_for("the pre hook to run", 60, || async { data.join("frozen").is_file().then_some(()) }).await;
    let backup = env.get_in::<Backup>(NS, "killed").await.unwrap();
    let owed: Vec<String> = backup["metadata"]["annotations"].as_object().unwrap().keys().filter(|k| k.starts_with("owed-hooks.stowage.io/")).cloned().collect();
    assert_eq!(owed.len(), 1, "the debt is journalled before the pre hook runs: {backup}");

    env.kill_server();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!data.join("thawed").exists(), "nothing ran the post hook yet");
    env.start_server();
    wait_for("the owed post hook to run", 60, || async { data.join("thawed").is_file().then_some(()) }).await;
    // Then the backup is started again: its own pre and post hooks run around the volume.
    let status = env.wait_finished::<Backup>("killed").await;
    assert_eq!(status["phase"], "PartiallyFailed", "the volume was never copied: {status}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert!(!data.join("frozen").exists());
    let runs_in_pod = std::fs::read_to_string(data.join("runs")).unwrap();
    assert_eq!(runs_in_pod.lines().collect::<Vec<_>>(), ["pre", "post", "pre", "post"], "the owed post hook ran before the second attempt");
    let runs = status["hookStatus"]["runs"].as_array().unwrap();
    assert!(runs.iter().any(|r| r["phase"] == "post" && r["afterRestart"] == true), "{status}");
    // The owed post hook and the second attempt's two (the first attempt's pre hook is in the
    // pod's file above and in the first server's log: it died before recording its runs).
    assert_eq!(status["hookStatus"]["hooksAttempted"], 3, "{status}");
    let backup = env.get_in::<Backup>(NS, "killed").await.unwrap();
    assert!(!backup["metadata"]["annotations"].to_string().contains("owed-hooks"), "the debt is cleared: {backup}");
    let describe = cli(&env, &["backup", "describe", "killed"]);
    assert!(describe.contains("(after a server restart)"), "{describe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_hooks_select_by_label_and_pods_sharing_a_claim_are_one_group() {
    let Some(env) = hook_env(true).await else { return };
    let ns = "hooks-group";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "shared"}, "spec": {"accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    for name in ["web-a", "web-b"] {
        env.create_in::<Pod>(ns, json!({"metadata": {"name": name, "labels": {"app": "web"}, "annotations": {"backup.stowage.io/backup-volumes": "data"}},
            "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
                "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}))
        .await;
    }
    // No volume of its own to back up: its hook still runs.
    let other = app(&env, ns, "other", json!({"app": "other"}), json!({"pre.hook.backup.stowage.io/command": sh("touch data/hooked")})).await;
    running_pods(&env, ns, 3).await;
    let shared = claim_dir(&env, ns, "shared").await;
    let hooks = json!({"resources": [{"name": "web-hooks", "includedNamespaces": [ns], "labelSelector": {"matchLabels": {"app": "web"}},
        "pre": [{"exec": {"command": ["/bin/sh", "-c", "touch data/pre-$POD_NAME"]}}],
        "post": [{"exec": {"command": ["/bin/sh", "-c", "touch data/post-$POD_NAME"]}}]}]});
    let status = env.backup("group-backup", json!({"includedNamespaces": [ns], "hooks": hooks})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(status["hookStatus"]["hooksAttempted"], 5, "two hooks on each web pod, its own on the other: {status}");
    let pvbs = pod_volume_backups(&env, "group-backup").await;
    assert_eq!(pvbs.len(), 1, "the shared claim is copied once");
    let pod = pvbs[0].spec.pod.name.clone().unwrap();
    let files = snapshot_files(&env, ns, &pvbs, &pod);
    assert!(files.contains(&"pre-web-a".into()) && files.contains(&"pre-web-b".into()), "every pre hook of the group ran before the copy: {files:?}");
    assert!(!files.iter().any(|f| f.starts_with("post-")), "every post hook ran after it: {files:?}");
    assert!(shared.join("post-web-a").is_file() && shared.join("post-web-b").is_file());
    let hooked: Vec<String> = std::fs::read_dir(&other).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(hooked, ["hooked"], "the unlabelled pod got its own hook, not the set's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hook_extensions_run_around_the_volumes_and_denied_calls_are_recorded() {
    let Some(env) = hook_env(true).await else { return };
    let ns = "hooks-ext";
    env.create_namespace(ns).await;
    // A Rhai hook for pods labelled tier=db: its pre hook execs into the granted container, its
    // post hook tries another container, which it may not touch.
    let script = r#"
fn pre_backup(ctx, target) {
    let out = exec(#{ namespace: target.namespace, pod: target.name, container: "app", command: ["/bin/sh", "-c", "touch data/rhai-pre"] });
    if out.exit_code != 0 { throw `exit ${out.exit_code}`; }
}
fn post_backup(ctx, target) {
    exec(#{ namespace: target.namespace, pod: target.name, container: "sidecar", command: ["/bin/sh", "-c", "touch data/rhai-post"] });
}
"#;
    let rhai = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "quiesce", "namespace": NS, "labels": {"stowage.io/extension": "hook"}},
        "data": {"script.rhai": script, "config.yaml": "appliesTo:\n  labelSelector:\n    matchLabels: {tier: db}\ncapabilities:\n  exec: [{container: app}]\nonError: Fail\n"}});
    // The WASM hook fixture, bound by the pod's annotation and given its command by it.
    let wasm = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../extensions/dist/fixture-hook.wasm"))
        .expect("the hook fixture is built (bash extensions/build.sh)");
    use base64::Engine;
    let component = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sync-hook", "namespace": NS, "labels": {"stowage.io/extension": "hook"}},
        "binaryData": {"extension.wasm": base64::engine::general_purpose::STANDARD.encode(wasm)},
        "data": {"config.yaml": "optIn: true\ncapabilities:\n  exec: [{container: app}]\nparameters:\n  container: app\n"}});
    for cm in [&rhai, &component] {
        apply_extension(&env, cm).await;
    }
    let data = app(&env, ns, "db", json!({"tier": "db"}), json!({"backup.stowage.io/backup-volumes": "data",
        "hooks.stowage.io/extensions": "sync-hook", "hooks.stowage.io/param.command": "touch data/wasm-pre"}))
    .await;

    let status = env.backup("ext-hooks", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "the denied post hook fails (onError: Fail): {status}\n{}", env.server_log());
    let pvbs = pod_volume_backups(&env, "ext-hooks").await;
    let files = snapshot_files(&env, ns, &pvbs, "db");
    assert!(files.contains(&"rhai-pre".into()) && files.contains(&"wasm-pre".into()), "both pre hooks ran before the copy: {files:?}");
    assert!(!data.join("rhai-post").exists(), "the denied exec did not run");
    let results = env.read_zstd_json("backups/ext-hooks/ext-hooks-results.json.zst").await;
    let errors = results["errors"][ns].to_string();
    assert!(errors.contains("post hook (extension stowage/quiesce) on pod hooks-ext/db failed") && errors.contains("denied"), "{results}");
    let runs = status["hookStatus"]["runs"].as_array().unwrap();
    let hooks: Vec<String> = runs.iter().map(|r| format!("{} {}", r["phase"].as_str().unwrap(), r["hook"].as_str().unwrap())).collect();
    assert!(hooks.contains(&"pre extension stowage/quiesce".into()) && hooks.contains(&"pre extension stowage/sync-hook".into()), "{hooks:?}");
    let names: Vec<&str> = status["extensions"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&"stowage/quiesce") && names.contains(&"stowage/sync-hook"), "provenance lists the hook extensions: {status}");
}

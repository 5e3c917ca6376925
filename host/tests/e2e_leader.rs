//! Two `stowage server` processes against one cluster (kube-sim, or a real one): exactly one
//! leads through the `stowage-server` Lease and runs the controllers; the other is ready and
//! takes over when the leader is killed; a leader that loses its Lease stops at once; a backup
//! and a restore whose leader dies are finished by the next one.

mod e2e;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use e2e::{claim_dir, cli, free_port, http_get, pod_volume_backups, restic, running_pods, wait_for, Env, NS};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use stowage_api::podvolume::PodVolumePhase;
use stowage_api::{Backup, PodVolumeRestore, Restore};
use stowage_test_support::noise;

/// Short leases, so the tests take seconds.
const LEASE: [&str; 6] = ["--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "500ms"];

async fn holder(env: &Env) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    api.get_opt("stowage-server").await.ok()??.spec?.holder_identity
}

fn leader_gauge(metrics: &str) -> Option<u32> {
    metrics.lines().find_map(|l| l.strip_prefix("stowage_server_leader ")?.trim().parse().ok())
}

struct Server {
    identity: &'static str,
    metrics: std::net::SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(env: &Env, identity: &'static str) -> Server {
    let metrics = free_port();
    Server { identity, metrics, child: env.spawn_server(identity, metrics, &LEASE) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_servers_leads_and_the_other_takes_over_when_it_dies() {
    let env = Env::start().await;
    let mut servers = vec![server(&env, "stowage-a"), server(&env, "stowage-b")];
    let first = wait_for("a leader", 30, || async { holder(&env).await }).await;
    // Both serve and are ready; only the holder says it leads.
    for s in &servers {
        assert_eq!(http_get(s.metrics, "/readyz").await, "ok");
    }
    let gauges = wait_for("both gauges", 30, || async {
        let mut g = Vec::new();
        for s in &servers {
            g.push((s.identity, leader_gauge(&http_get(s.metrics, "/metrics").await)?));
        }
        (g.iter().map(|(_, v)| v).sum::<u32>() == 1).then_some(g)
    })
    .await;
    let leading: Vec<&str> = gauges.iter().filter(|(_, v)| *v == 1).map(|(i, _)| *i).collect();
    assert_eq!(leading, vec![first.as_str()], "exactly the Lease holder leads: {gauges:?}");
    let version = cli(&env, &["version"]);
    assert!(version.contains(&format!("Server: v{}, led by {first}", env!("CARGO_PKG_VERSION"))), "{version}");
    let status = env.backup("under-first", json!({"includedNamespaces": ["default"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}");

    // The leader dies without a word: the standby takes over once the Lease runs out.
    let at = servers.iter().position(|s| s.identity == first).unwrap();
    let mut dead = servers.remove(at);
    let killed = Instant::now();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let standby = &servers[0];
    let second = wait_for("the standby to lead", 30, || async { holder(&env).await.filter(|h| *h == standby.identity) }).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(8), "taken over in {took:?}, within the lease duration (4s) and a few retries");
    wait_for("the standby's gauge", 10, || async { (leader_gauge(&http_get(standby.metrics, "/metrics").await)? == 1).then_some(()) }).await;
    let status = env.backup("under-second", json!({"includedNamespaces": ["default"]})).await;
    assert_eq!(status["phase"], "Completed", "the new leader runs the controllers: {status}\n{}", env.spawned_server_log(standby.identity));
    let version = cli(&env, &["version"]);
    assert!(version.contains(&format!("Server: v{}, led by {second}", env!("CARGO_PKG_VERSION"))), "{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_its_lease_stops_at_once() {
    let env = Env::start().await;
    let mut s = server(&env, "stowage-a");
    wait_for("it to lead", 30, || async { (holder(&env).await? == "stowage-a").then_some(()) }).await;
    // Someone else holds the Lease now (as after a partition the leader did not notice).
    let api: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    let mut lease = api.get("stowage-server").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now()));
    api.replace("stowage-server", &PostParams::default(), &lease).await.unwrap();
    let seen = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(seen.elapsed() < Duration::from_secs(10), "the old leader still runs: {}", env.spawned_server_log("stowage-a"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "it exits so that Kubernetes restarts it");
    assert!(seen.elapsed() < Duration::from_secs(3), "within a retry period or two, before the intruder's lease could be doubted");
    let log = env.spawned_server_log("stowage-a");
    assert!(log.contains("no longer leading: the Lease is now held by intruder"), "{log}");
}

/// A pod `name` in `ns` whose container mounts the claim `<name>-data` at /data (opted in to
/// volume backups), with more annotations; returns the claim's directory once it runs.
async fn app(env: &Env, ns: &str, name: &str, annotations: Value) -> PathBuf {
    let claim = format!("{name}-data");
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    let mut a = json!({"backup.stowage.io/backup-volumes": "data"});
    a.as_object_mut().unwrap().extend(annotations.as_object().unwrap().clone());
    env.create_in::<Pod>(ns, json!({"metadata": {"name": name, "annotations": a},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}))
    .await;
    wait_for(&format!("pod {ns}/{name} to run"), 60, || async {
        let p = Api::<Pod>::namespaced(env.client.clone(), ns).get(name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    claim_dir(env, ns, &claim).await
}


/// Kills the server holding the Lease; returns its identity.
async fn kill_leader(env: &Env, servers: &mut Vec<Server>) -> String {
    let leader = holder(env).await.expect("a leader");
    let at = servers.iter().position(|s| s.identity == leader).expect("the leader is one of ours");
    let mut dead = servers.remove(at);
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_and_a_restore_whose_leader_dies_are_finished_by_the_next_leader() {
    if e2e::skipped_on_real_cluster("volume data and hooks go through kube-sim's node filesystem") {
        return;
    }
    let mut env = Env::start_with_local_exec().await;
    env.start_node_agent();
    let mut servers = vec![server(&env, "stowage-a"), server(&env, "stowage-b")];
    wait_for("a leader", 30, || async { holder(&env).await }).await;
    let ns = "ha";
    env.create_namespace(ns).await;
    // `fast` is copied at once; `slow`'s pre hook keeps its group busy while the leader dies,
    // and its post-restore hook keeps the restore busy the same way.
    let fast = app(&env, ns, "fast", json!({})).await;
    let slow = app(&env, ns, "slow", json!({
        "pre.hook.backup.stowage.io/command": r#"["/bin/sh", "-c", "sleep 6"]"#,
        "pre.hook.backup.stowage.io/timeout": "60s",
        "post.hook.restore.stowage.io/command": r#"["/bin/sh", "-c", "sleep 6; touch data/hooked"]"#,
        "post.hook.restore.stowage.io/exec-timeout": "60s",
    }))
    .await;
    let (fast_data, slow_data) = (noise(3 << 20, 1), noise(2 << 20, 2));
    std::fs::write(fast.join("table.db"), &fast_data).unwrap();
    std::fs::write(slow.join("queue.db"), &slow_data).unwrap();

    env.create::<Backup>(json!({"metadata": {"name": "ha", "namespace": NS}, "spec": {"includedNamespaces": [ns]}})).await;
    let first = wait_for("the fast pod's volume to be copied", 60, || async {
        pod_volume_backups(&env, "ha").await.into_iter().find(|p| {
            p.spec.pod.name.as_deref() == Some("fast") && p.status.as_ref().and_then(|s| s.phase) == Some(PodVolumePhase::Completed)
        })
    })
    .await;
    let phase = env.get_in::<Backup>(NS, "ha").await.unwrap()["status"]["phase"].clone();
    assert_eq!(phase, "WaitingForVolumes", "the slow pod's hook still runs");
    let killed = kill_leader(&env, &mut servers).await;
    let status = env.wait_finished::<Backup>("ha").await;
    let survivor = servers[0].identity;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.spawned_server_log(survivor));
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(status["podVolumeBackupsCompleted"], 2, "{status}");
    let pvbs = pod_volume_backups(&env, "ha").await;
    let fast_pvbs: Vec<String> = pvbs.iter().filter(|p| p.spec.pod.name.as_deref() == Some("fast")).map(|p| p.name_any()).collect();
    assert_eq!(fast_pvbs, vec![first.name_any()], "the volume copied under {killed} is reused, not copied again");
    let log = env.read_zstd_text("backups/ha/ha-logs.zst").await;
    assert!(log.contains("attempt 2 of 3") && log.contains(&format!("reusing PodVolumeBackup {}", first.name_any())), "{log}");
    let recorded = env.read_zstd_json("backups/ha/ha-podvolumebackups.json.zst").await;
    assert_eq!(recorded.as_array().unwrap().len(), 2, "{recorded}");
    restic(&env, ns, &["check", "--read-data"]);

    // The restore: its leader dies while the post-restore hook runs, after the volumes are back.
    servers.push(server(&env, "stowage-c"));
    env.delete_namespace_and_wait(ns).await;
    env.create::<Restore>(json!({"metadata": {"name": "ha-restore", "namespace": NS}, "spec": {"backupName": "ha"}})).await;
    wait_for("the restored volumes", 90, || async {
        let r = env.get_in::<Restore>(NS, "ha-restore").await?;
        (r["status"]["podVolumeRestoresCompleted"] == 2).then_some(())
    })
    .await;
    let status = env.get_in::<Restore>(NS, "ha-restore").await.unwrap()["status"].clone();
    assert!(!status["phase"].as_str().is_some_and(|p| p == "Completed"), "the post-restore hook still runs: {status}");
    kill_leader(&env, &mut servers).await;
    let status = env.wait_finished::<Restore>("ha-restore").await;
    let logs: String = servers.iter().map(|s| env.spawned_server_log(s.identity)).collect();
    assert_eq!(status["phase"], "Completed", "{status}\n{logs}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(status.get("warnings"), None, "what the first attempt created is no conflict: {status}");
    let restore_log = env.read_zstd_text("restores/ha-restore/ha-restore-logs.zst").await;
    assert!(restore_log.contains("attempt 2 of 3"), "{restore_log}");
    let pvrs = Api::<PodVolumeRestore>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pvrs.len(), 2, "the volumes restored by the first attempt are not restored again: {pvrs:?}");
    running_pods(&env, ns, 2).await;
    assert_eq!(std::fs::read(claim_dir(&env, ns, "fast-data").await.join("table.db")).unwrap(), fast_data);
    let slow = claim_dir(&env, ns, "slow-data").await;
    assert_eq!(std::fs::read(slow.join("queue.db")).unwrap(), slow_data);
    assert!(slow.join("hooked").exists(), "the post-restore hook ran");
}

/// Stops a server the way Kubernetes does (SIGTERM) and waits for it to exit.
fn terminate(mut s: Server) {
    let status = std::process::Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(exited.elapsed() < Duration::from_secs(10), "{} did not stop on SIGTERM", s.identity);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_both_servers_loses_no_backup_schedule_or_restore() {
    let env = Env::start().await;
    env.create_namespace("rolling").await;
    env.create_in::<k8s_openapi::api::core::v1::ConfigMap>("rolling", json!({"metadata": {"name": "settings"}, "data": {"a": "1"}})).await;
    let mut servers = vec![server(&env, "stowage-a"), server(&env, "stowage-b")];
    wait_for("a leader", 30, || async { holder(&env).await }).await;
    assert_eq!(env.backup("before", json!({"includedNamespaces": ["rolling"]})).await["phase"], "Completed");
    cli(&env, &["schedule", "create", "often", "--schedule", "@every 2s", "--include-namespaces", "rolling"]);
    env.create::<Backup>(json!({"metadata": {"name": "during", "namespace": NS}, "spec": {"includedNamespaces": ["rolling"]}})).await;

    // A rolling update: a new replica comes up and is ready, then an old one is stopped.
    for (old, new) in [("stowage-a", "stowage-a2"), ("stowage-b", "stowage-b2")] {
        let replacement = server(&env, new);
        assert_eq!(http_get(replacement.metrics, "/readyz").await, "ok");
        servers.push(replacement);
        let leading = holder(&env).await;
        let at = servers.iter().position(|s| s.identity == old).unwrap();
        let stopped = Instant::now();
        terminate(servers.remove(at));
        let leader = wait_for("a leader after the stop", 30, || async { holder(&env).await.filter(|h| h != old && !h.is_empty()) }).await;
        if leading.as_deref() == Some(old) {
            // The stopped leader gave its Lease up: no waiting for it to run out (4s).
            assert!(stopped.elapsed() < Duration::from_secs(3), "{leader} took over in {:?}", stopped.elapsed());
            assert!(env.spawned_server_log(old).contains("gave up the Lease"), "{}", env.spawned_server_log(old));
        }
    }
    let status = env.wait_finished::<Backup>("during").await;
    assert_eq!(status["phase"], "Completed", "{status}");
    // DownloadRequests are answered by whichever server leads now.
    let logs = cli(&env, &["backup", "logs", "during"]);
    assert!(logs.contains("backup started"), "{logs}");
    let scheduled = wait_for("the schedule to back up under the new servers", 30, || async {
        let backups = Api::<Backup>::namespaced(env.client.clone(), NS).list(&ListParams::default().labels("stowage.io/schedule-name=often")).await.ok()?;
        let done: Vec<Backup> = backups.items.into_iter().filter(|b| b.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal())).collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    for b in &scheduled {
        assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(stowage_api::BackupPhase::Completed), "{b:?}");
    }
    let status = env.restore("after", json!({"backupName": "before", "namespaceMapping": {"rolling": "rolled"}})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    assert!(env.get_in::<k8s_openapi::api::core::v1::ConfigMap>("rolled", "settings").await.is_some());
    for name in ["before", "during"] {
        assert!(env.get_in::<Backup>(NS, name).await.is_some(), "backup {name} is kept");
    }
}

//! Network faults, through the real server: the S3 server unreachable, answering 503 or slow
//! while a backup uploads, and the API server unreachable while a backup runs. Each fault is a
//! loopback proxy ([`FaultProxy`]) in front of the real service, switched at run time. Every
//! backup either completes or fails saying what happened, within a bound; nothing backed up
//! before the fault is lost, and a backup that completed restores what it read.

mod e2e;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use e2e::{wait_for, Env, NS};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use stowage_api::Backup;
use stowage_test_support::{noise, FaultMode, FaultProxy};

/// The S3 server's address, from its endpoint URL.
fn s3_addr(env: &Env) -> SocketAddr {
    let endpoint = env.s3.endpoint();
    let host = endpoint.split("://").nth(1).unwrap_or(endpoint).trim_end_matches('/');
    host.to_socket_addrs().unwrap().next().unwrap()
}

/// A cluster whose default location reaches the S3 server through a fault proxy, with the
/// server running and the location Available.
async fn env_with_s3_proxy() -> (Env, FaultProxy) {
    let mut env = Env::start().await;
    let proxy = FaultProxy::start(s3_addr(&env)).await.unwrap();
    let bucket = env.bucket.clone();
    env.apply_location_at("default", &bucket, true, "ReadWrite", &proxy.url()).await;
    env.start_server();
    env.wait_location_available("default").await;
    (env, proxy)
}

/// `count` ConfigMaps labelled `fault=data` in a new namespace `ns`, each with `size` bytes
/// of poorly compressible text.
async fn data_namespace(env: &Env, ns: &str, count: u64, size: usize) {
    env.create_namespace(ns).await;
    for i in 0..count {
        let text = base64::engine::general_purpose::STANDARD.encode(noise(size * 3 / 4, i + 1));
        env.create_in::<ConfigMap>(ns, json!({"metadata": {"name": format!("data-{i}"), "labels": {"fault": "data"}},
            "data": {"blob": text}}))
        .await;
    }
}

/// The `fault=data` ConfigMaps of a namespace: name -> data.
async fn config_maps(env: &Env, ns: &str) -> BTreeMap<String, Value> {
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
    let list = api.list(&ListParams::default().labels("fault=data")).await.unwrap();
    list.items.into_iter().map(|c| (c.metadata.name.clone().unwrap(), json!(c.data))).collect()
}

/// Restores `backup`'s ConfigMaps from `from` into `to` and checks they are those of `from`.
async fn restore_and_compare(env: &Env, backup: &str, from: &str, to: &str) {
    let name = format!("{backup}-to-{to}");
    let status = env.restore(&name, json!({"backupName": backup, "includedResources": ["configmaps"],
        "namespaceMapping": {from: to}})).await;
    assert_eq!(status["phase"], "Completed", "restore {name}: {status}\n{}", env.server_log());
    let (original, restored) = (config_maps(env, from).await, config_maps(env, to).await);
    assert!(!original.is_empty());
    assert_eq!(original.keys().collect::<Vec<_>>(), restored.keys().collect::<Vec<_>>(), "restore {name}");
    assert!(original == restored, "restore {name}: the restored ConfigMaps differ from {from}'s");
}

/// A Backup's status and phase ("" before it has one).
async fn backup_status(env: &Env, name: &str) -> (String, Value) {
    let status = env.get_in::<Backup>(NS, name).await.map(|b| b["status"].clone()).unwrap_or(Value::Null);
    (status["phase"].as_str().unwrap_or_default().to_string(), status)
}

fn finished(phase: &str) -> bool {
    matches!(phase, "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation")
}

/// Waits at most `secs` for a Backup to reach one of `phases` or finish; returns its phase
/// and status.
async fn wait_phase(env: &Env, name: &str, phases: &[&str], secs: u64) -> (String, Value) {
    wait_for(&format!("backup {name} to be {phases:?} or finished"), secs, || async {
        let (phase, status) = backup_status(env, name).await;
        (phases.contains(&phase.as_str()) || finished(&phase)).then_some((phase, status))
    })
    .await
}

/// Creates a backup of `ns` with the proxy slowing the S3 traffic so the upload takes a while,
/// switches the proxy to `fault` once the backup is uploading, back to `Pass` after `outage`,
/// and waits at most `bound` seconds from the fault for the backup to finish. Returns its
/// status and how long it took from the fault.
async fn backup_through_fault(env: &Env, proxy: &FaultProxy, name: &str, ns: &str, fault: FaultMode, outage: Duration, bound: u64)
    -> (Value, Duration) {
    proxy.set(FaultMode::Delay(Duration::from_millis(100)));
    env.create::<Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": {"includedNamespaces": [ns]}})).await;
    let (phase, status) = wait_phase(env, name, &["Finalizing"], 60).await;
    assert_eq!(phase, "Finalizing", "backup {name} finished before it uploaded through the fault: {status}");
    proxy.set(fault);
    let at = Instant::now();
    eprintln!("backup {name} is uploading: proxy switched to {fault:?} for {outage:?}");
    let mut ended = None;
    while at.elapsed() < outage {
        if ended.is_none() && finished(&backup_status(env, name).await.0) {
            ended = Some(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(FaultMode::Pass);
    let left = bound.saturating_sub(at.elapsed().as_secs());
    let (phase, status) = wait_for(&format!("backup {name} to finish within {bound}s of the fault"), left, || async {
        let (phase, status) = backup_status(env, name).await;
        finished(&phase).then_some((phase, status))
    })
    .await;
    let took = ended.unwrap_or_else(|| at.elapsed());
    eprintln!("backup {name}: {phase} {took:.1?} after the fault: {}", status["failureReason"].as_str().unwrap_or(""));
    (status, took)
}

/// What an S3 fault must leave: the backup made before it restores; the faulted one either
/// completed (and restores what it read) or failed naming the location and what went wrong.
async fn check_after_s3_fault(env: &Env, status: &Value, faulted: &str, expected: &[&str]) -> &'static str {
    restore_and_compare(env, "before", "data", "data-before").await;
    match status["phase"].as_str() {
        Some("Completed") => {
            restore_and_compare(env, faulted, "data", "data-after").await;
            "Completed after retrying"
        }
        Some("Failed") => {
            let reason = status["failureReason"].as_str().unwrap_or_default();
            assert!(reason.contains("storage location \"default\""), "the failure names the location: {status}");
            assert!(expected.iter().any(|e| reason.contains(e)), "the failure says what went wrong ({expected:?}): {status}");
            "Failed, saying why"
        }
        _ => panic!("backup {faulted} ended neither Completed nor Failed: {status}\n{}", env.server_log()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_for_30s_mid_upload_completes_or_fails_clearly() {
    let (env, proxy) = env_with_s3_proxy().await;
    data_namespace(&env, "data", 40, 96 * 1024).await;
    let status = env.backup("before", json!({"includedNamespaces": ["data"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());

    let (status, took) =
        backup_through_fault(&env, &proxy, "during-outage", "data", FaultMode::Refuse, Duration::from_secs(30), 180).await;
    let outcome = check_after_s3_fault(&env, &status, "during-outage", &["cannot reach"]).await;
    eprintln!("S3 unreachable for 30s: backup {outcome} ({took:.1?} after the outage began)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_answering_503_for_10s_completes_or_fails_clearly() {
    let (env, proxy) = env_with_s3_proxy().await;
    data_namespace(&env, "data", 40, 96 * 1024).await;
    let status = env.backup("before", json!({"includedNamespaces": ["data"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());

    let (status, took) =
        backup_through_fault(&env, &proxy, "during-503", "data", FaultMode::Fail5xx(503), Duration::from_secs(10), 180).await;
    let outcome = check_after_s3_fault(&env, &status, "during-503", &["503", "Service Unavailable", "ServiceUnavailable"]).await;
    eprintln!("S3 answering 503 for 10s: backup {outcome} ({took:.1?} after the errors began)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_s3_still_completes() {
    let (env, proxy) = env_with_s3_proxy().await;
    data_namespace(&env, "data", 10, 32 * 1024).await;
    proxy.set(FaultMode::Delay(Duration::from_millis(200)));
    let at = Instant::now();
    env.create::<Backup>(json!({"metadata": {"name": "slow", "namespace": NS}, "spec": {"includedNamespaces": ["data"]}})).await;
    let (phase, status) = wait_phase(&env, "slow", &[], 120).await;
    assert_eq!(phase, "Completed", "{status}\n{}", env.server_log());
    eprintln!("S3 delaying every chunk by 200ms: backup Completed in {:.1?}", at.elapsed());
    restore_and_compare(&env, "slow", "data", "data-copy").await;
    eprintln!("and restored through the same delay in {:.1?} in all", at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_unreachable_for_30s_mid_backup_and_the_server_carries_on() {
    if std::env::var_os("STOWAGE_E2E_KUBECONFIG").is_some() {
        eprintln!("SKIPPED: the API server proxy and the slow pre hook need kube-sim");
        return;
    }
    let mut env = Env::start_with_local_exec().await;
    // A pod whose pre-backup hook takes 8 s keeps the backup InProgress through the outage.
    env.create_namespace("data").await;
    let hook = serde_json::to_string(&["/bin/sh", "-c", "sleep 8"]).unwrap();
    env.create_in::<Pod>("data", json!({"metadata": {"name": "app", "annotations": {"pre.hook.backup.stowage.io/command": hook,
            "pre.hook.backup.stowage.io/timeout": "60s"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}}))
    .await;
    e2e::running_pods(&env, "data", 1).await;
    for i in 0..5 {
        env.create_in::<ConfigMap>("data", json!({"metadata": {"name": format!("data-{i}"), "labels": {"fault": "data"}},
            "data": {"n": i.to_string()}}))
        .await;
    }

    // The server reaches kube-sim through the proxy; the test's own client does not. Its Lease
    // outlasts the outage: with the defaults (10 s renew deadline) a leader cut off from the
    // API server stops by design, for a restarted one to resume.
    let sim_url = env.sim.as_ref().unwrap().url();
    let proxy = FaultProxy::start(env.sim.as_ref().unwrap().addr()).await.unwrap();
    let kubeconfig = env.path().join("kubeconfig-via-proxy");
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap();
    assert!(text.contains(&sim_url), "{text}");
    std::fs::write(&kubeconfig, text.replace(&sim_url, &proxy.url())).unwrap();
    env.start_server_via(&kubeconfig, &["--lease-duration", "60s", "--lease-renew-deadline", "45s"]);

    env.create::<Backup>(json!({"metadata": {"name": "during-outage", "namespace": NS}, "spec": {"includedNamespaces": ["data"]}}))
        .await;
    // The pre hook runs while the backup waits for its volumes.
    let (phase, status) = wait_phase(&env, "during-outage", &["WaitingForVolumes"], 60).await;
    assert_eq!(phase, "WaitingForVolumes", "{status}\n{}", env.server_log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set(FaultMode::Refuse);
    let at = Instant::now();
    eprintln!("backup during-outage is running its pre hook: API server unreachable for 30s");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(env.server_running(), "the server exited during the outage:\n{}", env.server_log());
    proxy.set(FaultMode::Pass);
    let (phase, status) = loop {
        let (phase, status) = backup_status(&env, "during-outage").await;
        if finished(&phase) {
            break (phase, status);
        }
        assert!(at.elapsed() < Duration::from_secs(180),
            "backup during-outage still {phase} 180s after the outage began: {status}\n{}", env.server_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = at.elapsed();
    eprintln!("backup during-outage: {phase} {took:.1?} after the outage began; status {status}");
    match phase.as_str() {
        "Completed" | "PartiallyFailed" => restore_and_compare(&env, "during-outage", "data", "data-during").await,
        "Failed" => {
            let reason = status["failureReason"].as_str().unwrap_or_default();
            assert!(reason.contains("API server"), "the failure says the API server failed: {status}");
            // The pre hook's exec broke with the connection: noticed then, not at its 60 s timeout.
            let log = env.server_log();
            assert!(log.contains("the connection to the API server broke while it ran"), "{log}");
        }
        _ => panic!("unexpected end of backup during-outage: {status}\n{}", env.server_log()),
    }

    // The server is still up, its watches resumed: a new backup runs and restores.
    assert!(env.server_running(), "the server exited after the outage:\n{}", env.server_log());
    let at = Instant::now();
    let status = env.backup("after-outage", json!({"includedNamespaces": ["data"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    eprintln!("backup after-outage: Completed in {:.1?}", at.elapsed());
    restore_and_compare(&env, "after-outage", "data", "data-after").await;
}

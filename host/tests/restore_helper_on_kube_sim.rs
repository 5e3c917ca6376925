//! The restore flow's init container on a (simulated) node: a pod whose first init container is
//! `stowage-restore-helper` stays Pending until its volume holds the restore marker, then runs,
//! with the marker removed and the restored data in place.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;

/// The helper binary, built beside this test's binary by `cargo build --workspace --bins`.
fn helper_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("stowage-restore-helper");
    assert!(bin.is_file(), "{} is missing: build the workspace's binaries first (scripts/test.sh does)", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_waits_in_the_helper_until_its_volume_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(dir.path().join("kubelet"));
    cfg.images.insert("stowage/restore-helper".into(), helper_binary());
    let sim = KubeSim::start(cfg).await.unwrap();
    let client = sim.client().await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "app"}, "spec": {
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "initContainers": [{"name": "restore-wait", "image": "stowage/restore-helper:v0.1.0",
            "args": ["restore-uid-1", "--interval", "100ms", "--timeout", "30s"],
            "volumeMounts": [{"name": "data", "mountPath": "/restores/data"}]}],
        "containers": [{"name": "app", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let phase = || async { pods.get("app").await.ok().and_then(|p| p.status?.phase) };
    let pv_name = loop {
        if let Some(name) = pvcs.get("data").await.unwrap().spec.and_then(|s| s.volume_name) {
            break name;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(phase().await.as_deref(), Some("Pending"), "the pod waits in its init container");

    // What the node agent does once it has restored the data: write it, then the marker.
    let _ = Api::<PersistentVolume>::all(client.clone()).get(&pv_name).await.unwrap();
    let storage = sim.kubelet_root().join("volumes").join(&pv_name);
    std::fs::write(storage.join("access.log"), b"GET / 200\n").unwrap();
    std::fs::create_dir_all(storage.join(".stowage")).unwrap();
    std::fs::write(storage.join(".stowage/restore-uid-1"), b"").unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while phase().await.as_deref() != Some("Running") {
        assert!(tokio::time::Instant::now() < deadline, "pod never started: {:?}", pods.get("app").await.unwrap().status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!storage.join(".stowage").exists(), "the helper removed its marker");
    assert_eq!(std::fs::read(storage.join("access.log")).unwrap(), b"GET / 200\n");
    let status = pods.get("app").await.unwrap().status.unwrap();
    let init = &status.init_container_statuses.unwrap()[0];
    let terminated = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("helper finished");
    assert_eq!(terminated.exit_code, 0);
}

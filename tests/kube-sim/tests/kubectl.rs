//! The simulator through the real `kubectl`: apply, get, label, delete, get -w, scale.

use std::process::Command;

use kube_sim::{KubeSim, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubeSim::start(SimConfig::new(dir.path().join("kubelet"))).await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kubectl-smoke.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash").arg(script).env("KUBECONFIG", &kubeconfig).output()
    })
    .await
    .unwrap()
    .expect("bash runs (is kubectl installed? scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl smoke script failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("kubectl smoke: ok"));
}

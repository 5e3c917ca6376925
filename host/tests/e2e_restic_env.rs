//! `stowage repo restic-env` prints an environment the real `restic` CLI can use as it is:
//! against the S3 location's bucket, with the password derived from the cluster's master key.

mod e2e;

use std::process::Command;

use e2e::{Env, NS};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace(r"'\''", "'")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_cli_uses_the_printed_environment() {
    let env = Env::start().await;
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "stowage-repo-master-key"},
        "data": {"master-key": key}})).unwrap();
    // The environment installed a master key; this test brings its own, as an admin restoring
    // the key of another cluster does.
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .patch("stowage-repo-master-key", &PatchParams::default(), &Patch::Merge(&secret))
        .await
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["repo", "restic-env", "nginx-example", "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "restic-env failed: {}", String::from_utf8_lossy(&out.stderr));
    let vars = parse_exports(&stdout);
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("RESTIC_REPOSITORY"), format!("s3:{}/{}/restic/nginx-example", env.s3.endpoint(), env.bucket));
    assert_eq!(get("RESTIC_PASSWORD").len(), 64);

    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("access.log"), b"GET / 200\n").unwrap();
    let restic = |args: &[&str]| {
        let out = Command::new("restic")
            .args(args)
            .arg("--no-cache")
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("restic is installed (scripts/test.sh installs it)");
        assert!(out.status.success(), "restic {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    restic(&["init"]);
    restic(&["backup", data.to_str().unwrap()]);
    let snapshots: serde_json::Value = serde_json::from_str(&restic(&["snapshots", "--json"])).unwrap();
    assert_eq!(snapshots.as_array().map(Vec::len), Some(1), "{snapshots}");
    assert!(env.bucket_keys("restic/nginx-example/").await.iter().any(|k| k.ends_with("/config")),
        "the repository lives under restic/<namespace>/ in the location's bucket");

    // `stowage repo get` lists the BackupRepository objects (created by the server in practice).
    let repo: stowage_api::BackupRepository = serde_json::from_value(json!({"metadata": {"name": "nginx-example-default"},
        "spec": {"volumeNamespace": "nginx-example", "backupStorageLocation": "default",
            "resticIdentifier": get("RESTIC_REPOSITORY")}})).unwrap();
    Api::<stowage_api::BackupRepository>::namespaced(env.client.clone(), NS).create(&PostParams::default(), &repo).await.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stowage")).args(["repo", "get", "--kubeconfig"]).arg(&env.kubeconfig).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.lines().any(|l| l.starts_with("nginx-example-default ") && l.contains(&get("RESTIC_REPOSITORY"))), "{table}");
}

//! `stowage install` against the Kubernetes API simulator: everything is applied, CRDs before
//! the storage location, and a second install keeps the master key.

use clap::Parser;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube_sim::{KubeSim, SimConfig};
use stowage::cli::{Cli, Command};
use stowage_api::BackupStorageLocation;

async fn install(kubeconfig: &str, flags: &[&str]) -> anyhow::Result<()> {
    let argv =
        ["stowage", "--kubeconfig", kubeconfig, "install", "--timeout", "30s"].into_iter().chain(flags.iter().copied());
    let cli = Cli::try_parse_from(argv)?;
    let Command::Install(args) = cli.command else { unreachable!() };
    stowage::install::run(*args, &cli.cluster).await
}

async fn master_key(client: &kube::Client) -> Vec<u8> {
    let secret = Api::<Secret>::namespaced(client.clone(), "stowage").get("stowage-repo-master-key").await.unwrap();
    secret.data.unwrap()["master-key"].0.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_applies_everything_and_keeps_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubeSim::start(SimConfig { run_controllers: false, ..SimConfig::new(dir.path().join("kubelet")) })
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();
    let secret_file = dir.path().join("credentials");
    std::fs::write(&secret_file, "[default]\naws_access_key_id=minio\naws_secret_access_key=minio123\n").unwrap();
    let secret_file = secret_file.to_str().unwrap();
    let flags = ["--provider", "aws", "--bucket", "first", "--secret-file", secret_file];

    install(kubeconfig, &flags).await.unwrap();

    let client = sim.client().await.unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in stowage_api::all_crds() {
        crds.get(crd.metadata.name.as_deref().unwrap()).await.unwrap();
    }
    let locations = Api::<BackupStorageLocation>::namespaced(client.clone(), "stowage");
    let bsl = locations.get("default").await.unwrap();
    assert!(bsl.spec.default);
    assert_eq!(bsl.spec.object_storage.bucket, "first");
    Api::<Deployment>::namespaced(client.clone(), "stowage").get("stowage").await.unwrap();
    Api::<DaemonSet>::namespaced(client.clone(), "stowage").get("node-agent").await.unwrap();
    let credentials = Api::<Secret>::namespaced(client.clone(), "stowage").get("cloud-credentials").await.unwrap();
    assert!(credentials.data.unwrap()["cloud"].0.starts_with(b"[default]"));
    let key = master_key(&client).await;
    assert_eq!(key.len(), 32);

    // A second install updates what the flags say and never rotates the master key.
    let flags = ["--provider", "aws", "--bucket", "second", "--secret-file", secret_file];
    install(kubeconfig, &flags).await.unwrap();
    assert_eq!(locations.get("default").await.unwrap().spec.object_storage.bucket, "second");
    assert_eq!(master_key(&client).await, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Nothing listens on port 9 (discard) on loopback.
    let yaml = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\n\
                contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n";
    std::fs::write(&kubeconfig, yaml).unwrap();
    let err =
        install(kubeconfig.to_str().unwrap(), &["--provider", "filesystem", "--bucket", "/srv/b"]).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("applying Namespace stowage"), "{message}");
    assert!(message.contains("--dry-run -o yaml"), "{message}");
}

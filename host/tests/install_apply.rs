//! `stowage install` against the Kubernetes API simulator: everything is applied, CRDs before
//! the storage location, and a second install keeps the master key. `stowage uninstall` removes
//! it again, keeping the master key and namespace unless `--purge`.

use clap::Parser;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
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

/// kube-sim without its controllers, a kubeconfig for it and an AWS-style credentials file.
struct Cluster {
    sim: KubeSim,
    kubeconfig: String,
    secret_file: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let sim = KubeSim::start(SimConfig { run_controllers: false, ..SimConfig::new(dir.path().join("kubelet")) })
            .await
            .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let secret_file = dir.path().join("credentials");
        std::fs::write(&secret_file, "[default]\naws_access_key_id=minio\naws_secret_access_key=minio123\n").unwrap();
        let path = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
        Cluster { sim, kubeconfig: path(kubeconfig), secret_file: path(secret_file), _dir: dir }
    }
}

async fn master_key(client: &kube::Client) -> Vec<u8> {
    let secret = Api::<Secret>::namespaced(client.clone(), "stowage").get("stowage-repo-master-key").await.unwrap();
    secret.data.unwrap()["master-key"].0.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_applies_everything_and_keeps_the_master_key() {
    let cluster = Cluster::start().await;
    let (sim, kubeconfig, secret_file) = (&cluster.sim, cluster.kubeconfig.as_str(), cluster.secret_file.as_str());
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

async fn uninstall(kubeconfig: &str, flags: &[&str]) -> anyhow::Result<()> {
    let argv = ["stowage", "--kubeconfig", kubeconfig, "uninstall"].into_iter().chain(flags.iter().copied());
    let cli = Cli::try_parse_from(argv)?;
    let Command::Uninstall(args) = cli.command else { unreachable!() };
    stowage::install::uninstall(args, &cli.cluster).await
}

/// Whether a namespace is gone or going.
async fn namespace_deleted(client: &kube::Client, name: &str) -> bool {
    match Api::<Namespace>::all(client.clone()).get_opt(name).await.unwrap() {
        None => true,
        Some(ns) => ns.metadata.deletion_timestamp.is_some(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_removes_what_install_made_and_keeps_the_master_key_unless_purged() {
    let cluster = Cluster::start().await;
    let (sim, kubeconfig) = (&cluster.sim, cluster.kubeconfig.as_str());
    let flags = ["--provider", "aws", "--bucket", "b", "--secret-file", cluster.secret_file.as_str()];
    install(kubeconfig, &flags).await.unwrap();
    let client = sim.client().await.unwrap();
    let key = master_key(&client).await;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let deployments = Api::<Deployment>::namespaced(client.clone(), "stowage");
    let secrets = Api::<Secret>::namespaced(client.clone(), "stowage");
    let crd_names: Vec<String> = stowage_api::all_crds().into_iter().map(|c| c.metadata.name.unwrap()).collect();

    // A dry run deletes nothing.
    uninstall(kubeconfig, &["--dry-run"]).await.unwrap();
    deployments.get("stowage").await.unwrap();
    crds.get(&crd_names[0]).await.unwrap();

    // The default keeps the namespace and the master key, and nothing else install made.
    uninstall(kubeconfig, &[]).await.unwrap();
    for target in stowage::install::uninstall_targets("stowage", false, false, false) {
        let api: Api<DynamicObject> = match &target.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &target.resource),
            None => Api::all_with(client.clone(), &target.resource),
        };
        let left = api.get_opt(&target.name).await.unwrap();
        assert!(
            left.is_none_or(|o| o.metadata.deletion_timestamp.is_some()),
            "{} is still there",
            target.describe()
        );
    }
    assert!(Api::<DaemonSet>::namespaced(client.clone(), "stowage").get_opt("node-agent").await.unwrap().is_none());
    assert!(secrets.get_opt("cloud-credentials").await.unwrap().is_none());
    for name in &crd_names {
        assert!(crds.get_opt(name).await.unwrap().is_none_or(|c| c.metadata.deletion_timestamp.is_some()), "{name}");
    }
    assert_eq!(master_key(&client).await, key, "the master key is kept");
    assert!(!namespace_deleted(&client, "stowage").await);
    // Again: what is gone is reported, not an error.
    uninstall(kubeconfig, &[]).await.unwrap();

    // Installed again, the same key is used; --keep-crds keeps the CRDs.
    install(kubeconfig, &flags).await.unwrap();
    assert_eq!(master_key(&client).await, key);
    uninstall(kubeconfig, &["--keep-crds"]).await.unwrap();
    for name in &crd_names {
        assert!(crds.get(name).await.unwrap().metadata.deletion_timestamp.is_none(), "{name} kept");
    }
    assert!(deployments.get_opt("stowage").await.unwrap().is_none());

    // --purge deletes the key and the namespace too.
    install(kubeconfig, &flags).await.unwrap();
    uninstall(kubeconfig, &["--purge"]).await.unwrap();
    assert!(secrets.get_opt("stowage-repo-master-key").await.unwrap().is_none_or(|s| s.metadata.deletion_timestamp.is_some()));
    assert!(namespace_deleted(&client, "stowage").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstalling_one_of_two_installs_keeps_what_they_share() {
    let cluster = Cluster::start().await;
    let (sim, kubeconfig) = (&cluster.sim, cluster.kubeconfig.as_str());
    for ns in ["team-a", "team-b"] {
        install(kubeconfig, &["-n", ns, "--provider", "filesystem", "--bucket", "/srv/b", "--no-secret"]).await.unwrap();
    }
    uninstall(kubeconfig, &["-n", "team-a"]).await.unwrap();
    let client = sim.client().await.unwrap();
    assert!(Api::<Deployment>::namespaced(client.clone(), "team-a").get_opt("stowage").await.unwrap().is_none());
    Api::<Deployment>::namespaced(client.clone(), "team-b").get("stowage").await.unwrap();
    for crd in stowage_api::all_crds() {
        let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(crd.metadata.name.as_deref().unwrap()).await.unwrap();
        assert!(crd.metadata.deletion_timestamp.is_none());
    }
    Api::<ClusterRole>::all(client.clone()).get("stowage-server").await.unwrap();
    Api::<ClusterRoleBinding>::all(client.clone()).get("stowage-server-team-b").await.unwrap();
    assert!(Api::<ClusterRoleBinding>::all(client.clone()).get_opt("stowage-server-team-a").await.unwrap().is_none());
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's `kubectl apply -k` recipe, step by step, then `stowage uninstall` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kustomize_recipe_installs_and_uninstall_removes_it() {
    let cluster = Cluster::start().await;
    let (sim, kubeconfig) = (&cluster.sim, cluster.kubeconfig.as_str());
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let key_file = cluster._dir.path().join("master-key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    kubectl(kubeconfig, &["apply", "-k", deploy.join("crds").to_str().unwrap()]);
    kubectl(kubeconfig, &["wait", "--for", "condition=established", "--timeout", "30s", "crd", "-l", "app.kubernetes.io/part-of=stowage"]);
    kubectl(kubeconfig, &["create", "namespace", "stowage"]);
    let from_file = format!("--from-file=master-key={}", key_file.display());
    kubectl(kubeconfig, &["-n", "stowage", "create", "secret", "generic", "stowage-repo-master-key", &from_file]);
    kubectl(kubeconfig, &["apply", "-k", deploy.join("kustomize/overlays/example").to_str().unwrap()]);

    let client = sim.client().await.unwrap();
    assert_eq!(master_key(&client).await, vec![7u8; 32]);
    let location = Api::<BackupStorageLocation>::namespaced(client.clone(), "stowage").get("default").await.unwrap();
    assert_eq!(location.spec.object_storage.bucket, "team-backups");
    let deployments = Api::<Deployment>::namespaced(client.clone(), "stowage");
    deployments.get("stowage").await.unwrap();

    uninstall(kubeconfig, &[]).await.unwrap();
    assert!(deployments.get_opt("stowage").await.unwrap().is_none());
    assert!(Api::<Secret>::namespaced(client.clone(), "stowage").get_opt("cloud-credentials").await.unwrap().is_none());
    assert_eq!(master_key(&client).await, vec![7u8; 32], "the master key is kept");
}

//! The end-to-end environment: a cluster (kube-sim in process, or a real one named by
//! `STOWAGE_E2E_KUBECONFIG`), a real S3 server on loopback, Stowage's CRDs and storage location,
//! and the real `stowage server` binary running against them. A second simulated cluster can
//! share the first one's bucket (cluster migration).

#![allow(dead_code)]

pub mod apps;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use stowage_api::location::LocationPhase;
use stowage_api::BackupStorageLocation;
use stowage_storage::{ObjectStore, S3Config, S3Credentials, S3Store};
use stowage_test_support::S3Server;

pub const NS: &str = "stowage";

/// A namespaced object type the tests create and read.
pub trait Namespaced:
    kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}
impl<K> Namespaced for K where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}

/// A cluster-scoped object type the tests create and read.
pub trait ClusterScoped:
    kube::Resource<Scope = ClusterResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}
impl<K> ClusterScoped for K where
    K: kube::Resource<Scope = ClusterResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}

pub struct Env {
    pub sim: Option<KubeSim>,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub s3: Arc<S3Server>,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    /// Where the server serves `/metrics` once started.
    pub metrics_address: SocketAddr,
    /// `RUST_LOG` of the server and node agent processes started from now on ("info").
    pub log_filter: &'static str,
    /// More environment for the server and node agent processes started from now on.
    pub process_env: Vec<(String, String)>,
    server: Option<Child>,
    node_agent: Option<Child>,
}

/// Polls `f` until it returns Some, or panics after `secs` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A workspace binary built beside this test's binary by `cargo build --workspace --bins`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join(name);
    assert!(bin.is_file(), "{} is missing: build the workspace's binaries first (scripts/test.sh does)", bin.display());
    bin
}

async fn start_sim(dir: &Path, exec_local: bool, images: &[(&str, PathBuf)], nodes: &[&str]) -> (KubeSim, PathBuf) {
    let mut config = SimConfig::new(dir.join("kubelet"));
    if !nodes.is_empty() {
        config.nodes = nodes.iter().map(|n| n.to_string()).collect();
    }
    config.images.extend(images.iter().map(|(image, program)| (image.to_string(), program.clone())));
    if exec_local {
        // `kubectl exec` and hooks run as local processes in the container's stand-in directory.
        config.exec_fallback = kube_sim::ExecFallback::RunLocal;
    }
    // Restored pods' init container runs as the real helper binary.
    config.images.insert("stowage/restore-helper".into(), workspace_binary("stowage-restore-helper"));
    // A user with only the permissions a test's RBAC grants (see `Env::user_kubeconfig`).
    config.users.push((TEST_USER_TOKEN.into(), TEST_USER.into()));
    let sim = KubeSim::start(config).await.unwrap();
    let path = dir.join("kubeconfig");
    sim.write_kubeconfig(&path).unwrap();
    (sim, path)
}

/// The user kube-sim knows besides its admin: RBAC decides what it may do.
pub const TEST_USER: &str = "e2e-user";
const TEST_USER_TOKEN: &str = "e2e-user-token";

async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// A free loopback address to serve on.
/// Whether the suites run against a real cluster (`STOWAGE_E2E_KUBECONFIG`), where a test that
/// needs kube-sim's node (its filesystem, local exec) is skipped, saying `why`.
pub fn skipped_on_real_cluster(why: &str) -> bool {
    let real = std::env::var_os("STOWAGE_E2E_KUBECONFIG").is_some();
    if real {
        eprintln!("SKIPPED: {why}");
    }
    real
}

pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Env {
    /// A cluster with a fresh bucket as its default, ReadWrite location.
    pub async fn start() -> Env {
        Env::start_cluster(false, &[], &[]).await
    }

    /// The same with a simulated cluster of these nodes (pods are scheduled round-robin).
    pub async fn start_with_nodes(nodes: &[&str]) -> Env {
        Env::start_cluster(false, &[], nodes).await
    }

    /// The same, where commands exec'd into containers (hooks) run as local processes in the
    /// container's stand-in directory, its mount paths linked to the pod's volumes.
    pub async fn start_with_local_exec() -> Env {
        Env::start_cluster(true, &[], &[]).await
    }

    /// The same, where the containers of these images run as these local programs (in the
    /// container's stand-in directory, with its environment; see kube-sim's `SimConfig::images`).
    pub async fn start_with_local_exec_and_images(images: &[(&str, PathBuf)]) -> Env {
        Env::start_cluster(true, images, &[]).await
    }

    async fn start_cluster(exec_local: bool, images: &[(&str, PathBuf)], nodes: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (sim, kubeconfig) = match std::env::var_os("STOWAGE_E2E_KUBECONFIG") {
            Some(path) => (None, PathBuf::from(path)),
            None => {
                let (sim, path) = start_sim(dir.path(), exec_local, images, nodes).await;
                (Some(sim), path)
            }
        };
        let client = client_for(&kubeconfig).await;
        let s3 = Arc::new(S3Server::start().expect("S3 server (moto) starts"));
        let bucket = stowage_test_support::unique_name("backups");
        let env = Env {
            sim,
            client,
            kubeconfig,
            s3,
            bucket,
            dir,
            metrics_address: free_port(),
            log_filter: "info",
            process_env: Vec::new(),
            server: None,
            node_agent: None,
        };
        env.store().create_bucket().await.unwrap();
        env.install("ReadWrite").await;
        env
    }

    /// Another cluster (always simulated) whose default location is this one's bucket, with
    /// the access mode given: the cluster a backup migrates to.
    pub async fn second_cluster(&self, access_mode: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (sim, kubeconfig) = start_sim(dir.path(), false, &[], &[]).await;
        let client = client_for(&kubeconfig).await;
        let env = Env {
            sim: Some(sim),
            client,
            kubeconfig,
            s3: self.s3.clone(),
            bucket: self.bucket.clone(),
            dir,
            metrics_address: free_port(),
            log_filter: "info",
            process_env: Vec::new(),
            server: None,
            node_agent: None,
        };
        env.install(access_mode).await;
        env
    }

    pub fn store(&self) -> S3Store {
        let mut cfg = S3Config::new("default", self.bucket.clone());
        cfg.endpoint = Some(self.s3.endpoint().to_string());
        cfg.force_path_style = true;
        cfg.region = self.s3.region().to_string();
        cfg.credentials = Some(S3Credentials::new(self.s3.access_key(), self.s3.secret_key()));
        S3Store::new(cfg).unwrap()
    }

    /// CRDs, the install namespace, the credentials Secret and the default location.
    async fn install(&self, access_mode: &str) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let pp = PatchParams::apply("stowage-e2e").force();
        for crd in stowage_api::all_crds() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(&name, &pp, &Patch::Apply(&crd)).await.unwrap();
        }
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        nss.patch(NS, &pp, &Patch::Apply(&ns)).await.unwrap();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let ini = format!("[default]\naws_access_key_id={}\naws_secret_access_key={}\n", self.s3.access_key(), self.s3.secret_key());
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "cloud-credentials"}, "stringData": {"cloud": ini}})).unwrap();
        secrets.patch("cloud-credentials", &pp, &Patch::Apply(&secret)).await.unwrap();
        // The master key repository passwords derive from: shared by clusters that share the
        // bucket, as an admin migrating to a new cluster copies it.
        let key: Vec<u8> = self.bucket.bytes().cycle().take(32).collect();
        let master: Secret = serde_json::from_value(json!({"metadata": {"name": stowage_api::names::MASTER_KEY_SECRET},
            "data": {stowage_api::names::MASTER_KEY_SECRET_KEY: base64_encode(&key)}})).unwrap();
        secrets.patch(stowage_api::names::MASTER_KEY_SECRET, &pp, &Patch::Apply(&master)).await.unwrap();
        self.apply_location("default", &self.bucket, true, access_mode).await;
        if self.sim.is_some() {
            self.route_server_service().await;
        }
    }

    /// The server's Service, its endpoint this test's server process (`start_server*` serves
    /// metrics and downloads on `metrics_address`): what a selector gives in a cluster, so the
    /// API server's service proxy reaches the server.
    async fn route_server_service(&self) {
        let pp = PatchParams::apply("stowage-e2e").force();
        let port = stowage_api::names::SERVER_HTTP_PORT_NAME;
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": stowage_api::names::SERVER},
            "spec": {"ports": [{"name": port, "port": stowage_api::names::METRICS_PORT, "protocol": "TCP"}]}})).unwrap();
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(self.client.clone(), NS)
            .patch(stowage_api::names::SERVER, &pp, &Patch::Apply(&service)).await.unwrap();
        let endpoints: k8s_openapi::api::core::v1::Endpoints = serde_json::from_value(json!({
            "metadata": {"name": stowage_api::names::SERVER},
            "subsets": [{"addresses": [{"ip": self.metrics_address.ip().to_string()}],
                "ports": [{"name": port, "port": self.metrics_address.port(), "protocol": "TCP"}]}]})).unwrap();
        Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(self.client.clone(), NS)
            .patch(stowage_api::names::SERVER, &pp, &Patch::Apply(&endpoints)).await.unwrap();
    }

    pub async fn apply_location(&self, name: &str, bucket: &str, default: bool, access_mode: &str) {
        self.apply_location_at(name, bucket, default, access_mode, self.s3.endpoint()).await;
    }

    /// A location reaching the S3 server through `s3_url` (a proxy in front of it).
    pub async fn apply_location_at(&self, name: &str, bucket: &str, default: bool, access_mode: &str, s3_url: &str) {
        let api: Api<stowage_api::BackupStorageLocation> = Api::namespaced(self.client.clone(), NS);
        let bsl = json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": "aws", "objectStorage": {"bucket": bucket}, "default": default, "accessMode": access_mode,
                "config": {"region": self.s3.region(), "s3Url": s3_url, "s3ForcePathStyle": "true"}}});
        api.patch(name, &PatchParams::apply("stowage-e2e").force(), &Patch::Apply(&bsl)).await.unwrap();
    }

    /// Stops the server at once (SIGKILL): nothing it had running gets to finish.
    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the real `stowage server` binary against this cluster (appending to its log).
    pub fn start_server(&mut self) {
        self.start_server_with(&[]);
    }

    /// Starts the server with extra flags; its log is appended to (a restarted server's too).
    /// It keeps the same pod name across restarts, as a restarted container does: it takes
    /// its Lease back at once rather than waiting for it to expire.
    pub fn start_server_with(&mut self, extra: &[&str]) {
        self.server = Some(self.run_server("server.log", "stowage-e2e", self.metrics_address, extra));
    }

    /// Starts the server (log `server.log`) talking to the cluster through another kubeconfig,
    /// e.g. one whose server URL is a proxy in front of the API server; with extra flags.
    pub fn start_server_via(&mut self, kubeconfig: &Path, extra: &[&str]) {
        self.server = Some(self.run_server_at(kubeconfig, "server.log", "stowage-e2e", self.metrics_address, extra));
    }

    /// Whether the server started by `start_server*` is still running.
    pub fn server_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A `stowage server` process against this cluster named `identity` (its pod name),
    /// appending to `log` in the test's directory.
    fn run_server(&self, log: &str, identity: &str, metrics: SocketAddr, extra: &[&str]) -> Child {
        self.run_server_at(&self.kubeconfig, log, identity, metrics, extra)
    }

    fn run_server_at(&self, kubeconfig: &Path, log: &str, identity: &str, metrics: SocketAddr, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_stowage"))
            .args(["server", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["-n", NS, "--location-check-period", "1s", "--metrics-address"])
            .arg(metrics.to_string())
            .args(extra)
            .env("RUST_LOG", self.log_filter)
            .envs(self.process_env.iter().map(|(k, v)| (k, v)))
            .env("POD_NAME", identity)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("stowage binary runs")
    }

    /// Starts the real `stowage-node-agent` binary for the simulated cluster's node.
    pub fn start_node_agent(&mut self) {
        let sim = self.sim.as_ref().expect("node agents run on kube-sim's node; a real cluster runs the DaemonSet");
        let pods = sim.kubelet_root().join("pods");
        std::fs::create_dir_all(&pods).unwrap();
        // Appended to: a restarted agent's log follows the one before.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("node-agent.log")).unwrap();
        let child = Command::new(workspace_binary("stowage-node-agent"))
            .args(["--node-name", "node-1", "-n", NS, "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--kubelet-pods-dir")
            .arg(&pods)
            .arg("--metrics-address")
            .arg(free_port().to_string())
            .env("RUST_LOG", self.log_filter)
            .envs(self.process_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node agent binary runs");
        self.node_agent = Some(child);
    }

    pub fn stop_node_agent(&mut self) {
        if let Some(mut c) = self.node_agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn node_agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node-agent.log")).unwrap_or_default()
    }

    /// Starts a node agent for every node of the simulated cluster, each doing `concurrency`
    /// pod volumes at once and logging to `node-agent-<node>.log`; they stop when the
    /// returned value is dropped. (`start_node_agent` starts the one of a one-node cluster.)
    pub fn start_node_agents(&self, concurrency: u32) -> NodeAgents {
        let sim = self.sim.as_ref().expect("node agents run on kube-sim's nodes; a real cluster runs the DaemonSet");
        // The simulated nodes share one kubelet directory: each agent finds its pods by uid.
        let pods = sim.kubelet_root().join("pods");
        std::fs::create_dir_all(&pods).unwrap();
        let mut agents = NodeAgents { children: Vec::new(), logs: Vec::new() };
        for node in &sim.config().nodes {
            let log_path = self.dir.path().join(format!("node-agent-{node}.log"));
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
            let child = Command::new(workspace_binary("stowage-node-agent"))
                .args(["--node-name", node, "-n", NS, "--kubeconfig"])
                .arg(&self.kubeconfig)
                .arg("--kubelet-pods-dir")
                .arg(&pods)
                .arg("--metrics-address")
                .arg(free_port().to_string())
                .args(["--concurrency", &concurrency.to_string()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("node agent binary runs");
            agents.children.push(child);
            agents.logs.push(log_path);
        }
        agents
    }

    /// The process id of the server started, for measurements.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A kubeconfig acting as [`TEST_USER`] (kube-sim only).
    pub fn user_kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("user-kubeconfig");
        let sim = self.sim.as_ref().expect("users are kube-sim's");
        sim.write_kubeconfig_for(&path, TEST_USER_TOKEN).unwrap();
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn create_namespace(&self, name: &str) {
        self.create_cluster::<Namespace>(json!({"metadata": {"name": name}})).await;
    }

    pub async fn delete_namespace_and_wait(&self, name: &str) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(&format!("namespace {name} to be deleted"), 120, || async {
            nss.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    /// Creates a namespaced object in `ns`; returns its name.
    pub async fn create_in<K: Namespaced>(&self, ns: &str, obj: Value) -> String {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let obj: K = serde_json::from_value(obj).unwrap();
        let name = obj.meta().name.clone().unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("creating {name} in {ns}: {e}"));
        name
    }

    /// Creates one of Stowage's objects (a Backup, Restore, request...) in its namespace.
    pub async fn create<K: Namespaced>(&self, obj: Value) -> String {
        self.create_in::<K>(NS, obj).await
    }

    pub async fn create_cluster<K: ClusterScoped>(&self, obj: Value) -> String {
        let api: Api<K> = Api::all(self.client.clone());
        let obj: K = serde_json::from_value(obj).unwrap();
        let name = obj.meta().name.clone().unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
        name
    }

    /// A namespaced object as JSON, if it exists.
    pub async fn get_in<K: Namespaced>(&self, ns: &str, name: &str) -> Option<Value> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
    }

    pub async fn get_cluster<K: ClusterScoped>(&self, name: &str) -> Option<Value> {
        let api: Api<K> = Api::all(self.client.clone());
        api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
    }

    /// Creates a Backup with this spec and waits for it to finish; returns its status.
    pub async fn backup(&self, name: &str, spec: Value) -> Value {
        self.create::<stowage_api::Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec})).await;
        self.wait_finished::<stowage_api::Backup>(name).await
    }

    /// Creates a Restore with this spec and waits for it to finish; returns its status.
    pub async fn restore(&self, name: &str, spec: Value) -> Value {
        self.create::<stowage_api::Restore>(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec})).await;
        self.wait_finished::<stowage_api::Restore>(name).await
    }

    /// Waits until a Backup or Restore reaches a terminal phase; returns its status as JSON.
    pub async fn wait_finished<K: Namespaced>(&self, name: &str) -> Value {
        self.wait_finished_within::<K>(name, 120).await
    }

    /// The same, waiting up to `secs`.
    pub async fn wait_finished_within<K: Namespaced>(&self, name: &str, secs: u64) -> Value {
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        wait_for(&format!("{} {name} to finish", K::kind(&())), secs, || async {
            let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            let phase = obj["status"]["phase"].as_str()?.to_string();
            let finished = matches!(phase.as_str(), "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation");
            finished.then(|| obj["status"].clone())
        })
        .await
    }

    /// Waits until a request (DeleteBackupRequest, DownloadRequest) is Processed; returns its status.
    pub async fn wait_processed<K: Namespaced>(&self, name: &str) -> Value {
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        wait_for(&format!("{} {name} to be processed", K::kind(&())), 60, || async {
            let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (obj["status"]["phase"] == "Processed").then(|| obj["status"].clone())
        })
        .await
    }

    pub async fn wait_location_available(&self, name: &str) {
        let api: Api<BackupStorageLocation> = Api::namespaced(self.client.clone(), NS);
        wait_for(&format!("storage location {name} to be Available"), 60, || async {
            let l = api.get(name).await.ok()?;
            (l.status?.phase? == LocationPhase::Available).then_some(())
        })
        .await;
    }

    /// Every key in the bucket under `prefix`.
    pub async fn bucket_keys(&self, prefix: &str) -> BTreeSet<String> {
        self.store().list(prefix).await.unwrap().into_iter().map(|o| o.key).collect()
    }

    /// A zstd-compressed JSON document from the bucket.
    pub async fn read_zstd_json(&self, key: &str) -> Value {
        let raw = self.store().get(key).await.unwrap_or_else(|e| panic!("reading {key}: {e}"));
        serde_json::from_slice(&zstd::decode_all(&raw[..]).unwrap()).unwrap()
    }

    /// A zstd-compressed text from the bucket (a log).
    pub async fn read_zstd_text(&self, key: &str) -> String {
        let raw = self.store().get(key).await.unwrap_or_else(|e| panic!("reading {key}: {e}"));
        String::from_utf8(zstd::decode_all(&raw[..]).unwrap()).unwrap()
    }

    /// What a backup's uploaded resource list says: `apiVersion/Kind` -> entries.
    pub async fn resource_list(&self, backup: &str) -> Value {
        self.read_zstd_json(&format!("backups/{backup}/{backup}-resource-list.json.zst")).await
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_address, "/metrics").await
    }

    /// Another `stowage server` process against this cluster, with its own identity (the pod
    /// name a Deployment would give it), metrics address and log (`server-<identity>.log`);
    /// the caller owns the process.
    pub fn spawn_server(&self, identity: &str, metrics: SocketAddr, extra: &[&str]) -> Child {
        self.run_server(&format!("server-{identity}.log"), identity, metrics, extra)
    }

    pub fn spawned_server_log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("server-{identity}.log"))).unwrap_or_default()
    }
}

/// GET `path` from an HTTP server on `addr` once it answers 200; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    wait_for(&format!("{path} on {addr} to answer"), 30, || async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    })
    .await
}

/// A shipped extension's ConfigMap (`extensions/<name>/configmap.yaml`) with its script
/// filled in, as `extensions/install.sh` makes it, in Stowage's namespace.
pub fn shipped_extension(name: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../extensions").join(name);
    let mut cm: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("configmap.yaml")).unwrap()).unwrap();
    cm["metadata"]["namespace"] = json!(NS);
    cm["data"]["script.rhai"] = json!(std::fs::read_to_string(dir.join("script.rhai")).unwrap());
    cm
}

/// Applies an extension ConfigMap in Stowage's namespace and waits until the server has it
/// active; one it quarantines fails the test with the server's log.
pub async fn apply_extension(env: &Env, cm: &Value) {
    let name = cm["metadata"]["name"].as_str().expect("the ConfigMap has a name");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(env.client.clone(), NS);
    cms.patch(name, &PatchParams::apply("stowage-e2e").force(), &Patch::Apply(cm)).await.unwrap();
    wait_for(&format!("extension {name} to load"), 30, || async {
        let cm = cms.get(name).await.ok()?;
        let state = cm.metadata.annotations?.get("stowage.io/extension-state")?.clone();
        assert_ne!(state, "Quarantined", "extension {name}: {}", env.server_log());
        (state == "Active").then_some(())
    })
    .await;
}

/// Runs the `stowage` CLI against this cluster, in Stowage's namespace; returns stdout.
pub fn cli(env: &Env, args: &[&str]) -> String {
    let out = cli_output(env, args);
    assert!(out.status.success(), "stowage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the CLI expecting it to fail; returns its stderr.
pub fn cli_fails(env: &Env, args: &[&str]) -> String {
    let out = cli_output(env, args);
    assert!(!out.status.success(), "stowage {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cli_output(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stowage")).args(args).args(["-n", NS, "--kubeconfig"]).arg(&env.kubeconfig).output().unwrap()
}

/// The PodVolumeBackups of a backup.
pub async fn pod_volume_backups(env: &Env, backup: &str) -> Vec<stowage_api::PodVolumeBackup> {
    let api: Api<stowage_api::PodVolumeBackup> = Api::namespaced(env.client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("stowage.io/backup-name={backup}"))).await.unwrap().items
}

/// Where a claim's data is on the simulated node (the provisioned volume's directory).
pub async fn claim_dir(env: &Env, ns: &str, claim: &str) -> PathBuf {
    let pv = wait_for(&format!("claim {ns}/{claim} to be bound"), 30, || async {
        let c = env.get_in::<PersistentVolumeClaim>(ns, claim).await?;
        c["spec"]["volumeName"].as_str().map(String::from)
    })
    .await;
    let dir = env.sim.as_ref().unwrap().kubelet_root().join("volumes").join(pv);
    wait_for(&format!("the volume of {ns}/{claim} to exist"), 30, || async { dir.is_dir().then_some(()) }).await;
    dir
}

/// The pods of `ns` once `count` of them are Running.
pub async fn running_pods(env: &Env, ns: &str, count: usize) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_for(&format!("{count} running pods in {ns}"), 60, || async {
        let pods = api.list(&ListParams::default()).await.ok()?.items;
        let running: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == count).then_some(running)
    })
    .await
}

/// The `restic` CLI set up for a namespace's repository with the environment
/// `stowage repo restic-env` prints.
pub fn restic_command(env: &Env, namespace: &str) -> Command {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["repo", "restic-env", namespace, "-n", NS, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "restic-env: {}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new("restic");
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.trim_start_matches("export ").split_once('=').unwrap();
        cmd.env(k, v.trim_matches('\''));
    }
    cmd.args(["--no-cache", "--quiet"]);
    cmd
}

/// Runs the `restic` CLI against a namespace's repository; returns stdout.
pub fn restic(env: &Env, namespace: &str, args: &[&str]) -> String {
    let out = restic_command(env, namespace).args(args).output().expect("the restic CLI is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Node agents started by `Env::start_node_agents`, killed when dropped.
pub struct NodeAgents {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl NodeAgents {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Their logs, one after the other.
    pub fn log(&self) -> String {
        self.logs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for NodeAgents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_node_agent();
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

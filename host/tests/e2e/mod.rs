//! The end-to-end environment: a cluster (kube-sim in process, or a real one named by
//! `STOWAGE_E2E_KUBECONFIG`), a real S3 server on loopback, Stowage's CRDs and storage location,
//! and the real `stowage server` binary running against them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;
use stowage_storage::{S3Config, S3Credentials, S3Store};
use stowage_test_support::S3Server;

pub const NS: &str = "stowage";

pub struct Env {
    pub sim: Option<KubeSim>,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub s3: S3Server,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    server: Option<Child>,
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

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (sim, kubeconfig) = match std::env::var_os("STOWAGE_E2E_KUBECONFIG") {
            Some(path) => (None, PathBuf::from(path)),
            None => {
                let sim = KubeSim::start(SimConfig::new(dir.path().join("kubelet"))).await.unwrap();
                let path = dir.path().join("kubeconfig");
                sim.write_kubeconfig(&path).unwrap();
                (Some(sim), path)
            }
        };
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        let s3 = S3Server::start().expect("S3 server (moto) starts");
        let bucket = stowage_test_support::unique_name("backups");
        let env = Env { sim, client, kubeconfig, s3, bucket, dir, server: None };
        env.store().create_bucket().await.unwrap();
        env.install().await;
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
    async fn install(&self) {
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
        self.apply_location("default", &self.bucket, true, "ReadWrite").await;
    }

    pub async fn apply_location(&self, name: &str, bucket: &str, default: bool, access_mode: &str) {
        let api: Api<stowage_api::BackupStorageLocation> = Api::namespaced(self.client.clone(), NS);
        let bsl = json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": "aws", "objectStorage": {"bucket": bucket}, "default": default, "accessMode": access_mode,
                "config": {"region": self.s3.region(), "s3Url": self.s3.endpoint(), "s3ForcePathStyle": "true"}}});
        api.patch(name, &PatchParams::apply("stowage-e2e").force(), &Patch::Apply(&bsl)).await.unwrap();
    }

    /// Starts the real `stowage server` binary against this cluster.
    pub fn start_server(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stowage"))
            .args(["server", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(["-n", NS, "--metrics-address", "127.0.0.1:0", "--location-check-period", "1s"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("stowage binary runs");
        self.server = Some(child);
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn create_namespace(&self, name: &str) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
    }

    pub async fn delete_namespace_and_wait(&self, name: &str) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(&format!("namespace {name} to be deleted"), 120, || async {
            nss.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    /// Waits until a Backup or Restore reaches a terminal phase; returns its status as JSON.
    pub async fn wait_finished<K>(&self, name: &str) -> serde_json::Value
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        let status = wait_for(&format!("{} {name} to finish", K::kind(&())), 120, || async {
            let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            let phase = obj["status"]["phase"].as_str()?.to_string();
            matches!(phase.as_str(), "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation").then(|| obj["status"].clone())
        })
        .await;
        status
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! kube-sim: a Kubernetes API server simulator for Stowage's tests.
//!
//! It serves the Kubernetes REST API over plain HTTP on 127.0.0.1, faithfully enough that
//! unmodified clients (kube-rs with its runtime watchers, `kubectl`) work against it, and runs a
//! minimal scheduler, kubelet, volume provisioner and workload controllers as ordinary API
//! clients, so that applying an application yields running pods with volume directories on disk.
//!
//! Tests talk to it through the API only; the kubelet root directory and the exec handlers are
//! the two deliberate windows into the simulated nodes.

pub mod auth;
pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod exec;
pub mod kubelet;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod proxy;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use exec::{ExecFallback, ExecOutput, ExecRegistry, ExecRequest};

/// The default of [`SimConfig::exec_local_timeout`].
pub const DEFAULT_EXEC_LOCAL_TIMEOUT: Duration = Duration::from_secs(600);

/// How a simulator is started.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Root of the simulated nodes' filesystems: pod volume directories live under
    /// `<kubelet_root>/pods/<pod-uid>/volumes/<plugin>/<volume>`.
    pub kubelet_root: PathBuf,
    /// Names of the Node objects to create; pods are scheduled round-robin across them.
    pub nodes: Vec<String>,
    /// Container images that the kubelet runs as local processes (image -> local binary).
    /// Containers whose image is not mapped are treated as starting (and, for init containers,
    /// completing) at once.
    pub images: HashMap<String, PathBuf>,
    /// What `pods/exec` does for a container that has no registered handler.
    pub exec_fallback: ExecFallback,
    /// How long a `pods/exec` command run as a local process may take before it is killed
    /// (exit code 137). A real cluster has no such cap; this only keeps a stuck test from
    /// leaving processes behind.
    pub exec_local_timeout: Duration,
    /// Whether to run the scheduler, kubelet, provisioner and workload controllers.
    pub run_controllers: bool,
    /// Users known by bearer token: (token, user name). Their requests are authorized by the
    /// RBAC objects stored in the simulator; the admin token [`auth::ADMIN_TOKEN`] and requests
    /// without credentials may still do everything, and any other token is refused (401).
    pub users: Vec<(String, String)>,
}

impl SimConfig {
    pub fn new(kubelet_root: impl Into<PathBuf>) -> Self {
        SimConfig {
            port: 0,
            kubelet_root: kubelet_root.into(),
            nodes: vec!["node-1".to_string()],
            images: HashMap::new(),
            exec_fallback: ExecFallback::Deny,
            exec_local_timeout: DEFAULT_EXEC_LOCAL_TIMEOUT,
            run_controllers: true,
            users: Vec::new(),
        }
    }

    /// Adds a user authenticated by `token` and authorized by RBAC as `name`.
    pub fn with_user(mut self, token: impl Into<String>, name: impl Into<String>) -> Self {
        self.users.push((token.into(), name.into()));
        self
    }
}

/// A running simulator. Dropping it stops the server and its controllers.
pub struct KubeSim {
    addr: SocketAddr,
    config: Arc<SimConfig>,
    exec: ExecRegistry,
    state: server::AppState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeSim {
    /// Starts the API server (and, unless disabled, the node and workload controllers).
    pub async fn start(config: SimConfig) -> anyhow::Result<KubeSim> {
        std::fs::create_dir_all(&config.kubelet_root)?;
        let config = Arc::new(config);
        let exec = ExecRegistry::new(config.exec_fallback.clone());
        exec.set_local_timeout(config.exec_local_timeout);
        let state = server::AppState::new(config.clone(), exec.clone());
        state.bootstrap()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let app = server::router(state.clone());
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("kube-sim server stopped: {e}");
            }
        })];
        tasks.push(state.spawn_background());
        let mut sim = KubeSim { addr, config: config.clone(), exec, state, tasks };
        // Containers run as local processes find the simulator through this file (and never
        // fall back to the developer's own kubeconfig).
        sim.write_kubeconfig(&config.kubelet_root.join("kubeconfig"))?;
        if config.run_controllers {
            let client = sim.client().await?;
            sim.tasks.extend(controllers::spawn_all(client, config.clone()));
        }
        Ok(sim)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn kubelet_root(&self) -> &Path {
        &self.config.kubelet_root
    }

    /// Handlers for `pods/exec`, by namespace, pod and container.
    pub fn exec(&self) -> &ExecRegistry {
        &self.exec
    }

    /// Forgets the watch history, as etcd compaction does: watches resuming from an older
    /// resourceVersion then get 410 Gone.
    pub fn compact_history(&self) {
        self.state.store.compact();
    }

    /// A kubeconfig (context `kube-sim`) pointing at this simulator, as the admin.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(auth::ADMIN_TOKEN)
    }

    /// A kubeconfig (context `kube-sim`) pointing at this simulator with a bearer token: one of
    /// [`SimConfig::users`] to act as that user. For a configured user it also says `as: <name>`
    /// (impersonation, which a user may do of themselves): kubectl sends no bearer token over
    /// plain HTTP, but it does send `Impersonate-User`.
    pub fn kubeconfig_yaml_for(&self, token: &str) -> String {
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        let act_as = match self.config.users.iter().find(|(t, _)| t == token) {
            Some((_, name)) => format!("    as: {}\n", quoted(name)),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n\
             contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\n\
             current-context: kube-sim\nusers:\n- name: kube-sim\n  user:\n    token: {token}\n{act_as}",
            url = self.url(),
            token = quoted(token),
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Writes [`KubeSim::kubeconfig_yaml_for`] the token to `path`.
    pub fn write_kubeconfig_for(&self, path: &Path, token: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml_for(token))
    }

    /// A kube-rs client for this simulator, as the admin.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.client_for(auth::ADMIN_TOKEN).await
    }

    /// A kube-rs client for this simulator with a bearer token (one of [`SimConfig::users`]).
    pub async fn client_for(&self, token: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml_for(token))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

//! One pod's life on a node: volumes, init containers in order, then the containers, with the
//! status reported after every change. Ends when the pod's containers have all exited for good,
//! or when told to stop (the pod is being deleted), killing its processes.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::process::{self, is_stopped, until_stopped, Exit, ProcessSpec};
use super::probe::{self, Readiness};
use super::status::{self, PodView, State, Terminated};
use super::{env, layout, volumes};
use crate::exec::ExecRequest;
use crate::SimConfig;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct NodeContext {
    pub client: Client,
    pub config: Arc<SimConfig>,
    pub node: String,
    pub host_ip: String,
}

impl NodeContext {
    /// The local binary an image runs as; a tag or digest on the image is optional in the map.
    fn binary_for(&self, image: &str) -> Option<PathBuf> {
        let images = &self.config.images;
        if let Some(b) = images.get(image) {
            return Some(b.clone());
        }
        let repo = image.split('@').next().unwrap_or(image);
        let untagged = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        images.get(untagged).cloned()
    }
}

enum ContainerEvent {
    Started(usize, String),
    Exited(usize, Terminated, bool),
}

struct Worker {
    ctx: Arc<NodeContext>,
    pod: Pod,
    api: Api<Pod>,
    name: String,
    uid: String,
    restart_policy: String,
    view: PodView,
    stop: watch::Receiver<bool>,
}

pub async fn run(ctx: Arc<NodeContext>, pod: Pod, stop: watch::Receiver<bool>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let waiting = |cs: &[Container], reason: &str| -> Vec<status::Container> {
        cs.iter().map(|c| status::Container::waiting(&c.name, c.image.as_deref().unwrap_or(""), reason)).collect()
    };
    let init = waiting(spec.init_containers.as_deref().unwrap_or_default(), "PodInitializing");
    let main_reason = if init.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let main = waiting(&spec.containers, main_reason);
    let view = PodView::new(&uid, init, main, status::pod_ip(&uid), ctx.host_ip.clone());
    // So that downward-API references to the pod's IPs resolve for local processes.
    let mut pod = pod;
    let st = pod.status.get_or_insert_with(Default::default);
    st.pod_ip = Some(view.pod_ip.clone());
    st.host_ip = Some(view.host_ip.clone());
    let mut w = Worker {
        api: Api::namespaced(ctx.client.clone(), &ns),
        ctx,
        pod,
        name,
        uid,
        restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".into()),
        view,
        stop,
    };
    if let Err(why) = w.lifecycle().await {
        tracing::debug!(pod = %w.name, uid = %w.uid, "pod worker ended: {why}");
    }
}

impl Worker {
    async fn lifecycle(&mut self) -> Result<(), &'static str> {
        self.publish().await?;
        let mounts = loop {
            match volumes::prepare(&self.ctx.client, &self.ctx.config.kubelet_root, &self.ctx.node, &self.pod).await {
                Ok(m) => break m,
                Err(b) => {
                    let blocked = Some((b.reason.clone(), b.message.clone()));
                    if self.view.blocked != blocked {
                        tracing::info!(pod = %self.name, "waiting: {}", b.message);
                        self.view.blocked = blocked;
                        self.publish().await?;
                    }
                    self.pause(Duration::from_millis(500)).await?;
                }
            }
        };
        self.view.blocked = None;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let init = spec.init_containers.unwrap_or_default();
        for c in init.iter().chain(&spec.containers) {
            if let Err(e) = volumes::link_mounts(&self.ctx.config.kubelet_root, &self.uid, c, &mounts) {
                tracing::warn!(pod = %self.name, container = %c.name, "linking volume mounts: {e}");
            }
        }
        self.publish().await?;
        for (i, c) in init.iter().enumerate() {
            self.run_init(i, c).await?;
        }
        self.run_main(&spec.containers).await
    }

    /// Runs one init container to success, retrying with backoff unless the policy is Never.
    async fn run_init(&mut self, i: usize, c: &Container) -> Result<(), &'static str> {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = status::now();
            self.view.init[i].state = State::Running { started_at: started.clone() };
            let Some(spec) = self.process_spec(c).await else {
                self.view.init[i].exited(terminated(&started, &Exit { code: 0, tail: String::new(), reason: None }), false);
                return self.publish().await;
            };
            self.publish().await?;
            let exit = process::run(&spec, self.stop.clone()).await;
            self.stopped()?;
            tracing::info!(pod = %self.name, container = %c.name, code = exit.code, "init container exited");
            let t = terminated(&started, &exit);
            if exit.code == 0 {
                self.view.init[i].exited(t, false);
                return self.publish().await;
            }
            if self.restart_policy == "Never" {
                self.view.init[i].exited(t, false);
                self.view.phase = "Failed";
                self.publish().await?;
                return Err("init container failed");
            }
            self.view.init[i].exited(t, true);
            self.publish().await?;
            self.pause(backoff).await?;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn run_main(&mut self, containers: &[Container]) -> Result<(), &'static str> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let mut probes = Probes::new(containers.len());
        for (i, c) in containers.iter().enumerate() {
            self.view.main[i].state = State::Running { started_at: status::now() };
            self.view.main[i].probed = c.readiness_probe.is_some();
            if let Some(spec) = self.process_spec(c).await {
                let policy = self.restart_policy.clone();
                tokio::spawn(container_loop(i, spec, policy, self.stop.clone(), tx.clone()));
            } else {
                // Not run as a process: it "runs" from now on, and so does its probe.
                self.start_probe(&mut probes, i, c, &probe_tx);
            }
        }
        drop(tx);
        self.view.phase = "Running";
        self.publish().await?;
        let mut stop = self.stop.clone();
        let mut processes_done = false;
        loop {
            tokio::select! {
                event = rx.recv(), if !processes_done => {
                    self.stopped()?;
                    match event {
                        // Every process has ended for good; probes of containers that need no
                        // process go on until the pod is stopped.
                        None if probes.any() => {
                            processes_done = true;
                            continue;
                        }
                        None => return Ok(()),
                        Some(ContainerEvent::Started(i, at)) => {
                            self.view.main[i].state = State::Running { started_at: at };
                            self.start_probe(&mut probes, i, &containers[i], &probe_tx);
                        }
                        Some(ContainerEvent::Exited(i, t, restarting)) => {
                            tracing::info!(pod = %self.name, container = %containers[i].name, code = t.exit_code, restarting, "container exited");
                            probes.stop(i);
                            self.view.main[i].exited(t, restarting);
                        }
                    }
                    let codes: Option<Vec<i32>> = self.view.main.iter().map(|c| c.exit_code()).collect();
                    if let Some(codes) = codes {
                        self.view.phase = if codes.iter().all(|c| *c == 0) { "Succeeded" } else { "Failed" };
                    }
                    self.publish().await?;
                }
                Some((i, generation, ready)) = probe_rx.recv() => {
                    self.stopped()?;
                    let c = &mut self.view.main[i];
                    if probes.is_current(i, generation) && c.is_running() && c.probe_ready != ready {
                        tracing::info!(pod = %self.name, container = %c.name, ready, "readiness changed");
                        c.probe_ready = ready;
                        self.publish().await?;
                    }
                }
                _ = until_stopped(&mut stop) => return Err("stopped"),
            }
        }
    }

    /// (Re)starts the readiness probe of container `i`, if it has one, from unready.
    fn start_probe(&mut self, probes: &mut Probes, i: usize, c: &Container, report: &mpsc::UnboundedSender<(usize, u32, bool)>) {
        self.view.main[i].probe_ready = false;
        let Some(p) = &c.readiness_probe else { return };
        let root = &self.ctx.config.kubelet_root;
        let target = ExecRequest {
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            pod: self.name.clone(),
            pod_uid: self.uid.clone(),
            container: c.name.clone(),
            command: Vec::new(),
            stdin: Vec::new(),
            rootfs: layout::container_rootfs(root, &self.uid, &c.name),
            env: c.env.iter().flatten().filter_map(|v| Some((v.name.clone(), v.value.clone()?))).collect(),
        };
        probes.start(i, |generation| probe::run(Readiness::from_probe(p), target, i, generation, report.clone()));
    }

    /// How to run a container locally, or None when its image is not mapped to a binary.
    async fn process_spec(&self, c: &Container) -> Option<ProcessSpec> {
        let program = self.ctx.binary_for(c.image.as_deref()?)?;
        let root = &self.ctx.config.kubelet_root;
        let rootfs = layout::container_rootfs(root, &self.uid, &c.name);
        // Never the developer's own cluster: a missing file makes a client fail, not wander off.
        let mut vars = vec![("KUBECONFIG".to_string(), layout::kubeconfig(root).display().to_string())];
        vars.extend(env::resolve(&self.ctx.client, &self.pod, c).await);
        vars.push(("KUBE_SIM_ROOTFS".into(), rootfs.display().to_string()));
        vars.push(("KUBE_SIM_POD_UID".into(), self.uid.clone()));
        vars.push(("KUBE_SIM_KUBELET_ROOT".into(), root.display().to_string()));
        vars.push(("KUBE_SIM_NODE_NAME".into(), self.ctx.node.clone()));
        let args = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
        Some(ProcessSpec { program, args, env: vars, cwd: rootfs, log: layout::container_log(root, &self.uid, &c.name) })
    }

    fn stopped(&self) -> Result<(), &'static str> {
        if is_stopped(&self.stop) {
            Err("stopped")
        } else {
            Ok(())
        }
    }

    async fn pause(&mut self, d: Duration) -> Result<(), &'static str> {
        let _ = tokio::time::timeout(d, until_stopped(&mut self.stop)).await;
        self.stopped()
    }

    /// Reports the status; Err when the pod is gone or the worker was stopped.
    async fn publish(&mut self) -> Result<(), &'static str> {
        let body = json!({"status": self.view.render()});
        for attempt in 0..5 {
            self.stopped()?;
            match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => return Err("pod is gone"),
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, "updating pod status: {e}");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        Ok(())
    }
}

/// The running readiness probe of each container; all are cancelled when the pod's worker
/// ends (the pod was stopped, deleted or is gone), killing any probe command still running.
struct Probes {
    tasks: Vec<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped on every (re)start, so that what an older probe reported is ignored.
    generations: Vec<u32>,
}

impl Probes {
    fn new(n: usize) -> Probes {
        Probes { tasks: (0..n).map(|_| None).collect(), generations: vec![0; n] }
    }

    fn start<F, Fut>(&mut self, i: usize, probe: F)
    where
        F: FnOnce(u32) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.stop(i);
        self.generations[i] += 1;
        self.tasks[i] = Some(tokio::spawn(probe(self.generations[i])));
    }

    fn stop(&mut self, i: usize) {
        if let Some(t) = self.tasks[i].take() {
            t.abort();
        }
    }

    fn any(&self) -> bool {
        self.tasks.iter().any(Option::is_some)
    }

    fn is_current(&self, i: usize, generation: u32) -> bool {
        self.tasks[i].is_some() && self.generations[i] == generation
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in self.tasks.iter().flatten() {
            t.abort();
        }
    }
}

fn terminated(started: &str, exit: &Exit) -> Terminated {
    let reason = match (&exit.reason, exit.code) {
        (Some(r), _) if r.starts_with("StartError") => "StartError",
        (_, 0) => "Completed",
        _ => "Error",
    };
    let message = match &exit.reason {
        Some(r) if r.starts_with("StartError") => r.clone(),
        _ => exit.tail.clone(),
    };
    Terminated {
        exit_code: exit.code,
        reason: reason.into(),
        message,
        started_at: started.into(),
        finished_at: status::now(),
    }
}

/// Runs a regular container, restarting it as the pod's restart policy says.
async fn container_loop(
    i: usize,
    spec: ProcessSpec,
    policy: String,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<ContainerEvent>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = status::now();
        let _ = events.send(ContainerEvent::Started(i, started.clone()));
        let exit = process::run(&spec, stop.clone()).await;
        if is_stopped(&stop) {
            return;
        }
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => true,
        };
        let _ = events.send(ContainerEvent::Exited(i, terminated(&started, &exit), restart));
        if !restart {
            return;
        }
        let _ = tokio::time::timeout(backoff, until_stopped(&mut stop)).await;
        if is_stopped(&stop) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn images_match_with_or_without_tag() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SimConfig::new(dir.path());
        config.images.insert("busybox".into(), "/bin/sh".into());
        config.images.insert("registry.local:5000/helper:v2".into(), "/bin/true".into());
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let ctx = NodeContext { client, config: Arc::new(config), node: "n".into(), host_ip: "h".into() };
        assert_eq!(ctx.binary_for("busybox:1.36").unwrap(), PathBuf::from("/bin/sh"));
        assert_eq!(ctx.binary_for("busybox").unwrap(), PathBuf::from("/bin/sh"));
        assert_eq!(ctx.binary_for("registry.local:5000/helper:v2").unwrap(), PathBuf::from("/bin/true"));
        assert!(ctx.binary_for("registry.local:5000/helper").is_none());
        assert!(ctx.binary_for("nginx").is_none());
    }

    #[test]
    fn exit_reasons_follow_the_runtime() {
        let t = terminated("t0", &Exit { code: 0, tail: "ok".into(), reason: None });
        assert_eq!((t.reason.as_str(), t.message.as_str()), ("Completed", "ok"));
        assert_eq!(terminated("t0", &Exit { code: 2, tail: String::new(), reason: None }).reason, "Error");
        let t = terminated("t0", &Exit { code: 128, tail: String::new(), reason: Some("StartError: x".into()) });
        assert_eq!(t.reason, "StartError");
    }
}

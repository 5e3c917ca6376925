//! Readiness as the kubelet reports it: a container with a readiness probe is ready only while
//! its probe succeeds, and the pod's `ContainersReady` and `Ready` conditions follow.
mod fixtures;

use std::time::Duration;

use fixtures::{eventually, phase, ContainerBuilder, PodSpecBuilder, Sim};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn condition_is(pod: &Pod, kind: &str, status: &str) -> bool {
    condition(pod, kind).is_some_and(|c| c.status == status)
}

/// Whether the named container is ready, as its status says.
fn container_ready(pod: &Pod, container: &str) -> Option<bool> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|s| s.name == container).map(|s| s.ready)
}

async fn pod_where(pods: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    eventually(what, || {
        let pods = pods.clone();
        let check = &check;
        async move { pods.get(name).await.ok().filter(|p| check(p)) }
    })
    .await
}

#[tokio::test]
async fn an_exec_readiness_probe_decides_when_the_pod_is_ready() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    // "app" runs as a local process; "side" is not mapped to a binary and has an HTTP probe,
    // which always succeeds in the simulator.
    let spec = PodSpecBuilder::default()
        .container(
            ContainerBuilder::new("app", "busybox:1.36")
                .command(&["-c", "exec sleep 600"])
                .readiness_exec(&["sh", "-c", "test -f ready"], 2),
        )
        .container(
            ContainerBuilder::new("side", "nginx:1.27")
                .readiness_probe(json!({"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1})),
        );
    let _: Pod = sim.create(spec.pod("default", "web")).await;
    let pods: Api<Pod> = sim.api("default");

    let pod = pod_where(&pods, "web", "web running", |p| phase(p) == "Running" && container_ready(p, "side") == Some(true)).await;
    let unready_since = condition(&pod, "Ready").and_then(|c| c.last_transition_time.clone());
    assert!(unready_since.is_some(), "{:?}", pod.status);
    // The probe runs every second and the file is not there: Running, never Ready.
    for _ in 0..5 {
        let pod = pods.get("web").await.unwrap();
        assert_eq!(phase(&pod), "Running");
        assert!(condition_is(&pod, "Ready", "False") && condition_is(&pod, "ContainersReady", "False"), "{:?}", pod.status);
        assert_eq!(container_ready(&pod, "app"), Some(false));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The probe's cwd is the container's stand-in filesystem.
    let ready_file = sim.rootfs(&pod, "app").join("ready");
    std::fs::write(&ready_file, "").unwrap();
    let pod = pod_where(&pods, "web", "web ready", |p| {
        condition_is(p, "Ready", "True") && condition_is(p, "ContainersReady", "True") && container_ready(p, "app") == Some(true)
    })
    .await;
    assert_eq!(phase(&pod), "Running");
    let ready = condition(&pod, "Ready").unwrap();
    assert!(ready.last_transition_time.is_some());
    assert_ne!(ready.last_transition_time, unready_since);

    // Two failed probes in a row (failureThreshold) make it unready again; it keeps running.
    std::fs::remove_file(&ready_file).unwrap();
    let pod = pod_where(&pods, "web", "web unready", |p| condition_is(p, "Ready", "False") && container_ready(p, "app") == Some(false)).await;
    assert_eq!(phase(&pod), "Running");
    assert!(condition_is(&pod, "ContainersReady", "False"));
    assert_eq!(container_ready(&pod, "side"), Some(true));
    let message = condition(&pod, "Ready").unwrap().message.clone().unwrap_or_default();
    assert!(message.contains("app") && !message.contains("side"), "{message}");

    // Deleting the pod stops its probes with it.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("web deleted", || {
        let pods = pods.clone();
        async move { pods.get_opt("web").await.ok().filter(Option::is_none) }
    })
    .await;
}

#[tokio::test]
async fn a_probe_with_an_initial_delay_waits_for_it() {
    let sim = Sim::start().await;
    let spec = PodSpecBuilder::default().container(
        ContainerBuilder::new("app", "nginx:1.27")
            .readiness_probe(json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 2, "periodSeconds": 1})),
    );
    let _: Pod = sim.create(spec.pod("default", "slow")).await;
    let pods: Api<Pod> = sim.api("default");
    let started = tokio::time::Instant::now();
    pod_where(&pods, "slow", "slow running", |p| phase(p) == "Running").await;
    pod_where(&pods, "slow", "slow ready", |p| condition_is(p, "Ready", "True") && container_ready(p, "app") == Some(true)).await;
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_running_container_without_a_probe_is_ready() {
    let sim = Sim::start().await;
    let spec = PodSpecBuilder::default().container(ContainerBuilder::new("app", "nginx:1.27"));
    let _: Pod = sim.create(spec.pod("default", "plain")).await;
    let pods: Api<Pod> = sim.api("default");
    let pod = pod_where(&pods, "plain", "plain running", |p| phase(p) == "Running").await;
    assert!(condition_is(&pod, "Ready", "True") && condition_is(&pod, "ContainersReady", "True"), "{:?}", pod.status);
    assert_eq!(container_ready(&pod, "app"), Some(true));
}

//! The server Deployment (and its PodDisruptionBudget) and the node-agent DaemonSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use stowage_api::location::Provider;
use stowage_api::names;

use super::objects::{labels, meta, selector_labels, Component};
use super::options::InstallPlan;

const SCRATCH: &str = "/scratch";
/// The server image's user when it needs none of root's powers.
const NON_ROOT_UID: i64 = 65532;

pub fn server(plan: &InstallPlan) -> Deployment {
    let mut args = vec![
        "server".to_string(),
        format!("--metrics-address=0.0.0.0:{}", names::METRICS_PORT),
        format!("--restore-helper-image={}", plan.restore_helper_image),
    ];
    if plan.default_volumes_to_fs_backup {
        args.push("--default-volumes-to-fs-backup".into());
    }
    if let Some(capabilities) = &plan.namespaced_extension_capabilities {
        args.push(format!(
            "--namespaced-extension-capabilities={capabilities}"
        ));
    }
    if let Some(frequency) = &plan.default_repo_maintain_frequency {
        args.push(format!("--default-repo-maintain-frequency={frequency}"));
    }
    if let Some(port) = plan.dashboard_port {
        // Loopback in the pod: it has no login, so only `kubectl port-forward` (and the RBAC
        // on pods/portforward behind it) reaches it, not every pod of the cluster.
        args.push(format!("--dashboard-address=127.0.0.1:{port}"));
    }
    let mut container = base_container(plan, names::SERVER, "stowage", args);
    if let Some(port) = plan.dashboard_port {
        // Named, for `kubectl port-forward deploy/stowage dashboard`-style lookups and policies.
        container.ports.get_or_insert_default().push(ContainerPort {
            name: Some("dashboard".into()),
            container_port: port.into(),
            ..Default::default()
        });
    }
    // Its identity in the leader Lease.
    container.env.get_or_insert_default().push(field_env("POD_NAME", "metadata.name"));
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::String("metrics".into()), ..Default::default() }),
        period_seconds: Some(10),
        ..Default::default()
    };
    container.liveness_probe = Some(probe("/healthz"));
    // Ready when it serves, leading or not: a standby that never became ready would stall
    // rolling updates and node drains.
    container.readiness_probe = Some(probe("/readyz"));
    container.resources =
        Some(resources(&[("cpu", "500m"), ("memory", "128Mi")], &[("cpu", "1"), ("memory", "512Mi")]));
    let mut volumes = common_volumes(plan, &mut container);
    let filesystem = mount_filesystem_location(plan, &mut container, &mut volumes);
    // A hostPath directory created by the kubelet belongs to root: the server can only write
    // to a filesystem location as root.
    let uid = if filesystem { 0 } else { NON_ROOT_UID };
    container.security_context = Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(uid != 0),
        run_as_user: Some(uid),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    });
    Deployment {
        metadata: meta(names::SERVER, Some(&plan.namespace), Component::Server),
        spec: Some(DeploymentSpec {
            replicas: Some(plan.replicas),
            // Only the Lease holder runs the controllers, so replicas may overlap: a new one
            // starts before an old one stops, and a standby takes over within the Lease duration.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            selector: LabelSelector { match_labels: Some(selector_labels(Component::Server)), ..Default::default() },
            template: pod_template(Component::Server, names::SERVER, container, volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The server's Service: `/metrics` for scraping, and the downloads the CLI fetches through
/// the API server's service proxy (`services/stowage:http/proxy/downloads/...`). Any replica
/// serves a download, leading or not.
pub fn server_service(plan: &InstallPlan) -> Service {
    Service {
        metadata: meta(names::SERVER, Some(&plan.namespace), Component::Server),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(Component::Server)),
            ports: Some(vec![ServicePort {
                name: Some(names::SERVER_HTTP_PORT_NAME.into()),
                port: names::METRICS_PORT.into(),
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// With several server replicas, a voluntary disruption (a node drain) keeps one running.
pub fn server_disruption_budget(plan: &InstallPlan) -> Option<PodDisruptionBudget> {
    (plan.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(names::SERVER, Some(&plan.namespace), Component::Server),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(Component::Server)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn node_agent(plan: &InstallPlan) -> Option<DaemonSet> {
    let agent = plan.node_agent.as_ref()?;
    let args = vec![
        format!("--kubelet-pods-dir={}", names::NODE_AGENT_PODS_MOUNT),
        format!("--concurrency={}", agent.concurrency),
        format!("--metrics-address=0.0.0.0:{}", names::METRICS_PORT),
    ];
    let mut container = base_container(plan, names::NODE_AGENT, "stowage-node-agent", args);
    container.env.get_or_insert_default().push(field_env("NODE_NAME", "spec.nodeName"));
    // No memory limit: a volume backup's memory grows with the volume's file count, and an
    // OOM-killed backup leaves a locked repository behind.
    container.resources = Some(resources(&[("cpu", "100m"), ("memory", "128Mi")], &[]));
    // Root, to read and restore files owned by any user in any pod; but no privileges beyond
    // that: the kubelet mounts volumes, the agent only reads and writes files in them.
    container.security_context = Some(SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_user: Some(0),
        ..Default::default()
    });
    let mut volumes = common_volumes(plan, &mut container);
    container.volume_mounts.get_or_insert_default().push(VolumeMount {
        name: "host-pods".into(),
        mount_path: names::NODE_AGENT_PODS_MOUNT.into(),
        // Volumes the kubelet mounts after the agent started must show up inside it.
        mount_propagation: Some("HostToContainer".into()),
        ..Default::default()
    });
    volumes.push(host_path_volume("host-pods", &agent.kubelet_pods_dir, "Directory"));
    mount_filesystem_location(plan, &mut container, &mut volumes);
    Some(DaemonSet {
        metadata: meta(names::NODE_AGENT, Some(&plan.namespace), Component::NodeAgent),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector_labels(Component::NodeAgent)), ..Default::default() },
            template: pod_template(Component::NodeAgent, names::NODE_AGENT_SERVICE_ACCOUNT, container, volumes),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn base_container(plan: &InstallPlan, name: &str, command: &str, args: Vec<String>) -> Container {
    Container {
        name: name.into(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![command.into()]),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: names::METRICS_PORT.into(),
            ..Default::default()
        }]),
        env: Some(vec![
            field_env(names::NAMESPACE_ENV, "metadata.namespace"),
            EnvVar { name: "TMPDIR".into(), value: Some(SCRATCH.into()), ..Default::default() },
        ]),
        ..Default::default()
    }
}

/// Scratch space (the root filesystem is read-only) and the credentials Secret.
fn common_volumes(plan: &InstallPlan, container: &mut Container) -> Vec<Volume> {
    let mounts = container.volume_mounts.get_or_insert_default();
    mounts.push(VolumeMount { name: "scratch".into(), mount_path: SCRATCH.into(), ..Default::default() });
    let mut volumes =
        vec![Volume { name: "scratch".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }];
    if plan.credentials.is_some() {
        mounts.push(VolumeMount {
            name: "cloud-credentials".into(),
            mount_path: names::CREDENTIALS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "cloud-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::CREDENTIALS_SECRET.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let file = format!("{}/{}", names::CREDENTIALS_MOUNT_PATH, names::CREDENTIALS_SECRET_KEY);
        container.env.get_or_insert_default().push(EnvVar {
            name: "AWS_SHARED_CREDENTIALS_FILE".into(),
            value: Some(file),
            ..Default::default()
        });
    }
    volumes
}

/// For a `filesystem` location, the directory at the same path on the node and in the pod.
fn mount_filesystem_location(plan: &InstallPlan, container: &mut Container, volumes: &mut Vec<Volume>) -> bool {
    let Some(location) = plan.location.as_ref().filter(|l| l.provider == Provider::Filesystem) else {
        return false;
    };
    container.volume_mounts.get_or_insert_default().push(VolumeMount {
        name: "backup-location".into(),
        mount_path: location.bucket.clone(),
        ..Default::default()
    });
    volumes.push(host_path_volume("backup-location", &location.bucket, "DirectoryOrCreate"));
    true
}

fn pod_template(component: Component, account: &str, container: Container, volumes: Vec<Volume>) -> PodTemplateSpec {
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), names::METRICS_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(component)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(account.into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn host_path_volume(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some(type_.into()) }),
        ..Default::default()
    }
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |pairs: &[(&str, &str)]| {
        (!pairs.is_empty()).then(|| pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect())
    };
    ResourceRequirements { requests: map(requests), limits: map(limits), ..Default::default() }
}

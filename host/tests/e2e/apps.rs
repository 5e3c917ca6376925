//! Applications the end-to-end tests back up: the seed's nginx example, and small objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service};
use serde_json::{json, Value};

use super::Env;

pub const NGINX: &str = "nginx-example";

/// The seed's nginx example in namespace `ns`: namespace, configmap, secret, claim, deployment
/// (two replicas mounting the claim) and a NodePort service.
pub async fn deploy_nginx(env: &Env, ns: &str) {
    env.create_namespace(ns).await;
    env.create_in::<ConfigMap>(ns, json!({"metadata": {"name": "nginx-config", "labels": {"app": "nginx"}},
        "data": {"nginx.conf": "worker_processes 1;\n"}})).await;
    env.create_in::<Secret>(ns, json!({"metadata": {"name": "nginx-tls", "labels": {"app": "nginx"}},
        "data": {"tls.key": "c2VjcmV0LWtleQ=="}})).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "nginx-logs", "labels": {"app": "nginx"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Mi"}}}})).await;
    env.create_in::<Deployment>(ns, json!({"metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {
                "volumes": [{"name": "nginx-logs", "persistentVolumeClaim": {"claimName": "nginx-logs"}}],
                "containers": [{"name": "nginx", "image": "nginx:1.17.6", "ports": [{"containerPort": 80}],
                    "volumeMounts": [{"mountPath": "/var/log/nginx", "name": "nginx-logs"}]}]}}}})).await;
    env.create_in::<Service>(ns, json!({"metadata": {"name": "my-nginx", "labels": {"app": "nginx"}},
        "spec": {"type": "NodePort", "selector": {"app": "nginx"}, "ports": [{"port": 80, "targetPort": 80}]}})).await;
}

/// The parts of the nginx example a user compares after a restore, without what the cluster
/// assigns (cluster IPs, node ports, the provisioned volume's name).
pub async fn nginx_snapshot(env: &Env, ns: &str) -> Value {
    let get = |kind: &'static str, v: Option<Value>| v.unwrap_or_else(|| panic!("{kind} missing in {ns}"));
    let deploy = get("deployment", env.get_in::<Deployment>(ns, "nginx-deployment").await);
    let mut svc = get("service", env.get_in::<Service>(ns, "my-nginx").await)["spec"].clone();
    for assigned in ["clusterIP", "clusterIPs"] {
        svc.as_object_mut().unwrap().remove(assigned);
    }
    for p in svc["ports"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("nodePort");
    }
    let mut pvc = get("claim", env.get_in::<PersistentVolumeClaim>(ns, "nginx-logs").await)["spec"].clone();
    pvc.as_object_mut().unwrap().remove("volumeName");
    json!({
        "deployment": deploy["spec"],
        "service": svc,
        "configmap": get("configmap", env.get_in::<ConfigMap>(ns, "nginx-config").await)["data"],
        "secret": get("secret", env.get_in::<Secret>(ns, "nginx-tls").await)["data"],
        "pvc": pvc,
    })
}

/// A statically provisioned volume (class `manual`, reclaim policy Retain) and a claim in `ns`
/// that binds to it; waits until they are bound.
pub async fn static_volume(env: &Env, ns: &str, pv: &str, claim: &str) {
    env.create_cluster::<PersistentVolume>(json!({"metadata": {"name": pv, "labels": {"type": "static"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": format!("/mnt/data/{pv}")}}})).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}}}})).await;
    super::wait_for(&format!("claim {ns}/{claim} to bind to {pv}"), 30, || async {
        let c = env.get_in::<PersistentVolumeClaim>(ns, claim).await?;
        (c["status"]["phase"] == "Bound" && c["spec"]["volumeName"] == pv).then_some(())
    })
    .await;
}

/// A ConfigMap with these labels and one data entry.
pub fn config_map(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "data": {"name": name}})
}

/// The seed's nginx example with its log volume opted in to file-system backup
/// (`backup.velero.io/backup-volumes: nginx-logs` on the pod template, as the seed does);
/// `replicas` pods share the claim.
pub async fn deploy_nginx_with_logs(env: &Env, ns: &str, replicas: u32) {
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "nginx-logs", "labels": {"app": "nginx"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Mi"}}}})).await;
    env.create_in::<Deployment>(ns, json!({"metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}, "annotations": {"backup.velero.io/backup-volumes": "nginx-logs"}},
                "spec": {
                "volumes": [{"name": "nginx-logs", "persistentVolumeClaim": {"claimName": "nginx-logs"}}],
                "containers": [{"name": "nginx", "image": "nginx:1.17.6", "ports": [{"containerPort": 80}],
                    "volumeMounts": [{"mountPath": "/var/log/nginx", "name": "nginx-logs"}]}]}}}})).await;
}

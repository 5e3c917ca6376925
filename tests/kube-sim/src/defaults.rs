//! Defaults and allocations the real API server applies on create/update, for the kinds where
//! tests (and restores) notice them: namespaces, pods, services, PVCs, PVs, deployments, secrets.

use base64::Engine;
use serde_json::{json, Value};

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.entry(key.to_string()).or_insert(value);
    }
}

/// What a create needs from the rest of the store to default an object.
pub struct Context<'a> {
    pub default_storage_class: Option<String>,
    pub used_cluster_ips: &'a dyn Fn(&str) -> bool,
    pub used_node_ports: &'a dyn Fn(i64) -> bool,
    pub seed: u64,
}

pub fn on_create(group: &str, plural: &str, obj: &mut Value, ctx: &Context) {
    match (group, plural) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            let spec = &mut obj["spec"];
            set_default(spec, "restartPolicy", json!("Always"));
            set_default(spec, "dnsPolicy", json!("ClusterFirst"));
            set_default(spec, "schedulerName", json!("default-scheduler"));
            set_default(spec, "terminationGracePeriodSeconds", json!(30));
            set_default(spec, "serviceAccountName", json!("default"));
            set_default(spec, "securityContext", json!({}));
            for list in ["containers", "initContainers"] {
                if let Some(cs) = spec[list].as_array_mut() {
                    for c in cs {
                        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                        set_default(c, "terminationMessagePolicy", json!("File"));
                        set_default(c, "imagePullPolicy", json!("IfNotPresent"));
                        set_default(c, "resources", json!({}));
                    }
                }
            }
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "services") => default_service(obj, None, ctx),
        ("", "persistentvolumeclaims") => {
            let spec = &mut obj["spec"];
            set_default(spec, "volumeMode", json!("Filesystem"));
            if spec.get("storageClassName").is_none() && spec.get("volumeName").is_none() {
                if let Some(sc) = &ctx.default_storage_class {
                    spec["storageClassName"] = json!(sc);
                }
            }
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "persistentvolumes") => {
            set_default(&mut obj["spec"], "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            obj["status"] = json!({"phase": "Available"});
        }
        ("apps", "deployments") => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        ("apps", "statefulsets") | ("apps", "replicasets") => set_default(&mut obj["spec"], "replicas", json!(1)),
        ("batch", "jobs") => default_job(obj),
        _ => {}
    }
    on_write(group, plural, obj);
}

/// Applied on update: carries over what the server owns (allocated IPs and ports).
pub fn on_update(group: &str, plural: &str, old: &Value, obj: &mut Value, ctx: &Context) {
    if (group, plural) == ("", "services") {
        default_service(obj, Some(old), ctx);
    }
    on_write(group, plural, obj);
}

fn on_write(group: &str, plural: &str, obj: &mut Value) {
    if (group, plural) == ("", "secrets") {
        // The API server folds stringData into data.
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            for (k, v) in sd {
                let enc = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                obj["data"][k] = json!(enc);
            }
        }
        set_default(obj, "type", json!("Opaque"));
    }
}

/// Jobs get a selector on their own uid and the matching template labels, unless the user
/// asked for a manual selector; restores rely on stripping exactly these.
fn default_job(obj: &mut Value) {
    if obj["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("job-name", &name),
    ] {
        labels[k] = v.clone();
    }
    set_default(&mut obj["spec"], "completions", json!(1));
    set_default(&mut obj["spec"], "parallelism", json!(1));
    set_default(&mut obj["spec"], "backoffLimit", json!(6));
}

fn default_service(obj: &mut Value, old: Option<&Value>, ctx: &Context) {
    let spec = &mut obj["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let svc_type = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if svc_type != "ExternalName" {
        let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str()).filter(|s| !s.is_empty());
        let ip = match (spec["clusterIP"].as_str().filter(|s| !s.is_empty()), old_ip) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(old)) => old.to_string(),
            (None, None) => {
                let mut n = ctx.seed;
                loop {
                    let ip = format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 2);
                    if !(ctx.used_cluster_ips)(&ip) {
                        break ip;
                    }
                    n += 1;
                }
            }
        };
        spec["clusterIP"] = json!(ip);
        if ip != "None" {
            spec["clusterIPs"] = json!([ip]);
        }
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    let needs_node_port = svc_type == "NodePort" || svc_type == "LoadBalancer";
    let old_ports = old.map(|o| o["spec"]["ports"].clone()).unwrap_or(Value::Null);
    if let Some(ports) = spec["ports"].as_array_mut() {
        let mut next = 30000 + (ctx.seed % 2000) as i64;
        for p in ports.iter_mut() {
            set_default(p, "protocol", json!("TCP"));
            if p.get("targetPort").is_none() {
                p["targetPort"] = p["port"].clone();
            }
            if needs_node_port && p.get("nodePort").is_none() {
                let carried = old_ports
                    .as_array()
                    .and_then(|ops| ops.iter().find(|op| op["port"] == p["port"]))
                    .and_then(|op| op["nodePort"].as_i64());
                let port = carried.unwrap_or_else(|| {
                    while (ctx.used_node_ports)(next) {
                        next += 1;
                    }
                    next
                });
                next = port + 1;
                p["nodePort"] = json!(port);
            }
        }
    }
    if obj.get("status").is_none() {
        obj["status"] = json!({"loadBalancer": {}});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            default_storage_class: Some("standard".into()),
            used_cluster_ips: &|ip| ip == "10.96.0.9",
            used_node_ports: &|p| p == 30007,
            seed: 7,
        }
    }

    #[test]
    fn service_gets_free_cluster_ip_and_node_port() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        on_create("", "services", &mut svc, &ctx());
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30008);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        let mut upd = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        on_update("", "services", &svc, &mut upd, &ctx());
        assert_eq!(upd["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(upd["spec"]["ports"][0]["nodePort"], 30008);
    }

    #[test]
    fn jobs_get_a_selector_on_their_uid() {
        let mut job = json!({"metadata": {"name": "j", "uid": "u-1"}, "spec": {"template": {"spec": {}}}});
        on_create("batch", "jobs", &mut job, &ctx());
        assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(job["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
    }

    #[test]
    fn pvc_gets_default_class_and_secret_string_data_folds() {
        let mut pvc = json!({"metadata": {"name": "c"}, "spec": {}});
        on_create("", "persistentvolumeclaims", &mut pvc, &ctx());
        assert_eq!(pvc["spec"]["storageClassName"], "standard");
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        on_create("", "secrets", &mut s, &ctx());
        assert_eq!(s["data"]["k"], "dg==");
        assert!(s.get("stringData").is_none());
    }
}

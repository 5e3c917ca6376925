//! Services: the cluster assigns cluster IPs and, unless asked for one, node ports. Restoring
//! the old ones would collide with what the target cluster already allocated.

use std::collections::BTreeSet;

use serde_json::Value;

use super::remove_at;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes the cluster IPs, except `None`, which makes the service headless.
pub(super) fn clear_cluster_ips(svc: &mut Value) {
    if svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        return;
    }
    remove_at(svc, &["spec", "clusterIP"]);
    remove_at(svc, &["spec", "clusterIPs"]);
}

/// Which node ports the user asked for, as opposed to those the cluster picked.
#[derive(Debug, Default)]
struct ExplicitPorts {
    /// Ports named in the request.
    named: BTreeSet<String>,
    /// Node port numbers of unnamed ports in the request (`kubectl apply`).
    numbers: BTreeSet<u64>,
    /// `k:{"port":80,"protocol":"TCP"}` keys (server-side apply managed fields).
    keys: BTreeSet<String>,
    health_check: bool,
}

/// Removes node ports the cluster assigned; keeps those in the `kubectl apply` annotation
/// or, without it, in the managed fields. The error names what could not be read (the ports
/// are then all treated as assigned).
pub(super) fn drop_assigned_node_ports(svc: &mut Value) -> Result<(), String> {
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Ok(());
    }
    let (explicit, problem) = match explicit_ports(svc) {
        Ok(explicit) => (explicit, None),
        Err(problem) => (ExplicitPorts::default(), Some(problem)),
    };
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter(|p| !explicit.keeps(p)) {
            remove_at(port, &["nodePort"]);
        }
    }
    let local_lb = svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
    if local_lb && !explicit.health_check {
        remove_at(svc, &["spec", "healthCheckNodePort"]);
    }
    problem.map_or(Ok(()), Err)
}

impl ExplicitPorts {
    fn keeps(&self, port: &Value) -> bool {
        match port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(name) if self.named.contains(name) => true,
            Some(_) => self.keys.contains(&port_key(port)),
            None => {
                let number = port.get("nodePort").and_then(Value::as_u64);
                number.is_some_and(|n| self.numbers.contains(&n)) || self.keys.contains(&port_key(port))
            }
        }
    }
}

fn explicit_ports(svc: &Value) -> Result<ExplicitPorts, String> {
    let last_applied = svc.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED)).and_then(Value::as_str);
    match last_applied {
        Some(text) => from_last_applied(text),
        None => Ok(from_managed_fields(svc)),
    }
}

fn from_last_applied(text: &str) -> Result<ExplicitPorts, String> {
    let applied: Value = serde_json::from_str(text)
        .map_err(|e| format!("annotation {LAST_APPLIED} is not JSON ({e}); node ports are reassigned"))?;
    let mut explicit = ExplicitPorts::default();
    for port in applied.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        let Some(node_port) = port.get("nodePort").and_then(node_port_number).filter(|n| *n > 0) else { continue };
        match port.get("name").and_then(Value::as_str) {
            Some(name) => explicit.named.insert(name.to_string()),
            None => explicit.numbers.insert(node_port),
        };
    }
    explicit.health_check =
        applied.pointer("/spec/healthCheckNodePort").and_then(node_port_number).is_some_and(|n| n > 0);
    Ok(explicit)
}

/// kubectl writes what the user wrote: a number, or a string holding one.
fn node_port_number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str()?.parse().ok())
}

fn from_managed_fields(svc: &Value) -> ExplicitPorts {
    let mut explicit = ExplicitPorts::default();
    let entries = svc.pointer("/metadata/managedFields").and_then(Value::as_array);
    for fields in entries.into_iter().flatten().filter_map(|e| e.get("fieldsV1")) {
        if let Some(ports) = fields.pointer("/f:spec/f:ports").and_then(Value::as_object) {
            let with_node_port = ports.iter().filter(|(_, p)| p.get("f:nodePort").is_some());
            explicit.keys.extend(with_node_port.map(|(key, _)| key.clone()));
        }
        explicit.health_check |= fields.pointer("/f:spec/f:healthCheckNodePort").is_some();
    }
    explicit
}

/// The key server-side apply gives a service port in managed fields.
fn port_key(port: &Value) -> String {
    let number = port.get("port").and_then(Value::as_u64).unwrap_or(0);
    let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
    format!(r#"k:{{"port":{number},"protocol":"{protocol}"}}"#)
}

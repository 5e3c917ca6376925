//! HTTP routing: discovery, resource CRUD, subresources and watches, over one generic store.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::auth::{self, Attributes, Identity};
use crate::error::{ApiError, ApiResult};
use crate::exec::ExecRegistry;
use crate::patch::PatchKind;
use crate::resources::{json_path, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, Propagation, Store, WriteOpts};
use crate::table::{self, IncludeObject};
use crate::{discovery, openapi, proxy, watch, SimConfig};

const MAX_BODY: usize = 64 << 20;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<SimConfig>,
    pub exec: ExecRegistry,
}

impl AppState {
    pub fn new(config: Arc<SimConfig>, exec: ExecRegistry) -> Self {
        AppState { store: Store::new(), config, exec }
    }

    /// The objects a fresh cluster has: system namespaces, nodes, a default StorageClass.
    pub fn bootstrap(&self) -> anyhow::Result<()> {
        let opts = WriteOpts::default();
        let ty = |g: &str, v: &str, p: &str| {
            self.store.resolve(g, v, p).ok_or_else(|| anyhow::anyhow!("built-in type {p} missing"))
        };
        let namespaces = ty("", "v1", "namespaces")?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.store.create(&namespaces, "", json!({"metadata": {"name": ns}}), &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let nodes = ty("", "v1", "nodes")?;
        for node in &self.config.nodes {
            let obj = json!({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}}});
            self.store.create(&nodes, "", obj, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            let status = json!({"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-kube-sim", "operatingSystem": "linux", "architecture": "amd64"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node}],
            }});
            self.store
                .patch(&nodes, "", node, (PatchKind::Merge, status.to_string().as_bytes()), Some("status"), &opts)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let classes = ty("storage.k8s.io", "v1", "storageclasses")?;
        let sc = json!({
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kube-sim.io/hostpath-csi",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        });
        self.store.create(&classes, "", sc, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Namespace finalisation and garbage collection, as the controller manager does them.
    pub fn spawn_background(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            // A pass that overran is not followed by others back to back: requests get the lock.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.background_pass();
            }
        })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.status())
}

pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// A parsed resource request path.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let who = match auth::authenticate(&state.config, req.headers())
        .and_then(|who| auth::impersonate(&state.store, who, req.headers()))
    {
        Ok(who) => who,
        Err(e) => return error_response(&e),
    };
    // Before the resource paths: a proxied path has any number of segments after `proxy`.
    if let Some(p) = proxy::parse_path(req.uri().path()) {
        return proxy_service(&state, &who, p, req).await.unwrap_or_else(|e| error_response(&e));
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = Query(serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default());
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(String::from).collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let types = state.store.types();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_string();
    let ok = |v: Value| json_response(StatusCode::OK, &v);
    let not_found = || error_response(&ApiError::NotFound("the server could not find the requested resource".into()));
    match seg.as_slice() {
        ["version"] => return ok(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => return "ok".into_response(),
        ["api"] => return ok(discovery::core_versions(&host)),
        ["apis"] => return ok(discovery::group_list(&types)),
        ["api", v] => return discovery::resource_list(&types, "", v).map(ok).unwrap_or_else(not_found),
        ["apis", g] => return discovery::group(&types, g).map(ok).unwrap_or_else(not_found),
        ["apis", g, v] => return discovery::resource_list(&types, g, v).map(ok).unwrap_or_else(not_found),
        ["openapi", "v3"] => return ok(openapi::root(&types)),
        ["openapi", "v3", rest @ ..] => {
            return openapi::group_version(&types, &rest.join("/")).map(ok).unwrap_or_else(not_found)
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match seg.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return not_found(),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, next, ..] if !matches!(*next, "status" | "finalize") => (Some(ns.to_string()), &rest[2..]),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return not_found(),
    };
    let Some(rt) = state.store.resolve(group, version, plural) else { return not_found() };
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return not_found();
    }
    if let Some(s) = &sub {
        if !rt.has_subresource(s) {
            return not_found();
        }
    }
    let target = Target { rt, namespace, name, subresource: sub };
    let watching = legacy_watch || query.flag("watch");
    if let Err(e) = auth::authorize(&state.store, &who, &attributes(&target, req.method(), watching)) {
        return error_response(&e);
    }
    match dispatch(&state, target, query, watching, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// A resource request in RBAC's terms. A namespace's own path is in that namespace, so a
/// RoleBinding there can grant reading it.
fn attributes(t: &Target, method: &Method, watching: bool) -> Attributes {
    let own_namespace = (t.rt.group.is_empty() && t.rt.plural == "namespaces").then(|| t.name.clone()).flatten();
    Attributes {
        verb: auth::verb(method.as_str(), t.name.is_some(), watching),
        group: t.rt.group.clone(),
        resource: t.rt.plural.clone(),
        subresource: t.subresource.clone(),
        name: t.name.clone(),
        namespace: t.namespace.clone().or(own_namespace),
    }
}

/// `services/{id}/proxy/...`: authorized as the method's verb on `services/proxy` (the name is
/// the id as written, port included, as the API server has it), then forwarded to an endpoint.
async fn proxy_service(state: &AppState, who: &Identity, p: proxy::ProxyPath, req: Request) -> ApiResult<Response> {
    let attrs = Attributes {
        verb: auth::verb(req.method().as_str(), true, false),
        group: String::new(),
        resource: "services".into(),
        subresource: Some("proxy".into()),
        name: Some(p.service.clone()),
        namespace: Some(p.namespace.clone()),
    };
    auth::authorize(&state.store, who, &attrs)?;
    let id = proxy::split_service_id(&p.service)?;
    let upstream = proxy::resolve(&state.store, &p.namespace, &id)?;
    proxy::forward(req, upstream, &p.rest).await
}

async fn body_json(req: Request) -> ApiResult<(HeaderMap, Vec<u8>)> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
    Ok((parts.headers, bytes.to_vec()))
}

fn parse_object(ct: &str, bytes: &[u8]) -> ApiResult<Value> {
    if ct.contains("protobuf") {
        return crate::protobuf::decode(bytes).map_err(ApiError::UnsupportedMediaType);
    }
    let v: Value = if ct.contains("yaml") {
        serde_yaml::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid YAML body: {e}")))?
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    Ok(v)
}

async fn dispatch(state: &AppState, t: Target, q: Query, watching: bool, req: Request) -> ApiResult<Response> {
    let store = &state.store;
    let rt = &t.rt;
    let ns = t.namespace.clone().unwrap_or_default();
    let accept = req.headers().get(header::ACCEPT).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let method = req.method().clone();
    let write = WriteOpts { dry_run: q.dry_run() };
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
    let created = |v: Value| json_response(StatusCode::CREATED, &v);
    let ok = |v: Value| json_response(StatusCode::OK, &v);

    match (&method, t.name.as_deref(), t.subresource.as_deref()) {
        (&Method::GET, None, None) if watching => {
            let ns_filter = t.namespace.as_deref();
            return watch::serve(state, rt, ns_filter, labels, fields, &q, table::wants_table(&accept));
        }
        (&Method::GET, None, None) => {
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let list = store.list(rt, t.namespace.as_deref(), &labels, &fields, limit, q.get("continue"))?;
            let rv = list.resource_version.to_string();
            if table::wants_table(&accept) {
                let mut tbl = table::table(rt, &list.items, IncludeObject::parse(q.get("includeObject")), true, &rv);
                if let Some(c) = &list.continue_token {
                    tbl["metadata"]["continue"] = json!(c);
                }
                return Ok(ok(tbl));
            }
            let mut meta = json!({"resourceVersion": rv});
            if let Some(c) = list.continue_token {
                meta["continue"] = json!(c);
            }
            let kind = format!("{}List", rt.kind);
            return Ok(ok(json!({"kind": kind, "apiVersion": rt.api_version(), "metadata": meta, "items": list.items})));
        }
        (&Method::GET, Some(name), None) | (&Method::GET, Some(name), Some("status")) => {
            let obj = store.get(rt, &ns, name)?;
            if table::wants_table(&accept) {
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                return Ok(ok(table::table(rt, &[obj], IncludeObject::parse(q.get("includeObject")), true, &rv)));
            }
            return Ok(ok(obj));
        }
        (&Method::GET, Some(name), Some("scale")) => return Ok(ok(scale_of(rt, &store.get(rt, &ns, name)?))),
        (&Method::GET, Some(name), Some("log")) => {
            let pod = store.get(rt, &ns, name)?;
            return Ok(pod_log(state, &pod, &q).into_response());
        }
        (_, Some(name), Some("exec")) if method == Method::GET || method == Method::POST => {
            let pod = store.get(rt, &ns, name)?;
            let (mut parts, _) = req.into_parts();
            let ws = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|_| ApiError::BadRequest("pods/exec needs a WebSocket upgrade (channel.k8s.io protocols)".into()))?;
            return Ok(crate::exec::respond(state.exec.clone(), state.config.kubelet_root.clone(), pod, q.0, ws).await);
        }
        _ => {}
    }

    let (headers, bytes) = body_json(req).await?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("application/json").to_string();
    match (method, t.name.as_deref(), t.subresource.as_deref()) {
        (Method::POST, None, None) => {
            if rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::NotFound("the server could not find the requested resource".into()));
            }
            Ok(created(store.create(rt, &ns, parse_object(&ct, &bytes)?, &write)?))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = parse_object(&ct, &bytes)?;
            let node = binding["target"]["name"].as_str().ok_or_else(|| ApiError::Invalid("target.name is required".into()))?;
            let p = json!({"spec": {"nodeName": node}}).to_string();
            store.patch(rt, &ns, name, (PatchKind::Merge, p.as_bytes()), None, &write)?;
            Ok(created(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let scale = parse_object(&ct, &bytes)?;
            Ok(ok(set_replicas(store, rt, &ns, name, &scale, &write)?))
        }
        (Method::PATCH, Some(name), Some("scale")) => {
            let kind = PatchKind::from_content_type(&ct)
                .ok_or_else(|| ApiError::UnsupportedMediaType(format!("unsupported patch type {ct}")))?;
            let current = scale_of(rt, &store.get(rt, &ns, name)?);
            let scale = crate::patch::apply(kind, &current, &bytes).map_err(ApiError::Invalid)?;
            Ok(ok(set_replicas(store, rt, &ns, name, &scale, &write)?))
        }
        (Method::PUT, Some(name), sub) => {
            let sub = sub.filter(|s| *s == "status");
            Ok(ok(store.update(rt, &ns, name, parse_object(&ct, &bytes)?, sub, &write)?))
        }
        (Method::PATCH, Some(name), sub) => {
            let kind = PatchKind::from_content_type(&ct)
                .ok_or_else(|| ApiError::UnsupportedMediaType(format!("unsupported patch type {ct}")))?;
            let sub = sub.filter(|s| *s == "status");
            Ok(ok(store.patch(rt, &ns, name, (kind, &bytes), sub, &write)?))
        }
        (Method::DELETE, name, None) => {
            let body: Value = if bytes.is_empty() { json!({}) } else { serde_json::from_slice(&bytes).unwrap_or(json!({})) };
            let propagation = match body["propagationPolicy"].as_str().or(q.get("propagationPolicy")) {
                Some("Orphan") => Propagation::Orphan,
                Some("Foreground") => Propagation::Foreground,
                _ if body["orphanDependents"].as_bool() == Some(true) => Propagation::Orphan,
                _ => Propagation::Background,
            };
            let opts = DeleteOpts {
                dry_run: write.dry_run || body["dryRun"].as_array().is_some_and(|d| d.iter().any(|x| x == "All")),
                propagation,
                precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
                precondition_rv: body["preconditions"]["resourceVersion"].as_str().map(String::from),
            };
            match name {
                Some(name) => Ok(ok(store.delete(rt, &ns, name, &opts)?)),
                None => {
                    let items = store.delete_collection(rt, t.namespace.as_deref(), &labels, &fields, &opts)?;
                    let rv = store.current_rv().to_string();
                    Ok(ok(json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": rv}, "items": items})))
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed("the server does not allow this method on the requested resource".into())),
    }
}

fn selector_string(obj: &Value, path: Option<&str>) -> String {
    let sel = path.and_then(|p| json_path(obj, p)).cloned().unwrap_or(Value::Null);
    match sel {
        Value::String(s) => s,
        Value::Object(_) => {
            let labels = sel.get("matchLabels").and_then(Value::as_object).cloned().unwrap_or_else(|| {
                sel.as_object().map(|m| m.iter().filter(|(_, v)| v.is_string()).map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
            });
            labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
        }
        _ => String::new(),
    }
}

/// The `autoscaling/v1 Scale` view of a scalable object.
fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
    let paths = rt.scale.clone().unwrap_or_else(|| crate::resources::ScalePaths {
        spec_replicas: ".spec.replicas".into(),
        status_replicas: ".status.replicas".into(),
        label_selector: None,
    });
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": json_path(obj, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": json_path(obj, &paths.status_replicas).cloned().unwrap_or(json!(0)),
            "selector": selector_string(obj, paths.label_selector.as_deref())},
    })
}

fn set_replicas(store: &Store, rt: &ResourceType, ns: &str, name: &str, scale: &Value, opts: &WriteOpts) -> ApiResult<Value> {
    let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| ApiError::Invalid("spec.replicas is required".into()))?;
    if replicas < 0 {
        return Err(ApiError::Invalid(format!("spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0")));
    }
    let path = rt.scale.as_ref().map(|s| s.spec_replicas.clone()).unwrap_or_else(|| ".spec.replicas".into());
    let mut p = json!(replicas);
    for seg in path.split('.').filter(|s| !s.is_empty()).rev() {
        p = json!({ seg: p });
    }
    if let Some(rv) = scale["metadata"]["resourceVersion"].as_str().filter(|r| !r.is_empty()) {
        p["metadata"] = json!({"resourceVersion": rv});
    }
    let updated = store.patch(rt, ns, name, (PatchKind::Merge, p.to_string().as_bytes()), None, opts)?;
    Ok(scale_of(rt, &updated))
}

fn pod_log(state: &AppState, pod: &Value, q: &Query) -> Response {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let container = q
        .get("container")
        .map(String::from)
        .or_else(|| pod["spec"]["containers"][0]["name"].as_str().map(String::from))
        .unwrap_or_default();
    let path = state.config.kubelet_root.join("pods").join(uid).join("containers").join(container).join("log");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], Body::from(text)).into_response()
}

//! The `services/proxy` subresource: requests reach a local HTTP server through a
//! selector-less Service and its Endpoints, bodies stream both ways, errors read like the API
//! server's, and RBAC on `services/proxy` decides who may use it (kube-rs and kubectl).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::Router;
use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NS: &str = "stowage";
const MIB: usize = 1 << 20;

/// The generated download: chunk `i` is one pseudo-random MiB with `i` in its first bytes, so
/// a reordered, repeated or dropped chunk changes the hash.
fn chunk(block: &[u8], i: usize) -> Bytes {
    let mut c = block.to_vec();
    c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(c)
}

fn random_block() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn expected_sha(block: &[u8], chunks: usize) -> String {
    let mut h = Sha256::new();
    for i in 0..chunks {
        h.update(chunk(block, i));
    }
    format!("{:x}", h.finalize())
}

async fn echo(req: Request) -> impl IntoResponse {
    let headers: serde_json::Map<String, Value> =
        req.headers().iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("")))).collect();
    axum::Json(json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    }))
}

/// `/big?mib=N`: N MiB generated as they are sent, with no Content-Length (chunked).
async fn big(axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, usize>>) -> impl IntoResponse {
    let chunks = q.get("mib").copied().unwrap_or(1);
    let block = random_block();
    let stream = futures::stream::iter(0..chunks).map(move |i| Ok::<_, Infallible>(chunk(&block, i)));
    ([("content-type", "application/octet-stream")], Body::from_stream(stream))
}

/// `/upload`: the length and hash of the body, read as it arrives.
async fn upload(body: Body) -> impl IntoResponse {
    let mut stream = body.into_data_stream();
    let (mut len, mut h) = (0usize, Sha256::new());
    while let Some(data) = stream.next().await {
        let data = data.unwrap();
        len += data.len();
        h.update(&data);
    }
    axum::Json(json!({"length": len, "sha256": format!("{:x}", h.finalize())}))
}

async fn teapot(headers: HeaderMap) -> impl IntoResponse {
    let who = headers.get("x-who").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_string();
    (StatusCode::IM_A_TEAPOT, [("x-upstream", "yes")], format!("short and stout, {who}"))
}

/// A local HTTP server standing in for the Stowage server behind the Service.
async fn upstream() -> SocketAddr {
    let app = Router::new()
        .route("/big", get(big))
        .route("/upload", post(upload))
        .route("/teapot", any(teapot))
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn start(users: &[(&str, &str)]) -> (KubeSim, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimConfig { run_controllers: false, ..SimConfig::new(dir.path().join("kubelet")) };
    for (token, name) in users {
        config = config.with_user(*token, *name);
    }
    let sim = KubeSim::start(config).await.unwrap();
    let client = sim.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap()).await.unwrap();
    (sim, client, dir)
}

/// Creates `obj`, a resource of the given plural.
async fn apply(client: &Client, plural: &str, obj: Value) {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
}

/// Service `name` with port `http` (80) and, when `target` is given, Endpoints pointing at it.
async fn service(client: &Client, name: &str, target: Option<SocketAddr>) {
    apply(client, "services", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})).await;
    if let Some(t) = target {
        apply(client, "endpoints", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": NS},
            "subsets": [{"addresses": [{"ip": t.ip().to_string()}], "ports": [{"name": "http", "port": t.port()}]}]})).await;
    }
}

fn proxy_path(service: &str, rest: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{service}/proxy{rest}")
}

async fn send(client: &Client, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> http::Response<kube::client::Body> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(kube::client::Body::from(body)).unwrap()).await.unwrap()
}

async fn body_json(resp: http::Response<kube::client::Body>) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

async fn get_json(client: &Client, uri: &str) -> (StatusCode, Value) {
    let resp = send(client, Method::GET, uri, &[], Vec::new()).await;
    (resp.status(), body_json(resp).await)
}

/// A kube-rs client that gives up on the first 503: by default kube-rs retries 429, 503 and 504
/// up to 15 times with a backoff growing to minutes, as it would against a real cluster.
async fn no_retry_client(sim: &KubeSim) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

/// The peak resident set of this process so far, in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_path_query_method_and_headers_but_not_credentials() {
    let (_sim, client, _dir) = start(&[]).await;
    service(&client, "stowage", Some(upstream().await)).await;
    for svc in ["stowage", "stowage:http", "stowage:80", "http:stowage:http", "http:stowage:80"] {
        let uri = proxy_path(svc, "/v1/downloads/a%20b/?x=1&y=two");
        let resp = send(&client, Method::GET, &uri, &[("X-Stowage-Download-Token", "s3cret")], Vec::new()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{svc}");
        let echoed = body_json(resp).await;
        assert_eq!(echoed["method"], "GET");
        assert_eq!(echoed["path"], "/v1/downloads/a%20b/", "{svc}");
        assert_eq!(echoed["query"], "x=1&y=two");
        assert_eq!(echoed["headers"]["x-stowage-download-token"], "s3cret");
        assert!(echoed["headers"].get("authorization").is_none(), "the API server's credentials leaked: {echoed}");
    }
    let (_, echoed) = get_json(&client, &proxy_path("stowage", "")).await;
    assert_eq!(echoed["path"], "/", "nothing after proxy is the root");
    let resp = send(&client, Method::DELETE, &proxy_path("stowage", "/things/1"), &[], Vec::new()).await;
    assert_eq!(body_json(resp).await["method"], "DELETE");

    // Status and headers of the upstream come back as they are.
    let resp = send(&client, Method::PUT, &proxy_path("stowage", "/teapot"), &[("x-who", "tester")], Vec::new()).await;
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"short and stout, tester");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_large_bodies_both_ways() {
    let (_sim, client, _dir) = start(&[]).await;
    service(&client, "stowage", Some(upstream().await)).await;
    let mib = 96;
    let block = random_block();
    let want = expected_sha(&block, mib);

    let before = peak_rss();
    let resp = send(&client, Method::GET, &proxy_path("stowage:http", &format!("/big?mib={mib}")), &[], Vec::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut len, mut h) = (0usize, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len();
            h.update(&data);
        }
    }
    assert_eq!(len, mib * MIB);
    assert_eq!(format!("{:x}", h.finalize()), want);
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < mib * MIB / 2, "peak memory grew by {} MiB while {mib} MiB went through the proxy", grown / MIB);

    // Upload: a request body goes through as well (and the upstream reads it as it arrives).
    let upload: Vec<u8> = (0..8).flat_map(|i| chunk(&block, i)).collect();
    let resp = send(&client, Method::POST, &proxy_path("stowage", "/upload"), &[("content-type", "application/octet-stream")], upload).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = body_json(resp).await;
    assert_eq!(got["length"], 8 * MIB);
    assert_eq!(got["sha256"], expected_sha(&block, 8));
}

#[tokio::test]
async fn proxy_errors_read_like_the_api_servers() {
    let (sim, _, _dir) = start(&[]).await;
    let client = no_retry_client(&sim).await;
    let (code, status) = get_json(&client, &proxy_path("missing", "/x")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], r#"services "missing" not found"#);

    service(&client, "lonely", None).await;
    let (code, status) = get_json(&client, &proxy_path("lonely", "/x")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(status["message"], r#"no endpoints available for service "lonely""#);

    apply(&client, "services", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80}]}})).await;
    apply(&client, "endpoints", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "empty", "namespace": NS},
        "subsets": [{"notReadyAddresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 1}]}]})).await;
    let (code, status) = get_json(&client, &proxy_path("empty", "/x")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "not-ready addresses are not proxied to");
    assert_eq!(status["message"], r#"no endpoints available for service "empty""#);

    // An endpoint nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    service(&client, "down", Some(closed)).await;
    let (code, status) = get_json(&client, &proxy_path("down", "/x")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let msg = status["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("error trying to reach service: dial tcp {closed}")), "{msg}");

    let (code, status) = get_json(&client, &proxy_path("down:9999", "/x")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status["message"], r#"no service port 9999 found for service "down""#);
    let (code, _) = get_json(&client, &proxy_path("https:down:80", "/x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

/// alice may `get` through the `stowage` Service's proxy (plain and with its port name); bob is
/// authenticated but bound to nothing.
async fn start_with_rbac() -> (KubeSim, Client, tempfile::TempDir) {
    let (sim, client, dir) = start(&[(ALICE, "alice"), (BOB, "bob")]).await;
    service(&client, "stowage", Some(upstream().await)).await;
    apply(&client, "roles", json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "stowage-download", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["stowage", "stowage:http"], "verbs": ["get"]}]})).await;
    apply(&client, "rolebindings", json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-downloads", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "stowage-download"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})).await;
    (sim, client, dir)
}

#[tokio::test]
async fn rbac_on_services_proxy_decides_who_may_use_it() {
    let (sim, _admin, _dir) = start_with_rbac().await;
    let alice = sim.client_for(ALICE).await.unwrap();
    let bob = sim.client_for(BOB).await.unwrap();

    let (code, echoed) = get_json(&alice, &proxy_path("stowage", "/v1/x?y=1")).await;
    assert_eq!(code, StatusCode::OK, "{echoed}");
    assert_eq!(echoed["path"], "/v1/x");
    assert!(echoed["headers"].get("authorization").is_none(), "alice's token leaked: {echoed}");
    assert_eq!(get_json(&alice, &proxy_path("stowage:http", "/")).await.0, StatusCode::OK);

    let (code, status) = get_json(&bob, &proxy_path("stowage", "/v1/x")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        r#"services "stowage" is forbidden: User "bob" cannot get resource "services/proxy" in API group "" in the namespace "stowage""#
    );
    // Only `get` was granted, and only by those names (the port is part of the name, as on a
    // real cluster).
    let resp = send(&alice, Method::POST, &proxy_path("stowage", "/upload"), &[], b"x".to_vec()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(body_json(resp).await["message"].as_str().unwrap().contains(r#"User "alice" cannot create resource "services/proxy""#));
    let (code, status) = get_json(&alice, &proxy_path("stowage:80", "/")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    // Reading the Service itself was not granted either; discovery is open to any user.
    let (code, _) = get_json(&alice, &format!("/api/v1/namespaces/{NS}/services/stowage")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(get_json(&bob, "/api/v1").await.0, StatusCode::OK);
    assert_eq!(get_json(&bob, "/version").await.0, StatusCode::OK);

    let stranger = sim.client_for("made-up").await.unwrap();
    let (code, status) = get_json(&stranger, &proxy_path("stowage", "/v1/x")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(get_json(&stranger, "/version").await.0, StatusCode::UNAUTHORIZED);
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_raw_goes_through_the_proxy_as_a_user() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("kubectl is not installed: skipping (scripts/test.sh installs it)");
        return;
    }
    let (sim, _admin, dir) = start_with_rbac().await;
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    sim.write_kubeconfig_for(&alice, ALICE).unwrap();
    sim.write_kubeconfig_for(&bob, BOB).unwrap();
    let raw = proxy_path("stowage:http", "/v1/report?format=json");
    let out = tokio::task::spawn_blocking({
        let raw = raw.clone();
        move || kubectl(&alice, &["get", "--raw", &raw])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    let echoed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echoed["path"], "/v1/report");
    assert_eq!(echoed["query"], "format=json");

    let out = tokio::task::spawn_blocking(move || kubectl(&bob, &["get", "--raw", &raw])).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"User "bob" cannot get resource "services/proxy" in API group "" in the namespace "stowage""#),
        "{stderr}"
    );
}

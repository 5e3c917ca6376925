//! Downloads that do not go through etcd: `stowage backup download` of a 200 MiB archive,
//! once from a pre-signed URL straight from the S3 server, once streamed by the server through
//! the API server's service proxy when the URL does not answer from the user's machine; no
//! Secret is written either way, and the CLI holds the file in neither case.

mod e2e;

use std::process::Command;
use std::time::Duration;

use e2e::{Env, NS};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use stowage_api::{BackupStorageLocation, DownloadRequest};
use stowage_storage::ObjectStore;

const SIZE: usize = 200 << 20;

/// Incompressible, reproducible bytes.
fn archive_bytes() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(SIZE);
    out
}

/// Runs the CLI with this kubeconfig, sampling its peak memory while it runs; returns
/// (success, stdout + stderr, peak RSS in MiB).
fn cli_download(kubeconfig: &std::path::Path, backup: &str, to: &std::path::Path) -> (bool, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["backup", "download", backup, "-n", NS, "--force", "-o"])
        .arg(to)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(e2e::peak_rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text, peak / 1024)
}

async fn no_download_leftovers(env: &Env) {
    let requests = Api::<DownloadRequest>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap();
    assert!(requests.items.is_empty(), "the CLI deletes its requests: {:?}", requests.items.len());
    let secrets = Api::<Secret>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = secrets.items.into_iter().filter_map(|s| s.metadata.name).collect();
    assert_eq!(names.len(), 2, "only the credentials and the master key, no served Secrets: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_archive_downloads_from_a_pre_signed_url_and_through_the_server() {
    let mut env = Env::start().await;
    env.create_namespace("shop").await;
    env.create_in::<ConfigMap>("shop", json!({"metadata": {"name": "settings"}, "data": {"mode": "prod"}})).await;
    env.start_server();
    let status = env.backup("big", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    // The transport is what is tested: a 200 MiB archive in place of the small one.
    let bytes = archive_bytes();
    env.store().put("backups/big/big.tar.zst", bytes.clone().into()).await.unwrap();
    let to = env.path().join("big.tar.zst");

    // From the URL: the S3 server answers the user's machine.
    let (ok, out, peak_mib) = cli_download(&env.kubeconfig, "big", &to);
    assert!(ok, "{out}\n{}", env.server_log());
    assert!(std::fs::read(&to).unwrap() == bytes, "the downloaded file is the stored one");
    assert!(!env.server_log().contains("streaming a download"), "the server streamed nothing");
    assert!(peak_mib < 100, "the CLI writes the file as it arrives: peak {peak_mib} MiB");
    no_download_leftovers(&env).await;

    // The URL names an endpoint the user's machine cannot reach (the store's private address):
    // the CLI falls back to the server's stream through the API server.
    let closed = e2e::free_port();
    let locations: Api<BackupStorageLocation> = Api::namespaced(env.client.clone(), NS);
    let patch = json!({"spec": {"config": {"publicUrl": format!("http://{closed}")}}});
    locations.patch("default", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    std::fs::remove_file(&to).unwrap();
    let (ok, out, peak_mib) = cli_download(&env.kubeconfig, "big", &to);
    assert!(ok, "{out}\n{}", env.server_log());
    assert!(out.contains("streaming through the API server instead"), "{out}");
    assert!(std::fs::read(&to).unwrap() == bytes, "the streamed file is the stored one");
    assert!(env.server_log().contains("streaming a download"), "{}", env.server_log());
    assert!(peak_mib < 100, "the CLI writes the stream as it arrives: peak {peak_mib} MiB");
    no_download_leftovers(&env).await;
}

/// Runs the CLI as the test user; returns (success, stdout, stderr).
fn cli_as_user(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage")).args(args).args(["-n", NS, "--kubeconfig"]).arg(kubeconfig).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_the_users_proxy_permission_and_the_requests_token() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    if e2e::skipped_on_real_cluster("the test user is kube-sim's") {
        return;
    }
    let mut env = Env::start().await;
    env.create_namespace("shop").await;
    env.create_in::<ConfigMap>("shop", json!({"metadata": {"name": "settings"}, "data": {"mode": "prod"}})).await;
    env.start_server();
    let status = env.backup("small", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    // The store's URL does not answer from here: downloads go through the server.
    let closed = e2e::free_port();
    let patch = json!({"spec": {"config": {"publicUrl": format!("http://{closed}")}}});
    Api::<BackupStorageLocation>::namespaced(env.client.clone(), NS)
        .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    // A user who may use DownloadRequests but not the service proxy is refused, and told why.
    let rules = json!([
        {"apiGroups": ["stowage.io"], "resources": ["downloadrequests"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": ["stowage.io"], "resources": ["backups"], "verbs": ["get"]}]);
    env.create_in::<Role>(NS, json!({"metadata": {"name": "downloader"}, "rules": rules})).await;
    env.create_in::<RoleBinding>(NS, json!({"metadata": {"name": "downloader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "downloader"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": e2e::TEST_USER}]})).await;
    let user = env.user_kubeconfig();
    let (ok, _, err) = cli_as_user(&user, &["backup", "logs", "small"]);
    assert!(!ok, "{err}");
    assert!(err.contains("refused") && err.contains("services/proxy for service stowage"), "{err}");

    // Granted the proxy, the same user gets the log.
    let mut with_proxy = rules.as_array().unwrap().clone();
    with_proxy.push(json!({"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get"]}));
    Api::<Role>::namespaced(env.client.clone(), NS)
        .patch("downloader", &PatchParams::default(), &Patch::Merge(json!({"rules": with_proxy})))
        .await
        .unwrap();
    let (ok, log, err) = cli_as_user(&user, &["backup", "logs", "small"]);
    assert!(ok, "{err}");
    assert!(log.contains("backup Completed"), "{log}");

    // Without access to DownloadRequests there is nothing to fetch.
    Api::<Role>::namespaced(env.client.clone(), NS)
        .patch("downloader", &PatchParams::default(), &Patch::Merge(json!({"rules": [with_proxy[1], with_proxy[2]]})))
        .await
        .unwrap();
    let (ok, _, err) = cli_as_user(&user, &["backup", "logs", "small"]);
    assert!(!ok && err.to_lowercase().contains("forbidden"), "{err}");

    // The proxy alone is not enough: the server wants the request's token.
    env.create::<DownloadRequest>(json!({"metadata": {"name": "by-hand", "namespace": NS},
        "spec": {"target": {"kind": "BackupLog", "name": "small"}}})).await;
    let status = env.wait_processed::<DownloadRequest>("by-hand").await;
    let token = status["stream"]["token"].as_str().unwrap().to_string();
    let get = |token: String| {
        let client = env.client.clone();
        async move {
            use futures::AsyncReadExt;
            let request = hyper::Request::get(format!("/api/v1/namespaces/{NS}/services/stowage:http/proxy/downloads/by-hand"))
                .header("x-stowage-download-token", token)
                .body(Vec::new())
                .unwrap();
            let mut body = Vec::new();
            let mut reader = Box::pin(client.request_stream(request).await?);
            reader.read_to_end(&mut body).await.unwrap();
            Ok::<_, kube::Error>(body)
        }
    };
    let refused = get("0".repeat(64)).await.unwrap_err().to_string();
    assert!(refused.contains("token does not match"), "{refused}");
    let log = get(token).await.unwrap();
    let text = String::from_utf8(zstd::decode_all(&log[..]).unwrap()).unwrap();
    assert!(text.contains("backup Completed"), "the right token gets the log: {text}");
}

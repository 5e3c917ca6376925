//! The dashboard in a real browser: the real `stowage server` serves it (`--dashboard-address`)
//! over backups with volumes and hook runs, a partly failed one, a restore, a schedule, the
//! storage location and extensions in kube-sim; headless Chromium loads the overview and a
//! backup's page, and the test checks what is on them. With `STOWAGE_SCREENSHOTS_DIR` set it
//! saves the screenshots the README shows there.

mod e2e;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{apply_extension, claim_dir, http_get, running_pods, shipped_extension, wait_for, Env, NS};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use stowage_api::{Restore, Schedule};

/// Debian's `chromium` (or `chromium-browser` elsewhere) on the PATH; a missing browser fails
/// the test saying how to get one, rather than letting it pass unchecked.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .expect("headless Chromium is needed to test the dashboard in a browser: run `bash scripts/test.sh`, which installs Debian's `chromium`")
}

/// Runs headless Chromium with `args` then `url`, in a profile of its own; returns stdout.
async fn browse(profile: &Path, args: &[&str], url: &str) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish loading {url} within 90s"))
        .expect("chromium runs");
    assert!(out.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The page's DOM after Chromium loaded it.
async fn dom(env: &Env, url: &str) -> String {
    browse(&env.path().join("chromium-profile"), &["--dump-dom"], url).await
}

/// A PNG of the page, 1280 pixels wide; copied to `STOWAGE_SCREENSHOTS_DIR/<name>` when set.
async fn screenshot(env: &Env, url: &str, height: u32, name: &str) {
    let file = env.path().join(name);
    let shot = format!("--screenshot={}", file.display());
    browse(&env.path().join("chromium-profile"), &[&shot, &format!("--window-size=1280,{height}")], url).await;
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("chromium wrote no screenshot of {url}: {e}"));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}: not a real screenshot ({} bytes)", png.len());
    if let Some(dir) = std::env::var_os("STOWAGE_SCREENSHOTS_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&file, Path::new(&dir).join(name)).unwrap();
    }
}

/// The status line of a raw request (`POST /`), to show the dashboard takes only GET.
async fn status_of(addr: SocketAddr, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).lines().next().unwrap_or_default().to_string()
}

/// A pod `db` in `ns` whose container mounts the claim `db-data` at /data, its volume opted in
/// to volume backups and a post-backup hook on it; returns the claim's directory.
async fn database(env: &Env, ns: &str) -> PathBuf {
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "db-data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}))
    .await;
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "db", "labels": {"app": "db"}, "annotations": {
            "backup.stowage.io/backup-volumes": "data",
            "post.hook.backup.stowage.io/command": r#"["/bin/sh", "-c", "date > data/last-backup"]"#}},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}],
            "containers": [{"name": "db", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}))
    .await;
    running_pods(env, ns, 1).await;
    claim_dir(env, ns, "db-data").await
}

/// `len` bytes that do not compress away.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_backups_restores_schedules_locations_and_extensions_in_a_browser() {
    if e2e::skipped_on_real_cluster("the dashboard test backs up volumes and runs hooks through kube-sim's node") {
        return;
    }
    chromium();
    let mut env = Env::start_with_local_exec().await;
    let addr = e2e::free_port();
    env.start_server_with(&["--dashboard-address", &addr.to_string()]);
    env.start_node_agent();
    let base = format!("http://{addr}");

    env.create_namespace("shop").await;
    for name in ["web", "checkout"] {
        env.create_in::<ConfigMap>("shop", e2e::apps::config_map(name, json!({"app": name}))).await;
    }
    let volume = database(&env, "shop").await;
    env.create::<Schedule>(json!({"metadata": {"name": "nightly", "namespace": NS},
        "spec": {"schedule": "0 3 * * *", "template": {"includedNamespaces": ["shop"], "ttl": "720h"}}}))
    .await;
    apply_extension(&env, &shipped_extension("change-image-registry")).await;

    // Two good backups of a growing volume, then one whose pre hook fails: PartiallyFailed, its
    // hook set named and its stderr holding markup that must reach the page as text.
    std::fs::write(volume.join("table.ibd"), data(256 * 1024)).unwrap();
    let status = env.backup("shop-1", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}\n{}", env.server_log(), env.node_agent_log());
    std::fs::write(volume.join("table.ibd"), data(768 * 1024)).unwrap();
    let status = env.backup("shop-2", json!({"includedNamespaces": ["shop"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let evil = "<script>alert(1)</script>";
    let status = env.backup("shop-3", json!({"includedNamespaces": ["shop"], "hooks": {"resources": [{
        "name": evil, "includedNamespaces": ["shop"], "labelSelector": {"matchLabels": {"app": "db"}},
        "pre": [{"exec": {"container": "db", "onError": "Fail",
            "command": ["/bin/sh", "-c", "echo '<script>alert(2)</script> flush failed' >&2; exit 3"]}}]}]}})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}\n{}", env.server_log());
    let status = env.restore("shop-restore", json!({"backupName": "shop-1", "includedResources": ["configmaps"],
        "namespaceMapping": {"shop": "shop-copy"}})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    // An extension that does not load, after the backups, which it would not have touched.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    let broken = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "half-written", "namespace": NS,
        "labels": {"stowage.io/extension": "item-action"}}, "data": {"script.rhai": "fn process(item) { item"}});
    cms.patch("half-written", &PatchParams::apply("stowage-e2e").force(), &Patch::Apply(&broken)).await.unwrap();
    wait_for("the schedule to be enabled", 30, || async {
        let s = env.get_in::<Schedule>(NS, "nightly").await?;
        (s["status"]["phase"] == "Enabled").then_some(())
    })
    .await;
    wait_for("the broken extension to be quarantined", 30, || async {
        let cm = cms.get("half-written").await.ok()?;
        (cm.metadata.annotations?.get("stowage.io/extension-state")? == "Quarantined").then_some(())
    })
    .await;
    env.wait_location_available("default").await;

    // The JSON endpoint: the same data, for scripts.
    let overview: Value = serde_json::from_str(&http_get(addr, "/api/overview.json").await).unwrap();
    let backup = |name: &str| overview["backups"].as_array().unwrap().iter().find(|b| b["name"] == name).cloned().unwrap_or_else(|| panic!("{name}: {overview}"));
    assert_eq!(backup("shop-1")["phase"], "Completed", "{overview}");
    assert_eq!(backup("shop-3")["phase"], "PartiallyFailed", "{overview}");
    assert!(backup("shop-3")["errors"].as_u64() >= Some(1), "{overview}");
    assert_eq!(backup("shop-1")["volumeBytes"], 256 * 1024, "{overview}");
    // The post hook of shop-1 wrote a few bytes more (`date`).
    assert!(backup("shop-2")["volumeBytes"].as_u64().is_some_and(|n| (768 * 1024..768 * 1024 + 100).contains(&n)), "{overview}");
    assert!(backup("shop-2")["durationSeconds"].as_f64().is_some(), "{overview}");
    assert!(backup("shop-2")["totalItems"].as_u64() >= Some(3), "{overview}");
    assert_eq!(overview["restores"][0]["name"], "shop-restore", "{overview}");
    assert_eq!(overview["restores"][0]["phase"], "Completed", "{overview}");
    assert_eq!(overview["schedules"][0]["name"], "nightly", "{overview}");
    assert_eq!(overview["locations"][0]["phase"], "Available", "{overview}");
    assert!(overview["locations"][0].get("config").is_none(), "no location config: {overview}");
    let extensions = overview["extensions"].as_array().unwrap();
    let quarantined = extensions.iter().find(|e| e["name"] == "half-written").expect("the broken extension");
    assert_eq!(quarantined["state"], "Quarantined", "{overview}");
    assert!(quarantined["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{overview}");

    // The overview in a browser.
    let page = dom(&env, &format!("{base}/")).await;
    for text in ["shop-1", "shop-2", "shop-3", ">Completed<", ">PartiallyFailed<", "nightly", "0 3 * * *", ">Enabled<",
        "shop-restore", ">Available<", ">ReadWrite<", "change-image-registry", ">Active<", "half-written", ">Quarantined<",
        "Backup duration", "Volume data per backup", "768.0 KiB (1 vol.)"] {
        assert!(page.contains(text), "{text:?} is not on the overview:\n{page}");
    }
    assert!(page.contains(&env.bucket), "the location's bucket: {page}");
    assert_eq!(page.matches("<svg class=\"plot\"").count(), 2, "{page}");
    assert!(page.matches("<circle").count() >= 3 + 2, "a dot per finished backup and per size: {page}");
    assert!(!page.contains("<script"), "{page}");

    // A backup's page: its volume, hook runs and items.
    let page = dom(&env, &format!("{base}/backups/shop-2")).await;
    for text in ["Backup shop-2", "shop/db", ">data<", "768.0 KiB", "Hook runs", "post", "annotation", "v1/ConfigMap",
        "shop/web", "shop/checkout", "Pod"] {
        assert!(page.contains(text), "{text:?} is not on the page of shop-2:\n{page}");
    }
    // The partly failed one: its failed hook, named by a hook set and with stderr that hold
    // markup, shown as text — no element made of it.
    let page = dom(&env, &format!("{base}/backups/shop-3")).await;
    assert!(page.contains(">PartiallyFailed<") && page.contains("Warnings and errors"), "{page}");
    assert!(page.contains("spec &lt;script&gt;alert(1)&lt;/script&gt;"), "the hook set, escaped:\n{page}");
    assert!(page.contains("&lt;script&gt;alert(2)&lt;/script&gt; flush failed"), "the hook's stderr, escaped:\n{page}");
    assert!(!page.contains("<script"), "markup from the cluster became elements:\n{page}");
    let missing = dom(&env, &format!("{base}/backups/nowhere")).await;
    assert!(missing.contains("There is no backup \"nowhere\""), "{missing}");

    // Read-only: nothing but GET.
    assert!(status_of(addr, "POST", "/").await.contains(" 405 "), "POST must be refused");
    assert!(status_of(addr, "DELETE", "/backups/shop-1").await.contains(" 405 "), "DELETE must be refused");
    assert!(env.get_in::<stowage_api::Backup>(NS, "shop-1").await.is_some());
    assert_eq!(Api::<Restore>::namespaced(env.client.clone(), NS).list(&Default::default()).await.unwrap().items.len(), 1);

    screenshot(&env, &format!("{base}/"), 1180, "dashboard-overview.png").await;
    screenshot(&env, &format!("{base}/backups/shop-2"), 1000, "dashboard-backup.png").await;
}

//! The shipped `mysqldump` hook extension end to end, against a real MariaDB server: kube-sim
//! runs the `mariadb` image as the machine's `mariadbd` (tests/fixtures/mariadb-container.sh)
//! with its data directory on the pod's volume, and every `kubectl exec` as a local process in
//! the container's stand-in directory with the container's environment; the real `stowage
//! server`, node agent and restore helper binaries; moto as the S3 server.
//!
//! The pod keeps its data directory on one claim and the dump on another, and only the dump's
//! claim is backed up: after a restore the server starts on an empty data directory, so the
//! rows can only come back through the dump the post-restore hook loads.

mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use e2e::{apply_extension, claim_dir, cli, pod_volume_backups, restic, shipped_extension, wait_for, Env};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

const PASSWORD: &str = "Root-Pa55-in-the-env";
const DUMP: &str = "all-databases.sql";

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}



fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs SQL with the machine's client on the server's socket; stdout, or the error.
fn sql(socket: &Path, password: &str, query: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "--user=root", "--batch", "--skip-column-names", "--default-character-set=utf8mb4"])
        .arg(format!("--socket={}", socket.display()))
        .args(["-e", query])
        .env("MYSQL_PWD", password)
        .output()
        .map_err(|e| format!("running the mariadb client: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

async fn wait_for_server(socket: &Path) {
    wait_for(&format!("MariaDB to answer on {}", socket.display()), 90, || async { sql(socket, PASSWORD, "SELECT 1").ok() }).await;
}

/// The mariadbd processes started for this test (their socket is under `dir`).
fn servers_under(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep").args(["-a", "-f", &format!("mariadbd.*--socket={}", dir.display())]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}


fn runs(status: &Value) -> Vec<(String, String, Option<String>)> {
    status["hookStatus"]["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["phase"].as_str().unwrap().to_string(), r["hook"].as_str().unwrap().to_string(), r["error"].as_str().map(String::from)))
        .collect()
}

async fn set_annotation(env: &Env, ns: &str, pod: &str, key: &str, value: &str) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    api.patch(pod, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {key: value}}}))).await.unwrap();
}

#[test]
fn the_shipped_manifest_passes_the_offline_extension_test() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.json");
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "shop",
            "annotations": {"hooks.stowage.io/param.password-env": "MARIADB_ROOT_PASSWORD"}},
        "spec": {"containers": [{"name": "mariadb", "env": [{"name": "MARIADB_ROOT_PASSWORD", "value": "s3cret"}]}]}});
    std::fs::write(&pod, object.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["extension", "test"])
        .arg(repo_path("extensions/mysqldump/configmap.yaml"))
        .arg("--module")
        .arg(repo_path("extensions/mysqldump/script.rhai"))
        .arg("--item")
        .arg(&pod)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("Extension stowage/mysqldump (hook on each pod, Rhai, sha256:"), "{stdout}");
    // What each phase would do: the dump's command names the password's variable, never its value.
    assert!(stdout.contains("  pre-backup: ok\n    get Pod shop/db\n    exec in shop/db container mariadb: "), "{stdout}");
    assert!(stdout.contains("  post-restore: ok\n"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysqldump_backs_up_a_consistent_dump_fails_partial_ones_and_loads_it_after_a_restore() {
    if e2e::skipped_on_real_cluster("MariaDB runs as a local process of kube-sim's node; a real cluster would need the mariadb image") {
        return;
    }
    for tool in ["mariadbd", "mariadb-install-db", "mariadb"] {
        let found = Command::new("sh").args(["-c", &format!("PATH=\"$PATH:/usr/sbin\" command -v {tool}")]).output().unwrap().status.success();
        assert!(found, "{tool} is missing: install mariadb-server (scripts/test.sh does)");
    }
    let started = Instant::now();
    let image = repo_path("host/tests/fixtures/mariadb-container.sh");
    let mut env = Env::start_with_local_exec_and_images(&[("mariadb", image)]).await;
    env.start_server();
    env.start_node_agent();
    // Unix socket paths are limited to 108 bytes: a short directory of its own.
    let sockets = tempfile::Builder::new().prefix("md").tempdir_in("/tmp").unwrap();
    let socket = sockets.path().join("mariadb.sock");

    apply_extension(&env, &shipped_extension("mysqldump")).await;

    let ns = "mysqldump-e2e";
    env.create_namespace(ns).await;
    for claim in ["datadir", "dump"] {
        env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}))
        .await;
    }
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "mariadb", "labels": {"app": "mariadb"}, "annotations": {
            // Only the dump is copied, not the data directory.
            "backup.stowage.io/backup-volumes": "dump",
            "hooks.stowage.io/extensions": "mysqldump",
            "hooks.stowage.io/param.password-env": "MARIADB_ROOT_PASSWORD",
            // Relative to the exec's working directory: kube-sim runs exec'd commands on this
            // machine, in the container's stand-in directory, where dump/ is the volume mounted
            // at /dump (in a real container this would be /dump/all-databases.sql).
            "hooks.stowage.io/param.dump-path": format!("dump/{DUMP}"),
            "hooks.stowage.io/param.socket": socket.display().to_string(),
            "hooks.stowage.io/param.load-on-restore": "true",
            "hooks.stowage.io/param.wait-seconds": "90"}},
        "spec": {"containers": [{"name": "mariadb", "image": "mariadb:11",
            // Literal values: kube-sim gives exec'd commands the literal env values only (a real
            // cluster takes the password from a Secret with valueFrom.secretKeyRef).
            "env": [{"name": "MARIADB_ROOT_PASSWORD", "value": PASSWORD}, {"name": "WRONG_PASSWORD", "value": "not-the-password"},
                {"name": "MARIADB_SOCKET", "value": socket.display().to_string()}, {"name": "MARIADB_PORT", "value": free_port().to_string()}],
            "volumeMounts": [{"name": "datadir", "mountPath": "/var/lib/mysql"}, {"name": "dump", "mountPath": "/dump"}]}],
            "volumes": [{"name": "datadir", "persistentVolumeClaim": {"claimName": "datadir"}},
                {"name": "dump", "persistentVolumeClaim": {"claimName": "dump"}}]}}))
    .await;
    wait_for_server(&socket).await;
    let rows = "1\tapple\n2\tO'Brien's crème brûlée\n";
    sql(&socket, PASSWORD, "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(64)) CHARACTER SET utf8mb4; \
        INSERT INTO shop.orders VALUES (1, 'apple'), (2, 'O''Brien''s crème brûlée');")
    .unwrap();
    assert_eq!(sql(&socket, PASSWORD, "SELECT * FROM shop.orders ORDER BY id").unwrap(), rows);
    let datadir = claim_dir(&env, ns, "datadir").await;
    let dump = claim_dir(&env, ns, "dump").await;
    assert!(datadir.join("shop").is_dir(), "the server's data directory is the claim's volume");
    std::fs::write(datadir.join("only-in-the-live-datadir"), b"").unwrap();
    let setup = started.elapsed();

    // The backup: the dump is in the snapshot, complete, and gone from the live volume.
    let status = env.backup("mysqldump-backup", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let hook = "extension stowage/mysqldump".to_string();
    assert_eq!(runs(&status), [("pre".into(), hook.clone(), None), ("post".into(), hook.clone(), None)], "{status}");
    let pvbs = pod_volume_backups(&env, "mysqldump-backup").await;
    assert_eq!(pvbs.iter().map(|p| p.spec.volume.as_str()).collect::<Vec<_>>(), ["dump"], "only the dump's volume is copied");
    let snapshot = pvbs[0].status.as_ref().and_then(|s| s.snapshot_id.clone()).expect("a snapshot");
    let listed = restic(&env, ns, &["ls", &snapshot]);
    let path = listed.lines().map(str::trim).find(|l| l.ends_with(&format!("/{DUMP}"))).unwrap_or_else(|| panic!("no {DUMP} in the snapshot:\n{listed}"));
    assert!(!listed.contains(".partial"), "{listed}");
    let text = restic(&env, ns, &["dump", &snapshot, path]);
    assert!(text.lines().rev().find(|l| !l.is_empty()).unwrap().starts_with("-- Dump completed"), "the dump is complete:\n{}", &text[text.len().saturating_sub(300)..]);
    // One row a line (MariaDB 10.11+) or all on the INSERT's line.
    let insert = text.split("INSERT INTO `orders` VALUES").nth(1).and_then(|t| t.split(";\n").next()).expect("rows in the dump");
    assert_eq!(insert.replace('\n', ""), "(1,'apple'),(2,'O\\'Brien\\'s crème brûlée')", "the rows are in the dump");
    assert!(text.contains("CREATE DATABASE") && text.contains("`mysql`"), "--all-databases by default");
    assert!(!text.contains(PASSWORD));
    let live: Vec<_> = std::fs::read_dir(&dump).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(live.is_empty(), "post_backup removed the dump from the live volume: {live:?}");
    let logs = cli(&env, &["backup", "logs", "mysqldump-backup"]);
    assert!(logs.contains(&format!("mysqldump of all databases in pod {ns}/mariadb container mariadb: dump/{DUMP} complete")), "{logs}");
    assert!(!logs.contains(PASSWORD), "the password is in no log");
    // Changed after the backup: the restore must not bring this back.
    sql(&socket, PASSWORD, "INSERT INTO shop.orders VALUES (3, 'after the backup')").unwrap();
    let backed_up = started.elapsed();

    // A wrong password: the pre hook fails, the pod's volume is not copied as if consistent.
    set_annotation(&env, ns, "mariadb", "hooks.stowage.io/param.password-env", "WRONG_PASSWORD").await;
    let status = env.backup("mysqldump-wrong-password", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert!(pod_volume_backups(&env, "mysqldump-wrong-password").await.is_empty(), "no volume of the pod is backed up");
    let results = env.read_zstd_json("backups/mysqldump-wrong-password/mysqldump-wrong-password-results.json.zst").await;
    let errors = results["errors"][ns].to_string();
    assert!(errors.contains(&format!("pre hook (extension stowage/mysqldump) on pod {ns}/mariadb failed")), "{results}");
    assert!(errors.contains("exited with code 2") && errors.contains("Access denied for user 'root'@'localhost' (using password: YES)"), "{results}");
    assert!(errors.contains("check the parameters user and password-env"), "{results}");
    assert!(errors.contains(&format!("pod volume {ns}/mariadb/dump is not backed up: a pre hook of pod {ns}/mariadb failed")), "{results}");
    assert!(!errors.contains("not-the-password"), "{results}");
    let describe = cli(&env, &["backup", "describe", "mysqldump-wrong-password"]);
    assert!(describe.contains(&format!("pre hook (extension stowage/mysqldump) pod {ns}/mariadb: failed: ")), "{describe}");
    assert!(describe.contains(&format!("post hook (extension stowage/mysqldump) pod {ns}/mariadb: succeeded")), "the post hook still runs: {describe}");

    // A database that does not exist: mysqldump exits 2 after writing part of the dump, which
    // must fail the hook, not pass for a backup (k8up#910).
    set_annotation(&env, ns, "mariadb", "hooks.stowage.io/param.password-env", "MARIADB_ROOT_PASSWORD").await;
    set_annotation(&env, ns, "mariadb", "hooks.stowage.io/param.databases", "shop,missing").await;
    let status = env.backup("mysqldump-partial", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert!(pod_volume_backups(&env, "mysqldump-partial").await.is_empty());
    let results = env.read_zstd_json("backups/mysqldump-partial/mysqldump-partial-results.json.zst").await;
    let errors = results["errors"][ns].to_string();
    assert!(errors.contains("exited with code 2") && errors.contains("Unknown database 'missing'"), "{results}");
    assert!(std::fs::read_dir(&dump).unwrap().next().is_none(), "no partial dump is left behind");
    let failed = started.elapsed();

    // The restore: a new, empty data directory; the dump is restored and loaded.
    env.delete_namespace_and_wait(ns).await;
    wait_for("the pod's mariadbd to stop", 30, || async { servers_under(sockets.path()).is_empty().then_some(()) }).await;
    let status = env.restore("mysqldump-restore", json!({"backupName": "mysqldump-backup"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(runs(&status), [("post-restore".into(), hook.clone(), None)], "{status}");
    assert_eq!(sql(&socket, PASSWORD, "SELECT * FROM shop.orders ORDER BY id").unwrap(), rows, "the rows as dumped, none since");
    let restored = claim_dir(&env, ns, "datadir").await;
    assert!(!restored.join("only-in-the-live-datadir").exists(), "the data directory was not restored: the rows came from the dump");
    let logs = cli(&env, &["restore", "logs", "mysqldump-restore"]);
    assert!(logs.contains(&format!("loaded dump/{DUMP} in pod {ns}/mariadb container mariadb")), "{logs}");
    let restored_at = started.elapsed();

    env.delete_namespace_and_wait(ns).await;
    wait_for("every mariadbd of the test to stop", 30, || async { servers_under(sockets.path()).is_empty().then_some(()) }).await;
    eprintln!(
        "timings: setup {:.1}s, backup {:.1}s, failing backups {:.1}s, restore {:.1}s",
        setup.as_secs_f64(),
        (backed_up - setup).as_secs_f64(),
        (failed - backed_up).as_secs_f64(),
        (restored_at - failed).as_secs_f64()
    );
}

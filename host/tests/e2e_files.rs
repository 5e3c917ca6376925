//! One file back without restoring the application: `stowage backup browse` lists a pod
//! volume backup, `stowage restore files` puts chosen paths into the running pod's volume —
//! beside the live files, or over them with `--overwrite` — through the node agent.

mod e2e;

use e2e::{claim_dir, cli_fails, running_pods, Env, NS};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use stowage_api::PodVolumeRestore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_file_comes_back_beside_the_live_ones_and_a_changed_one_over_it() {
    if e2e::skipped_on_real_cluster("the test writes volume data through kube-sim's node filesystem") {
        return;
    }
    let mut env = Env::start().await;
    env.start_server();
    env.start_node_agent();
    let ns = "shop";
    env.create_namespace(ns).await;
    env.create_in::<PersistentVolumeClaim>(ns, json!({"metadata": {"name": "web-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Mi"}}}})).await;
    env.create_in::<Pod>(ns, json!({"metadata": {"name": "web-0", "annotations": {"backup.stowage.io/backup-volumes": "data"}},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}],
            "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/srv"}]}]}})).await;
    running_pods(&env, ns, 1).await;
    let dir = claim_dir(&env, ns, "web-data").await;
    std::fs::create_dir_all(dir.join("var/log")).unwrap();
    std::fs::write(dir.join("var/log/x.log"), b"the line a human deleted\n").unwrap();
    std::fs::write(dir.join("var/log/y.log"), b"another log\n").unwrap();
    std::fs::write(dir.join("settings.conf"), b"mode=prod\n").unwrap();
    let status = env.backup("nightly", json!({"includedNamespaces": [ns]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());

    // A human deletes one file and edits another.
    std::fs::remove_file(dir.join("var/log/x.log")).unwrap();
    std::fs::write(dir.join("settings.conf"), b"mode=broken\n").unwrap();

    let listing = e2e::cli(&env, &["backup", "browse", "nightly", "--pod", "shop/web-0", "--volume", "data", "/var/log"]);
    let x = listing.lines().find(|l| l.ends_with("/var/log/x.log")).unwrap_or_else(|| panic!("{listing}"));
    assert!(x.starts_with("-rw") && x.contains(" 25 "), "mode and size: {x}");
    assert!(listing.lines().any(|l| l.ends_with("/var/log/y.log")), "{listing}");
    let root = e2e::cli(&env, &["backup", "browse", "nightly", "--pod", "shop/web-0", "--volume", "data"]);
    assert!(root.lines().any(|l| l.starts_with('d') && l.ends_with("/var/")), "{root}");
    let err = cli_fails(&env, &["backup", "browse", "nightly", "--pod", "shop/web-1", "--volume", "data"]);
    assert!(err.contains("holds no volume \"data\" of pod shop/web-1") && err.contains("shop/web-0 data"), "{err}");

    // Beside the live files, by default.
    let out = e2e::cli(&env, &["restore", "files", "--from-backup", "nightly", "--pod", "shop/web-0", "--volume", "data", "--path", "/var/log/x.log"]);
    assert!(out.contains("Restored /var/log/x.log") && out.contains("/srv/.stowage-restored/"), "{out}");
    let restored: Vec<_> = std::fs::read_dir(dir.join(".stowage-restored")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(std::fs::read(restored[0].join("var/log/x.log")).unwrap(), b"the line a human deleted\n");
    assert!(!restored[0].join("var/log/y.log").exists() && !restored[0].join("settings.conf").exists(), "only what was asked for");
    assert!(!dir.join("var/log/x.log").exists(), "the live volume is not touched");
    assert_eq!(std::fs::read(dir.join("settings.conf")).unwrap(), b"mode=broken\n");

    // Over the live file with --overwrite.
    e2e::cli(&env, &["restore", "files", "--from-backup", "nightly", "--pod", "shop/web-0", "--volume", "data",
        "--path", "settings.conf", "--overwrite"]);
    assert_eq!(std::fs::read(dir.join("settings.conf")).unwrap(), b"mode=prod\n");
    assert_eq!(std::fs::read(dir.join("var/log/y.log")).unwrap(), b"another log\n");

    // A path the backup does not hold fails, naming it; nothing is written.
    let err = cli_fails(&env, &["restore", "files", "--from-backup", "nightly", "--pod", "shop/web-0", "--volume", "data", "--path", "/nope"]);
    assert!(err.contains("holds no \"/nope\""), "{err}");
    let pvrs = Api::<PodVolumeRestore>::namespaced(env.client.clone(), NS).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pvrs.len(), 3, "one PodVolumeRestore per request, kept as a record");
}

//! The real `stowage` binary's backup, restore and backup-location commands against the
//! Kubernetes API simulator. Where a command needs the server (downloads, `--wait`), the test
//! plays the server's part through the API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;
use stowage_api::requests::{DeleteBackupRequest, DownloadRequest, DownloadTargetKind};
use stowage_api::{Backup, Restore};

const NS: &str = "stowage";

struct Cluster {
    _sim: KubeSim,
    client: Client,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// kube-sim with Stowage's CRDs and the install namespace.
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config = SimConfig { run_controllers: false, ..SimConfig::new(dir.path().join("kubelet")) };
        let sim = KubeSim::start(config).await.unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let client = sim.client().await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in stowage_api::all_crds() {
            let name = crd.metadata.name.clone().unwrap();
            crds.create(&PostParams::default(), &crd).await.unwrap();
            let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(10), established).await.unwrap().unwrap();
        }
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        Cluster { _sim: sim, client, kubeconfig, dir }
    }

    /// Runs `stowage --kubeconfig <sim> ARGS` with no terminal on stdin.
    async fn stowage(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("STOWAGE_NAMESPACE")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the stowage binary runs")
    }

    /// Like `stowage`, and checks that it succeeded; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.stowage(args).await;
        assert!(out.status.success(), "stowage {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Like `stowage`, and checks that it failed; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.stowage(args).await;
        assert!(!out.status.success(), "stowage {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn set_backup_status(&self, name: &str, status: serde_json::Value) {
        let patch = Patch::Merge(json!({ "status": status }));
        self.api::<Backup>().patch_status(name, &PatchParams::default(), &patch).await.unwrap();
    }
}

fn completed() -> serde_json::Value {
    json!({
        "phase": "Completed",
        "startTimestamp": "2024-05-01T10:00:00Z",
        "completionTimestamp": "2024-05-01T10:01:00Z",
        "progress": {"totalItems": 20, "itemsBackedUp": 20},
        "warnings": 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restores_and_locations() {
    let c = Cluster::start().await;

    // A location first: backups name it.
    let out =
        c.ok(&["backup-location", "create", "default", "--provider", "aws", "--bucket", "velero", "--default"]).await;
    assert!(out.contains("Backup storage location \"default\" configured successfully."), "{out}");
    let out = c
        .ok(&["backup-location", "create", "old", "--provider", "aws", "--bucket", "old", "--access-mode", "ReadOnly"])
        .await;
    assert!(out.contains("\"old\""), "{out}");
    let table = c.ok(&["backup-location", "get"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME      PROVIDER   BUCKET/PREFIX   PHASE"), "{table}");
    assert!(lines[1].starts_with("default   aws        velero          Unknown"), "{table}");
    assert!(lines[1].trim_end().ends_with("ReadWrite     true"), "{table}");
    assert!(lines[2].contains("ReadOnly"), "{table}");

    // backup create: the CR carries the flags.
    let err = c.fails(&["backup", "create", "x", "--storage-location", "old"]).await;
    assert!(err.contains("storage location \"old\" is ReadOnly"), "{err}");
    let out = c
        .ok(&[
            "backup",
            "create",
            "nginx-backup",
            "--include-namespaces",
            "nginx-example",
            "--selector",
            "app=nginx,tier in (web,db)",
            "--ttl",
            "72h",
            "--storage-location",
            "default",
        ])
        .await;
    assert_eq!(
        out,
        "Backup request \"nginx-backup\" submitted successfully.\n\
         Run `stowage backup describe nginx-backup` or `stowage backup logs nginx-backup` for more details.\n"
    );
    let backup = c.api::<Backup>().get("nginx-backup").await.unwrap();
    assert_eq!(backup.spec.included_namespaces, ["nginx-example"]);
    assert_eq!(backup.spec.ttl, "72h0m0s");
    assert_eq!(backup.spec.storage_location.as_deref(), Some("default"));
    let selector = backup.spec.label_selector.unwrap();
    assert_eq!(selector.match_labels.unwrap()["app"], "nginx");
    assert_eq!(selector.match_expressions.unwrap()[0].values.as_deref(), Some(&["db".into(), "web".into()][..]));
    let err = c.fails(&["backup", "create", "nginx-backup"]).await;
    assert!(err.contains("already exists"), "{err}");

    // backup get: a table like Velero's, or the object.
    let table = c.ok(&["backup", "get"]).await;
    assert!(table.starts_with("NAME           STATUS   ERRORS   WARNINGS   CREATED"), "{table}");
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("nginx-backup   New      0        0"), "{table}");
    assert!(row.contains("   2d        default            app=nginx,tier in (db,web)"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["backup", "get", "nginx-backup", "-o", "json"]).await).unwrap();
    assert_eq!(json["metadata"]["name"], "nginx-backup");
    let err = c.fails(&["backup", "get", "nope"]).await;
    assert!(
        err.contains("backup \"nope\" not found in namespace stowage; list backups with `stowage backup get`"),
        "{err}"
    );

    // describe shows what the server reported.
    c.set_backup_status("nginx-backup", completed()).await;
    let text = c.ok(&["backup", "describe", "nginx-backup"]).await;
    for needle in [
        "Name:         nginx-backup\n",
        "Phase:  Completed\n",
        "Errors:    0\nWarnings:  1\n",
        "  Included:  nginx-example\n",
        "Label selector:  app=nginx,tier in (db,web)\n",
        "TTL:  72h0m0s\n",
        "Started:    2024-05-01 10:00:00 +0000 UTC\n",
        "Total items to be backed up:  20\nItems backed up:              20\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }

    // restore create: named after the backup and the time; a missing backup is named.
    let out = c
        .ok(&["restore", "create", "--from-backup", "nginx-backup", "--namespace-mappings", "nginx-example:copy"])
        .await;
    let restores = c.api::<Restore>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(restores.len(), 1);
    let name = restores[0].metadata.name.clone().unwrap();
    let stamp = name.strip_prefix("nginx-backup-").unwrap();
    assert!(stamp.len() == 14 && stamp.chars().all(|c| c.is_ascii_digit()) && stamp.starts_with("20"), "{name}");
    assert!(out.starts_with(&format!("Restore request \"{name}\" submitted successfully.\n")), "{out}");
    assert_eq!(restores[0].spec.backup_name.as_deref(), Some("nginx-backup"));
    assert_eq!(restores[0].spec.namespace_mapping["nginx-example"], "copy");
    let err = c.fails(&["restore", "create", "--from-backup", "missing"]).await;
    assert!(
        err.contains("backup \"missing\" not found in namespace stowage; list backups with `stowage backup get`"),
        "{err}"
    );
    let table = c.ok(&["restore", "get"]).await;
    assert!(table.lines().nth(1).unwrap().starts_with(&format!("{name}   nginx-backup   New")), "{table}");
    let text = c.ok(&["restore", "describe", &name]).await;
    assert!(text.contains("Namespace mappings:  nginx-example=copy"), "{text}");

    // delete: never without confirmation; then a DeleteBackupRequest.
    let err = c.fails(&["backup", "delete", "nginx-backup"]).await;
    assert!(err.contains("pass --confirm"), "{err}");
    assert!(c.api::<DeleteBackupRequest>().list(&ListParams::default()).await.unwrap().items.is_empty());
    let out = c.ok(&["backup", "delete", "nginx-backup", "--confirm"]).await;
    assert!(out.starts_with("Request to delete backup \"nginx-backup\" submitted successfully."), "{out}");
    let requests = c.api::<DeleteBackupRequest>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spec.backup_name, "nginx-backup");
    assert_eq!(requests[0].metadata.labels.as_ref().unwrap()["stowage.io/backup-name"], "nginx-backup");

    // delete by label selector: only the matching backups; and never with nothing named.
    let mut scheduled = Backup::new("nightly-20240501030000", stowage_api::BackupSpec::default());
    scheduled.metadata.labels = Some([("stowage.io/schedule-name".to_string(), "nightly".to_string())].into());
    c.api::<Backup>().create(&PostParams::default(), &scheduled).await.unwrap();
    let out = c.ok(&["backup", "delete", "-l", "stowage.io/schedule-name=nightly", "--confirm"]).await;
    assert!(out.starts_with("Request to delete backup \"nightly-20240501030000\" submitted successfully."), "{out}");
    assert!(!out.contains("nginx-backup"), "{out}");
    let requests = c.api::<DeleteBackupRequest>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(requests.len(), 2);
    let err = c.fails(&["backup", "delete", "--confirm"]).await;
    assert!(err.contains("required"), "{err}");
    let err = c.fails(&["backup", "delete", "nginx-backup", "--all", "--confirm"]).await;
    assert!(err.contains("cannot be used with"), "{err}");
}

/// What the pretend server serves, per target kind: bytes, or an error message.
type Served = BTreeMap<&'static str, Result<Vec<u8>, &'static str>>;

/// Plays the server's download controller: serves each new DownloadRequest from `served`,
/// split into two chunk Secrets as the real server splits large objects.
async fn serve_downloads(client: Client, served: Served) {
    let requests: Api<DownloadRequest> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    loop {
        for request in requests.list(&ListParams::default()).await.unwrap().items {
            if request.status.is_some() {
                continue;
            }
            let name = request.metadata.name.clone().unwrap();
            let kind = kind_name(request.spec.target.kind);
            let status = match served.get(kind) {
                Some(Ok(bytes)) => {
                    let (first, second) = bytes.split_at(bytes.len() / 2);
                    for (secret, key, chunk) in
                        [(name.clone(), "part-0000", first), (format!("{name}-1"), "part-0001", second)]
                    {
                        let data = BTreeMap::from([(key.to_string(), ByteString(chunk.to_vec()))]);
                        let mut s = Secret { data: Some(data), ..Default::default() };
                        s.metadata.name = Some(secret);
                        secrets.create(&PostParams::default(), &s).await.unwrap();
                    }
                    json!({"phase": "Processed", "content": {"secretName": name, "key": "part-0000"}})
                }
                Some(Err(message)) => json!({"phase": "Processed", "message": message}),
                None => json!({"phase": "Processed", "message": format!("{kind} is not stored")}),
            };
            let patch = Patch::Merge(json!({ "status": status }));
            requests.patch_status(&name, &PatchParams::default(), &patch).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kind_name(kind: DownloadTargetKind) -> &'static str {
    match kind {
        DownloadTargetKind::BackupLog => "BackupLog",
        DownloadTargetKind::BackupContents => "BackupContents",
        DownloadTargetKind::BackupResourceList => "BackupResourceList",
        DownloadTargetKind::BackupVolumeInfos => "BackupVolumeInfos",
        DownloadTargetKind::BackupResults => "BackupResults",
        _ => "other",
    }
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_details_and_downloads_go_through_download_requests() {
    let c = Cluster::start().await;
    c.ok(&["backup", "create", "nginx-backup", "--include-namespaces", "nginx-example"]).await;
    let mut status = completed();
    status["podVolumeBackupsAttempted"] = json!(1);
    c.set_backup_status("nginx-backup", status).await;

    let log = "time=10:00:00 level=info msg=\"backing up\" backup=stowage/nginx-backup\n".repeat(50);
    let archive = zstd(b"pretend tar");
    let served = Served::from([
        ("BackupLog", Ok(zstd(log.as_bytes()))),
        ("BackupContents", Ok(archive.clone())),
        ("BackupResourceList", Ok(zstd(br#"{"apps/v1/Deployment": ["nginx-example/nginx"]}"#))),
        ("BackupVolumeInfos", Err("backups/nginx-backup/nginx-backup-podvolumebackups.json.zst: not found")),
        ("BackupResults", Ok(zstd(br#"{"warnings": {"nginx-example": ["pod nginx-1: volume skipped"]}}"#))),
    ]);
    let server = tokio::spawn(serve_downloads(c.client.clone(), served));

    assert_eq!(c.ok(&["backup", "logs", "nginx-backup"]).await, log);

    let text = c.ok(&["backup", "describe", "nginx-backup", "--details"]).await;
    assert!(text.contains("Resource List:\n  apps/v1/Deployment:\n    - nginx-example/nginx\n"), "{text}");
    assert!(text.contains("Pod Volume Backups:  <error: the server could not serve download request"), "{text}");
    assert!(text.contains("podvolumebackups.json.zst: not found"), "{text}");
    assert!(text.contains("  Namespaces:\n    nginx-example:  pod nginx-1: volume skipped\n"), "{text}");
    assert!(text.contains("Items backed up:              20"), "the rest is printed too:\n{text}");

    let out = c.ok(&["backup", "download", "nginx-backup"]).await;
    let file = c.dir.path().join("nginx-backup-data.tar.zst");
    assert!(out.contains("nginx-backup-data.tar.zst"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), archive, "the archive is written as stored");
    let err = c.fails(&["backup", "download", "nginx-backup"]).await;
    assert!(err.contains("already exists; pass --force"), "{err}");
    c.ok(&["backup", "download", "nginx-backup", "--force"]).await;

    server.abort();
    // Every request and every served Secret was cleaned up.
    assert!(c.api::<DownloadRequest>().list(&ListParams::default()).await.unwrap().items.is_empty());
    let secrets = c.api::<Secret>().list(&ListParams::default()).await.unwrap().items;
    let left: Vec<_> =
        secrets.iter().filter_map(|s| s.metadata.name.clone()).filter(|n| n.starts_with("nginx-backup")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_progress_and_fails_on_partial_failure() {
    let c = Cluster::start().await;
    let client = c.client.clone();
    let server = tokio::spawn(async move {
        let backups: Api<Backup> = Api::namespaced(client, NS);
        let exists = await_condition(backups.clone(), "b", |b: Option<&Backup>| b.is_some());
        exists.await.unwrap();
        for status in [
            json!({"phase": "InProgress", "progress": {"totalItems": 10, "itemsBackedUp": 4}}),
            json!({"phase": "PartiallyFailed", "progress": {"totalItems": 10, "itemsBackedUp": 9}, "errors": 1}),
        ] {
            // Time for the CLI to start watching (a missed InProgress would only lose a line).
            tokio::time::sleep(Duration::from_millis(1000)).await;
            backups
                .patch_status("b", &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
                .await
                .unwrap();
        }
    });
    let out = c.stowage(&["backup", "create", "b", "--wait"]).await;
    server.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Backup request \"b\" submitted successfully."));
    assert!(stderr.contains("backup b: InProgress, 4/10 items"), "{stderr}");
    assert!(
        stderr.contains("backup \"b\" finished with status PartiallyFailed; see `stowage backup describe b --details`"),
        "{stderr}"
    );
}

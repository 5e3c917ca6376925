//! Moving backups between clusters (DESIGN §9): a second cluster with a ReadOnly location on
//! the same bucket sees a backup appear after sync and restores it without writing anything to
//! the bucket; and a backup written by Velero (its bucket layout and `tar.gz` archive) is
//! synced and restored, the migration path for Velero users.

mod e2e;

use std::io::Write;

use e2e::apps::{deploy_nginx, nginx_snapshot, NGINX};
use e2e::{wait_for, Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Secret, Service};
use serde_json::{json, Value};
use stowage_api::requests::{DeleteBackupRequest, DownloadRequest};
use stowage_api::{Backup, Restore};
use kube::api::Api;
use stowage_storage::ObjectStore;
use stowage_test_support::FaultProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cluster_with_a_read_only_location_syncs_and_restores_without_writing() {
    let mut source = Env::start().await;
    deploy_nginx(&source, NGINX).await;
    let original = nginx_snapshot(&source, NGINX).await;
    source.start_server();
    let status = source.backup("nginx-backup", json!({"includedNamespaces": [NGINX]})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", source.server_log());

    // Directories sync cannot use must not keep it from syncing the others: unreadable
    // metadata, and a name that is not a Kubernetes object name.
    let store = source.store();
    store.put("backups/broken/stowage-backup.json", b"{not json".to_vec().into()).await.unwrap();
    store.put("backups/Not_A_Name/stowage-backup.json", b"{}".to_vec().into()).await.unwrap();

    let mut target = source.second_cluster("ReadOnly").await;
    // The second cluster reaches the bucket through a proxy that counts its requests.
    let endpoint = source.s3.endpoint().trim_start_matches("http://").trim_end_matches('/').to_string();
    let address = std::net::ToSocketAddrs::to_socket_addrs(&endpoint).unwrap().next().unwrap();
    let proxy = FaultProxy::start(address).await.unwrap();
    let bucket = target.bucket.clone();
    target.apply_location_at("default", &bucket, true, "ReadOnly", &proxy.url()).await;
    let before = target.bucket_keys("").await;
    target.start_server();
    target.wait_location_available("default").await;
    let synced = wait_for("the backup to be synced into the second cluster", 30, || async {
        let b = target.get_in::<Backup>(NS, "nginx-backup").await?;
        (b["status"]["phase"] == "Completed").then_some(b)
    })
    .await;
    assert_eq!(synced["spec"]["storageLocation"], "default", "{synced}");
    assert_eq!(synced["spec"]["includedNamespaces"], json!([NGINX]), "{synced}");
    assert_eq!(synced["metadata"]["labels"]["stowage.io/storage-location"], "default", "{synced}");
    assert!(target.get_in::<Backup>(NS, "broken").await.is_none());

    let status = target.restore("migrate", json!({"backupName": "nginx-backup"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", target.server_log());
    assert_eq!(nginx_snapshot(&target, NGINX).await, original, "the app arrives in the second cluster unchanged");
    let restored = target.get_in::<ConfigMap>(NGINX, "nginx-config").await.unwrap();
    assert_eq!(restored["metadata"]["labels"]["stowage.io/restore-name"], "migrate");

    // The restore's log is not kept (that would write to the bucket), and asking for it says so.
    target.create::<DownloadRequest>(json!({"metadata": {"name": "migrate-log", "namespace": NS},
        "spec": {"target": {"kind": "RestoreLog", "name": "migrate"}}})).await;
    let status = target.wait_processed::<DownloadRequest>("migrate-log").await;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("ReadOnly") && message.contains("not kept"), "{status}");

    // The second cluster cannot back up to, or delete from, the read-only location.
    let status = target.backup("from-target", json!({"includedNamespaces": [NGINX]})).await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    let errors = status["validationErrors"].to_string();
    assert!(errors.contains("ReadOnly") && errors.contains("use a ReadWrite location"), "{errors}");
    target.create::<DeleteBackupRequest>(json!({"metadata": {"name": "delete-nginx", "namespace": NS},
        "spec": {"backupName": "nginx-backup"}})).await;
    let status = target.wait_processed::<DeleteBackupRequest>("delete-nginx").await;
    assert!(status["errors"].to_string().contains("ReadOnly"), "{status}");
    assert!(target.get_in::<Backup>(NS, "nginx-backup").await.is_some(), "the refused deletion keeps the Backup");

    let after = target.bucket_keys("").await;
    assert_eq!(after, before, "nothing is written to a ReadOnly location");
    let requests = proxy.requests();
    assert!(requests.get("GET").copied().unwrap_or(0) > 0, "the second cluster read through the proxy: {requests:?}");
    assert_eq!(proxy.writes(), 0, "no write request reached the bucket: {requests:?}");
    eprintln!("requests from the read-only cluster: {requests:?}");

    // Deleted where it was made, the backup disappears from the second cluster too.
    source.create::<DeleteBackupRequest>(json!({"metadata": {"name": "delete-nginx", "namespace": NS},
        "spec": {"backupName": "nginx-backup"}})).await;
    let status = source.wait_processed::<DeleteBackupRequest>("delete-nginx").await;
    assert_eq!(status.get("errors"), None, "{status}");
    wait_for("the second cluster to drop the deleted backup", 30, || async {
        target.get_in::<Backup>(NS, "nginx-backup").await.is_none().then_some(())
    })
    .await;
    assert!(target.get_in::<Backup>(NS, "from-target").await.is_some(), "the cluster's own backups are kept");
}

/// A tar.gz in Velero's layout (format 1.1.0): `metadata/version`, every item under
/// `resources/<resource>[.<group>]/namespaces|cluster/...` and again under
/// `<version>-preferredversion/`.
fn velero_archive(items: &[(&str, &str, Option<&str>, Value)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(1_714_532_400);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes).unwrap();
    };
    add("metadata/version".into(), b"1.1.0");
    for (resource_dir, version, ns, object) in items {
        let name = object["metadata"]["name"].as_str().unwrap();
        let scoped = match ns {
            Some(ns) => format!("namespaces/{ns}/{name}.json"),
            None => format!("cluster/{name}.json"),
        };
        let bytes = serde_json::to_vec(object).unwrap();
        add(format!("resources/{resource_dir}/{scoped}"), &bytes);
        add(format!("resources/{resource_dir}/{version}-preferredversion/{scoped}"), &bytes);
    }
    let gz = tar.into_inner().unwrap();
    gz.finish().unwrap()
}

/// What Velero's API server returned for the objects: uids, resource versions, managed fields
/// and status included.
fn server_fields(mut object: Value, uid: &str) -> Value {
    let meta = object["metadata"].as_object_mut().unwrap();
    meta.insert("uid".into(), json!(uid));
    meta.insert("resourceVersion".into(), json!("48213"));
    meta.insert("creationTimestamp".into(), json!("2024-04-02T09:12:44Z"));
    meta.insert("managedFields".into(), json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1"}]));
    object
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_velero_backup_in_the_bucket_is_synced_and_restored() {
    let mut env = Env::start().await;
    let ns = "legacy";
    let items = vec![
        ("namespaces", "v1", None, server_fields(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, "team": "payments"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}), "0b8d4f4e-1")),
        ("configmaps", "v1", Some(ns), server_fields(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": ns, "labels": {"app": "web"}},
            "data": {"LOG_LEVEL": "info"}}), "0b8d4f4e-2")),
        ("secrets", "v1", Some(ns), server_fields(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app-secret", "namespace": ns}, "type": "Opaque",
            "data": {"token": "dG9rZW4="}}), "0b8d4f4e-3")),
        ("services", "v1", Some(ns), server_fields(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.112.34", "clusterIPs": ["10.96.112.34"],
                "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {}}}), "0b8d4f4e-4")),
        ("deployments.apps", "v1", Some(ns), server_fields(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "generation": 3,
                "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                    "containers": [{"name": "web", "image": "nginx:1.25",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}},
            "status": {"replicas": 1, "readyReplicas": 1, "observedGeneration": 3}}), "0b8d4f4e-5")),
        ("persistentvolumeclaims", "v1", Some(ns), server_fields(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": ns, "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                "volume.kubernetes.io/selected-node": "ip-10-0-1-17.ec2.internal"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "volumeName": "pvc-5c1f0e2a",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}}), "0b8d4f4e-6")),
        ("persistentvolumes", "v1", None, server_fields(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-5c1f0e2a"},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "storageClassName": "standard",
                "persistentVolumeReclaimPolicy": "Delete", "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0a1b2c"},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": "data", "uid": "0b8d4f4e-6"}},
            "status": {"phase": "Bound"}}), "0b8d4f4e-7")),
        ("customresourcedefinitions.apiextensions.k8s.io", "v1", None, server_fields(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
            "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget"}, "storedVersions": ["v1"],
                "conditions": [{"type": "Established", "status": "True"}]}}), "0b8d4f4e-8")),
        ("widgets.example.com", "v1", Some(ns), server_fields(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 3}}), "0b8d4f4e-9")),
    ];
    let name = "velero-nightly-20240501030000";
    let metadata = json!({"kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": {"name": name, "namespace": "velero", "uid": "5e0c8f6a-0d2b", "resourceVersion": "771", "generation": 1,
            "creationTimestamp": "2024-05-01T03:00:00Z",
            "labels": {"velero.io/schedule-name": "velero-nightly", "velero.io/storage-location": "default"},
            "annotations": {"velero.io/source-cluster-k8s-gitversion": "v1.29.4", "velero.io/resource-timeout": "10m0s"}},
        "spec": {"metadata": {}, "includedNamespaces": [ns], "ttl": "720h0m0s", "hooks": {},
            "storageLocation": "default", "volumeSnapshotLocations": ["default"], "defaultVolumesToFsBackup": false,
            "csiSnapshotTimeout": "10m0s", "itemOperationTimeout": "4h0m0s", "snapshotMoveData": false},
        "status": {"version": 1, "formatVersion": "1.1.0", "expiration": "2099-01-01T03:00:00Z", "phase": "Completed",
            "startTimestamp": "2024-05-01T03:00:00Z", "completionTimestamp": "2024-05-01T03:00:09Z",
            "progress": {"totalItems": 9, "itemsBackedUp": 9}, "hookStatus": {}}});
    // Velero's files for one backup (its archive, logs and lists are gzip).
    let store = env.store();
    let dir = format!("backups/{name}");
    store.put(&format!("{dir}/{name}.tar.gz"), velero_archive(&items).into()).await.unwrap();
    let log = b"time=\"2024-05-01T03:00:00Z\" level=info msg=\"Backup completed\"\n";
    store.put(&format!("{dir}/{name}-logs.gz"), gzip(log).into()).await.unwrap();
    store.put(&format!("{dir}/{name}-resource-list.json.gz"), gzip(br#"{"v1/ConfigMap":["legacy/app-config"]}"#).into()).await.unwrap();
    store.put(&format!("{dir}/velero-backup.json"), serde_json::to_vec(&metadata).unwrap().into()).await.unwrap();

    env.start_server();
    let synced = wait_for("the Velero backup to be synced", 30, || async {
        let b = env.get_in::<Backup>(NS, name).await?;
        (b["status"]["phase"] == "Completed").then_some(b)
    })
    .await;
    assert_eq!(synced["spec"]["includedNamespaces"], json!([ns]), "{synced}");
    assert_eq!(synced["spec"]["storageLocation"], "default", "{synced}");
    assert_eq!(synced["status"]["progress"]["itemsBackedUp"], 9, "{synced}");

    // `stowage backup logs` works on it: the server streams Velero's gzip log as zstd.
    let log = e2e::cli(&env, &["backup", "logs", name]);
    assert!(log.contains("Backup completed"), "{log}");

    // The latest backup of the Velero schedule (found by Velero's label), recorded on the restore.
    let status = env.restore("from-velero", json!({"scheduleName": "velero-nightly"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert_eq!(env.get_in::<Restore>(NS, "from-velero").await.unwrap()["spec"]["backupName"], name);

    let namespace = env.get_cluster::<Namespace>(ns).await.expect("the namespace is restored");
    assert_eq!(namespace["metadata"]["labels"]["team"], "payments");
    let cm = env.get_in::<ConfigMap>(ns, "app-config").await.expect("configmap restored");
    assert_eq!(cm["data"], json!({"LOG_LEVEL": "info"}));
    assert_eq!(cm["metadata"]["labels"]["stowage.io/backup-name"], name);
    assert_ne!(cm["metadata"]["uid"], "0b8d4f4e-2", "the old cluster's uid is not kept");
    let secret = env.get_in::<Secret>(ns, "app-secret").await.expect("secret restored");
    assert_eq!(secret["data"]["token"], "dG9rZW4=");
    let svc = env.get_in::<Service>(ns, "web").await.expect("service restored");
    assert_ne!(svc["spec"]["clusterIP"], "10.96.112.34", "the old cluster's IP is not reused: {svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(env.get_cluster::<PersistentVolume>("pvc-5c1f0e2a").await.is_none(), "a Delete-policy volume is provisioned anew");
    // A custom resource comes back after its definition, restored by the same restore.
    let widgets = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let widget = Api::<kube::api::DynamicObject>::namespaced_with(env.client.clone(), ns, &widgets).get("w1").await.unwrap();
    assert_eq!(widget.data["spec"], json!({"size": 3}));
    wait_for("the claim to be bound to a new volume", 30, || async {
        let c = env.get_in::<PersistentVolumeClaim>(ns, "data").await?;
        (c["status"]["phase"] == "Bound" && c["spec"]["volumeName"] != "pvc-5c1f0e2a").then_some(())
    })
    .await;
    wait_for("the restored deployment to be ready", 60, || async {
        let d = env.get_in::<Deployment>(ns, "web").await?;
        (d["status"]["readyReplicas"] == 1).then_some(())
    })
    .await;
}

/// A CRD of Velero's kinds, schema-less: enough to hold its objects.
fn velero_crd(kind: &str, plural: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.velero.io")},
        "spec": {"group": "velero.io", "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_velero_writes_its_locations_and_schedules_and_its_backups_sync() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{DynamicObject, GroupVersionKind, PostParams};
    use kube::discovery::ApiResource;
    use stowage_api::{BackupStorageLocation, Schedule};

    let mut env = Env::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for (kind, plural) in [("BackupStorageLocation", "backupstoragelocations"), ("Schedule", "schedules")] {
        crds.create(&PostParams::default(), &serde_json::from_value(velero_crd(kind, plural)).unwrap()).await.unwrap();
    }
    env.create_namespace("velero").await;
    let s3 = env.s3.clone();
    let ini = format!("[default]\naws_access_key_id={}\naws_secret_access_key={}\n", s3.access_key(), s3.secret_key());
    env.create_in::<Secret>("velero", json!({"metadata": {"name": "cloud-credentials"}, "stringData": {"cloud": ini}})).await;
    let velero = |kind: &str, plural: &str| {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("velero.io", "v1", kind), plural);
        Api::<DynamicObject>::namespaced_with(env.client.clone(), "velero", &resource)
    };
    // Velero's location: the same bucket as Stowage's default, under a prefix; no credential
    // named (Velero's server used its cloud-credentials Secret).
    let bsl: DynamicObject = serde_json::from_value(json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
        "metadata": {"name": "default", "namespace": "velero"},
        "spec": {"provider": "velero.io/aws", "default": true, "objectStorage": {"bucket": env.bucket, "prefix": "cluster-a"},
            "config": {"region": s3.region(), "s3Url": s3.endpoint(), "s3ForcePathStyle": "true"}}})).unwrap();
    velero("BackupStorageLocation", "backupstoragelocations").create(&PostParams::default(), &bsl).await.unwrap();
    let schedule: DynamicObject = serde_json::from_value(json!({"apiVersion": "velero.io/v1", "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": "velero"},
        "spec": {"schedule": "0 3 * * *", "useOwnerReferencesInBackup": false,
            "template": {"includedNamespaces": ["legacy"], "ttl": "720h0m0s", "snapshotVolumes": false,
                "defaultVolumesToFsBackup": true, "csiSnapshotTimeout": "10m0s"}}})).unwrap();
    velero("Schedule", "schedules").create(&PostParams::default(), &schedule).await.unwrap();

    // One of Velero's backups in its bucket prefix.
    let name = "nightly-20240501030000";
    let item = server_fields(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-config", "namespace": "legacy"}, "data": {"LOG_LEVEL": "info"}}), "0b8d4f4e-2");
    let metadata = json!({"kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": {"name": name, "namespace": "velero", "creationTimestamp": "2024-05-01T03:00:00Z",
            "labels": {"velero.io/schedule-name": "nightly", "velero.io/storage-location": "default"}},
        "spec": {"includedNamespaces": ["legacy"], "ttl": "720h0m0s", "storageLocation": "default"},
        "status": {"version": 1, "formatVersion": "1.1.0", "expiration": "2099-01-01T03:00:00Z", "phase": "Completed",
            "startTimestamp": "2024-05-01T03:00:00Z", "completionTimestamp": "2024-05-01T03:00:09Z",
            "progress": {"totalItems": 1, "itemsBackedUp": 1}}});
    let store = env.store();
    let dir = format!("cluster-a/backups/{name}");
    store.put(&format!("{dir}/{name}.tar.gz"), velero_archive(&[("configmaps", "v1", Some("legacy"), item)]).into()).await.unwrap();
    store.put(&format!("{dir}/velero-backup.json"), serde_json::to_vec(&metadata).unwrap().into()).await.unwrap();

    // A dry run says what it would do and does nothing.
    let out = e2e::cli(&env, &["migrate-from-velero"]);
    assert!(out.contains("BackupStorageLocation velero/default -> stowage/velero-default") && out.contains("would be created"), "{out}");
    assert!(out.contains("Schedule velero/nightly -> stowage/nightly"), "{out}");
    assert!(out.contains("template.snapshotVolumes not carried over") && out.contains("template.csiSnapshotTimeout"), "{out}");
    assert!(out.contains("Secret velero/cloud-credentials (key cloud) -> stowage/velero-cloud-credentials"), "{out}");
    assert!(out.contains("Dry run: nothing was changed"), "{out}");
    assert!(env.get_in::<BackupStorageLocation>(NS, "velero-default").await.is_none());
    assert!(env.get_in::<Schedule>(NS, "nightly").await.is_none());

    // -o yaml: Stowage's kinds, the schedule writing where Velero's did, no credentials printed.
    let yaml = e2e::cli(&env, &["migrate-from-velero", "-o", "yaml"]);
    assert!(!yaml.contains(s3.secret_key()), "{yaml}");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let bsl = docs.iter().find(|d| d["kind"] == "BackupStorageLocation").expect("a location");
    serde_json::from_value::<BackupStorageLocation>(bsl.clone()).unwrap();
    assert_eq!(bsl["spec"]["objectStorage"]["prefix"], "cluster-a");
    assert_eq!(bsl["spec"]["default"], Value::Null, "Stowage's own default stays the default: {bsl}");
    let sched = docs.iter().find(|d| d["kind"] == "Schedule").expect("a schedule");
    assert_eq!(sched["spec"]["template"]["storageLocation"], "velero-default", "{sched}");
    assert_eq!(sched["spec"]["template"]["defaultVolumesToFsBackup"], true);

    let out = e2e::cli(&env, &["migrate-from-velero", "--apply", "--paused"]);
    assert!(out.contains("created") && out.contains("velero schedule pause --all"), "{out}");
    let copied = env.get_in::<Secret>(NS, "velero-cloud-credentials").await.expect("the credentials are copied");
    assert!(copied["data"]["cloud"].is_string());
    let migrated = env.get_in::<Schedule>(NS, "nightly").await.unwrap();
    assert_eq!(migrated["spec"]["paused"], true);
    assert_eq!(migrated["metadata"]["annotations"]["stowage.io/migrated-from"], "velero/velero/nightly");
    let again = e2e::cli(&env, &["migrate-from-velero", "--apply", "--paused"]);
    assert_eq!(again.matches("already there").count(), 2, "{again}");

    // The server reaches the migrated location with the copied credentials and syncs Velero's backup.
    env.start_server();
    env.wait_location_available("velero-default").await;
    let synced = wait_for("Velero's backup to be synced", 30, || async {
        let b = env.get_in::<Backup>(NS, name).await?;
        (b["status"]["phase"] == "Completed").then_some(b)
    })
    .await;
    assert_eq!(synced["metadata"]["labels"]["stowage.io/storage-location"], "velero-default", "{synced}");
}

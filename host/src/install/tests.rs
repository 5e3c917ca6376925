use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use clap::Parser;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use serde_json::Value;
use stowage_api::BackupStorageLocation;

use super::*;
use crate::cli::{Cli, Command};

const CREDENTIALS: &str = "[default]\naws_access_key_id = minio\naws_secret_access_key = minio123-very-secret\n";
const SECRET_VALUE: &str = "minio123-very-secret";

struct Fixture {
    _dir: tempfile::TempDir,
    secret_file: String,
}

fn fixture(contents: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials-minio");
    std::fs::File::create(&path).unwrap().write_all(contents.as_bytes()).unwrap();
    Fixture { secret_file: path.to_string_lossy().into_owned(), _dir: dir }
}

fn args(extra: &[&str]) -> InstallArgs {
    let argv = ["stowage", "install"].iter().chain(extra).copied();
    match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{extra:?}: {e}")).command {
        Command::Install(args) => *args,
        other => panic!("{other:?}"),
    }
}

fn minio_args(f: &Fixture, extra: &[&str]) -> InstallArgs {
    let mut all = vec![
        "--provider",
        "aws",
        "--bucket",
        "stowage",
        "--secret-file",
        &f.secret_file,
        "--backup-location-config",
        "region=minio,s3ForcePathStyle=\"true\",s3Url=http://minio.minio.svc:9000",
    ];
    all.extend_from_slice(extra);
    args(&all)
}

fn build_objects(args: &InstallArgs) -> Vec<InstallObject> {
    build(&args.resolve().unwrap(), &MasterKey::generate().unwrap())
}

fn find<T: serde::de::DeserializeOwned>(objects: &[InstallObject], kind: &str, name: &str) -> T {
    let object = objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:?}"));
    serde_json::from_value(serde_json::to_value(object).unwrap()).unwrap()
}

fn error_of(args: &InstallArgs) -> String {
    args.resolve().unwrap_err().to_string()
}

#[test]
fn dry_run_yaml_parses_back_with_every_kind() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &["--dry-run"]));
    let yaml = render(&objects, OutputFormat::Yaml).unwrap();
    assert!(yaml.starts_with("---\n"));
    let docs: Vec<Value> =
        yaml.split("\n---\n").map(|d| serde_yaml::from_str(d.trim_start_matches("---\n")).unwrap()).collect();
    assert_eq!(docs.len(), objects.len());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for doc in &docs {
        assert!(doc["apiVersion"].is_string(), "{doc}");
        *kinds.entry(doc["kind"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let expected = [
        ("Namespace", 1),
        ("CustomResourceDefinition", 9),
        ("ServiceAccount", 2),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 2),
        ("RoleBinding", 2),
        ("Secret", 2),
        ("BackupStorageLocation", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("PodDisruptionBudget", 1),
        ("DaemonSet", 1),
    ];
    assert_eq!(kinds, expected.iter().map(|(k, n)| (k.to_string(), *n)).collect());
    // Namespace and CRDs come first, workloads last.
    assert_eq!(docs[0]["kind"], "Namespace");
    assert!(docs[1..10].iter().all(|d| d["kind"] == "CustomResourceDefinition"));
    assert_eq!(docs.last().unwrap()["kind"], "DaemonSet");
}

#[test]
fn json_output_is_a_list() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &["--dry-run", "-o", "json"]));
    let list: Value = serde_json::from_str(&render(&objects, OutputFormat::Json).unwrap()).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), objects.len());
}

#[test]
fn master_key_is_random_per_run_and_32_bytes() {
    let f = fixture(CREDENTIALS);
    let args = minio_args(&f, &[]);
    let key = |objects: &[InstallObject]| {
        let secret: Secret = find(objects, "Secret", "stowage-repo-master-key");
        secret.data.unwrap()["master-key"].0.clone()
    };
    let (a, b) = (key(&build_objects(&args)), key(&build_objects(&args)));
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

#[test]
fn credentials_go_into_the_secret_verbatim() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &[]));
    let secret: Secret = find(&objects, "Secret", "cloud-credentials");
    assert_eq!(secret.metadata.namespace.as_deref(), Some("stowage"));
    assert_eq!(secret.data.unwrap()["cloud"].0, CREDENTIALS.as_bytes());
}

#[test]
fn secrets_never_appear_in_messages_or_debug_output() {
    let f = fixture(CREDENTIALS);
    let args = minio_args(&f, &["--backup-location-config", "unknownKey=1"]);
    let plan = args.resolve().unwrap();
    let key = MasterKey::generate().unwrap();
    let objects = build(&plan, &key);
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    let creds_b64 = base64::engine::general_purpose::STANDARD.encode(CREDENTIALS);
    let mut messages = plan.warnings.clone();
    messages.push(format!("{plan:?}"));
    messages.push(format!("{objects:?}"));
    messages.push(format!("{key:?}"));
    messages.extend(objects.iter().map(InstallObject::describe));
    messages.push(master_key::dry_run_notice(&plan.namespace));
    messages.push(master_key::created_notice(&plan.namespace));
    assert!(!plan.warnings.is_empty(), "the unknown key warns");
    for message in &messages {
        for secret in [SECRET_VALUE, key_b64.as_str(), creds_b64.as_str()] {
            assert!(!message.contains(secret), "secret leaked into: {message}");
        }
    }
    // The printed manifests do carry them (base64), as they must.
    let yaml = render(&objects, OutputFormat::Yaml).unwrap();
    assert!(yaml.contains(&key_b64) && yaml.contains(&creds_b64));
}

#[test]
fn server_deployment() {
    let f = fixture(CREDENTIALS);
    let objects =
        build_objects(&minio_args(&f, &["--default-volumes-to-fs-backup", "--image", "registry.local/stowage:dev"]));
    let deployment: Deployment = find(&objects, "Deployment", "stowage");
    let pod = deployment.spec.unwrap().template;
    let annotations = pod.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8085");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("stowage"));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/stowage:dev"));
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "server");
    assert!(args.contains(&"--default-volumes-to-fs-backup".to_string()));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8085);
    let env: BTreeMap<_, _> = c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e)).collect();
    assert_eq!(env["AWS_SHARED_CREDENTIALS_FILE"].value.as_deref(), Some("/credentials/cloud"));
    let ns_from = env["STOWAGE_NAMESPACE"].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(ns_from.field_path, "metadata.namespace");
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == "/credentials").unwrap();
    let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
    assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("cloud-credentials"));
    assert_eq!(c.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    // Two replicas by default, one leading: they may overlap during a rolling update.
    let deployment: Deployment = find(&objects, "Deployment", "stowage");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
    let pod_name = env["POD_NAME"].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(pod_name.field_path, "metadata.name");
    let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let budget: k8s_openapi::api::policy::v1::PodDisruptionBudget = find(&objects, "PodDisruptionBudget", "stowage");
    assert_eq!(budget.spec.unwrap().min_available, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
    // One replica: no budget (it would block every drain).
    let single = build_objects(&minio_args(&f, &["--replicas", "1"]));
    assert!(!single.iter().any(|o| o.kind() == "PodDisruptionBudget"));
}

#[test]
fn node_agent_mounts_the_configured_kubelet_dir() {
    let f = fixture(CREDENTIALS);
    let dir = "/var/vcap/data/kubelet/pods";
    let objects = build_objects(&minio_args(&f, &["--kubelet-pods-dir", dir, "--node-agent-concurrency", "4"]));
    let ds: DaemonSet = find(&objects, "DaemonSet", "node-agent");
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("stowage-node-agent"));
    let host = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "host-pods").unwrap();
    assert_eq!(host.host_path.as_ref().unwrap().path, dir);
    let c = &spec.containers[0];
    assert_eq!(c.command.as_deref(), Some(&["stowage-node-agent".to_string()][..]));
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "host-pods").unwrap();
    assert_eq!(mount.mount_propagation.as_deref(), Some("HostToContainer"));
    let args = c.args.as_ref().unwrap();
    assert!(args.contains(&format!("--kubelet-pods-dir={}", mount.mount_path)), "{args:?}");
    assert!(args.contains(&"--concurrency=4".to_string()), "{args:?}");
    let node_name = c.env.as_ref().unwrap().iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(node_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "spec.nodeName");
    let security = c.security_context.as_ref().unwrap();
    assert_eq!((security.privileged, security.run_as_user), (Some(false), Some(0)));
}

#[test]
fn node_agent_can_be_left_out() {
    let f = fixture(CREDENTIALS);
    for flags in [&["--no-node-agent"][..], &["--use-node-agent=false"][..]] {
        let objects = build_objects(&minio_args(&f, flags));
        assert!(!objects.iter().any(|o| o.kind() == "DaemonSet"), "{flags:?}");
    }
    assert!(build_objects(&minio_args(&f, &["--use-node-agent"])).iter().any(|o| o.kind() == "DaemonSet"));
}

#[test]
fn the_extension_policy_reaches_the_server() {
    let f = fixture(CREDENTIALS);
    let policy = "{log: true, kubeRead: [pods], exec: [{container: mysql}]}";
    let objects = build_objects(&minio_args(
        &f,
        &["--namespaced-extension-capabilities", policy],
    ));
    let server: Deployment = find(&objects, "Deployment", "stowage");
    let args = server.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&format!("--namespaced-extension-capabilities={policy}")),
        "{args:?}"
    );
    let default: Deployment = find(
        &build_objects(&minio_args(&f, &[])),
        "Deployment",
        "stowage",
    );
    let args = default.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--namespaced-extension-capabilities")),
        "{args:?}"
    );
    let error = error_of(&minio_args(
        &f,
        &["--namespaced-extension-capabilities", "{exec: [mysql]}"],
    ));
    assert!(
        error.contains("--namespaced-extension-capabilities") && error.contains("exec"),
        "{error}"
    );
}

#[test]
fn default_backup_storage_location() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &["--prefix", "/cluster-a/", "-n", "backup-system"]));
    let bsl: BackupStorageLocation = find(&objects, "BackupStorageLocation", "default");
    assert_eq!(bsl.metadata.namespace.as_deref(), Some("backup-system"));
    assert!(bsl.spec.default);
    assert_eq!(bsl.spec.provider, "aws");
    assert_eq!(bsl.spec.object_storage.bucket, "stowage");
    assert_eq!(bsl.spec.object_storage.prefix.as_deref(), Some("cluster-a"));
    assert_eq!(bsl.spec.config["s3ForcePathStyle"], "true");
    assert_eq!(bsl.spec.credential.as_ref().unwrap().name, "cloud-credentials");
    assert!(!build_objects(&args(&["--no-default-backup-location"]))
        .iter()
        .any(|o| o.kind() == "BackupStorageLocation"));
}

#[test]
fn rbac_is_scoped() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &["-n", "backup-system"]));
    let server: ClusterRole = find(&objects, "ClusterRole", "stowage-server");
    let rules = server.rules.unwrap();
    let has = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.as_ref().unwrap().iter().any(|g| g == group)
                && r.resources.as_ref().unwrap().iter().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(has("*", "*", "list") && has("*", "*", "create") && has("", "pods/exec", "create"));
    assert!(has("stowage.io", "*", "*") && has("", "events", "create") && has("", "configmaps", "watch"));
    assert!(!has("*", "*", "delete"), "restores never delete");

    let agent: ClusterRole = find(&objects, "ClusterRole", "stowage-node-agent");
    let agent_text = serde_json::to_string(&agent).unwrap();
    assert!(!agent_text.contains("secrets") && !agent_text.contains("\"*\""), "{agent_text}");
    let agent_role: Role = find(&objects, "Role", "stowage-node-agent");
    assert_eq!(agent_role.metadata.namespace.as_deref(), Some("backup-system"));
    assert_eq!(agent_role.rules.unwrap()[0].verbs, vec!["get"]);

    let binding: ClusterRoleBinding = find(&objects, "ClusterRoleBinding", "stowage-node-agent-backup-system");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), ("stowage-node-agent", Some("backup-system")));
}

#[test]
fn filesystem_location_is_mounted_in_both_workloads() {
    let objects = build_objects(&args(&["--provider", "filesystem", "--bucket", "/srv/stowage"]));
    assert!(!objects.iter().any(|o| o.name() == "cloud-credentials"), "no secret needed");
    let deployment: Deployment = find(&objects, "Deployment", "stowage");
    let ds: DaemonSet = find(&objects, "DaemonSet", "node-agent");
    for spec in [deployment.spec.unwrap().template.spec.unwrap(), ds.spec.unwrap().template.spec.unwrap()] {
        let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "backup-location").unwrap();
        assert_eq!(volume.host_path.as_ref().unwrap().path, "/srv/stowage");
        let mounts = spec.containers[0].volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/srv/stowage"));
    }
}

#[test]
fn bad_flags_say_what_to_do() {
    let f = fixture(CREDENTIALS);
    let missing = "/nonexistent/credentials-velero";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--provider is required"),
        (vec!["--provider", "aws", "--secret-file", &f.secret_file], "--bucket is required with --provider aws"),
        (vec!["--provider", "aws", "--bucket", "b"], "--secret-file is required"),
        (vec!["--provider", "aws", "--bucket", "s3://b", "--no-secret"], "without s3://"),
        (vec!["--provider", "aws", "--bucket", "b", "--secret-file", missing], missing),
        (vec!["--provider", "filesystem", "--bucket", "backups"], "absolute directory"),
        (
            vec!["--provider", "aws", "--bucket", "b", "--no-secret", "--backup-location-config", "region"],
            "\"region\" is not KEY=VALUE",
        ),
        (vec!["--provider", "filesystem", "--bucket", "/b", "--kubelet-pods-dir", "pods"], "absolute path"),
        (vec!["--provider", "filesystem", "--bucket", "/b", "-n", "Stowage"], "not a valid namespace"),
    ];
    for (flags, expected) in cases {
        let err = error_of(&args(&flags));
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
    assert!(args(&["--provider", "aws", "--bucket", "b", "--no-secret"]).resolve().is_ok());
}

#[test]
fn malformed_secret_file_is_rejected_without_echoing_it() {
    let f = fixture("[default]\naws_access_key_id minio123-very-secret\n");
    let err = error_of(&args(&["--provider", "aws", "--bucket", "b", "--secret-file", &f.secret_file]));
    assert!(err.contains(&f.secret_file) && err.contains("line 2"), "{err}");
    assert!(!err.contains(SECRET_VALUE), "{err}");
    let g = fixture(CREDENTIALS);
    let err = error_of(&args(&[
        "--provider",
        "aws",
        "--bucket",
        "b",
        "--secret-file",
        &g.secret_file,
        "--backup-location-config",
        "profile=backup",
    ]));
    assert!(err.contains("no [backup] profile"), "{err}");
}

#[test]
fn unknown_provider_and_conflicts_are_rejected_by_the_parser() {
    let parse = |flags: &[&str]| Cli::try_parse_from(["stowage", "install"].iter().chain(flags)).map(|_| ());
    let err = parse(&["--provider", "gcp"]).unwrap_err().to_string();
    assert!(err.contains("possible values: aws, filesystem"), "{err}");
    assert!(parse(&["--no-secret", "--secret-file", "x"]).is_err());
    assert!(parse(&["--no-node-agent", "--use-node-agent"]).is_err());
    assert!(parse(&["--node-agent-concurrency", "0"]).is_err());
    assert!(parse(&["-o", "table"]).is_err());
}

#[test]
fn the_repository_maintenance_frequency_goes_to_the_server_checked() {
    let f = fixture(CREDENTIALS);
    let objects = build_objects(&minio_args(&f, &["--default-repo-maintain-frequency", "24h"]));
    let deployment: Deployment = find(&objects, "Deployment", "stowage");
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--default-repo-maintain-frequency=24h".to_string()), "{args:?}");
    let err = error_of(&minio_args(&f, &["--default-repo-maintain-frequency", "weekly"]));
    assert!(err.contains("--default-repo-maintain-frequency \"weekly\"") && err.contains("168h"), "{err}");
}

#[test]
fn the_dashboard_is_served_only_when_asked_for() {
    let f = fixture(CREDENTIALS);
    let server_container = |extra: &[&str]| {
        let deployment: Deployment = find(&build_objects(&minio_args(&f, extra)), "Deployment", "stowage");
        deployment.spec.unwrap().template.spec.unwrap().containers.remove(0)
    };
    let plain = server_container(&[]);
    assert!(!plain.args.as_ref().unwrap().iter().any(|a| a.contains("dashboard")), "{:?}", plain.args);
    assert_eq!(plain.ports.as_ref().unwrap().len(), 1, "only the metrics port: {:?}", plain.ports);

    let with = server_container(&["--dashboard"]);
    assert!(with.args.as_ref().unwrap().contains(&"--dashboard-address=127.0.0.1:8087".to_string()), "{:?}", with.args);
    let port = with.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("dashboard")).expect("a dashboard port");
    assert_eq!(port.container_port, 8087);
    assert_ne!(port.container_port, i32::from(stowage_api::names::METRICS_PORT));

    let other = server_container(&["--dashboard", "--dashboard-port", "9000"]);
    assert!(other.args.as_ref().unwrap().contains(&"--dashboard-address=127.0.0.1:9000".to_string()), "{:?}", other.args);
    assert!(other.ports.as_ref().unwrap().iter().any(|p| p.name.as_deref() == Some("dashboard") && p.container_port == 9000));
    // A port without the dashboard is a mistake, not silently ignored.
    assert!(Cli::try_parse_from(["stowage", "install", "--dashboard-port", "9000"]).is_err());
    assert!(Cli::try_parse_from(["stowage", "install", "--dashboard", "--dashboard-port", "0"]).is_err());
}

//! The manifests committed under deploy/ must match the code: CRDs are generated from the API
//! types, and the examples must parse as the kinds they claim to be.

use std::path::{Path, PathBuf};

use stowage_api::{Backup, BackupStorageLocation, Restore, Schedule};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn committed_crds_match_the_types() {
    let problems = stowage::crdgen::check(&deploy_dir().join("crds")).unwrap();
    assert!(
        problems.is_empty(),
        "deploy/crds is out of date:\n  {}\nRun `{}` from the repository root and commit the result.",
        problems.join("\n  "),
        stowage::crdgen::REGENERATE
    );
}

#[test]
fn examples_parse_as_their_kinds() {
    let dir = deploy_dir().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let name = format!("{} ({kind})", path.display());
            let check = |r: Result<(), serde_json::Error>| r.unwrap_or_else(|e| panic!("{name}: {e}"));
            match kind.as_str() {
                "Backup" => check(serde_json::from_value::<Backup>(value.clone()).map(drop)),
                "Restore" => check(serde_json::from_value::<Restore>(value.clone()).map(drop)),
                "Schedule" => check(serde_json::from_value::<Schedule>(value.clone()).map(drop)),
                "BackupStorageLocation" => {
                    check(serde_json::from_value::<BackupStorageLocation>(value.clone()).map(drop))
                }
                "Secret" => {}
                // The demo application: built-in kinds, checked against k8s-openapi's types.
                "Namespace" => check(serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(value.clone()).map(drop)),
                "PersistentVolumeClaim" => check(
                    serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(value.clone()).map(drop),
                ),
                "ConfigMap" => check(serde_json::from_value::<k8s_openapi::api::core::v1::ConfigMap>(value.clone()).map(drop)),
                "Deployment" => check(serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(value.clone()).map(drop)),
                "Service" => check(serde_json::from_value::<k8s_openapi::api::core::v1::Service>(value.clone()).map(drop)),
                other => panic!("{name}: unexpected kind {other:?}"),
            }
            if value["apiVersion"].as_str().is_some_and(|v| v.starts_with("stowage.io/")) {
                assert_eq!(value["apiVersion"], stowage_api::API_VERSION, "{name}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "expected example manifests in {}", dir.display());
}

/// The objects of a multi-document YAML or a JSON `List`, by `kind namespace/name`; Secret
/// data is compared decoded (kustomize folds long base64 lines).
fn objects(text: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    use base64::Engine;
    let mut docs: Vec<serde_json::Value> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str() {
            Some("List") => docs.extend(v["items"].as_array().unwrap().iter().cloned()),
            Some(_) => docs.push(v),
            None => {}
        }
    }
    let mut by_key = std::collections::BTreeMap::new();
    for mut v in docs {
        whole_numbers_as_integers(&mut v);
        if v["kind"] == "Secret" {
            if let Some(data) = v["data"].as_object_mut() {
                for value in data.values_mut() {
                    let packed: String = value.as_str().unwrap().split_whitespace().collect();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(packed).unwrap();
                    *value = serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        let key = format!(
            "{} {}/{}",
            v["kind"].as_str().unwrap(),
            v["metadata"]["namespace"].as_str().unwrap_or(""),
            v["metadata"]["name"].as_str().unwrap()
        );
        assert!(by_key.insert(key.clone(), v).is_none(), "{key} appears twice");
    }
    by_key
}

/// `0.0` and `0` are the same number to the API server (a schema's `minimum`, say).
fn whole_numbers_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

fn kustomize(dir: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is needed (scripts/test.sh installs it)");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    objects(&String::from_utf8(out.stdout).unwrap())
}

fn install_dry_run(args: &[&str]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["install", "--dry-run", "-o", "json"])
        .args(args)
        .current_dir(deploy_dir().join(".."))
        .output()
        .unwrap();
    assert!(out.status.success(), "stowage install: {}", String::from_utf8_lossy(&out.stderr));
    let mut objects = objects(&String::from_utf8(out.stdout).unwrap());
    // Random by design: made per cluster, never shipped in a file.
    assert!(objects.remove("Secret stowage/stowage-repo-master-key").is_some(), "{:?}", objects.keys());
    objects
}

/// Names the objects that differ, showing both sides of the first.
fn assert_same(what: &str, fix: &str, actual: &std::collections::BTreeMap<String, serde_json::Value>, expected: &std::collections::BTreeMap<String, serde_json::Value>) {
    let keys: std::collections::BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let differing: Vec<&&String> = keys.iter().filter(|k| actual.get(**k) != expected.get(**k)).collect();
    if let Some(first) = differing.first() {
        panic!(
            "{what} differs from `stowage install --dry-run` in {differing:?}; {fix}\nfirst, {first}:\nkustomize: {}\ninstall:   {}",
            actual.get(**first).map(|v| v.to_string()).unwrap_or("(missing)".into()),
            expected.get(**first).map(|v| v.to_string()).unwrap_or("(missing)".into()),
        );
    }
}

const BASE_OPTIONS: &[&str] = &[
    "--provider", "aws", "--bucket", "stowage", "--secret-file", "deploy/examples/credentials-minio.example",
    "--backup-location-config", "region=minio,s3ForcePathStyle=true,s3Url=http://minio.minio.svc:9000",
];

#[test]
fn kustomize_base_and_overlay_render_what_install_prints() {
    let kustomize_dir = deploy_dir().join("kustomize");
    let mut expected = install_dry_run(BASE_OPTIONS);
    expected.remove("Secret stowage/cloud-credentials").expect("the base's install has a credentials Secret");
    assert!(expected.len() > 20, "{:?}", expected.keys());
    assert_same("deploy/kustomize/base", "run `bash deploy/kustomize/regenerate.sh` and commit the result",
        &kustomize(&kustomize_dir.join("base")), &expected);

    let overlay = kustomize_dir.join("overlays/example");
    let expected = install_dry_run(&[
        "--provider", "aws", "--bucket", "team-backups",
        "--secret-file", overlay.join("credentials").to_str().unwrap(),
        "--backup-location-config", "region=eu-west-1,s3Url=https://s3.example.internal",
    ]);
    assert!(expected.contains_key("Secret stowage/cloud-credentials"));
    assert_same("deploy/kustomize/overlays/example", "update the overlay or its comment", &kustomize(&overlay), &expected);
}

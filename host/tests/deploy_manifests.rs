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

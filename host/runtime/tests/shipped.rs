//! The extensions shipped in `extensions/`, loaded from their ConfigMap manifests.

mod fixtures;

use fixtures::*;
use serde_json::{json, Value};
use stowage_runtime::*;

fn item(object: Value) -> Item {
    Item::from_object(object).unwrap()
}

fn restore(registry: &Registry, items: Vec<Item>) -> (Vec<ActionOutcome>, ExtensionReport) {
    with_session(&registry.snapshot(), RecordingHost::new(), |s| {
        let outcomes = items.into_iter().map(|i| s.restore_item_actions(i.clone(), &i)).collect();
        (outcomes, s.report())
    })
}

#[test]
fn change_storage_class_maps_claims_volumes_and_templates() {
    let registry = registry();
    let loaded = registry.upsert(shipped("change-storage-class")).unwrap();
    assert_eq!((loaded.kind, loaded.language), (ExtensionKind::RestoreItemAction, Language::Wasm));
    let pvc = item(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop", "annotations": {"volume.beta.kubernetes.io/storage-class": "standard"}},
        "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"]},
    }));
    let pv = item(json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}, "spec": {"storageClassName": "standard"}}));
    let other = item(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "logs", "namespace": "shop"}, "spec": {"storageClassName": "slow"},
    }));
    let sts = item(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}}]},
    }));
    let (out, report) = restore(&registry, vec![pvc, pv, other.clone(), sts]);
    assert!(out.iter().all(|o| o.issues.is_empty()));
    assert_eq!(out[0].item.object["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(out[0].item.object["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"], "fast-ssd");
    assert_eq!(out[1].item.object["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(out[2].item, other);
    assert_eq!(out[3].item.object["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"], "fast-ssd");
    let record = &report.extensions[0];
    assert_eq!((record.counts.calls, record.counts.changed), (4, 3));
    assert_eq!(record.digest, loaded.digest);
}

#[test]
fn change_storage_class_ignores_other_kinds() {
    let registry = registry();
    registry.upsert(shipped("change-storage-class")).unwrap();
    let (out, report) = restore(&registry, vec![pod("shop", "web")]);
    assert_eq!(out[0].item, pod("shop", "web"));
    assert!(report.extensions.is_empty(), "not called: appliesTo leaves pods out");
}

#[test]
fn change_image_registry_rewrites_pods_and_templates() {
    let registry = registry();
    let loaded = registry.upsert(shipped("change-image-registry")).unwrap();
    assert_eq!(loaded.language, Language::Rhai);
    let deployment = item(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "cache", "image": "bitnami/redis:7"}],
            "initContainers": [{"name": "migrate", "image": "quay.io/shop/migrate:2"}],
        }}},
    }));
    let cronjob = item(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report", "namespace": "shop"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r", "image": "docker.io/shop/report"}]}}}}},
    }));
    let (out, report) = restore(&registry, vec![deployment, pod("shop", "api"), cronjob]);
    assert!(out.iter().all(|o| o.issues.is_empty()), "{:?}", out.iter().map(|o| &o.issues).collect::<Vec<_>>());
    let spec = &out[0].item.object["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], "registry.example.com/mirror/library/nginx:1.27");
    assert_eq!(spec["containers"][1]["image"], "registry.example.com/mirror/bitnami/redis:7");
    assert_eq!(spec["initContainers"][0]["image"], "quay.io/shop/migrate:2");
    assert_eq!(out[1].item.object["spec"]["containers"][2]["image"], "registry.example.com/mirror/library/app2:1.2");
    assert_eq!(
        out[2].item.object["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/mirror/shop/report"
    );
    assert_eq!(report.extensions[0].counts.changed, 3);
    // Everything else in the object is untouched.
    assert_eq!(out[1].item.object["status"], pod("shop", "api").object["status"]);
}

#[test]
fn skip_helm_release_secrets_filters_only_helm_releases() {
    let registry = registry();
    registry.upsert(shipped("skip-helm-release-secrets")).unwrap();
    let helm = item(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": "sh.helm.release.v1.shop.v3", "namespace": "shop"},
    }));
    let opaque = item(json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "db", "namespace": "shop"}}));
    let (verdicts, report) = with_session(&registry.snapshot(), RecordingHost::new(), |s| {
        (vec![s.filter(&helm), s.filter(&opaque), s.filter(&pod("shop", "web"))], s.report())
    });
    assert_eq!(
        verdicts[0].excluded_by,
        Some((ExtensionId::new("stowage", "skip-helm-release-secrets"), "Helm release secret".to_owned()))
    );
    assert!(verdicts[1].included() && verdicts[2].included());
    let record = &report.extensions[0];
    assert_eq!((record.counts.calls, record.counts.filtered), (2, 1));
    assert_eq!(record.items[0].filtered.as_deref(), Some("Helm release secret"));
}

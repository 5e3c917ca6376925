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

fn hook_target(kind: &str, group: &str, name: &str) -> HookTarget {
    let object = ObjectRef { group: group.into(), version: "v1".into(), kind: kind.into(), namespace: "shop".into(), name: name.into() };
    let mount = |container: &str, path: &str| VolumeMount { container: container.into(), path: path.into(), read_only: false };
    let volume = |name: &str, mounts| TargetVolume { pod: "db-0".into(), name: name.into(), claim: format!("{name}-db-0"), mounts };
    HookTarget {
        object,
        volumes: vec![
            volume("data", vec![mount("db", "/var/lib/db"), mount("fsfreeze", "/frozen/data")]),
            volume("logs", vec![mount("fsfreeze", "/frozen/logs")]),
            volume("cache", vec![mount("db", "/cache")]),
        ],
    }
}

#[test]
fn fsfreeze_freezes_the_mounts_of_its_container_and_leaves_the_thaw_to_the_host() {
    let registry = registry();
    registry.upsert(shipped("fsfreeze")).unwrap();
    let id = ExtensionId::new("stowage", "fsfreeze");
    let host = RecordingHost::new();
    let pod = hook_target("Pod", "", "db-0");
    let only_data = [("volumes".to_string(), "data".to_string())].into();
    let no_container = [("container".to_string(), String::new())].into();
    let (all, some, post, missing) = with_session(&registry.snapshot(), host.clone(), |s| {
        (
            s.run_hook(&id, HookPhase::PreBackup, &pod, &Default::default()),
            s.run_hook(&id, HookPhase::PreBackup, &pod, &only_data),
            s.run_hook(&id, HookPhase::PostBackup, &pod, &Default::default()),
            s.run_hook(&id, HookPhase::PreBackup, &pod, &no_container),
        )
    });
    all.unwrap();
    some.unwrap();
    post.unwrap();
    assert!(missing.unwrap_err().message.contains("parameter container is required"));
    assert_eq!(
        host.calls(),
        vec!["freeze shop/db-0 fsfreeze /frozen/data", "freeze shop/db-0 fsfreeze /frozen/logs", "freeze shop/db-0 fsfreeze /frozen/data"],
        "no thaw: the host owns it"
    );
    let logs = host.logs.lock().unwrap().clone();
    assert!(logs.iter().any(|l| l.contains("volume cache of pod shop/db-0 is not mounted in container fsfreeze")), "{logs:?}");
}

#[test]
fn scale_to_zero_scales_workloads_only() {
    let registry = registry();
    let loaded = registry.upsert(shipped("scale-to-zero")).unwrap();
    assert_eq!(loaded.config.target, TargetKind::Workload);
    let id = ExtensionId::new("stowage", "scale-to-zero");
    let host = RecordingHost::new();
    let (set, pod) = with_session(&registry.snapshot(), host.clone(), |s| {
        (
            s.run_hook(&id, HookPhase::PreBackup, &hook_target("StatefulSet", "apps", "db"), &Default::default()),
            s.run_hook(&id, HookPhase::PreBackup, &hook_target("Pod", "", "db-0"), &Default::default()),
        )
    });
    set.unwrap();
    assert!(pod.unwrap_err().message.contains("only Deployments and StatefulSets"));
    assert_eq!(host.calls(), vec!["scale-to-zero StatefulSet.apps shop/db"]);
}

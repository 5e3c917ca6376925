use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::*;
use crate::builders::ItemBuilder;
use crate::restore::plan::NamespaceMapping;

/// A restore context with sensible defaults; each test changes what it is about.
struct Ctx {
    mapping: NamespaceMapping,
    preserve_node_ports: bool,
    restored_volumes: BTreeSet<String>,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx { mapping: NamespaceMapping::default(), preserve_node_ports: false, restored_volumes: BTreeSet::new() }
    }

    fn map(mut self, from: &str, to: &str) -> Ctx {
        self.mapping = NamespaceMapping::new(BTreeMap::from([(from.to_string(), to.to_string())])).unwrap();
        self
    }

    fn preserving_node_ports(mut self) -> Ctx {
        self.preserve_node_ports = true;
        self
    }

    fn restoring_volume(mut self, pv: &str) -> Ctx {
        self.restored_volumes.insert(pv.to_string());
        self
    }

    fn run(&self, item: Item) -> Transformed {
        let ctx = TransformContext {
            backup_name: "nightly",
            restore_name: "r1",
            namespace_mapping: &self.mapping,
            preserve_node_ports: self.preserve_node_ports,
            restored_volumes: &self.restored_volumes,
        };
        transform(item, &ctx)
    }

    fn object(&self, builder: ItemBuilder) -> Value {
        let out = self.run(builder.build());
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        out.item.object
    }
}

#[test]
fn server_metadata_and_status_go_labels_and_annotations_stay() {
    let obj = Ctx::new().object(
        ItemBuilder::config_map("shop", "settings")
            .as_listed()
            .label("app", "web")
            .annotate("note", "kept")
            .set("/metadata/ownerReferences", json!([{"kind": "Deployment", "name": "web", "uid": "old"}]))
            .set("/data/key", json!("value")),
    );
    let meta = obj["metadata"].as_object().unwrap();
    for gone in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "ownerReferences"] {
        assert!(!meta.contains_key(gone), "{gone} kept");
    }
    assert!(obj.get("status").is_none());
    assert_eq!(obj["metadata"]["labels"]["app"], "web");
    assert_eq!(obj["metadata"]["annotations"]["note"], "kept");
    assert_eq!(obj["data"]["key"], "value");
}

#[test]
fn restored_objects_are_labelled_with_backup_and_restore() {
    let obj = Ctx::new().object(ItemBuilder::config_map("shop", "bare"));
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"stowage.io/backup-name": "nightly", "stowage.io/restore-name": "r1"})
    );
}

#[test]
fn namespace_mapping_moves_objects_and_renames_namespaces() {
    let ctx = Ctx::new().map("shop", "shop-copy");
    let moved = ctx.run(ItemBuilder::pod("shop", "web").build()).item;
    assert_eq!(
        (moved.namespace.as_deref(), moved.object["metadata"]["namespace"].as_str()),
        (Some("shop-copy"), Some("shop-copy"))
    );
    let ns = ctx.run(ItemBuilder::namespace("shop").build()).item;
    assert_eq!((ns.name.as_str(), ns.object["metadata"]["name"].as_str()), ("shop-copy", Some("shop-copy")));
    let untouched = ctx.run(ItemBuilder::pod("dev", "web").build()).item;
    assert_eq!(untouched.namespace.as_deref(), Some("dev"));
}

#[test]
fn services_lose_cluster_ips_unless_headless() {
    let obj = Ctx::new().object(
        ItemBuilder::service("shop", "web")
            .set("/spec/clusterIP", json!("10.0.0.7"))
            .set("/spec/clusterIPs", json!(["10.0.0.7"])),
    );
    assert!(obj["spec"].get("clusterIP").is_none() && obj["spec"].get("clusterIPs").is_none());
    let headless = Ctx::new().object(
        ItemBuilder::service("shop", "db")
            .set("/spec/clusterIP", json!("None"))
            .set("/spec/clusterIPs", json!(["None"])),
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
}

fn node_ports(obj: &Value) -> Vec<Option<u64>> {
    obj["spec"]["ports"].as_array().unwrap().iter().map(|p| p.get("nodePort").and_then(Value::as_u64)).collect()
}

fn node_port_service() -> ItemBuilder {
    ItemBuilder::service("shop", "web").set("/spec/type", json!("NodePort")).port("http", 80, Some(30080)).port(
        "metrics",
        9090,
        Some(31999),
    )
}

#[test]
fn assigned_node_ports_go_and_applied_ones_stay() {
    let applied = json!({"spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "metrics", "port": 9090}]}});
    let obj = Ctx::new()
        .object(node_port_service().annotate("kubectl.kubernetes.io/last-applied-configuration", &applied.to_string()));
    assert_eq!(node_ports(&obj), vec![Some(30080), None]);
}

#[test]
fn unnamed_applied_node_ports_are_matched_by_number() {
    let applied = json!({"spec": {"ports": [{"port": 80, "nodePort": "30080"}]}});
    let obj = Ctx::new().object(
        ItemBuilder::service("shop", "web")
            .set("/spec/ports", json!([{"port": 80, "nodePort": 30080}, {"port": 81, "nodePort": 30081}]))
            .annotate("kubectl.kubernetes.io/last-applied-configuration", &applied.to_string()),
    );
    assert_eq!(node_ports(&obj), vec![Some(30080), None]);
}

#[test]
fn without_the_annotation_managed_fields_tell_which_node_ports_were_asked_for() {
    let managed = json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:ports": {
        "k:{\"port\":9090,\"protocol\":\"TCP\"}": {"f:nodePort": {}, "f:port": {}}}}}}]);
    let obj = Ctx::new().object(node_port_service().set("/metadata/managedFields", managed));
    assert_eq!(node_ports(&obj), vec![None, Some(31999)]);
    let nothing_known = Ctx::new().object(node_port_service());
    assert_eq!(node_ports(&nothing_known), vec![None, None]);
}

#[test]
fn preserve_node_ports_keeps_them_all() {
    let obj = Ctx::new().preserving_node_ports().object(node_port_service());
    assert_eq!(node_ports(&obj), vec![Some(30080), Some(31999)]);
}

#[test]
fn health_check_node_port_of_local_load_balancers_is_reassigned() {
    let lb = || {
        ItemBuilder::service("shop", "lb")
            .set("/spec/type", json!("LoadBalancer"))
            .set("/spec/externalTrafficPolicy", json!("Local"))
            .set("/spec/healthCheckNodePort", json!(32000))
    };
    assert!(Ctx::new().object(lb())["spec"].get("healthCheckNodePort").is_none());
    let applied = json!({"spec": {"healthCheckNodePort": 32000}}).to_string();
    let kept = Ctx::new().object(lb().annotate("kubectl.kubernetes.io/last-applied-configuration", &applied));
    assert_eq!(kept["spec"]["healthCheckNodePort"], 32000);
}

#[test]
fn a_broken_last_applied_annotation_is_a_warning_not_a_failure() {
    let out = Ctx::new()
        .run(node_port_service().annotate("kubectl.kubernetes.io/last-applied-configuration", "{not json").build());
    assert_eq!(node_ports(&out.item.object), vec![None, None]);
    assert_eq!(out.warnings.len(), 1);
    assert!(out.warnings[0]
        .starts_with("services shop/web: annotation kubectl.kubernetes.io/last-applied-configuration is not JSON"));
}

#[test]
fn external_name_services_keep_their_ports() {
    let obj = Ctx::new().object(ItemBuilder::service("shop", "ext").set("/spec/type", json!("ExternalName")).port(
        "p",
        80,
        Some(30001),
    ));
    assert_eq!(node_ports(&obj), vec![Some(30001)]);
}

#[test]
fn pods_are_scheduled_anew() {
    let obj = Ctx::new().object(
        ItemBuilder::pod("shop", "web")
            .service_account("web")
            .set("/spec/nodeName", json!("node-7"))
            .set("/spec/priority", json!(1000))
            .set("/spec/initContainers", json!([{"name": "restore-wait", "image": "stowage/restore-helper"}, {"name": "setup", "image": "busybox"}]))
            .set("/spec/volumes", json!([{"name": "web-token-x1y2", "secret": {}}, {"name": "data", "emptyDir": {}}]))
            .set("/spec/containers/0/volumeMounts", json!([{"name": "web-token-x1y2", "mountPath": "/var/run/secrets"}, {"name": "data", "mountPath": "/data"}])),
    );
    assert!(obj["spec"].get("nodeName").is_none() && obj["spec"].get("priority").is_none());
    assert_eq!(obj["spec"]["volumes"], json!([{"name": "data", "emptyDir": {}}]));
    assert_eq!(obj["spec"]["containers"][0]["volumeMounts"], json!([{"name": "data", "mountPath": "/data"}]));
    assert_eq!(obj["spec"]["initContainers"], json!([{"name": "setup", "image": "busybox"}]), "an earlier restore's helper goes");
}

#[test]
fn jobs_lose_their_generated_selector_and_uid_labels() {
    let uid_labels = json!({"controller-uid": "old", "batch.kubernetes.io/controller-uid": "old", "job-name": "once"});
    let job = || {
        ItemBuilder::job("shop", "once")
            .set("/spec/selector", json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "old"}}))
            .set("/spec/template/metadata/labels", uid_labels.clone())
    };
    let generated = Ctx::new().object(job());
    assert!(generated["spec"].get("selector").is_none());
    assert_eq!(generated["spec"]["template"]["metadata"]["labels"], json!({"job-name": "once"}));
    let manual = Ctx::new()
        .object(job().set("/spec/manualSelector", json!(true)).set("/spec/selector/matchLabels/app", json!("batch")));
    assert_eq!(manual["spec"]["selector"], json!({"matchLabels": {"app": "batch"}}));
}

fn bound_claim() -> ItemBuilder {
    ItemBuilder::pvc("shop", "data")
        .volume_name("pvc-1")
        .annotate("pv.kubernetes.io/bind-completed", "yes")
        .annotate("pv.kubernetes.io/bound-by-controller", "yes")
        .annotate("volume.kubernetes.io/selected-node", "node-7")
        .annotate("volume.kubernetes.io/storage-provisioner", "csi.example.com")
        .annotate("team", "storage")
}

#[test]
fn claims_lose_binding_annotations_and_keep_their_volume_only_if_restored() {
    let reprovisioned = Ctx::new().object(bound_claim());
    assert_eq!(reprovisioned["metadata"]["annotations"], json!({"team": "storage"}));
    assert!(reprovisioned["spec"].get("volumeName").is_none());
    let rebound = Ctx::new().restoring_volume("pvc-1").object(bound_claim());
    assert_eq!(rebound["spec"]["volumeName"], "pvc-1");
}

#[test]
fn volumes_keep_their_claim_by_name_in_the_mapped_namespace() {
    let obj = Ctx::new().map("shop", "shop-copy").object(
        ItemBuilder::pv("pvc-1").claim_ref("shop", "data").annotate("pv.kubernetes.io/bound-by-controller", "yes"),
    );
    assert_eq!(
        obj["spec"]["claimRef"],
        json!({"kind": "PersistentVolumeClaim", "namespace": "shop-copy", "name": "data"})
    );
    assert!(obj["metadata"]["annotations"].as_object().unwrap().is_empty());
}

#[test]
fn volume_decisions_follow_velero() {
    let retained = ItemBuilder::pv("a").set("/spec/persistentVolumeReclaimPolicy", json!("Retain")).build();
    let deleted = ItemBuilder::pv("b").set("/spec/persistentVolumeReclaimPolicy", json!("Delete")).build();
    assert_eq!(decide_volume(&retained, true, false), VolumeDecision::Restore);
    assert!(
        matches!(decide_volume(&deleted, true, false), VolumeDecision::Reprovision { reason } if reason.contains("Delete"))
    );
    assert!(
        matches!(decide_volume(&retained, true, true), VolumeDecision::Reprovision { reason } if reason.contains("pod volume backup"))
    );
    assert_eq!(decide_volume(&retained, false, false), VolumeDecision::Reprovision { reason: "restorePVs is false" });
}

//! The stages wired together as the controller wires them, with a map standing in for the
//! cluster: a namespaced backup that follows related objects, then a restore into another
//! namespace with a resource modifier and an object that already exists.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use stowage_api::restore::ExistingResourcePolicy;
use stowage_pipeline::archive::{ArchiveReader, ArchiveWriter};
use stowage_pipeline::related::related;
use stowage_pipeline::restore::existing::{compare, ExistingAction};
use stowage_pipeline::restore::order::by_priority;
use stowage_pipeline::restore::plan::{plan, ModifierSource, RestoreOptions};
use stowage_pipeline::restore::transform::{decide_volume, transform, VolumeDecision};
use stowage_pipeline::{ApiResourceInfo, Item, ItemRef, Outcome, ResourceSelection, SelectionOptions};

fn discovery() -> Vec<ApiResourceInfo> {
    let r = ApiResourceInfo::new;
    vec![
        r("", "v1", "namespaces", "Namespace", false),
        r("", "v1", "pods", "Pod", true),
        r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true).with_short_names(&["pvc"]),
        r("", "v1", "persistentvolumes", "PersistentVolume", false),
        r("", "v1", "configmaps", "ConfigMap", true),
        r("", "v1", "nodes", "Node", false),
    ]
}

/// The source cluster: resource plural → objects.
fn source_cluster() -> BTreeMap<&'static str, Vec<Value>> {
    let meta = |name: &str, ns: Option<&str>| match ns {
        Some(ns) => json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "7"}),
        None => json!({"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"}),
    };
    BTreeMap::from([
        ("namespaces", vec![json!({"metadata": meta("shop", None)}), json!({"metadata": meta("dev", None)})]),
        (
            "pods",
            vec![json!({"metadata": meta("web-0", Some("shop")), "spec": {"nodeName": "node-1",
            "serviceAccountName": "default",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}],
            "containers": [{"name": "web", "image": "web:1"}]}, "status": {"phase": "Running"}})],
        ),
        (
            "persistentvolumeclaims",
            vec![json!({"metadata": meta("data-web-0", Some("shop")),
            "spec": {"volumeName": "pv-1", "storageClassName": "standard"}, "status": {"phase": "Bound"}})],
        ),
        (
            "persistentvolumes",
            vec![json!({"metadata": meta("pv-1", None), "spec": {"persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "shop", "name": "data-web-0", "uid": "uid-data-web-0"}}})],
        ),
        (
            "configmaps",
            vec![
                json!({"metadata": meta("settings", Some("shop")), "data": {"mode": "prod"}}),
                json!({"metadata": {"name": "scratch", "namespace": "shop", "labels": {"velero.io/exclude-from-backup": "true"}}}),
                json!({"metadata": meta("other", Some("dev")), "data": {}}),
            ],
        ),
        ("nodes", vec![json!({"metadata": meta("node-1", None)})]),
    ])
}

/// Backup of namespace `shop`: list what the selection takes, then follow related objects.
fn backup() -> Vec<u8> {
    let known = discovery();
    let options = SelectionOptions { included_namespaces: vec!["shop".into()], ..Default::default() };
    let selection = ResourceSelection::resolve(&options, &known).unwrap();
    let cluster = source_cluster();
    let fetch = |target: &ItemRef| -> Option<Item> {
        let info = known.iter().find(|i| i.group_resource() == target.group_resource)?;
        let object = cluster.get(info.plural.as_str())?.iter().find(|o| {
            o["metadata"]["name"] == target.name.as_str()
                && o["metadata"]["namespace"].as_str() == target.namespace.as_deref()
        })?;
        Item::new(object.clone(), info).ok()
    };

    let mut writer = ArchiveWriter::new(Vec::new()).unwrap();
    let mut written = BTreeSet::new();
    let mut queue = Vec::new();
    for info in known.iter().filter(|i| selection.includes_resource(i).is_ok()) {
        for object in cluster.get(info.plural.as_str()).into_iter().flatten() {
            let item = Item::new(object.clone(), info).unwrap();
            if selection.includes_item(&item).is_ok() {
                queue.push(item);
            }
        }
    }
    while let Some(item) = queue.pop() {
        if !written.insert(item.item_ref()) {
            continue;
        }
        for rel in related(&item) {
            match fetch(&rel.target) {
                Some(found) if selection.includes_related(&found).is_ok() => queue.push(found),
                _ => {}
            }
        }
        writer.add_item(&item).unwrap();
    }
    let names: BTreeSet<String> = written.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "configmaps shop/settings".to_string(),
            "namespaces shop".to_string(),
            "persistentvolumeclaims shop/data-web-0".to_string(),
            "persistentvolumes pv-1".to_string(),
            "pods shop/web-0".to_string(),
        ]),
        "the PV comes as related; the labelled, other-namespace and node objects stay out"
    );
    writer.finish().unwrap()
}

#[test]
fn a_namespace_backed_up_and_restored_under_another_name() {
    let archive = backup();

    let modifiers = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumeclaims}\n  \
                     patches: [{operation: replace, path: /spec/storageClassName, value: premium}]\n";
    let mut options =
        RestoreOptions { restore_name: "r1".into(), backup_name: "b1".into(), restore_pvs: true, ..Default::default() };
    options.namespace_mapping = BTreeMap::from([("shop".into(), "shop-copy".into())]);
    options.existing_resource_policy = ExistingResourcePolicy::None;
    options.resource_modifiers = Some(ModifierSource {
        config_map: "mods".into(),
        data: BTreeMap::from([("rules.yaml".into(), modifiers.into())]),
    });
    let plan = plan(&options, &discovery()).unwrap();

    // The target cluster already has a different `settings`.
    let live_settings = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop-copy"}, "data": {"mode": "staging"}});

    let extracted = ArchiveReader::new(archive.as_slice()).unwrap().extract_to_temp().unwrap();
    let resources = extracted.resources().unwrap();
    let order = by_priority(resources.iter().map(|r| r.group_resource.clone()), &plan.priorities);
    let mut outcome = Outcome::default();
    let mut restored_volumes = BTreeSet::new();
    let mut created = Vec::new();
    for group_resource in order {
        let resource = resources.iter().find(|r| r.group_resource == group_resource).unwrap();
        for location in extracted.items(resource).unwrap() {
            let item = extracted.read(&location).unwrap();
            if plan.includes_item(&item).is_err() {
                continue;
            }
            if item.is("", "persistentvolumes") {
                match decide_volume(&item, plan.restore_pvs, false) {
                    VolumeDecision::Restore => restored_volumes.insert(item.name.clone()),
                    VolumeDecision::Reprovision { .. } => continue,
                };
            }
            let ctx = plan.transform_context(&restored_volumes);
            let mut out = transform(item, &ctx);
            out.warnings.into_iter().for_each(|w| outcome.warn(out.item.namespace.as_deref(), w));
            if let Some(modifiers) = &plan.modifiers {
                modifiers
                    .apply(&mut out.item)
                    .into_iter()
                    .for_each(|e| outcome.error(out.item.namespace.as_deref(), e));
            }
            if out.item.item_ref().to_string() == "configmaps shop-copy/settings" {
                match compare(&out.item, &live_settings, plan.existing_resource_policy) {
                    ExistingAction::Skip { warning } => outcome.warn(out.item.namespace.as_deref(), warning),
                    other => panic!("expected a skip, got {other:?}"),
                }
                continue;
            }
            created.push(out.item);
        }
    }

    let names: Vec<String> = created.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        vec![
            "namespaces shop-copy",
            "persistentvolumes pv-1",
            "persistentvolumeclaims shop-copy/data-web-0",
            "pods shop-copy/web-0"
        ]
    );
    let [ns, pv, pvc, pod] = &created[..] else { unreachable!() };
    assert_eq!(ns.object["metadata"]["labels"]["stowage.io/restore-name"], "r1");
    assert_eq!(pv.object["spec"]["claimRef"], json!({"namespace": "shop-copy", "name": "data-web-0"}));
    assert_eq!(pvc.object["spec"], json!({"volumeName": "pv-1", "storageClassName": "premium"}));
    assert!(pod.object["spec"].get("nodeName").is_none() && pod.object.get("status").is_none());
    assert!(pod.object["metadata"].get("uid").is_none());
    assert_eq!(outcome.warning_count(), 1);
    assert!(outcome.warnings["shop-copy"][0].contains("first at /data/mode"), "{outcome:?}");
    assert_eq!(outcome.error_count(), 0);
}

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::builders::ItemBuilder;

fn rules(yaml: &str) -> ResourceModifiers {
    ResourceModifiers::parse(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn error(yaml: &str) -> String {
    ResourceModifiers::parse(yaml).unwrap_err().to_string()
}

#[test]
fn velero_documentation_example_changes_the_storage_class() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions:
     groupResource: persistentvolumeclaims
     resourceNameRegex: "^mysql.*$"
     namespaces:
     - bar
     - foo
     labelSelector:
        matchLabels:
           foo: bar
  patches:
  - operation: replace
    path: "/spec/storageClassName"
    value: "premium"
  - operation: remove
    path: "/metadata/labels/test"
"#,
    );
    let claim = |ns: &str, name: &str| {
        ItemBuilder::pvc(ns, name)
            .label("foo", "bar")
            .label("test", "x")
            .set("/spec/storageClassName", json!("standard"))
            .build()
    };
    let mut matching = claim("foo", "mysql-data");
    assert!(modifiers.apply(&mut matching).is_empty());
    assert_eq!(matching.object["spec"]["storageClassName"], "premium");
    assert_eq!(matching.object["metadata"]["labels"], json!({"foo": "bar"}));
    for (ns, name) in [("other", "mysql-data"), ("foo", "postgres-data")] {
        let mut untouched = claim(ns, name);
        modifiers.apply(&mut untouched);
        assert_eq!(untouched.object["spec"]["storageClassName"], "standard", "{ns}/{name}");
    }
}

#[test]
fn matches_gate_a_rule_on_field_values() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    matches:
    - path: /spec/replicas
      value: "3"
  patches:
  - {operation: replace, path: /spec/replicas, value: "1"}
"#,
    );
    let mut three = ItemBuilder::deployment("shop", "web").set("/spec/replicas", json!(3)).build();
    let mut five = ItemBuilder::deployment("shop", "api").set("/spec/replicas", json!(5)).build();
    modifiers.apply(&mut three);
    modifiers.apply(&mut five);
    assert_eq!(
        (three.object["spec"]["replicas"].clone(), five.object["spec"]["replicas"].clone()),
        (json!(1), json!(5))
    );
}

#[test]
fn group_resource_globs_use_dots_as_separators() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: "*"}
  mergePatches:
  - patchData: |
      metadata:
        annotations:
          touched: core
- conditions: {groupResource: "*.apps"}
  mergePatches:
  - patchData: '{"metadata": {"annotations": {"touched": "apps"}}}'
"#,
    );
    let mut pod = ItemBuilder::pod("shop", "web").build();
    let mut deploy = ItemBuilder::deployment("shop", "web").build();
    modifiers.apply(&mut pod);
    modifiers.apply(&mut deploy);
    assert_eq!(pod.annotation("touched"), Some("core"));
    assert_eq!(deploy.annotation("touched"), Some("apps"));
}

#[test]
fn rules_match_the_object_as_it_was_before_any_rule() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, labelSelector: {matchLabels: {stage: one}}}
  patches: [{operation: replace, path: /metadata/labels/stage, value: two}]
- conditions: {groupResource: configmaps, labelSelector: {matchLabels: {stage: two}}}
  patches: [{operation: add, path: /data/second, value: ran}]
"#,
    );
    let mut cm = ItemBuilder::config_map("shop", "c").label("stage", "one").build();
    modifiers.apply(&mut cm);
    assert_eq!(cm.label("stage"), Some("two"));
    assert!(cm.object.pointer("/data/second").is_none(), "the second rule saw stage=one");
}

#[test]
fn a_failing_test_operation_skips_the_rule_and_other_failures_are_reported() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps}
  patches:
  - {operation: test, path: /data/mode, value: safe}
  - {operation: add, path: /data/checked, value: "yes"}
- conditions: {groupResource: configmaps}
  patches:
  - {operation: add, path: /data/first, value: "1"}
  - {operation: remove, path: /data/missing}
"#,
    );
    let mut cm = ItemBuilder::config_map("shop", "c").set("/data/mode", json!("unsafe")).build();
    let errors = modifiers.apply(&mut cm);
    assert!(cm.object.pointer("/data/checked").is_none());
    assert!(cm.object.pointer("/data/first").is_none(), "a failed rule leaves the object as it was");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("configmaps shop/c: resource modifier rule 1 failed:"), "{}", errors[0]);
}

#[test]
fn strategic_patches_merge_containers_by_name() {
    let modifiers = rules(
        r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: pods, namespaces: [shop]}
  strategicPatches:
  - patchData: |
      {"spec": {"containers": [{"name": "main", "image": "app:2"}]}}
"#,
    );
    let mut pod =
        ItemBuilder::pod("shop", "web").set("/spec/containers/-", json!({"name": "side", "image": "proxy:1"})).build();
    assert!(modifiers.apply(&mut pod).is_empty());
    assert_eq!(
        pod.object["spec"]["containers"],
        json!([{"name": "main", "image": "app:2"}, {"name": "side", "image": "proxy:1"}])
    );
}

#[test]
fn strategic_patches_on_custom_resources_are_reported() {
    let modifiers = rules(
        "version: v1\nresourceModifierRules:\n- conditions: {groupResource: widgets.example.com}\n  strategicPatches: [{patchData: '{}'}]\n",
    );
    let mut widget = ItemBuilder::widget("shop", "w").build();
    let errors = modifiers.apply(&mut widget);
    assert!(errors[0].contains("use mergePatches"), "{errors:?}");
}

#[test]
fn a_patch_that_renames_updates_the_identity() {
    let modifiers = rules("version: v1\nresourceModifierRules:\n- conditions: {groupResource: configmaps}\n  patches: [{operation: replace, path: /metadata/name, value: renamed}]\n");
    let mut cm = ItemBuilder::config_map("shop", "c").build();
    modifiers.apply(&mut cm);
    assert_eq!(cm.name, "renamed");
}

#[test]
fn errors_name_the_rule_and_the_field() {
    assert_eq!(
        error("version: v2\nresourceModifierRules: []"),
        "resource modifiers: version is Some(\"v2\"); the supported version is v1"
    );
    assert_eq!(
        error("version: v1\nresourceModifierRules: []"),
        "resource modifiers: resourceModifierRules is missing or empty"
    );
    let base = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: replace, path: /a, value: x}]\n";
    assert_eq!(
        error(&format!("{base}- conditions: {{groupResource: pods}}\n  patches: [{{operation: upsert, path: /a}}]\n")),
        "resource modifiers, rule 1: patches[0].operation: unsupported operation \"upsert\"; use add, remove, replace, copy, move, test"
    );
    let typo = error(&format!("{base}- conditions: {{groupResource: pods}}\n  patchs: []\n"));
    assert!(typo.starts_with("resource modifiers, rule 1: unknown field `patchs`"), "{typo}");
    let both = error("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: remove, path: /a}]\n  mergePatches: [{patchData: '{}'}]\n");
    assert!(both.ends_with("rule 0: only one of patches, mergePatches and strategicPatches can be given"), "{both}");
    let none = error("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n");
    assert!(none.ends_with("rule 0: has no patches; give patches, mergePatches or strategicPatches"), "{none}");
    let regex = error("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, resourceNameRegex: '(['}\n  patches: [{operation: remove, path: /a}]\n");
    assert!(regex.contains("rule 0: conditions.resourceNameRegex:"), "{regex}");
    let pointer = error("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: remove, path: spec}]\n");
    assert!(pointer.contains("rule 0: patches[0]:"), "{pointer}");
}

#[test]
fn a_config_map_holds_exactly_one_document() {
    let doc = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: remove, path: /a}]\n";
    let one = BTreeMap::from([("rules.yaml".to_string(), doc.to_string())]);
    assert_eq!(ResourceModifiers::from_config_map("mods", &one).unwrap().len(), 1);
    let two = BTreeMap::from([("a".to_string(), doc.to_string()), ("b".to_string(), doc.to_string())]);
    let err = ResourceModifiers::from_config_map("mods", &two).unwrap_err().to_string();
    assert_eq!(err, "resource modifiers in ConfigMap \"mods\": the ConfigMap has 2 data keys; put the rules document under exactly one");
    let bad = BTreeMap::from([("x".to_string(), "version: v1".to_string())]);
    let err = ResourceModifiers::from_config_map("mods", &bad).unwrap_err();
    assert_eq!(err.config_map.as_deref(), Some("mods"));
}

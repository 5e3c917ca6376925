use super::*;
use serde_json::json;
use stowage_api::hooks::{BackupHooks, RestoreHooks};

fn pod(ns: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "mariadb", "image": "mariadb"}, {"name": "sidecar", "image": "busybox"}]}})
}

fn backup_hooks(yaml: &str) -> BackupHooks {
    serde_yaml::from_str(yaml).unwrap()
}

fn restore_hooks(yaml: &str) -> RestoreHooks {
    serde_yaml::from_str(yaml).unwrap()
}

fn no_specs() -> BackupHookSpecs {
    BackupHookSpecs::compile(&BackupHooks::default()).unwrap()
}

#[test]
fn velero_annotations_work_and_stowage_keys_win() {
    let p = pod("shop", json!({}), json!({
        "pre.hook.backup.velero.io/command": "[\"/bin/sh\", \"-c\", \"mysqldump > /data/dump.sql\"]",
        "pre.hook.backup.velero.io/container": "sidecar",
        "post.hook.backup.velero.io/command": "[\"rm\", \"/data/dump.sql\"]",
        "post.hook.backup.stowage.io/command": "[\"true\"]",
    }));
    let hooks = no_specs().for_pod(&p);
    assert!(hooks.warnings.is_empty(), "{:?}", hooks.warnings);
    assert_eq!(hooks.pre.len(), 1);
    assert_eq!(hooks.pre[0].command, ["/bin/sh", "-c", "mysqldump > /data/dump.sql"]);
    assert_eq!(hooks.pre[0].container, "sidecar");
    assert_eq!(hooks.pre[0].on_error, HookErrorMode::Fail, "backup hooks fail by default");
    assert_eq!(hooks.pre[0].timeout, Duration::from_secs(30));
    assert_eq!(hooks.pre[0].source, "annotation");
    assert_eq!(hooks.post[0].command, ["true"], "Stowage's spelling wins over Velero's");
    assert_eq!(hooks.post[0].container, "mariadb", "the first container by default");
}

#[test]
fn commands_are_json_lists_or_one_word() {
    assert_eq!(parse_command("[\"a\", \"b c\"]").unwrap(), ["a", "b c"]);
    assert_eq!(parse_command(" /usr/bin/sync ").unwrap(), ["/usr/bin/sync"]);
    assert!(parse_command("[\"a\",").unwrap_err().contains("not a JSON list"));
    assert!(parse_command("[]").is_err());
    assert!(parse_command("").is_err());
}

#[test]
fn malformed_annotations_are_warnings_naming_the_pod_and_key() {
    let p = pod("shop", json!({}), json!({
        "pre.hook.backup.velero.io/command": "[\"/bin/sh\", \"-c\"",
        "post.hook.backup.stowage.io/command": "[\"true\"]",
        "post.hook.backup.stowage.io/timeout": "soon",
        "post.hook.backup.stowage.io/on-error": "Ignore",
    }));
    let hooks = no_specs().for_pod(&p);
    assert!(hooks.pre.is_empty(), "a command that does not parse is not run");
    assert_eq!(hooks.post.len(), 1);
    assert_eq!(hooks.post[0].timeout, DEFAULT_TIMEOUT);
    assert_eq!(hooks.post[0].on_error, HookErrorMode::Fail);
    assert_eq!(hooks.warnings.len(), 3, "{:?}", hooks.warnings);
    assert!(hooks.warnings[0].contains("pod shop/db-0") && hooks.warnings[0].contains("pre.hook.backup.velero.io/command"));
    assert!(hooks.warnings.iter().any(|w| w.contains("post.hook.backup.stowage.io/timeout=\"soon\"")), "{:?}", hooks.warnings);
    assert!(hooks.warnings.iter().any(|w| w.contains("neither Continue nor Fail")), "{:?}", hooks.warnings);
}

#[test]
fn a_bare_number_of_seconds_is_a_timeout() {
    assert_eq!(parse_timeout("300").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_timeout("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_timeout("1m30s").unwrap(), Duration::from_secs(90));
    assert!(parse_timeout("five minutes").is_err());
    let p = pod("shop", json!({}), json!({"pre.hook.backup.velero.io/command": "sync", "pre.hook.backup.velero.io/timeout": "300"}));
    assert_eq!(no_specs().for_pod(&p).pre[0].timeout, Duration::from_secs(300));
}

#[test]
fn spec_hooks_select_pods_and_an_annotation_replaces_them_per_phase() {
    let specs = BackupHookSpecs::compile(&backup_hooks(r#"
resources:
  - name: db
    includedNamespaces: ["shop*"]
    labelSelector: {matchLabels: {app: db}}
    pre:
      - exec: {command: ["/bin/sh", "-c", "flush"], timeout: 2m, onError: Continue}
      - exec: {container: sidecar, command: ["lock"]}
    post:
      - exec: {command: ["unlock"]}
  - name: not-pods
    includedResources: [deployments]
    pre:
      - exec: {command: ["never"]}
"#))
    .unwrap();
    let db = specs.for_pod(&pod("shop-eu", json!({"app": "db"}), json!({})));
    let pre: Vec<_> = db.pre.iter().map(|h| (h.container.as_str(), h.command.join(" "), h.on_error, h.timeout.as_secs())).collect();
    assert_eq!(
        pre,
        vec![
            ("mariadb", "/bin/sh -c flush".to_string(), HookErrorMode::Continue, 120),
            ("sidecar", "lock".to_string(), HookErrorMode::Fail, 30)
        ]
    );
    assert_eq!(db.pre[0].source, "spec db");
    assert_eq!(db.post[0].command, ["unlock"]);
    assert!(specs.for_pod(&pod("shop", json!({"app": "web"}), json!({}))).is_empty(), "label selector");
    assert!(specs.for_pod(&pod("bank", json!({"app": "db"}), json!({}))).is_empty(), "namespace filter");

    let annotated = specs.for_pod(&pod("shop", json!({"app": "db"}), json!({"pre.hook.backup.stowage.io/command": "[\"own\"]"})));
    assert_eq!(annotated.pre.len(), 1);
    assert_eq!(annotated.pre[0].command, ["own"]);
    assert_eq!(annotated.post[0].command, ["unlock"], "only the annotated phase is replaced");
}

#[test]
fn malformed_spec_hooks_fail_validation_with_the_field() {
    let errors = BackupHookSpecs::compile(&backup_hooks(r#"
resources:
  - name: bad
    labelSelector: {matchExpressions: [{key: app, operator: Like}]}
    pre:
      - exec: {command: [], timeout: soon}
"#))
    .err()
    .unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("spec.hooks.resources[0] (\"bad\").pre[0].exec.command is empty"), "{errors:?}");
    assert!(errors[1].contains("pre[0].exec.timeout") && errors[1].contains("soon"), "{errors:?}");
    assert!(errors[2].contains("labelSelector") && errors[2].contains("Like"), "{errors:?}");
}

#[test]
fn restore_exec_hooks_continue_by_default_and_honour_their_settings() {
    let specs = RestoreHookSpecs::compile(&restore_hooks(r#"
resources:
  - name: load
    postHooks:
      - init:
          initContainers: [{name: restore-hook-init, image: busybox, command: [sh, -c, "echo init"]}]
      - exec: {container: sidecar, command: [load], execTimeout: 2m, waitTimeout: 5m, waitForReady: true, maxRetries: 2}
"#))
    .unwrap();
    let hooks = specs.for_pod(&pod("shop", json!({}), json!({})));
    assert_eq!(hooks.init_containers.len(), 1);
    assert_eq!(hooks.init_containers[0]["name"], "restore-hook-init");
    let h = &hooks.exec[0];
    assert_eq!((h.exec.container.as_str(), h.exec.on_error, h.exec.timeout.as_secs()), ("sidecar", HookErrorMode::Continue, 120));
    assert_eq!((h.wait_timeout, h.wait_for_ready, h.max_retries), (Some(Duration::from_secs(300)), true, 2));

    let annotated = specs.for_pod(&pod("shop", json!({}), json!({
        "post.hook.restore.velero.io/command": "[\"/bin/sh\", \"-c\", \"mysql < /data/dump.sql\"]",
        "post.hook.restore.velero.io/wait-for-ready": "true",
        "post.hook.restore.velero.io/exec-timeout": "90",
        "init.hook.restore.velero.io/container-image": "busybox",
        "init.hook.restore.velero.io/container-name": "warm-up",
        "init.hook.restore.velero.io/command": "[\"sh\", \"-c\", \"true\"]",
    })));
    assert!(annotated.warnings.is_empty(), "{:?}", annotated.warnings);
    assert_eq!(annotated.exec.len(), 1, "the annotation replaces the spec's exec hooks");
    let h = &annotated.exec[0];
    assert_eq!((h.exec.container.as_str(), h.exec.on_error, h.exec.timeout.as_secs()), ("mariadb", HookErrorMode::Continue, 90));
    assert_eq!((h.wait_timeout, h.wait_for_ready, h.max_retries), (None, true, 0));
    assert_eq!(annotated.init_containers, vec![json!({"name": "warm-up", "image": "busybox", "command": ["sh", "-c", "true"]})]);

    let no_image = specs.for_pod(&pod("shop", json!({}), json!({"init.hook.restore.stowage.io/command": "[\"true\"]"})));
    assert!(no_image.warnings[0].contains("init.hook.restore.stowage.io/container-image"), "{:?}", no_image.warnings);
    assert_eq!(no_image.init_containers[0]["name"], "restore-hook-init", "a malformed annotation is ignored: the spec's hook applies");
    let errors = RestoreHookSpecs::compile(&restore_hooks("resources:\n  - name: x\n    postHooks:\n      - {}\n")).err().unwrap();
    assert!(errors[0].contains("give exactly one of exec and init"), "{errors:?}");
}

#[test]
fn init_containers_go_after_the_restore_helper() {
    let mut p = json!({"spec": {"initContainers": [{"name": "restore-wait"}, {"name": "own-init"}], "containers": []}});
    add_init_containers(&mut p, &[json!({"name": "hook-a"}), json!({"name": "hook-b"})], "restore-wait");
    let names: Vec<&str> = p["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["restore-wait", "hook-a", "hook-b", "own-init"]);
    let mut bare = json!({"spec": {"containers": []}});
    add_init_containers(&mut bare, &[json!({"name": "hook-a"})], "restore-wait");
    assert_eq!(bare["spec"]["initContainers"][0]["name"], "hook-a");
}

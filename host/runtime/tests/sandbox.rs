//! The sandbox: deadlines, memory caps, traps, denied capabilities, scopes, quarantine.

mod fixtures;

use fixtures::*;
use serde_json::json;
use std::time::{Duration, Instant};
use stowage_runtime::*;

fn item_action(name: &str, mode: &str, extra: &str) -> ExtensionSource {
    let config = format!("parameters:\n  mode: {mode}\n{extra}");
    source("stowage", name, ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), &config)
}

fn rhai_action(namespace: &str, name: &str, file: &str, config: &str) -> ExtensionSource {
    let text = script(&format!("fixtures/rhai/{file}"));
    source(namespace, name, ExtensionKind::ItemAction, Module::Rhai(text), config)
}

#[test]
fn wasm_transform_runs() {
    let registry = registry();
    registry.upsert(item_action("annotate", "annotate", "")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert!(outcome.issues.is_empty(), "{:?}", outcome.issues);
    assert_eq!(annotation(&outcome.item, "fixture/touched").as_deref(), Some("yes"));
    assert_eq!(outcome.item.object["spec"]["containers"][0]["image"], "registry.example.com/library/app0:1.0");
}

#[test]
fn endless_loop_is_stopped_at_its_deadline() {
    let registry = registry();
    registry.upsert(item_action("spinner", "loop", "timeoutSeconds: 1\n")).unwrap();
    let started = Instant::now();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| {
        let first = s.item_actions(pod("shop", "a"));
        // The trapped instance is replaced: the next item gets a fresh one, stopped again.
        let second = s.item_actions(pod("shop", "b"));
        assert_eq!(second.issues[0].message, "extension stowage/spinner on Pod shop/b: timed out after 1s");
        first
    });
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    let issue = &outcome.issues[0];
    assert_eq!(issue.extension, ExtensionId::new("stowage", "spinner"));
    assert_eq!(issue.message, "extension stowage/spinner on Pod shop/a: timed out after 1s");
    assert!(!issue.fatal);
    assert_eq!(outcome.item, pod("shop", "a"), "a failed action leaves the item as it was");
}

#[test]
fn memory_bomb_is_capped() {
    let registry = registry();
    registry.upsert(item_action("bomb", "memory-bomb", "memoryLimit: 8Mi\nonError: Fail\n")).unwrap();
    registry.upsert(item_action("zz-after", "annotate", "")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(outcome.issues.len(), 1, "{:?}", outcome.issues);
    let issue = &outcome.issues[0];
    assert!(issue.message.contains("exceeded its memory limit of 8Mi"), "{}", issue.message);
    assert!(issue.fatal);
    // The host and the next extension carry on.
    assert_eq!(annotation(&outcome.item, "fixture/touched").as_deref(), Some("yes"));
}

#[test]
fn panic_and_error_become_item_issues() {
    let registry = registry();
    registry.upsert(item_action("panics", "panic", "onError: Fail\n")).unwrap();
    registry.upsert(item_action("refuses", "error", "")).unwrap();
    let set = registry.snapshot();
    let outcome = with_session(&set, RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    let messages: Vec<_> = outcome.issues.iter().map(|i| (i.message.as_str(), i.fatal)).collect();
    assert_eq!(messages.len(), 2);
    assert!(messages[0].0.starts_with("extension stowage/panics on Pod shop/web: trapped"), "{}", messages[0].0);
    assert!(messages[0].1);
    assert_eq!(messages[1], ("extension stowage/refuses on Pod shop/web: fixture refuses web", false));
}

#[test]
fn denied_capability_is_an_error_the_extension_sees_and_is_recorded() {
    let registry = registry();
    let config = "parameters:\n  mode: kube-get\n  target-kind: Secret\n  target-namespace: shop\n  target-name: db\n";
    registry
        .upsert(source("stowage", "reader", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), config))
        .unwrap();
    let host = RecordingHost::new();
    let (outcome, report) = with_session(&registry.snapshot(), host.clone(), |s| (s.item_actions(pod("shop", "web")), s.report()));
    let seen = annotation(&outcome.item, "fixture/kube-get").unwrap();
    assert_eq!(seen, "denied: kube-read.get Secret shop/db denied: capability kubeRead does not include Secret");
    assert!(host.calls().is_empty(), "the host was called: {:?}", host.calls());
    let record = &report.extensions[0];
    assert_eq!(record.counts.denied, 1);
    assert_eq!(record.items[0].denied[0].call, "kube-read.get");
    assert_eq!(record.items[0].denied[0].target, "Secret shop/db");
}

#[test]
fn granted_capability_reaches_the_host() {
    let registry = registry();
    let config = "capabilities:\n  kubeRead: [secrets]\nparameters:\n  mode: kube-get\n  target-kind: Secret\n  target-namespace: shop\n  target-name: db\n";
    registry
        .upsert(source("stowage", "reader", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), config))
        .unwrap();
    let host = RecordingHost::new();
    let outcome = with_session(&registry.snapshot(), host.clone(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(annotation(&outcome.item, "fixture/kube-get").as_deref(), Some("found"));
    assert_eq!(host.calls(), vec!["get Secret shop/db"]);
}

#[test]
fn namespaced_extension_may_not_touch_another_namespace() {
    let policy = Policy {
        server_namespace: "stowage".into(),
        namespaced_capabilities: Capabilities { kube_read: vec!["configmaps".into()], kube_write: vec!["configmaps".into()], ..Default::default() },
    };
    let registry = Registry::new(shared_runtime(), policy);
    let config = |target: &str| {
        format!("capabilities:\n  kubeRead: [configmaps]\n  kubeWrite: [configmaps]\nparameters:\n  target-namespace: {target}\n  target-name: settings\n")
    };
    // The same script twice in namespace shop: one reaching into bank, one staying home.
    registry.upsert(rhai_action("shop", "nosy", "kube-calls.rhai", &config("bank"))).unwrap();
    registry.upsert(rhai_action("shop", "tidy", "kube-calls.rhai", &config("shop"))).unwrap();
    let host = RecordingHost::new();
    let volume = Item::from_object(json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}})).unwrap();
    let (own, foreign, cluster_scoped, report) = with_session(&registry.snapshot(), host.clone(), |s| {
        (s.item_actions(pod("shop", "web")), s.item_actions(pod("bank", "vault")), s.item_actions(volume.clone()), s.report())
    });
    assert_eq!(cluster_scoped.item, volume);
    // Items of other namespaces are not even given to them.
    assert_eq!(foreign.item, pod("bank", "vault"));
    assert!(foreign.issues.is_empty());
    let nosy_saw = |key| annotation(&own.item, key).unwrap();
    // "tidy" ran last (by name) and overwrote the annotations; look at the report for "nosy".
    assert_eq!(nosy_saw("fixture/kube-get"), "found");
    let nosy = report.extensions.iter().find(|r| r.id.name == "nosy").unwrap();
    assert_eq!((nosy.counts.calls, nosy.counts.denied), (1, 2), "called for shop/web only");
    let reasons: Vec<_> = nosy.items[0].denied.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, vec!["namespace bank is outside this extension's namespace shop"; 2]);
    assert_eq!(
        host.calls(),
        vec!["get ConfigMap shop/settings", "patch ConfigMap shop/settings {\"metadata\":{\"labels\":{\"patched\":\"true\"}}}"]
    );
}

#[test]
fn namespaced_extension_capabilities_are_capped() {
    let registry = registry();
    let config = "capabilities:\n  log: true\n  kubeRead: [secrets]\n";
    let loaded = registry.upsert(rhai_action("shop", "greedy", "kube-calls.rhai", config)).unwrap();
    assert_eq!(loaded.scope, Scope::Namespace("shop".into()));
    assert!(loaded.capabilities.log);
    assert!(loaded.capabilities.kube_read.is_empty());
    let state = &registry.states()[0];
    assert_eq!(state.dropped_capabilities, vec!["capabilities.kubeRead: secrets not allowed for namespaced extensions"]);
}

#[test]
fn invalid_extensions_are_quarantined_with_a_clear_message() {
    let registry = registry();
    registry.upsert(item_action("good", "annotate", "")).unwrap();
    let bad_config = registry.upsert(item_action("typo", "annotate", "timeoutSecs: 3\n")).unwrap_err();
    assert!(bad_config.to_string().starts_with("extension stowage/typo: config.yaml: timeoutSecs: unknown key, expected one of"), "{bad_config}");
    let bad_limit = registry.upsert(item_action("greedy", "annotate", "memoryLimit: 64GB\n")).unwrap_err();
    assert!(bad_limit.to_string().contains("memoryLimit: \"64GB\" is not a memory quantity"), "{bad_limit}");
    let wrong_world = source("stowage", "hook-as-action", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-hook")), "");
    let wrong_world = registry.upsert(wrong_world).unwrap_err();
    assert!(wrong_world.to_string().contains("does not implement the item-action world"), "{wrong_world}");
    let not_wasm = source("stowage", "junk", ExtensionKind::ItemAction, Module::Wasm(b"MZ\x90\0".to_vec()), "");
    assert!(registry.upsert(not_wasm).unwrap_err().to_string().contains("not a valid component"));
    let bad_script = rhai_action("stowage", "syntax", "throws.rhai", "");
    let bad_script = ExtensionSource { module: Module::Rhai("fn execute(ctx, item) { item.".into()), ..bad_script };
    assert!(registry.upsert(bad_script).unwrap_err().to_string().starts_with("extension stowage/syntax: script.rhai:"));
    let no_entry = ExtensionSource { module: Module::Rhai("fn other() {}".into()), ..rhai_action("stowage", "empty", "throws.rhai", "") };
    assert_eq!(
        registry.upsert(no_entry).unwrap_err().to_string(),
        "extension stowage/empty: script.rhai does not define fn execute(ctx, item), which a item-action needs"
    );

    let states = registry.states();
    let quarantined: Vec<_> = states.iter().filter(|s| s.state == State::Quarantined).map(|s| s.id.name.as_str()).collect();
    assert_eq!(quarantined, vec!["empty", "greedy", "hook-as-action", "junk", "syntax", "typo"]);
    let typo = states.iter().find(|s| s.id.name == "typo").unwrap();
    assert!(typo.error.as_deref().unwrap().contains("timeoutSecs"));
    assert!(typo.digest.is_some());
    // Only the good one runs.
    let names: Vec<_> = registry.snapshot().iter().map(|e| e.id.name.clone()).collect();
    assert_eq!(names, vec!["good"]);
}

#[test]
fn additional_items_and_order() {
    let registry = registry();
    registry.upsert(item_action("adds", "additional", "order: 1\n")).unwrap();
    registry.upsert(item_action("b-second", "annotate", "order: 2\nparameters:\n  mode: annotate\n  value: second\n")).ok();
    registry.upsert(rhai_action("stowage", "a-third", "annotate.rhai", "order: 3\nparameters:\n  value: third\n")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(outcome.additional.len(), 1);
    assert_eq!(outcome.additional[0].id.to_string(), "ConfigMap shop/web-extra");
    assert_eq!(annotation(&outcome.item, "fixture/touched").as_deref(), Some("third"));
}

#[test]
fn hooks_run_in_fresh_instances_with_checked_capabilities() {
    let registry = registry();
    let config = "capabilities:\n  log: true\n  exec: [{container: db}]\n  kubeRead: [pods]\nparameters:\n  container: db\n  command: fsfreeze --freeze /data\n";
    registry.upsert(source("stowage", "freeze", ExtensionKind::Hook, Module::Wasm(wasm("fixture-hook")), config)).unwrap();
    let host = RecordingHost::new();
    let target = HookTarget::new(ObjectRef { version: "v1".into(), kind: "Pod".into(), namespace: "shop".into(), name: "db-0".into(), ..Default::default() });
    let id = ExtensionId::new("stowage", "freeze");
    let (pre, post, restore, report) = with_session(&registry.snapshot(), host.clone(), |s| {
        (
            s.run_hook(&id, HookPhase::PreBackup, &target, &Default::default()),
            s.run_hook(&id, HookPhase::PostBackup, &target, &Default::default()),
            s.run_hook(&id, HookPhase::PostRestore, &target, &Default::default()),
            s.report(),
        )
    });
    pre.unwrap();
    let post = post.unwrap_err();
    assert_eq!(
        post.message,
        "extension stowage/freeze on Pod shop/db-0: kube-write.scale Pod shop/db-0 denied: capability kubeWrite does not include Pod"
    );
    restore.unwrap();
    assert_eq!(host.calls(), vec!["exec shop/db-0 db fsfreeze --freeze /data", "get Pod shop/db-0"]);
    let logs = host.logs.lock().unwrap().clone();
    assert_eq!(logs, vec!["stowage/freeze Info pre-backup on db-0: done", "stowage/freeze Info post-restore: db-0 found=true"]);
    assert_eq!(report.extensions[0].counts.calls, 3);
}

/// A pod target with one claim mounted by two containers.
fn target_with_volumes() -> HookTarget {
    let mut target = HookTarget::new(ObjectRef { version: "v1".into(), kind: "Pod".into(), namespace: "shop".into(), name: "db-0".into(), ..Default::default() });
    let mount = |container: &str, path: &str| VolumeMount { container: container.into(), path: path.into(), read_only: false };
    target.volumes = vec![TargetVolume {
        pod: "db-0".into(),
        name: "data".into(),
        claim: "data-db-0".into(),
        mounts: vec![mount("db", "/var/lib/db"), mount("freezer", "/frozen/data")],
    }];
    target
}

#[test]
fn a_component_built_against_wit_0_1_0_still_runs_its_hooks() {
    let registry = registry();
    let config = "capabilities:\n  log: true\n  exec: [{container: db}]\n  kubeRead: [pods]\nparameters:\n  container: db\n";
    let old = source("stowage", "old", ExtensionKind::Hook, Module::Wasm(old_wasm("fixture-hook-0.1.0")), config);
    registry.upsert(old).unwrap();
    let host = RecordingHost::new();
    let id = ExtensionId::new("stowage", "old");
    let (pre, restore) = with_session(&registry.snapshot(), host.clone(), |s| {
        (s.run_hook(&id, HookPhase::PreBackup, &target_with_volumes(), &Default::default()), s.run_hook(&id, HookPhase::PostRestore, &target_with_volumes(), &Default::default()))
    });
    pre.unwrap();
    restore.unwrap();
    assert_eq!(host.calls(), vec!["exec shop/db-0 db sync", "get Pod shop/db-0"]);
}

#[test]
fn a_hook_sees_its_targets_volumes_and_quiesces_through_the_host() {
    let registry = registry();
    let config = "capabilities:\n  log: true\n  exec: [{container: db}, {container: freezer}]\n  kubeWrite: [statefulsets.apps]\nparameters:\n  container: db\n  freeze: freezer\n";
    registry.upsert(source("stowage", "quiet", ExtensionKind::Hook, Module::Wasm(wasm("fixture-hook")), config)).unwrap();
    let host = RecordingHost::new();
    let id = ExtensionId::new("stowage", "quiet");
    let workload = HookTarget::new(ObjectRef { group: "apps".into(), version: "v1".into(), kind: "StatefulSet".into(), namespace: "shop".into(), name: "db".into() });
    let zero = [("scale-to-zero".to_string(), "true".to_string()), ("command".to_string(), "true".to_string())].into();
    let (pre, scaled, post) = with_session(&registry.snapshot(), host.clone(), |s| {
        (
            s.run_hook(&id, HookPhase::PreBackup, &target_with_volumes(), &Default::default()),
            s.run_hook(&id, HookPhase::PreBackup, &workload, &zero),
            // Quiescing belongs to pre-backup: a post-backup call may not freeze.
            s.run_hook(&id, HookPhase::PostBackup, &target_with_volumes(), &[("replicas".to_string(), "1".to_string())].into()),
        )
    });
    pre.unwrap();
    scaled.unwrap();
    assert!(post.unwrap_err().message.contains("kubeWrite does not include Pod"));
    assert_eq!(
        host.calls(),
        vec!["exec shop/db-0 db sync", "freeze shop/db-0 freezer /frozen/data", "exec shop/db db true", "scale-to-zero StatefulSet.apps shop/db"]
    );
}

#[test]
fn quiescing_is_checked_like_every_host_call() {
    let cap = Capabilities {
        log: true,
        exec: vec![ExecGrant { container: "*".into() }],
        kube_write: vec!["*".into()],
        ..Default::default()
    };
    let registry = Registry::new(shared_runtime(), Policy::with_namespaced_capabilities("stowage", cap));
    let script = r#"
        fn pre_backup(ctx, target) {
            let seen = volumes();
            log("info", `volumes: ${seen.len()} ${seen[0].claim} ${seen[0].mounts[1].path}`);
            if ctx.parameters.what == "freeze-db" { freeze(#{namespace: "shop", pod: "db-0", container: "db", path: "/var/lib/db"}); }
            if ctx.parameters.what == "escape" { freeze(#{namespace: "shop", pod: "db-0", container: "freezer", path: "/frozen/../etc"}); }

            if ctx.parameters.what == "daemonset" { scale_to_zero(#{group: "apps", version: "v1", kind: "DaemonSet", namespace: "shop", name: "agent"}); }
            if ctx.parameters.what == "other-namespace" { scale_to_zero(#{group: "apps", version: "v1", kind: "StatefulSet", namespace: "bank", name: "db"}); }
            if ctx.parameters.what == "ok" { freeze(#{namespace: "shop", pod: "db-0", container: "freezer", path: "/frozen/data"}); }
        }
        fn post_backup(ctx, target) { freeze(#{namespace: "shop", pod: "db-0", container: "freezer", path: "/frozen/data"}); }
    "#;
    let config = "capabilities:\n  log: true\n  exec: [{container: freezer}]\n  kubeWrite: [statefulsets.apps, daemonsets.apps]\n";
    registry.upsert(source("shop", "quiet", ExtensionKind::Hook, Module::Rhai(script.into()), config)).unwrap();
    let host = RecordingHost::new();
    let id = ExtensionId::new("shop", "quiet");
    let run = |s: &mut Session, phase, what: &str| {
        s.run_hook(&id, phase, &target_with_volumes(), &[("what".to_string(), what.to_string())].into()).map_err(|e| e.message)
    };
    let results = with_session(&registry.snapshot(), host.clone(), |s| {
        ["freeze-db", "escape", "daemonset", "other-namespace", "ok"].map(|w| run(s, HookPhase::PreBackup, w)).into_iter().chain([run(s, HookPhase::PostBackup, "ok")]).collect::<Vec<_>>()
    });
    let denied = |i: usize, why: &str| assert!(results[i].as_ref().unwrap_err().contains(why), "{i}: {:?}", results[i]);
    denied(0, "capability exec does not include container db");
    denied(1, "absolute mount path without `..`");
    denied(2, "only Deployments and StatefulSets");
    denied(3, "outside this extension's namespace shop");
    results[4].as_ref().unwrap();
    denied(5, "quiescing is allowed in pre-backup hooks only");
    assert_eq!(host.calls(), vec!["freeze shop/db-0 freezer /frozen/data"]);
    assert!(host.logs.lock().unwrap().iter().all(|l| l.ends_with("volumes: 1 data-db-0 /frozen/data")));
}

#[test]
fn a_hooks_parameters_given_by_the_pod_win_over_its_configs() {
    let registry = registry();
    let config = "capabilities:\n  log: true\n  exec: [{container: db}]\nparameters:\n  container: db\n  command: fsfreeze --freeze /data\n";
    registry.upsert(source("stowage", "freeze", ExtensionKind::Hook, Module::Wasm(wasm("fixture-hook")), config)).unwrap();
    let host = RecordingHost::new();
    let target = HookTarget::new(ObjectRef { version: "v1".into(), kind: "Pod".into(), namespace: "shop".into(), name: "db-0".into(), ..Default::default() });
    let id = ExtensionId::new("stowage", "freeze");
    let from_pod = [("command".to_string(), "sync -f /data".to_string())].into();
    with_session(&registry.snapshot(), host.clone(), |s| s.run_hook(&id, HookPhase::PreBackup, &target, &from_pod)).unwrap();
    assert_eq!(host.calls(), vec!["exec shop/db-0 db sync -f /data"]);
}

#[test]
fn rhai_endless_loop_is_stopped() {
    // By the operation limit...
    let runtime = Runtime::new(RuntimeOptions {
        max_wasm_instances: 4,
        rhai: RhaiLimits { max_operations: 100_000, ..Default::default() },
    })
    .unwrap();
    let registry = Registry::new(runtime, Policy::new("stowage"));
    registry.upsert(rhai_action("stowage", "spin", "endless-loop.rhai", "")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert!(outcome.issues[0].message.contains("exceeded its limit of 100000 operations"), "{}", outcome.issues[0].message);

    // ...and by the deadline when the operation limit is far away.
    let registry = registry_with_default_limits();
    registry.upsert(rhai_action("stowage", "spin", "endless-loop.rhai", "timeoutSeconds: 1\n")).unwrap();
    let runtime_limit = RhaiLimits::default().max_operations;
    let started = Instant::now();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    let message = &outcome.issues[0].message;
    // A fast machine may reach the operation limit first; both stop the script.
    assert!(
        message.ends_with("timed out after 1s") || message.contains(&format!("{runtime_limit} operations")),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn registry_with_default_limits() -> Registry {
    registry()
}

#[test]
fn rhai_depth_and_size_limits() {
    let registry = registry();
    registry.upsert(rhai_action("stowage", "deep", "deep-recursion.rhai", "")).unwrap();
    registry.upsert(rhai_action("stowage", "wide", "string-bomb.rhai", "")).unwrap();
    registry.upsert(rhai_action("stowage", "throws", "throws.rhai", "")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    let messages: Vec<_> = outcome.issues.iter().map(|i| i.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].starts_with("extension stowage/deep on Pod shop/web: exceeded its limit of 32 nested calls"), "{}", messages[0]);
    assert!(messages[1].starts_with("extension stowage/throws on Pod shop/web: script refuses web"), "{}", messages[1]);
    assert!(messages[2].contains("too large") || messages[2].contains("Length of string"), "{}", messages[2]);
}

#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator;

#[test]
fn a_scripts_heap_is_held_to_its_memory_limit_map_keys_included() {
    assert!(heap::installed());
    let registry = registry();
    registry.upsert(rhai_action("stowage", "keys", "map-key-bomb.rhai", "memoryLimit: 16Mi\ntimeoutSeconds: 60\n")).unwrap();
    registry.upsert(item_action("zz-after", "annotate", "")).unwrap();
    let started = Instant::now();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(outcome.issues.len(), 1, "{:?}", outcome.issues);
    let message = &outcome.issues[0].message;
    assert!(message.starts_with("extension stowage/keys on Pod shop/web: exceeded its memory limit of 16Mi"), "{message}");
    // Stopped when the heap passed the limit, not at the deadline.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(annotation(&outcome.item, "fixture/touched").as_deref(), Some("yes"));
}

#[test]
fn scripts_see_native_maps_and_parameters() {
    let registry = registry();
    let script = r#"
        fn execute(ctx, item) {
            item.object.metadata.labels.seen = `${ctx.kind}/${ctx.name}/${ctx.phase}/${ctx.parameters.colour}`;
            item.object.metadata.labels.containers = `${item.object.spec.containers.len()}`;
            item
        }
    "#;
    let source = source("stowage", "maps", ExtensionKind::ItemAction, Module::Rhai(script.into()), "parameters: {colour: blue}\n");
    registry.upsert(source).unwrap();
    let (outcome, report) = with_session(&registry.snapshot(), RecordingHost::new(), |s| (s.item_actions(pod("shop", "web")), s.report()));
    assert_eq!(outcome.item.object["metadata"]["labels"]["seen"], "restore/nightly/item-action/blue");
    assert_eq!(outcome.item.object["metadata"]["labels"]["containers"], "4");
    let patch = serde_json::to_value(report.extensions[0].items[0].patch.as_ref().unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "add", "path": "/metadata/labels/containers", "value": "4"},
            {"op": "add", "path": "/metadata/labels/seen", "value": "restore/nightly/item-action/blue"},
        ])
    );
    let bytes = report.to_json_zst().unwrap();
    assert_eq!(ExtensionReport::from_json_zst(&bytes).unwrap(), report);
}

#[test]
fn instances_live_per_session() {
    let registry = registry();
    registry.upsert(item_action("counter", "count", "")).unwrap();
    let set = registry.snapshot();
    let calls = |item: &ActionOutcome| annotation(&item.item, "fixture/calls").unwrap();
    let (a, b) = with_session(&set, RecordingHost::new(), |s| (s.item_actions(pod("shop", "a")), s.item_actions(pod("shop", "b"))));
    assert_eq!((calls(&a), calls(&b)), ("1".into(), "2".into()), "one instance serves a session's items");
    let c = with_session(&set, RecordingHost::new(), |s| s.item_actions(pod("shop", "c")));
    assert_eq!(calls(&c), "1", "another session gets its own instance");
}

#[test]
fn sessions_work_from_spawn_blocking_on_either_runtime_flavour() {
    let registry = registry();
    let config = "capabilities:\n  kubeRead: [configmaps]\nparameters:\n  mode: kube-get\n  target-namespace: shop\n  target-name: settings\n";
    registry
        .upsert(source("stowage", "reader", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), config))
        .unwrap();
    let set = registry.snapshot();
    for runtime in [
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
    ] {
        let set = set.clone();
        let outcome = runtime.block_on(async move {
            let mut session = set.session(context(), RecordingHost::new());
            tokio::task::spawn_blocking(move || session.item_actions(pod("shop", "web"))).await.unwrap()
        });
        assert_eq!(annotation(&outcome.item, "fixture/kube-get").as_deref(), Some("found"));
    }
}

#[test]
fn sessions_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Session>();
}

/// Namespaced Rhai item actions in shop, each trying to reach out of it through what it
/// returns rather than through host calls.
fn escaping(name: &str, body: &str) -> ExtensionSource {
    source("shop", name, ExtensionKind::ItemAction, Module::Rhai(format!("fn execute(ctx, item) {{ {body} }}")), "")
}

#[test]
fn a_namespaced_action_may_not_move_items_out_of_its_namespace_through_their_objects() {
    let registry = registry();
    // The item's object says kube-system, the item beside it still says shop.
    registry.upsert(escaping("a-move", r#"item.object.metadata.namespace = "kube-system"; item"#)).unwrap();
    // An added ConfigMap stated in shop whose object says bank.
    registry.upsert(escaping("b-add", r#"
        let cm = #{ apiVersion: "v1", kind: "ConfigMap", metadata: #{ name: "x", namespace: "bank" } };
        #{ item: item, additional_items: [#{ group: "", version: "v1", kind: "ConfigMap", namespace: "shop", name: "x", object: cm }] }"#)).unwrap();
    // The item made into another kind.
    registry.upsert(escaping("c-kind", r#"item.object.kind = "ClusterRoleBinding"; item.object.apiVersion = "rbac.authorization.k8s.io/v1"; item"#)).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(outcome.item, pod("shop", "web"), "every change refused");
    assert!(outcome.additional.is_empty(), "{:?}", outcome.additional);
    let messages: Vec<&str> = outcome.issues.iter().map(|i| i.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("shop/a-move") && messages[0].contains("outside its namespace shop"), "{}", messages[0]);
    assert!(messages[1].contains("shop/b-add") && messages[1].contains("whose object says it is ConfigMap bank/x"), "{}", messages[1]);
    assert!(messages[2].contains("shop/c-kind") && messages[2].contains("does not make it another kind"), "{}", messages[2]);
}

#[test]
fn a_backup_item_action_cannot_skip_the_actions_after_it() {
    let registry = registry();
    registry.upsert(escaping("a-skip", "#{ item: item, skip: true }")).unwrap();
    registry.upsert(rhai_action("stowage", "z-annotate", "annotate.rhai", "")).unwrap();
    let outcome = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert!(outcome.skipped_by.is_none(), "{:?}", outcome.skipped_by);
    assert!(outcome.item.object["metadata"]["annotations"].is_object(), "the action after it ran: {}", outcome.item.object);
}

/// A script's value nested deep (here 20,000 arrays in one another, well within the size
/// limits) does not bring the process down on a thread with [`EXTENSION_STACK_SIZE`], as the
/// server's threads have: on a default 2 MiB stack this aborts the test process.
#[test]
fn deeply_nested_script_values_do_not_overflow_the_stack() {
    let registry = registry();
    let script = "fn execute(ctx, item) { let v = 1; for i in 0..20000 { v = [v]; } item.object.deep = v; item }";
    registry.upsert(source("shop", "deep", ExtensionKind::ItemAction, Module::Rhai(script.into()), "timeoutSeconds: 300\n")).unwrap();
    let snapshot = registry.snapshot();
    let outcome = std::thread::Builder::new()
        .stack_size(EXTENSION_STACK_SIZE)
        .spawn(move || with_session(&snapshot, RecordingHost::new(), |s| s.item_actions(pod("shop", "web"))))
        .unwrap()
        .join()
        .unwrap();
    let messages: Vec<&str> = outcome.issues.iter().map(|i| i.message.as_str()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("nested deeper than 128 levels"), "{messages:?}");
    assert_eq!(outcome.item, pod("shop", "web"));
}

/// Names go into the API's request paths: one that is not a single path segment (a
/// subresource, a query) is denied before the host is called, however the capability reads.
#[test]
fn names_that_would_reach_another_path_are_denied() {
    let registry = registry();
    let config = |name: &str| {
        format!("capabilities:\n  kubeRead: [pods]\n  kubeWrite: [pods]\nparameters:\n  target-kind: Pod\n  target-namespace: shop\n  target-name: {name:?}\n")
    };
    registry.upsert(rhai_action("stowage", "a", "kube-calls.rhai", &config("web/ephemeralcontainers"))).unwrap();
    registry.upsert(rhai_action("stowage", "b", "kube-calls.rhai", &config("web?container=other"))).unwrap();
    registry.upsert(rhai_action("stowage", "c", "kube-calls.rhai", &config(".."))).unwrap();
    let host = RecordingHost::new();
    let report = with_session(&registry.snapshot(), host.clone(), |s| {
        s.item_actions(pod("shop", "web"));
        s.report()
    });
    assert!(host.calls().is_empty(), "the host was called: {:?}", host.calls());
    for record in &report.extensions {
        assert_eq!(record.counts.denied, 2, "{record:?}");
        let reasons: Vec<&str> = record.items[0].denied.iter().map(|d| d.reason.as_str()).collect();
        assert!(reasons.iter().all(|r| r.contains("is not a valid Kubernetes name")), "{reasons:?}");
    }
}

#[test]
fn what_a_call_may_leave_in_the_host_is_bounded() {
    let registry = registry();
    // Log lines: a thousand per call, each cut to 4 KiB.
    let chatty = r#"
        fn pre_backup(ctx, target) {
            let long = "y";
            for i in 0..13 { long += long; }
            log("info", long);
            for i in 0..2000 { log("info", `line ${i}`); }
        }
    "#;
    registry.upsert(source("stowage", "chatty", ExtensionKind::Hook, Module::Rhai(chatty.into()), "capabilities: {log: true}\n")).unwrap();
    // Added items: a thousand per call.
    let adder = r#"
        fn execute(ctx, item) {
            let extra = [];
            for i in 0..1001 {
                extra.push(#{group: "", version: "v1", kind: "ConfigMap", namespace: "shop", name: `extra-${i}`,
                    object: #{apiVersion: "v1", kind: "ConfigMap", metadata: #{name: `extra-${i}`, namespace: "shop"}}});
            }
            #{item: item, additional_items: extra}
        }
    "#;
    registry.upsert(source("stowage", "adder", ExtensionKind::ItemAction, Module::Rhai(adder.into()), "timeoutSeconds: 30\n")).unwrap();
    let host = RecordingHost::new();
    let target = HookTarget::new(ObjectRef { version: "v1".into(), kind: "Pod".into(), namespace: "shop".into(), name: "db-0".into(), ..Default::default() });
    let (hook, added) = with_session(&registry.snapshot(), host.clone(), |s| {
        (s.run_hook(&ExtensionId::new("stowage", "chatty"), HookPhase::PreBackup, &target, &Default::default()), s.item_actions(pod("shop", "web")))
    });
    assert!(hook.unwrap_err().message.contains("more than 1000 lines in one call"));
    let logs = host.logs.lock().unwrap().clone();
    assert_eq!(logs.len(), 1000);
    assert!(logs[0].ends_with("... (4096 bytes cut)") && logs[0].len() < 4200, "{}", &logs[0][..80]);
    assert!(added.additional.is_empty());
    assert!(added.issues[0].message.contains("added 1001 items in one call, more than 1000"), "{:?}", added.issues);
}

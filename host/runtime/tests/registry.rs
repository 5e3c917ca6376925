//! Hot reload: compile once per digest, atomic swaps, operations keep their versions.

mod fixtures;

use fixtures::*;
use stowage_runtime::*;
use std::sync::Arc;

fn annotate(value: &str) -> String {
    format!("parameters:\n  value: {value}\n")
}

#[test]
fn hot_swap_keeps_running_operations_on_their_versions() {
    let registry = registry();
    let v1 = source("stowage", "marker", ExtensionKind::ItemAction, Module::Rhai(script("fixtures/rhai/annotate.rhai")), &annotate("v1"));
    let v1 = registry.upsert(v1).unwrap();
    let before = registry.snapshot();

    let v2 = source("stowage", "marker", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), &annotate("v2"));
    let v2 = registry.upsert(v2).unwrap();
    assert_ne!(v1.digest, v2.digest);
    let after = registry.snapshot();

    let run = |set| with_session(set, RecordingHost::new(), |s| (s.item_actions(pod("shop", "web")), s.report()));
    let (old, old_report) = run(&before);
    let (new, new_report) = run(&after);
    assert_eq!(annotation(&old.item, "fixture/touched").as_deref(), Some("v1"));
    assert_eq!(annotation(&new.item, "fixture/touched").as_deref(), Some("v2"));
    assert_eq!(old_report.extensions[0].digest, v1.digest);
    assert_eq!(old_report.extensions[0].language, Language::Rhai);
    assert_eq!(new_report.extensions[0].digest, v2.digest);
    assert_eq!(new_report.extensions[0].language, Language::Wasm);

    // A broken new version is quarantined: it stops running, operations in flight keep theirs.
    let broken = source("stowage", "marker", ExtensionKind::ItemAction, Module::Rhai("fn execute(".into()), "");
    registry.upsert(broken).unwrap_err();
    assert!(registry.snapshot().is_empty());
    let (still, _) = run(&after);
    assert_eq!(annotation(&still.item, "fixture/touched").as_deref(), Some("v2"));

    assert!(registry.remove("stowage", "marker"));
    assert!(registry.states().is_empty());
    assert!(!registry.remove("stowage", "marker"));
}

#[test]
fn a_digest_is_compiled_once() {
    let runtime = Runtime::new(RuntimeOptions { max_wasm_instances: 8, ..Default::default() }).unwrap();
    let registry = Registry::new(runtime.clone(), Policy::new("stowage"));
    let component = wasm("fixture-item-action");
    let compressed = zstd::encode_all(component.as_slice(), 19).unwrap();
    let first = registry
        .upsert(source("stowage", "one", ExtensionKind::ItemAction, Module::Wasm(component.clone()), &annotate("a")))
        .unwrap();
    assert_eq!(runtime.compilations(), 1);
    // Same content: under another name, with another config, compressed, or upserted again.
    registry.upsert(source("stowage", "two", ExtensionKind::ItemAction, Module::Wasm(component.clone()), &annotate("b"))).unwrap();
    let zst = registry
        .upsert(source("stowage", "three", ExtensionKind::ItemAction, Module::WasmZst(compressed), ""))
        .unwrap();
    registry.upsert(source("stowage", "one", ExtensionKind::ItemAction, Module::Wasm(component.clone()), &annotate("c"))).unwrap();
    assert_eq!(zst.digest, first.digest);
    assert_eq!(runtime.compilations(), 1);
    // A script is compiled once too.
    let text = script("fixtures/rhai/annotate.rhai");
    registry.upsert(source("stowage", "four", ExtensionKind::ItemAction, Module::Rhai(text.clone()), "")).unwrap();
    registry.upsert(source("stowage", "five", ExtensionKind::ItemAction, Module::Rhai(text), "")).unwrap();
    assert_eq!(runtime.compilations(), 2);

    // Once nothing uses a digest any more, its code is dropped; loading it again compiles.
    drop((first, zst));
    for name in ["one", "two", "three"] {
        registry.remove("stowage", name);
    }
    registry.upsert(source("stowage", "one", ExtensionKind::ItemAction, Module::Wasm(component), "")).unwrap();
    assert_eq!(runtime.compilations(), 3);
}

#[test]
fn states_list_every_extension() {
    let registry = registry();
    registry.upsert(source("shop", "mine", ExtensionKind::ItemFilter, Module::Rhai("fn filter(ctx, item) { true }".into()), "")).unwrap();
    registry.upsert(source("stowage", "broken", ExtensionKind::Hook, Module::Wasm(wasm("fixture-item-action")), "")).unwrap_err();
    let states = registry.states();
    assert_eq!(states.len(), 2);
    let mine = &states[0];
    assert_eq!((mine.id.to_string(), mine.state, mine.language), ("shop/mine".into(), State::Active, Language::Rhai));
    assert_eq!(mine.scope, Some(Scope::Namespace("shop".into())));
    let broken = &states[1];
    assert_eq!((broken.kind, broken.state, broken.scope.clone()), (ExtensionKind::Hook, State::Quarantined, Some(Scope::Cluster)));
    assert!(broken.error.as_deref().unwrap().contains("does not implement the hook world"), "{:?}", broken.error);
}

/// An opt-in extension runs only in the operations that name it; the others run in all.
#[test]
fn opt_in_extensions_run_only_when_named() {
    let registry = registry();
    let rhai = || Module::Rhai(script("fixtures/rhai/annotate.rhai"));
    registry.upsert(source("stowage", "always", ExtensionKind::ItemAction, rhai(), &annotate("always"))).unwrap();
    registry.upsert(source("stowage", "asked", ExtensionKind::ItemAction, rhai(), &format!("optIn: true\n{}", annotate("asked")))).unwrap();
    let all = registry.snapshot();
    let ran = |requested: &[ExtensionId]| {
        let set = Arc::new(all.for_operation(requested));
        let names: Vec<String> = set.iter().map(|e| e.id.to_string()).collect();
        let out = with_session(&set, RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
        (names, annotation(&out.item, "fixture/touched"))
    };
    assert_eq!(ran(&[]), (vec!["stowage/always".to_string()], Some("always".into())));
    let (names, touched) = ran(&[ExtensionId::new("stowage", "asked"), ExtensionId::new("stowage", "unknown")]);
    assert_eq!(names, ["stowage/always", "stowage/asked"]);
    assert_eq!(touched.as_deref(), Some("asked"), "the opt-in action runs after the other, by name");
    // Naming one in another namespace does not select it.
    assert_eq!(ran(&[ExtensionId::new("shop", "asked")]).0, ["stowage/always"]);
}

/// A chain of actions hands each one's output to the next; an item handed back untouched is
/// neither recorded as a change nor marked changed.
#[test]
fn unchanged_items_are_recognised_and_outputs_chain() {
    let registry = registry();
    let component = || Module::Wasm(wasm("fixture-item-action"));
    registry
        .upsert(source(
            "stowage",
            "a-inspect",
            ExtensionKind::ItemAction,
            component(),
            "parameters: {mode: inspect}\n",
        ))
        .unwrap();
    let set = registry.snapshot();
    let (untouched, report) = with_session(&set, RecordingHost::new(), |s| {
        (s.item_actions(pod("shop", "web")), s.report())
    });
    assert!(untouched.issues.is_empty(), "{:?}", untouched.issues);
    assert!(!untouched.changed);
    assert_eq!(untouched.item, pod("shop", "web"));
    let counts = &report.extensions[0].counts;
    assert_eq!((counts.calls, counts.changed), (1, 0));
    assert!(report.extensions[0].items.is_empty());

    // annotate (order 0) → inspect (order 1) → a script that reads annotate's mark (order 2).
    registry
        .upsert(source(
            "stowage",
            "a-inspect",
            ExtensionKind::ItemAction,
            component(),
            "parameters: {mode: inspect}\norder: 1\n",
        ))
        .unwrap();
    registry
        .upsert(source(
            "stowage",
            "annotate",
            ExtensionKind::ItemAction,
            component(),
            &annotate("first"),
        ))
        .unwrap();
    let copy = "fn execute(ctx, item) {\n    let mark = item.object.metadata.annotations[\"fixture/touched\"];\n    item.object.metadata.labels.copied = mark;\n    item\n}\n";
    registry
        .upsert(source(
            "stowage",
            "copy",
            ExtensionKind::ItemAction,
            Module::Rhai(copy.into()),
            "order: 2\n",
        ))
        .unwrap();
    let mut db = pod("shop", "db");
    db.object["metadata"]["labels"]["tier"] = "db".into();
    let (out, report) = with_session(&registry.snapshot(), RecordingHost::new(), |s| {
        (s.item_actions(db), s.report())
    });
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    assert!(out.changed);
    let metadata = &out.item.object["metadata"];
    assert_eq!(metadata["annotations"]["fixture/touched"], "first");
    assert_eq!(
        metadata["annotations"]["fixture/inspected"], "db",
        "inspect saw annotate's output"
    );
    assert_eq!(
        metadata["labels"]["copied"], "first",
        "the script saw both components' output"
    );
    let changed: Vec<_> = report
        .extensions
        .iter()
        .map(|e| (e.id.name.as_str(), e.counts.changed))
        .collect();
    assert_eq!(
        changed,
        vec![("annotate", 1), ("a-inspect", 1), ("copy", 1)]
    );
}

/// A component says what it did as a merge patch or a whole object: both reach the same item,
/// a patch that renames the item moves it within the extension's scope only, and a patch
/// that is not an object is an error naming the extension.
#[test]
fn patches_and_replacements_reach_the_same_item() {
    let registry = registry();
    let action = |name: &str, mode: &str| {
        source("shop", name, ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), &format!("parameters: {{mode: {mode}}}\n"))
    };
    let run = |name: &str, mode: &str| {
        registry.upsert(action(name, mode)).unwrap();
        let set = Arc::new(registry.snapshot().for_operation(&[]));
        let out = with_session(&set, RecordingHost::new(), |s| (s.item_actions(pod("shop", "web")), s.report()));
        registry.remove("shop", name);
        out
    };
    let (patched, patched_report) = run("patch", "annotate");
    let (replaced, replaced_report) = run("whole", "replace");
    assert!(patched.issues.is_empty() && replaced.issues.is_empty(), "{:?} {:?}", patched.issues, replaced.issues);
    assert_eq!(patched.item, replaced.item);
    assert!(patched.changed && replaced.changed);
    assert_eq!(annotation(&patched.item, "fixture/touched").as_deref(), Some("yes"));
    assert_eq!(patched.item.object["spec"]["containers"][3]["image"], "registry.example.com/library/app3:1.3");
    // The record holds the same operations either way.
    let ops = |r: &ExtensionReport| serde_json::to_value(&r.extensions[0].items[0].patch).unwrap();
    assert_eq!(ops(&patched_report), ops(&replaced_report));

    let (renamed, _) = run("rename", "rename, to: shop");
    assert!(renamed.issues.is_empty(), "{:?}", renamed.issues);
    assert_eq!((renamed.item.id.namespace.as_str(), renamed.item.id.name.as_str()), ("shop", "web-shop"));
    assert_eq!(renamed.item.object["metadata"]["name"], "web-shop");
    let (escaped, _) = run("escape", "rename, to: elsewhere");
    assert_eq!(escaped.item, pod("shop", "web"), "a refused change leaves the item as it was");
    assert!(escaped.issues[0].message.contains("outside its"), "{:?}", escaped.issues);

    let (bad, _) = run("bad", "bad-patch");
    assert_eq!(bad.item, pod("shop", "web"));
    let message = &bad.issues[0].message;
    assert!(message.contains("shop/bad") && message.contains("merge patch") && message.contains("not a JSON object"), "{message}");
}

/// An extension that names the fields it reads is given only those; its answer still
/// changes the whole object, never drops what it was not shown.
#[test]
fn extensions_see_only_the_fields_they_read() {
    // The view holds metadata.labels and status: two top-level fields, one in metadata.
    let registry = registry();
    let script = "fn object_fields(parameters) { [\"/metadata/labels\", \"/status\"] }\n\
                  fn execute(ctx, item) {\n\
                      item.object.metadata.labels.seen = `${item.object.keys().len()}:${item.object.metadata.keys().len()}`;\n\
                      item\n\
                  }\n";
    registry.upsert(source("stowage", "viewer", ExtensionKind::ItemAction, Module::Rhai(script.into()), "")).unwrap();
    let (out, report) = with_session(&registry.snapshot(), RecordingHost::new(), |s| (s.item_actions(pod("shop", "web")), s.report()));
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    let mut expected = pod("shop", "web");
    expected.object["metadata"]["labels"]["seen"] = "2:1".into();
    assert_eq!(out.item, expected, "only the label was added; the parts not shown are kept");
    let patch = serde_json::to_value(&report.extensions[0].items[0].patch).unwrap();
    assert_eq!(patch, serde_json::json!([{"op": "add", "path": "/metadata/labels/seen", "value": "2:1"}]));

    // A component given a view may not answer with a whole object.
    registry.remove("stowage", "viewer");
    registry
        .upsert(source("stowage", "whole", ExtensionKind::ItemAction, Module::Wasm(wasm("fixture-item-action")), "parameters: {mode: whole-from-view}\n"))
        .unwrap();
    let out = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert_eq!(out.item, pod("shop", "web"));
    assert!(out.issues[0].message.contains("only the parts its object-fields name"), "{:?}", out.issues);

    // A field that is not a JSON Pointer is refused, naming it.
    registry.remove("stowage", "whole");
    let bad = "fn object_fields(parameters) { [\"metadata.labels\"] }\nfn execute(ctx, item) { () }\n";
    registry.upsert(source("stowage", "bad", ExtensionKind::ItemAction, Module::Rhai(bad.into()), "")).unwrap();
    let out = with_session(&registry.snapshot(), RecordingHost::new(), |s| s.item_actions(pod("shop", "web")));
    assert!(out.issues[0].message.contains("\"metadata.labels\" is not a JSON Pointer"), "{:?}", out.issues);
}

/// The host hears of every call: which extension, how it ended, how long it took.
#[test]
fn calls_are_reported_to_the_observer() {
    let registry = registry();
    let component = || Module::Wasm(wasm("fixture-item-action"));
    registry.upsert(source("stowage", "inspect", ExtensionKind::ItemAction, component(), "parameters: {mode: inspect}\n")).unwrap();
    registry.upsert(source("stowage", "mark", ExtensionKind::ItemAction, component(), &annotate("x"))).unwrap();
    registry.upsert(source("stowage", "refuse", ExtensionKind::ItemAction, component(), "parameters: {mode: error}\n")).unwrap();
    let drop_all = Module::Rhai("fn filter(ctx, item) { \"not this one\" }".into());
    registry.upsert(source("stowage", "drop", ExtensionKind::ItemFilter, drop_all, "")).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    with_session(&registry.snapshot(), RecordingHost::new(), |s| {
        s.observe_calls(Arc::new(move |id, outcome, took| {
            sink.lock().unwrap().push((id.name.clone(), outcome, took.is_some_and(|t| t > std::time::Duration::ZERO)));
        }));
        s.filter(&pod("shop", "web"));
        s.item_actions(pod("shop", "web"));
    });
    let seen = seen.lock().unwrap().clone();
    let expected = [("drop", "filtered"), ("inspect", "unchanged"), ("mark", "changed"), ("refuse", "error")];
    let got: Vec<_> = seen.iter().map(|(n, o, _)| (n.as_str(), *o)).collect();
    assert_eq!(got, expected);
    assert!(seen.iter().all(|(_, _, timed)| *timed), "{seen:?}");
}

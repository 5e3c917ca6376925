//! Hot reload: compile once per digest, atomic swaps, operations keep their versions.

mod fixtures;

use fixtures::*;
use stowage_runtime::*;

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

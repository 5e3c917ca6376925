//! Per-item cost of an item action as a WASM component and as a Rhai script, against the
//! same transform in native Rust, on a ~2 KiB pod; and the cost of a fresh instance.
//!
//!   cargo bench -p stowage-runtime --bench extensions -- --warm-up-time 1 --measurement-time 3

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fixtures::*;
use serde_json::Value;
use std::hint::black_box;
use std::sync::Arc;
use stowage_runtime::*;

/// The transform of the `annotate` fixtures, natively.
fn native_transform(item: &mut Item) {
    let (from, to) = ("docker.io", "registry.example.com");
    for list in ["/spec/containers", "/spec/initContainers"] {
        if let Some(containers) = item.object.pointer_mut(list).and_then(Value::as_array_mut) {
            for container in containers {
                if let Some(image) = container.get_mut("image") {
                    if let Some(rest) = image.as_str().and_then(|i| i.strip_prefix(from)) {
                        *image = Value::String(format!("{to}{rest}"));
                    }
                }
            }
        }
    }
    let annotations = item.object["metadata"].as_object_mut().unwrap().entry("annotations").or_insert_with(|| Value::Object(Default::default()));
    annotations["fixture/touched"] = Value::String("yes".into());
}

fn set_with(module: Module) -> Arc<ExtensionSet> {
    let registry = registry();
    registry.upsert(source("stowage", "transform", ExtensionKind::ItemAction, module, "")).unwrap();
    registry.snapshot()
}

fn benches(c: &mut Criterion) {
    let item = pod("shop", "web");
    eprintln!("pod JSON: {} bytes", serde_json::to_vec(&item.object).unwrap().len());
    let wasm_set = set_with(Module::Wasm(wasm("fixture-item-action")));
    let rhai_set = set_with(Module::Rhai(script("fixtures/rhai/annotate.rhai")));

    // The three must agree before they are compared.
    let mut native = item.clone();
    native_transform(&mut native);
    for set in [&wasm_set, &rhai_set] {
        let out = set.session(context(), Arc::new(OfflineHost)).item_actions(item.clone());
        assert!(out.issues.is_empty(), "{:?}", out.issues);
        assert_eq!(out.item, native);
    }

    let mut group = c.benchmark_group("item-action");
    group.bench_function("native", |b| {
        b.iter_batched(|| item.clone(), |mut i| { native_transform(&mut i); black_box(i) }, BatchSize::SmallInput)
    });
    // Items one after another through one session, as a backup runs them: each iteration's
    // inputs are cloned before the clock starts, their outputs dropped on it.
    let steady = |set: &Arc<ExtensionSet>| {
        let set = set.clone();
        let item = item.clone();
        move |iters: u64| {
            let mut session = set.session(context(), Arc::new(OfflineHost));
            let inputs: Vec<_> = (0..iters).map(|_| item.clone()).collect();
            let start = std::time::Instant::now();
            for i in inputs {
                black_box(session.item_actions(i));
            }
            start.elapsed()
        }
    };
    group.bench_function("wasm", |b| b.iter_custom(steady(&wasm_set)));
    group.bench_function("rhai", |b| b.iter_custom(steady(&rhai_set)));
    group.finish();

    // A new session's first item: instantiation (store, instance, applies-to; or engine and
    // scope) plus one call.
    let mut group = c.benchmark_group("first-item");
    group.bench_function("wasm", |b| {
        b.iter_batched(
            || item.clone(),
            |i| black_box(wasm_set.session(context(), Arc::new(OfflineHost)).item_actions(i)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rhai", |b| {
        b.iter_batched(
            || item.clone(),
            |i| black_box(rhai_set.session(context(), Arc::new(OfflineHost)).item_actions(i)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(extension_benches, benches);
criterion_main!(extension_benches);

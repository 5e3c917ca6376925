//! Where the time of one item action goes, without a benchmark harness: the host's JSON work
//! on the ~2 KiB pod of the benches (serialise, parse, clone), then whole calls through one
//! session: a component that rewrites the object, one that hands it back untouched, a script.
//!
//!   bash extensions/build.sh
//!   cargo run --release -p stowage-runtime --example call_costs

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
use fixtures::*;
use std::sync::Arc;
use stowage_runtime::*;
fn per_item(n: u32, start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let item = pod("shop", "web");
    let n = 20000;
    let start = std::time::Instant::now();
    for _ in 0..n { std::hint::black_box(serde_json::to_string(&item.object).unwrap()); }
    println!("serialise: {:.2} µs", per_item(n, start));
    let text = serde_json::to_string(&item.object).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..n { std::hint::black_box(serde_json::from_str::<serde_json::Value>(&text).unwrap()); }
    println!("parse: {:.2} µs", per_item(n, start));
    let start = std::time::Instant::now();
    for _ in 0..n { std::hint::black_box(item.clone()); }
    println!("clone: {:.2} µs", per_item(n, start));
    for (name, module, cfg) in [("wasm-annotate", Module::Wasm(wasm("fixture-item-action")), "parameters: {mode: annotate}\n"), ("wasm-inspect", Module::Wasm(wasm("fixture-item-action")), "parameters: {mode: inspect}\n"), ("rhai", Module::Rhai(script("fixtures/rhai/annotate.rhai")), "")] {
        let registry = registry();
        registry.upsert(source("stowage", "t", ExtensionKind::ItemAction, module, cfg)).unwrap();
        let set = registry.snapshot();
        let mut session = set.session(context(), Arc::new(OfflineHost));
        let n = 20000;
        let inputs: Vec<_> = (0..n).map(|_| item.clone()).collect();
        let start = std::time::Instant::now();
        for i in inputs { std::hint::black_box(session.item_actions(i)); }
        println!("{name}: {:.1} µs/item", per_item(n, start));
    }
}

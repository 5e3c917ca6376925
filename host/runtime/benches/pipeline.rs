//! The backup pipeline's throughput (selection → item filters → related items → item
//! actions → `tar.zst`) with two WASM item actions and one Rhai item filter, against the same
//! pipeline with no extensions, in the same run, over the synthetic objects of
//! `stowage-pipeline`'s own bench (ConfigMap-sized, ~1 KiB of JSON).
//!
//! Two cases: every extension called on every item the selection keeps (none of them narrows
//! `appliesTo`), the worst case; and the same extensions narrowed by `appliesTo` to the items
//! of five apps out of fifty (a tenth), as extensions that handle a few kinds or apps are.
//!
//! - `annotate` (WASM item action): reads each object's container lists, rewrites their image
//!   registries and adds an annotation, answering with a merge patch of what it changed;
//! - `inspect` (WASM item action): reads the labels and answers `unchanged`;
//! - `skip-app` (Rhai item filter): leaves out one `app` label value in fifty.
//!
//! The server runs a backup's extensions on a thread of their own ([`pipeline_staged`]); the
//! throughput it keeps is the paired wall-time ratio printed first. Criterion's cases run
//! everything on one thread and time that thread's CPU time (the offline host makes no calls
//! elsewhere): what the extensions cost, steadier than wall time on a shared machine, where
//! wall time also counts the time other processes hold the core (±25% between cases).
//!
//!   bash extensions/build.sh
//!   cargo bench -p stowage-runtime --bench pipeline

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
#[path = "../../pipeline/benches/workload.rs"]
mod workload;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fixtures::*;
use std::sync::Arc;
use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::{ResourceSelection, SelectionOptions};
use stowage_runtime::*;


fn object_ref(item: &stowage_pipeline::Item) -> ObjectRef {
    ObjectRef {
        group: item.group.clone(),
        version: item.version.clone(),
        kind: item.kind.clone(),
        namespace: item.namespace.clone().unwrap_or_default(),
        name: item.name.clone(),
    }
}

/// The stages of a backup over `items`; `session` runs the extensions. Returns the items
/// written.
fn pipeline(
    items: &[stowage_pipeline::Item],
    selection: &ResourceSelection,
    mut session: Option<Session>,
) -> u64 {
    let mut writer = ArchiveWriter::new(std::io::sink()).unwrap();
    let mut seen = stowage_pipeline::seen::SeenItems::default();
    for item in items {
        if selection.includes_item(item).is_err() || !seen.insert(&item.item_ref()) {
            continue;
        }
        let item = match session.as_mut() {
            Some(session) => extended(session, item.clone()),
            None => Some(item.clone()),
        };
        write(&mut writer, item);
    }
    let n = writer.items_written();
    writer.finish().unwrap();
    n
}

/// The item after the item filters and actions, `None` when a filter left it out.
fn extended(session: &mut Session, mut item: stowage_pipeline::Item) -> Option<stowage_pipeline::Item> {
    let ritem = Item { id: object_ref(&item), object: std::mem::take(&mut item.object) };
    if !session.filter(&ritem).included() {
        return None;
    }
    let outcome = session.item_actions(ritem);
    assert!(outcome.issues.is_empty(), "{:?}", outcome.issues);
    item.object = outcome.item.object;
    Some(item)
}

/// The last stages: related objects (looked up, not fetched) and the archive.
fn write(writer: &mut ArchiveWriter<std::io::Sink>, item: Option<stowage_pipeline::Item>) {
    if let Some(item) = item {
        std::hint::black_box(stowage_pipeline::related::related(&item));
        writer.add_item(&item).unwrap();
    }
}

/// Items per hand-over to the extension stage, and at most how many wait for it (the server's
/// `stage.rs` has the same).
const STAGE_BATCH: usize = 64;
const STAGE_QUEUE: usize = 256;

/// [`pipeline`] with the extension stage on a thread of its own, as the server runs backups
/// (`host/src/backup/stage.rs`): the calling thread selects items and hands them over, and
/// writes what comes back, in order.
fn pipeline_staged(items: &[stowage_pipeline::Item], selection: &ResourceSelection, session: Session) -> u64 {
    let mut writer = ArchiveWriter::new(std::io::sink()).unwrap();
    let mut seen = stowage_pipeline::seen::SeenItems::default();
    std::thread::scope(|scope| {
        // Batches of items each way: one hand-over (and at most one wake-up) per batch.
        let (to_stage, stage_in) = std::sync::mpsc::sync_channel::<Vec<stowage_pipeline::Item>>(STAGE_QUEUE / STAGE_BATCH);
        let (stage_out, from_stage) = std::sync::mpsc::channel::<Vec<Option<stowage_pipeline::Item>>>();
        scope.spawn(move || {
            let mut session = session;
            for batch in stage_in {
                let out = batch.into_iter().map(|item| extended(&mut session, item)).collect();
                if stage_out.send(out).is_err() {
                    return;
                }
            }
        });
        let mut batch = Vec::with_capacity(STAGE_BATCH);
        for item in items {
            if selection.includes_item(item).is_err() || !seen.insert(&item.item_ref()) {
                continue;
            }
            batch.push(item.clone());
            if batch.len() == STAGE_BATCH {
                to_stage.send(std::mem::replace(&mut batch, Vec::with_capacity(STAGE_BATCH))).unwrap();
                while let Ok(out) = from_stage.try_recv() {
                    out.into_iter().for_each(|item| write(&mut writer, item));
                }
            }
        }
        to_stage.send(batch).unwrap();
        drop(to_stage);
        for out in from_stage {
            out.into_iter().for_each(|item| write(&mut writer, item));
        }
    });
    let n = writer.items_written();
    writer.finish().unwrap();
    n
}

/// The three extensions (or only the one named `only`), each with `applies_to` as its
/// `appliesTo`.
fn extensions(applies_to: &str, only: Option<&str>) -> Arc<ExtensionSet> {
    let registry = registry();
    let component = || Module::Wasm(wasm("fixture-item-action"));
    let config = |rest: &str| format!("appliesTo: {applies_to}\n{rest}");
    let sources = [
        source("stowage", "annotate", ExtensionKind::ItemAction, component(), &config("parameters: {mode: annotate, value: bench}\n")),
        source("stowage", "inspect", ExtensionKind::ItemAction, component(), &config("parameters: {mode: inspect}\norder: 1\n")),
        source(
            "stowage",
            "skip-app",
            ExtensionKind::ItemFilter,
            Module::Rhai(script("fixtures/rhai/skip-app.rhai")),
            &config("parameters: {skip-app: app-3}\n"),
        ),
    ];
    for s in sources {
        if only.is_none_or(|name| s.id.name == name) {
            registry.upsert(s).unwrap();
        }
    }
    registry.snapshot()
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let options = SelectionOptions { excluded_namespaces: vec!["ns-19".into()], ..Default::default() };
    let selection = ResourceSelection::resolve(&options, &[workload::info()]).unwrap();
    let every = extensions("{}", None);
    let five_apps = "[app-0, app-1, app-2, app-3, app-4]";
    let tenth =
        extensions(&format!("{{labelSelector: {{matchExpressions: [{{key: app, operator: In, values: {five_apps}}}]}}}}"), None);
    let session = |set: &Arc<ExtensionSet>| set.session(context(), Arc::new(OfflineHost));

    let items: Vec<_> = (0..10_000).map(workload::item).collect();
    let plain = pipeline(&items, &selection, None);
    for set in [&every, &tenth] {
        let extended = pipeline(&items, &selection, Some(session(set)));
        eprintln!("items written: {plain} without extensions, {extended} with (skip-app leaves out one app in fifty)");
        assert!(extended < plain && extended > plain * 9 / 10, "the filter must leave out a few items");
    }

    // Paired ratios: the cases one after another, round after round, so that each round's
    // ratios compare runs made within a second of each other (criterion measures one case
    // after the other, and the machine's speed drifts between them). Throughput as the server
    // has it, the extension stage on its own thread, in wall time; and what the extensions
    // cost, everything on one thread, in that thread's CPU time.
    let alone: Vec<_> = ["annotate", "inspect", "skip-app"].map(|name| (name, extensions("{}", Some(name)))).into();
    let rounds: usize = std::env::var("PAIRED_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(15);
    if rounds > 0 {
        let wall = |run: &dyn Fn() -> u64| {
            let started = std::time::Instant::now();
            std::hint::black_box(run());
            started.elapsed().as_secs_f64() * 1e3
        };
        let cpu = |session: Option<Session>| {
            let started = thread_cpu_ns();
            std::hint::black_box(pipeline(&items, &selection, session));
            (thread_cpu_ns() - started) as f64 / 1e6
        };
        let mut cases: Vec<(String, &Arc<ExtensionSet>)> =
            vec![("the three on every item".into(), &every), ("the three on a tenth".into(), &tenth)];
        cases.extend(alone.iter().map(|(name, set)| (format!("{name} alone on every item"), set)));
        let (mut none_wall, mut none_cpu) = (Vec::new(), Vec::new());
        let mut staged = vec![Vec::new(); 2];
        let mut one_thread = vec![Vec::new(); cases.len()];
        for _ in 0..rounds {
            let plain = wall(&|| pipeline(&items, &selection, None));
            none_wall.push(plain);
            for ((_, set), ratios) in cases.iter().zip(&mut staged) {
                ratios.push(plain / wall(&|| pipeline_staged(&items, &selection, session(set))));
            }
            let plain = cpu(None);
            none_cpu.push(plain);
            for ((_, set), ratios) in cases.iter().zip(&mut one_thread) {
                ratios.push(plain / cpu(Some(session(set))));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let show = |name: &str, mut ratios: Vec<f64>| {
            let m = median(&mut ratios);
            eprintln!("  {name}: {m:.2}x (range {:.2}-{:.2})", ratios[0], ratios[rounds - 1]);
        };
        eprintln!(
            "paired over {rounds} rounds: throughput kept, the extension stage on its own thread (wall time; \
             no extensions {:.1} ms median):",
            median(&mut none_wall)
        );
        for ((name, _), ratios) in cases.iter().zip(staged) {
            show(name, ratios);
        }
        eprintln!(
            "  and on one thread (the thread's CPU time: what the extensions cost; no extensions {:.1} ms median):",
            median(&mut none_cpu)
        );
        for ((name, _), ratios) in cases.iter().zip(one_thread) {
            show(name, ratios);
        }
    }

    let mut group = c.benchmark_group("backup-extensions");
    group.sample_size(10);
    group.throughput(Throughput::Elements(items.len() as u64));
    group.bench_with_input(BenchmarkId::new("none", items.len()), &items, |b, items| {
        b.iter(|| pipeline(items, &selection, None))
    });
    group.bench_with_input(BenchmarkId::new("2-wasm-1-rhai-every-item", items.len()), &items, |b, items| {
        b.iter(|| pipeline(items, &selection, Some(session(&every))))
    });
    group.bench_with_input(BenchmarkId::new("2-wasm-1-rhai-a-tenth", items.len()), &items, |b, items| {
        b.iter(|| pipeline(items, &selection, Some(session(&tenth))))
    });
    // What each of the three costs alone, on every item.
    for (name, alone) in &alone {
        group.bench_with_input(BenchmarkId::new(format!("{name}-alone-every-item"), items.len()), &items, |b, items| {
            b.iter(|| pipeline(items, &selection, Some(session(alone))))
        });
    }
    group.finish();
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
struct ThreadCpuTime(criterion::measurement::WallTime);

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl criterion::measurement::Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns() - started
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        // Nanoseconds, shown as wall time is.
        self.0.formatter()
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime(criterion::measurement::WallTime));
    targets = bench
}
criterion_main!(benches);

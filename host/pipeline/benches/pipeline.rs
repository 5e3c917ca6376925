//! Pipeline throughput (filter → related → write a tar.zst) over synthetic objects, beside the
//! baseline of serialising the same objects to JSON and compressing them with zstd, in the
//! same run. `cargo bench -p stowage-pipeline --bench pipeline`.

mod workload;

use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::{ResourceSelection, SelectionOptions};

fn pipeline(items: &[stowage_pipeline::Item], selection: &ResourceSelection) -> u64 {
    let mut writer = ArchiveWriter::new(std::io::sink()).unwrap();
    let mut seen = stowage_pipeline::seen::SeenItems::default();
    for item in items {
        if selection.includes_item(item).is_err() || !seen.insert(&item.item_ref()) {
            continue;
        }
        std::hint::black_box(stowage_pipeline::related::related(item));
        writer.add_item(item).unwrap();
    }
    let n = writer.items_written();
    writer.finish().unwrap();
    n
}

fn baseline(items: &[stowage_pipeline::Item]) -> usize {
    let mut enc = zstd::Encoder::new(std::io::sink(), 3).unwrap();
    for item in items {
        serde_json::to_writer(&mut enc, &item.object).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap();
    items.len()
}

fn bench(c: &mut Criterion) {
    let options = SelectionOptions { excluded_namespaces: vec!["ns-19".into()], ..Default::default() };
    let selection = ResourceSelection::resolve(&options, &[workload::info()]).unwrap();
    let mut group = c.benchmark_group("backup");
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        let items: Vec<_> = (0..n).map(workload::item).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("pipeline", n), &items, |b, items| b.iter(|| pipeline(items, &selection)));
        group.bench_with_input(BenchmarkId::new("json-zstd-baseline", n), &items, |b, items| b.iter(|| baseline(items)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

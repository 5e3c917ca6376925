//! Peak memory of the pipeline at N items, objects generated one at a time as paged lists
//! deliver them: `cargo run --release -p stowage-pipeline --example pipeline_memory -- 100000`.
//! Prints items/s and the process's peak RSS (VmHWM), for the pipeline and, in a second run
//! with `baseline`, for JSON → zstd of the same objects.

#[path = "../benches/workload.rs"]
mod workload;

use std::io::Write;
use std::time::Instant;

use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::{ResourceSelection, SelectionOptions};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let baseline = args.get(2).is_some_and(|a| a == "baseline");
    let start = Instant::now();
    let written = if baseline {
        let mut enc = zstd::Encoder::new(std::io::sink(), 3).unwrap();
        for i in 0..n {
            serde_json::to_writer(&mut enc, &workload::item(i).object).unwrap();
            enc.write_all(b"\n").unwrap();
        }
        enc.finish().unwrap();
        n as u64
    } else {
        let options = SelectionOptions { excluded_namespaces: vec!["ns-19".into()], ..Default::default() };
        let selection = ResourceSelection::resolve(&options, &[workload::info()]).unwrap();
        let mut writer = ArchiveWriter::new(std::io::sink()).unwrap();
        let mut seen = stowage_pipeline::seen::SeenItems::default();
        for i in 0..n {
            let item = workload::item(i);
            if selection.includes_item(&item).is_ok() && seen.insert(&item.item_ref()) {
                writer.add_item(&item).unwrap();
            }
        }
        let w = writer.items_written();
        writer.finish().unwrap();
        w
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} items={n} written={written} seconds={secs:.3} items_per_sec={:.0} peak_rss_kib={}",
        if baseline { "baseline" } else { "pipeline" },
        n as f64 / secs,
        peak_rss_kib()
    );
}

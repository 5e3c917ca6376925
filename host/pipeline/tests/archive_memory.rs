//! The archive writer's heap use does not grow with the number of items. A counting
//! allocator measures the peak of live heap bytes while items are written; it sees Rust
//! allocations (items, tar, buffers), not zstd's own C allocations, which are fixed by the
//! compression level's window whatever the input size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use stowage_pipeline::archive::ArchiveWriter;
use stowage_pipeline::{ApiResourceInfo, Item};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Writes `count` config maps of ~1.5 KiB each to a sink that discards them; returns the peak
/// heap growth during the run and the bytes of JSON written.
fn peak_while_writing(count: usize) -> (usize, usize) {
    let info = ApiResourceInfo::new("", "v1", "configmaps", "ConfigMap", true);
    let payload: String = (0..1500).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut writer = ArchiveWriter::new(io::sink()).unwrap();
    let mut json_bytes = 0;
    for i in 0..count {
        let object = json!({"metadata": {"name": format!("cm-{i}"), "namespace": format!("ns-{}", i % 40)},
            "data": {"payload": payload, "index": i.to_string()}});
        let item = Item::new(object, &info).unwrap();
        json_bytes += 2 * serde_json::to_vec(&item.object).unwrap().len();
        writer.add_item(&item).unwrap();
    }
    writer.finish().unwrap();
    (PEAK.load(Ordering::Relaxed) - baseline, json_bytes)
}

#[test]
fn heap_use_does_not_grow_with_the_number_of_items() {
    let (small_peak, _) = peak_while_writing(2_000);
    let (large_peak, json_bytes) = peak_while_writing(20_000);
    assert!(json_bytes > 50 << 20, "wrote {json_bytes} bytes of JSON");
    assert!(large_peak < 1 << 20, "peak heap growth {large_peak} bytes for {json_bytes} bytes written");
    assert!(large_peak < small_peak * 2 + (64 << 10), "20k items peaked at {large_peak}, 2k at {small_peak}");
}

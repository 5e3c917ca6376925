//! The heap a Rhai call grows, counted per thread.
//!
//! Rhai's own limits bound the length of each string and the entries of each array and map,
//! but not the keys of a map: 100,000 keys of 4 MiB each are within them. A script runs on
//! the thread that calls it, so the bytes allocated minus the bytes freed on that thread
//! during the call bound everything it builds. [`CountingAllocator`] keeps that count; a
//! binary that runs scripts installs it as its global allocator, and each call is stopped
//! once its growth passes the extension's `memoryLimit`, as a WASM instance is.
//!
//! Without the allocator installed the count stays at zero and only Rhai's own limits apply;
//! [`installed`] says which.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread, since it started.
    static NET: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    // `try_with`: a thread's last frees may come after its locals are gone.
    let _ = NET.try_with(|net| net.set(net.get().wrapping_add(bytes)));
}

/// The system allocator, counting what each thread allocates and frees.
pub struct CountingAllocator;

// SAFETY: every call goes to `System` unchanged; the count is a thread-local `Cell` without
// a destructor, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

/// This thread's net allocation so far.
pub(crate) fn net() -> i64 {
    NET.try_with(Cell::get).unwrap_or(0)
}

/// Whether [`CountingAllocator`] is the global allocator of this process.
pub fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let before = net();
        let probe = std::hint::black_box(vec![0u8; 4096]);
        let counted = net() - before >= 4096;
        drop(probe);
        counted
    })
}

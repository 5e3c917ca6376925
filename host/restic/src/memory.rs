//! Keeping memory down under glibc's allocator.
//!
//! rustic_core runs pools of threads of its own (backups; restores, before they moved to our
//! own pipeline, on 20 reader threads), each decrypting blobs of about
//! 1 MiB out of pack reads of up to a pack's size. glibc gives each thread that meets
//! contention an arena of its own (up to 8 per core) and, once a large block is freed,
//! raises its mmap threshold so later blocks of that size come from those arenas, which keep
//! what was freed. A 512 MiB restore through rustic_core peaked at 370 MiB that way; with two
//! arenas at 165 MiB and no slower. The cap is process-wide and is set when the first repository is opened
//! (glibc fixes its arena limit once a process has more than 8 arenas, so later is too late);
//! `MALLOC_ARENA_MAX` in the environment, when set at process start, wins.

use std::sync::Once;

/// Caps glibc's malloc arenas at the number of cores (at least 2), once per process.
pub(crate) fn limit_malloc_arenas() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        set_arena_max(cores.max(2));
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: usize) {
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes allocator parameters; any value is accepted.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) } == 1 {
        tracing::debug!("malloc arenas capped at {arenas}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) {}

//! Keeping memory down under glibc's allocator.
//!
//! Backups and restores run a thread per core (and restores, before they moved to our own
//! pipeline, 20 reader threads of rustic_core's), each compressing, encrypting or decrypting
//! blobs of about 1 MiB, and backups pass regions of 8 MiB and packs of 8 to 16 MiB between
//! them. (The measurements below were made with rustic_core's backup archiver.) glibc gives
//! each thread that meets contention an arena of its own (up to 8 per core) and, once a large
//! block is freed, raises its mmap threshold (up to 32 MiB) so later blocks of that size come from those arenas,
//! each of which keeps what was freed into it resident. A 512 MiB restore through
//! rustic_core peaked at 370 MiB that way, 165 MiB with two arenas. One arena holds one
//! working set where two held nearly two: a first backup of a 512 MiB file peaked at 81–94
//! MiB with one arena against 102–113 MiB with two, in the same time (the threads allocate
//! and free large blocks, whose lock waits are nothing next to the work done on each; small
//! allocations are served by glibc's per-thread caches without the lock).
//!
//! Returning freed blocks to the system instead (a fixed mmap threshold of 128 KiB, or low
//! trim thresholds) took that backup down to 72–93 MiB but raised its page faults from
//! ~75,000 to ~1,000,000 and its system time from 0.4 s to 2.8 s: about a fifth more CPU,
//! which would make first backups slower than restic's, so it is not done.
//!
//! The cap is process-wide. It only binds threads that allocate for the first time after it
//! is set (glibc gives every new thread an arena of its own until the limit is known, and
//! threads keep theirs), so a process that backs volumes up calls
//! [`crate::limit_malloc_arenas`] first thing in `main`, before its async runtime starts
//! threads: set when the first repository is opened, as a fallback, a backup of a 512 MiB
//! file still peaked at 106–120 MiB. `MALLOC_ARENA_MAX` in the environment wins.

use std::sync::Once;

/// Caps glibc's malloc arenas at one, once per process: see the module docs.
pub(crate) fn limit_malloc_arenas() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        set_arena_max(1);
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

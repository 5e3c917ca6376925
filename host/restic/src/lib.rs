//! Restic-format volume backups: the node agent backs pod volumes up into, and restores them
//! from, one restic repository per namespace at `restic/<namespace>/` of a storage location;
//! the server initialises repositories and forgets snapshots of deleted backups.
//!
//! Repositories are restic's format (version 2, compressed) over Stowage's own [`ObjectStore`]
//! (S3 or a directory), so they are read and written by the `restic` CLI too: a user can
//! `restic -r s3:<endpoint>/<bucket>/<prefix>/restic/<ns> restore` one file. `rustic_core`
//! opens repositories, lists, reads and forgets snapshots and reads trees; backups are our own
//! writer (`writer`: restic's chunker, chunking, hashing and compressing on every core, which
//! rustic_core's archiver does on one thread per file) and restores our own bounded pipeline
//! (`restore`).
//!
//! # Calling it
//!
//! [`Repo`] is async; the engine underneath is blocking and runs on the runtime's blocking
//! pool (its backend calls back into the runtime through a captured handle). Progress comes
//! at least every second while an operation runs, and once at its end.
//!
//! # Snapshot paths and parents
//!
//! A snapshot holds the volume's contents under a stable path made from the backup's
//! `parent_tags` (`/pvc-uid=<uid>`, or `/pod-uid=<uid>/volume=<name>`), not under the
//! volume's mount path, which changes with every pod. The parent is the latest snapshot
//! carrying all `parent_tags`; because both snapshots use the same path, files whose size,
//! mtime, ctime and inode did not change are not read again, also after a pod reschedule.
//! Restores put the contents of the snapshot's single path straight into the target
//! directory, which also works for snapshots made by `restic backup /some/dir`.
//!
//! # Locks
//!
//! rustic_core writes no locks. Every operation here but maintenance takes a restic-compatible,
//! **non-exclusive** lock (the kind `restic backup` takes), refreshed every 5 minutes and
//! removed when the operation ends however it ends (success, error, cancel, timeout or panic:
//! the guard lives on the operation's thread). Why:
//!
//! - a user running `restic prune` against the repository while an agent uploads would
//!   otherwise delete the agent's not-yet-indexed packs and corrupt the snapshot; with our
//!   lock present, restic refuses to take its exclusive lock;
//! - while a user's `restic prune`/`check` holds a fresh exclusive lock, operations fail with
//!   [`EngineError::Locked`] rather than race it;
//! - a lock left by a killed agent never blocks us (non-exclusive locks do not conflict with
//!   each other) and restic treats it as stale after 30 minutes, as it does its own.
//!
//! `forget` also takes only a non-exclusive lock: it deletes snapshot files, never data, and
//! an exclusive lock would make it wait for every backup running in the namespace.
//!
//! [`Repo::maintain`] (prune) is the one operation with an **exclusive** lock, as
//! `restic prune`: it first removes stale locks, refuses with [`EngineError::Busy`] while any
//! other lock is fresh (a running backup's), and while it holds its lock backups fail with
//! [`EngineError::Locked`] (see `maintain`).
//!
//! # Memory
//!
//! - Opening a repository with its password derives the key with scrypt. The key files
//!   Stowage writes ask for N=2^12, r=8 (4 MiB; why that is safe with Stowage's 256-bit
//!   passwords: [`keys`]), not the N=2^17 (128 MiB) rustic_core writes. A repository whose key
//!   our password opens only at a higher cost (made by rustic_core or `restic init`) gets a
//!   cheap key on its first open, and loses the expensive one.
//! - New repositories get data packs of 8 MiB growing to at most 16 MiB (restic's default
//!   size; rustic_core starts at 32 MiB and grows without limit): a backup holds the pack it
//!   fills, the one being written and the one handed to the writer.
//! - Restores run our own pipeline, not rustic_core's (which queued decrypted blobs without
//!   bound): two reader threads, one worker per core (2 to 4), and a fixed pool of 4 MiB
//!   read buffers, so a restore holds a few tens of MiB however large it is (see `restore`).
//! - Reads through rustic_core (trees, indexes, a backup's parent) share a budget of 64 MiB of
//!   pack reads at once (`STOWAGE_RESTIC_READ_BUDGET_MIB` changes it).
//! - glibc's malloc arenas are capped at one for the process by [`limit_malloc_arenas`]
//!   (which the node agent calls before its runtime starts; opening a repository calls it
//!   too, late) unless `MALLOC_ARENA_MAX` is set: each further arena kept freed blocks of
//!   the worker threads resident.
//! - A backup holds the data pack being filled, a few chunks per worker, each worker's file
//!   (files up to 8 MiB are read whole) and, for a larger file, the 8 MiB regions read ahead
//!   of the merge of their cuts (two, plus the one being cut into chunks): tens of MiB
//!   however large the volume or its files.
//! - A backup writes each pack to the store as its blobs ([`ObjectStore::put_parts`]): a
//!   directory store writes them in turn, S3 joins them into one upload body, dropping each
//!   blob once copied; the pack was held twice while it was joined.
//!
//! # Initialisation
//!
//! [`Repo::open_or_init`] is for the server, which creates repositories one at a time; node
//! agents use [`Repo::open`]. Two processes initialising the same repository at once would
//! write two configs, which no object store can prevent without conditional writes.

mod backend;
mod beneath;
mod chunker;
mod crypto;
mod error;
mod keys;
pub mod listing;
mod lock;
mod maintain;
mod memory;
mod progress;
mod repo;
mod restore;
mod sha256x8;
mod source;
mod writer;

pub use error::EngineError;
pub use maintain::{MaintenanceOptions, MaintenanceSummary};
pub use repo::Repo;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use stowage_storage::ObjectStore;

/// Where a repository lives and how to open it.
#[derive(Clone)]
pub struct RepoConfig {
    pub store: Arc<dyn ObjectStore>,
    /// The Kubernetes namespace: the repository is `restic/<namespace>/` of the store.
    pub namespace: String,
    pub password: String,
}

impl std::fmt::Debug for RepoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoConfig")
            .field("store", &self.store.location())
            .field("namespace", &self.namespace)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One volume backup.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The volume directory (may be a symlink to it).
    pub path: PathBuf,
    /// `key=value` tags stored on the snapshot.
    pub tags: Vec<String>,
    /// The parent is the latest snapshot carrying all of these, e.g. `["pvc-uid=…"]` or
    /// `["pod-uid=…", "volume=…"]`; they also make the snapshot's path. Empty: no parent.
    pub parent_tags: Vec<String>,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub snapshot_id: String,
    pub parent: Option<String>,
    /// Bytes of all files in the volume.
    pub total_bytes: u64,
    /// Bytes added to the repository (after deduplication and compression).
    pub data_added: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Entries that could not be read and are missing from the snapshot (the snapshot is
    /// still written, as restic does): a non-empty list means a partial backup.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Entries restored (not the damaged files).
    pub files: u64,
    /// Bytes of file contents written (not the damaged files').
    pub bytes: u64,
    /// Files not restored because the repository could not give their contents; empty (a
    /// count of 0) when every file restored.
    pub damaged: DamagedFiles,
}

/// Files a restore could not restore: a pack holding their contents is missing, shorter than
/// the index says, or corrupted. The restore went on with the other files (as restic's does);
/// these are not in the target, not even partly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamagedFiles {
    /// How many files (each name of a hard-linked file counts).
    pub count: u64,
    /// The first [`DamagedFiles::LISTED`], by path.
    pub files: Vec<DamagedFile>,
    /// How many packs were damaged.
    pub pack_count: u64,
    /// The first [`DamagedFiles::LISTED`] damaged packs, by id, with the first thing that
    /// failed in each.
    pub packs: Vec<DamagedPack>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// Relative to the restore target.
    pub path: String,
    /// The pack (full id) whose damage kept it out.
    pub pack: String,
    /// What failed: `missing`, `shorter than the index says ...`, `blob at offset N:
    /// authentication failed`, ...
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedPack {
    pub id: String,
    pub reason: String,
}

impl DamagedFiles {
    /// How many files and packs the lists hold at most.
    pub const LISTED: usize = 100;
    /// How many of each a message names.
    const NAMED: usize = 5;

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// `2 files could not be restored (a.txt, logs/b.log): pack 3f1e…: missing`, naming the first
/// few files and packs.
impl std::fmt::Display for DamagedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = |listed: usize, count: u64| {
            let more = count.saturating_sub(listed.min(Self::NAMED) as u64);
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        };
        let files: Vec<&str> = self.files.iter().take(Self::NAMED).map(|d| d.path.as_str()).collect();
        write!(
            f,
            "{} file{} could not be restored ({}{})",
            self.count,
            if self.count == 1 { "" } else { "s" },
            files.join(", "),
            named(self.files.len(), self.count)
        )?;
        let packs: Vec<String> = self
            .packs
            .iter()
            .take(Self::NAMED)
            .map(|p| format!("pack {}: {}", p.id, p.reason))
            .collect();
        write!(f, ": {}{}", packs.join("; "), named(self.packs.len(), self.pack_count))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub bytes_done: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The full 64-digit id.
    pub id: String,
    pub time: SystemTime,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    pub parent: Option<String>,
    pub hostname: String,
}

/// Caps glibc's malloc arenas at one for the whole process (a no-op elsewhere, or when
/// `MALLOC_ARENA_MAX` is set). Call it first thing in `main`, before any thread starts (an
/// async runtime's included), in a process that backs volumes up: the engine's threads pass
/// blocks of a MiB and more between them, and every further arena keeps freed blocks of its
/// own resident. Opening a repository calls it too, but then it no longer binds the threads
/// that already allocated.
pub fn limit_malloc_arenas() {
    memory::limit_malloc_arenas();
}

/// Sends rustic_core's `log` records (info and above: its debug and trace records sit on hot
/// paths) to `tracing`, once per process. A no-op when the process already installed a `log`
/// logger (tracing-subscriber's `init` does). rustic_core never logs passwords or keys.
pub fn forward_log_to_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_log::LogTracer::init_with_filter(tracing_log::log::LevelFilter::Info);
    });
}

//! Backups: our own restic-format writer, on all cores (rustic_core's archiver chunks and
//! hashes each file on one thread, and its chunker, packer and indexer are not public).
//!
//! - **Walk.** The calling thread walks the volume through directory handles (never following
//!   a symlink, nor reading an entry that was replaced since it was listed: see
//!   [`crate::beneath`]), directory by directory in name order, at most [`MAX_DEPTH`]
//!   directories deep, and makes each entry's node with the metadata rustic_core's
//!   local source records (mode, ids and names, times with atime = mtime, inode, device id of
//!   hard-linked files, links, size, extended attributes). A file whose node matches the
//!   parent snapshot's (type, size, mtime, ctime, inode) and whose blobs are all in the index
//!   keeps the parent's content list unread, and its extended attributes (any change to them
//!   changes the ctime). Unreadable entries become warnings.
//! - **Files.** Files up to [`REGION`] bytes are jobs for the worker threads (one per core),
//!   small ones several to a job: read whole, chunked, and their chunks stored. A larger file
//!   is chunked in regions of [`REGION`] bytes on the workers, each region from its own start;
//!   the calling thread merges their cuts into the file's (see [`crate::chunker::Merge`]:
//!   identical to chunking it from the start) and hands the chunks each region settles to the
//!   workers to store. At most [`REGIONS_AHEAD`] regions are read ahead of the merge, so memory
//!   does not grow with the file.
//! - **Blobs.** A chunk's id is its SHA-256, the chunks of a job hashed side by side in AVX2
//!   lanes ([`crate::sha256x8`]); a blob already in the index or already stored by this backup
//!   is skipped; others are compressed with zstd (kept only when smaller), encrypted and added
//!   to the data pack being filled. Full packs go to an uploader thread, so the workers go on
//!   while a pack travels to S3.
//! - **Trees.** A directory's tree (restic's JSON, names sorted) is stored when all its files
//!   are, children before parents, in tree packs. Then the index file of the packs not yet
//!   indexed, then the snapshot, whose tree holds the volume's contents under the snapshot
//!   path (each directory above it with mode 0755, as rustic_core wrote them).
//! - **Index.** While the backup runs, the uploader thread also saves an index file of the
//!   packs written so far, as [`IndexEvery`] says (restic saves partial indexes too), so a
//!   backup that dies midway (the agent killed, a timeout) leaves its packs indexed: the next
//!   backup of the same data finds their blobs and does not store them again. Each pack is in
//!   one index file.
//!
//! The parts live in submodules: [`walk`] (with [`metadata`], an entry's node), [`files`],
//! [`packs`] (and the upload), [`index`]; this module holds the types they share and
//! [`Writer::run`], which wires them together.

use crate::backend::{CancelFlag, StoreBackend};
use crate::beneath::{self, Identity};
use crate::chunker::{Chunker, Merge};
use crate::crypto::{DataKey, NONCE, OVERHEAD};
use crate::error::EngineError;
use crate::source::{warn, Warnings};
use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use rustic_core::repofile::{
    BlobType, ConfigFile, Metadata, Node, NodeType, SnapshotFile, SnapshotSummary, Tree,
};
use rustic_core::{DataId, FileType, Id, Progress, ReadBackend, RusticError, TreeId};
use rustix::fs::{FileType as Kind, Stat};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod files;
mod index;
mod metadata;
mod packs;
mod walk;

use files::chunk_data;
use index::seal_file;
use metadata::{read_xattrs, set_xattrs, xattrs, Names, XattrsOf};
use packs::{pack_size, sha256};
use walk::{path_names, tree_size};

/// Files up to this size are one job; larger ones are chunked in regions of this size.
///
/// Regions and the regions read ahead are most of a large file's memory. On a 512 MiB file
/// (2 cores, one run each, first backup / one byte appended): 16 MiB regions, 3 ahead: 6.9 /
/// 3.6 s, 124 / 96 MiB peak RSS; 16 MiB, 2 ahead: 6.1 / 3.5 s, 110 / 79 MiB; 8 MiB, 2 ahead:
/// 7.0 / 3.9 s, 76 / 47 MiB; 4 MiB, 4 ahead: 7.3 / 4.6 s (more catch-ups at region starts).
pub(crate) const REGION: u64 = 8 << 20;
/// Regions of a large file read and chunked ahead of the merge. With one, a 2 GiB file's
/// first backup held 74–76 MiB but took 16.3 s against 13.9–14.6 s (108–113 MiB), and a
/// one-byte append took 12 s on one core against 6 s on both: the next region is chunked
/// while the last one's chunks are hashed.
const REGIONS_AHEAD: usize = 2;
/// Small files handed to a worker at once (their chunks are hashed side by side: eight lanes)
/// and their most bytes together.
const BATCH_FILES: usize = 8;
const BATCH_BYTES: u64 = 4 << 20;
/// Directories this deep below the volume are kept without their contents, with a warning:
/// the walk holds a handle of each directory on its way down (and recurses), so a very deep
/// tree must not exhaust the agent's file descriptors or its stack.
const MAX_DEPTH: usize = 256;
/// The walk's stack: room for [`MAX_DEPTH`] levels of its recursion in a debug build
/// (reserved, not used, where the tree is shallow).
const WALK_STACK: usize = 32 << 20;
/// Blobs per index file (restic's limit for a full index).
const INDEX_BLOBS: usize = 50_000;

/// When a running backup saves an index file of the packs it wrote since the last one:
/// once `packs` are waiting, or when the oldest has waited `age`, whichever comes first.
///
/// restic saves one at 50,000 blobs or 10 minutes. A pack not yet indexed is stored again by
/// the next backup if this one dies (a node agent that restarts retries the volume at once),
/// so the defaults bound that loss: 5 minutes of uploads, or 16 packs (128 to 256 MiB of 8 to
/// 16 MiB packs, about 250 blobs of restic's ~1 MiB chunks). A backup reads every index file
/// when it starts, so their count matters too: a fast backup makes one per 128 to 256 MiB, a
/// slow one at most twelve an hour, and repository maintenance merges them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexEvery {
    pub(crate) packs: usize,
    pub(crate) age: Duration,
}

impl Default for IndexEvery {
    fn default() -> Self {
        IndexEvery {
            packs: 16,
            age: Duration::from_secs(5 * 60),
        }
    }
}

/// What the backup needs from the operation's session.
pub(crate) struct Writer<'a> {
    pub(crate) backend: &'a StoreBackend,
    pub(crate) config: &'a ConfigFile,
    pub(crate) key: &'a DataKey,
    pub(crate) cancel: &'a CancelFlag,
    /// When to save index files while the backup runs.
    pub(crate) index_every: IndexEvery,
    pub(crate) progress: Progress,
    pub(crate) warnings: Warnings,
    /// The repository's name, for messages.
    pub(crate) name: &'a str,
    /// Turns a rustic_core error into ours (cancellation and storage errors first).
    pub(crate) err: &'a (dyn Fn(Box<RusticError>) -> EngineError + Sync),
}

/// What a backup did, for the snapshot summary and the caller.
pub(crate) struct Written {
    pub(crate) snapshot_id: String,
    pub(crate) summary: SnapshotSummary,
    /// Bytes of file contents read (0 for a re-backup where nothing changed).
    pub(crate) bytes_read: u64,
}

/// Where a tree blob is, from the index.
#[derive(Clone, Copy)]
struct Location {
    pack: Id,
    offset: u32,
    length: u32,
    uncompressed: Option<u32>,
}

/// The repository's index as the backup needs it: every data blob's id (to skip stored
/// ones), every tree blob's location (to read the parent's trees) and id.
#[derive(Default)]
struct RepoIndex {
    /// Moved into [`Shared::known`] when the backup starts.
    data: HashSet<Id>,
    trees: HashMap<Id, Location>,
    data_bytes: u64,
}

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    packs: Vec<IndexPackJson>,
}

#[derive(Deserialize)]
struct IndexPackJson {
    id: String,
    #[serde(default)]
    blobs: Vec<IndexBlobJson>,
}

#[derive(Deserialize)]
struct IndexBlobJson {
    id: String,
    #[serde(rename = "type")]
    tpe: String,
    offset: u32,
    length: u32,
    uncompressed_length: Option<u32>,
}

/// One blob as written into a pack.
struct PackEntry {
    tree: bool,
    id: Id,
    raw: [u8; 32],
    offset: u32,
    length: u32,
    uncompressed: Option<u32>,
}

/// A pack being filled.
#[derive(Default)]
struct Pack {
    blobs: Vec<Bytes>,
    entries: Vec<PackEntry>,
    size: u64,
}

/// A written pack, for the index.
struct PackDone {
    id: Id,
    entries: Vec<PackEntry>,
}

/// The written packs no index file names yet.
#[derive(Default)]
struct Unindexed {
    packs: Vec<PackDone>,
    /// When the first of them was written.
    since: Option<Instant>,
}

/// Fills packs of one blob type up to a target size; whoever adds the blob that fills one
/// writes it.
struct Packer {
    tree: bool,
    target: u64,
    current: Mutex<Pack>,
}

/// New blobs, counted for the snapshot summary.
#[derive(Default)]
struct Added {
    data_blobs: AtomicU64,
    data_bytes: AtomicU64,
    data_packed: AtomicU64,
    tree_blobs: AtomicU64,
    tree_bytes: AtomicU64,
    tree_packed: AtomicU64,
    read: AtomicU64,
}

/// What the worker threads share.
struct Shared<'a> {
    w: &'a Writer<'a>,
    chunker: Chunker,
    level: i32,
    known: Mutex<HashSet<Id>>,
    data: Packer,
    /// Written by the uploader thread; indexed by it as [`Writer::index_every`] says, the
    /// rest at the end.
    written: Mutex<Unindexed>,
    added: Added,
    /// Set when the backup failed: workers stop taking jobs.
    stop: AtomicBool,
    /// Set when a worker thread panicked.
    died: AtomicBool,
    /// To the uploader thread; taken (closing the channel) when the backup ends.
    uploads: Mutex<Option<Sender<Pack>>>,
    /// The first failed pack upload.
    upload_error: Mutex<Option<EngineError>>,
    upload_failed: AtomicBool,
}

/// Sets [`Shared::died`] when a worker thread unwinds.
struct DeathNotice<'a>(&'a AtomicBool);

impl Drop for DeathNotice<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// A job for a worker thread.
enum Job {
    /// Whole files of at most [`REGION`] bytes (several small ones at once: their chunks are
    /// hashed side by side).
    Files(Vec<(usize, FileAt)>),
    /// Region `index` of a large file: read and chunk it.
    Region {
        file: Arc<File>,
        start: u64,
        end: u64,
        last: bool,
        index: usize,
    },
    /// Chunks `first..` of the large file being merged (those one region settled): store
    /// them.
    Chunks { first: usize, data: Vec<Bytes> },
}

/// A worker's answer.
enum Done {
    File {
        slot: usize,
        result: Result<FileOutcome, EngineError>,
    },
    Region {
        index: usize,
        result: Result<(Vec<u64>, Bytes), FileFailure>,
    },
    Chunks {
        first: usize,
        result: Result<Vec<Id>, EngineError>,
    },
}

enum FileOutcome {
    /// The content list, the bytes read, and the extended attributes (read on the open
    /// handle, as rustic_core's node JSON holds them).
    Stored {
        ids: Vec<DataId>,
        size: u64,
        xattrs: serde_json::Value,
    },
    /// Unreadable: left out of the snapshot, with a warning.
    Skipped,
}

/// A large file's region failed: reading it (a warning: the file is left out) or storing.
enum FileFailure {
    Read(io::Error),
    Fatal(EngineError),
}

/// A regular file the walk found, for reading: by name relative to its directory's handle,
/// and only if it is still the entry the walk saw.
struct FileAt {
    dir: Arc<OwnedFd>,
    seen: Identity,
    /// For messages; its last component is the name in `dir`.
    path: PathBuf,
}

impl FileAt {
    fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }
}

/// A directory whose tree waits for its files' contents and its subdirectories' trees.
struct PendingDir {
    nodes: Vec<Node>,
    waits: Vec<(usize, Wait)>,
    /// The parent snapshot's tree id for this directory, to count it unchanged.
    parent_tree: Option<Id>,
    /// Whether the parent snapshot had this directory.
    in_parent: bool,
}

enum Wait {
    File(usize),
    Dir(usize),
}

/// The calling thread's state: the walk, pending trees, tree packs.
struct Walk<'s, 'a> {
    sh: &'s Shared<'a>,
    index: RepoIndex,
    jobs: Sender<Job>,
    done: Receiver<Done>,
    files: Vec<Option<Result<FileOutcome, EngineError>>>,
    pending: Vec<Option<PendingDir>>,
    trees: Vec<Option<Id>>,
    /// The first pending directory not finalised yet (they finalise in order).
    next_dir: usize,
    tree_packer: Packer,
    known_trees: HashSet<Id>,
    summary: SnapshotSummary,
    names: Names,
    /// Small files not yet handed to the workers, and their bytes.
    batch: Vec<(usize, FileAt)>,
    batch_bytes: u64,
}

impl Writer<'_> {
    fn fail(&self, message: String) -> EngineError {
        EngineError::Repository {
            repo: self.name.to_string(),
            operation: "backup",
            message,
        }
    }

    fn canceled(&self) -> EngineError {
        EngineError::Canceled {
            repo: self.name.to_string(),
            operation: "backup",
        }
    }

    /// Backs `volume` up as `snap` (hostname, tags and time set) under `as_path`, with
    /// `parent` (the chosen parent snapshot) to compare against.
    pub(crate) fn run(
        &self,
        volume: &Path,
        as_path: &Path,
        mut snap: SnapshotFile,
        parent: Option<&SnapshotFile>,
    ) -> Result<Written, EngineError> {
        let start = rustic_core::jiff::Zoned::now();
        let clock = std::time::Instant::now();
        let poly = self.config.poly().map_err(self.err)?;
        let level = match self.config.zstd().map_err(self.err)? {
            Some(0) | None => zstd::DEFAULT_COMPRESSION_LEVEL,
            Some(level) => level,
        };
        if !matches!(self.config.chunker(), rustic_core::repofile::Chunker::Rabin)
            || self.config.chunk_size() != 1 << 20
            || self.config.chunk_min_size() != 512 << 10
            || self.config.chunk_max_size() != 8 << 20
        {
            return Err(self.fail(
                "the repository's chunker settings differ from restic's (a repository made by \
                 rustic with custom chunk sizes?); back up into a repository made by Stowage or \
                 restic"
                    .into(),
            ));
        }
        let mut index = self.load_index()?;
        let (size, grow, limit) = self.config.packsize(BlobType::Data);
        let target = pack_size(size, grow, limit, index.data_bytes);
        let (tsize, tgrow, tlimit) = self.config.packsize(BlobType::Tree);
        let tree_target = pack_size(tsize, tgrow, tlimit, 0);
        let parent_tree = match parent {
            Some(p) => self.parent_volume_tree(&index, p, as_path),
            None => None,
        };

        let shared = Shared {
            w: self,
            chunker: Chunker::restic(poly),
            level,
            known: Mutex::new(std::mem::take(&mut index.data)),
            data: Packer {
                tree: false,
                target,
                current: Mutex::default(),
            },
            written: Mutex::default(),
            added: Added::default(),
            stop: AtomicBool::new(false),
            died: AtomicBool::new(false),
            uploads: Mutex::new(None),
            upload_error: Mutex::new(None),
            upload_failed: AtomicBool::new(false),
        };
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        let (jobs, job_rx) = bounded::<Job>(workers);
        let (done_tx, done) = unbounded::<Done>();

        let (uploads, upload_rx) = bounded::<Pack>(0);
        *shared.uploads.lock().expect("not poisoned") = Some(uploads);

        let total = std::thread::scope(|scope| -> Result<Id, EngineError> {
            let progress = self.progress.clone();
            let volume_path = volume.to_path_buf();
            let stop = || self.cancel.is_cancelled() || shared.stop.load(Ordering::Relaxed);
            scope.spawn(move || progress.set_length(tree_size(&volume_path, stop)));
            let uploader = scope.spawn(|| shared.upload_all(&upload_rx));
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (rx, tx, sh) = (job_rx.clone(), done_tx.clone(), &shared);
                    scope.spawn(move || sh.work(&rx, &tx))
                })
                .collect();
            drop((job_rx, done_tx));
            // The walk recurses once per directory level: on a thread whose stack holds
            // MAX_DEPTH levels (the caller's may be a runtime's small blocking thread).
            let sh = &shared;
            let walker = std::thread::Builder::new()
                .name("backup-walk".into())
                .stack_size(WALK_STACK)
                .spawn_scoped(scope, move || {
                    let mut walk = Walk {
                        sh,
                        index,
                        jobs,
                        done,
                        files: Vec::new(),
                        pending: Vec::new(),
                        trees: Vec::new(),
                        next_dir: 0,
                        tree_packer: Packer {
                            tree: true,
                            target: tree_target,
                            current: Mutex::default(),
                        },
                        known_trees: HashSet::new(),
                        summary: SnapshotSummary::default(),
                        names: Names::default(),
                        batch: Vec::new(),
                        batch_bytes: 0,
                    };
                    let result = walk.run(volume, as_path, parent_tree);
                    if result.is_err() {
                        sh.stop.store(true, Ordering::Relaxed);
                    }
                    let Walk {
                        jobs,
                        summary,
                        tree_packer,
                        ..
                    } = walk;
                    drop(jobs); // the workers end
                    (result, summary, Some(tree_packer))
                });
            let (mut result, summary, tree_packer) = match walker.map(|w| w.join()) {
                Ok(Ok(walked)) => walked,
                // A panic (reported on stderr) or no thread: the workers ended with the walk.
                failed => {
                    shared.stop.store(true, Ordering::Relaxed);
                    let why = match failed {
                        Err(e) => format!("starting the backup's walk: {e}"),
                        _ => "the backup's walk failed (a panic)".to_string(),
                    };
                    (Err(self.fail(why)), SnapshotSummary::default(), None)
                }
            };
            for handle in handles {
                let _ = handle.join(); // a panic was reported through `died`
            }
            if result.is_ok() {
                for pack in [tree_packer.and_then(|t| t.finish()), shared.data.finish()].into_iter().flatten() {
                    if let Err(e) = shared.upload(pack) {
                        result = Err(e);
                        break;
                    }
                }
            }
            shared.uploads.lock().expect("not poisoned").take(); // the uploader ends
            let _ = uploader.join();
            let root = result?;
            shared.upload_failure()?;
            snap.summary = Some(summary);
            Ok(root)
        })?;
        self.check_cancel()?;
        let rest = std::mem::take(&mut *shared.written.lock().expect("not poisoned"));
        self.write_index(&rest.packs)?;

        let added = &shared.added;
        let mut summary = snap.summary.take().unwrap_or_default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        summary.data_blobs = get(&added.data_blobs);
        summary.tree_blobs = get(&added.tree_blobs);
        summary.data_added_files = get(&added.data_bytes);
        summary.data_added_files_packed = get(&added.data_packed);
        summary.data_added_trees = get(&added.tree_bytes);
        summary.data_added_trees_packed = get(&added.tree_packed);
        summary.data_added = summary.data_added_files + summary.data_added_trees;
        summary.data_added_packed = summary.data_added_files_packed + summary.data_added_trees_packed;
        let end = rustic_core::jiff::Zoned::now();
        summary.command = "backup".into();
        summary.backup_duration = clock.elapsed().as_secs_f64();
        summary.total_duration = summary.backup_duration;
        summary.backup_start = start;
        summary.backup_end = end;
        snap.summary = Some(summary.clone());
        snap.tree = TreeId::from(total);
        snap.paths.add(as_path.display().to_string());
        snap.parent = parent.map(|p| p.id);
        let json = serde_json::to_vec(&snap)
            .map_err(|e| self.fail(format!("encoding the snapshot: {e}")))?;
        let (id, sealed) = seal_file(self.key, &json, level);
        self.backend
            .put_parts(FileType::Snapshot, &id, vec![sealed.into()])
            .map_err(self.err)?;
        Ok(Written {
            snapshot_id: id.to_hex().to_string(),
            summary,
            bytes_read: get(&added.read),
        })
    }

    fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            return Err(self.canceled());
        }
        Ok(())
    }

}

impl Shared<'_> {

}

impl Walk<'_, '_> {

}


#[cfg(test)]
mod tests;

//! Backups: our own restic-format writer, on all cores (rustic_core's archiver chunks and
//! hashes each file on one thread, and its chunker, packer and indexer are not public).
//!
//! - **Walk.** The calling thread walks the volume (never following symlinks), directory by
//!   directory in name order, and makes each entry's node with the metadata rustic_core's
//!   local source records (mode, ids and names, times with atime = mtime, inode, device id of
//!   hard-linked files, links, size, extended attributes). A file whose node matches the
//!   parent snapshot's (type, size, mtime, ctime, inode) and whose blobs are all in the index
//!   keeps the parent's content list unread. Unreadable entries become warnings.
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

use crate::backend::{CancelFlag, StoreBackend};
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
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

impl Packer {
    fn add(&self, raw: [u8; 32], sealed: Vec<u8>, uncompressed: Option<u32>) -> Option<Pack> {
        let mut pack = self.current.lock().expect("not poisoned");
        let length = sealed.len() as u32;
        let offset = pack.size as u32;
        pack.entries.push(PackEntry {
            tree: self.tree,
            id: Id::new(raw),
            raw,
            offset,
            length,
            uncompressed,
        });
        pack.size += u64::from(length);
        pack.blobs.push(Bytes::from(sealed));
        (pack.size >= self.target).then(|| std::mem::take(&mut *pack))
    }

    fn finish(&self) -> Option<Pack> {
        let pack = std::mem::take(&mut *self.current.lock().expect("not poisoned"));
        (!pack.entries.is_empty()).then_some(pack)
    }
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
    Files(Vec<(usize, PathBuf)>),
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
    /// The content list and the bytes read.
    Stored(Vec<DataId>, u64),
    /// Unreadable: left out of the snapshot, with a warning.
    Skipped,
}

/// A large file's region failed: reading it (a warning: the file is left out) or storing.
enum FileFailure {
    Read(io::Error),
    Fatal(EngineError),
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
    batch: Vec<(usize, PathBuf)>,
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
            let mut walk = Walk {
                sh: &shared,
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
            let mut result = walk.run(volume, as_path, parent_tree);
            if result.is_err() {
                shared.stop.store(true, Ordering::Relaxed);
            }
            let Walk {
                jobs,
                summary,
                tree_packer,
                ..
            } = walk;
            drop(jobs); // the workers end
            for handle in handles {
                let _ = handle.join(); // a panic was reported through `died`
            }
            if result.is_ok() {
                for pack in [tree_packer.finish(), shared.data.finish()].into_iter().flatten() {
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

    /// Reads every index file: data blob ids and tree blob locations.
    fn load_index(&self) -> Result<RepoIndex, EngineError> {
        let mut index = RepoIndex::default();
        let ids = self.backend.list(FileType::Index).map_err(self.err)?;
        for id in ids {
            self.check_cancel()?;
            let sealed = self.backend.read_full(FileType::Index, &id).map_err(self.err)?;
            let json = open_file(self.key, &sealed).ok_or_else(|| {
                self.fail(format!(
                    "index file {} cannot be decrypted or decoded; run `restic check`",
                    id.to_hex().as_str()
                ))
            })?;
            let parsed: IndexJson = serde_json::from_slice(&json).map_err(|e| {
                self.fail(format!(
                    "index file {} is not a restic index ({e}); run `restic check`",
                    id.to_hex().as_str()
                ))
            })?;
            for pack in parsed.packs {
                let Ok(pack_id) = pack.id.parse::<Id>() else {
                    continue;
                };
                for blob in pack.blobs {
                    let Ok(blob_id) = blob.id.parse::<Id>() else {
                        continue;
                    };
                    match blob.tpe.as_str() {
                        "data" => {
                            index.data_bytes += u64::from(blob.length);
                            index.data.insert(blob_id);
                        }
                        "tree" => {
                            index.trees.insert(
                                blob_id,
                                Location {
                                    pack: pack_id,
                                    offset: blob.offset,
                                    length: blob.length,
                                    uncompressed: blob.uncompressed_length,
                                },
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(index)
    }

    fn read_tree(&self, index: &RepoIndex, id: &Id) -> Result<Tree, String> {
        let loc = index
            .trees
            .get(id)
            .ok_or_else(|| format!("tree {} is not in the index", id.to_hex().as_str()))?;
        let sealed = self
            .backend
            .read_partial(FileType::Pack, &loc.pack, false, loc.offset, loc.length)
            .map_err(|e| e.display_log())?;
        let plain = self
            .key
            .decrypt(&sealed)
            .ok_or_else(|| format!("tree {} does not decrypt", id.to_hex().as_str()))?;
        let plain = match loc.uncompressed {
            Some(len) => zstd::bulk::decompress(&plain, len as usize).map_err(|e| e.to_string())?,
            None => plain,
        };
        serde_json::from_slice(&plain).map_err(|e| format!("tree {}: {e}", id.to_hex().as_str()))
    }

    /// The parent snapshot's tree of the volume (under `as_path`), if it has one.
    fn parent_volume_tree(
        &self,
        index: &RepoIndex,
        parent: &SnapshotFile,
        as_path: &Path,
    ) -> Option<(Id, Tree)> {
        let mut id = *parent.tree;
        for name in path_names(as_path) {
            let tree = self
                .read_tree(index, &id)
                .inspect_err(|e| tracing::warn!("parent snapshot {}: {e}", parent.id.to_hex().as_str()))
                .ok()?;
            let node = tree
                .nodes
                .into_iter()
                .find(|n| n.is_dir() && n.name() == name.as_os_str())?;
            id = *node.subtree?;
        }
        let tree = self
            .read_tree(index, &id)
            .inspect_err(|e| tracing::warn!("parent snapshot {}: {e}", parent.id.to_hex().as_str()))
            .ok()?;
        Some((id, tree))
    }

    fn write_index(&self, packs: &[PackDone]) -> Result<(), EngineError> {
        let mut batch = Vec::new();
        let mut blobs = 0;
        for (n, pack) in packs.iter().enumerate() {
            let entries: Vec<serde_json::Value> = pack
                .entries
                .iter()
                .map(|e| {
                    let mut blob = serde_json::json!({
                        "id": e.id.to_hex().as_str(),
                        "type": if e.tree { "tree" } else { "data" },
                        "offset": e.offset,
                        "length": e.length,
                    });
                    if let Some(u) = e.uncompressed {
                        blob["uncompressed_length"] = u.into();
                    }
                    blob
                })
                .collect();
            blobs += entries.len();
            batch.push(serde_json::json!({ "id": pack.id.to_hex().as_str(), "blobs": entries }));
            if blobs >= INDEX_BLOBS || n + 1 == packs.len() {
                let json = serde_json::to_vec(&serde_json::json!({ "packs": batch }))
                    .map_err(|e| self.fail(format!("encoding the index: {e}")))?;
                let (id, sealed) = seal_file(self.key, &json, zstd::DEFAULT_COMPRESSION_LEVEL);
                self.backend
                    .put_parts(FileType::Index, &id, vec![sealed.into()])
                    .map_err(self.err)?;
                batch.clear();
                blobs = 0;
            }
        }
        Ok(())
    }
}

impl Shared<'_> {
    fn work(&self, jobs: &Receiver<Job>, done: &Sender<Done>) {
        let _notice = DeathNotice(&self.died);
        let mut zstd = zstd::bulk::Compressor::new(self.level).expect("a valid zstd level");
        for job in jobs {
            if self.stop.load(Ordering::Relaxed) {
                // The backup failed: answer without working, so nobody waits.
                let stopped = || self.stopped();
                let answers: Vec<Done> = match job {
                    Job::Files(files) => files
                        .into_iter()
                        .map(|(slot, _)| Done::File {
                            slot,
                            result: Err(stopped()),
                        })
                        .collect(),
                    Job::Region { index, .. } => vec![Done::Region {
                        index,
                        result: Err(FileFailure::Fatal(stopped())),
                    }],
                    Job::Chunks { first, .. } => vec![Done::Chunks {
                        first,
                        result: Err(stopped()),
                    }],
                };
                for answer in answers {
                    if done.send(answer).is_err() {
                        return;
                    }
                }
                continue;
            }
            let answers = match job {
                Job::Files(files) => self.files(&mut zstd, files),
                Job::Region {
                    file,
                    start,
                    end,
                    last,
                    index,
                } => vec![Done::Region {
                    index,
                    result: self.region(&file, start, end, last),
                }],
                Job::Chunks { first, data } => {
                    let chunks: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
                    let result = self.store_all(&mut zstd, &chunks);
                    vec![Done::Chunks { first, result }]
                }
            };
            for answer in answers {
                if done.send(answer).is_err() {
                    return;
                }
            }
        }
    }

    /// Reads, chunks and stores whole files, the chunks of all of them hashed together.
    fn files(&self, zstd: &mut zstd::bulk::Compressor, files: Vec<(usize, PathBuf)>) -> Vec<Done> {
        let mut read: Vec<(usize, Option<Vec<u8>>)> = Vec::with_capacity(files.len());
        for (slot, path) in files {
            if let Err(e) = self.w.check_cancel() {
                return vec![Done::File {
                    slot,
                    result: Err(e),
                }];
            }
            let mut data = Vec::new();
            let result = File::open(&path).and_then(|mut f| {
                let len = f.metadata()?.len();
                data.reserve_exact(len.min(REGION) as usize);
                f.read_to_end(&mut data)
            });
            match result {
                Ok(_) => {
                    self.added.read.fetch_add(data.len() as u64, Ordering::Relaxed);
                    read.push((slot, Some(data)));
                }
                Err(e) => {
                    warn(&self.w.warnings, format!("{}: skipped, reading failed: {e}", path.display()));
                    read.push((slot, None));
                }
            }
        }
        // Every chunk of every file, and how many each file has.
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut counts = Vec::with_capacity(read.len());
        for (_, data) in &read {
            let Some(data) = data else {
                counts.push(0);
                continue;
            };
            let mut start = 0;
            let cuts = self.chunker.cuts(data, true);
            counts.push(cuts.len());
            for cut in cuts {
                chunks.push(&data[start..cut]);
                start = cut;
            }
        }
        let mut ids = match self.store_all(zstd, &chunks) {
            Ok(ids) => ids.into_iter(),
            Err(e) => {
                let mut answers = Vec::new();
                let mut e = Some(e);
                for (slot, _) in &read {
                    let result = Err(e.take().unwrap_or_else(|| self.stopped()));
                    answers.push(Done::File { slot: *slot, result });
                }
                return answers;
            }
        };
        read.iter()
            .zip(counts)
            .map(|((slot, data), count)| {
                let result = Ok(match data {
                    Some(data) => FileOutcome::Stored(
                        ids.by_ref().take(count).map(DataId::from).collect(),
                        data.len() as u64,
                    ),
                    None => FileOutcome::Skipped,
                });
                Done::File { slot: *slot, result }
            })
            .collect()
    }

    fn region(
        &self,
        file: &File,
        start: u64,
        end: u64,
        last: bool,
    ) -> Result<(Vec<u64>, Bytes), FileFailure> {
        self.w.check_cancel().map_err(FileFailure::Fatal)?;
        let data = read_at(file, start, (end - start) as usize).map_err(FileFailure::Read)?;
        self.added.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        let cuts = self
            .chunker
            .cuts(&data, last)
            .into_iter()
            .map(|c| c as u64 + start)
            .collect();
        Ok((cuts, Bytes::from(data)))
    }

    /// Stores chunks (hashed side by side) unless the repository has them: returns their ids.
    fn store_all(&self, zstd: &mut zstd::bulk::Compressor, chunks: &[&[u8]]) -> Result<Vec<Id>, EngineError> {
        self.w.check_cancel()?;
        let hashes = crate::sha256x8::sha256_many(chunks);
        let mut ids = Vec::with_capacity(chunks.len());
        for (raw, data) in hashes.into_iter().zip(chunks) {
            ids.push(self.store(zstd, raw, data)?);
            self.w.progress.inc(data.len() as u64);
        }
        Ok(ids)
    }

    /// Stores one chunk whose SHA-256 is `raw` unless the repository has it: returns its id.
    fn store(&self, zstd: &mut zstd::bulk::Compressor, raw: [u8; 32], data: &[u8]) -> Result<Id, EngineError> {
        self.w.check_cancel()?;
        let id = Id::new(raw);
        if !self.known.lock().expect("not poisoned").insert(id) {
            return Ok(id);
        }
        // One buffer per blob: the nonce's room, the compressed bytes (or, when compressing
        // does not make them smaller, the chunk itself), encrypted in place, then the MAC.
        let mut buf = io::Cursor::new(vec![0u8; NONCE]);
        buf.get_mut().reserve_exact(data.len() + OVERHEAD - NONCE);
        buf.set_position(NONCE as u64);
        let compressed = zstd.compress_to_buffer(data, &mut buf);
        let mut sealed = buf.into_inner();
        let uncompressed = match compressed {
            Ok(n) if n < data.len() && sealed.len() == NONCE + n => Some(data.len() as u32),
            // Too large for the buffer (incompressible data) or no smaller: stored as it is.
            _ => {
                sealed.truncate(NONCE);
                sealed.extend_from_slice(data);
                None
            }
        };
        self.w.key.encrypt_in_place(&mut sealed);
        self.added.data_blobs.fetch_add(1, Ordering::Relaxed);
        self.added.data_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.added.data_packed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        if let Some(pack) = self.data.add(raw, sealed, uncompressed) {
            self.upload(pack)?;
        }
        Ok(id)
    }

    /// Hands a full pack to the uploader thread, waiting until it takes it (so at most two
    /// full packs are held besides the one filling: the one written and the one handed over).
    fn upload(&self, pack: Pack) -> Result<(), EngineError> {
        self.upload_failure()?;
        let sender = self.uploads.lock().expect("not poisoned").clone();
        let sent = sender.map(|s| s.send(pack).is_ok());
        if sent != Some(true) {
            self.upload_failure()?;
            return Err(self.w.fail("the backup's pack uploader ended early".into()));
        }
        Ok(())
    }

    /// The uploader thread: writes the packs handed to it, in turn, and the index files of
    /// those written when they are due, until the backup ends or one fails (the failure is
    /// kept for [`Self::upload_failure`]).
    fn upload_all(&self, packs: &Receiver<Pack>) {
        let _notice = DeathNotice(&self.died);
        loop {
            let next = match self.index_deadline() {
                Some(deadline) => packs.recv_deadline(deadline),
                None => packs.recv().map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
            };
            let result = match next {
                Ok(_) if self.stop.load(Ordering::Relaxed) => continue,
                Ok(pack) => self.write_pack(pack).and_then(|()| self.index_if_due()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.index_if_due(),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            if let Err(e) = result {
                self.upload_error.lock().expect("not poisoned").get_or_insert(e);
                self.upload_failed.store(true, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// When the packs waiting for an index file have waited long enough; `None` when none
    /// wait, or once the backup failed or was canceled (no index files are saved then).
    fn index_deadline(&self) -> Option<Instant> {
        if self.stop.load(Ordering::Relaxed) || self.w.cancel.is_cancelled() {
            return None;
        }
        let since = self.written.lock().expect("not poisoned").since?;
        since.checked_add(self.w.index_every.age)
    }

    /// Saves an index file of the packs written since the last one, when enough are waiting
    /// or the oldest has waited long enough (not once the backup failed or was canceled).
    fn index_if_due(&self) -> Result<(), EngineError> {
        if self.stop.load(Ordering::Relaxed) || self.w.cancel.is_cancelled() {
            return Ok(());
        }
        let every = self.w.index_every;
        let packs = {
            let mut written = self.written.lock().expect("not poisoned");
            let due = written.packs.len() >= every.packs
                || written.since.is_some_and(|since| since.elapsed() >= every.age);
            if !due {
                return Ok(());
            }
            std::mem::take(&mut *written).packs
        };
        self.w.write_index(&packs)
    }

    /// The failure of a pack upload, once one failed (the first caller gets the storage
    /// error itself).
    fn upload_failure(&self) -> Result<(), EngineError> {
        if !self.upload_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self.upload_error.lock().expect("not poisoned").take().unwrap_or_else(|| self.stopped()))
    }

    /// The error of work refused after the backup failed (the failure itself is reported by
    /// whoever met it first).
    fn stopped(&self) -> EngineError {
        if self.w.cancel.is_cancelled() {
            return self.w.canceled();
        }
        self.w.fail("stopped after an earlier failure".into())
    }

    /// Writes a pack: its blobs, the encrypted header, the header's length; the pack's id is
    /// the SHA-256 of all of it.
    fn write_pack(&self, pack: Pack) -> Result<(), EngineError> {
        let mut header = Vec::with_capacity(pack.entries.len() * 41);
        for e in &pack.entries {
            let kind = match (e.tree, e.uncompressed.is_some()) {
                (false, false) => 0u8,
                (true, false) => 1,
                (false, true) => 2,
                (true, true) => 3,
            };
            header.push(kind);
            header.extend_from_slice(&e.length.to_le_bytes());
            if let Some(u) = e.uncompressed {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(&e.raw);
        }
        let header = self.w.key.encrypt(&header);
        let header_len = (header.len() as u32).to_le_bytes();
        let mut parts = pack.blobs;
        parts.push(Bytes::from(header));
        parts.push(Bytes::copy_from_slice(&header_len));
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for part in &parts {
            hash.update(part);
        }
        let id = Id::new(hash.finish().as_ref().try_into().expect("32 bytes"));
        self.w
            .backend
            .put_parts(FileType::Pack, &id, parts)
            .map_err(self.w.err)?;
        let mut written = self.written.lock().expect("not poisoned");
        written.since.get_or_insert_with(Instant::now);
        written.packs.push(PackDone {
            id,
            entries: pack.entries,
        });
        Ok(())
    }
}

impl Walk<'_, '_> {
    fn w(&self) -> &Writer<'_> {
        self.sh.w
    }

    /// Walks the volume and stores its trees; returns the snapshot's root tree.
    fn run(
        &mut self,
        volume: &Path,
        as_path: &Path,
        parent: Option<(Id, Tree)>,
    ) -> Result<Id, EngineError> {
        let root = self.dir(volume, parent, true)?;
        self.drain_until(|walk| walk.trees[root].is_some())?;
        let mut id = self.trees[root].expect("finalised");
        let root_meta = Metadata {
            mode: Some(0o755),
            ..Default::default()
        };
        for name in path_names(as_path).iter().rev() {
            let mut node = Node::new_node(name, NodeType::Dir, root_meta.clone());
            node.subtree = Some(TreeId::from(id));
            id = self.store_tree(Tree { nodes: vec![node] })?;
        }
        Ok(id)
    }

    /// Handles answers until `ready` holds, finalising the directories that can be.
    fn drain_until(&mut self, ready: impl Fn(&Self) -> bool) -> Result<(), EngineError> {
        self.flush_files()?;
        loop {
            self.finalise()?;
            if ready(self) {
                return Ok(());
            }
            let done = self.recv()?;
            self.answer(done)?;
        }
    }

    /// Records a worker's answer about a small file.
    fn answer(&mut self, done: Done) -> Result<(), EngineError> {
        match done {
            Done::File { slot, result } => {
                let outcome = result?;
                self.files[slot] = Some(Ok(outcome));
                Ok(())
            }
            Done::Region { .. } | Done::Chunks { .. } => {
                Err(self.w().fail("a large file's answer arrived after the file".into()))
            }
        }
    }

    /// The next worker answer; an error when a worker thread died (a panic), whose answer
    /// would never come.
    fn recv(&self) -> Result<Done, EngineError> {
        loop {
            match self.done.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(done) => return Ok(done),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.sh.upload_failure()?;
                    if self.sh.died.load(Ordering::Relaxed) {
                        return Err(self.w().fail("a backup worker thread failed".into()));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.w().fail("the backup's worker threads ended early".into()))
                }
            }
        }
    }

    /// Queues a small file for the workers, in batches of up to [`BATCH_FILES`] files and
    /// [`BATCH_BYTES`] bytes.
    fn queue_file(&mut self, slot: usize, path: PathBuf, size: u64) -> Result<(), EngineError> {
        if !self.batch.is_empty() && self.batch_bytes + size > BATCH_BYTES {
            self.flush_files()?;
        }
        self.batch.push((slot, path));
        self.batch_bytes += size;
        if self.batch.len() >= BATCH_FILES {
            self.flush_files()?;
        }
        Ok(())
    }

    fn flush_files(&mut self) -> Result<(), EngineError> {
        if !self.batch.is_empty() {
            self.batch_bytes = 0;
            let files = std::mem::take(&mut self.batch);
            self.submit(Job::Files(files))?;
        }
        Ok(())
    }

    fn submit(&self, job: Job) -> Result<(), EngineError> {
        self.jobs
            .send(job)
            .map_err(|_| self.w().fail("the backup's worker threads ended early".into()))
    }

    /// Walks directory `path` (its parent snapshot's tree being `parent`), returns its
    /// pending directory's number.
    fn dir(
        &mut self,
        path: &Path,
        parent: Option<(Id, Tree)>,
        is_root: bool,
    ) -> Result<usize, EngineError> {
        self.w().check_cancel()?;
        let mut names: Vec<OsString> = match std::fs::read_dir(path) {
            Ok(entries) => entries
                .filter_map(|e| match e {
                    Ok(e) => Some(e.file_name()),
                    Err(e) => {
                        warn(&self.w().warnings, format!("{}: skipped an entry: {e}", path.display()));
                        None
                    }
                })
                .collect(),
            Err(e) if is_root => {
                return Err(self.w().fail(format!(
                    "reading the volume directory {}: {e}",
                    path.display()
                )))
            }
            Err(e) => {
                let message = format!("{}: skipped its contents, reading failed: {e}", path.display());
                warn(&self.w().warnings, message);
                Vec::new()
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let (parent_id, parent_nodes) = match parent {
            Some((id, tree)) => (Some(id), tree.nodes),
            None => (None, Vec::new()),
        };
        let parent_nodes: HashMap<OsString, Node> = parent_nodes
            .into_iter()
            .map(|n| (OsString::from(n.name()), n))
            .collect();
        let mut dir = PendingDir {
            nodes: Vec::with_capacity(names.len()),
            waits: Vec::new(),
            parent_tree: parent_id,
            in_parent: parent_id.is_some(),
        };
        for name in names {
            self.w().check_cancel()?;
            let full = path.join(&name);
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(e) => {
                    warn(&self.w().warnings, format!("{}: skipped: {e}", full.display()));
                    continue;
                }
            };
            let Some(mut node) = self.node(&name, &full, &meta) else {
                continue;
            };
            let before = parent_nodes.get(&name);
            match &node.node_type {
                NodeType::Dir => {
                    let parent_sub = before
                        .filter(|p| p.is_dir())
                        .and_then(|p| p.subtree)
                        .and_then(|id| match self.w().read_tree(&self.index, &id) {
                            Ok(tree) => Some((*id, tree)),
                            Err(e) => {
                                tracing::warn!("parent tree of {}: {e}", full.display());
                                None
                            }
                        });
                    let sub = self.dir(&full, parent_sub, false)?;
                    dir.waits.push((dir.nodes.len(), Wait::Dir(sub)));
                    dir.nodes.push(node);
                }
                _ => {
                    // Files and the other entries count as files, as in restic's summary.
                    self.summary.total_files_processed += 1;
                    let is_file = matches!(node.node_type, NodeType::File);
                    if is_file {
                        self.summary.total_bytes_processed += node.meta.size;
                    }
                    match before {
                        Some(p) if self.unchanged(p, &node, is_file) => {
                            self.summary.files_unmodified += 1;
                            if is_file {
                                node.content = p.content.clone();
                                self.w().progress.inc(node.meta.size);
                            }
                            dir.nodes.push(node);
                            continue;
                        }
                        Some(_) => self.summary.files_changed += 1,
                        None => self.summary.files_new += 1,
                    }
                    if !is_file {
                        dir.nodes.push(node);
                    } else if node.meta.size > REGION {
                        if let Some((ids, size)) = self.large_file(&full, node.meta.size)? {
                            node.content = Some(ids);
                            node.meta.size = size;
                            dir.nodes.push(node);
                        }
                    } else {
                        let slot = self.files.len();
                        self.files.push(None);
                        self.queue_file(slot, full, node.meta.size)?;
                        dir.waits.push((dir.nodes.len(), Wait::File(slot)));
                        dir.nodes.push(node);
                        self.poll()?;
                    }
                }
            }
        }
        self.flush_files()?;
        let k = self.pending.len();
        self.pending.push(Some(dir));
        self.trees.push(None);
        self.finalise()?;
        Ok(k)
    }

    /// Takes the answers that are there without waiting.
    fn poll(&mut self) -> Result<(), EngineError> {
        while let Ok(done) = self.done.try_recv() {
            self.answer(done)?;
        }
        self.finalise()
    }

    /// Whether the parent's node `p` stands for `node` (a file: unread): as restic and
    /// rustic_core compare (type, size, mtime, ctime, inode), and a file's blobs are stored.
    fn unchanged(&self, p: &Node, node: &Node, is_file: bool) -> bool {
        let (a, b) = (&p.meta, &node.meta);
        p.node_type == node.node_type
            && a.size == b.size
            && a.mtime == b.mtime
            && a.ctime == b.ctime
            && (a.inode == 0 || b.inode == 0 || a.inode == b.inode)
            && (!is_file || p.content.as_ref().is_some_and(|c| {
                let known = self.sh.known.lock().expect("not poisoned");
                c.iter().all(|id| known.contains(&**id))
            }))
    }

    /// Stores the trees of the pending directories whose contents are all known, in order.
    fn finalise(&mut self) -> Result<(), EngineError> {
        while self.next_dir < self.pending.len() {
            let k = self.next_dir;
            let ready = {
                let dir = self.pending[k].as_ref().expect("not finalised yet");
                dir.waits.iter().all(|(_, wait)| match wait {
                    Wait::File(slot) => self.files[*slot].is_some(),
                    Wait::Dir(sub) => self.trees[*sub].is_some(),
                })
            };
            if !ready {
                return Ok(());
            }
            let dir = self.pending[k].take().expect("not finalised yet");
            let mut nodes: Vec<Option<Node>> = dir.nodes.into_iter().map(Some).collect();
            for (at, wait) in dir.waits {
                match wait {
                    Wait::File(slot) => match self.files[slot].take().expect("ready") {
                        Ok(FileOutcome::Stored(ids, size)) => {
                            let node = nodes[at].as_mut().expect("present");
                            node.content = Some(ids);
                            node.meta.size = size;
                        }
                        Ok(FileOutcome::Skipped) => nodes[at] = None,
                        Err(e) => return Err(e),
                    },
                    Wait::Dir(sub) => {
                        let node = nodes[at].as_mut().expect("present");
                        node.subtree = Some(TreeId::from(self.trees[sub].expect("ready")));
                    }
                }
            }
            let tree = Tree {
                nodes: nodes.into_iter().flatten().collect(),
            };
            let id = self.store_tree(tree)?;
            self.summary.total_dirs_processed += 1;
            match (dir.in_parent, dir.parent_tree == Some(id)) {
                (true, true) => self.summary.dirs_unmodified += 1,
                (true, false) => self.summary.dirs_changed += 1,
                (false, _) => self.summary.dirs_new += 1,
            }
            self.trees[k] = Some(id);
            self.next_dir += 1;
        }
        Ok(())
    }

    fn store_tree(&mut self, tree: Tree) -> Result<Id, EngineError> {
        let mut json = serde_json::to_vec(&tree)
            .map_err(|e| self.w().fail(format!("encoding a tree: {e}")))?;
        json.push(b'\n');
        self.summary.total_dirsize_processed += json.len() as u64;
        let raw = sha256(&json);
        let id = Id::new(raw);
        if self.index.trees.contains_key(&id) || !self.known_trees.insert(id) {
            return Ok(id);
        }
        let compressed = zstd::bulk::compress(&json, self.sh.level)
            .map_err(|e| self.w().fail(format!("compressing a tree: {e}")))?;
        let (plain, uncompressed) = if compressed.len() < json.len() {
            (&compressed[..], Some(json.len() as u32))
        } else {
            (&json[..], None)
        };
        let sealed = self.w().key.encrypt(plain);
        let added = &self.sh.added;
        added.tree_blobs.fetch_add(1, Ordering::Relaxed);
        added.tree_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
        added.tree_packed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        if let Some(pack) = self.tree_packer.add(raw, sealed, uncompressed) {
            self.sh.upload(pack)?;
        }
        Ok(id)
    }

    /// Backs up a file larger than [`REGION`]: its regions chunked on the workers, merged
    /// here, its chunks stored on the workers. `None` when it could not be read (a warning).
    fn large_file(
        &mut self,
        path: &Path,
        size: u64,
    ) -> Result<Option<(Vec<DataId>, u64)>, EngineError> {
        self.flush_files()?;
        let file = match File::open(path) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                warn(&self.w().warnings, format!("{}: skipped, reading failed: {e}", path.display()));
                return Ok(None);
            }
        };
        let starts: Vec<u64> = (0..size).step_by(REGION as usize).collect();
        let n = starts.len();
        let region_end = |i: usize| starts.get(i + 1).copied().unwrap_or(size);
        let chunker = self.sh.chunker.clone();
        let mut merge = Merge::new(&starts, size);
        // Each region's cuts, until merged; `None` while it is out.
        let mut regions: Vec<Option<Vec<u64>>> = vec![None; n];
        let mut buffers: BTreeMap<usize, Bytes> = BTreeMap::new();
        let (mut submitted, mut merged, mut emitted, mut stored) = (0, 0, 0, 0);
        let mut cuts: Vec<u64> = Vec::new();
        let mut ids: Vec<Option<Id>> = Vec::new();
        let mut failure: Option<io::Error> = None;
        loop {
            while failure.is_none() && submitted < n && submitted < merged + REGIONS_AHEAD {
                self.submit(Job::Region {
                    file: file.clone(),
                    start: starts[submitted],
                    end: region_end(submitted),
                    last: submitted + 1 == n,
                    index: submitted,
                })?;
                submitted += 1;
            }
            while failure.is_none() && merged < n && regions[merged].is_some() {
                let region = regions[merged].take().expect("checked");
                merged += 1;
                // Most chunks end within 2 MiB (min 512 KiB + 1 MiB on average): read that
                // first, the maximum chunk size only when no cut is in it.
                let mut catch_up = |pos: u64| -> io::Result<u64> {
                    let most = (size - pos).min(chunker.max as u64) as usize;
                    let mut len = most.min(2 << 20);
                    loop {
                        let mut data = vec![0u8; len];
                        file.read_exact_at(&mut data, pos)?;
                        match chunker.next_cut(&data) {
                            Some(cut) => return Ok(pos + cut as u64),
                            None if len == most => return Ok(pos + len as u64),
                            None => len = most,
                        }
                    }
                };
                match merge.push(&region, &mut catch_up) {
                    Ok(new) => cuts.extend(new),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                // The chunks this region settled, as one job (hashed side by side).
                let first = ids.len();
                let mut batch = Vec::new();
                while ids.len() < cuts.len() {
                    let at = ids.len();
                    let a = if at == 0 { 0 } else { cuts[at - 1] };
                    let b = cuts[at];
                    let data = match chunk_data(&buffers, &starts, a, b) {
                        Some(d) => d,
                        None => {
                            let mut d = vec![0u8; (b - a) as usize];
                            if let Err(e) = file.read_exact_at(&mut d, a) {
                                failure = Some(e);
                                break;
                            }
                            Bytes::from(d)
                        }
                    };
                    ids.push(None);
                    batch.push(data);
                }
                if !batch.is_empty() {
                    emitted += batch.len();
                    self.submit(Job::Chunks { first, data: batch })?;
                }
                let pos = cuts.last().copied().unwrap_or(0);
                buffers.retain(|&i, _| region_end(i) > pos);
            }
            let out = (merged..submitted).filter(|&i| regions[i].is_none()).count();
            if stored == emitted && (merged == n || (failure.is_some() && out == 0)) {
                break;
            }
            let done = self.recv()?;
            match done {
                Done::Region { index, result } => match result {
                    Ok((region_cuts, buffer)) => {
                        regions[index] = Some(region_cuts);
                        if failure.is_none() {
                            buffers.insert(index, buffer);
                        }
                    }
                    Err(FileFailure::Read(e)) => {
                        regions[index] = Some(Vec::new());
                        failure.get_or_insert(e);
                    }
                    Err(FileFailure::Fatal(e)) => return Err(e),
                },
                Done::Chunks { first, result } => {
                    for (i, id) in result?.into_iter().enumerate() {
                        ids[first + i] = Some(id);
                        stored += 1;
                    }
                }
                other => self.answer(other)?,
            }
            self.finalise()?;
        }
        if let Some(e) = failure {
            let message = format!("{}: skipped, reading failed: {e}", path.display());
            warn(&self.w().warnings, message);
            return Ok(None);
        }
        let ids = ids.into_iter().map(|id| DataId::from(id.expect("stored"))).collect();
        Ok(Some((ids, size)))
    }

    /// The node of `full` (named `name`), or `None` with a warning.
    fn node(&mut self, name: &OsStr, full: &Path, m: &std::fs::Metadata) -> Option<Node> {
        let time = |secs: i64, nanos: i64| rustic_core::jiff::Timestamp::new(secs, nanos as i32).ok();
        let mtime = time(m.mtime(), m.mtime_nsec());
        let is_dir = m.is_dir();
        let meta = Metadata {
            mode: Some(go_mode(m.mode())),
            mtime,
            atime: mtime,
            ctime: time(m.ctime(), m.ctime_nsec()),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            user: self.names.user(m.uid()),
            group: self.names.group(m.gid()),
            inode: m.ino(),
            device_id: if m.nlink() > 1 && !is_dir { m.dev() } else { 0 },
            size: if is_dir { 0 } else { m.len() },
            links: if is_dir { 0 } else { m.nlink() },
            extended_attributes: serde_json::from_value(xattrs(full)).unwrap_or_default(),
        };
        let ft = m.file_type();
        let node_type = if is_dir {
            NodeType::Dir
        } else if ft.is_symlink() {
            match std::fs::read_link(full) {
                Ok(target) => NodeType::from_link(&target),
                Err(e) => {
                    warn(&self.w().warnings, format!("{}: skipped: {e}", full.display()));
                    return None;
                }
            }
        } else if ft.is_block_device() {
            NodeType::Dev { device: m.rdev() }
        } else if ft.is_char_device() {
            NodeType::Chardev { device: m.rdev() }
        } else if ft.is_fifo() {
            NodeType::Fifo
        } else if ft.is_socket() {
            NodeType::Socket
        } else {
            NodeType::File
        };
        Some(Node::new_node(name, node_type, meta))
    }
}

/// `len` bytes of `file` from `offset`, into a buffer that is not zeroed first (zeroing 8 MiB
/// regions took a twentieth of a backup's CPU).
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut data: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0;
    while done < len {
        let spare = &mut data.spare_capacity_mut()[..len - done];
        let at = libc::off_t::try_from(offset + done as u64).map_err(io::Error::other)?;
        // SAFETY: pread writes at most `spare.len()` bytes into the vector's spare capacity.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            n if n > 0 => {
                done += n as usize;
                // SAFETY: the first `done` bytes were written by pread.
                unsafe { data.set_len(done) };
            }
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter")),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(data)
}

/// The bytes `a..b` of the file from the region buffers, if they hold them.
fn chunk_data(buffers: &BTreeMap<usize, Bytes>, starts: &[u64], a: u64, b: u64) -> Option<Bytes> {
    let first = starts.partition_point(|&s| s <= a) - 1;
    let last = starts.partition_point(|&s| s < b) - 1;
    if first == last {
        let buf = buffers.get(&first)?;
        let base = starts[first];
        return Some(buf.slice((a - base) as usize..(b - base) as usize));
    }
    let mut out = Vec::with_capacity((b - a) as usize);
    for (i, &base) in starts.iter().enumerate().take(last + 1).skip(first) {
        let buf = buffers.get(&i)?;
        let from = a.max(base) - base;
        let to = b.min(base + buf.len() as u64) - base;
        out.extend_from_slice(&buf[from as usize..to as usize]);
    }
    Some(Bytes::from(out))
}

/// The data pack size rustic_core uses for a repository holding `current` bytes of that
/// type: the configured size growing with the square root of the repository, up to the limit.
fn pack_size(size: u32, grow: u32, limit: u32, current: u64) -> u64 {
    let grown = u64::from(size) + current.isqrt() * u64::from(grow);
    grown.min(u64::from(limit)).min(u64::from(u32::MAX))
}

/// The names of the directories of a snapshot path, from the root.
fn path_names(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

/// The total size of the regular files under `root`, for progress (0 once `stop` holds).
fn tree_size(root: &Path, stop: impl Fn() -> bool) -> u64 {
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if stop() {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// SHA-256, restic's blob and file ids.
fn sha256(data: &[u8]) -> [u8; 32] {
    crate::sha256x8::one(data)
}

/// A repository file as restic v2 stores it: the version byte 2, the zstd-compressed JSON,
/// encrypted; its id is the SHA-256 of the stored bytes.
fn seal_file(key: &DataKey, json: &[u8], level: i32) -> (Id, Vec<u8>) {
    let mut plain = vec![2u8];
    plain.extend(zstd::bulk::compress(json, level).expect("zstd compresses in memory"));
    let sealed = key.encrypt(&plain);
    (Id::new(sha256(&sealed)), sealed)
}

/// The JSON of a stored repository file: uncompressed (restic v1, starting with `{` or `[`)
/// or compressed (the version byte 2 and zstd).
fn open_file(key: &DataKey, sealed: &[u8]) -> Option<Vec<u8>> {
    let plain = key.decrypt(sealed)?;
    match plain.first() {
        Some(b'{' | b'[') => Some(plain),
        Some(2) => zstd::stream::decode_all(&plain[1..]).ok(),
        _ => None,
    }
}

/// Go's `os.FileMode` for a Unix mode, as restic stores it.
fn go_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const FIFO: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHARDEV: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    const IRREGULAR: u32 = 1 << 19;
    let mut go = mode & 0o777;
    go |= match mode & libc::S_IFMT {
        libc::S_IFSOCK => SOCKET,
        libc::S_IFLNK => SYMLINK,
        libc::S_IFBLK => DEVICE,
        libc::S_IFDIR => DIR,
        libc::S_IFCHR => CHARDEV | DEVICE,
        libc::S_IFIFO => FIFO,
        libc::S_IFREG => 0,
        _ => IRREGULAR,
    };
    if mode & libc::S_ISUID != 0 {
        go |= SETUID;
    }
    if mode & libc::S_ISGID != 0 {
        go |= SETGID;
    }
    if mode & libc::S_ISVTX != 0 {
        go |= STICKY;
    }
    go
}

/// User and group names by id, looked up once each.
#[derive(Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                // SAFETY: getpwuid_r with the buffers `name_by_id` hands it.
                name_by_id(|entry, buf, len, out| unsafe { libc::getpwuid_r(uid, entry, buf, len, out) }, |p: &libc::passwd| p.pw_name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                // SAFETY: getgrgid_r with the buffers `name_by_id` hands it.
                name_by_id(|entry, buf, len, out| unsafe { libc::getgrgid_r(gid, entry, buf, len, out) }, |g: &libc::group| g.gr_name)
            })
            .clone()
    }
}

/// The name a reentrant libc lookup by id (`getpwuid_r`, `getgrgid_r`) finds: `lookup` fills an
/// entry of type `T` using a buffer, `name` points at the entry's name in that buffer.
fn name_by_id<T>(
    lookup: impl FnOnce(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    name: impl FnOnce(&T) -> *const libc::c_char,
) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut entry = std::mem::MaybeUninit::<T>::zeroed();
    let mut out = std::ptr::null_mut();
    let rc = lookup(entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out);
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: the lookup succeeded, so it filled the entry, whose name is a C string in `buf`
    // (alive until the end of this function).
    let name = unsafe { std::ffi::CStr::from_ptr(name(entry.assume_init_ref())) };
    Some(name.to_string_lossy().into_owned())
}

/// The extended attributes of `path` (not following a symlink) as rustic_core's node JSON
/// holds them (name, base64 value); none when they cannot be read.
fn xattrs(path: &Path) -> serde_json::Value {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return serde_json::Value::Array(Vec::new());
    };
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer is writable for its length; the path is a C string.
        let n = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && names.len() < 1 << 20 {
            names.resize(names.len() * 4, 0);
            continue;
        }
        return serde_json::Value::Array(Vec::new());
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(c_name) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 4096];
        let got = loop {
            // SAFETY: as above.
            let n = unsafe {
                libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if n >= 0 {
                break Some(n as usize);
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && value.len() < 1 << 24 {
                value.resize(value.len() * 4, 0);
                continue;
            }
            break None;
        };
        let Some(n) = got else {
            continue;
        };
        out.push(serde_json::json!({
            "name": String::from_utf8_lossy(name),
            "value": base64(&value[..n]),
        }));
    }
    serde_json::Value::Array(out)
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

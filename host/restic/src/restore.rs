//! Restores: our own loop over rustic_core's public API (trees, nodes, the index), with a
//! bounded pipeline instead of rustic_core's restore.
//!
//! rustic_core 0.13's restore runs 20 reader threads and queues every decrypted blob for its
//! writers without bound; restores of 2 GiB peaked at ~350 MiB however the reads were budgeted.
//! Here:
//!
//! 1. **Plan.** One walk of the snapshot's trees creates directories, symlinks and special
//!    files, creates each regular file at its full length (holes), and records, per pack,
//!    which blobs go where (file, offset). A file already in the target with the snapshot's
//!    size and mtime is kept as it is (as restic and rustic_core do, so a retried restore
//!    does not rewrite what it finished); any other entry in the way of a file or symlink is
//!    replaced; entries the snapshot does not have are left alone.
//! 2. **Contents.** The blobs of each pack are read in ranges of adjacent blobs (up to
//!    [`MAX_RANGE`], gaps up to [`MAX_GAP`] read through), by [`READERS`] reader threads into
//!    a fixed pool of buffers, and decrypted, decompressed and written by one worker thread
//!    per core (2 to 4). A reader waits for a free buffer, so at most the pool's buffers
//!    (plus one read in flight per reader) are held: memory does not grow with the restore.
//!    All-zero blobs are not written: the file is already zeros there (a hole).
//! 3. **Metadata.** A second walk makes hard links, then sets ownership (numeric ids),
//!    mode, extended attributes and times, directories after their contents.
//!
//! Blobs are authenticated by restic's MAC (AES-256-CTR + Poly1305-AES with the repository
//! key), which rejects damaged or foreign data; like restic's and rustic_core's restores,
//! their SHA-256 is not recomputed.

use crate::backend::{CancelFlag, StoreBackend};
use crate::crypto::{DataKey, OVERHEAD};
use crate::error::EngineError;
use crossbeam_channel::{bounded, Receiver, Sender};
use rustic_core::repofile::{Node, NodeType};
use rustic_core::{
    FileType, Id, IndexedFullStatus, LsOptions, Progress, ReadBackend, Repository, RusticError,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::num::NonZeroU32;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The most bytes of a pack one read takes (a single larger blob is read alone).
pub(crate) const MAX_RANGE: u32 = 4 << 20;
/// Unneeded bytes between two needed blobs of a pack that one read still spans.
pub(crate) const MAX_GAP: u32 = 256 << 10;
/// Reader threads: reads wait on storage, so two keep the workers fed on a local disk and
/// overlap latency on S3.
pub(crate) const READERS: usize = 2;

/// What a restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Entries other than directories.
    pub(crate) files: u64,
    /// Bytes of file contents written (files kept as they were are not counted).
    pub(crate) bytes: u64,
}

/// Everything a restore needs from the operation's session.
pub(crate) struct Restore<'a> {
    pub(crate) repo: &'a Repository<IndexedFullStatus>,
    pub(crate) backend: &'a StoreBackend,
    pub(crate) key: &'a DataKey,
    pub(crate) cancel: &'a CancelFlag,
    /// The repository's name, for messages.
    pub(crate) name: &'a str,
    /// Turns a rustic_core error into ours (cancellation and storage errors first).
    pub(crate) err: &'a (dyn Fn(Box<RusticError>) -> EngineError + Sync),
}

/// One piece of a file: the blob at `location` of a pack goes to `file` at `at`.
struct Piece {
    offset: u32,
    length: u32,
    uncompressed: Option<NonZeroU32>,
    file: u32,
    at: u64,
}

/// One read: adjacent blobs of a pack.
struct Range {
    pack: Id,
    offset: u32,
    length: u32,
    blobs: Vec<RangeBlob>,
}

struct RangeBlob {
    /// Within the range.
    start: u32,
    length: u32,
    uncompressed: Option<NonZeroU32>,
    /// (file, offset): a blob may fill several places.
    targets: Vec<(u32, u64)>,
}

#[derive(Default)]
struct Plan {
    files: Vec<PathBuf>,
    packs: BTreeMap<Id, Vec<Piece>>,
    /// Canonical path of each hard-linked inode (device, inode) restored so far.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    restored: Restored,
}

/// Failures that do not stop a restore (as with restic): ownership when not root, say.
#[derive(Default)]
struct MetaWarnings(Mutex<BTreeMap<&'static str, (u64, String)>>);

impl MetaWarnings {
    fn add(&self, what: &'static str, path: &Path, e: std::io::Error) {
        let mut all = self.0.lock().expect("not poisoned");
        let entry = all
            .entry(what)
            .or_insert_with(|| (0, format!("{}: {e}", path.display())));
        entry.0 += 1;
    }

    fn log(&self, repo: &str) {
        for (what, (count, first)) in self.0.lock().expect("not poisoned").iter() {
            tracing::warn!(
                "restic repository {repo}: restore could not {what} of {count} entries \
                 (first: {first})"
            );
        }
    }
}

impl Restore<'_> {
    fn io_err(&self, path: &Path, what: &str, e: std::io::Error) -> EngineError {
        EngineError::Repository {
            repo: self.name.to_string(),
            operation: "restore",
            message: format!("{what} {}: {e}", path.display()),
        }
    }

    fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            return Err(EngineError::Canceled {
                repo: self.name.to_string(),
                operation: "restore",
            });
        }
        Ok(())
    }

    /// Restores the contents of directory node `root` into `target`.
    pub(crate) fn run(&self, root: &Node, target: &Path) -> Result<Restored, EngineError> {
        let warnings = MetaWarnings::default();
        let plan = self.plan(root, target, &warnings)?;
        let progress = self.repo.progress_bytes("restoring file contents...");
        progress.set_length(plan.restored.bytes);
        self.contents(&plan, &progress)?;
        progress.finish();
        self.metadata(root, target, &plan, &warnings)?;
        warnings.log(self.name);
        Ok(plan.restored)
    }

    fn plan(
        &self,
        root: &Node,
        target: &Path,
        warnings: &MetaWarnings,
    ) -> Result<Plan, EngineError> {
        let mut plan = Plan::default();
        let nodes = self
            .repo
            .ls(root, &LsOptions::default())
            .map_err(self.err)?;
        for (n, item) in nodes.enumerate() {
            if n % 256 == 0 {
                self.check_cancel()?;
            }
            let (rel, node) = item.map_err(self.err)?;
            self.check_inside(&rel, &node.name())?;
            let path = target.join(&rel);
            match &node.node_type {
                NodeType::Dir => self.ensure_dir(&path)?,
                NodeType::File => {
                    plan.restored.files += 1;
                    if let Some(key) = hardlink_key(&node) {
                        if plan.hardlinks.contains_key(&key) {
                            continue; // linked to the first path in the metadata pass
                        }
                        plan.hardlinks.insert(key, rel.clone());
                    }
                    self.plan_file(&mut plan, path, &node)?;
                }
                NodeType::Symlink { .. } => {
                    plan.restored.files += 1;
                    self.clear_non_dir(&path)?;
                    let link = node.node_type.to_link();
                    std::os::unix::fs::symlink(link, &path)
                        .map_err(|e| self.io_err(&path, "creating symlink", e))?;
                }
                special => {
                    plan.restored.files += 1;
                    self.clear_non_dir(&path)?;
                    if let Err(e) = make_special(&path, special) {
                        warnings.add("create special files", &path, e);
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Refuses a path that would leave the target (`..`, an absolute path): a snapshot's
    /// names come from whoever wrote the repository. The metadata pass walks the same tree
    /// after this one has checked every path.
    fn check_inside(&self, rel: &Path, name: &OsStr) -> Result<(), EngineError> {
        if is_inside(rel) && names_itself(rel, name) {
            return Ok(());
        }
        Err(EngineError::Repository {
            repo: self.name.to_string(),
            operation: "restore",
            message: format!(
                "the snapshot holds the path {:?}, which leads out of the restore target; nothing was restored from it",
                rel.display().to_string()
            ),
        })
    }

    fn ensure_dir(&self, path: &Path) -> Result<(), EngineError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => return Ok(()),
            // A file or symlink in the way: a directory replaces it (never followed).
            Ok(_) => std::fs::remove_file(path).map_err(|e| self.io_err(path, "replacing", e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err(path, "inspecting", e)),
        }
        std::fs::create_dir_all(path).map_err(|e| self.io_err(path, "creating directory", e))
    }

    /// Removes whatever non-directory is at `path`; a directory there is an error (its
    /// contents are not the snapshot's to delete).
    fn clear_non_dir(&self, path: &Path) -> Result<(), EngineError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(self.io_err(
                path,
                "restoring",
                std::io::Error::other(
                    "a directory is in the way of a file of the snapshot; remove it and retry",
                ),
            )),
            Ok(_) => std::fs::remove_file(path).map_err(|e| self.io_err(path, "replacing", e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(path, "inspecting", e)),
        }
    }

    fn plan_file(&self, plan: &mut Plan, path: PathBuf, node: &Node) -> Result<(), EngineError> {
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            let same_mtime = node
                .meta
                .mtime
                .is_some_and(|t| m.modified().ok() == Some(std::time::SystemTime::from(t)));
            if m.is_file() && m.len() == node.meta.size && same_mtime {
                tracing::debug!("keeping {}: same size and mtime", path.display());
                return Ok(());
            }
            // Not a file, or a file with other names (perhaps outside the target), which
            // truncating in place would change too: replace it.
            if !m.is_file() || m.nlink() > 1 {
                self.clear_non_dir(&path)?;
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| self.io_err(&path, "creating", e))?;
        let index = u32::try_from(plan.files.len()).map_err(|_| EngineError::Repository {
            repo: self.name.to_string(),
            operation: "restore",
            message: "more than 4 billion files".into(),
        })?;
        let mut at = 0u64;
        for id in node.content.iter().flatten() {
            let entry = self.repo.get_index_entry(id).map_err(self.err)?;
            let location = entry.location;
            plan.packs.entry(*entry.pack).or_default().push(Piece {
                offset: location.offset,
                length: location.length,
                uncompressed: location.uncompressed_length,
                file: index,
                at,
            });
            at += u64::from(location.data_length());
        }
        file.set_len(at)
            .map_err(|e| self.io_err(&path, "allocating", e))?;
        plan.files.push(path);
        plan.restored.bytes += at;
        Ok(())
    }

    fn contents(&self, plan: &Plan, progress: &Progress) -> Result<(), EngineError> {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        let pool_size = workers + READERS;
        let ranges = Mutex::new(ranges(&plan.packs));
        let failure: Mutex<Option<EngineError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let fail = |e: EngineError| {
            let mut first = failure.lock().expect("not poisoned");
            if first.is_none() {
                *first = Some(e);
            }
            stop.store(true, Ordering::SeqCst);
        };
        let (pool_tx, pool_rx) = bounded::<Vec<u8>>(pool_size);
        for _ in 0..pool_size {
            pool_tx.send(Vec::new()).expect("room for the pool");
        }
        let (full_tx, full_rx) = bounded::<(Range, Vec<u8>)>(pool_size);
        std::thread::scope(|s| {
            for _ in 0..READERS {
                let (pool_rx, full_tx) = (pool_rx.clone(), full_tx.clone());
                let (ranges, stop, fail) = (&ranges, &stop, &fail);
                s.spawn(move || {
                    if let Err(e) = self.read_ranges(ranges, &pool_rx, &full_tx, stop) {
                        fail(e);
                    }
                });
            }
            for _ in 0..workers {
                let (pool_tx, full_rx) = (pool_tx.clone(), full_rx.clone());
                let (stop, fail) = (&stop, &fail);
                s.spawn(move || {
                    let mut worker = Worker::new(self, plan, progress);
                    for (range, mut buf) in full_rx.iter() {
                        if !stop.load(Ordering::SeqCst) {
                            if let Err(e) = worker.write_range(&range, &mut buf) {
                                fail(e);
                            }
                        }
                        // Always give the buffer back: a reader may be waiting for it.
                        let _ = pool_tx.send(buf);
                    }
                });
            }
            drop((pool_tx, pool_rx, full_tx, full_rx));
        });
        match failure.into_inner().expect("not poisoned") {
            Some(e) => Err(e),
            None => self.check_cancel(),
        }
    }

    fn read_ranges(
        &self,
        ranges: &Mutex<impl Iterator<Item = Range>>,
        pool: &Receiver<Vec<u8>>,
        full: &Sender<(Range, Vec<u8>)>,
        stop: &AtomicBool,
    ) -> Result<(), EngineError> {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.check_cancel()?;
            let Some(range) = ranges.lock().expect("not poisoned").next() else {
                return Ok(());
            };
            let Ok(mut buf) = pool.recv() else {
                return Ok(()); // the workers are gone
            };
            let data = self
                .backend
                .read_partial(
                    FileType::Pack,
                    &range.pack,
                    false,
                    range.offset,
                    range.length,
                )
                .map_err(self.err)?;
            if data.len() != range.length as usize {
                return Err(EngineError::Repository {
                    repo: self.name.to_string(),
                    operation: "restore",
                    message: format!(
                        "pack {} is shorter than the index says ({} bytes at {}, got {})",
                        range.pack,
                        range.length,
                        range.offset,
                        data.len()
                    ),
                });
            }
            buf.clear();
            buf.extend_from_slice(&data);
            drop(data);
            if full.send((range, buf)).is_err() {
                return Ok(());
            }
        }
    }

    fn metadata(
        &self,
        root: &Node,
        target: &Path,
        plan: &Plan,
        warnings: &MetaWarnings,
    ) -> Result<(), EngineError> {
        let nodes = self
            .repo
            .ls(root, &LsOptions::default())
            .map_err(self.err)?;
        let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
        for (n, item) in nodes.enumerate() {
            if n % 256 == 0 {
                self.check_cancel()?;
            }
            let (rel, node) = item.map_err(self.err)?;
            let path = target.join(&rel);
            if let Some(canonical) = hardlink_key(&node).and_then(|k| plan.hardlinks.get(&k)) {
                if *canonical != rel {
                    self.clear_non_dir(&path)?;
                    std::fs::hard_link(target.join(canonical), &path)
                        .map_err(|e| self.io_err(&path, "creating hard link", e))?;
                }
            }
            while let Some((dir, _)) = dirs.last() {
                if rel.starts_with(dir) {
                    break;
                }
                let (dir, dir_node) = dirs.pop().expect("not empty");
                set_metadata(&target.join(dir), &dir_node, warnings);
            }
            if node.is_dir() {
                dirs.push((rel, node));
            } else {
                set_metadata(&path, &node, warnings);
            }
        }
        for (dir, dir_node) in dirs.into_iter().rev() {
            set_metadata(&target.join(dir), &dir_node, warnings);
        }
        Ok(())
    }
}

/// The ranges to read, pack by pack: blobs sorted by offset, the same blob's places merged,
/// neighbours joined while the gap and the range stay small.
fn ranges(packs: &BTreeMap<Id, Vec<Piece>>) -> impl Iterator<Item = Range> + Send + '_ {
    packs.iter().flat_map(|(pack, pieces)| {
        let mut order: Vec<&Piece> = pieces.iter().collect();
        order.sort_by_key(|p| (p.offset, p.file, p.at));
        let mut out: Vec<Range> = Vec::new();
        for piece in order {
            let target = (piece.file, piece.at);
            if let Some(range) = out.last_mut() {
                let last = range.blobs.last_mut().expect("a range has blobs");
                if range.offset + last.start == piece.offset {
                    last.targets.push(target); // the same blob again
                    continue;
                }
                let end = range.offset + range.length;
                let joined =
                    u64::from(piece.offset) + u64::from(piece.length) - u64::from(range.offset);
                if piece.offset >= end
                    && piece.offset - end <= MAX_GAP
                    && joined <= u64::from(MAX_RANGE)
                {
                    range.blobs.push(RangeBlob {
                        start: piece.offset - range.offset,
                        length: piece.length,
                        uncompressed: piece.uncompressed,
                        targets: vec![target],
                    });
                    range.length = piece.offset + piece.length - range.offset;
                    continue;
                }
            }
            out.push(Range {
                pack: *pack,
                offset: piece.offset,
                length: piece.length,
                blobs: vec![RangeBlob {
                    start: 0,
                    length: piece.length,
                    uncompressed: piece.uncompressed,
                    targets: vec![target],
                }],
            });
        }
        out
    })
}

/// A worker's reusable state: the decompression buffer and the file it last wrote.
struct Worker<'a> {
    restore: &'a Restore<'a>,
    plan: &'a Plan,
    progress: &'a Progress,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    plain: Vec<u8>,
    open: Option<(u32, File)>,
}

impl<'a> Worker<'a> {
    fn new(restore: &'a Restore<'a>, plan: &'a Plan, progress: &'a Progress) -> Self {
        Worker {
            restore,
            plan,
            progress,
            zstd: None,
            plain: Vec::new(),
            open: None,
        }
    }

    fn damaged(&self, range: &Range, blob: &RangeBlob, why: &str) -> EngineError {
        EngineError::Repository {
            repo: self.restore.name.to_string(),
            operation: "restore",
            message: format!(
                "blob at offset {} of pack {}: {why}; the repository is damaged \
                 (`restic check --read-data` tells more)",
                range.offset + blob.start,
                range.pack
            ),
        }
    }

    /// Decrypts (in place), decompresses and writes the blobs of one read.
    fn write_range(&mut self, range: &Range, data: &mut [u8]) -> Result<(), EngineError> {
        for blob in &range.blobs {
            self.restore.check_cancel()?;
            let sealed = &mut data[blob.start as usize..(blob.start + blob.length) as usize];
            if !self.restore.key.decrypt_in_place(sealed) {
                return Err(self.damaged(range, blob, "authentication failed"));
            }
            let plain = &sealed[16..sealed.len() - (OVERHEAD - 16)];
            let contents: &[u8] = match blob.uncompressed {
                None => plain,
                Some(len) => {
                    let len = len.get() as usize;
                    self.plain.clear();
                    self.plain.reserve(len);
                    let zstd = match &mut self.zstd {
                        Some(z) => z,
                        None => self.zstd.insert(
                            zstd::bulk::Decompressor::new()
                                .map_err(|e| self.damaged(range, blob, &e.to_string()))?,
                        ),
                    };
                    let n = zstd
                        .decompress_to_buffer(plain, &mut self.plain)
                        .map_err(|e| self.damaged(range, blob, &format!("zstd: {e}")))?;
                    if n != len {
                        return Err(self.damaged(
                            range,
                            blob,
                            &format!("decompressed to {n} bytes, not {len}"),
                        ));
                    }
                    &self.plain
                }
            };
            let zeros = is_zero(contents);
            for &(file, at) in &blob.targets {
                if !zeros {
                    let path = &self.plan.files[file as usize];
                    let handle = match &self.open {
                        Some((open, f)) if *open == file => f,
                        _ => {
                            let f = OpenOptions::new()
                                .write(true)
                                .custom_flags(libc::O_NOFOLLOW)
                                .open(path)
                                .map_err(|e| self.restore.io_err(path, "opening", e))?;
                            &self.open.insert((file, f)).1
                        }
                    };
                    handle
                        .write_all_at(contents, at)
                        .map_err(|e| self.restore.io_err(path, "writing", e))?;
                }
                self.progress.inc(contents.len() as u64);
            }
        }
        Ok(())
    }
}

/// Whether a relative path stays below the directory it is joined to.
fn is_inside(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Whether a node's path ends in the node's own name, as one component: a name that is empty,
/// `.`, or holds a `/` would make the path go through (or stop at) another entry, such as a
/// symlink restored just before it (`l -> /etc`, then a file named `l/passwd`).
fn names_itself(rel: &Path, name: &OsStr) -> bool {
    rel.file_name() == Some(name)
}

fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(16);
    let tail = words.remainder();
    tail.iter().all(|&b| b == 0)
        && words
            .map(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")))
            .all(|w| w == 0)
}

fn hardlink_key(node: &Node) -> Option<(u64, u64)> {
    (matches!(node.node_type, NodeType::File)
        && node.meta.links > 1
        && node.meta.device_id != 0
        && node.meta.inode != 0)
        .then_some((node.meta.device_id, node.meta.inode))
}

fn cpath(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "a NUL byte in the path"))
}

fn make_special(path: &Path, node_type: &NodeType) -> std::io::Result<()> {
    let (kind, device) = match node_type {
        NodeType::Dev { device } => (libc::S_IFBLK, *device),
        NodeType::Chardev { device } => (libc::S_IFCHR, *device),
        NodeType::Fifo => (libc::S_IFIFO, 0),
        NodeType::Socket => (libc::S_IFSOCK, 0),
        _ => return Ok(()),
    };
    let c = cpath(path)?;
    // SAFETY: a valid NUL-terminated path; mknod only reads it.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, device as libc::dev_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// restic stores Go's file mode: permission bits, with setuid, setgid and sticky as flags.
fn unix_mode(go_mode: u32) -> u32 {
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const STICKY: u32 = 1 << 20;
    let mut mode = go_mode & 0o777;
    for (go, unix) in [(SETUID, 0o4000), (SETGID, 0o2000), (STICKY, 0o1000)] {
        if go_mode & go != 0 {
            mode |= unix;
        }
    }
    mode
}

/// Ownership (numeric), mode, extended attributes and times of one restored entry; a failure
/// is a warning, as with restic (ownership fails when not running as root).
fn set_metadata(path: &Path, node: &Node, warnings: &MetaWarnings) {
    let Ok(c) = cpath(path) else { return };
    let meta = &node.meta;
    if meta.uid.is_some() || meta.gid.is_some() {
        let uid = meta.uid.unwrap_or(u32::MAX);
        let gid = meta.gid.unwrap_or(u32::MAX);
        // SAFETY: a valid NUL-terminated path.
        let r = unsafe {
            libc::fchownat(
                libc::AT_FDCWD,
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            warnings.add("set ownership", path, std::io::Error::last_os_error());
        }
    }
    if !node.is_symlink() {
        if let Some(mode) = meta.mode {
            let perms = std::fs::Permissions::from_mode(unix_mode(mode));
            if let Err(e) = std::fs::set_permissions(path, perms) {
                warnings.add("set the mode", path, e);
            }
        }
    }
    for attr in &meta.extended_attributes {
        let Ok(name) = CString::new(attr.name.as_bytes()) else {
            continue;
        };
        let value = attr.value.as_deref().unwrap_or_default();
        // SAFETY: valid NUL-terminated strings and a value buffer of the given length.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            warnings.add(
                "set extended attributes",
                path,
                std::io::Error::last_os_error(),
            );
        }
    }
    if let Some(mtime) = meta.mtime {
        let atime = meta.atime.unwrap_or(mtime);
        let spec = |t: rustic_core::jiff::Timestamp| libc::timespec {
            tv_sec: t.as_second() as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanosecond()),
        };
        let times = [spec(atime), spec(mtime)];
        // SAFETY: a valid NUL-terminated path and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            warnings.add("set times", path, std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_path_must_end_in_the_node_s_own_name() {
        let ok = |rel: &str, name: &str| is_inside(Path::new(rel)) && names_itself(Path::new(rel), OsStr::new(name));
        assert!(ok("data/l", "l"));
        assert!(ok("a/b/c.txt", "c.txt"));
        // What a tree whose node names were tampered with would give.
        assert!(!ok("data/l/passwd", "l/passwd"), "a name with a slash");
        assert!(!ok("data", ""), "an empty name");
        assert!(!ok("data", "."), "a dot");
        assert!(!ok("data/..", ".."), "two dots");
    }

    use super::*;

    fn piece(offset: u32, length: u32, file: u32, at: u64) -> Piece {
        Piece {
            offset,
            length,
            uncompressed: None,
            file,
            at,
        }
    }

    #[test]
    fn ranges_join_neighbours_merge_repeats_and_stay_bounded() {
        let mut packs = BTreeMap::new();
        let mib = 1 << 20;
        packs.insert(
            Id::default(),
            vec![
                piece(mib, mib, 0, mib as u64),
                piece(0, mib, 0, 0),
                // the first blob again, in another file and later in the same file
                piece(0, mib, 1, 0),
                piece(0, mib, 0, 5 * mib as u64),
                // a small gap: read through
                piece(2 * mib + 1000, mib, 0, 2 * mib as u64),
                // a large gap: a new read
                piece(4 * mib, mib, 0, 3 * mib as u64),
                // would make the range larger than MAX_RANGE: a new read
                piece(5 * mib, 3 * mib + 1, 0, 4 * mib as u64),
            ],
        );
        let ranges: Vec<Range> = ranges(&packs).collect();
        let shape: Vec<(u32, u32, usize)> = ranges
            .iter()
            .map(|r| (r.offset, r.length, r.blobs.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 3 * mib + 1000, 3),
                (4 * mib, mib, 1),
                (5 * mib, 3 * mib + 1, 1)
            ]
        );
        assert_eq!(
            ranges[0].blobs[0].targets,
            [(0, 0), (0, 5 * mib as u64), (1, 0)]
        );
        assert_eq!(ranges[0].blobs[2].start, 2 * mib + 1000);
    }

    #[test]
    fn paths_that_leave_the_target_are_refused() {
        for inside in ["", "data", "a/b/c.txt", "..hidden", "a/..b", "a/./b"] {
            assert!(is_inside(Path::new(inside)), "{inside}");
        }
        for outside in ["..", "../etc/passwd", "a/../../x", "a/..", "/etc/passwd"] {
            assert!(!is_inside(Path::new(outside)), "{outside}");
        }
    }

    #[test]
    fn zeros_and_modes() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; 4099]));
        let mut data = vec![0u8; 4099];
        data[4098] = 1;
        assert!(!is_zero(&data));
        data[4098] = 0;
        data[17] = 1;
        assert!(!is_zero(&data));
        assert_eq!(unix_mode(0o750), 0o750);
        assert_eq!(
            unix_mode((1 << 31) | 0o755),
            0o755,
            "directory flag dropped"
        );
        assert_eq!(unix_mode((1 << 23) | (1 << 20) | 0o755), 0o5755);
    }
}

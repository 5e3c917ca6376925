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
//! Every entry is created, opened and changed through handles beneath the target's (see
//! [`crate::beneath`] and [`entries`]): a symlink the volume holds, or one a pod swaps in
//! while the restore runs, is never followed, so nothing outside the target is written. A
//! tree that names an entry twice (tampered with) is refused.
//!
//! Blobs are authenticated by restic's MAC (AES-256-CTR + Poly1305-AES with the repository
//! key), which rejects damaged or foreign data; like rustic_core's restore, their SHA-256 is
//! not recomputed. A blob that cannot be read (its pack missing or cut short, the MAC or the
//! decompression failing) does not stop the restore: the files that need it are removed from
//! the target before the metadata pass (not left holding zeros that look like data) and named
//! in the result ([`damage`]). A store that fails otherwise (unreachable, access denied) still
//! fails the restore: that is not damage, and a retry may succeed.

use crate::backend::{CancelFlag, PackRead, StoreBackend};
use crate::beneath::{self, Beneath};
use crate::crypto::{DataKey, OVERHEAD};
use crate::error::EngineError;
use crate::DamagedFiles;
use crossbeam_channel::{bounded, Receiver, Sender};
use rustic_core::repofile::{Node, NodeType};
use rustic_core::{Id, IndexedFullStatus, LsOptions, Progress, Repository, RusticError};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

mod damage;
mod entries;
#[cfg(test)]
mod tampered_trees;

use entries::{DirHandle, SeenNames};
#[cfg(test)]
use entries::unix_mode;

/// The most bytes of a pack one read takes (a single larger blob is read alone).
pub(crate) const MAX_RANGE: u32 = 4 << 20;
/// Unneeded bytes between two needed blobs of a pack that one read still spans.
pub(crate) const MAX_GAP: u32 = 256 << 10;
/// Reader threads: reads wait on storage, so two keep the workers fed on a local disk and
/// overlap latency on S3.
pub(crate) const READERS: usize = 2;

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Entries other than directories (the damaged files are not counted).
    pub(crate) files: u64,
    /// Bytes of file contents written (files kept as they were, and damaged files, are not
    /// counted).
    pub(crate) bytes: u64,
    /// Files the repository could not give whole, and so not restored.
    pub(crate) damaged: DamagedFiles,
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
    /// Only these paths (relative to the snapshot's root, and what is beneath them) and the
    /// directories leading to them; everything when empty.
    pub(crate) include: &'a [PathBuf],
    /// A directory beneath the target (plain names) to restore into instead of the target
    /// itself; created if missing.
    pub(crate) into: &'a Path,
}

/// Whether `rel` is restored when only `include` is asked for: an included path, something
/// beneath one, or a directory on the way to one.
pub(crate) fn selected(include: &[PathBuf], rel: &Path) -> bool {
    include.is_empty() || include.iter().any(|inc| rel.starts_with(inc) || inc.starts_with(rel))
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

struct Plan {
    /// The restore target's handle: every entry is opened beneath it.
    target: Beneath,
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
        let mut target = Beneath::open(target).map_err(|e| self.io_err(target, "opening", e))?;
        if !self.into.as_os_str().is_empty() {
            target = target.subdir(self.into).map_err(|e| self.io_err(&target.path().join(self.into), "creating", e))?;
        }
        let plan = self.plan(root, target, &warnings)?;
        let progress = self.repo.progress_bytes("restoring file contents...");
        progress.set_length(plan.restored.bytes);
        let damage = self.contents(&plan, &progress)?;
        progress.finish();
        let mut lost = self.drop_damaged(&plan, damage)?;
        self.metadata(root, &plan, &mut lost, &warnings)?;
        warnings.log(self.name);
        Ok(Restored {
            files: plan.restored.files.saturating_sub(lost.count()),
            bytes: plan.restored.bytes.saturating_sub(lost.bytes),
            damaged: lost.into_damaged(self.name),
        })
    }

    fn plan(
        &self,
        root: &Node,
        target: Beneath,
        warnings: &MetaWarnings,
    ) -> Result<Plan, EngineError> {
        let mut plan = Plan {
            target,
            files: Vec::new(),
            packs: BTreeMap::new(),
            hardlinks: HashMap::new(),
            restored: Restored::default(),
        };
        let nodes = self
            .repo
            .ls(root, &LsOptions::default())
            .map_err(self.err)?;
        let (mut seen, mut dir_handle) = (SeenNames::default(), DirHandle::default());
        for (n, item) in nodes.enumerate() {
            if n % 256 == 0 {
                self.check_cancel()?;
            }
            let (rel, node) = item.map_err(self.err)?;
            self.check_inside(&rel, &node.name())?;
            self.check_unique(&mut seen, &rel)?;
            if !selected(self.include, &rel) {
                continue;
            }
            let path = plan.target.path().join(&rel);
            let (dir_rel, name) = entries::split(&rel);
            let dir = dir_handle
                .of(&plan.target, dir_rel)
                .map_err(|e| self.io_err(&path, "opening the directory of", e))?;
            match &node.node_type {
                NodeType::Dir => self.ensure_dir(dir, name, &path)?,
                NodeType::File => {
                    plan.restored.files += 1;
                    if let Some(key) = hardlink_key(&node) {
                        if plan.hardlinks.contains_key(&key) {
                            continue; // linked to the first path in the metadata pass
                        }
                        plan.hardlinks.insert(key, rel.clone());
                    }
                    self.plan_file(&mut plan, dir, name, path, &node)?;
                }
                NodeType::Symlink { .. } => {
                    plan.restored.files += 1;
                    self.clear_non_dir(dir, name, &path)?;
                    let link = node.node_type.to_link();
                    rustix::fs::symlinkat(link, dir, name)
                        .map_err(|e| self.io_err(&path, "creating symlink", e.into()))?;
                }
                special => {
                    plan.restored.files += 1;
                    self.clear_non_dir(dir, name, &path)?;
                    if let Err(e) = entries::make_special(dir, name, special) {
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

    /// Creates file `name` of `dir` (at `path`) at its full length, and records where its
    /// blobs go; keeps one already there with the node's size and mtime.
    fn plan_file(
        &self,
        plan: &mut Plan,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: PathBuf,
        node: &Node,
    ) -> Result<(), EngineError> {
        if let Ok(st) = beneath::lstat_at(dir, name) {
            let is_file = beneath::kind(&st) == rustix::fs::FileType::RegularFile;
            let same_mtime = node
                .meta
                .mtime
                .is_some_and(|t| beneath::modified(&st) == Some(std::time::SystemTime::from(t)));
            if is_file && beneath::size(&st) == node.meta.size && same_mtime {
                tracing::debug!("keeping {}: same size and mtime", path.display());
                return Ok(());
            }
            // Not a file, or a file with other names (perhaps outside the target), which
            // truncating in place would change too: replace it.
            if !is_file || beneath::links(&st) > 1 {
                self.clear_non_dir(dir, name, &path)?;
            }
        }
        let file = entries::create_file(dir, name).map_err(|e| self.io_err(&path, "creating", e))?;
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

    /// Writes the files' contents; what could not be read is in the [`damage::Damage`] it
    /// returns, not an error.
    fn contents(&self, plan: &Plan, progress: &Progress) -> Result<damage::Damage, EngineError> {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        let pool_size = workers + READERS;
        let ranges = Mutex::new(ranges(&plan.packs));
        let damage = damage::Damage::default();
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
                let (ranges, stop, fail, damage) = (&ranges, &stop, &fail, &damage);
                s.spawn(move || {
                    let reads = Reads {
                        ranges,
                        pool: &pool_rx,
                        full: &full_tx,
                        stop,
                        damage,
                        progress,
                    };
                    if let Err(e) = self.read_ranges(reads) {
                        fail(e);
                    }
                });
            }
            for _ in 0..workers {
                let (pool_tx, full_rx) = (pool_tx.clone(), full_rx.clone());
                let (stop, fail, damage) = (&stop, &fail, &damage);
                s.spawn(move || {
                    let mut worker = Worker::new(self, plan, progress, damage);
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
            None => self.check_cancel().map(|()| damage),
        }
    }

    /// Reads ranges into buffers of the pool for the workers. A range of a missing pack, or
    /// one a shortened pack no longer holds, is damage; a shortened pack's ranges are read
    /// again blob by blob, so that the blobs it still holds restore.
    fn read_ranges(
        &self,
        reads: Reads<'_, impl Iterator<Item = Range>>,
    ) -> Result<(), EngineError> {
        let Reads {
            ranges,
            pool,
            full,
            stop,
            damage,
            progress,
        } = reads;
        let mut again: Vec<Range> = Vec::new();
        // A buffer taken from the pool for a read that gave nothing, for the next read.
        let mut spare: Option<Vec<u8>> = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.check_cancel()?;
            let next = again
                .pop()
                .or_else(|| ranges.lock().expect("not poisoned").next());
            let Some(range) = next else {
                return Ok(());
            };
            if damage.is_missing(&range.pack) {
                damage.blobs(range.pack, damage::MISSING, &range.blobs, progress);
                continue;
            }
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => match pool.recv() {
                    Ok(buf) => buf,
                    Err(_) => return Ok(()), // the workers are gone
                },
            };
            let read = self
                .backend
                .read_pack(&range.pack, range.offset, range.length)
                .map_err(self.err)?;
            let short = match read {
                PackRead::Data(data) if data.len() == range.length as usize => {
                    buf.clear();
                    buf.extend_from_slice(&data);
                    drop(data);
                    if full.send((range, buf)).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                PackRead::Data(_) | PackRead::Short => true,
                PackRead::Missing => false,
            };
            spare = Some(buf);
            if short && range.blobs.len() > 1 {
                again.extend(range.blobs.into_iter().rev().map(|blob| Range {
                    pack: range.pack,
                    offset: range.offset + blob.start,
                    length: blob.length,
                    blobs: vec![RangeBlob { start: 0, ..blob }],
                }));
                continue;
            }
            let reason = if short {
                format!(
                    "shorter than the index says (no bytes {}..{})",
                    range.offset,
                    u64::from(range.offset) + u64::from(range.length)
                )
            } else {
                damage::MISSING.to_string()
            };
            damage.blobs(range.pack, &reason, &range.blobs, progress);
        }
    }

    /// Makes the hard links and sets the metadata, skipping the files `lost` names; another
    /// name of a lost hard-linked file is lost too (whatever is there is removed).
    fn metadata(
        &self,
        root: &Node,
        plan: &Plan,
        lost: &mut damage::Lost,
        warnings: &MetaWarnings,
    ) -> Result<(), EngineError> {
        let target = &plan.target;
        let nodes = self
            .repo
            .ls(root, &LsOptions::default())
            .map_err(self.err)?;
        let mut dir_handle = DirHandle::default();
        let mut set = |rel: &Path, node: &Node| {
            let path = target.path().join(rel);
            let (dir_rel, name) = entries::split(rel);
            match dir_handle.of(target, dir_rel) {
                Ok(dir) => entries::set_metadata(dir, name, &path, node, warnings),
                Err(e) => warnings.add("set the metadata", &path, e),
            }
        };
        let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
        for (n, item) in nodes.enumerate() {
            if n % 256 == 0 {
                self.check_cancel()?;
            }
            let (rel, node) = item.map_err(self.err)?;
            if !selected(self.include, &rel) {
                continue;
            }
            if let Some(canonical) = hardlink_key(&node).and_then(|k| plan.hardlinks.get(&k)) {
                if *canonical != rel {
                    if lost.other_name(canonical, &rel) {
                        self.remove_other_name(target, &rel)?;
                        continue;
                    }
                    self.hard_link(target, canonical, &rel)?;
                }
            }
            while let Some((dir, _)) = dirs.last() {
                if rel.starts_with(dir) {
                    break;
                }
                let (dir, dir_node) = dirs.pop().expect("not empty");
                set(&dir, &dir_node);
            }
            if node.is_dir() {
                dirs.push((rel, node));
            } else if !lost.contains(&rel) {
                set(&rel, &node);
            }
        }
        for (dir, dir_node) in dirs.into_iter().rev() {
            set(&dir, &dir_node);
        }
        Ok(())
    }

    /// Removes what is at `rel`, another name of a hard-linked file that was not restored.
    fn remove_other_name(&self, target: &Beneath, rel: &Path) -> Result<(), EngineError> {
        let path = target.path().join(rel);
        let (dir_rel, name) = entries::split(rel);
        let dir = (target.open_dir(dir_rel))
            .map_err(|e| self.io_err(&path, "opening the directory of", e))?;
        self.clear_non_dir(dir.as_fd(), name, &path)
    }

    /// Makes `rel` a hard link to `canonical` (both beneath the target), replacing what is
    /// there.
    fn hard_link(&self, target: &Beneath, canonical: &Path, rel: &Path) -> Result<(), EngineError> {
        let path = target.path().join(rel);
        let (from_rel, from_name) = entries::split(canonical);
        let (dir_rel, name) = entries::split(rel);
        let open = |rel| target.open_dir(rel).map_err(|e| self.io_err(&path, "opening the directory of", e));
        let (from, dir) = (open(from_rel)?, open(dir_rel)?);
        self.clear_non_dir(dir.as_fd(), name, &path)?;
        rustix::fs::linkat(&from, from_name, &dir, name, rustix::fs::AtFlags::empty())
            .map_err(|e| self.io_err(&path, "creating hard link", e.into()))
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

/// What a reader thread works with.
struct Reads<'a, I> {
    ranges: &'a Mutex<I>,
    pool: &'a Receiver<Vec<u8>>,
    full: &'a Sender<(Range, Vec<u8>)>,
    stop: &'a AtomicBool,
    damage: &'a damage::Damage,
    progress: &'a Progress,
}

/// A worker's reusable state: the decompression buffer and the file it last wrote.
struct Worker<'a> {
    restore: &'a Restore<'a>,
    plan: &'a Plan,
    progress: &'a Progress,
    damage: &'a damage::Damage,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    plain: Vec<u8>,
    open: Option<(u32, File)>,
}

impl<'a> Worker<'a> {
    fn new(
        restore: &'a Restore<'a>,
        plan: &'a Plan,
        progress: &'a Progress,
        damage: &'a damage::Damage,
    ) -> Self {
        Worker {
            restore,
            plan,
            progress,
            damage,
            zstd: None,
            plain: Vec::new(),
            open: None,
        }
    }

    /// Decrypts (in place), decompresses and writes the blobs of one read. A blob that fails
    /// authentication or decompression is damage: the files it goes to are not restored.
    fn write_range(&mut self, range: &Range, data: &mut [u8]) -> Result<(), EngineError> {
        for blob in &range.blobs {
            self.restore.check_cancel()?;
            let sealed = &mut data[blob.start as usize..(blob.start + blob.length) as usize];
            let opened = open_blob(
                self.restore.key,
                &mut self.zstd,
                &mut self.plain,
                sealed,
                blob.uncompressed,
            );
            let contents = match opened {
                Ok(contents) => contents,
                Err(why) => {
                    let reason = format!("blob at offset {}: {why}", range.offset + blob.start);
                    self.damage
                        .blobs(range.pack, &reason, [blob], self.progress);
                    continue;
                }
            };
            let zeros = is_zero(contents);
            for &(file, at) in &blob.targets {
                if !zeros {
                    let path = &self.plan.files[file as usize];
                    let handle = match &self.open {
                        Some((open, f)) if *open == file => f,
                        _ => {
                            let f = (self.plan.target)
                                .open_for_writing(path)
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

/// The contents of one sealed blob: decrypted in place, decompressed into `plain` when it is
/// compressed. The error says what failed.
fn open_blob<'d>(
    key: &DataKey,
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
    plain: &'d mut Vec<u8>,
    sealed: &'d mut [u8],
    uncompressed: Option<NonZeroU32>,
) -> Result<&'d [u8], String> {
    if !key.decrypt_in_place(sealed) {
        return Err("authentication failed (the data is corrupted)".into());
    }
    let data = &sealed[16..sealed.len() - (OVERHEAD - 16)];
    let Some(len) = uncompressed else {
        return Ok(data);
    };
    let len = len.get() as usize;
    plain.clear();
    plain.reserve(len);
    let zstd = match zstd {
        Some(z) => z,
        None => zstd.insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?),
    };
    let n = zstd
        .decompress_to_buffer(data, plain)
        .map_err(|e| format!("zstd: {e}"))?;
    if n != len {
        return Err(format!("decompressed to {n} bytes, not {len}"));
    }
    Ok(plain)
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

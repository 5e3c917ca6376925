//! Damage a restore meets in the repository: a pack missing or shorter than the index says,
//! or a blob that fails authentication or does not decompress. As with restic, the restore
//! goes on: every file that needs such a blob is not restored and is named in the result, the
//! other files restore whole.
//!
//! A file that is not restored is **removed** from the target (each of its names, when it is
//! hard-linked), not left holding zeros where its blobs are missing: an application would read
//! those zeros as data, and a later restore would keep a file of the snapshot's size and mtime
//! as finished. The removal comes after the contents and before the metadata pass, through the
//! directory's handle beneath the target (as every other change of the restore), so the
//! directories still get the snapshot's times; the metadata pass makes no hard link to a
//! removed file, and removes what is at the other names of one (it is not the snapshot's).

use super::entries::{self, DirHandle};
use super::{Plan, RangeBlob, Restore};
use crate::beneath;
use crate::error::EngineError;
use crate::{DamagedFile, DamagedFiles, DamagedPack};
use rustic_core::{Id, Progress};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the contents phase could not read, collected from its readers and workers.
#[derive(Default)]
pub(super) struct Damage(Mutex<Found>);

#[derive(Default)]
struct Found {
    /// Files (their index in the plan) not restored: the pack and what failed.
    files: BTreeMap<u32, (Id, String)>,
    /// Each damaged pack and the first thing that failed in it.
    packs: BTreeMap<Id, String>,
}

impl Damage {
    /// `blobs` of `pack` could not be read (`reason`): the files they go to are not restored.
    /// Their bytes still count as done for the progress.
    pub(super) fn blobs<'b>(
        &self,
        pack: Id,
        reason: &str,
        blobs: impl IntoIterator<Item = &'b RangeBlob>,
        progress: &Progress,
    ) {
        let mut found = self.0.lock().expect("not poisoned");
        found
            .packs
            .entry(pack)
            .or_insert_with(|| reason.to_string());
        for blob in blobs {
            let length = match blob.uncompressed {
                Some(len) => len.get(),
                None => blob.length.saturating_sub(crate::crypto::OVERHEAD as u32),
            };
            for &(file, _) in &blob.targets {
                found
                    .files
                    .entry(file)
                    .or_insert_with(|| (pack, reason.to_string()));
                progress.inc(u64::from(length));
            }
        }
    }

    /// Whether `pack` was found missing: its other reads are not tried.
    pub(super) fn is_missing(&self, pack: &Id) -> bool {
        self.0
            .lock()
            .expect("not poisoned")
            .packs
            .get(pack)
            .map(String::as_str)
            == Some(MISSING)
    }
}

/// The reason given for a pack the store does not have.
pub(super) const MISSING: &str = "missing";

/// The files not restored, by path relative to the target: the pack whose damage kept each
/// out and what failed; and the damaged packs.
pub(super) struct Lost {
    files: BTreeMap<PathBuf, (Id, String)>,
    packs: BTreeMap<Id, String>,
    /// Bytes of the files removed (their contents were counted as restored).
    pub(super) bytes: u64,
}

impl Lost {
    /// If `canonical`, the first name of a hard-linked file, was not restored: records
    /// `rel`, another name of it, as not restored either, and says so.
    pub(super) fn other_name(&mut self, canonical: &Path, rel: &Path) -> bool {
        match self.files.get(canonical).cloned() {
            Some(why) => {
                self.files.insert(rel.to_path_buf(), why);
                true
            }
            None => false,
        }
    }

    /// Whether entry `rel` was not restored.
    pub(super) fn contains(&self, rel: &Path) -> bool {
        !self.files.is_empty() && self.files.contains_key(rel)
    }

    /// How many names were not restored.
    pub(super) fn count(&self) -> u64 {
        self.files.len() as u64
    }

    /// The restore's report of them, logged when there are any.
    pub(super) fn into_damaged(self, repo: &str) -> DamagedFiles {
        let damaged = DamagedFiles {
            count: self.files.len() as u64,
            files: self
                .files
                .into_iter()
                .take(DamagedFiles::LISTED)
                .map(|(rel, (pack, reason))| DamagedFile {
                    path: rel.display().to_string(),
                    pack: pack.to_hex().to_string(),
                    reason,
                })
                .collect(),
            pack_count: self.packs.len() as u64,
            packs: self
                .packs
                .into_iter()
                .take(DamagedFiles::LISTED)
                .map(|(id, reason)| DamagedPack {
                    id: id.to_hex().to_string(),
                    reason,
                })
                .collect(),
        };
        if !damaged.is_empty() {
            tracing::warn!("restic repository {repo}: restore: {damaged}; the other files are restored");
        }
        damaged
    }
}

impl Restore<'_> {
    /// After the contents: removes every file `damage` names from the target (beneath its
    /// handle, never through a symlink), and says which they are.
    pub(super) fn drop_damaged(&self, plan: &Plan, damage: Damage) -> Result<Lost, EngineError> {
        let found = damage.0.into_inner().expect("not poisoned");
        let mut lost = Lost {
            files: BTreeMap::new(),
            packs: found.packs,
            bytes: 0,
        };
        let mut dir_handle = DirHandle::default();
        // By index: in the order of the tree, so one directory's files come together.
        for (file, why) in found.files {
            let path = &plan.files[file as usize];
            let rel = plan
                .target
                .rel(path)
                .map_err(|e| self.io_err(path, "removing the damaged file", e))?
                .to_path_buf();
            let (dir_rel, name) = entries::split(&rel);
            let dir = dir_handle
                .of(&plan.target, dir_rel)
                .map_err(|e| self.io_err(path, "opening the directory of", e))?;
            match beneath::lstat_at(dir, name) {
                Ok(st) => {
                    lost.bytes += beneath::size(&st);
                    rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty())
                        .map_err(|e| self.io_err(path, "removing the damaged file", e.into()))?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err(path, "removing the damaged file", e)),
            }
            lost.files.insert(rel, why);
        }
        Ok(lost)
    }
}

//! The restore's entries in the target, each through its directory's handle (see
//! [`crate::beneath`]): directories, files, symlinks and special files created or replaced,
//! and their metadata set on handles.

use super::{MetaWarnings, Restore};
use crate::beneath::{self, kind, Beneath};
use crate::error::EngineError;
use rustic_core::repofile::{Node, NodeType};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps};
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The handle of the directory the last entries were in, opened again (beneath the target)
/// only when an entry of another directory comes: `ls` lists a directory's entries together.
#[derive(Default)]
pub(super) struct DirHandle(Option<(PathBuf, OwnedFd)>);

impl DirHandle {
    /// The handle of directory `rel` of the target.
    pub(super) fn of(&mut self, target: &Beneath, rel: &Path) -> std::io::Result<BorrowedFd<'_>> {
        if !matches!(&self.0, Some((open, _)) if open == rel) {
            self.0 = None; // closed before the next one opens
            self.0 = Some((rel.to_path_buf(), target.open_dir(rel)?));
        }
        Ok(self.0.as_ref().expect("opened").1.as_fd())
    }
}

/// The names met so far in each directory on the way down to the current entry, to refuse a
/// tree that names an entry twice (tampered with, or damaged).
#[derive(Default)]
pub(super) struct SeenNames(Vec<(PathBuf, HashSet<OsString>)>);

impl SeenNames {
    /// Whether `rel` is the first entry of its name in its directory. Entries come depth
    /// first, a directory before its contents, as `ls` lists them.
    pub(super) fn first(&mut self, rel: &Path) -> bool {
        let dir = rel.parent().unwrap_or(Path::new(""));
        while let Some((open, _)) = self.0.last() {
            if dir.starts_with(open) {
                break;
            }
            self.0.pop();
        }
        if self.0.last().map(|(open, _)| open.as_path()) != Some(dir) {
            self.0.push((dir.to_path_buf(), HashSet::new()));
        }
        let name = rel.file_name().unwrap_or_default().to_os_string();
        self.0.last_mut().expect("pushed").1.insert(name)
    }
}

/// The directory `rel` is in, and its name there.
pub(super) fn split(rel: &Path) -> (&Path, &OsStr) {
    (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default())
}

impl Restore<'_> {
    /// Refuses the second entry of a name in a directory: which one would win is up to the
    /// order of the tree, which whoever tampered with it chose.
    pub(super) fn check_unique(&self, seen: &mut SeenNames, rel: &Path) -> Result<(), EngineError> {
        if seen.first(rel) {
            return Ok(());
        }
        Err(EngineError::Repository {
            repo: self.name.to_string(),
            operation: "restore",
            message: format!(
                "the snapshot holds the path {:?} twice (a tree of it names an entry twice: it \
                 was tampered with or is damaged); nothing more was restored from it",
                rel.display().to_string()
            ),
        })
    }

    /// Makes `name` of `dir` a directory; a file or symlink in the way is replaced (never
    /// followed), a directory already there kept.
    pub(super) fn ensure_dir(&self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), EngineError> {
        match beneath::lstat_at(dir, name) {
            Ok(st) if kind(&st) == FileType::Directory => return Ok(()),
            Ok(_) => rfs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.io_err(path, "replacing", e.into()))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err(path, "inspecting", e)),
        }
        match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => Ok(()),
            // Made meanwhile: fine if it is a directory.
            Err(rustix::io::Errno::EXIST)
                if beneath::lstat_at(dir, name).is_ok_and(|st| kind(&st) == FileType::Directory) =>
            {
                Ok(())
            }
            Err(e) => Err(self.io_err(path, "creating directory", e.into())),
        }
    }

    /// Removes whatever non-directory is `name` of `dir`; a directory there is an error (its
    /// contents are not the snapshot's to delete).
    pub(super) fn clear_non_dir(&self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), EngineError> {
        match beneath::lstat_at(dir, name) {
            Ok(st) if kind(&st) == FileType::Directory => Err(self.io_err(
                path,
                "restoring",
                std::io::Error::other(
                    "a directory is in the way of a file of the snapshot; remove it and retry",
                ),
            )),
            Ok(_) => rfs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.io_err(path, "replacing", e.into())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(path, "inspecting", e)),
        }
    }
}

/// Creates (or truncates) regular file `name` of `dir` for writing: never through a symlink,
/// and never a FIFO or device that took its name.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::TRUNC
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY
        | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o666))?;
    if kind(&rfs::fstat(&fd)?) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(File::from(fd))
}

pub(super) fn make_special(dir: BorrowedFd<'_>, name: &OsStr, node_type: &NodeType) -> std::io::Result<()> {
    let (kind, device) = match node_type {
        NodeType::Dev { device } => (FileType::BlockDevice, *device),
        NodeType::Chardev { device } => (FileType::CharacterDevice, *device),
        NodeType::Fifo => (FileType::Fifo, 0),
        NodeType::Socket => (FileType::Socket, 0),
        _ => return Ok(()),
    };
    Ok(rfs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), device)?)
}

/// restic stores Go's file mode: permission bits, with setuid, setgid and sticky as flags.
pub(super) fn unix_mode(go_mode: u32) -> u32 {
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

/// The kind of file a node is restored as.
fn file_type(node_type: &NodeType) -> FileType {
    match node_type {
        NodeType::Dir => FileType::Directory,
        NodeType::Symlink { .. } => FileType::Symlink,
        NodeType::Dev { .. } => FileType::BlockDevice,
        NodeType::Chardev { .. } => FileType::CharacterDevice,
        NodeType::Fifo => FileType::Fifo,
        NodeType::Socket => FileType::Socket,
        NodeType::File => FileType::RegularFile,
    }
}

/// A handle an entry's metadata is set on: opened for reading (files and directories), or
/// only a reference (`O_PATH`: special files, whose open could do things, and entries the
/// process may not read), whose calls go through `/proc/self/fd/<fd>`.
struct MetaHandle {
    fd: OwnedFd,
    opened: bool,
}

impl MetaHandle {
    /// Opens `name` of `dir` if it is a `want`, never following a symlink.
    fn open(dir: BorrowedFd<'_>, name: &OsStr, want: FileType) -> std::io::Result<MetaHandle> {
        let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let readable = match want {
            FileType::Directory => Some(OFlags::RDONLY | OFlags::DIRECTORY),
            FileType::RegularFile => Some(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY),
            _ => None,
        };
        let opened = match readable {
            Some(how) => match rfs::openat(dir, name, flags | how, Mode::empty()) {
                Ok(fd) => Some(fd),
                Err(rustix::io::Errno::ACCESS) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let handle = match opened {
            Some(fd) => MetaHandle { fd, opened: true },
            None => MetaHandle {
                fd: rfs::openat(dir, name, flags | OFlags::PATH, Mode::empty())?,
                opened: false,
            },
        };
        if kind(&rfs::fstat(&handle.fd)?) != want {
            return Err(std::io::Error::other("another kind of entry took its place"));
        }
        Ok(handle)
    }

    fn proc(&self) -> PathBuf {
        beneath::proc_path(self.fd.as_fd(), None)
    }

    fn chown(&self, uid: Option<rfs::Uid>, gid: Option<rfs::Gid>) -> rustix::io::Result<()> {
        if self.opened {
            rfs::fchown(&self.fd, uid, gid)
        } else {
            rfs::chownat(&self.fd, "", uid, gid, AtFlags::EMPTY_PATH)
        }
    }

    fn chmod(&self, mode: Mode) -> rustix::io::Result<()> {
        if self.opened {
            rfs::fchmod(&self.fd, mode)
        } else {
            rfs::chmod(self.proc(), mode)
        }
    }

    fn set_xattr(&self, name: &CStr, value: &[u8]) -> rustix::io::Result<()> {
        if self.opened {
            rfs::fsetxattr(&self.fd, name, value, rfs::XattrFlags::empty())
        } else {
            rfs::setxattr(self.proc(), name, value, rfs::XattrFlags::empty())
        }
    }

    fn set_times(&self, times: &Timestamps) -> rustix::io::Result<()> {
        if self.opened {
            rfs::futimens(&self.fd, times)
        } else {
            rfs::utimensat(rfs::CWD, self.proc(), times, AtFlags::empty())
        }
    }
}

fn owner(meta: &rustic_core::repofile::Metadata) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
    // -1 means "unchanged" to chown: not an id to restore.
    let uid = meta.uid.filter(|&u| u != u32::MAX).map(rfs::Uid::from_raw);
    let gid = meta.gid.filter(|&g| g != u32::MAX).map(rfs::Gid::from_raw);
    (uid, gid)
}

fn times(meta: &rustic_core::repofile::Metadata) -> Option<Timestamps> {
    let mtime = meta.mtime?;
    let atime = meta.atime.unwrap_or(mtime);
    let spec = |t: rustic_core::jiff::Timestamp| rustix::fs::Timespec {
        tv_sec: t.as_second(),
        tv_nsec: t.subsec_nanosecond().into(),
    };
    Some(Timestamps {
        last_access: spec(atime),
        last_modification: spec(mtime),
    })
}

/// Ownership (numeric), mode, extended attributes and times of entry `name` of `dir`, on a
/// handle of it (symlinks: relative to `dir`, not followed); a failure is a warning, as with
/// restic (ownership fails when not running as root).
pub(super) fn set_metadata(dir: BorrowedFd<'_>, name: &OsStr, path: &Path, node: &Node, warnings: &MetaWarnings) {
    let meta = &node.meta;
    if node.is_symlink() {
        return set_symlink_metadata(dir, name, path, meta, warnings);
    }
    let handle = match MetaHandle::open(dir, name, file_type(&node.node_type)) {
        Ok(h) => h,
        Err(e) => return warnings.add("set the metadata", path, e),
    };
    let (uid, gid) = owner(meta);
    if uid.is_some() || gid.is_some() {
        if let Err(e) = handle.chown(uid, gid) {
            warnings.add("set ownership", path, e.into());
        }
    }
    if let Some(mode) = meta.mode {
        if let Err(e) = handle.chmod(Mode::from_raw_mode(unix_mode(mode))) {
            warnings.add("set the mode", path, e.into());
        }
    }
    for attr in &meta.extended_attributes {
        let Ok(attr_name) = CString::new(attr.name.as_bytes()) else {
            continue;
        };
        if let Err(e) = handle.set_xattr(&attr_name, attr.value.as_deref().unwrap_or_default()) {
            warnings.add("set extended attributes", path, e.into());
        }
    }
    if let Some(times) = times(meta) {
        if let Err(e) = handle.set_times(&times) {
            warnings.add("set times", path, e.into());
        }
    }
}

/// A symlink's ownership, extended attributes and times (it has no mode of its own),
/// relative to its directory's handle and never following it.
fn set_symlink_metadata(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    meta: &rustic_core::repofile::Metadata,
    warnings: &MetaWarnings,
) {
    let (uid, gid) = owner(meta);
    if uid.is_some() || gid.is_some() {
        if let Err(e) = rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW) {
            warnings.add("set ownership", path, e.into());
        }
    }
    // The l- call does not follow the symlink; the directory is the handle's.
    let at = beneath::proc_path(dir, Some(name));
    for attr in &meta.extended_attributes {
        let Ok(attr_name) = CString::new(attr.name.as_bytes()) else {
            continue;
        };
        let value = attr.value.as_deref().unwrap_or_default();
        if let Err(e) = rfs::lsetxattr(&at, &attr_name, value, rfs::XattrFlags::empty()) {
            warnings.add("set extended attributes", path, e.into());
        }
    }
    if let Some(times) = times(meta) {
        if let Err(e) = rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW) {
            warnings.add("set times", path, e.into());
        }
    }
}

//! Entries of a volume opened and created through directory handles, never through a path a
//! symlink could redirect.
//!
//! The node agent runs as root on volumes that a pod may change while they are backed up or
//! restored. A pod that swaps one of its directories for a symlink (to `/`, say) between two
//! system calls would turn any call that resolves a path again into a read or write of the
//! node's files. So:
//!
//! - **Backups** walk from the volume's directory handle down: a directory is opened by name
//!   relative to its parent's handle (`O_NOFOLLOW | O_DIRECTORY`), a file relative to its
//!   directory's (`O_NOFOLLOW`, and never a FIFO or device), and the opened handle must be the
//!   entry (device and inode) that the listing's `fstatat` saw, or the entry is skipped.
//! - **Restores** resolve paths beneath the target's handle with `openat2` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or, where the kernel lacks it (before Linux 5.6,
//!   or a seccomp profile refuses it), one name at a time with `O_NOFOLLOW`. They create
//!   entries relative to their directory's handle and set metadata on handles.
//!
//! The few calls that take only a path (the extended attributes a backup reads, a restore's
//! extended attributes of symlinks, and the metadata of special files) go through
//! `/proc/self/fd/<handle>`: the handle stands for the directory or entry it was opened on,
//! whatever its path leads to by then.

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags, Stat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a resolution that a concurrent rename disturbed (`EAGAIN`) is tried again.
const RETRIES: usize = 16;

/// Which entry of which filesystem: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Identity {
    // The field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &Stat) -> Identity {
        Identity {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

/// The error for an entry that another one replaced between the listing and the open.
fn changed() -> io::Error {
    io::Error::other("it was replaced while it was being read (another entry took its name)")
}

/// The kind of a stat.
pub(crate) fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

/// The size of a stat.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn size(st: &Stat) -> u64 {
    st.st_size as u64
}

/// The number of links of a stat.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn links(st: &Stat) -> u64 {
    st.st_nlink as u64
}

/// The modification time of a stat.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn modified(st: &Stat) -> Option<SystemTime> {
    let (secs, nanos) = (st.st_mtime as i64, st.st_mtime_nsec as u64);
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    whole.checked_add(Duration::from_nanos(nanos))
}

/// Opens the directory at `path` (following a symlink there: the caller chose the path).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// `fstatat` of `name` in `dir`, not following a symlink.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Opens directory `name` of `dir` (never through a symlink) if it is still the one `seen`.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr, seen: Identity) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty())?;
    if Identity::of(&rfs::fstat(&fd)?) != seen {
        return Err(changed());
    }
    Ok(fd)
}

/// Opens regular file `name` of `dir` for reading if it is still the one `seen`: never
/// through a symlink, and never a FIFO (whose open would wait for a writer) or a device.
/// Returns it with its size.
pub(crate) fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr, seen: Identity) -> io::Result<(File, u64)> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if kind(&st) != FileType::RegularFile || Identity::of(&st) != seen {
        return Err(changed());
    }
    Ok((File::from(fd), size(&st)))
}

/// The names in directory `dir` but `.` and `..`, in the order the filesystem gives them;
/// `skipped` hears of each entry that could not be read.
pub(crate) fn names(dir: BorrowedFd<'_>, mut skipped: impl FnMut(io::Error)) -> io::Result<Vec<OsString>> {
    // A handle of its own: reading moves its position.
    let own = rfs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut entries = rfs::Dir::new(own)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read() {
        match entry {
            Ok(entry) => {
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.push(OsStr::from_bytes(name).to_os_string());
                }
            }
            Err(e) => {
                skipped(e.into());
                break; // the stream does not go on after an error
            }
        }
    }
    Ok(names)
}

/// The target of symlink `name` in `dir`.
pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<PathBuf> {
    let target = rfs::readlinkat(dir, name, Vec::new())?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

/// `/proc/self/fd/<fd>`, and `name` below it when there is one: the entry the handle stands
/// for (or its entry `name`), for calls that take only a path. With a name, use it only with
/// calls that do not follow a symlink in the last component (`l*xattr`).
pub(crate) fn proc_path(fd: BorrowedFd<'_>, name: Option<&OsStr>) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if let Some(name) = name {
        path.push(name);
    }
    path
}

/// How paths beneath a directory handle are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// One `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`.
    Openat2,
    /// One `openat` per name, each with `O_NOFOLLOW`, from the handle down.
    PerName,
}

impl Resolve {
    /// `openat2` when this kernel has it and lets this process call it; asked once.
    pub(crate) fn of_this_kernel() -> Resolve {
        static FOUND: OnceLock<Resolve> = OnceLock::new();
        *FOUND.get_or_init(|| {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rfs::openat2(rfs::CWD, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), how) {
                Ok(_) => Resolve::Openat2,
                Err(e) => {
                    tracing::info!("openat2 is not available ({e}): paths beneath restore targets are opened one name at a time");
                    Resolve::PerName
                }
            }
        })
    }
}

/// A directory handle that relative paths are opened beneath: no symlink in them is
/// followed, and none leads out of it.
pub(crate) struct Beneath {
    fd: OwnedFd,
    /// Where it was opened, for messages and for [`Beneath::rel`].
    path: PathBuf,
    resolve: Resolve,
}

impl Beneath {
    /// Opens the directory at `path` (following a symlink there: the caller chose the path).
    pub(crate) fn open(path: &Path) -> io::Result<Beneath> {
        Ok(Beneath {
            fd: open_root(path)?,
            path: path.to_path_buf(),
            resolve: Resolve::of_this_kernel(),
        })
    }

    /// The same handle, resolving as `resolve` says (tests of both ways).
    #[cfg(test)]
    pub(crate) fn resolving(self, resolve: Resolve) -> Beneath {
        Beneath { resolve, ..self }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `path` (this directory's path joined with a relative one) relative to this directory.
    pub(crate) fn rel<'p>(&self, path: &'p Path) -> io::Result<&'p Path> {
        path.strip_prefix(&self.path).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("not beneath {}", self.path.display()))
        })
    }

    /// Opens `rel` (plain names only; empty for this directory) with `flags`, `O_NOFOLLOW`
    /// and `O_CLOEXEC`: a symlink anywhere in it is an error (`ELOOP`, or `ENOTDIR` in the
    /// middle when resolving name by name).
    pub(crate) fn open_at(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let names = plain_names(rel)?;
        match self.resolve {
            Resolve::Openat2 => {
                let rel = if names.is_empty() { Path::new(".") } else { rel };
                let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
                let mut tries = 0;
                loop {
                    match rfs::openat2(&self.fd, rel, flags, Mode::empty(), how) {
                        Err(rustix::io::Errno::AGAIN) if tries < RETRIES => tries += 1,
                        result => return Ok(result?),
                    }
                }
            }
            Resolve::PerName => {
                let Some((last, dirs)) = names.split_last() else {
                    return Ok(rfs::openat(&self.fd, ".", flags, Mode::empty())?);
                };
                let mut parent: Option<OwnedFd> = None;
                for name in dirs {
                    let at = parent.as_ref().map_or(self.fd.as_fd(), |p| p.as_fd());
                    let fd = rfs::openat(at, *name, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
                    // With O_PATH and O_NOFOLLOW a symlink would open as itself.
                    if kind(&rfs::fstat(&fd)?) != FileType::Directory {
                        return Err(rustix::io::Errno::NOTDIR.into());
                    }
                    parent = Some(fd);
                }
                let at = parent.as_ref().map_or(self.fd.as_fd(), |p| p.as_fd());
                Ok(rfs::openat(at, *last, flags, Mode::empty())?)
            }
        }
    }

    /// The directory `rel` beneath this one, created name by name (each `mkdirat` relative to
    /// its parent's handle) where missing, as a handle of its own: a restore into a
    /// subdirectory of a volume (`.stowage-restored/<restore>`) that a symlink cannot redirect.
    pub(crate) fn subdir(&self, rel: &Path) -> io::Result<Beneath> {
        let names = plain_names(rel)?;
        let mut done = PathBuf::new();
        for name in names {
            let parent = self.open_dir(&done)?;
            match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            done.push(name);
        }
        Ok(Beneath {
            fd: self.open_at(&done, OFlags::RDONLY | OFlags::DIRECTORY)?,
            path: self.path.join(&done),
            resolve: self.resolve,
        })
    }

    /// A handle of directory `rel`, for the `*at` calls on its entries.
    pub(crate) fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let fd = self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY)?;
        // With O_PATH and O_NOFOLLOW, a symlink at the end would open as itself.
        if kind(&rfs::fstat(&fd)?) != FileType::Directory {
            return Err(rustix::io::Errno::NOTDIR.into());
        }
        Ok(fd)
    }

    /// Opens the regular file at `path` (beneath this directory) for writing; anything else
    /// there (a FIFO, a device) is an error.
    pub(crate) fn open_for_writing(&self, path: &Path) -> io::Result<File> {
        let fd = self.open_at(self.rel(path)?, OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        if kind(&rfs::fstat(&fd)?) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(File::from(fd))
    }
}

/// The names of a relative path; anything but plain names (`..`, a root) is refused.
fn plain_names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a path of plain names", rel.display()),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! Opening beneath a handle, both ways (`openat2`, and name by name as on kernels without it),
//! and the walk's opens of what it listed.

use super::*;
use std::io::{Read, Write};

/// `root/a/b/file`, `root/a/up -> ../a/b` (a symlink inside), `root/out -> <outside>` and
/// `root/fifo`; `<outside>/secret`.
struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a/b/file"), b"inside").unwrap();
        std::fs::write(outside.join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../a/b", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        rfs::mknodat(rfs::CWD, &root.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        Case { _dir: dir, root, outside }
    }

    /// The root's handle resolving each way this kernel can.
    fn each_way(&self) -> Vec<Beneath> {
        let mut ways = vec![Resolve::PerName];
        if Resolve::of_this_kernel() == Resolve::Openat2 {
            ways.push(Resolve::Openat2);
        } else {
            eprintln!("!!! openat2 is not available here: only the name-by-name way is tested");
        }
        ways.into_iter().map(|way| Beneath::open(&self.root).unwrap().resolving(way)).collect()
    }
}

fn read(fd: OwnedFd) -> String {
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).unwrap();
    text
}

#[test]
fn plain_paths_open_beneath_the_handle_either_way() {
    let case = Case::new();
    for root in case.each_way() {
        let way = root.resolve;
        assert_eq!(read(root.open_at(Path::new("a/b/file"), OFlags::RDONLY).unwrap()), "inside", "{way:?}");
        let dir = root.open_dir(Path::new("a/b")).unwrap();
        assert_eq!(lstat_at(dir.as_fd(), OsStr::new("file")).unwrap().st_size, 6, "{way:?}");
        let itself = root.open_dir(Path::new("")).unwrap();
        assert!(lstat_at(itself.as_fd(), OsStr::new("a")).is_ok(), "{way:?}: the empty path is the handle's directory");

        let mut file = root.open_for_writing(&case.root.join("a/b/file")).unwrap();
        file.write_all(b"INSIDE").unwrap();
        assert_eq!(std::fs::read(case.root.join("a/b/file")).unwrap(), b"INSIDE", "{way:?}");
        std::fs::write(case.root.join("a/b/file"), b"inside").unwrap();
    }
}

#[test]
fn symlinks_and_paths_out_are_refused_either_way() {
    let case = Case::new();
    for root in case.each_way() {
        let way = root.resolve;
        for rel in ["out/secret", "out", "a/up/file", "a/up", "../outside/secret", "a/../../outside/secret", "/etc/passwd", "./a/b/file"] {
            let opened = root.open_at(Path::new(rel), OFlags::RDONLY);
            assert!(opened.is_err(), "{way:?}: {rel} was opened");
            assert!(root.open_dir(Path::new(rel)).is_err(), "{way:?}: directory {rel} was opened");
        }
        let error = root.open_at(Path::new("out/secret"), OFlags::RDONLY).unwrap_err();
        let code = error.raw_os_error();
        assert!(code == Some(libc::ELOOP) || code == Some(libc::ENOTDIR), "{way:?}: {error}");
        // Writing: through a symlink, outside the handle's path, or into a FIFO.
        assert!(root.open_for_writing(&case.root.join("out/secret")).is_err(), "{way:?}");
        assert!(root.open_for_writing(&case.outside.join("secret")).is_err(), "{way:?}");
        assert!(root.open_for_writing(&case.root.join("fifo")).is_err(), "{way:?}");
    }
    assert_eq!(std::fs::read(case.outside.join("secret")).unwrap(), b"outside");
}

/// What a kernel without `openat2` gets: the resolution name by name is a way of its own,
/// not a fallback taken only on errors.
#[test]
fn the_name_by_name_way_is_used_when_asked_for() {
    let case = Case::new();
    let root = Beneath::open(&case.root).unwrap().resolving(Resolve::PerName);
    assert_eq!(root.resolve, Resolve::PerName);
    // A symlink in the middle opens as itself with O_PATH | O_NOFOLLOW: the kind check
    // refuses it.
    let error = root.open_dir(Path::new("out/x")).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR), "{error}");
    assert_eq!(read(root.open_at(Path::new("a/b/file"), OFlags::RDONLY).unwrap()), "inside");
}

#[test]
fn the_walk_opens_only_the_entry_it_listed() {
    let case = Case::new();
    let root = open_root(&case.root).unwrap();
    let a = lstat_at(root.as_fd(), OsStr::new("a")).unwrap();
    let dir = open_dir_at(root.as_fd(), OsStr::new("a"), Identity::of(&a)).unwrap();
    let b = lstat_at(dir.as_fd(), OsStr::new("b")).unwrap();
    let b_dir = open_dir_at(dir.as_fd(), OsStr::new("b"), Identity::of(&b)).unwrap();
    let file = lstat_at(b_dir.as_fd(), OsStr::new("file")).unwrap();
    let mut text = String::new();
    let (mut opened, size) = open_file_at(b_dir.as_fd(), OsStr::new("file"), Identity::of(&file)).unwrap();
    opened.read_to_string(&mut text).unwrap();
    assert_eq!(size, 6);
    assert_eq!(text, "inside");

    // Another file renamed over it after the listing: not read.
    std::fs::write(case.root.join("a/b/other"), b"other").unwrap();
    std::fs::rename(case.root.join("a/b/other"), case.root.join("a/b/file")).unwrap();
    let error = open_file_at(b_dir.as_fd(), OsStr::new("file"), Identity::of(&file)).unwrap_err();
    assert!(error.to_string().contains("replaced"), "{error}");

    // The directory swapped for a symlink to the outside: not opened.
    std::fs::rename(case.root.join("a"), case.root.join("a-moved")).unwrap();
    std::os::unix::fs::symlink(&case.outside, case.root.join("a")).unwrap();
    let error = open_dir_at(root.as_fd(), OsStr::new("a"), Identity::of(&a)).unwrap_err();
    let code = error.raw_os_error();
    assert!(code == Some(libc::ELOOP) || code == Some(libc::ENOTDIR), "{error}");
    // A FIFO, or a symlink, where a file was listed: refused at once (no wait for a writer).
    let fifo = lstat_at(root.as_fd(), OsStr::new("fifo")).unwrap();
    assert!(open_file_at(root.as_fd(), OsStr::new("fifo"), Identity::of(&fifo)).is_err());
    let secret = std::fs::symlink_metadata(case.outside.join("secret")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let seen = Identity { dev: secret.dev(), ino: secret.ino() };
    assert!(open_file_at(root.as_fd(), OsStr::new("out"), seen).is_err());
}

#[test]
fn names_lists_a_directory_through_its_handle() {
    let case = Case::new();
    let root = open_root(&case.root).unwrap();
    let mut names = names(root.as_fd(), |e| panic!("{e}")).unwrap();
    names.sort();
    assert_eq!(names, ["a", "fifo", "out"]);
    // Listing twice from the same handle lists everything again.
    assert_eq!(super::names(root.as_fd(), |e| panic!("{e}")).unwrap().len(), 3);
    assert_eq!(read_link_at(root.as_fd(), OsStr::new("out")).unwrap(), case.outside);
}

//! A pod that swaps a directory of its volume for a symlink to somewhere else while the node
//! agent walks or restores the volume: nothing outside the volume is read into a snapshot,
//! and a restore writes nothing outside its target.
//!
//! The swapping thread exchanges the directory with a symlink atomically (`renameat2` with
//! `RENAME_EXCHANGE`), as fast as it can, so the walk finds the name a directory at one moment
//! and a symlink the next. The directory it swaps out stays in the volume, under another
//! name: what a pod can do with its own volume.

mod common;

use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every file outside the volume holds; no snapshot may hold it.
const MARKER: &[u8] = b"host file outside the volume: 5d41402abc4b2a76";

/// Exchanges `a` and `b` (any kinds, same filesystem) until stopped; counts the exchanges.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let (a, b) = (cpath(a), cpath(b));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0;
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: two NUL-terminated paths.
                let r = unsafe {
                    libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
                };
                if r == 0 {
                    swaps += 1;
                } else {
                    // Not there yet (a restore has not made it): wait a little.
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            swaps
        });
        Swapper { stop, thread }
    }

    /// Stops it; returns how many exchanges it made.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A directory outside the volume with the same names as `data/` in the volume (so a walk that
/// resolves a path again finds something to read there), each file holding [`MARKER`].
fn make_outside(outside: &Path) {
    std::fs::create_dir_all(outside.join("sub/deeper")).unwrap();
    for name in ["a.txt", "b.txt", "c.txt", "sub/inner.txt", "sub/deeper/leaf.txt", "token"] {
        std::fs::write(outside.join(name), MARKER).unwrap();
    }
}

fn make_data(data: &Path) {
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    for name in ["a.txt", "b.txt", "c.txt", "sub/inner.txt", "sub/deeper/leaf.txt"] {
        std::fs::write(data.join(name), format!("volume file {name}\n")).unwrap();
    }
    for i in 0..40 {
        std::fs::write(data.join(format!("sub/f{i:02}")), format!("volume file {i}\n")).unwrap();
    }
}

/// Every regular file under `root`, with its contents.
fn files_under(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    out
}

fn holds_marker(data: &[u8]) -> bool {
    data.windows(MARKER.len()).any(|w| w == MARKER)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_for_a_symlink_during_backups_never_brings_outside_files_in() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let (volume, outside) = (work.path().join("volume"), work.path().join("outside"));
    make_data(&volume.join("data"));
    make_outside(&outside);
    // The symlink lives in the volume too: the pod made it.
    std::os::unix::fs::symlink(&outside, volume.join("link")).unwrap();

    let swapper = Swapper::start(&volume.join("data"), &volume.join("link"));
    let mut snapshots = Vec::new();
    let started = Instant::now();
    while snapshots.len() < 12 || (snapshots.len() < 60 && started.elapsed() < Duration::from_secs(15)) {
        snapshots.push(back_up(&repo, &volume, "race").await.snapshot_id);
    }
    let swaps = swapper.stop();
    assert!(swaps > 1000, "the swapper ran: {swaps} exchanges");
    eprintln!("{} backups while the swapper made {swaps} exchanges", snapshots.len());

    for (n, id) in snapshots.iter().enumerate() {
        let target = work.path().join(format!("restored-{n}"));
        std::fs::create_dir(&target).unwrap();
        restore_into(&repo, id, &target).await;
        for (path, data) in files_under(&target) {
            assert!(!holds_marker(&data), "snapshot {n} ({id}) of {} holds {}, a file from outside the volume", snapshots.len(), path.display());
        }
    }
    if let Some(restic) = restic() {
        // restic agrees: no snapshot holds the file only the outside directory has.
        let found = run_ok(restic_cmd(&restic, &repo_dir.restic_path().display().to_string(), PASSWORD).args(["find", "--json", "token"]));
        assert!(!found.contains("\"token\""), "a snapshot holds the outside file `token`: {found}");
    }
}

/// The outside directory's entries with their kinds, contents, modes and times; its own mode
/// and times too.
fn fingerprint(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        format!("{:o} {} {} {}:{}", m.mode(), m.mtime(), m.mtime_nsec(), m.uid(), m.gid())
    };
    let mut out = format!(". {}\n", meta(dir));
    for (path, entry) in tree(dir) {
        let what = match entry {
            Entry::File { data, .. } => format!("file {:?}", String::from_utf8_lossy(&data)),
            other => format!("{other:?}"),
        };
        out.push_str(&format!("{path}: {what} {}\n", meta(&dir.join(&path))));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_for_a_symlink_during_restores_never_gets_anything_written_outside() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let (volume, outside) = (work.path().join("volume"), work.path().join("outside"));
    make_data(&volume.join("data"));
    std::fs::create_dir_all(volume.join("data/sub/deeper/more")).unwrap();
    for i in 0..40 {
        std::fs::write(volume.join(format!("data/sub/deeper/more/g{i:02}")), b"more").unwrap();
    }
    set_mode(&volume.join("data/sub"), 0o777);
    set_mode(&volume.join("data/a.txt"), 0o666);
    let snapshot = back_up(&repo, &volume, "race").await.snapshot_id;
    make_outside(&outside);
    set_mode(&outside.join("sub"), 0o700);
    set_mode(&outside.join("a.txt"), 0o600);
    let before = fingerprint(&outside);

    let (mut completed, mut failed) = (0, 0);
    let started = Instant::now();
    while completed + failed < 10 || (completed + failed < 40 && started.elapsed() < Duration::from_secs(15)) {
        let target = work.path().join(format!("target-{}", completed + failed));
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
        // Swaps once the restore has made `data`.
        let swapper = Swapper::start(&target.join("data"), &target.join("link"));
        let result = repo.restore(&snapshot, &target, Recorder::default().callback(), never()).await;
        swapper.stop();
        match result {
            Ok(_) => completed += 1,
            Err(_) => failed += 1,
        }
        assert_eq!(fingerprint(&outside), before, "restore {} wrote outside its target: {result:?}", completed + failed);
    }
    eprintln!("{completed} restores completed, {failed} stopped at a symlink");
}

//! Volume trees to back up and the comparisons tests make on them.
#![allow(dead_code)] // each test binary uses a different subset

pub mod hooked_store;
mod restic_cli;
pub use restic_cli::{restic_cmd, run_ok};

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use stowage_restic::{BackupRequest, Progress, Repo, RepoConfig};
use stowage_storage::{FsStore, ObjectStore};
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery staple";

/// A filesystem store in a temp dir, and the path restic sees the repository at.
pub struct LocalRepo {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub namespace: String,
}

impl LocalRepo {
    pub async fn new(namespace: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStore::new("default", dir.path().join("bucket"));
        fs.create_root().await.unwrap();
        LocalRepo {
            dir,
            store: Arc::new(fs),
            namespace: namespace.to_string(),
        }
    }

    pub fn config(&self, password: &str) -> RepoConfig {
        RepoConfig {
            store: self.store.clone(),
            namespace: self.namespace.clone(),
            password: password.to_string(),
        }
    }

    pub fn restic_path(&self) -> PathBuf {
        self.dir.path().join("bucket/restic").join(&self.namespace)
    }

    pub async fn open_or_init(&self) -> Repo {
        Repo::open_or_init(self.config(PASSWORD)).await.unwrap().0
    }
}

pub fn request(path: &Path, pvc_uid: &str) -> BackupRequest {
    BackupRequest {
        path: path.to_path_buf(),
        tags: vec![
            format!("pvc-uid={pvc_uid}"),
            "backup=nightly".to_string(),
            "volume=data".to_string(),
        ],
        parent_tags: vec![format!("pvc-uid={pvc_uid}")],
        hostname: "node-1".to_string(),
    }
}

/// Records every progress report.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Progress>>>);

impl Recorder {
    pub fn callback(&self) -> Arc<dyn Fn(Progress) + Send + Sync> {
        let seen = self.0.clone();
        Arc::new(move |p| seen.lock().unwrap().push(p))
    }
    pub fn all(&self) -> Vec<Progress> {
        self.0.lock().unwrap().clone()
    }
}

pub fn never() -> CancellationToken {
    CancellationToken::new()
}

pub use stowage_test_support::noise;

/// A volume with regular files, nested dirs, an empty file and an empty dir, odd modes and
/// old mtimes, and a symlink inside.
pub fn make_volume(root: &Path) {
    std::fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello volume\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("nested/big.bin"), noise(3 << 20, 1)).unwrap();
    std::fs::write(root.join("nested/deeper/deepest/leaf"), b"leaf").unwrap();
    std::fs::write(
        root.join("nested/deeper/script.sh"),
        b"#!/bin/sh\necho hi\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-to-hello")).unwrap();
    set_mode(&root.join("nested/deeper/script.sh"), 0o750);
    set_mode(&root.join("hello.txt"), 0o600);
    set_mode(&root.join("nested/deeper"), 0o700);
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for f in ["hello.txt", "nested/big.bin", "empty"] {
        let file = std::fs::File::options()
            .write(true)
            .open(root.join(f))
            .unwrap();
        file.set_modified(old).unwrap();
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What a restore must preserve, per relative path: kind, contents or link target, mode,
/// and mtime (seconds) for regular files.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Dir {
        mode: u32,
    },
    Link {
        target: PathBuf,
    },
}

pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            out.insert(rel, Entry::Link { target });
        } else if meta.is_dir() {
            out.insert(rel, Entry::Dir { mode });
            walk(root, &path, out);
        } else {
            let data = std::fs::read(&path).unwrap();
            out.insert(
                rel,
                Entry::File {
                    data,
                    mode,
                    mtime: meta.mtime(),
                },
            );
        }
    }
}

pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (e, a) = (tree(expected), tree(actual));
    assert_eq!(
        e.keys().collect::<Vec<_>>(),
        a.keys().collect::<Vec<_>>(),
        "same entries"
    );
    for (path, entry) in &e {
        assert!(a[path] == *entry, "{path} differs: {:?}", short(&a[path]));
    }
}

fn short(e: &Entry) -> String {
    match e {
        Entry::File { data, mode, mtime } => {
            format!("file {}B mode {mode:o} mtime {mtime}", data.len())
        }
        other => format!("{other:?}"),
    }
}

/// The `restic` CLI, or `None` (with a loud note) when it is not installed.
pub fn restic() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/restic");
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "!!! SKIPPING: /usr/bin/restic is not installed; restic compatibility is NOT tested"
        );
        None
    }
}

/// What a test against the restic CLI starts from: the CLI, an initialised repository (and
/// the path restic opens it at), and an empty volume directory in a temp dir.
pub struct ResticCase {
    pub restic: PathBuf,
    pub repo_dir: LocalRepo,
    pub repo: Repo,
    pub repo_path: String,
    pub work: tempfile::TempDir,
    pub volume: PathBuf,
}

impl ResticCase {
    /// `None` (the test skips, saying so) when the restic CLI is not installed.
    pub async fn new() -> Option<ResticCase> {
        let restic = restic()?;
        let repo_dir = LocalRepo::new("ns1").await;
        let repo = repo_dir.open_or_init().await;
        let repo_path = repo_dir.restic_path().display().to_string();
        let work = tempfile::tempdir().unwrap();
        let volume = work.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        Some(ResticCase { restic, repo_dir, repo, repo_path, work, volume })
    }
}

/// A volume of restore edge cases: an empty file, a file whose chunks repeat, a mostly-zero
/// file (zero chunks), a file larger than several 16 MiB packs, and a hard link to it.
pub fn make_edge_volume(root: &Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    let block = noise(3 << 20, 7);
    let repeated: Vec<u8> = [&block[..], &block[..], &block[..]].concat();
    std::fs::write(root.join("repeats"), &repeated).unwrap();
    let mut zeros = vec![0u8; 24 << 20];
    zeros[(12 << 20)..(12 << 20) + 4096].copy_from_slice(&noise(4096, 8));
    std::fs::write(root.join("d/zeros"), &zeros).unwrap();
    std::fs::write(root.join("d/large"), noise(40 << 20, 9)).unwrap();
    std::fs::hard_link(root.join("d/large"), root.join("large-link")).unwrap();
    set_mode(&root.join("repeats"), 0o640);
}

/// What a restore of [`make_edge_volume`] must also have: the hard link, and holes where the
/// zeros were.
pub fn assert_edge_extras(restored: &Path) {
    let large = std::fs::metadata(restored.join("d/large")).unwrap();
    let link = std::fs::metadata(restored.join("large-link")).unwrap();
    assert_eq!(large.ino(), link.ino(), "the hard link is one inode");
    assert_eq!(large.nlink(), 2);
    let zeros = std::fs::metadata(restored.join("d/zeros")).unwrap();
    assert_eq!(zeros.len(), 24 << 20);
    assert!(
        zeros.blocks() * 512 < 8 << 20,
        "zero chunks left as holes: {} KiB allocated",
        zeros.blocks() / 2
    );
}

/// Backs `volume` up as the claim `pvc_uid` (see [`request`]), ignoring progress.
pub async fn back_up(repo: &Repo, volume: &Path, pvc_uid: &str) -> stowage_restic::BackupSummary {
    repo.backup(request(volume, pvc_uid), Recorder::default().callback(), never()).await.unwrap()
}

/// Restores `snapshot` into the existing directory `target`, ignoring progress.
pub async fn restore_into(repo: &Repo, snapshot: &str, target: &Path) -> stowage_restic::RestoreSummary {
    repo.restore(snapshot, target, Recorder::default().callback(), never()).await.unwrap()
}

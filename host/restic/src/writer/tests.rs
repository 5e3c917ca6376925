//! Index files saved while a backup runs: a backup that dies midway leaves its packs indexed,
//! so the next one does not store their blobs again; a backup saving many index files still
//! names each pack once, and restic checks and restores it.

use super::IndexEvery;
use crate::{BackupRequest, BackupSummary, Repo, RepoConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stowage_storage::{FsStore, Result as StorageResult, StorageError};
use stowage_test_support::noise;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "pw";

#[path = "../../tests/common/hooked_store.rs"]
mod hooked_store;
use hooked_store::{HookedStore, Hooks};
#[path = "../../tests/common/restic_cli.rs"]
mod restic_cli;
use restic_cli::{restic_cmd, run_ok};

/// Hooks under which pack writes fail from the `fail_from`-th on (counting from 0), as if the
/// agent died there; they cancel `cancel` first when one is set (the backup canceled while a
/// pack was on its way). Tree reads from the `hold_from`-th on (counting from 0) wait until
/// an index file is written, as if the store were slow there.
#[derive(Debug)]
struct Dying {
    packs: AtomicUsize,
    fail_from: AtomicUsize,
    cancel: Mutex<Option<CancellationToken>>,
    reads: AtomicUsize,
    hold_from: AtomicUsize,
    index_files: AtomicUsize,
    /// For each read held: whether an index file was written while it waited (false: it gave
    /// up after [`HOLD_AT_MOST`]).
    held: Mutex<Vec<bool>>,
}

/// How long a held read waits for an index file at most.
const HOLD_AT_MOST: Duration = Duration::from_secs(30);

impl Dying {
    fn new() -> Dying {
        Dying {
            packs: AtomicUsize::new(0),
            fail_from: AtomicUsize::new(usize::MAX),
            cancel: Mutex::default(),
            reads: AtomicUsize::new(0),
            hold_from: AtomicUsize::new(usize::MAX),
            index_files: AtomicUsize::new(0),
            held: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Hooks for Dying {
    async fn read_range(&self, _key: &str, _len: u64) {
        if self.reads.fetch_add(1, Ordering::SeqCst) < self.hold_from.load(Ordering::SeqCst) {
            return;
        }
        let before = self.index_files.load(Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.index_files.load(Ordering::SeqCst) == before && start.elapsed() < HOLD_AT_MOST {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.held.lock().unwrap().push(self.index_files.load(Ordering::SeqCst) > before);
    }

    async fn write(&self, key: &str, _len: u64) -> StorageResult<()> {
        if key.contains("/index/") {
            self.index_files.fetch_add(1, Ordering::SeqCst);
        }
        let fail_from = self.fail_from.load(Ordering::SeqCst);
        if !key.contains("/data/") || self.packs.fetch_add(1, Ordering::SeqCst) < fail_from {
            return Ok(());
        }
        if let Some(token) = &*self.cancel.lock().unwrap() {
            token.cancel();
        }
        Err(StorageError::Unreachable {
            location: "test".into(),
            endpoint: "test".into(),
            reason: "the store went away".into(),
        })
    }
}

/// A repository in a temp dir behind [`Dying`] hooks (not failing yet), and a volume.
struct Case {
    dir: tempfile::TempDir,
    store: Arc<HookedStore<Dying>>,
    restic: PathBuf,
    volume: PathBuf,
}

impl Case {
    /// `None` (the test skips, saying so) when the restic CLI is not installed.
    async fn new() -> Option<Case> {
        let restic = PathBuf::from("/usr/bin/restic");
        if !restic.exists() {
            eprintln!("!!! SKIPPING: /usr/bin/restic is not installed; index files are NOT tested");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStore::new("test", dir.path().join("store"));
        fs.create_root().await.unwrap();
        let store = Arc::new(HookedStore {
            inner: Arc::new(fs),
            hooks: Dying::new(),
        });
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        Some(Case { dir, store, restic, volume })
    }

    async fn repo(&self, every: IndexEvery) -> Repo {
        let cfg = RepoConfig {
            store: self.store.clone(),
            namespace: "ns".into(),
            password: PASSWORD.into(),
        };
        Repo::open_or_init(cfg).await.unwrap().0.with_index_every(every)
    }

    fn repo_path(&self) -> PathBuf {
        self.dir.path().join("store/restic/ns")
    }

    /// Runs the restic CLI on the repository, failing the test when it fails; its stdout.
    fn restic(&self, args: &[&str]) -> String {
        run_ok(restic_cmd(&self.restic, self.repo_path().to_str().unwrap(), PASSWORD).args(args))
    }

    /// The pack files in the repository and their sizes.
    fn pack_files(&self) -> BTreeMap<String, u64> {
        let mut packs = BTreeMap::new();
        for sub in std::fs::read_dir(self.repo_path().join("data")).unwrap() {
            for file in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                let file = file.unwrap();
                packs.insert(file.file_name().into_string().unwrap(), file.metadata().unwrap().len());
            }
        }
        packs
    }

    /// The packs each index file names, as restic reads them.
    fn index_files(&self) -> Vec<Vec<String>> {
        let ids = self.restic(&["list", "index"]);
        ids.lines()
            .map(|id| {
                let index: serde_json::Value = serde_json::from_str(&self.restic(&["cat", "index", id])).unwrap();
                let packs = index["packs"].as_array().unwrap();
                packs.iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
            })
            .collect()
    }

    /// Asserts that the index files name every pack file exactly once; returns how many
    /// index files there are.
    fn assert_each_pack_indexed_once(&self) -> usize {
        let files = self.index_files();
        let mut named: Vec<String> = files.iter().flatten().cloned().collect();
        named.sort();
        let packs: Vec<String> = self.pack_files().into_keys().collect();
        assert_eq!(named, packs, "each pack file in exactly one of {} index files", files.len());
        files.len()
    }
}

fn request(volume: &Path) -> BackupRequest {
    BackupRequest {
        path: volume.to_path_buf(),
        tags: vec!["pvc-uid=u".into()],
        parent_tags: vec!["pvc-uid=u".into()],
        hostname: "h".into(),
    }
}

async fn back_up(repo: &Repo, volume: &Path, cancel: CancellationToken) -> Result<BackupSummary, crate::EngineError> {
    repo.backup(request(volume), Arc::new(|_| {}), cancel).await
}

/// Six 8 MiB files of noise (about six packs) and two small ones: 48 MiB and a bit.
fn fill(volume: &Path) -> u64 {
    std::fs::create_dir(volume.join("d")).unwrap();
    for i in 0..6 {
        std::fs::write(volume.join(format!("d/f{i}")), noise(8 << 20, 40 + i)).unwrap();
    }
    std::fs::write(volume.join("small"), b"small").unwrap();
    std::fs::write(volume.join("d/tiny"), noise(10 << 10, 50)).unwrap();
    (48 << 20) + 5 + (10 << 10)
}

/// Restores `snapshot` with our restore and compares it with the volume, file by file.
async fn assert_restores(repo: &Repo, case: &Case, snapshot: &str) {
    let target = case.dir.path().join(format!("restore-{snapshot}"));
    std::fs::create_dir(&target).unwrap();
    repo.restore(snapshot, &target, Arc::new(|_| {}), CancellationToken::new()).await.unwrap();
    let out = std::process::Command::new("diff").arg("-r").arg(&case.volume).arg(&target).output().unwrap();
    assert!(out.status.success(), "restored differently: {}", String::from_utf8_lossy(&out.stdout));
}

/// A backup whose pack writes start failing after four (`cancel`: canceled there) leaves
/// those four packs indexed, one index file each, and a repository restic checks clean; the
/// next backup of the same data stores only what the dead one had not written.
async fn dead_backup_leaves_its_packs_indexed(cancel: bool) {
    let Some(case) = Case::new().await else { return };
    let total = fill(&case.volume);
    let every = IndexEvery {
        packs: 1,
        age: Duration::from_secs(3600),
    };
    let repo = case.repo(every).await;

    let token = CancellationToken::new();
    if cancel {
        *case.store.cancel.lock().unwrap() = Some(token.clone());
    }
    case.store.fail_from.store(4, Ordering::SeqCst);
    let err = back_up(&repo, &case.volume, token).await.unwrap_err();
    assert_eq!(err.is_canceled(), cancel, "{err:?}");
    assert!(repo.snapshots(&[]).await.unwrap().is_empty(), "no snapshot written");
    let packs = case.pack_files();
    assert_eq!(packs.len(), 4, "the packs written before the failure: {packs:?}");
    assert_eq!(case.assert_each_pack_indexed_once(), 4, "an index file after each pack");
    case.restic(&["check", "--read-data"]);

    // The next backup (the store working again) finds the dead one's blobs in the index.
    case.store.fail_from.store(usize::MAX, Ordering::SeqCst);
    *case.store.cancel.lock().unwrap() = None;
    let indexed: u64 = packs.values().sum();
    assert!(indexed > 32 << 20, "four packs of 8 MiB or more: {indexed}");
    let retry = back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    assert_eq!(retry.files_new, 8, "{retry:?}");
    assert!(
        retry.data_added <= total - indexed + (256 << 10),
        "{indexed} bytes were already stored; the retry added {}: {retry:?}",
        retry.data_added
    );
    assert!(retry.data_added < total / 2, "{retry:?}");
    case.assert_each_pack_indexed_once();
    case.restic(&["check", "--read-data"]);
    assert_restores(&repo, &case, &retry.snapshot_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_failing_midway_leaves_its_packs_indexed_and_the_retry_skips_them() {
    dead_backup_leaves_its_packs_indexed(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_canceled_midway_leaves_its_packs_indexed_and_the_retry_skips_them() {
    dead_backup_leaves_its_packs_indexed(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_saving_many_index_files_names_each_pack_once_and_restores() {
    let Some(case) = Case::new().await else { return };
    let total = fill(&case.volume);
    std::fs::create_dir_all(case.volume.join("a/b")).unwrap();
    std::fs::write(case.volume.join("a/b/c"), b"deep").unwrap();

    // An index file every two packs: two or three while the five to seven data packs are
    // written (how full each pack gets depends on which worker's blob fills it), the last one
    // (with the tree pack) at the end.
    let every = IndexEvery {
        packs: 2,
        age: Duration::from_secs(3600),
    };
    let repo = case.repo(every).await;
    let first = back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    assert!(first.data_added > total, "{first:?}");
    let packs = case.pack_files().len();
    assert!(packs >= 6, "{packs} packs");
    assert_eq!(case.assert_each_pack_indexed_once(), packs.div_ceil(2));
    case.restic(&["check", "--read-data"]);
    assert_restores(&repo, &case, &first.snapshot_id).await;

    // By age: every pack waited long enough as soon as it was written, so each gets its own.
    let every = IndexEvery {
        packs: usize::MAX,
        age: Duration::ZERO,
    };
    let repo = case.repo(every).await;
    std::fs::write(case.volume.join("d/f0"), noise(8 << 20, 60)).unwrap();
    let second = back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    assert_eq!(second.files_changed, 1, "{second:?}");
    let added = case.pack_files().len() - packs;
    assert!(added >= 2, "a data pack and a tree pack: {added}");
    assert_eq!(case.assert_each_pack_indexed_once(), packs.div_ceil(2) + added);
    case.restic(&["check", "--read-data"]);
    assert_restores(&repo, &case, &second.snapshot_id).await;
}

/// Packs that have waited [`IndexEvery::age`] are indexed even when no other pack comes to
/// wake the uploader: a backup held up after writing one (here by a slow read of the parent's
/// tree of the directory after a changed file) still leaves it indexed.
#[tokio::test(flavor = "multi_thread")]
async fn a_pack_is_indexed_when_its_time_is_up_while_the_backup_is_held_up() {
    let Some(case) = Case::new().await else { return };
    // 12 MiB of noise: one full data pack (8 MiB and a little) and the rest, which waits in
    // the packer until the end. "big" is walked before "z".
    std::fs::write(case.volume.join("big"), noise(12 << 20, 70)).unwrap();
    std::fs::create_dir(case.volume.join("z")).unwrap();
    std::fs::write(case.volume.join("z/small"), b"small").unwrap();
    let every = IndexEvery {
        packs: usize::MAX,
        age: Duration::from_millis(300),
    };
    let repo = case.repo(every).await;
    back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    // An unchanged backup reads the same parent trees as the next one: the last is z's.
    let start = case.store.reads.load(Ordering::SeqCst);
    back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    let reads = case.store.reads.load(Ordering::SeqCst) - start;
    assert!(reads >= 2, "the volume's tree and z's: {reads}");

    std::fs::write(case.volume.join("big"), noise(12 << 20, 71)).unwrap();
    let index_files = case.assert_each_pack_indexed_once();
    let start = case.store.reads.load(Ordering::SeqCst);
    case.store.hold_from.store(start + reads - 1, Ordering::SeqCst);
    let third = back_up(&repo, &case.volume, CancellationToken::new()).await.unwrap();
    assert_eq!(third.files_changed, 1, "{third:?}");
    // Without the timer, the full pack would wait for the end of the walk, which waits for
    // the read: the read would give up.
    assert_eq!(*case.store.held.lock().unwrap(), [true], "z's tree read waited for an index file, and one came");
    // That index file, and the one of the rest (the last data pack and the tree pack).
    assert_eq!(case.assert_each_pack_indexed_once(), index_files + 2);
    case.restic(&["check", "--read-data"]);
    assert_restores(&repo, &case, &third.snapshot_id).await;
}

#[test]
fn owners_are_named_from_the_system_databases() {
    let mut names = super::Names::default();
    assert_eq!(names.user(0).as_deref(), Some("root"));
    assert_eq!(names.group(0).as_deref(), Some("root"));
    // An id no entry has: no name (restic then shows the number).
    assert_eq!(names.user(3_999_999_999), None);
    assert_eq!(names.group(3_999_999_999), None);
}

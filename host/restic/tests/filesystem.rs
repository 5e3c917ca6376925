//! The engine on a filesystem store: backups, restores, parents, forget, errors, cancel,
//! unreadable entries.

mod common;

use common::hooked_store::{HookedStore, Hooks};
use common::*;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stowage_restic::{EngineError, Repo};
use stowage_storage::Result as StorageResult;
use tokio_util::sync::CancellationToken;

/// Where kube-sim puts a CSI volume: a `mount` symlink to the real directory.
fn mounted_volume(base: &Path, pod: &str) -> std::path::PathBuf {
    let real = base.join("real").join(pod);
    std::fs::create_dir_all(&real).unwrap();
    let pod_dir = base.join("pods").join(pod).join("volumes/data");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::os::unix::fs::symlink(&real, pod_dir.join("mount")).unwrap();
    pod_dir.join("mount")
}

fn lock_files(repo: &LocalRepo) -> Vec<String> {
    match std::fs::read_dir(repo.restic_path().join("locks")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn random_file(path: &Path, len: u64) {
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(len)
        .read_to_end(&mut data)
        .unwrap();
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backs_up_a_symlinked_volume_and_restores_it_byte_identical() {
    let repo_dir = LocalRepo::new("ns1").await;
    let (repo, created) = Repo::open_or_init(repo_dir.config(PASSWORD)).await.unwrap();
    assert!(created);
    let (_, created_again) = Repo::open_or_init(repo_dir.config(PASSWORD)).await.unwrap();
    assert!(!created_again);
    for part in ["config", "keys"] {
        assert!(repo_dir.restic_path().join(part).exists(), "{part}");
    }

    let work = tempfile::tempdir().unwrap();
    let volume = mounted_volume(work.path(), "pod-a");
    make_volume(&volume);
    let progress = Recorder::default();
    let summary = repo
        .backup(request(&volume, "uid-1"), progress.callback(), never())
        .await
        .unwrap();
    assert_eq!(summary.snapshot_id.len(), 64);
    assert_eq!(summary.parent, None);
    assert_eq!(summary.files_new, 6, "{summary:?}");
    assert_eq!(summary.files_unmodified, 0);
    assert!(summary.total_bytes > 3 << 20, "{summary:?}");
    assert!(
        summary.data_added > 3 << 20,
        "random data does not compress: {summary:?}"
    );
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let last = *progress.all().last().expect("a final progress report");
    assert_eq!(last.bytes_done, summary.total_bytes);
    assert!(
        lock_files(&repo_dir).is_empty(),
        "lock removed after the backup"
    );

    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let restored = restore_into(&repo, &summary.snapshot_id, &target).await;
    assert_same_tree(&volume, &target);
    assert_eq!(restored.files, 6);
    assert_eq!(restored.bytes, summary.total_bytes);

    // A short id works too, and a new target gets the same tree.
    let target2 = work.path().join("restored-short");
    std::fs::create_dir(&target2).unwrap();
    restore_into(&repo, &summary.snapshot_id[..8], &target2).await;
    assert_same_tree(&volume, &target2);
    assert!(
        lock_files(&repo_dir).is_empty(),
        "lock removed after the restore"
    );

    let snaps = repo.snapshots(&["pvc-uid=uid-1".into()]).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, summary.snapshot_id);
    assert_eq!(snaps[0].paths, ["/pvc-uid=uid-1"]);
    assert_eq!(snaps[0].hostname, "node-1");
    assert!(snaps[0].tags.contains(&"backup=nightly".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_backup_after_a_reschedule_reads_only_what_changed() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let first_pod = work.path().join("pod-a-volume");
    std::fs::create_dir(&first_pod).unwrap();
    make_volume(&first_pod);
    let first = back_up(&repo, &first_pod, "uid-1").await;

    // The pod moves: the same volume shows up under another path, and one file changes.
    let second_pod = work.path().join("pod-b-volume");
    std::fs::rename(&first_pod, &second_pod).unwrap();
    std::fs::write(second_pod.join("hello.txt"), b"hello again\n").unwrap();
    let mut req = request(&second_pod, "uid-1");
    req.hostname = "node-2".into();
    let second = repo
        .backup(req, Recorder::default().callback(), never())
        .await
        .unwrap();
    assert_eq!(second.parent.as_deref(), Some(first.snapshot_id.as_str()));
    assert_eq!(second.files_changed, 1, "{second:?}");
    assert_eq!(second.files_unmodified, 5, "{second:?}");
    assert!(
        second.data_added < 64 << 10,
        "only the change is stored: {second:?}"
    );

    // Another volume's chain does not pick it up as parent.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("f"), b"x").unwrap();
    let unrelated = back_up(&repo, &other, "uid-2").await;
    assert_eq!(unrelated.parent, None);

    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &second.snapshot_id, &target).await;
    assert_same_tree(&second_pod, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_and_forgets_snapshots() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("f"), b"data").unwrap();
    let mut ids = Vec::new();
    for uid in ["a", "b", "a"] {
        let s = repo
            .backup(
                request(work.path(), uid),
                Recorder::default().callback(),
                never(),
            )
            .await
            .unwrap();
        ids.push(s.snapshot_id);
    }
    let a: Vec<_> = repo
        .snapshots(&["pvc-uid=a".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(a, [ids[0].clone(), ids[2].clone()], "oldest first");
    assert_eq!(repo.snapshots(&[]).await.unwrap().len(), 3);
    assert!(repo
        .snapshots(&["pvc-uid=a".into(), "pvc-uid=b".into()])
        .await
        .unwrap()
        .is_empty());

    let missing = "0".repeat(64);
    let removed = repo
        .forget(&[ids[0][..10].to_string(), missing, ids[1].clone()])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<_> = repo
        .snapshots(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[2].clone()]);
    assert_eq!(
        repo.forget(&[ids[0].clone()]).await.unwrap(),
        0,
        "already gone"
    );
    assert!(lock_files(&repo_dir).is_empty());

    let err = repo
        .restore(
            &ids[0],
            work.path(),
            Recorder::default().callback(),
            never(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Snapshot { .. }), "{err:?}");
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explains_missing_repositories_wrong_passwords_and_bad_paths() {
    let repo_dir = LocalRepo::new("ns1").await;
    let err = Repo::open(repo_dir.config(PASSWORD)).await.unwrap_err();
    assert!(matches!(err, EngineError::NotInitialised { .. }), "{err:?}");
    assert!(err.to_string().contains("\"default:restic/ns1\""), "{err}");

    let repo = repo_dir.open_or_init().await;
    let err = Repo::open(repo_dir.config("another master key"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongPassword { .. }), "{err:?}");
    assert!(err.to_string().contains("master key Secret"), "{err}");
    assert!(!err.to_string().contains("another master key"));
    Repo::open(repo_dir.config(PASSWORD)).await.unwrap();

    let err = repo
        .backup(
            request(Path::new("/nonexistent/volume"), "u"),
            Recorder::default().callback(),
            never(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SourcePath { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/volume"), "{err}");

    let err = repo
        .restore(
            "abcdef12",
            Path::new("/nonexistent/target"),
            Recorder::default().callback(),
            never(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Target { .. }), "{err:?}");
}

/// Hooks that, while stalled, hold large data writes until they are no longer stalled and
/// never answer large data reads (a pack's contents, not its small tree packs): an operation
/// reaching one cannot finish, however fast the machine, so a cancel or timeout is what ends
/// it. `reached` counts the stalled calls.
#[derive(Debug)]
struct Stalling {
    stalled: AtomicBool,
    reached: AtomicUsize,
}

impl Stalling {
    const LARGE: u64 = 1 << 20;

    fn stalls(&self, key: &str, len: u64) -> bool {
        self.stalled.load(Ordering::SeqCst) && key.contains("/data/") && len >= Self::LARGE
    }

    /// Waits until a call stalls that had not when `before` was read.
    async fn wait_for_stall(&self, before: usize) {
        while self.reached.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait::async_trait]
impl Hooks for Stalling {
    /// A write stalls until the store is no longer stalled (the engine lets started writes
    /// finish, so they must end).
    async fn write(&self, key: &str, len: u64) -> StorageResult<()> {
        if self.stalls(key, len) {
            self.reached.fetch_add(1, Ordering::SeqCst);
            while self.stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// A read never ends (the engine abandons reads when canceled).
    async fn read_range(&self, key: &str, len: u64) {
        if self.stalls(key, len) {
            self.reached.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }
}

async fn wait_for_lock_removal(repo_dir: &LocalRepo, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lock_files(repo_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "lock left behind after {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_backup_and_restore_and_releases_the_lock() {
    let repo_dir = LocalRepo::new("ns1").await;
    repo_dir.open_or_init().await;
    let store = Arc::new(HookedStore {
        inner: repo_dir.store.clone(),
        hooks: Stalling { stalled: AtomicBool::new(true), reached: AtomicUsize::new(0) },
    });
    let mut config = repo_dir.config(PASSWORD);
    config.store = store.clone();
    let repo = Repo::open(config).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("vol");
    std::fs::create_dir(&volume).unwrap();
    for i in 0..4 {
        random_file(&volume.join(format!("f{i}")), 16 << 20);
    }

    // A backup whose first pack upload is held, canceled once it got there: the upload then
    // completes, but nothing after it runs.
    let token = CancellationToken::new();
    let before = store.reached.load(Ordering::SeqCst);
    let backup = tokio::spawn({
        let (repo, volume, token) = (repo.clone(), volume.clone(), token.clone());
        async move {
            repo.backup(request(&volume, "u"), Recorder::default().callback(), token)
                .await
        }
    });
    store.wait_for_stall(before).await;
    assert!(!backup.is_finished(), "a stalled backup cannot finish");
    token.cancel();
    store.stalled.store(false, Ordering::SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(60), backup)
        .await
        .expect("a canceled backup stops")
        .unwrap()
        .unwrap_err();
    assert!(err.is_canceled(), "{err:?}");
    wait_for_lock_removal(&repo_dir, "a canceled backup").await;
    assert!(
        repo.snapshots(&[]).await.unwrap().is_empty(),
        "no snapshot written"
    );

    // A complete backup, then a restore whose first pack read never completes, canceled.
    let summary = back_up(&repo, &volume, "u").await;
    store.stalled.store(true, Ordering::SeqCst);
    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let token = CancellationToken::new();
    let before = store.reached.load(Ordering::SeqCst);
    let restore = tokio::spawn({
        let (repo, id, target, token) = (
            repo.clone(),
            summary.snapshot_id.clone(),
            target.clone(),
            token.clone(),
        );
        async move {
            repo.restore(&id, &target, Recorder::default().callback(), token)
                .await
        }
    });
    store.wait_for_stall(before).await;
    assert!(!restore.is_finished(), "a stalled restore cannot finish");
    token.cancel();
    let err = tokio::time::timeout(Duration::from_secs(60), restore)
        .await
        .expect("a canceled restore stops although its reads hang")
        .unwrap()
        .unwrap_err();
    assert!(err.is_canceled(), "{err:?}");
    wait_for_lock_removal(&repo_dir, "a canceled restore").await;

    // A timeout (the future dropped) also stops it and releases the lock.
    let target = work.path().join("target2");
    std::fs::create_dir(&target).unwrap();
    let slow = tokio::time::timeout(
        Duration::from_millis(300),
        repo.restore(
            &summary.snapshot_id,
            &target,
            Recorder::default().callback(),
            never(),
        ),
    )
    .await;
    assert!(slow.is_err(), "a stalled restore cannot finish");
    wait_for_lock_removal(&repo_dir, "a timeout").await;

    // Nothing was damaged: with the store answering again the snapshot restores.
    store.stalled.store(false, Ordering::SeqCst);
    let target = work.path().join("target3");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &summary.snapshot_id, &target).await;
    assert_same_tree(&volume, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_empty_repeated_zero_multi_pack_and_hard_linked_files() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("vol");
    make_edge_volume(&volume);
    let summary = back_up(&repo, &volume, "edge").await;
    let packs: usize = std::fs::read_dir(repo_dir.restic_path().join("data"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert!(packs >= 3, "the large file spans several packs: {packs}");

    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let progress = Recorder::default();
    let restored = repo
        .restore(&summary.snapshot_id, &target, progress.callback(), never())
        .await
        .unwrap();
    assert_same_tree(&volume, &target);
    assert_edge_extras(&target);
    assert_eq!(restored.files, 5);
    // The second name of the hard link has no contents of its own to write.
    let linked = 40 << 20;
    assert_eq!(restored.bytes, summary.total_bytes - linked);
    let last = *progress.all().last().expect("a final progress report");
    assert_eq!(
        (last.bytes_done, last.total_bytes),
        (restored.bytes, restored.bytes)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_into_a_directory_that_already_holds_files() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("vol");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    let summary = back_up(&repo, &volume, "u").await;

    let target = work.path().join("target");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // Stale contents, wrong kinds, a symlink where a directory goes (never followed), and
    // something the snapshot does not have.
    std::fs::write(
        target.join("hello.txt"),
        b"stale contents, longer than the original",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, target.join("nested")).unwrap();
    std::fs::write(target.join("empty-dir"), b"a file where a directory goes").unwrap();
    std::fs::write(target.join("link-to-hello"), b"a file where a symlink goes").unwrap();
    std::fs::write(target.join("extra.txt"), b"not in the snapshot").unwrap();
    // A file of the snapshot that is a hard link to a file outside the target.
    std::fs::write(outside.join("shared"), b"outside data").unwrap();
    std::fs::hard_link(outside.join("shared"), target.join("empty")).unwrap();
    restore_into(&repo, &summary.snapshot_id, &target).await;
    assert_eq!(
        std::fs::read(target.join("extra.txt")).unwrap(),
        b"not in the snapshot",
        "entries the snapshot does not have stay"
    );
    std::fs::remove_file(target.join("extra.txt")).unwrap();
    assert_same_tree(&volume, &target);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written through the symlink"
    );
    assert_eq!(
        std::fs::read(outside.join("shared")).unwrap(),
        b"outside data",
        "a hard-linked file is replaced, not truncated"
    );

    // Restoring again keeps what is already there (same size and mtime) and stays identical.
    let again = restore_into(&repo, &summary.snapshot_id, &target).await;
    assert_eq!(again.bytes, 0, "nothing rewritten: {again:?}");
    assert_same_tree(&volume, &target);

    // A directory where the snapshot has a file is not deleted: the restore says so.
    let blocked = work.path().join("blocked");
    std::fs::create_dir_all(blocked.join("hello.txt/inside")).unwrap();
    let err = repo
        .restore(
            &summary.snapshot_id,
            &blocked,
            Recorder::default().callback(),
            never(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hello.txt"), "{err}");
    assert!(err.to_string().contains("directory is in the way"), "{err}");
    assert!(blocked.join("hello.txt/inside").is_dir());
}

/// Set in the child process [`unreadable_entries_are_left_out_with_a_warning_each`] starts
/// without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: the work directory it backs up from,
/// and the directory store the repository is in.
const UNPRIVILEGED_CHILD: &str = "STOWAGE_TEST_UNPRIVILEGED_BACKUP";
const UNPRIVILEGED_STORE: &str = "STOWAGE_TEST_UNPRIVILEGED_STORE";
const UNREADABLE: [&str; 3] = ["secret", "nested/secret-large", "locked"];

/// Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling process's bounding set
/// (so root does not get them back at exec) and its effective, permitted and inheritable
/// sets. For `pre_exec`: only system calls.
fn drop_dac_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const DAC_OVERRIDE: u32 = 1;
    const DAC_READ_SEARCH: u32 = 2;
    for cap in [DAC_OVERRIDE, DAC_READ_SEARCH] {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: a version 3 header and room for its two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let keep = !((1 << DAC_OVERRIDE) | (1 << DAC_READ_SEARCH));
    data[0].effective &= keep;
    data[0].permitted &= keep;
    data[0].inheritable &= keep;
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child's part: backs `<work>/volume` up into the repository in `store`, writing the
/// snapshot id and the warnings, a line each, to `<work>/result` (or `cannot drop` when the
/// process still reads a mode-000 file).
async fn unprivileged_backup(work: &Path, store: &Path) {
    let result = work.join("result");
    if std::fs::read(work.join("volume/secret")).is_ok() {
        std::fs::write(&result, "cannot drop\n").unwrap();
        return;
    }
    let fs = stowage_storage::FsStore::new("default", store);
    let config = stowage_restic::RepoConfig {
        store: Arc::new(fs),
        namespace: "ns1".into(),
        password: PASSWORD.into(),
    };
    let repo = Repo::open(config).await.unwrap();
    let summary = back_up(&repo, &work.join("volume"), "u1").await;
    let mut out = summary.snapshot_id.clone();
    for w in &summary.warnings {
        assert!(!w.contains('\n'), "{w}");
        out.push('\n');
        out.push_str(w);
    }
    std::fs::write(&result, out).unwrap();
}

/// Runs [`unprivileged_backup`] in a copy of this test binary without the capabilities that
/// let root read any file; `None` (the test skips) when they cannot be dropped.
fn backup_without_dac_capabilities(work: &Path, store: &Path) -> Option<(String, Vec<String>)> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "unreadable_entries_are_left_out_with_a_warning_each", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(UNPRIVILEGED_CHILD, work)
        .env(UNPRIVILEGED_STORE, store);
    // SAFETY: the closure makes system calls only.
    unsafe { cmd.pre_exec(drop_dac_capabilities) };
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "!!! SKIPPING: cannot start a process without CAP_DAC_OVERRIDE ({e}): unreadable entries are NOT tested"
            );
            return None;
        }
    };
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the unprivileged backup failed: {log}");
    let result = std::fs::read_to_string(work.join("result")).unwrap_or_else(|e| panic!("{e}: {log}"));
    if result == "cannot drop\n" {
        eprintln!(
            "!!! SKIPPING: root without CAP_DAC_OVERRIDE still reads mode-000 files: unreadable entries are NOT tested"
        );
        return None;
    }
    let mut lines = result.lines().map(str::to_string);
    Some((lines.next().unwrap(), lines.collect()))
}

/// Files and a directory the backup cannot read (mode 000, and as root the backup runs in a
/// child process without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH): the backup completes,
/// warns once per entry naming it, leaves the files out of the snapshot and the directory's
/// contents (the directory itself is in it), and everything else restores byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_entries_are_left_out_with_a_warning_each() {
    if let (Some(work), Some(store)) = (std::env::var_os(UNPRIVILEGED_CHILD), std::env::var_os(UNPRIVILEGED_STORE)) {
        return unprivileged_backup(Path::new(&work), Path::new(&store)).await;
    }
    let Some(ResticCase { restic, repo_dir, repo, repo_path, work, volume }) = ResticCase::new().await else { return };
    make_volume(&volume);
    std::fs::write(volume.join("secret"), b"no one reads this").unwrap();
    // Larger than a region (8 MiB): the large-file path opens it.
    std::fs::write(volume.join("nested/secret-large"), noise(9 << 20, 3)).unwrap();
    std::fs::create_dir(volume.join("locked")).unwrap();
    std::fs::write(volume.join("locked/inside"), b"inside").unwrap();
    for path in UNREADABLE {
        set_mode(&volume.join(path), 0);
    }

    // SAFETY: geteuid has no preconditions.
    let (snapshot, warnings) = if unsafe { libc::geteuid() } == 0 {
        let store = repo_dir.dir.path().join("bucket");
        let Some(done) = backup_without_dac_capabilities(work.path(), &store) else {
            set_mode(&volume.join("locked"), 0o700);
            return;
        };
        done
    } else if std::fs::read(volume.join("secret")).is_ok() {
        eprintln!("!!! SKIPPING: this user reads mode-000 files: unreadable entries are NOT tested");
        set_mode(&volume.join("locked"), 0o700);
        return;
    } else {
        // Not root: mode 000 alone makes them unreadable.
        let summary = back_up(&repo, &volume, "u1").await;
        (summary.snapshot_id, summary.warnings)
    };

    for path in UNREADABLE {
        let full = volume.join(path).display().to_string();
        let named: Vec<_> = warnings.iter().filter(|w| w.starts_with(&format!("{full}: "))).collect();
        assert_eq!(named.len(), 1, "one warning names {full}: {warnings:?}");
        assert!(named[0].contains("Permission denied"), "{named:?}");
    }
    assert_eq!(warnings.len(), UNREADABLE.len(), "{warnings:?}");
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));
    let ls = run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["ls", "--json", &snapshot]));
    let listed: Vec<String> = ls
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["struct_type"] == "node")
        .map(|v| v["path"].as_str().unwrap().trim_start_matches("/pvc-uid=u1/").to_string())
        .collect();
    for gone in ["secret", "nested/secret-large", "locked/inside"] {
        assert!(!listed.iter().any(|p| p == gone), "{gone} left out: {listed:?}");
    }
    assert!(listed.iter().any(|p| p == "locked"), "the directory is in the snapshot: {listed:?}");

    // Restored: everything but what could not be read, the directory empty with its mode.
    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &snapshot, &target).await;
    let mode = |p: &Path| std::os::unix::fs::MetadataExt::mode(&std::fs::symlink_metadata(p).unwrap()) & 0o7777;
    assert_eq!(mode(&target.join("locked")), 0);
    for root in [&volume, &target] {
        set_mode(&root.join("locked"), 0o700);
    }
    std::fs::remove_file(volume.join("secret")).unwrap();
    std::fs::remove_file(volume.join("nested/secret-large")).unwrap();
    std::fs::remove_file(volume.join("locked/inside")).unwrap();
    assert_same_tree(&volume, &target);
}

/// A pod's tree deeper than the walk goes (it holds a handle per directory on its way down):
/// kept down to 256 directories below the volume, the deeper contents left out with one
/// warning naming where; the backup completes and restores.
#[tokio::test(flavor = "multi_thread")]
async fn a_tree_deeper_than_the_walk_goes_is_kept_to_its_depth_with_a_warning() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    let mut dir = volume.clone();
    for _ in 0..300 {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("leaf"), b"leaf").unwrap();
        dir.push("d");
    }
    let summary = back_up(&repo, &volume, "deep").await;
    let deepest = volume.join("d/".repeat(256).trim_end_matches('/'));
    assert_eq!(
        summary.warnings,
        [format!("{}: skipped its contents: a backup goes 256 directories deep", deepest.display())]
    );

    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &summary.snapshot_id, &target).await;
    let kept = target.join("d/".repeat(255));
    assert_eq!(std::fs::read(kept.join("leaf")).unwrap(), b"leaf");
    assert!(kept.join("d").is_dir(), "the deepest directory is there");
    assert_eq!(std::fs::read_dir(kept.join("d")).unwrap().count(), 0, "without its contents");
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_a_snapshot_and_restores_only_the_paths_asked_for() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("vol");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    std::fs::create_dir_all(volume.join("var/log")).unwrap();
    std::fs::write(volume.join("var/log/x.log"), b"the line a human deleted\n").unwrap();
    std::fs::write(volume.join("var/log/y.log"), b"not asked for\n").unwrap();
    let summary = back_up(&repo, &volume, "files").await;

    let top = repo.list(&summary.snapshot_id, Path::new(""), false).await.unwrap();
    let names: Vec<&str> = top.iter().map(|e| e.path.as_str()).collect();
    assert!(names.contains(&"var") && names.contains(&"hello.txt") && !names.contains(&"var/log"), "{names:?}");
    let logs = repo.list(&summary.snapshot_id, Path::new("var/log"), false).await.unwrap();
    let x = logs.iter().find(|e| e.path == "var/log/x.log").expect("x.log is listed");
    assert_eq!((x.kind.as_str(), x.size), ("file", 25));
    assert!(x.mtime.is_some());
    let all = repo.list(&summary.snapshot_id, Path::new(""), true).await.unwrap();
    assert!(all.iter().any(|e| e.path == "var/log/y.log"));
    let err = repo.list(&summary.snapshot_id, Path::new("nope"), false).await.unwrap_err().to_string();
    assert!(err.contains("holds no \"/nope\""), "{err}");

    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let restored = repo
        .restore_paths(&summary.snapshot_id, &target, &["/var/log/x.log".into()], Path::new(""), Recorder::default().callback(), never())
        .await
        .unwrap();
    assert_eq!(restored.files, 1);
    assert_eq!(std::fs::read(target.join("var/log/x.log")).unwrap(), b"the line a human deleted\n");
    assert!(!target.join("var/log/y.log").exists() && !target.join("hello.txt").exists(), "only what was asked for");

    let err = repo
        .restore_paths(&summary.snapshot_id, &target, &["/var/log/z.log".into()], Path::new(""), Recorder::default().callback(), never())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no \"/var/log/z.log\"") && err.contains("stowage backup browse"), "{err}");
    let err = repo
        .restore_paths(&summary.snapshot_id, &target, &["../etc".into()], Path::new(""), Recorder::default().callback(), never())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("leads out of the volume"), "{err}");

    // Into a directory of the volume, created; a symlink there is not followed out.
    let into = Path::new(".stowage-restored/r1");
    repo.restore_paths(&summary.snapshot_id, &target, &["var/log".into()], into, Recorder::default().callback(), never())
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join(".stowage-restored/r1/var/log/y.log")).unwrap(), b"not asked for\n");
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join(".stowage-restored/r2")).unwrap();
    let err = repo
        .restore_paths(&summary.snapshot_id, &target, &["var".into()], Path::new(".stowage-restored/r2"), Recorder::default().callback(), never())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(".stowage-restored/r2"), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
}

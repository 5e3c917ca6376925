//! Repository maintenance (`Repo::maintain`): forgotten data goes, what is left restores and
//! passes `restic check --read-data`, and locks are respected.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use stowage_restic::{EngineError, MaintenanceOptions};

/// The repository's files (relative path and size), locks left out.
fn files(repo: &LocalRepo) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&repo.restic_path(), &repo.restic_path(), &mut out);
    out.retain(|k, _| !k.starts_with("locks/"));
    out
}

fn packs(repo: &LocalRepo) -> usize {
    files(repo)
        .keys()
        .filter(|k| k.starts_with("data/"))
        .count()
}

/// Lock files with contents (restic creates a lock file, then writes it).
fn written_locks(repo: &LocalRepo) -> usize {
    std::fs::read_dir(repo.restic_path().join("locks")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
            .count()
    })
}

fn wait_for_written_lock(repo: &LocalRepo, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while written_locks(repo) == 0 {
        assert!(Instant::now() < deadline, "{what} took no lock");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn check_read_data(case: &ResticCase) {
    run_ok(restic_cmd(&case.restic, &case.repo_path, PASSWORD).args(["check", "--read-data"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_frees_forgotten_snapshots_and_keeps_the_rest_readable() {
    let Some(case) = ResticCase::new().await else {
        return;
    };
    let shared = noise(1 << 20, 100);
    let mut snapshots = Vec::new();
    let mut volumes = Vec::new();
    for i in 0..3u64 {
        let vol = case.work.path().join(format!("vol{i}"));
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("big"), noise(3 << 20, 10 + i)).unwrap();
        std::fs::write(vol.join("sub/small"), noise(200 << 10, 20 + i)).unwrap();
        std::fs::write(vol.join("sub/shared"), &shared).unwrap();
        snapshots.push(back_up(&case.repo, &vol, &format!("u{i}")).await);
        volumes.push(vol);
    }
    let forgotten = [
        snapshots[0].snapshot_id.clone(),
        snapshots[1].snapshot_id.clone(),
    ];
    assert_eq!(case.repo.forget(&forgotten).await.unwrap(), 2);
    let size_before = case.repo.size().await.unwrap();

    let summary = case
        .repo
        .maintain(MaintenanceOptions::default())
        .await
        .unwrap();
    assert!(summary.bytes_after < summary.bytes_before, "{summary:?}");
    assert!(
        summary.bytes_freed > 5 << 20,
        "two volumes' own data: {summary:?}"
    );
    assert_eq!(
        summary.bytes_freed,
        summary.bytes_before - summary.bytes_after
    );
    assert!(summary.packs_removed > 0, "{summary:?}");
    assert_eq!(summary.stale_locks_removed, 0);
    assert!(summary.blobs >= 4, "{summary:?}");
    let size_after = case.repo.size().await.unwrap();
    assert_eq!(size_before - size_after, summary.bytes_freed, "{summary:?}");
    let on_disk: u64 = files(&case.repo_dir)
        .iter()
        .filter(|(k, _)| k.starts_with("data/") || k.starts_with("index/"))
        .map(|(_, size)| size)
        .sum();
    assert_eq!(on_disk, summary.bytes_after);
    assert_eq!(
        written_locks(&case.repo_dir),
        0,
        "the exclusive lock is removed"
    );

    // What is left restores byte for byte, and restic finds the repository sound.
    let target = case.work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&case.repo, &snapshots[2].snapshot_id, &target).await;
    assert_same_tree(&volumes[2], &target);
    check_read_data(&case);
    let json =
        run_ok(restic_cmd(&case.restic, &case.repo_path, PASSWORD).args(["snapshots", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{json}");
    assert_eq!(listed[0]["id"], snapshots[2].snapshot_id.as_str());

    // The next backup is incremental on the remaining snapshot, and a second maintenance
    // has nothing to remove.
    std::fs::write(volumes[2].join("sub/new"), noise(300 << 10, 30)).unwrap();
    let next = back_up(&case.repo, &volumes[2], "u2").await;
    assert_eq!(
        next.parent.as_deref(),
        Some(snapshots[2].snapshot_id.as_str())
    );
    assert_eq!(next.files_new, 1, "{next:?}");
    assert_eq!(next.files_unmodified, 3, "{next:?}");
    let again = case
        .repo
        .maintain(MaintenanceOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.packs_removed, again.packs_repacked),
        (0, 0),
        "{again:?}"
    );
    check_read_data(&case);
}

#[tokio::test(flavor = "multi_thread")]
async fn partly_used_packs_are_repacked() {
    let Some(case) = ResticCase::new().await else {
        return;
    };
    let vol = &case.volume;
    for i in 0..4u64 {
        std::fs::write(vol.join(format!("f{i}")), noise(1 << 20, 40 + i)).unwrap();
    }
    let first = back_up(&case.repo, vol, "u1").await;
    std::fs::remove_file(vol.join("f0")).unwrap();
    std::fs::remove_file(vol.join("f1")).unwrap();
    std::fs::write(vol.join("f4"), noise(100 << 10, 50)).unwrap();
    let second = back_up(&case.repo, vol, "u1").await;
    case.repo.forget(&[first.snapshot_id]).await.unwrap();

    // A dry run says what it would do, and does nothing.
    let before = files(&case.repo_dir);
    let opts = MaintenanceOptions {
        max_unused_percent: 0.0,
        dry_run: true,
    };
    let planned = case.repo.maintain(opts).await.unwrap();
    assert!(planned.packs_repacked > 0, "{planned:?}");
    assert!(planned.bytes_after < planned.bytes_before, "{planned:?}");
    assert_eq!(files(&case.repo_dir), before, "a dry run changes nothing");
    assert_eq!(written_locks(&case.repo_dir), 0);

    // With no unused share allowed, the half-used pack of the first backup is repacked.
    let opts = MaintenanceOptions {
        max_unused_percent: 0.0,
        dry_run: false,
    };
    let summary = case.repo.maintain(opts).await.unwrap();
    assert!(summary.packs_repacked > 0, "{summary:?}");
    assert_eq!(summary.packs_repacked, planned.packs_repacked);
    assert!(
        summary.bytes_freed > 3 << 19,
        "f0 and f1 are gone: {summary:?}"
    );
    let after = files(&case.repo_dir);
    let (first_pack, _) = before
        .iter()
        .filter(|(k, _)| k.starts_with("data/"))
        .max_by_key(|(_, size)| **size)
        .unwrap();
    assert!(
        !after.contains_key(first_pack),
        "the first backup's data pack was repacked: {before:?} {after:?}"
    );
    let target = case.work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&case.repo, &second.snapshot_id, &target).await;
    assert_same_tree(vol, &target);
    check_read_data(&case);
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_removes_stale_locks_and_waits_for_running_backups() {
    let Some(case) = ResticCase::new().await else {
        return;
    };
    make_volume(&case.volume);
    let first = back_up(&case.repo, &case.volume, "u1").await;
    std::fs::remove_file(case.volume.join("nested/big.bin")).unwrap();
    back_up(&case.repo, &case.volume, "u1").await;
    case.repo.forget(&[first.snapshot_id]).await.unwrap();

    // A running `restic backup` (reading stdin we keep open) holds a fresh lock: maintenance
    // refuses, changes nothing, and leaves that lock alone.
    let mut running = restic_cmd(&case.restic, &case.repo_path, PASSWORD)
        .args(["backup", "--stdin", "--stdin-filename", "stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_written_lock(&case.repo_dir, "restic backup");
    let locks = std::fs::read_dir(case.repo_dir.restic_path().join("locks"))
        .unwrap()
        .count();
    let before = files(&case.repo_dir);
    let err = case
        .repo
        .maintain(MaintenanceOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Busy { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("will run later") && msg.contains("pid"),
        "{msg}"
    );
    assert_eq!(files(&case.repo_dir), before, "nothing deleted");
    assert_eq!(
        written_locks(&case.repo_dir),
        locks,
        "restic's lock stays, ours is gone"
    );
    let mut stdin = running.stdin.take().unwrap();
    stdin.write_all(b"streamed").unwrap();
    drop(stdin);
    let out = running.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(written_locks(&case.repo_dir), 0);

    // A lock left by a killed `restic check` on this host is stale: maintenance removes it
    // and runs.
    let mut check = restic_cmd(&case.restic, &case.repo_path, PASSWORD)
        .args(["check", "--read-data"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_written_lock(&case.repo_dir, "restic check");
    check.kill().unwrap();
    check.wait().unwrap();
    assert_eq!(
        written_locks(&case.repo_dir),
        1,
        "the killed check left its lock"
    );
    let packs_before = packs(&case.repo_dir);
    let summary = case
        .repo
        .maintain(MaintenanceOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.stale_locks_removed, 1, "{summary:?}");
    assert!(
        summary.bytes_freed > 2 << 20,
        "big.bin is gone: {summary:?}"
    );
    assert!(packs(&case.repo_dir) <= packs_before);
    let locks = std::fs::read_dir(case.repo_dir.restic_path().join("locks"));
    assert_eq!(locks.map_or(0, |d| d.count()), 0, "no lock left");
    check_read_data(&case);
}

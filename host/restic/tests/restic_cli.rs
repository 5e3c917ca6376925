//! Compatibility with the `restic` CLI (0.14): it reads what the engine writes, the engine
//! restores what it writes, and the two respect each other's locks.

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};
use stowage_restic::EngineError;

/// The repository's key files: name and parsed JSON.
fn key_files(repo: &LocalRepo) -> Vec<(String, serde_json::Value)> {
    let mut keys: Vec<_> = std::fs::read_dir(repo.restic_path().join("keys"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let json = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            (e.file_name().into_string().unwrap(), json)
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

/// Key ids as `restic key list` shows them (the first 8 hex digits).
fn restic_key_ids(restic: &std::path::Path, repo_path: &str, password: &str) -> Vec<String> {
    let json = run_ok(restic_cmd(restic, repo_path, password).args(["key", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {json}"))
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn assert_cheap(key: &serde_json::Value) {
    assert_eq!(key["kdf"], "scrypt", "{key}");
    assert_eq!(key["N"], 4096, "scrypt N=2^12: {key}");
    assert_eq!(key["r"], 8, "{key}");
    assert_eq!(key["p"], 1, "{key}");
}

/// Lock files with contents.
fn written_lock_count(repo: &LocalRepo) -> usize {
    std::fs::read_dir(repo.restic_path().join("locks"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .count()
        })
        .unwrap_or(0)
}

fn lock_count(repo: &LocalRepo) -> usize {
    std::fs::read_dir(repo.restic_path().join("locks")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn restic_reads_checks_and_restores_engine_snapshots() {
    let Some(restic) = restic() else { return };
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    let first = back_up(&repo, &volume, "u1").await;
    std::fs::write(volume.join("nested/new.txt"), b"new").unwrap();
    let second = back_up(&repo, &volume, "u1").await;

    let repo_path = repo_dir.restic_path().display().to_string();
    // The repository's one key is a cheap one, and restic opens the repository with it.
    let keys = key_files(&repo_dir);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_cheap(&keys[0].1);
    assert_eq!(
        restic_key_ids(&restic, &repo_path, PASSWORD),
        [keys[0].0[..8].to_string()]
    );
    let json = run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_str(&json).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{json}");
    let by_id = |id: &str| {
        snaps
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {json}"))
    };
    let s2 = by_id(&second.snapshot_id);
    assert_eq!(s2["parent"], first.snapshot_id.as_str());
    assert_eq!(s2["paths"], serde_json::json!(["/pvc-uid=u1"]));
    assert_eq!(s2["hostname"], "node-1");
    let tags: Vec<&str> = s2["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"backup=nightly") && tags.contains(&"pvc-uid=u1"),
        "{tags:?}"
    );
    assert!(by_id(&first.snapshot_id)["parent"].is_null());

    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));

    let target = work.path().join("restic-restore");
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args([
        "restore",
        &second.snapshot_id,
        "--target",
        target.to_str().unwrap(),
    ]));
    assert_same_tree(&volume, &target.join("pvc-uid=u1"));
    assert_eq!(lock_count(&repo_dir), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_restores_snapshots_written_by_restic() {
    let Some(restic) = restic() else { return };
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("some/dir");
    std::fs::create_dir_all(&volume).unwrap();
    make_volume(&volume);
    make_edge_volume(&volume.join("edge"));
    let repo_path = repo_dir.restic_path().display().to_string();
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args([
        "backup",
        "--tag",
        "pvc-uid=u9",
        volume.to_str().unwrap(),
    ]));
    let snaps = repo.snapshots(&["pvc-uid=u9".into()]).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].paths, [volume.display().to_string()]);

    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let restored = restore_into(&repo, &snaps[0].id[..8], &target).await;
    assert_same_tree(&volume, &target);
    assert_edge_extras(&target.join("edge"));
    assert_eq!(restored.files, 11);

    // Our next backup of that volume chains onto restic's snapshot.
    let mut req = request(&volume, "u9");
    req.parent_tags = vec!["pvc-uid=u9".into()];
    let ours = repo
        .backup(req, Recorder::default().callback(), never())
        .await
        .unwrap();
    assert_eq!(ours.parent.as_deref(), Some(snaps[0].id.as_str()));
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));
}

/// A repository `restic init` made has a key restic calibrated (tens of MiB of scrypt):
/// opening it replaces that key with a cheap one for the same master key, which restic and the
/// engine then open; a key a user added with another password is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn opening_replaces_an_expensive_key_with_a_cheap_one() {
    let Some(restic) = restic() else { return };
    let repo_dir = LocalRepo::new("ns1").await;
    let repo_path = repo_dir.restic_path().display().to_string();
    std::fs::create_dir_all(repo_dir.restic_path().parent().unwrap()).unwrap();
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["init", "--repository-version", "2"]));
    let work = tempfile::tempdir().unwrap();
    let user_password = work.path().join("user-password");
    std::fs::write(&user_password, "a person's own password").unwrap();
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args([
        "key",
        "add",
        "--new-password-file",
        user_password.to_str().unwrap(),
    ]));
    let before = key_files(&repo_dir);
    assert_eq!(before.len(), 2);
    for (_, key) in &before {
        assert!(
            key["N"].as_u64().unwrap() > 4096,
            "restic's own cost: {key}"
        );
    }
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["backup", volume.to_str().unwrap()]));

    let repo = stowage_restic::Repo::open(repo_dir.config(PASSWORD))
        .await
        .unwrap();
    let after = key_files(&repo_dir);
    assert_eq!(after.len(), 2, "one replaced, the user's kept: {after:?}");
    let user_key = before
        .iter()
        .find(|k| after.contains(k))
        .expect("one of restic's keys is untouched");
    let ours = after.iter().find(|k| *k != user_key).unwrap();
    assert_cheap(&ours.1);

    // Both passwords still open the repository in restic, and the engine reopens it (now
    // cheaply) and restores restic's snapshot.
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check"]));
    run_ok(
        restic_cmd(&restic, &repo_path, "")
            .env_remove("RESTIC_PASSWORD")
            .env("RESTIC_PASSWORD_FILE", &user_password)
            .args(["snapshots"]),
    );
    let reopened = stowage_restic::Repo::open(repo_dir.config(PASSWORD))
        .await
        .unwrap();
    assert_eq!(key_files(&repo_dir), after, "a cheap key is kept");
    let snaps = repo.snapshots(&[]).await.unwrap();
    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    restore_into(&reopened, &snaps[0].id, &target).await;
    assert_same_tree(&volume, &target);
    let err = stowage_restic::Repo::open(repo_dir.config("wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongPassword { .. }), "{err:?}");
}

/// Our lock keeps a user's `restic prune` out while we write, and a user's exclusive lock
/// keeps us out.
#[tokio::test(flavor = "multi_thread")]
async fn locks_are_respected_both_ways() {
    let Some(ResticCase { restic, repo_dir, repo, repo_path, work, volume }) = ResticCase::new().await else { return };
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(192 << 20)
        .read_to_end(&mut data)
        .unwrap();
    std::fs::write(volume.join("big"), &data).unwrap();

    // While the engine backs up, restic's prune is refused.
    let backup = {
        let repo = repo.clone();
        let req = request(&volume, "u1");
        tokio::spawn(async move {
            repo.backup(req, Recorder::default().callback(), never())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock_count(&repo_dir) == 0 {
        assert!(
            Instant::now() < deadline && !backup.is_finished(),
            "no lock seen during the backup"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let prune = restic_cmd(&restic, &repo_path, PASSWORD)
        .arg("prune")
        .output()
        .unwrap();
    assert!(
        !prune.status.success(),
        "prune must not run beside a backup"
    );
    let stderr = String::from_utf8_lossy(&prune.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    let summary = backup.await.unwrap().unwrap();
    assert_eq!(lock_count(&repo_dir), 0);
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));

    // restic check holds an exclusive lock; freeze it while it does.
    let mut check = restic_cmd(&restic, &repo_path, PASSWORD)
        .args(["check", "--read-data"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Written, not just created: restic creates the file and then writes it, and a lock
    // frozen empty is unreadable, which the engine skips.
    let deadline = Instant::now() + Duration::from_secs(30);
    while written_lock_count(&repo_dir) == 0 {
        assert!(Instant::now() < deadline, "restic check took no lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = check.id().to_string();
    run_ok(std::process::Command::new("kill").args(["-STOP", &pid]));
    let err = repo
        .backup(
            request(&volume, "u1"),
            Recorder::default().callback(),
            never(),
        )
        .await
        .unwrap_err();
    run_ok(std::process::Command::new("kill").args(["-CONT", &pid]));
    assert!(check.wait().unwrap().success());
    assert!(matches!(err, EngineError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("restic unlock"), "{err}");
    assert_eq!(
        lock_count(&repo_dir),
        0,
        "our refused lock is not left behind"
    );

    // An exclusive lock left by a killed process on this host is stale: it does not block.
    let mut check = restic_cmd(&restic, &repo_path, PASSWORD)
        .args(["check", "--read-data"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while lock_count(&repo_dir) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    check.kill().unwrap();
    check.wait().unwrap();
    assert_eq!(lock_count(&repo_dir), 1, "the killed check left its lock");
    let target = work.path().join("t");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &summary.snapshot_id, &target).await;
    assert_same_tree(&volume, &target);
}

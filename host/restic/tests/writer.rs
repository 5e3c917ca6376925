//! The backup writer against the `restic` CLI: the same chunks as restic's chunker, packs and
//! trees `restic check --read-data` accepts, and incremental backups that store only what
//! changed.

mod common;

use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The ids of the repository's data blobs, as restic lists them.
fn data_blobs(restic: &Path, repo_path: &str) -> Vec<String> {
    let out = run_ok(restic_cmd(restic, repo_path, PASSWORD).args(["list", "blobs"]));
    let mut ids: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data "))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// Sets a user extended attribute; `false` when the filesystem does not support them.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: C strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    rc == 0
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: as above.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_like_restic_so_files_restic_stored_add_no_data() {
    let Some(ResticCase { restic, repo_dir: _repo_dir, repo, repo_path, work: _work, volume }) = ResticCase::new().await else { return };
    std::fs::create_dir(volume.join("d")).unwrap();
    // Large files go through the region-parallel chunking (regions of 8 MiB), smaller ones
    // through one worker each; one is smaller than the minimum chunk size.
    std::fs::write(volume.join("large"), noise(45 << 20, 11)).unwrap();
    std::fs::write(volume.join("d/medium"), noise(6 << 20, 12)).unwrap();
    std::fs::write(volume.join("d/small"), noise(100 << 10, 13)).unwrap();
    let mut mixed = noise(3 << 20, 14);
    mixed.extend(vec![0u8; 2 << 20]);
    mixed.extend(noise(9 << 20, 15));
    std::fs::write(volume.join("mixed"), &mixed).unwrap();

    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["backup", volume.to_str().unwrap()]));
    let by_restic = data_blobs(&restic, &repo_path);
    // ~65 MiB in chunks of 0.5 to 8 MiB. How many depends on the
    // repository's chunker polynomial, which restic picks at random (one run got 37): the bound
    // only says the files were cut, large ones many times.
    assert!(by_restic.len() >= 20, "restic stored {} data blobs", by_restic.len());

    // No parent (another claim): every file is read and chunked again.
    let ours = back_up(&repo, &volume, "fresh").await;
    assert_eq!(ours.parent, None);
    assert_eq!(ours.files_new, 4, "{ours:?}");
    assert_eq!(
        data_blobs(&restic, &repo_path),
        by_restic,
        "the engine cut the files where restic did: no new data blobs"
    );
    assert!(ours.data_added < 64 << 10, "only trees added: {ours:?}");
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn restic_checks_and_restores_every_kind_of_entry_the_engine_wrote() {
    let Some(ResticCase { restic, repo_dir: _repo_dir, repo, repo_path, work, volume }) = ResticCase::new().await else { return };
    make_volume(&volume);
    make_edge_volume(&volume.join("edge"));
    std::os::unix::fs::symlink("../hello.txt", volume.join("nested/up-link")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", volume.join("dangling")).unwrap();
    let fifo = CString::new(volume.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a C string path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let xattrs = set_xattr(&volume.join("hello.txt"), "user.stowage", b"\x00binary\xffvalue");
    if !xattrs {
        eprintln!("!!! the test filesystem has no user xattrs: they are NOT tested");
    }

    let summary = back_up(&repo, &volume, "u1").await;
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));

    let ls = run_ok(
        restic_cmd(&restic, &repo_path, PASSWORD).args(["ls", "--json", &summary.snapshot_id]),
    );
    let nodes: Vec<serde_json::Value> = ls
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["struct_type"] == "node")
        .collect();
    let node = |path: &str| {
        nodes
            .iter()
            .find(|n| n["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {ls}"))
    };
    assert_eq!(node("/pvc-uid=u1/fifo")["type"], "fifo");
    assert_eq!(node("/pvc-uid=u1/dangling")["type"], "symlink");
    assert_eq!(node("/pvc-uid=u1/edge/d/large")["size"], 40 << 20);
    assert_eq!(node("/pvc-uid=u1/empty")["size"], 0);

    let target = work.path().join("restic-restore");
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args([
        "restore",
        &summary.snapshot_id,
        "--target",
        target.to_str().unwrap(),
    ]));
    let restored = target.join("pvc-uid=u1");
    std::fs::remove_file(volume.join("fifo")).unwrap();
    let fifo_meta = std::fs::symlink_metadata(restored.join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo_meta.file_type()));
    std::fs::remove_file(restored.join("fifo")).unwrap();
    assert_same_tree(&volume, &restored);
    // restic 0.14 restores hard links (it writes no holes: that is checked on ours below).
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(ino(&restored.join("edge/d/large")), ino(&restored.join("edge/large-link")));
    if xattrs {
        assert_eq!(
            get_xattr(&restored.join("hello.txt"), "user.stowage").as_deref(),
            Some(&b"\x00binary\xffvalue"[..])
        );
    }

    // Our own restore reads it too.
    let ours = work.path().join("our-restore");
    std::fs::create_dir(&ours).unwrap();
    restore_into(&repo, &summary.snapshot_id, &ours).await;
    std::fs::remove_file(ours.join("fifo")).ok();
    assert_same_tree(&volume, &ours);
    assert_edge_extras(&ours.join("edge"));
}

#[tokio::test(flavor = "multi_thread")]
async fn appending_a_byte_stores_about_one_chunk() {
    let Some(ResticCase { restic, repo_dir: _repo_dir, repo, repo_path, work, volume }) = ResticCase::new().await else { return };
    let big = volume.join("big");
    std::fs::write(&big, noise(50 << 20, 21)).unwrap();
    std::fs::write(volume.join("other"), b"unchanged").unwrap();
    let first = back_up(&repo, &volume, "u1").await;
    assert!(first.data_added > 50 << 20, "{first:?}");
    let blobs_before = data_blobs(&restic, &repo_path).len();

    let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    drop(f);
    let second = back_up(&repo, &volume, "u1").await;
    assert_eq!(second.parent.as_deref(), Some(first.snapshot_id.as_str()));
    assert_eq!(second.files_changed, 1, "{second:?}");
    assert_eq!(second.files_unmodified, 1, "{second:?}");
    // The last chunk changed: at most the maximum chunk size (8 MiB), and one data blob.
    assert!(second.data_added <= (8 << 20) + (64 << 10), "{second:?}");
    assert_eq!(data_blobs(&restic, &repo_path).len(), blobs_before + 1);
    run_ok(restic_cmd(&restic, &repo_path, PASSWORD).args(["check", "--read-data"]));

    let target = work.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    restore_into(&repo, &second.snapshot_id, &target).await;
    assert_same_tree(&volume, &target);
}

/// Extended attributes of files and directories: an unchanged file's are the parent
/// snapshot's (unread, as its contents: changing one changes the ctime), a changed one's are
/// read again, and restores set both.
#[tokio::test(flavor = "multi_thread")]
async fn extended_attributes_are_kept_by_a_re_backup_and_a_change_is_seen() {
    let repo_dir = LocalRepo::new("ns1").await;
    let repo = repo_dir.open_or_init().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    let (hello, nested) = (volume.join("hello.txt"), volume.join("nested"));
    if !set_xattr(&hello, "user.stowage", b"one") {
        eprintln!("!!! the test filesystem has no user xattrs: they are NOT tested");
        return;
    }
    assert!(set_xattr(&nested, "user.dir", b"on a directory"));
    back_up(&repo, &volume, "u1").await;
    let unchanged = back_up(&repo, &volume, "u1").await;
    assert_eq!((unchanged.files_new, unchanged.files_changed), (0, 0), "{unchanged:?}");
    assert!(set_xattr(&hello, "user.stowage", b"two"));
    let changed = back_up(&repo, &volume, "u1").await;
    assert_eq!((changed.files_new, changed.files_changed), (0, 1), "{changed:?}");

    for (summary, value) in [(&unchanged, &b"one"[..]), (&changed, &b"two"[..])] {
        let target = work.path().join(format!("restored-{}", &summary.snapshot_id[..8]));
        std::fs::create_dir(&target).unwrap();
        restore_into(&repo, &summary.snapshot_id, &target).await;
        assert_eq!(get_xattr(&target.join("hello.txt"), "user.stowage").as_deref(), Some(value));
        assert_eq!(get_xattr(&target.join("nested"), "user.dir").as_deref(), Some(&b"on a directory"[..]));
        assert_same_tree(&volume, &target);
    }
}

//! Runs the real binary against volume directories in a temporary directory.

use std::borrow::BorrowMut;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

const UID: &str = "7d3e1f20-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

fn helper(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage-restore-helper"));
    cmd.args(args).env_remove("STOWAGE_RESTORE_UID").env_remove("KUBE_SIM_ROOTFS");
    cmd
}

fn run(mut cmd: impl BorrowMut<Command>) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.borrow_mut().output().unwrap();
    (status.code().expect("exited"), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

fn volumes(root: &Path, names: &[&str]) {
    for name in names {
        fs::create_dir_all(root.join(name)).unwrap();
    }
}

fn mark(volume: &Path, marker_dir: &str) {
    fs::create_dir_all(volume.join(marker_dir)).unwrap();
    fs::write(volume.join(marker_dir).join(UID), "").unwrap();
}

#[test]
fn exits_once_markers_appear_and_removes_only_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    volumes(&root, &["data", "logs"]);
    fs::write(root.join("data/db.sqlite"), "restored bytes").unwrap();
    fs::create_dir_all(root.join("logs/.stowage")).unwrap();
    fs::write(root.join("logs/.stowage/notes"), "not a marker").unwrap();

    let start = Instant::now();
    let writer = {
        let root = root.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            mark(&root.join("data"), ".stowage");
            mark(&root.join("logs"), ".stowage");
        })
    };
    let dir = root.to_str().unwrap();
    let (code, out, err) = run(helper(&["--volumes-dir", dir, "--interval", "50ms", "--timeout", "10s", UID]));
    writer.join().unwrap();
    let took = start.elapsed();

    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(took >= Duration::from_millis(200), "exited before the markers were written: {took:?}");
    assert!(out.contains("waiting for the restored data of 2 of 2 volume(s)"), "{out}");
    assert!(out.contains("volume data is restored: data") && out.contains("volume data is restored: logs"), "{out}");
    assert!(out.trim_end().ends_with("all volumes restored"), "{out}");
    assert!(!root.join("data/.stowage").exists(), "the emptied marker directory is removed");
    assert!(!root.join("logs/.stowage").join(UID).exists());
    assert_eq!(fs::read_to_string(root.join("logs/.stowage/notes")).unwrap(), "not a marker");
    assert_eq!(fs::read_to_string(root.join("data/db.sqlite")).unwrap(), "restored bytes");
}

#[test]
fn times_out_naming_the_volume_without_a_marker() {
    let tmp = tempfile::tempdir().unwrap();
    volumes(tmp.path(), &["data", "logs"]);
    mark(&tmp.path().join("data"), ".stowage");
    let start = Instant::now();
    let dir = tmp.path().to_str().unwrap();
    let (code, out, err) = run(helper(&["--volumes-dir", dir, "--timeout", "1s", "--interval", "50ms", UID]));
    let took = start.elapsed();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "{took:?}");
    assert!(err.contains("timed out after 1s") && err.contains(&format!(".stowage/{UID} marker: logs.")), "{err}");
    assert!(err.contains("stowage restore describe") && err.contains("node-agent logs"), "{err}");
    assert!(out.contains("volume data is restored: data"), "{out}");
    assert!(tmp.path().join("data/.stowage").join(UID).exists(), "markers stay when giving up");
}

#[test]
fn accepts_velero_markers() {
    let tmp = tempfile::tempdir().unwrap();
    volumes(tmp.path(), &["pvc-volume", "emptydir-volume"]);
    mark(&tmp.path().join("pvc-volume"), ".velero");
    mark(&tmp.path().join("emptydir-volume"), ".velero");
    let dir = tmp.path().to_str().unwrap();
    let (code, out, err) = run(helper(&["--volumes-dir", dir, "--interval", "50ms", "--timeout", "5s", UID]));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!tmp.path().join("pvc-volume/.velero").exists() && !tmp.path().join("emptydir-volume/.velero").exists());
}

#[test]
fn rejects_a_uid_that_escapes_the_marker_directory() {
    let tmp = tempfile::tempdir().unwrap();
    volumes(tmp.path(), &["data"]);
    let dir = tmp.path().to_str().unwrap();
    for bad in ["../../etc/passwd", "a/b", ".."] {
        let (code, _, err) = run(helper(&["--volumes-dir", dir, bad]));
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("is not a restore UID") && err.contains("--help"), "{err}");
    }
    // The same check applies to the environment variable.
    let (code, _, err) = run(helper(&["--volumes-dir", dir]).env("STOWAGE_RESTORE_UID", "../x"));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_missing_volumes_directory_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("restores");
    let start = Instant::now();
    let (code, out, err) = run(helper(&["--volumes-dir", missing.to_str().unwrap(), UID]));
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "it must not wait");
    assert!(err.contains(&format!("the volumes directory {} does not exist", missing.display())), "{err}");
    assert!(err.contains("no restored volumes to wait for"), "{err}");

    fs::create_dir(&missing).unwrap();
    let (code, _, err) = run(helper(&["--volumes-dir", missing.to_str().unwrap(), UID]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no volumes are mounted under"), "{err}");
}

/// kube-sim links each mount path inside the container's rootfs to the volume's directory.
#[test]
fn resolves_the_volumes_directory_under_the_simulated_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let storage = tmp.path().join("pv-storage");
    fs::create_dir_all(rootfs.join("restores")).unwrap();
    fs::create_dir_all(&storage).unwrap();
    std::os::unix::fs::symlink(&storage, rootfs.join("restores/data")).unwrap();
    mark(&storage, ".stowage");
    fs::write(storage.join("payload"), "bytes").unwrap();

    let (code, out, err) = run(helper(&["--interval", "50ms", "--timeout", "5s"])
        .env("KUBE_SIM_ROOTFS", &rootfs)
        .env("STOWAGE_RESTORE_UID", UID));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("volume data is restored: data"), "{out}");
    assert!(!storage.join(".stowage").exists());
    assert!(storage.join("payload").exists() && rootfs.join("restores/data").exists());

    // Without the variable the default /restores is used as is.
    let (code, _, err) = run(helper(&["--timeout", "1s", UID]).current_dir(&rootfs));
    assert_eq!(code, 1);
    assert!(err.contains(" /restores") && !err.contains(rootfs.to_str().unwrap()), "{err}");
}

#[test]
fn help_version_and_usage_errors() {
    let (code, out, _) = run(helper(&["--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--timeout <DURATION>") && out.contains("For tests on kube-sim"), "{out}");
    let (code, out, _) = run(helper(&["--version"]));
    assert_eq!((code, out.trim()), (0, concat!("stowage-restore-helper ", env!("CARGO_PKG_VERSION"))));
    let (code, _, err) = run(helper(&[]));
    assert_eq!(code, 2);
    assert!(err.contains("restore UID is required"), "{err}");
    let (code, _, err) = run(helper(&[UID, "--timeout", "forever"]));
    assert_eq!(code, 2);
    assert!(err.contains("--timeout: \"forever\" is not a duration"), "{err}");
}

//! The README's first command: `stowage demo` runs the walkthrough and says everything is back.

use std::process::Command;

#[test]
fn demo_backs_up_deletes_and_restores_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("stowage runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        "Backup request \"nginx-backup\" submitted successfully.",
        "Backup completed with status: Completed.",
        "namespace \"nginx-example\" deleted",
        "Restore completed with status: Completed.",
        "deployment/nginx-deployment: back, identical to the original",
        "Everything is back.",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("DIFFERS"), "{stdout}");
    assert!(dir.path().join("backups/backups/nginx-backup/nginx-backup.tar.zst").is_file());
}

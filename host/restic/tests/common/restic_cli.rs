//! Running the restic CLI on a repository in tests. Shared by the integration tests (through
//! `common`) and the writer's unit tests (by path).

use std::path::Path;

/// `restic` with the repository and password in its environment.
pub fn restic_cmd(restic: &Path, repo: &str, password: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(restic);
    cmd.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", password)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("stowage-restic-test-cache"),
        )
        .arg("--no-cache");
    cmd
}

/// Runs it, failing the test with its output when it fails; returns stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("restic runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

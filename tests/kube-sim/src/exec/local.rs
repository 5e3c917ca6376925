//! Running an exec'd command as a local process in the container's stand-in directory.
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{ExecOutput, ExecRequest};
use crate::kubelet::process::{exit_code, kill_group};

/// Runs `req.command` (argv, no shell) with its cwd and `KUBE_SIM_ROOTFS` at the container's
/// rootfs, and the container's environment (`req.env`). Err when it cannot be started, as a runtime reports an exec that never ran.
pub async fn run_local(req: &ExecRequest, timeout: Duration) -> Result<ExecOutput, String> {
    let Some((program, args)) = req.command.split_first() else {
        return Err("you must specify at least 1 command".to_string());
    };
    std::fs::create_dir_all(&req.rootfs).map_err(|e| format!("creating {}: {e}", req.rootfs.display()))?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(&req.rootfs)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .env("KUBE_SIM_ROOTFS", &req.rootfs)
        .env("KUBE_SIM_POD_UID", &req.pod_uid)
        .env("POD_NAMESPACE", &req.namespace)
        .env("POD_NAME", &req.pod)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: {program:?}: {e}"
            )
        })?;
    // Dropped before the end (the exec was cancelled): the whole group goes, not only `program`.
    let group = GroupGuard(child.id());
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let input = req.stdin.clone();
    let feed = tokio::spawn(async move {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input).await;
        }
        // Dropping stdin closes it, so `cat` and friends see EOF.
    });
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = tokio::spawn(async move { read_all(out.as_mut()).await });
    let read_err = tokio::spawn(async move { read_all(err.as_mut()).await });

    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (exit_code(status), false),
        Ok(Err(e)) => return Err(format!("waiting for {program:?}: {e}")),
        Err(_) => (137, true),
    };
    // Also reaps background children that would hold the output pipes open.
    if let Some(pid) = pid {
        kill_group(pid);
    }
    group.disarm();
    let _ = child.kill().await;
    feed.abort();
    let stdout = read_out.await.unwrap_or_default();
    let mut stderr = read_err.await.unwrap_or_default();
    if timed_out {
        stderr.extend(format!("kube-sim: exec timed out after {}\n", humantime::format_duration(timeout)).bytes());
    }
    Ok(ExecOutput { stdout, stderr, exit_code: code })
}

/// Kills the process group led by its pid when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}

async fn read_all(src: Option<&mut (impl AsyncReadExt + Unpin)>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(s) = src {
        let _ = s.read_to_end(&mut buf).await;
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(dir: &std::path::Path, command: &[&str], stdin: &[u8]) -> ExecRequest {
        ExecRequest {
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: "uid".into(),
            container: "c".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            stdin: stdin.to_vec(),
            rootfs: dir.join("rootfs"),
            env: vec![("GREETING".into(), "hello $HOME".into())],
        }
    }

    #[tokio::test]
    async fn runs_in_rootfs_with_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let r = req(dir.path(), &["sh", "-c", "cat; pwd; echo e >&2; exit 4"], b"in\n");
        let out = run_local(&r, Duration::from_secs(10)).await.unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout, format!("in\n{}\n", dir.path().join("rootfs").display()));
        assert_eq!(out.stderr, b"e\n");
        assert_eq!(out.exit_code, 4);
    }

    #[tokio::test]
    async fn gets_the_containers_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_local(&req(dir.path(), &["sh", "-c", "echo \"$GREETING\""], b""), Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.stdout, b"hello $HOME\n");
    }

    #[tokio::test]
    async fn no_shell_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_local(&req(dir.path(), &["echo", "$HOME", ";", "x"], b""), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"$HOME ; x\n");
    }

    #[tokio::test]
    async fn timeout_kills_and_missing_binary_errs() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_local(&req(dir.path(), &["sleep", "30"], b""), Duration::from_millis(200)).await.unwrap();
        assert_eq!(out.exit_code, 137);
        assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
        let err = run_local(&req(dir.path(), &["no-such-binary-here"], b""), Duration::from_secs(1)).await;
        assert!(err.unwrap_err().contains("no-such-binary-here"));
    }
}

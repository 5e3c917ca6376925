//! Containers whose image maps to a local binary run as local processes, each in its own
//! process group so that killing a pod also kills whatever its shell scripts started.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;

/// How many trailing bytes of output are kept for the container status.
const TAIL_BYTES: usize = 2048;

#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Where stdout and stderr are appended.
    pub log: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    pub code: i32,
    /// The last bytes of stdout and stderr, interleaved as they arrived.
    pub tail: String,
    /// Why it ended, when not by itself: "Killed", or the spawn error.
    pub reason: Option<String>,
}

impl Exit {
    fn failed_to_start(err: String) -> Exit {
        Exit { code: 128, tail: err.clone(), reason: Some(format!("StartError: {err}")) }
    }
}

/// Runs the process to completion, or until `stop` turns true (then kills its process group).
pub async fn run(spec: &ProcessSpec, mut stop: watch::Receiver<bool>) -> Exit {
    if let Some(dir) = spec.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Exit::failed_to_start(format!("{}: {e}", spec.program.display())),
    };
    let pid = child.id();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let log = tokio::fs::OpenOptions::new().create(true).append(true).open(&spec.log).await.ok();
    let log = Arc::new(tokio::sync::Mutex::new(log));
    let out = tokio::spawn(pump(child.stdout.take(), tail.clone(), log.clone()));
    let err = tokio::spawn(pump(child.stderr.take(), tail.clone(), log.clone()));

    let (code, reason) = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => (exit_code(s), None),
            Err(e) => (128, Some(format!("wait failed: {e}"))),
        },
        _ = until_stopped(&mut stop) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.kill().await;
            (137, Some("Killed".to_string()))
        }
    };
    // Children that kept the pipes open would block the pumps forever.
    if let Some(pid) = pid {
        kill_group(pid);
    }
    let _ = out.await;
    let _ = err.await;
    let tail = String::from_utf8_lossy(&tail.lock().unwrap().iter().copied().collect::<Vec<u8>>()).into_owned();
    Exit { code, tail, reason }
}

async fn pump(
    src: Option<impl AsyncRead + Unpin>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    log: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
) {
    let Some(mut src) = src else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut t = tail.lock().unwrap();
            t.extend(&buf[..n]);
            while t.len() > TAIL_BYTES {
                t.pop_front();
            }
        }
        if let Some(f) = log.lock().await.as_mut() {
            let _ = f.write_all(&buf[..n]).await;
        }
    }
}

/// Resolves once `stop` turns true or its sender is gone (the pod's worker was dropped).
pub async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// The exit code as a container runtime reports it: 128 + signal for a killed process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Kills every process in the group led by `pid` (spawned with `process_group(0)`).
pub fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid only sends a signal; no memory is involved.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hi".into())],
            cwd: dir.to_path_buf(),
            log: dir.join("log"),
        }
    }

    #[tokio::test]
    async fn captures_exit_code_tail_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, rx) = watch::channel(false);
        let exit = run(&spec(dir.path(), "echo $GREETING; echo oops >&2; pwd > where; exit 3"), rx).await;
        assert_eq!(exit.code, 3);
        assert!(exit.tail.contains("hi") && exit.tail.contains("oops"), "{exit:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join("where")).unwrap().trim(), dir.path().to_str().unwrap());
        assert!(std::fs::read_to_string(dir.path().join("log")).unwrap().contains("hi"));
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(false);
        let s = spec(dir.path(), "sleep 30 & sleep 30");
        let task = tokio::spawn(async move { run(&s, rx).await });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        let exit = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
        assert_eq!(exit.code, 137);
    }

    #[tokio::test]
    async fn missing_binary_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, rx) = watch::channel(false);
        let mut s = spec(dir.path(), "");
        s.program = "/nonexistent/binary".into();
        let exit = run(&s, rx).await;
        assert_eq!(exit.code, 128);
        assert!(exit.reason.unwrap().starts_with("StartError"));
    }
}

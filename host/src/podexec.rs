//! Running a command in a container of a pod through the API server's `pods/exec`, as
//! `kubectl exec` does: what exec hooks and the extensions' `exec` host call both use.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kube::Client;
use tokio::io::AsyncReadExt;

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Why a command has no exit code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// It could not be started (no such pod or container, exec refused...).
    #[error("{0}")]
    NotStarted(String),
    /// It was still running at its timeout; the connection was dropped.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The connection to the API server broke while it ran; it may have run on.
    #[error("the connection to the API server broke while it ran: {0}")]
    ConnectionLost(String),
}

/// Runs `command` (argv, no shell) in `container` of `namespace/pod`, for at most `timeout`.
pub async fn exec(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    command: &[String],
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = AttachParams::default().container(container).stdout(true).stderr(true).stdin(false);
    let run = async {
        let mut attached =
            pods.exec(pod, command.to_vec(), &params).await.map_err(|e| ExecError::NotStarted(e.to_string()))?;
        // Both streams at once: a command that fills one while the other is read would stall.
        // Each is kept to its last MAX_OUTPUT bytes: a command's output must not fill the
        // server's memory, and messages quote its end.
        let read = |s: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
            let mut kept = Bounded::default();
            if let Some(mut s) = s {
                let mut chunk = vec![0u8; 64 << 10];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    kept.push(&chunk[..n]);
                }
            }
            kept.text()
        };
        let out = attached.stdout().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let err = attached.stderr().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let status = attached.take_status();
        // A connection that breaks ends kube's message loop with an error but leaves the output
        // streams open: watch the loop too, so a broken exec fails at once, not at its timeout.
        let streams = async { tokio::join!(read(out), read(err)) };
        let ended = attached.join();
        tokio::pin!(streams, ended);
        let (stdout, stderr) = tokio::select! {
            outputs = &mut streams => outputs,
            result = &mut ended => match result {
                Err(e) => return Err(ExecError::ConnectionLost(e.to_string())),
                Ok(()) => streams.await,
            },
        };
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let mut stderr = stderr;
        let exit_code = match status {
            Some(s) if s.status.as_deref() == Some("Success") => 0,
            Some(s) => {
                let code = s
                    .details
                    .as_ref()
                    .and_then(|d| d.causes.as_ref())
                    .into_iter()
                    .flatten()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
                    .and_then(|c| c.message.as_deref()?.parse().ok());
                // A failure without an exit code: the runtime's own reason is all there is.
                if code.is_none() {
                    if let Some(m) = s.message.as_deref().filter(|m| !stderr.contains(*m)) {
                        stderr.push_str(m);
                    }
                }
                code.unwrap_or(1)
            }
            None => 0,
        };
        Ok(ExecOutput { stdout, stderr, exit_code })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| ExecError::TimedOut(timeout))?
}

/// The most of each output stream of a command kept in memory (its last bytes).
pub const MAX_OUTPUT: usize = 1 << 20;

/// The tail of a stream, at most [`MAX_OUTPUT`] bytes, and how much went before it.
#[derive(Default)]
struct Bounded {
    buf: Vec<u8>,
    cut: u64,
}

impl Bounded {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trimmed in batches, so that a long output is not moved byte by byte.
        if self.buf.len() > 2 * MAX_OUTPUT {
            let drop = self.buf.len() - MAX_OUTPUT;
            self.buf.drain(..drop);
            self.cut += drop as u64;
        }
    }

    fn text(mut self) -> String {
        if self.buf.len() > MAX_OUTPUT {
            let drop = self.buf.len() - MAX_OUTPUT;
            self.buf.drain(..drop);
            self.cut += drop as u64;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        match self.cut {
            0 => text,
            cut => format!("[{cut} bytes of output before this were not kept]\n{text}"),
        }
    }
}

/// The last `lines` lines of a command's output, for messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = all[start..].join("\n");
    if out.len() > 2048 {
        let cut = out.len() - 2048;
        let cut = (cut..out.len()).find(|&i| out.is_char_boundary(i)).unwrap_or(out.len());
        out = format!("...{}", &out[cut..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_to_its_last_megabyte() {
        let mut kept = Bounded::default();
        for i in 0..40u8 {
            kept.push(&vec![b'a' + i % 26; 100 << 10]);
        }
        let text = kept.text();
        let (note, rest) = text.split_once('\n').unwrap();
        assert_eq!(note, format!("[{} bytes of output before this were not kept]", 40 * (100 << 10) - MAX_OUTPUT));
        assert_eq!(rest.len(), MAX_OUTPUT);
        assert!(rest.ends_with(&"n".repeat(100 << 10)), "the end is kept");
        let mut small = Bounded::default();
        small.push(b"done\n");
        assert_eq!(small.text(), "done\n");
    }
}

//! The Kubernetes remote-command WebSocket protocol (`v4.channel.k8s.io`, `v5.channel.k8s.io`):
//! every binary frame starts with a channel byte; stdout, stderr and the final JSON `Status`
//! (channel 3) flow to the client, stdin (channel 0) from it; v5 adds the frame `[255, ch]`
//! that closes one channel (kube-rs and kubectl send it when stdin ends).
use serde_json::{json, Value};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// Subprotocols in our order of preference; clients list theirs, we pick the first we share.
pub const PROTOCOLS: [&str; 3] = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];

/// Output frames are cut at this size, like a kubelet's copy buffer.
const FRAME_BYTES: usize = 32 * 1024;

/// What the client asked for in the query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecParams {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecParams {
    pub fn from_query(query: &[(String, String)]) -> ExecParams {
        let flag = |v: &str| matches!(v, "true" | "1" | "True" | "TRUE");
        let mut p = ExecParams::default();
        for (k, v) in query {
            match k.as_str() {
                "command" => p.command.push(v.clone()),
                "container" if !v.is_empty() => p.container = Some(v.clone()),
                "stdin" | "input" => p.stdin = flag(v),
                "stdout" | "output" => p.stdout = flag(v),
                "stderr" | "error" => p.stderr = flag(v),
                "tty" => p.tty = flag(v),
                _ => {}
            }
        }
        p
    }
}

/// A frame the client sent, decoded.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    /// v5: the client will send nothing more on this channel.
    Closed(u8),
    Resize,
    Other,
}

pub fn decode(frame: &[u8]) -> Incoming<'_> {
    match frame {
        [STDIN, data @ ..] => Incoming::Stdin(data),
        [CLOSE, ch, ..] => Incoming::Closed(*ch),
        [RESIZE, ..] => Incoming::Resize,
        _ => Incoming::Other,
    }
}

/// Frames carrying `data` on `channel`; none for empty data (a one-byte frame means nothing).
pub fn frames(channel: u8, data: &[u8]) -> Vec<Vec<u8>> {
    data.chunks(FRAME_BYTES)
        .map(|chunk| {
            let mut f = Vec::with_capacity(chunk.len() + 1);
            f.push(channel);
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

/// The status a kubelet sends when the command ran: Success, or NonZeroExitCode carrying the
/// code in a cause that kube-rs and client-go turn back into an exit code.
pub fn exit_status(exit_code: i32) -> Value {
    if exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command, exit code {exit_code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]}
    })
}

/// The status for a command that could not be run at all.
pub fn error_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
        "details": {"causes": [{"message": message}]}
    })
}

/// The frame that carries a status on the status channel.
pub fn status_frame(status: &Value) -> Vec<u8> {
    let mut f = vec![STATUS];
    f.extend(serde_json::to_vec(status).unwrap_or_default());
    f
}

/// A `Status` body for an HTTP error answered before the upgrade.
pub fn http_status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_kube_rs_and_kubectl_queries() {
        // kube-rs: `?&stdout=true&stderr=true&container=c&command=sh&command=-c&command=id`
        let p = ExecParams::from_query(&q(&[
            ("", ""),
            ("stdout", "true"),
            ("stderr", "true"),
            ("container", "c"),
            ("command", "sh"),
            ("command", "-c"),
            ("command", "id"),
        ]));
        assert_eq!(p.command, ["sh", "-c", "id"]);
        assert_eq!(p.container.as_deref(), Some("c"));
        assert!(p.stdout && p.stderr && !p.stdin && !p.tty);
        // kubectl with -i
        let p = ExecParams::from_query(&q(&[("command", "cat"), ("stdin", "true"), ("stdout", "true")]));
        assert!(p.stdin && p.stdout && !p.stderr && p.container.is_none());
    }

    #[test]
    fn decodes_client_frames() {
        assert_eq!(decode(&[0, b'h', b'i']), Incoming::Stdin(b"hi"));
        assert_eq!(decode(&[0]), Incoming::Stdin(b""));
        assert_eq!(decode(&[255, 0]), Incoming::Closed(0));
        assert_eq!(decode(&[4, b'{']), Incoming::Resize);
        assert_eq!(decode(&[]), Incoming::Other);
    }

    #[test]
    fn frames_prefix_the_channel_and_split_large_output() {
        assert!(frames(STDOUT, b"").is_empty());
        assert_eq!(frames(STDERR, b"x"), vec![vec![2, b'x']]);
        let big = vec![7u8; FRAME_BYTES + 1];
        let f = frames(STDOUT, &big);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].len(), FRAME_BYTES + 1);
        assert_eq!(f[1], vec![1, 7]);
    }

    #[test]
    fn statuses_decode_as_kubernetes_status() {
        let ok: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
            serde_json::from_slice(&status_frame(&exit_status(0))[1..]).unwrap();
        assert_eq!(ok.status.as_deref(), Some("Success"));
        let failed: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
            serde_json::from_value(exit_status(7)).unwrap();
        assert_eq!(failed.reason.as_deref(), Some("NonZeroExitCode"));
        let cause = &failed.details.unwrap().causes.unwrap()[0];
        assert_eq!((cause.reason.as_deref(), cause.message.as_deref()), (Some("ExitCode"), Some("7")));
    }
}

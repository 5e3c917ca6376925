//! A loopback TCP proxy whose behaviour can be switched while it runs: the network faults of
//! the fault suite (an S3 server or API server that goes away, answers errors, or is slow).
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every connection to a target
//! address. [`FaultProxy::set`] switches the [`Mode`] for new connections at once; forwarded
//! connections follow it too: they are reset when the mode becomes `Refuse` or `Fail5xx`, and
//! the delay of `Delay` applies from their next chunk on.
//!
//! [`FaultProxy::requests`] counts the HTTP requests it passed on by method, from the request
//! lines it sees: enough to show that no write reached a read-only location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// What the proxy does with the connections it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways as they come.
    Pass,
    /// Reset every new connection as soon as it is accepted, and every open one at once:
    /// to the client the target is down.
    Refuse,
    /// Forward, waiting this long before each chunk (up to 64 KiB) passed on either way.
    Delay(Duration),
    /// For an HTTP target: answer each request with this status (500, 503...) and
    /// `Connection: close` instead of forwarding it. Open connections are reset.
    Fail5xx(u16),
}

/// A running proxy; stops accepting when dropped (open connections are then reset).
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    requests: Requests,
    task: tokio::task::JoinHandle<()>,
}

/// Requests passed on, by method.
type Requests = Arc<Mutex<BTreeMap<String, usize>>>;

const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"];

impl FaultProxy {
    /// Starts a proxy to `target` in `Mode::Pass`, on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let requests = Requests::default();
        let task = tokio::spawn(accept_loop(listener, target, rx, requests.clone()));
        Ok(FaultProxy { addr, mode, requests, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// The requests passed on to the target so far, by method (`"PUT"` -> 3).
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.requests.lock().unwrap().clone()
    }

    /// The PUT, POST, DELETE and PATCH requests passed on so far.
    pub fn writes(&self) -> usize {
        self.requests().iter().filter(|(m, _)| !matches!(m.as_str(), "GET" | "HEAD")).map(|(_, n)| n).sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, rx: watch::Receiver<Mode>, requests: Requests) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let mode = *rx.borrow();
        match mode {
            Mode::Refuse => reset(client),
            Mode::Fail5xx(status) => drop(tokio::spawn(answer_error(client, status))),
            Mode::Pass | Mode::Delay(_) => drop(tokio::spawn(forward(client, target, rx.clone(), requests.clone()))),
        }
    }
}

/// Closes with a RST rather than a FIN, as a crashed or unplugged peer would look.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Mode>, requests: Requests) {
    let Ok(mut server) = TcpStream::connect(target).await else { return reset(client) };
    let cut = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let both = async { tokio::try_join!(pump(&mut cr, &mut sw, &rx, Some(&requests)), pump(&mut sr, &mut cw, &rx, None)) };
        let mut watch = rx.clone();
        let changed = async move {
            // A dropped proxy (Err) cuts too.
            while watch.changed().await.is_ok() {
                if matches!(*watch.borrow(), Mode::Refuse | Mode::Fail5xx(_)) {
                    break;
                }
            }
        };
        tokio::select! {
            result = both => result.is_err(),
            () = changed => true,
        }
    };
    rx.mark_unchanged();
    if cut {
        reset(client);
        reset(server);
    }
}

/// Copies one way until EOF (passed on as a half close), waiting before each chunk in `Delay`;
/// client to server, counting the request lines it passes on.
async fn pump<R, W>(from: &mut R, to: &mut W, rx: &watch::Receiver<Mode>, requests: Option<&Requests>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let mode = *rx.borrow();
        if let Mode::Delay(d) = mode {
            tokio::time::sleep(d).await;
        }
        if let Some(requests) = requests {
            count_requests(&buf[..n], requests);
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Counts the request lines (`PUT /bucket/key HTTP/1.1`) starting a chunk or a line in it. A
/// client writes a request's head in one go, so a head is not split between chunks; a body
/// would have to hold a whole request line after a line break to be miscounted.
fn count_requests(chunk: &[u8], requests: &Requests) {
    let starts = std::iter::once(0).chain(chunk.windows(2).enumerate().filter(|(_, w)| w == b"\r\n").map(|(i, _)| i + 2));
    for start in starts {
        let line = &chunk[start..];
        let end = line.windows(2).position(|w| w == b"\r\n").unwrap_or(line.len());
        let line = &line[..end];
        let Some(method) = METHODS.iter().find(|m| line.starts_with(format!("{m} /").as_bytes())) else { continue };
        if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
            *requests.lock().unwrap().entry(method.to_string()).or_default() += 1;
        }
    }
}

/// Reads one request (its head, and its body when it has a length and waits for no
/// `100-continue`), answers `status` with an S3-style XML error, and closes.
async fn answer_error(mut client: TcpStream, status: u16) {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = timeout(Duration::from_secs(5), async {
        loop {
            let n = client.read(&mut buf).await.ok()?;
            if n == 0 || data.len() > 1 << 20 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(i + 4);
            }
        }
    })
    .await;
    let Ok(Some(head_end)) = head_end else { return reset(client) };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim));
    if header("expect") != Some("100-continue") {
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut left = length.saturating_sub(data.len() - head_end);
        let _ = timeout(Duration::from_secs(10), async {
            while left > 0 {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
    let (reason, code) = match status {
        500 => ("Internal Server Error", "InternalError"),
        503 => ("Service Unavailable", "ServiceUnavailable"),
        _ => ("Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{reason} (fault proxy)</Message></Error>"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if client.write_all(response.as_bytes()).await.is_ok() && client.shutdown().await.is_ok() {
        // Read what the client still sends until it closes, so closing does not reset the
        // connection before the client has read the answer.
        let _ = timeout(Duration::from_secs(2), async { while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {} }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_counted_by_method_and_bodies_are_not() {
        let requests = Requests::default();
        count_requests(b"PUT /bucket/a HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nGET /not-a-request-line body", &requests);
        count_requests(b"GET /bucket?list-type=2 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /bucket/b HTTP/1.1\r\n\r\n", &requests);
        count_requests(b"DELETE /bucket/c HTTP/1.1\r\n\r\n", &requests);
        let counted = requests.lock().unwrap().clone();
        let expected: BTreeMap<String, usize> =
            [("DELETE", 1), ("GET", 1), ("HEAD", 1), ("PUT", 1)].into_iter().map(|(m, n)| (m.to_string(), n)).collect();
        assert_eq!(counted, expected);
    }
}

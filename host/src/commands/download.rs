//! Fetching a backup's or restore's files through the server, so the CLI needs no bucket
//! credentials: create a DownloadRequest, wait until the server has processed it, fetch what it
//! offers — a pre-signed URL straight from the object store, else (the store unreachable from
//! here, or a filesystem location) a stream from the server through the API server's service
//! proxy — and clean up. Large files go to disk as they arrive, never whole into memory.
//!
//! Older servers served files in Secrets: those hold the object's bytes as stored (still zstd-compressed for `.zst` files).
//! An object too large for one Secret is split into keys `part-0000`, `part-0001`, ... spread
//! over the Secret and its successors `<secret>-1`, `<secret>-2`, ...

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use rand::Rng;
use stowage_api::requests::{
    DownloadRequest, DownloadRequestPhase, DownloadRequestSpec, DownloadRequestStatus, DownloadTarget,
    DownloadTargetKind, ServedContent, ServedStream, DOWNLOAD_TOKEN_HEADER,
};

use super::{Context, Explain};

/// How long the server has to process a request.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server has to start answering a streamed download.
const STREAM_ANSWER: Duration = Duration::from_secs(60);

/// The first key of a split object.
const FIRST_PART: &str = "part-0000";

/// Where a download goes: memory (logs, results) or a file (archives).
pub enum Sink<'a> {
    Memory(&'a mut Vec<u8>),
    File(&'a mut tokio::fs::File),
}

impl Sink<'_> {
    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Sink::Memory(v) => v.extend_from_slice(bytes),
            Sink::File(f) => f.write_all(bytes).await.context("writing the download")?,
        }
        Ok(())
    }

    /// Drops what a failed attempt wrote, before the next one.
    async fn reset(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncSeekExt;
        match self {
            Sink::Memory(v) => v.clear(),
            Sink::File(f) => {
                f.set_len(0).await?;
                f.rewind().await?;
            }
        }
        Ok(())
    }
}

/// Fetches the stored bytes of one file of a backup or restore.
pub async fn fetch(ctx: &Context, kind: DownloadTargetKind, target: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fetch_into(ctx, kind, target, &mut Sink::Memory(&mut bytes)).await?;
    Ok(bytes)
}

/// Fetches one file into `sink`; returns how many bytes it wrote.
pub async fn fetch_into(ctx: &Context, kind: DownloadTargetKind, target: &str, sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    fetch_target_into(ctx, DownloadTarget { kind, name: target.to_string(), volume: None }, sink).await
}

/// Fetches what a download target names into `sink`; returns how many bytes it wrote.
pub async fn fetch_target_into(ctx: &Context, download: DownloadTarget, sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    let (kind, target) = (download.kind, download.name.clone());
    let target = target.as_str();
    let api = ctx.api::<DownloadRequest>();
    let name = request_name(target);
    let spec = DownloadRequestSpec { target: download };
    api.create(&PostParams::default(), &DownloadRequest::new(&name, spec))
        .await
        .explain(|| format!("creating download request {name:?}"), &ctx.namespace)?;

    let processed = |r: Option<&DownloadRequest>| {
        r.and_then(|r| r.status.as_ref()).and_then(|s| s.phase) == Some(DownloadRequestPhase::Processed)
    };
    let waited = tokio::time::timeout(TIMEOUT, await_condition(api.clone(), &name, processed)).await;
    let result = match waited {
        Err(_) => Err(anyhow::anyhow!(
            "download request {name:?} ({kind:?} of {target:?}) was not processed within {}s; \
             is the Stowage server running? Check its logs with `kubectl -n {ns} logs deployment/{server}`",
            TIMEOUT.as_secs(),
            ns = ctx.namespace,
            server = stowage_api::names::SERVER,
        )),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("waiting for download request {name:?}"))),
        Ok(Ok(request)) => {
            let status = request.and_then(|r| r.status).unwrap_or_default();
            serve(ctx, &name, &status, sink).await
        }
    };
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        tracing::warn!("could not delete download request {name}: {e}");
    }
    result
}

/// Fetches what the server offers for a processed request: the URL first (straight from the
/// store), the stream through the API server when the URL cannot be fetched from here.
async fn serve(ctx: &Context, request: &str, status: &DownloadRequestStatus, sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    if let Some(content) = &status.content {
        let (bytes, secrets) = read_secrets(ctx, request, content).await;
        delete_secrets(ctx, &secrets).await;
        let bytes = bytes?;
        sink.write(&bytes).await?;
        return Ok(bytes.len() as u64);
    }
    if let Some(url) = &status.download_url {
        match get_url(url, sink).await {
            Ok(n) => return Ok(n),
            Err(e) if status.stream.is_some() => {
                tracing::info!("the object store's URL did not work from here ({e:#}); streaming through the API server instead");
                sink.reset().await?;
            }
            Err(e) => return Err(e.context(format!("downloading the file of download request {request:?}"))),
        }
    }
    if let Some(stream) = &status.stream {
        return get_stream(ctx, stream, sink).await.with_context(|| {
            format!(
                "streaming download request {request:?} through the API server (services/{}:{}/proxy in namespace {})",
                stream.service, stream.port, ctx.namespace
            )
        });
    }
    match &status.message {
        Some(message) => anyhow::bail!("the server could not serve download request {request:?}: {message}"),
        None => anyhow::bail!(
            "download request {request:?} was processed but names no URL and no stream; \
             the server and this client may be of different versions"
        ),
    }
}

/// GETs the file from the server through the API server's service proxy, with the request's
/// token; the caller's own credentials (and RBAC: `get` on `services/proxy`) reach it.
async fn get_stream(ctx: &Context, stream: &ServedStream, sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    use futures::AsyncReadExt;
    let path = format!(
        "/api/v1/namespaces/{}/services/{}:{}/proxy{}",
        ctx.namespace, stream.service, stream.port, stream.path
    );
    let request = hyper::Request::get(path)
        .header(DOWNLOAD_TOKEN_HEADER, &stream.token)
        .body(Vec::new())
        .context("building the request")?;
    // The client retries a 503 (no ready server behind the Service) for minutes: bound it.
    let answered = tokio::time::timeout(STREAM_ANSWER, ctx.client.request_stream(request)).await.map_err(|_| {
        anyhow::anyhow!(
            "no answer within {}s; is a server pod ready behind service {}? (`kubectl -n {} get endpoints {}`)",
            STREAM_ANSWER.as_secs(), stream.service, ctx.namespace, stream.service
        )
    })?;
    let reader = answered.map_err(|e| match e {
        kube::Error::Api(r) if r.code == 403 => anyhow::anyhow!(
            "refused ({}); fetching needs `get` on services/proxy for service {} in namespace {} (or a pre-signed URL the object store answers from here)",
            r.message, stream.service, ctx.namespace
        ),
        e => anyhow::Error::new(e),
    })?;
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.context("reading the stream")?;
        if n == 0 {
            return Ok(total);
        }
        sink.write(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Reads the served content; returns it with the names of the Secrets read, to delete.
async fn read_secrets(ctx: &Context, request: &str, content: &ServedContent) -> (anyhow::Result<Vec<u8>>, Vec<String>) {
    let api = ctx.api::<Secret>();
    let mut secrets = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for index in 0.. {
        let name = if index == 0 { content.secret_name.clone() } else { format!("{}-{index}", content.secret_name) };
        let secret = match api.get_opt(&name).await {
            Ok(Some(secret)) => secret,
            Ok(None) if index == 0 => {
                let e = anyhow::anyhow!(
                    "Secret {name:?} served for download request {request:?} does not exist (it may have expired); try again"
                );
                return (Err(e), secrets);
            }
            Ok(None) => break,
            Err(e) => return (Err(e).explain(|| format!("reading Secret {name:?}"), &ctx.namespace), secrets),
        };
        secrets.push(name.clone());
        let data = secret.data.unwrap_or_default();
        if index == 0 && content.key != FIRST_PART {
            let bytes = data.get(&content.key).map(|b| b.0.clone()).ok_or_else(|| missing_key(&name, &content.key));
            return (bytes, secrets);
        }
        if take_parts(&data, &mut next, &mut out) == 0 {
            if index == 0 {
                return (Err(missing_key(&name, FIRST_PART)), secrets);
            }
            break;
        }
    }
    (Ok(out), secrets)
}

fn missing_key(secret: &str, key: &str) -> anyhow::Error {
    anyhow::anyhow!("Secret {secret:?} has no key {key:?}; the server and this client may be of different versions")
}

fn part_key(index: usize) -> String {
    format!("part-{index:04}")
}

/// Appends the consecutive parts present in one Secret, from part `next` on; returns how many.
fn take_parts(data: &BTreeMap<String, ByteString>, next: &mut usize, out: &mut Vec<u8>) -> usize {
    let mut taken = 0;
    while let Some(part) = data.get(&part_key(*next)) {
        out.extend_from_slice(&part.0);
        *next += 1;
        taken += 1;
    }
    taken
}

/// Reassembles a split object from the data of the Secret and its successors, in order,
/// stopping at the first Secret that continues nothing.
pub fn assemble(secrets: &[BTreeMap<String, ByteString>]) -> Option<Vec<u8>> {
    let (mut next, mut out) = (0, Vec::new());
    for data in secrets {
        if take_parts(data, &mut next, &mut out) == 0 {
            break;
        }
    }
    (next > 0).then_some(out)
}

async fn delete_secrets(ctx: &Context, names: &[String]) {
    let api = ctx.api::<Secret>();
    for name in names {
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            tracing::warn!("could not delete served Secret {name}: {e}");
        }
    }
}

/// `<target>-<5 random characters>`, the target name shortened to fit 253 characters.
fn request_name(target: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    let base: String = target.chars().take(253 - 6).collect();
    format!("{}-{suffix}", base.trim_end_matches(['-', '.']))
}

/// Decompresses zstd data; other data (a server that served it uncompressed) passes through.
pub fn decompress(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    if bytes.starts_with(&ZSTD_MAGIC) {
        zstd::stream::decode_all(bytes.as_slice()).context("decompressing the downloaded file (zstd)")
    } else {
        Ok(bytes)
    }
}

/// GETs a pre-signed URL with the HTTP stack the Kubernetes client already uses, writing the
/// body as it arrives.
async fn get_url(url: &str, sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    let uri: hyper::Uri = url.parse().with_context(|| format!("the server returned an invalid URL {url:?}"))?;
    let response = match uri.scheme_str() {
        Some("http") => {
            Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(HttpConnector::new()).get(uri).await
        }
        Some("https") => {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .context("loading the system's CA certificates for the HTTPS download")?
                .https_only()
                .enable_http1()
                .build();
            Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https).get(uri).await
        }
        _ => anyhow::bail!("the server returned a URL that is not http(s): {url:?}"),
    }
    .context("connecting to the object store")?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let body = body.collect().await.context("reading the response")?.to_bytes();
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        anyhow::bail!("the object store answered {status}: {text}");
    }
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the response")?;
        if let Some(data) = frame.data_ref() {
            sink.write(data).await?;
            total += data.len() as u64;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(parts: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        parts.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn parts_concatenate_in_order_across_secrets() {
        let first = secret(&[("part-0001", "b"), ("part-0000", "a"), ("part-0002", "c")]);
        let second = secret(&[("part-0003", "d"), ("part-0004", "e")]);
        let third = secret(&[("part-0005", "f")]);
        assert_eq!(assemble(&[first.clone(), second.clone(), third]).unwrap(), b"abcdef");
        // A gap ends the object: part-0004 never follows a missing part-0003.
        let gap = secret(&[("part-0004", "e")]);
        assert_eq!(assemble(&[first.clone(), gap, second]).unwrap(), b"abc");
        assert_eq!(assemble(&[secret(&[("part-0000", "only")])]).unwrap(), b"only");
        assert_eq!(assemble(&[secret(&[("logs", "x")])]), None);
        assert_eq!(assemble(&[]), None);
    }

    #[test]
    fn parts_beyond_four_digits_keep_counting() {
        let mut data = BTreeMap::new();
        for i in 0..10_002 {
            data.insert(part_key(i), ByteString(vec![(i % 251) as u8]));
        }
        let bytes = assemble(&[data]).unwrap();
        assert_eq!(bytes.len(), 10_002);
        assert_eq!(part_key(10_001), "part-10001");
    }

    #[test]
    fn request_names_fit() {
        let name = request_name("nginx-backup");
        assert!(name.starts_with("nginx-backup-") && name.len() == "nginx-backup-".len() + 5, "{name}");
        assert!(stowage_api::layout::check_object_name(&name).is_ok());
        let long = request_name(&"a".repeat(253));
        assert_eq!(long.len(), 253);
    }

    #[test]
    fn decompresses_zstd_and_passes_plain_text() {
        let packed = zstd::stream::encode_all(&b"log line\n"[..], 3).unwrap();
        assert_eq!(decompress(packed).unwrap(), b"log line\n");
        assert_eq!(decompress(b"plain".to_vec()).unwrap(), b"plain");
    }

    #[tokio::test]
    async fn urls_are_fetched_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for body in ["hello", ""] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await.unwrap();
                let status = if body.is_empty() { "403 Forbidden" } else { "200 OK" };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let mut got = Vec::new();
        assert_eq!(get_url(&format!("http://{addr}/b.tar.zst?sig=x"), &mut Sink::Memory(&mut got)).await.unwrap(), 5);
        assert_eq!(got, b"hello");
        let err = get_url(&format!("http://{addr}/b"), &mut Sink::Memory(&mut got)).await.unwrap_err().to_string();
        assert!(err.contains("403"), "{err}");
        assert!(get_url("ftp://x/y", &mut Sink::Memory(&mut got)).await.unwrap_err().to_string().contains("not http(s)"));
    }
}

//! S3Store against a real S3 server: moto on loopback (see stowage-test-support), or the
//! server named by STOWAGE_TEST_S3_ENDPOINT.

mod common;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use common::{digest, exercise_ranges, exercise_store, FailingReader, PatternReader};
use std::time::Instant;
use stowage_storage::{ObjectStore, S3Config, S3Credentials, S3Store, StorageError};
use stowage_test_support::{unique_name, S3Server};

fn config(server: &S3Server, bucket: &str, prefix: Option<&str>) -> S3Config {
    let mut config = S3Config::new("default", bucket);
    config.prefix = prefix.map(str::to_string);
    config.region = server.region().to_string();
    config.endpoint = Some(server.endpoint().to_string());
    config.force_path_style = true;
    config.credentials = Some(S3Credentials::new(server.access_key(), server.secret_key()));
    config
}

/// A store on a fresh bucket of the shared server.
async fn fresh_store(prefix: Option<&str>) -> S3Store {
    let server = S3Server::shared();
    let store = S3Store::new(config(server, &unique_name("stowage-test"), prefix)).unwrap();
    store.create_bucket().await.unwrap();
    store
}

/// The SDK without our wrapper, to look at the bucket independently.
fn raw_client(server: &S3Server) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(server.region().to_string()))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            server.access_key(),
            server.secret_key(),
            None,
            None,
            "test",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn behaves_like_an_object_store_under_a_prefix() {
    let store = fresh_store(Some("/cluster-a/")).await;
    store.check().await.unwrap();
    exercise_store(&store).await;
    exercise_ranges(&store).await;

    // The prefix is really applied in the bucket, and hidden from callers.
    let unprefixed = S3Store::new(config(S3Server::shared(), store.bucket(), None)).unwrap();
    let keys: Vec<_> = unprefixed
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["cluster-a/restic/ns1/config", "cluster-a/top.txt"]);
    assert_eq!(unprefixed.list_dirs("").await.unwrap(), ["cluster-a"]);
}

#[tokio::test]
async fn listing_and_deleting_go_past_one_page() {
    let store = fresh_store(None).await;
    // More than one ListObjectsV2 page and one DeleteObjects batch (1000 each).
    let count = 1010;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(count / 8 + 1) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for i in chunk {
                store
                    .put(
                        &format!("restic/ns/data/{i:04}"),
                        Bytes::from(i.to_string()),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    store
        .put("restic/other/config", Bytes::from_static(b"keep"))
        .await
        .unwrap();
    tasks.join_all().await;

    let listed = store.list("restic/ns/").await.unwrap();
    assert_eq!(listed.len(), count);
    assert_eq!(listed[1009].key, "restic/ns/data/1009");
    assert_eq!(listed[1009].size, 4);
    assert_eq!(
        store.delete_prefix("restic/ns/").await.unwrap(),
        count as u64
    );
    let left: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, ["restic/other/config"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_200_mib_with_multipart_upload() {
    let store = fresh_store(Some("big")).await;
    let len: u64 = 200 << 20;
    let started = Instant::now();
    let written = store
        .put_stream(
            "backups/b/b.tar.zst",
            &mut PatternReader::new(len),
            Some(len),
        )
        .await
        .unwrap();
    let upload = started.elapsed();
    assert_eq!(written, len);
    assert_eq!(store.head("backups/b/b.tar.zst").await.unwrap().size, len);

    let started = Instant::now();
    let got = digest(store.get_stream("backups/b/b.tar.zst").await.unwrap()).await;
    let download = started.elapsed();
    assert_eq!(got, digest(PatternReader::new(len)).await);
    eprintln!("200 MiB: upload {upload:.2?}, download+sha256 {download:.2?}");

    // It went up in parts (moto reports a multipart ETag as "<md5>-<parts>").
    let raw = raw_client(S3Server::shared());
    let head = raw
        .head_object()
        .bucket(store.bucket())
        .key("big/backups/b/b.tar.zst")
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap_or_default().ends_with("-25\""),
        "{:?}",
        head.e_tag()
    );
}

#[tokio::test]
async fn small_streams_are_single_puts() {
    let store = fresh_store(None).await;
    let written = store
        .put_stream("small", &mut &b"tiny body"[..], None)
        .await
        .unwrap();
    assert_eq!(written, 9);
    assert_eq!(store.get("small").await.unwrap(), &b"tiny body"[..]);
}

#[tokio::test]
async fn failed_stream_aborts_the_multipart_upload() {
    let store = fresh_store(None).await;
    let err = store
        .put_stream(
            "backups/b/b.tar.zst",
            &mut FailingReader::new(20 << 20),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("simulated producer failure"),
        "{err}"
    );
    assert!(!store.exists("backups/b/b.tar.zst").await.unwrap());

    let raw = raw_client(S3Server::shared());
    let uploads = raw
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "left behind: {:?}",
        uploads.uploads()
    );
}

#[tokio::test]
async fn missing_bucket_names_the_location_and_what_to_fix() {
    let server = S3Server::shared();
    let store = S3Store::new(config(server, "no-such-bucket-stowage", None)).unwrap();
    let expected = format!(
        "storage location \"default\": bucket \"no-such-bucket-stowage\" does not exist at {}; \
         create it or fix spec.objectStorage.bucket",
        server.endpoint()
    );
    let check = store.check().await.unwrap_err();
    assert!(
        matches!(check, StorageError::BucketNotFound { .. }),
        "{check:?}"
    );
    assert_eq!(check.to_string(), expected);
    let get = store.get("backups/x").await.unwrap_err();
    assert!(
        !get.is_not_found(),
        "a missing bucket is not a missing object: {get:?}"
    );
    assert_eq!(get.to_string(), expected);
    assert_eq!(
        store.put("x", Bytes::new()).await.unwrap_err().to_string(),
        expected
    );
    assert_eq!(store.list("").await.unwrap_err().to_string(), expected);
}

#[tokio::test]
async fn bad_credentials_are_access_denied() {
    let server = S3Server::start_with_auth().unwrap();
    let good = S3Store::new(config(&server, &unique_name("stowage-auth"), None)).unwrap();
    good.create_bucket().await.unwrap();
    good.put("backups/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    good.check().await.unwrap();

    let mut unknown_key = config(&server, good.bucket(), None);
    unknown_key.credentials = Some(S3Credentials::new("AKIAMADEUPKEY0000000", "whatever"));
    let mut wrong_secret = config(&server, good.bucket(), None);
    wrong_secret.credentials = Some(S3Credentials::new(server.access_key(), "wrong-secret"));

    for (config, code) in [
        (unknown_key, "InvalidAccessKeyId"),
        (wrong_secret, "SignatureDoesNotMatch"),
    ] {
        let store = S3Store::new(config).unwrap();
        let expected = format!(
            "storage location \"default\": access denied ({code}); check the credentials Secret"
        );
        let check = store.check().await.unwrap_err();
        assert!(
            matches!(check, StorageError::AccessDenied { .. }),
            "{check:?}"
        );
        assert_eq!(check.to_string(), expected);
        assert_eq!(
            store.get("backups/x").await.unwrap_err().to_string(),
            expected
        );
        // HEAD replies carry no error code; still access denied, not "not found".
        let head = store.head("backups/x").await.unwrap_err();
        assert!(
            matches!(head, StorageError::AccessDenied { .. }),
            "{head:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_clear_connection_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut config = S3Config::new("default", "velero");
    config.endpoint = Some(endpoint.clone());
    config.force_path_style = true;
    config.credentials = Some(S3Credentials::new("a", "b"));
    let store = S3Store::new(config).unwrap();
    let err = store.check().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert!(
        message.starts_with(&format!(
            "storage location \"default\": cannot reach {endpoint}: "
        )),
        "{message}"
    );
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    assert!(message.ends_with("check spec.config.s3Url and that the server is reachable"));
}

/// The S3 endpoint behind a fault proxy: `host:port` of the shared server.
async fn proxied_store(proxy_to: &S3Server) -> (S3Store, stowage_test_support::FaultProxy) {
    let target = proxy_to
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("the test S3 server listens on an IP address");
    let proxy = stowage_test_support::FaultProxy::start(target).await.unwrap();
    let mut config = config(proxy_to, &unique_name("stowage-test"), None);
    config.endpoint = Some(proxy.url());
    let store = S3Store::new(config).unwrap();
    store.create_bucket().await.unwrap();
    (store, proxy)
}

#[tokio::test]
async fn requests_ride_out_a_short_outage_and_the_location_check_reports_it_at_once() {
    let (store, proxy) = proxied_store(S3Server::shared()).await;
    store.put("before", Bytes::from_static(b"before")).await.unwrap();

    proxy.set(stowage_test_support::FaultMode::Refuse);
    let checked = Instant::now();
    let err = store.check().await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert!(checked.elapsed().as_secs() < 10, "the check waited {:?}", checked.elapsed());

    // An upload and a read started during an 8 s outage complete once it ends.
    let outage = Instant::now();
    let ends = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        proxy.set(stowage_test_support::FaultMode::Pass);
        proxy
    });
    let (put, get) = tokio::join!(store.put("during", Bytes::from(vec![7u8; 100_000])), store.get("before"));
    put.unwrap();
    assert_eq!(get.unwrap(), Bytes::from_static(b"before"));
    assert!(outage.elapsed().as_secs() >= 8, "finished before the outage ended: {:?}", outage.elapsed());
    let _proxy = ends.await.unwrap();
    assert_eq!(store.get("during").await.unwrap(), Bytes::from(vec![7u8; 100_000]));
}

/// A plain HTTP/1.1 GET (what a user's machine does with a download URL): status and body.
async fn http_get(url: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap();
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            plain.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = plain;
    }
    (status, body)
}

#[tokio::test]
async fn presigned_urls_fetch_the_object_without_credentials_and_name_the_public_endpoint() {
    let store = fresh_store(Some("cluster-a")).await;
    store.put("backups/b1/b1.tar.zst", Bytes::from_static(b"archive bytes")).await.unwrap();
    let url = store.presigned_get("backups/b1/b1.tar.zst", std::time::Duration::from_secs(600)).await.unwrap().unwrap();
    assert!(url.contains("cluster-a/backups/b1/b1.tar.zst") && url.contains("X-Amz-Expires=600"), "{url}");
    let (status, body) = http_get(&url).await;
    assert_eq!((status, body.as_slice()), (200, &b"archive bytes"[..]));

    let server = S3Server::shared();
    let mut public = config(server, store.bucket(), Some("cluster-a"));
    public.public_endpoint = Some("https://backups.example.com".into());
    let signed = S3Store::new(public).unwrap().presigned_get("k", std::time::Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(signed.starts_with("https://backups.example.com/"), "{signed}");
    let mut bad = config(server, store.bucket(), None);
    bad.public_endpoint = Some("backups.example.com".into());
    let err = S3Store::new(bad).unwrap_err().to_string();
    assert!(err.contains("spec.config.publicUrl"), "{err}");
}

//! The fixture itself: moto starts, answers, enforces auth when asked and dies on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use stowage_test_support::S3Server;

/// Status line and body of a ListBuckets signed (badly) with a made-up key.
fn list_buckets_with_made_up_key(endpoint: &str) -> std::io::Result<(u16, String)> {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Amz-Date: 20250101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=MADEUPKEY/20250101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, reply))
}

#[test]
fn open_server_answers_and_stops_on_drop() {
    let server = S3Server::start().unwrap();
    if server.is_external() {
        return;
    }
    assert!(!server.enforces_auth());
    let (status, reply) = list_buckets_with_made_up_key(server.endpoint()).unwrap();
    assert_eq!(status, 200, "{reply}");
    let endpoint = server.endpoint().to_string();
    drop(server);
    assert!(
        list_buckets_with_made_up_key(&endpoint).is_err(),
        "moto still answers after drop"
    );
}

#[test]
fn auth_server_rejects_unknown_keys_and_has_a_real_key() {
    let server = S3Server::start_with_auth().unwrap();
    if server.is_external() {
        return;
    }
    assert!(server.enforces_auth());
    assert!(
        server.access_key().starts_with("AKIA"),
        "{}",
        server.access_key()
    );
    assert!(!server.secret_key().is_empty());
    let (status, reply) = list_buckets_with_made_up_key(server.endpoint()).unwrap();
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("InvalidAccessKeyId"), "{reply}");
}

//! What every ObjectStore must do, plus readers for streaming tests. Shared by the S3 and
//! filesystem suites so both stores are held to the same behaviour.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use stowage_storage::{ObjectStore, StorageError};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Puts, reads, lists and deletes through `store`, asserting on contents. Expects an empty
/// location.
pub async fn exercise_store(store: &dyn ObjectStore) {
    assert!(
        store.list("").await.unwrap().is_empty(),
        "location should start empty"
    );
    let objects: [(&str, &[u8]); 5] = [
        (
            "backups/nightly/stowage-backup.json",
            b"{\"kind\":\"Backup\"}",
        ),
        (
            "backups/nightly/nightly.tar.zst",
            &[0x28, 0xb5, 0x2f, 0xfd, 0, 1, 2, 3],
        ),
        ("backups/daily/stowage-backup.json", b"{}"),
        ("restic/ns1/config", b"restic config"),
        ("top.txt", b""),
    ];
    for (key, data) in objects {
        store.put(key, Bytes::from_static(data)).await.unwrap();
    }

    // An object written as parts is their concatenation (empty parts included).
    let parts = ["pack-", "", "of-", "blobs"].map(|p| Bytes::from_static(p.as_bytes()));
    store.put_parts("parts/one", parts.to_vec()).await.unwrap();
    assert_eq!(store.get("parts/one").await.unwrap(), "pack-of-blobs");
    store.put_parts("parts/none", Vec::new()).await.unwrap();
    assert_eq!(store.get("parts/none").await.unwrap(), "");
    store.delete("parts/one").await.unwrap();
    store.delete("parts/none").await.unwrap();

    for (key, data) in objects {
        assert_eq!(store.get(key).await.unwrap(), data, "get {key}");
        let mut streamed = Vec::new();
        store
            .get_stream(key)
            .await
            .unwrap()
            .read_to_end(&mut streamed)
            .await
            .unwrap();
        assert_eq!(streamed, data, "get_stream {key}");
        let info = store.head(key).await.unwrap();
        assert_eq!((info.key.as_str(), info.size), (key, data.len() as u64));
        assert!(info.last_modified.is_some());
        assert!(store.exists(key).await.unwrap());
    }

    let missing = store.get("backups/nightly/missing.json").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    assert_eq!(
        missing.to_string(),
        format!(
            "storage location \"{}\": object \"backups/nightly/missing.json\" not found",
            store.location()
        )
    );
    assert!(store
        .head("backups/nightly/missing.json")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .get_stream("nope")
        .await
        .err()
        .expect("missing")
        .is_not_found());
    assert!(!store.exists("backups/nightly/missing.json").await.unwrap());
    // A "directory" is not an object.
    assert!(!store.exists("backups/nightly").await.unwrap());

    let keys = |prefix: &'static str| async move {
        let listed = store.list(prefix).await.unwrap();
        listed
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect::<Vec<_>>()
    };
    let all: Vec<(String, u64)> = {
        let mut v: Vec<_> = objects
            .iter()
            .map(|(k, d)| (k.to_string(), d.len() as u64))
            .collect();
        v.sort();
        v
    };
    assert_eq!(keys("").await, all);
    assert_eq!(keys("backups/").await, all[..3].to_vec());
    assert_eq!(
        keys("backups/nigh").await,
        vec![
            ("backups/nightly/nightly.tar.zst".to_string(), 8),
            ("backups/nightly/stowage-backup.json".to_string(), 17),
        ]
    );
    assert_eq!(keys("nothing/").await, vec![]);

    assert_eq!(store.list_dirs("").await.unwrap(), ["backups", "restic"]);
    assert_eq!(
        store.list_dirs("backups").await.unwrap(),
        ["daily", "nightly"]
    );
    assert_eq!(
        store.list_dirs("backups/").await.unwrap(),
        ["daily", "nightly"]
    );
    assert_eq!(
        store.list_dirs("backups/nightly").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.list_dirs("absent").await.unwrap(),
        Vec::<String>::new()
    );

    store
        .put("top.txt", Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(store.get("top.txt").await.unwrap(), &b"replaced"[..]);

    store
        .delete("backups/daily/stowage-backup.json")
        .await
        .unwrap();
    store
        .delete("backups/daily/stowage-backup.json")
        .await
        .unwrap(); // idempotent
    assert!(!store
        .exists("backups/daily/stowage-backup.json")
        .await
        .unwrap());
    assert_eq!(store.list_dirs("backups").await.unwrap(), ["nightly"]);

    assert_eq!(store.delete_prefix("backups/").await.unwrap(), 2);
    assert!(store.list("backups/").await.unwrap().is_empty());
    assert_eq!(store.list_dirs("").await.unwrap(), ["restic"]);
    let refused = store.delete_prefix("").await.unwrap_err();
    assert!(
        matches!(refused, StorageError::InvalidKey { .. }),
        "{refused:?}"
    );
    assert_eq!(
        keys("").await.len(),
        2,
        "delete_prefix(\"\") must not delete anything"
    );

    for bad in ["../escape", "/abs", "a//b", "a/./b", ""] {
        let err = store.put(bad, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidKey { .. }),
            "{bad}: {err:?}"
        );
    }
}

/// `len` bytes of a fixed pseudo-random 1 MiB block whose first 8 bytes are replaced by the
/// block number, so misordered or repeated parts change the checksum. Never holds more than
/// the block in memory.
pub struct PatternReader {
    block: Vec<u8>,
    pos: u64,
    len: u64,
}

const BLOCK: u64 = 1 << 20;

impl PatternReader {
    pub fn new(len: u64) -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let block = (0..BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        PatternReader { block, pos: 0, len }
    }

    fn byte_run(&self) -> &[u8] {
        let offset = (self.pos % BLOCK) as usize;
        let end = (BLOCK as usize).min(offset + (self.len - self.pos) as usize);
        &self.block[offset..end]
    }
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let block_no = (self.pos / BLOCK).to_le_bytes();
            let offset = (self.pos % BLOCK) as usize;
            let run = self.byte_run();
            let n = run.len().min(buf.remaining());
            let start = buf.filled().len();
            buf.put_slice(&run[..n]);
            // Stamp the block number over whatever part of bytes 0..8 this read covered.
            if offset < 8 {
                let end = (offset + n).min(8);
                buf.filled_mut()[start..start + end - offset]
                    .copy_from_slice(&block_no[offset..end]);
            }
            self.pos += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// Yields `ok_bytes` of data, then fails: a producer (tar writer, network) breaking mid-upload.
pub struct FailingReader {
    inner: PatternReader,
}

impl FailingReader {
    pub fn new(ok_bytes: u64) -> Self {
        FailingReader {
            inner: PatternReader::new(ok_bytes),
        }
    }
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.inner.pos == self.inner.len {
            return Poll::Ready(Err(io::Error::other("simulated producer failure")));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// SHA-256 and length of everything `reader` yields, read in 1 MiB chunks.
/// Ranged reads: exact slices, the empty range, ranges past the end and missing objects.
/// Leaves nothing behind.
pub async fn exercise_ranges(store: &dyn ObjectStore) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store
        .put("ranges/object", Bytes::from(data.clone()))
        .await
        .unwrap();
    for (offset, len) in [(0u64, 1u64), (0, 100_000), (12_345, 4_321), (99_999, 1), (500, 0)] {
        let got = store.get_range("ranges/object", offset, len).await.unwrap();
        let (start, end) = (offset as usize, (offset + len) as usize);
        assert_eq!(&got[..], &data[start..end], "range {offset}+{len}");
    }
    for (offset, len) in [(99_990u64, 20u64), (100_000, 1), (200_000, 10)] {
        let err = store
            .get_range("ranges/object", offset, len)
            .await
            .expect_err("range past the end");
        assert!(!err.is_not_found(), "{err:?}");
    }
    let missing = store.get_range("ranges/missing", 0, 10).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    // A "directory" is not an object.
    assert!(store.get_range("ranges", 0, 1).await.unwrap_err().is_not_found());
    store.delete("ranges/object").await.unwrap();
}

pub async fn digest(mut reader: impl AsyncRead + Unpin) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, total)
}

#[tokio::test]
async fn pattern_reader_is_deterministic_and_block_stamped() {
    let (a, len) = digest(PatternReader::new(3 * BLOCK + 5)).await;
    let (b, _) = digest(PatternReader::new(3 * BLOCK + 5)).await;
    assert_eq!((a.as_str(), len), (b.as_str(), 3 * BLOCK + 5));
    let mut data = Vec::new();
    PatternReader::new(2 * BLOCK)
        .read_to_end(&mut data)
        .await
        .unwrap();
    assert_eq!(&data[..8], &0u64.to_le_bytes());
    assert_eq!(
        &data[BLOCK as usize..BLOCK as usize + 8],
        &1u64.to_le_bytes()
    );
    assert_eq!(data[8..BLOCK as usize], data[BLOCK as usize + 8..]);
}

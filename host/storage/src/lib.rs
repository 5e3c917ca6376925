//! Object stores for Stowage: where backup archives, their metadata and restic repositories
//! live. [`ObjectStore`] is the interface; [`S3Store`] (any S3-compatible server) and
//! [`FsStore`] (a local directory) implement it; [`open`] builds one from a
//! BackupStorageLocation's provider, bucket, prefix and config.
//!
//! Keys are `/`-separated and relative to the location's prefix: `backups/nightly/nightly.tar.zst`.

mod credentials;
mod error;
mod fs;
mod key;
mod location;
mod s3;

pub use credentials::S3Credentials;
pub use error::{Result, StorageError};
pub use fs::FsStore;
pub use location::{open, LocationSpec};
pub use s3::{S3Config, S3Store, DEFAULT_PART_SIZE, DEFAULT_REGION, REQUEST_ATTEMPTS};

use async_trait::async_trait;
use bytes::Bytes;
use std::time::SystemTime;
use tokio::io::AsyncRead;

/// One buffer with the parts' bytes in order; each part is dropped once copied.
pub fn join_parts(parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let mut joined = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in parts {
        joined.extend_from_slice(&part);
    }
    joined.freeze()
}

/// A readable object body.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// One object as listed or looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the location's prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// A storage location's objects. Implementations are cheap to share: use `Arc<dyn ObjectStore>`.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The BackupStorageLocation name, as used in error messages.
    fn location(&self) -> &str;

    /// Writes a whole object, replacing any previous one.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Writes a whole object given as consecutive parts (a restic pack arrives as its
    /// blobs). The default joins them, dropping each part once copied; a store that can write
    /// the parts one after the other does so without the joined copy.
    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        self.put(key, join_parts(parts)).await
    }

    /// Writes an object from a reader without holding it all in memory (multipart upload on
    /// S3). `size_hint` lets very large objects pick bigger parts. Returns the bytes written.
    /// On error nothing is left behind: no partial object, no pending upload.
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size_hint: Option<u64>,
    ) -> Result<u64>;

    /// Reads a whole object; [`StorageError::NotFound`] when it does not exist.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Reads `len` bytes of an object starting at `offset` (restic repositories read single
    /// blobs out of pack files). A range reaching past the end is an error, not a short read.
    /// [`StorageError::NotFound`] when the object does not exist.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes>;

    /// Opens an object for streaming; [`StorageError::NotFound`] when it does not exist.
    async fn get_stream(&self, key: &str) -> Result<ObjectReader>;

    /// A URL anyone holding it can GET the object from until `expires_in` has passed, for
    /// stores that can sign one (S3); `None` for the others. Makes no request: the object may
    /// not exist.
    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<Option<String>> {
        let _ = (key, expires_in);
        Ok(None)
    }

    /// Size and modification time; [`StorageError::NotFound`] when it does not exist.
    async fn head(&self, key: &str) -> Result<ObjectInfo>;

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object whose key starts with `prefix` (a plain string prefix, `""` for all),
    /// sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// The names of the "directories" directly under `prefix` (`""`, `"backups"` or
    /// `"backups/"`), sorted: `list_dirs("backups")` gives `["daily", "nightly"]`.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>>;

    /// Deletes an object. Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Deletes every object whose key starts with `prefix`; returns how many were deleted.
    /// An empty prefix is refused: wiping a whole location takes an explicit loop over `list`.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64>;

    /// Verifies the location is reachable, exists and can be listed with these credentials
    /// (a BackupStorageLocation is Available when this succeeds).
    async fn check(&self) -> Result<()>;
}

//! A store that forwards every call to another after asking its hooks: tests make writes fail
//! or stall and reads hang there, to see what the engine does then. Shared by the integration
//! tests (through `common`) and the writer's unit tests (by path).

use bytes::Bytes;
use std::sync::Arc;
use stowage_storage::{ObjectInfo, ObjectReader, ObjectStore, Result as StorageResult};
use tokio::io::AsyncRead;

/// What a [`HookedStore`] asks before it forwards a call.
#[async_trait::async_trait]
pub trait Hooks: std::fmt::Debug + Send + Sync + 'static {
    /// Before a write of `len` bytes (`u64::MAX` when unknown) to `key`; an error fails it.
    async fn write(&self, _key: &str, _len: u64) -> StorageResult<()> {
        Ok(())
    }
    /// Before a read of `len` bytes of `key` at some offset (reads of whole objects are not
    /// asked about).
    async fn read_range(&self, _key: &str, _len: u64) {}
}

/// `inner` behind `hooks`; it dereferences to the hooks, for the test to steer them.
#[derive(Debug)]
pub struct HookedStore<H> {
    pub inner: Arc<dyn ObjectStore>,
    pub hooks: H,
}

impl<H> std::ops::Deref for HookedStore<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.hooks
    }
}

#[async_trait::async_trait]
impl<H: Hooks> ObjectStore for HookedStore<H> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.hooks.write(key, data.len() as u64).await?;
        self.inner.put(key, data).await
    }
    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> StorageResult<()> {
        self.hooks.write(key, parts.iter().map(|p| p.len() as u64).sum()).await?;
        self.inner.put_parts(key, parts).await
    }
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size_hint: Option<u64>,
    ) -> StorageResult<u64> {
        self.hooks.write(key, size_hint.unwrap_or(u64::MAX)).await?;
        self.inner.put_stream(key, body, size_hint).await
    }
    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Bytes> {
        self.hooks.read_range(key, len).await;
        self.inner.get_range(key, offset, len).await
    }
    async fn get_stream(&self, key: &str) -> StorageResult<ObjectReader> {
        self.inner.get_stream(key).await
    }
    async fn head(&self, key: &str) -> StorageResult<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.inner.list_dirs(prefix).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> StorageResult<u64> {
        self.inner.delete_prefix(prefix).await
    }
    async fn check(&self) -> StorageResult<()> {
        self.inner.check().await
    }
}

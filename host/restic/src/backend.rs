//! rustic_core's backend traits over a Stowage [`ObjectStore`], in restic's repository layout
//! under `restic/<namespace>/`: `config`, `keys/<id>`, `snapshots/<id>`, `index/<id>`,
//! `data/<first two hex digits>/<id>`.
//!
//! rustic_core is blocking and calls the backend from its own threads; each call runs the
//! store's future on the captured runtime handle. Never call these from a runtime thread.

use bytes::{Bytes, BytesMut};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use std::sync::{Arc, Mutex};
use stowage_storage::{ObjectStore, StorageError};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Canceled when the operation using a backend is: calls under way stop waiting for the
/// store and every later call fails at once, which makes rustic_core's worker threads wind
/// down.
pub(crate) type CancelFlag = CancellationToken;

#[derive(Debug, Clone)]
pub(crate) struct StoreBackend {
    store: Arc<dyn ObjectStore>,
    /// `restic/<namespace>/`
    prefix: String,
    /// For rustic_core's messages: `<location>:restic/<namespace>`.
    name: String,
    handle: Handle,
    cancel: CancelFlag,
    /// The first storage failure, so the caller can report it as such rather than as the
    /// engine's rewording of it.
    first_error: Arc<Mutex<Option<StorageError>>>,
}

impl StoreBackend {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        prefix: String,
        handle: Handle,
        cancel: CancelFlag,
    ) -> Self {
        let name = format!("{}:{}", store.location(), prefix.trim_end_matches('/'));
        StoreBackend {
            store,
            prefix,
            name,
            handle,
            cancel,
            first_error: Arc::default(),
        }
    }

    /// The storage error behind a failed operation, if one was.
    pub(crate) fn take_storage_error(&self) -> Option<StorageError> {
        self.first_error.lock().expect("not poisoned").take()
    }

    pub(crate) fn key(&self, tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => format!("{}config", self.prefix),
            FileType::Pack => format!("{}data/{}/{}", self.prefix, &hex[..2], hex.as_str()),
            _ => format!("{}{}/{}", self.prefix, tpe.dirname(), hex.as_str()),
        }
    }

    /// Runs one store call, refusing when canceled, abandoning it when canceled while it runs,
    /// and recording the first failure.
    fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> RusticResult<T> {
        let canceled = || RusticError::new(ErrorKind::Backend, "operation canceled");
        if self.cancel.is_cancelled() {
            return Err(canceled());
        }
        let result = self.handle.block_on(async {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => None,
                result = f => Some(result),
            }
        });
        result.ok_or_else(canceled)?.map_err(|e| {
            let message = format!("{}: {e}", what());
            let mut first = self.first_error.lock().expect("not poisoned");
            if first.is_none() {
                *first = Some(e);
            }
            RusticError::new(ErrorKind::Backend, message)
        })
    }
}

impl ReadBackend for StoreBackend {
    fn location(&self) -> String {
        self.name.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let key = self.key(tpe, &Id::default());
            let exists = self.run(|| format!("looking up {key}"), async {
                match self.store.head(&key).await {
                    Ok(info) => Ok(Some(info.size)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            return Ok(exists
                .map(|size| (Id::default(), size as u32))
                .into_iter()
                .collect());
        }
        let dir = format!("{}{}/", self.prefix, tpe.dirname());
        let objects = self.run(|| format!("listing {dir}"), self.store.list(&dir))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let name = o.key.rsplit('/').next()?;
                let id = name.parse::<Id>().ok()?;
                Some((id, u32::try_from(o.size).unwrap_or(u32::MAX)))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        self.run(|| format!("reading {key}"), self.store.get(&key))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        self.run(
            || format!("reading {key}"),
            self.store
                .get_range(&key, u64::from(offset), u64::from(length)),
        )
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.key(tpe, id)
    }
}

impl WriteBackend for StoreBackend {
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let key = self.key(tpe, id);
        let data = match content.into_vec() {
            mut one if one.len() == 1 => one.pop().expect("one element"),
            many => {
                let mut joined = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                many.iter().for_each(|b| joined.extend_from_slice(b));
                joined.freeze()
            }
        };
        self.run(|| format!("writing {key}"), self.store.put(&key, data))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let key = self.key(tpe, id);
        self.run(|| format!("deleting {key}"), self.store.delete(&key))
    }
}

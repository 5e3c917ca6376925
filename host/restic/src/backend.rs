//! rustic_core's backend traits over a Stowage [`ObjectStore`], in restic's repository layout
//! under `restic/<namespace>/`: `config`, `keys/<id>`, `snapshots/<id>`, `index/<id>`,
//! `data/<first two hex digits>/<id>`.
//!
//! rustic_core is blocking and calls the backend from its own threads; each call runs the
//! store's future on the captured runtime handle. Never call these from a runtime thread.

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use stowage_storage::{ObjectStore, StorageError};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Canceled when the operation using a backend is: reads under way stop waiting for the
/// store, writes under way finish, and every later call fails at once, which makes rustic_core's worker threads wind
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
    reads: Arc<ReadBudget>,
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
            reads: Arc::new(ReadBudget::new(read_budget())),
        }
    }

    /// The storage error behind a failed operation, if one was.
    pub(crate) fn take_storage_error(&self) -> Option<StorageError> {
        self.first_error.lock().expect("not poisoned").take()
    }

    /// Whether a storage call failed (the error stays for [`Self::take_storage_error`]).
    pub(crate) fn has_storage_error(&self) -> bool {
        self.first_error.lock().expect("not poisoned").is_some()
    }

    pub(crate) fn key(&self, tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => format!("{}config", self.prefix),
            FileType::Pack => format!("{}data/{}/{}", self.prefix, &hex[..2], hex.as_str()),
            _ => format!("{}{}/{}", self.prefix, tpe.dirname(), hex.as_str()),
        }
    }

    /// Writes a repository file given as its parts (a pack as its blobs, header and length),
    /// as one object: the store writes the parts in turn or joins them.
    pub(crate) fn put_parts(&self, tpe: FileType, id: &Id, parts: Vec<Bytes>) -> RusticResult<()> {
        let key = self.key(tpe, id);
        self.run_to_end(|| format!("writing {key}"), self.store.put_parts(&key, parts))
    }

    /// Runs one reading store call, refusing when canceled, abandoning it when canceled while
    /// it runs, and recording the first failure.
    fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> RusticResult<T> {
        self.record(what, self.call(f)?)
    }

    /// Runs one reading store call as [`Self::run`] does, but hands its failure back as it is.
    fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> RusticResult<Result<T, StorageError>> {
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
        result.ok_or_else(canceled)
    }

    /// Reads `length` bytes at `offset` of pack `id` for a restore. A pack that is missing or
    /// shorter than asked is damage in the repository, which reading again will not mend: it
    /// comes back as [`PackRead::Missing`] or [`PackRead::Short`], not as a failure of the
    /// store (which stays an error, so an outage never passes for damage).
    pub(crate) fn read_pack(&self, id: &Id, offset: u32, length: u32) -> RusticResult<PackRead> {
        let key = self.key(FileType::Pack, id);
        let units = self.reads.acquire(u64::from(length), &self.cancel)?;
        let read = self
            .call(
                self.store
                    .get_range(&key, u64::from(offset), u64::from(length)),
            )
            .inspect_err(|_| self.reads.release(units))?;
        match read {
            Ok(data) => Ok(PackRead::Data(Bytes::from_owner(Budgeted {
                data,
                budget: self.reads.clone(),
                units,
            }))),
            Err(e) => {
                self.reads.release(units);
                match pack_damage(&e) {
                    Some(damage) => Ok(damage),
                    None => self.record(|| format!("reading {key}"), Err(e)),
                }
            }
        }
    }

    /// Runs one writing store call, refusing when canceled but letting a started one finish:
    /// an abandoned write could leave a partial object behind (a directory store's temp file).
    fn run_to_end<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> RusticResult<T> {
        if self.cancel.is_cancelled() {
            return Err(RusticError::new(ErrorKind::Backend, "operation canceled"));
        }
        self.record(what, self.handle.block_on(f))
    }

    fn record<T>(
        &self,
        what: impl FnOnce() -> String,
        result: Result<T, StorageError>,
    ) -> RusticResult<T> {
        result.map_err(|e| {
            let message = format!("{}: {e}", what());
            let mut first = self.first_error.lock().expect("not poisoned");
            if first.is_none() {
                *first = Some(e);
            }
            RusticError::new(ErrorKind::Backend, message)
        })
    }
}

/// What a restore's read of part of a pack gave.
pub(crate) enum PackRead {
    Data(Bytes),
    /// The store does not have the pack.
    Missing,
    /// The pack ends before the range does.
    Short,
}

/// The failures of a pack read that say the pack itself is damaged: gone, or cut short (a
/// directory store's read past the end, an S3 range clamped or refused with 416).
fn pack_damage(e: &StorageError) -> Option<PackRead> {
    match e {
        StorageError::NotFound { .. } => Some(PackRead::Missing),
        StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some(PackRead::Short)
        }
        StorageError::Service { status: 416, .. } => Some(PackRead::Short),
        _ => None,
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
        let units = self.reads.acquire(u64::from(length), &self.cancel)?;
        let data = self
            .run(
                || format!("reading {key}"),
                self.store
                    .get_range(&key, u64::from(offset), u64::from(length)),
            )
            .inspect_err(|_| self.reads.release(units))?;
        // The units come back when the engine drops the data.
        Ok(Bytes::from_owner(Budgeted {
            data,
            budget: self.reads.clone(),
            units,
        }))
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
        // A pack comes as its blobs: the store writes them in turn or joins them, dropping
        // each once copied, so the pack is not held twice.
        self.run_to_end(
            || format!("writing {key}"),
            self.store.put_parts(&key, content.into_vec()),
        )
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let key = self.key(tpe, id);
        self.run_to_end(|| format!("deleting {key}"), self.store.delete(&key))
    }
}

/// How many bytes of pack reads an operation may hold at once: 64 MiB, or
/// `STOWAGE_RESTIC_READ_BUDGET_MIB`.
///
/// rustic_core's restore read each run of a pack's blobs in one call on each of its 20
/// reader threads; with 32 MiB packs that reached 1.2 GiB. Restores now bound their own
/// reads (`restore.rs`: at most a few 4 MiB reads at once), so this only matters for what
/// still reads through rustic_core (trees, indexes), where it is a safety net.
fn read_budget() -> u64 {
    const DEFAULT_MIB: u64 = 64;
    static MIB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let mib = *MIB.get_or_init(|| {
        std::env::var("STOWAGE_RESTIC_READ_BUDGET_MIB")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&m| m > 0)
            .unwrap_or(DEFAULT_MIB)
    });
    mib << 20
}

/// A byte budget for the reads an operation holds: a read waits until its length (at most
/// the whole budget, so one oversized read still goes alone) is free.
#[derive(Debug)]
struct ReadBudget {
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

impl ReadBudget {
    /// After this long, a waiting read goes ahead anyway: a slow writer must not look like a
    /// hung restore.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn new(total: u64) -> Self {
        ReadBudget {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, len: u64, cancel: &CancelFlag) -> RusticResult<u64> {
        let units = len.min(self.total);
        let deadline = std::time::Instant::now() + Self::PATIENCE;
        let mut free = self.free.lock().expect("not poisoned");
        while *free < units {
            if cancel.is_cancelled() {
                return Err(RusticError::new(ErrorKind::Backend, "operation canceled"));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::debug!("pack read of {len} bytes goes over the read budget");
                return Ok(0);
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            free = self.freed.wait_timeout(free, wait).expect("not poisoned").0;
        }
        *free -= units;
        Ok(units)
    }

    fn release(&self, units: u64) {
        if units > 0 {
            *self.free.lock().expect("not poisoned") += units;
            self.freed.notify_all();
        }
    }
}

/// Read data that gives its budget back when dropped.
struct Budgeted {
    data: Bytes,
    budget: Arc<ReadBudget>,
    units: u64,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        self.budget.release(self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_budget_holds_reads_until_data_is_dropped() {
        let budget = Arc::new(ReadBudget::new(100));
        let cancel = CancelFlag::new();
        let a = budget.acquire(60, &cancel).unwrap();
        let held = Bytes::from_owner(Budgeted {
            data: Bytes::from_static(b"pack"),
            budget: budget.clone(),
            units: a,
        });
        // A read larger than the whole budget takes all of it, so it waits for the first.
        let waiter = std::thread::spawn({
            let (budget, cancel) = (budget.clone(), cancel.clone());
            move || budget.acquire(1_000, &cancel).unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "waits while 60 of 100 are held");
        let slice = held.slice(1..3);
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "a slice still holds the read");
        drop(slice);
        assert_eq!(waiter.join().unwrap(), 100);

        // A canceled operation stops waiting.
        cancel.cancel();
        assert!(budget.acquire(1, &cancel).is_err());
    }
}

//! [`Repo`]: the async face of the engine. Each operation opens the repository with the
//! master key found at open time (no key derivation per operation) on a backend of its own,
//! so cancelling one operation never disturbs another.

use crate::backend::{CancelFlag, StoreBackend};
use crate::crypto::DataKey;
use crate::error::EngineError;
use crate::lock::RepoLock;
use crate::progress::{ByteCounters, CountingBars, TICK};
use crate::source::Warnings;
use crate::writer::{IndexEvery, Writer};
use crate::{
    BackupRequest, BackupSummary, MaintenanceOptions, MaintenanceSummary, Progress, RepoConfig,
    RestoreSummary, SnapshotInfo,
};
use rustic_core::repofile::{MasterKey, SnapshotFile};
use rustic_core::{
    ConfigOptions, Credentials, FileType, KeyOptions, OpenStatus, ReadBackend, Repository,
    RepositoryBackends, RepositoryOptions, RusticError, SnapshotOptions, WriteBackend,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use stowage_storage::ObjectStore;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// An open restic repository. Cheap to clone; operations may run concurrently.
#[derive(Clone)]
pub struct Repo {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// `restic/<namespace>/`
    prefix: String,
    /// `<location>:restic/<namespace>`, for messages.
    name: String,
    key: MasterKey,
    data_key: DataKey,
    handle: Handle,
    /// Bytes of file contents the last backup read (for tests: an unchanged volume reads none).
    bytes_read: AtomicU64,
    /// When backups save index files of the packs they wrote so far.
    index_every: IndexEvery,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// The one rustic_core repository of an operation, with the things its errors are read with.
struct Session {
    repo: Repository<OpenStatus>,
    ctx: Ctx,
}

struct Ctx {
    backend: StoreBackend,
    cancel: CancelFlag,
}

impl Repo {
    /// Opens the repository, initialising it first when `restic/<ns>/config` does not exist.
    /// Returns whether it was created.
    pub async fn open_or_init(cfg: RepoConfig) -> Result<(Repo, bool), EngineError> {
        Self::open_inner(cfg, true).await
    }

    /// Opens an existing repository: [`EngineError::NotInitialised`] when there is none,
    /// [`EngineError::WrongPassword`] when the password opens none of its keys.
    pub async fn open(cfg: RepoConfig) -> Result<Repo, EngineError> {
        Ok(Self::open_inner(cfg, false).await?.0)
    }

    async fn open_inner(cfg: RepoConfig, init: bool) -> Result<(Repo, bool), EngineError> {
        crate::forward_log_to_tracing();
        crate::memory::limit_malloc_arenas();
        let prefix = format!("restic/{}/", cfg.namespace);
        let name = format!("\"{}:restic/{}\"", cfg.store.location(), cfg.namespace);
        if cfg.namespace.is_empty() || cfg.namespace.contains('/') {
            return Err(EngineError::Repository {
                repo: name,
                operation: "open",
                message: "a namespace name is needed (without '/')".into(),
            });
        }
        let exists = cfg
            .store
            .exists(&format!("{prefix}config"))
            .await
            .map_err(|source| EngineError::Storage {
                repo: name.clone(),
                source: Box::new(source),
            })?;
        if !exists && !init {
            return Err(EngineError::NotInitialised { repo: name });
        }
        let handle = Handle::current();
        let backend = StoreBackend::new(
            cfg.store.clone(),
            prefix.clone(),
            handle.clone(),
            CancelFlag::new(),
        );
        let password = cfg.password;
        let repo_name = name.clone();
        let key = tokio::task::spawn_blocking(move || {
            if exists {
                open_with_password(&backend, &password, &repo_name)
            } else {
                init_with_password(&backend, &password, &repo_name)
            }
        })
        .await
        .expect("opening does not panic")?;
        let inner = Inner {
            store: cfg.store,
            prefix,
            name,
            data_key: DataKey::new(&key),
            key,
            handle,
            bytes_read: AtomicU64::new(0),
            index_every: IndexEvery::default(),
        };
        Ok((
            Repo {
                inner: Arc::new(inner),
            },
            !exists,
        ))
    }

    /// Backs the directory `req.path` up; see the crate docs for paths and parents.
    pub async fn backup(
        &self,
        req: BackupRequest,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<BackupSummary, EngineError> {
        let source_err = |path: &Path, reason: String| EngineError::SourcePath {
            repo: self.inner.name.clone(),
            path: path.to_path_buf(),
            reason,
        };
        let path = tokio::fs::canonicalize(&req.path)
            .await
            .map_err(|e| source_err(&req.path, e.to_string()))?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| source_err(&req.path, e.to_string()))?;
        if !meta.is_dir() {
            return Err(source_err(&req.path, "not a directory".into()));
        }
        let inner = self.inner.clone();
        self.run("backup", progress, cancel, move |session| {
            inner.backup(session, &req, path)
        })
        .await
    }

    /// Restores snapshot `snapshot_id` (full or unique prefix) into the existing directory
    /// `target`: the contents of the snapshot's path land directly in `target`.
    pub async fn restore(
        &self,
        snapshot_id: &str,
        target: &Path,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RestoreSummary, EngineError> {
        self.restore_paths(snapshot_id, target, &[], Path::new(""), progress, cancel).await
    }

    /// Like [`Repository::restore`], only the paths given (relative to the snapshot's root:
    /// files, or directories with everything beneath them) and the directories leading to
    /// them, into directory `into` beneath `target` (created, never through a symlink; empty
    /// for `target` itself). A path the snapshot does not hold is an error naming it.
    pub async fn restore_paths(
        &self,
        snapshot_id: &str,
        target: &Path,
        include: &[PathBuf],
        into: &Path,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RestoreSummary, EngineError> {
        let target_err = |reason: String| EngineError::Target {
            repo: self.inner.name.clone(),
            path: target.to_path_buf(),
            reason,
        };
        let meta = tokio::fs::metadata(target)
            .await
            .map_err(|e| target_err(e.to_string()))?;
        if !meta.is_dir() {
            return Err(target_err("not a directory".into()));
        }
        let include = crate::listing::relative_paths(&self.inner.name, snapshot_id, include)?;
        let into = match into.as_os_str().is_empty() {
            true => PathBuf::new(),
            false => crate::listing::relative_paths(&self.inner.name, snapshot_id, &[into.to_path_buf()])?.remove(0),
        };
        if !include.is_empty() {
            let listed = self.list(snapshot_id, Path::new(""), true).await?;
            for inc in &include {
                if !listed.iter().any(|e| Path::new(&e.path) == inc.as_path()) {
                    return Err(EngineError::Snapshot {
                        repo: self.inner.name.clone(),
                        id: snapshot_id.to_string(),
                        reason: format!("holds no {:?}; list it with `stowage backup browse`", format!("/{}", inc.display())),
                    });
                }
            }
        }
        let inner = self.inner.clone();
        let (id, target) = (snapshot_id.to_string(), target.to_path_buf());
        self.run("restore", progress, cancel, move |session| {
            inner.restore(session, &id, &target, &include, &into)
        })
        .await
    }

    /// The entries of snapshot `snapshot_id` under `path` (relative to its root; "" for all):
    /// the directory's children, or with `recursive` everything beneath it.
    pub async fn list(&self, snapshot_id: &str, path: &Path, recursive: bool) -> Result<Vec<crate::listing::Entry>, EngineError> {
        let inner = self.inner.clone();
        let (id, path) = (snapshot_id.to_string(), path.to_path_buf());
        self.run("listing", no_progress(), CancellationToken::new(), move |session| {
            inner.list(session, &id, &path, recursive)
        })
        .await
    }

    /// Removes the given snapshots (full ids or unique prefixes); ids not in the repository
    /// are skipped. Returns how many were removed. Data stays until a prune.
    pub async fn forget(&self, snapshot_ids: &[String]) -> Result<usize, EngineError> {
        let inner = self.inner.clone();
        let ids = snapshot_ids.to_vec();
        self.run(
            "forget",
            no_progress(),
            CancellationToken::new(),
            move |session| inner.forget(session, &ids),
        )
        .await
    }

    /// The snapshots carrying all `tags`, oldest first.
    pub async fn snapshots(&self, tags: &[String]) -> Result<Vec<SnapshotInfo>, EngineError> {
        let inner = self.inner.clone();
        let tags = tags.to_vec();
        self.run(
            "listing snapshots",
            no_progress(),
            CancellationToken::new(),
            move |s| {
                let mut snaps = inner.matching(&s, &tags)?;
                snaps.sort_by(|a, b| a.time.cmp(&b.time));
                Ok(snaps.iter().map(snapshot_info).collect())
            },
        )
        .await
    }

    /// Removes stale locks, takes an exclusive lock (refusing with [`EngineError::Busy`] while
    /// a backup, restore or forget holds a fresh lock, or [`EngineError::Locked`] while a
    /// user's `restic prune`/`check` does) and prunes: packs no snapshot uses are deleted,
    /// partly used ones repacked until at most `max_unused_percent` of the repository is
    /// unused, and the index rewritten, as `restic prune` does (the `maintain` module has the
    /// details).
    pub async fn maintain(
        &self,
        opts: MaintenanceOptions,
    ) -> Result<MaintenanceSummary, EngineError> {
        let limit = crate::maintain::max_unused(opts.max_unused_percent).map_err(|message| {
            EngineError::Repository {
                repo: self.inner.name.clone(),
                operation: "maintenance",
                message,
            }
        })?;
        let inner = self.inner.clone();
        self.run_locked(
            "maintenance",
            no_progress(),
            CancellationToken::new(),
            LockMode::Exclusive {
                remove_stale: !opts.dry_run,
            },
            move |session, stale_locks| {
                let err = |e| inner.err(&session.ctx, "maintenance", e);
                crate::maintain::Maintenance {
                    repo: &session.repo,
                    store: &*inner.store,
                    prefix: &inner.prefix,
                    handle: &inner.handle,
                    name: &inner.name,
                    err: &err,
                }
                .run(limit, opts.dry_run, stale_locks)
            },
        )
        .await
    }

    /// Bytes of all the repository's files, as the store lists them.
    pub async fn size(&self) -> Result<u64, EngineError> {
        let objects = self
            .inner
            .store
            .list(&self.inner.prefix)
            .await
            .map_err(|source| EngineError::Storage {
                repo: self.inner.name.clone(),
                source: Box::new(source),
            })?;
        Ok(objects.iter().map(|o| o.size).sum())
    }

    /// Runs `work` on the blocking pool with a session of its own, under a non-exclusive
    /// repository lock, reporting progress every tick and turning cancellation (or this
    /// future being dropped, e.g. by a timeout) into the session's backend refusing further
    /// calls.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        progress: ProgressFn,
        cancel: CancellationToken,
        work: impl FnOnce(Session) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        self.run_locked(operation, progress, cancel, LockMode::Shared, |s, _| {
            work(s)
        })
        .await
    }

    /// [`Repo::run`] under the lock `mode` says; `work` also gets how many stale locks taking
    /// it removed (always 0 for a shared lock).
    async fn run_locked<T: Send + 'static>(
        &self,
        operation: &'static str,
        progress: ProgressFn,
        cancel: CancellationToken,
        mode: LockMode,
        work: impl FnOnce(Session, usize) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let counters = Arc::new(ByteCounters::default());
        let guard = OperationGuard::start(&cancel, counters.clone(), progress.clone());
        let flag = guard.flag.clone();
        let inner = self.inner.clone();
        let bars = CountingBars(counters.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let session = inner.session(flag, bars, operation)?;
            let (store, prefix, key, handle) = (
                inner.store.clone(),
                &inner.prefix,
                &inner.data_key,
                inner.handle.clone(),
            );
            let (_lock, stale_locks) = match mode {
                LockMode::Shared => (
                    RepoLock::acquire(store, prefix, key, handle, &inner.name)?,
                    0,
                ),
                LockMode::Exclusive { remove_stale } => {
                    let taken = RepoLock::acquire_exclusive(
                        store,
                        prefix,
                        key,
                        handle,
                        &inner.name,
                        remove_stale,
                    )?;
                    (taken.lock, taken.stale_locks)
                }
            };
            work(session, stale_locks)
        })
        .await;
        let canceled = guard.flag.is_cancelled();
        drop(guard);
        let result = match joined {
            Ok(result) => result,
            // rustic_core unwraps some backend errors in its worker threads.
            Err(e) if e.is_panic() && canceled => Err(self.canceled(operation)),
            Err(e) => Err(EngineError::Repository {
                repo: self.inner.name.clone(),
                operation,
                message: format!("engine failure: {e}"),
            }),
        };
        match result {
            Err(_) if canceled => Err(self.canceled(operation)),
            Ok(value) => {
                progress(counters.snapshot());
                Ok(value)
            }
            Err(e) => Err(e),
        }
    }

    fn canceled(&self, operation: &'static str) -> EngineError {
        EngineError::Canceled {
            repo: self.inner.name.clone(),
            operation,
        }
    }
}

/// The lock an operation holds.
enum LockMode {
    /// Non-exclusive, as `restic backup` takes: every operation but maintenance.
    Shared,
    /// Exclusive, as `restic prune` takes, after removing stale locks (or only counting them).
    Exclusive { remove_stale: bool },
}

fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

#[cfg(test)]
impl Repo {
    /// Runs `work` with an operation's rustic_core repository, under the operation's lock:
    /// for tests that write what Stowage never writes.
    pub(crate) async fn with_rustic<T: Send + 'static>(
        &self,
        work: impl FnOnce(Repository<OpenStatus>) -> T + Send + 'static,
    ) -> T {
        self.run("test", no_progress(), CancellationToken::new(), move |s| Ok(work(s.repo)))
            .await
            .expect("the repository opens")
    }
}

/// The session's cancel flag, a child of the caller's token (so canceling the token sets it
/// at once), and the progress ticker; dropping the guard (the operation ended, or its future
/// was dropped) stops the ticker and cancels the session.
struct OperationGuard {
    flag: CancelFlag,
    ticker: tokio::task::JoinHandle<()>,
}

impl OperationGuard {
    fn start(
        cancel: &CancellationToken,
        counters: Arc<ByteCounters>,
        progress: ProgressFn,
    ) -> Self {
        let flag = cancel.child_token();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.tick().await;
            loop {
                interval.tick().await;
                progress(counters.snapshot());
            }
        });
        OperationGuard { flag, ticker }
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.flag.cancel();
        self.ticker.abort();
    }
}

/// The config of new repositories: rustic_core's defaults but data packs of 8 MiB (rustic_core
/// starts at 32 MiB, restic uses 16 MiB), growing with the repository as rustic_core does (by
/// 1 MiB per square root of its size in GiB) up to 16 MiB, where rustic_core lets them grow
/// without limit. A backup holds a few packs at once (the one filling, one or two queued for
/// hashing, the one being written), so the pack size is most of its memory: first backups of
/// 2 GiB in 20,000 files peaked at 56 MiB with 8 MiB packs, 67–86 MiB with 16 MiB ones, and
/// packs of a 1 TiB repository would have grown to 48 MiB. restic reads packs of any size and
/// ignores these fields; repositories made by restic or earlier keep their pack sizes.
fn config_options() -> ConfigOptions {
    ConfigOptions::default()
        .set_datapack_size(Some(bytesize::ByteSize::mib(8)))
        .set_datapack_size_limit(Some(bytesize::ByteSize::mib(16)))
}

fn repo_options() -> RepositoryOptions {
    // No local cache: node agents are ephemeral and share nothing between nodes.
    RepositoryOptions::default().no_cache(true)
}

fn backends(backend: &StoreBackend) -> RepositoryBackends {
    RepositoryBackends::new(Arc::new(backend.clone()), None)
}

/// Opens an existing repository with the key file `password` opens (cheapest first: see
/// [`crate::keys`]), replacing an expensive key it opened with a cheap one.
fn open_with_password(
    backend: &StoreBackend,
    password: &str,
    repo_name: &str,
) -> Result<MasterKey, EngineError> {
    let err = |e: Box<RusticError>| engine_error(repo_name, "open", backend, None, &e);
    let keys = crate::keys::key_files(backend).map_err(err)?;
    let found = crate::keys::find_master_key(&keys, password, |master| {
        let opened = Repository::new(&repo_options(), &backends(backend))
            .and_then(|r| r.open(&Credentials::Masterkey(master.clone())));
        match opened {
            Ok(_) => Ok(Some(())),
            // A storage failure is not a wrong key.
            Err(e) if backend.has_storage_error() => Err(err(e)),
            Err(e) => {
                tracing::debug!(
                    "a key's master key does not open the config: {}",
                    e.display_log()
                );
                Ok(None)
            }
        }
    })?;
    let Some((opened, ())) = found else {
        return Err(EngineError::WrongPassword {
            repo: repo_name.to_string(),
        });
    };
    if crate::keys::is_expensive(&opened.file) {
        crate::keys::replace_expensive_key(backend, &opened, password, repo_name);
    }
    Ok(opened.master)
}

/// Initialises a repository: first a cheap key file for a new master key (see
/// [`crate::keys`]), then the config, encrypted with that master key. A crash in between
/// leaves a key file but no config; the next initialisation writes another key and a config,
/// and opening skips keys whose master key does not open the config.
fn init_with_password(
    backend: &StoreBackend,
    password: &str,
    repo_name: &str,
) -> Result<MasterKey, EngineError> {
    tracing::info!("initialising restic repository {repo_name}");
    let err = |e: Box<RusticError>| engine_error(repo_name, "init", backend, None, &e);
    let master = MasterKey::new();
    let (id, bytes) = crate::keys::new_key_file(&master, password);
    let id: rustic_core::Id = id.parse().map_err(err)?;
    backend
        .write_bytes(FileType::Key, &id, false, bytes.into())
        .map_err(err)?;
    Repository::new(&repo_options(), &backends(backend))
        .and_then(|r| {
            r.init(
                &Credentials::Masterkey(master.clone()),
                &KeyOptions::default(),
                &config_options(),
            )
        })
        .map_err(err)?;
    Ok(master)
}

/// Reads a rustic_core error: cancellation first, then the storage failure behind it, then
/// the engine's own message.
fn engine_error(
    repo: &str,
    operation: &'static str,
    backend: &StoreBackend,
    cancel: Option<&CancelFlag>,
    e: &RusticError,
) -> EngineError {
    if cancel.is_some_and(CancelFlag::is_cancelled) {
        return EngineError::Canceled {
            repo: repo.to_string(),
            operation,
        };
    }
    if let Some(source) = backend.take_storage_error() {
        return EngineError::Storage {
            repo: repo.to_string(),
            source: Box::new(source),
        };
    }
    EngineError::Repository {
        repo: repo.to_string(),
        operation,
        message: e.display_log(),
    }
}

impl Inner {
    fn session(
        &self,
        cancel: CancelFlag,
        bars: CountingBars,
        operation: &'static str,
    ) -> Result<Session, EngineError> {
        let backend = StoreBackend::new(
            self.store.clone(),
            self.prefix.clone(),
            self.handle.clone(),
            cancel.clone(),
        );
        let repo = Repository::new_with_progress(&repo_options(), &backends(&backend), bars)
            .and_then(|r| r.open(&Credentials::Masterkey(self.key.clone())))
            .map_err(|e| engine_error(&self.name, operation, &backend, Some(&cancel), &e))?;
        Ok(Session {
            repo,
            ctx: Ctx { backend, cancel },
        })
    }

    fn err(&self, ctx: &Ctx, operation: &'static str, e: Box<RusticError>) -> EngineError {
        engine_error(&self.name, operation, &ctx.backend, Some(&ctx.cancel), &e)
    }

    fn matching(&self, s: &Session, tags: &[String]) -> Result<Vec<SnapshotFile>, EngineError> {
        s.repo
            .get_matching_snapshots(|snap| tags.iter().all(|t| snap.tags.contains(t)))
            .map_err(|e| self.err(&s.ctx, "listing snapshots", e))
    }

    /// The full id of the snapshot `id` names (full, or a unique prefix); `None` if none.
    fn resolve(&self, s: &Session, id: &str) -> Result<Option<String>, EngineError> {
        let wanted = id.trim().to_ascii_lowercase();
        let snapshot_err = |reason: String| EngineError::Snapshot {
            repo: self.name.clone(),
            id: id.to_string(),
            reason,
        };
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(snapshot_err("is not a snapshot id (hex digits)".into()));
        }
        let ids = s
            .ctx
            .backend
            .list(FileType::Snapshot)
            .map_err(|e| self.err(&s.ctx, "listing snapshots", e))?;
        let mut found = ids
            .into_iter()
            .map(|i| i.to_hex().to_string())
            .filter(|hex| hex.starts_with(&wanted));
        match (found.next(), found.next()) {
            (None, _) => Ok(None),
            (Some(full), None) => Ok(Some(full)),
            (Some(_), Some(_)) => Err(snapshot_err(
                "matches several snapshots; give more digits".into(),
            )),
        }
    }

    fn backup(
        &self,
        s: Session,
        req: &BackupRequest,
        path: PathBuf,
    ) -> Result<BackupSummary, EngineError> {
        let err = |ctx: &Ctx, e| self.err(ctx, "backup", e);
        let parent = if req.parent_tags.is_empty() {
            None
        } else {
            self.matching(&s, &req.parent_tags)?
                .into_iter()
                .max_by(|a, b| a.time.cmp(&b.time))
        };
        let mut snap = SnapshotOptions::default()
            .host(req.hostname.clone())
            .to_snapshot()
            .map_err(|e| err(&s.ctx, e))?;
        for tag in &req.tags {
            snap.tags.add(tag.clone());
        }
        let warnings = Warnings::default();
        let as_path = snapshot_path(&req.parent_tags, &path);
        let err = |e| self.err(&s.ctx, "backup", e);
        let written = Writer {
            backend: &s.ctx.backend,
            config: s.repo.config(),
            key: &self.data_key,
            cancel: &s.ctx.cancel,
            index_every: self.index_every,
            progress: s.repo.progress_bytes("backing up..."),
            warnings: warnings.clone(),
            name: &self.name,
            err: &err,
        }
        .run(&path, &as_path, snap, parent.as_ref())?;
        self.bytes_read.store(written.bytes_read, Ordering::Relaxed);
        let summary = written.summary;
        let warnings = std::mem::take(&mut *warnings.lock().expect("not poisoned"));
        Ok(BackupSummary {
            snapshot_id: written.snapshot_id,
            parent: parent.map(|p| p.id.to_hex().to_string()),
            total_bytes: summary.total_bytes_processed,
            data_added: summary.data_added_packed,
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            warnings,
        })
    }

    /// The snapshot's indexed repository and the directory node of its one path.
    fn snapshot_root(
        &self,
        s: Session,
        id: &str,
        operation: &'static str,
    ) -> Result<(rustic_core::Repository<rustic_core::IndexedFullStatus>, rustic_core::repofile::Node, Ctx), EngineError> {
        let err = |ctx: &Ctx, e| self.err(ctx, operation, e);
        let snapshot_err = |reason: String| EngineError::Snapshot {
            repo: self.name.clone(),
            id: id.to_string(),
            reason,
        };
        let full = self
            .resolve(&s, id)?
            .ok_or_else(|| snapshot_err("not found".into()))?;
        let snap = s
            .repo
            .get_snapshots(&[full])
            .map_err(|e| err(&s.ctx, e))?
            .pop()
            .ok_or_else(|| snapshot_err("not found".into()))?;
        let paths: Vec<&String> = snap.paths.iter().collect();
        let [path] = paths[..] else {
            return Err(snapshot_err(format!(
                "has {} paths ({}); only a single-directory snapshot restores into a volume",
                paths.len(),
                snap.paths
            )));
        };
        let repo = s.repo.to_indexed().map_err(|e| err(&s.ctx, e))?;
        let node = repo
            .node_from_snapshot_and_path(&snap, path)
            .map_err(|e| err(&s.ctx, e))?;
        if !node.is_dir() {
            return Err(snapshot_err(format!("path {path} is not a directory")));
        }
        Ok((repo, node, s.ctx))
    }

    fn list(&self, s: Session, id: &str, path: &Path, recursive: bool) -> Result<Vec<crate::listing::Entry>, EngineError> {
        let (repo, root, ctx) = self.snapshot_root(s, id, "listing")?;
        crate::listing::list(&repo, &root, path, recursive).map_err(|e| match e {
            crate::listing::ListError::Rustic(e) => self.err(&ctx, "listing", e),
            crate::listing::ListError::NotFound => EngineError::Snapshot {
                repo: self.name.clone(),
                id: id.to_string(),
                reason: format!("holds no {:?}", format!("/{}", path.display())),
            },
        })
    }

    fn restore(&self, s: Session, id: &str, target: &Path, include: &[PathBuf], into: &Path) -> Result<RestoreSummary, EngineError> {
        let (repo, node, ctx) = self.snapshot_root(s, id, "restore")?;
        let err = |e| self.err(&ctx, "restore", e);
        let restored = crate::restore::Restore {
            repo: &repo,
            backend: &ctx.backend,
            key: &self.data_key,
            cancel: &ctx.cancel,
            name: &self.name,
            err: &err,
            include,
            into,
        }
        .run(&node, target)?;
        Ok(RestoreSummary {
            files: restored.files,
            bytes: restored.bytes,
            damaged: restored.damaged,
        })
    }

    fn forget(&self, s: Session, ids: &[String]) -> Result<usize, EngineError> {
        let mut full = Vec::new();
        for id in ids {
            if let Some(f) = self.resolve(&s, id)? {
                full.push(f);
            }
        }
        full.sort();
        full.dedup();
        if full.is_empty() {
            return Ok(0);
        }
        let parsed = full
            .iter()
            .map(|f| f.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(&s.ctx, "forget", e))?;
        s.repo
            .delete_snapshots(&parsed)
            .map_err(|e| self.err(&s.ctx, "forget", e))?;
        Ok(full.len())
    }
}

#[cfg(test)]
impl Repo {
    /// This repository with backups saving index files as `every` says (tests make it small).
    pub(crate) fn with_index_every(mut self, every: IndexEvery) -> Repo {
        Arc::get_mut(&mut self.inner).expect("not cloned yet").index_every = every;
        self
    }
}

/// The path the volume's contents are stored under: one directory level per parent tag
/// (`/pvc-uid=1234`), stable across pods, or the volume's own path without parent tags.
fn snapshot_path(parent_tags: &[String], volume: &Path) -> PathBuf {
    if parent_tags.is_empty() {
        return volume.to_path_buf();
    }
    let mut path = PathBuf::from("/");
    for tag in parent_tags {
        let part: String = tag
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        path.push(match part.as_str() {
            "" | "." | ".." => "_",
            p => p,
        });
    }
    path
}

fn snapshot_info(snap: &SnapshotFile) -> SnapshotInfo {
    SnapshotInfo {
        id: snap.id.to_hex().to_string(),
        time: std::time::SystemTime::from(snap.time.timestamp()),
        tags: snap.tags.iter().cloned().collect(),
        paths: snap.paths.iter().cloned().collect(),
        parent: snap.parent.map(|p| p.to_hex().to_string()),
        hostname: snap.hostname.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_paths_come_from_the_parent_tags() {
        let vol = Path::new("/var/lib/kubelet/pods/uid/volumes/x/data");
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(snapshot_path(&[], vol), vol);
        assert_eq!(
            snapshot_path(&tags(&["pvc-uid=abc"]), vol),
            Path::new("/pvc-uid=abc")
        );
        assert_eq!(
            snapshot_path(&tags(&["pod-uid=p", "volume=a/b", ".."]), vol),
            Path::new("/pod-uid=p/volume=a_b/_")
        );
    }

    use stowage_test_support::noise;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unchanged_re_backup_reads_no_file_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = stowage_storage::FsStore::new("test", dir.path().join("store"));
        store.create_root().await.unwrap();
        let cfg = RepoConfig {
            store: Arc::new(store),
            namespace: "ns".into(),
            password: "pw".into(),
        };
        let (repo, _) = Repo::open_or_init(cfg).await.unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("d")).unwrap();
        std::fs::write(vol.join("large"), noise(20 << 20, 1)).unwrap();
        std::fs::write(vol.join("d/small"), noise(100 << 10, 2)).unwrap();
        let req = BackupRequest {
            path: vol.clone(),
            tags: vec!["pvc-uid=u".into()],
            parent_tags: vec!["pvc-uid=u".into()],
            hostname: "h".into(),
        };
        let read = || repo.inner.bytes_read.load(Ordering::Relaxed);
        let backup = || repo.backup(req.clone(), no_progress(), CancellationToken::new());
        let first = backup().await.unwrap();
        assert_eq!(read(), (20 << 20) + (100 << 10));
        let second = backup().await.unwrap();
        assert_eq!(read(), 0, "nothing read: {second:?}");
        assert_eq!(second.parent.as_deref(), Some(first.snapshot_id.as_str()));
        assert_eq!(second.files_unmodified, 2, "{second:?}");
        assert_eq!(second.data_added, 0, "{second:?}");
        // A changed mtime makes the file read again (and only that one).
        let f = std::fs::File::options().write(true).open(vol.join("d/small")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let third = backup().await.unwrap();
        assert_eq!(read(), 100 << 10, "{third:?}");
        assert_eq!(third.files_changed, 1, "{third:?}");
    }
}

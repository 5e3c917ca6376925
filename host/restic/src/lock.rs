//! restic-compatible repository locks (see the crate docs for why).
//!
//! A lock is `locks/<sha256 of the stored bytes>` holding restic's lock JSON, encrypted with
//! the repository key. restic treats a lock as stale when it is older than 30 minutes, or
//! when it was made on the same host by a process that no longer exists; it refreshes its own
//! locks every 5 minutes. We do the same, so:
//!
//! - a `restic prune`/`forget`/`check` started by a user while we write waits for us (its
//!   exclusive lock is refused while ours is fresh) instead of deleting packs we just wrote;
//! - we refuse to start while someone holds a fresh exclusive lock;
//! - locks left by a crashed agent go stale after 30 minutes, and never block backups:
//!   backups, restores and forgets only ever take non-exclusive locks, which never conflict
//!   with each other.
//!
//! Maintenance ([`RepoLock::acquire_exclusive`]) is the one exception: it removes stale locks,
//! refuses while any fresh lock exists, and takes an **exclusive** lock, as `restic prune`
//! does; like restic it looks again after writing its lock and backs off when another lock
//! appeared meanwhile (the other side, seeing our exclusive lock, backs off too).

use crate::crypto::{hex, DataKey};
use crate::error::EngineError;
use bytes::Bytes;
use rustic_core::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stowage_storage::ObjectStore;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

const STALE_AFTER: SignedDuration = SignedDuration::from_mins(30);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// restic's lock file, field for field.
#[derive(Debug, Serialize, Deserialize)]
struct LockFile {
    time: String,
    exclusive: bool,
    hostname: String,
    #[serde(default)]
    username: String,
    pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    gid: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LockFile {
    fn ours(exclusive: bool) -> Self {
        use std::os::unix::fs::MetadataExt;
        let (uid, gid) = std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()));
        LockFile {
            time: Timestamp::now().to_string(),
            exclusive,
            hostname: hostname(),
            username: std::env::var("USER").unwrap_or_default(),
            pid: i64::from(std::process::id()),
            uid,
            gid,
        }
    }

    fn is_stale(&self, now: Timestamp) -> bool {
        let Ok(time) = self.time.parse::<Timestamp>() else {
            return true;
        };
        if now.duration_since(time) > STALE_AFTER {
            return true;
        }
        self.hostname == hostname()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Who holds it, for messages.
    fn holder(&self) -> String {
        format!(
            "{} lock created {} by {}@{} pid {}",
            if self.exclusive { "an exclusive" } else { "a" },
            self.time,
            self.username,
            self.hostname,
            self.pid
        )
    }
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// JSON as restic stores it: plain, or (repository version 2) a `0x02` byte and zstd.
fn decode_json(plain: &[u8]) -> Option<LockFile> {
    match plain.first()? {
        2 => serde_json::from_slice(&zstd::decode_all(&plain[1..]).ok()?).ok(),
        _ => serde_json::from_slice(plain).ok(),
    }
}

/// Holds a lock while alive: refreshes it in the background and removes it on drop, whether
/// the operation succeeded, failed, panicked or was canceled. Must be dropped on a thread
/// that may block (the operation's blocking thread).
pub(crate) struct RepoLock {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    key: Arc<Mutex<String>>,
    refresher: JoinHandle<()>,
}

/// What [`RepoLock::acquire_exclusive`] did besides taking the lock.
pub(crate) struct Exclusive {
    pub(crate) lock: RepoLock,
    /// Stale locks removed (or, without removal, found).
    pub(crate) stale_locks: usize,
}

impl RepoLock {
    /// Takes a non-exclusive lock under `prefix` (`restic/<ns>/`), refusing while anyone
    /// holds a fresh exclusive one.
    pub(crate) fn acquire(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        data_key: &DataKey,
        handle: Handle,
        repo: &str,
    ) -> Result<Self, EngineError> {
        let dir = format!("{prefix}locks/");
        handle.block_on(refuse_exclusive(&*store, &dir, data_key, None, repo))?;
        let key = handle
            .block_on(write_lock(&*store, &dir, data_key, false))
            .map_err(|e| storage(repo, e))?;
        // Someone may have locked exclusively between our look and our write.
        if let Err(e) = handle.block_on(refuse_exclusive(&*store, &dir, data_key, Some(&key), repo))
        {
            let _ = handle.block_on(store.delete(&key));
            return Err(e);
        }
        Ok(Self::hold(store, dir, data_key, handle, key, false))
    }

    /// Takes an exclusive lock under `prefix`, for maintenance: first removes stale locks
    /// (only counts them when `remove_stale` is false), then refuses with
    /// [`EngineError::Busy`] while any other fresh lock exists ([`EngineError::Locked`] when
    /// it is exclusive), writes its lock, and looks again: a lock that appeared meanwhile
    /// makes it remove its own and refuse the same way.
    pub(crate) fn acquire_exclusive(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        data_key: &DataKey,
        handle: Handle,
        repo: &str,
        remove_stale: bool,
    ) -> Result<Exclusive, EngineError> {
        let dir = format!("{prefix}locks/");
        let now = Timestamp::now();
        let locks = handle.block_on(read_locks(&*store, &dir, data_key, None, repo))?;
        // Refuse before touching anything.
        if let Some((_, lock)) = locks.iter().find(|(_, lock)| !lock.is_stale(now)) {
            return Err(in_use(repo, lock));
        }
        let mut stale_locks = 0;
        for (key, lock) in locks {
            if remove_stale {
                tracing::info!("removing stale lock {key} ({})", lock.holder());
                match handle.block_on(store.delete(&key)) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(storage(repo, e)),
                }
            }
            stale_locks += 1;
        }
        let key = handle
            .block_on(write_lock(&*store, &dir, data_key, true))
            .map_err(|e| storage(repo, e))?;
        // Someone may have locked between our look and our write.
        let again = handle.block_on(read_locks(&*store, &dir, data_key, Some(&key), repo));
        let now = Timestamp::now();
        let refused = match again {
            Err(e) => Some(e),
            Ok(locks) => locks
                .iter()
                .find(|(_, lock)| !lock.is_stale(now))
                .map(|(_, lock)| in_use(repo, lock)),
        };
        if let Some(e) = refused {
            let _ = handle.block_on(store.delete(&key));
            return Err(e);
        }
        Ok(Exclusive {
            lock: Self::hold(store, dir, data_key, handle, key, true),
            stale_locks,
        })
    }

    fn hold(
        store: Arc<dyn ObjectStore>,
        dir: String,
        data_key: &DataKey,
        handle: Handle,
        key: String,
        exclusive: bool,
    ) -> Self {
        let key = Arc::new(Mutex::new(key));
        let refresher = handle.spawn(refresh(
            store.clone(),
            dir,
            data_key.clone(),
            key.clone(),
            exclusive,
        ));
        RepoLock {
            store,
            handle,
            key,
            refresher,
        }
    }
}

fn storage(repo: &str, source: stowage_storage::StorageError) -> EngineError {
    EngineError::Storage {
        repo: repo.to_string(),
        source: Box::new(source),
    }
}

/// The error for a fresh lock that keeps maintenance out.
fn in_use(repo: &str, lock: &LockFile) -> EngineError {
    if lock.exclusive {
        EngineError::Locked {
            repo: repo.to_string(),
            holder: format!(
                "{}@{} (pid {}) since {}",
                lock.username, lock.hostname, lock.pid, lock.time
            ),
        }
    } else {
        EngineError::Busy {
            repo: repo.to_string(),
            holder: lock.holder(),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.refresher.abort();
        let key = self.key.lock().expect("not poisoned").clone();
        if let Err(e) = self.handle.block_on(self.store.delete(&key)) {
            tracing::warn!(
                "removing repository lock {key}: {e}; restic treats it as stale after 30 minutes"
            );
        }
    }
}

async fn write_lock(
    store: &dyn ObjectStore,
    dir: &str,
    data_key: &DataKey,
    exclusive: bool,
) -> stowage_storage::Result<String> {
    let json = serde_json::to_vec(&LockFile::ours(exclusive)).expect("lock JSON serialises");
    let data = data_key.encrypt(&json);
    let id = Sha256::digest(&data);
    let key = format!("{dir}{}", hex(&id));
    store.put(&key, Bytes::from(data)).await?;
    Ok(key)
}

async fn refuse_exclusive(
    store: &dyn ObjectStore,
    dir: &str,
    data_key: &DataKey,
    ours: Option<&str>,
    repo: &str,
) -> Result<(), EngineError> {
    let now = Timestamp::now();
    let locks = read_locks(store, dir, data_key, ours, repo).await?;
    match locks
        .iter()
        .find(|(_, lock)| lock.exclusive && !lock.is_stale(now))
    {
        Some((_, lock)) => Err(in_use(repo, lock)),
        None => Ok(()),
    }
}

/// The readable locks under `dir` but `ours`, with their keys. Unreadable ones (a lock
/// restic created but has not written yet, or garbage) are skipped, as restic does.
async fn read_locks(
    store: &dyn ObjectStore,
    dir: &str,
    data_key: &DataKey,
    ours: Option<&str>,
    repo: &str,
) -> Result<Vec<(String, LockFile)>, EngineError> {
    let mut locks = Vec::new();
    for object in store.list(dir).await.map_err(|e| storage(repo, e))? {
        if Some(object.key.as_str()) == ours {
            continue;
        }
        let data = match store.get(&object.key).await {
            Ok(data) => data,
            Err(e) if e.is_not_found() => continue, // removed meanwhile
            Err(e) => return Err(storage(repo, e)),
        };
        let Some(lock) = data_key
            .decrypt(&data)
            .and_then(|plain| decode_json(&plain))
        else {
            tracing::debug!("ignoring unreadable lock {}", object.key);
            continue;
        };
        locks.push((object.key, lock));
    }
    Ok(locks)
}

/// Replaces the lock with a fresh one every few minutes, as restic does, so that long
/// operations never look stale.
async fn refresh(
    store: Arc<dyn ObjectStore>,
    dir: String,
    data_key: DataKey,
    current: Arc<Mutex<String>>,
    exclusive: bool,
) {
    let mut interval = tokio::time::interval(REFRESH_EVERY);
    interval.tick().await; // the first tick is immediate
    loop {
        interval.tick().await;
        match write_lock(&*store, &dir, &data_key, exclusive).await {
            Ok(new) => {
                let old = std::mem::replace(&mut *current.lock().expect("not poisoned"), new);
                if let Err(e) = store.delete(&old).await {
                    tracing::warn!("removing replaced repository lock {old}: {e}");
                }
            }
            Err(e) => tracing::warn!("refreshing repository lock: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::from_bytes(&[7u8; 64])
    }

    #[test]
    fn lock_files_round_trip_through_encryption() {
        let k = key();
        let json = serde_json::to_vec(&LockFile::ours(false)).unwrap();
        let sealed = k.encrypt(&json);
        assert_ne!(&sealed[16..16 + json.len()], &json[..]);
        let lock = decode_json(&k.decrypt(&sealed).unwrap()).unwrap();
        assert!(!lock.exclusive);
        assert_eq!(lock.pid, i64::from(std::process::id()));
        assert!(!lock.is_stale(Timestamp::now()), "our own fresh lock");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.decrypt(&tampered).is_none());
    }

    #[test]
    fn old_locks_and_locks_of_dead_local_processes_are_stale() {
        let mut lock = LockFile::ours(false);
        let later = Timestamp::now() + SignedDuration::from_mins(31);
        assert!(lock.is_stale(later));
        lock.pid = i64::from(u32::MAX); // no such process
        assert!(lock.is_stale(Timestamp::now()));
        lock.hostname = "another-node".into();
        assert!(
            !lock.is_stale(Timestamp::now()),
            "cannot tell for another host"
        );
        // restic's own format, compressed (repository version 2).
        let json = br#"{"time":"2020-01-01T10:00:00.5+01:00","exclusive":true,"hostname":"h","username":"u","pid":1}"#;
        let mut v2 = vec![2u8];
        v2.extend(zstd::encode_all(&json[..], 3).unwrap());
        let lock = decode_json(&v2).unwrap();
        assert!(lock.exclusive && lock.is_stale(Timestamp::now()));
    }

    /// Writes `lock` as restic would, returning its key.
    async fn put_lock(store: &dyn ObjectStore, k: &DataKey, lock: &LockFile) -> String {
        let data = k.encrypt(&serde_json::to_vec(lock).unwrap());
        let key = format!("restic/ns/locks/{}", hex(&Sha256::digest(&data)));
        store.put(&key, Bytes::from(data)).await.unwrap();
        key
    }

    async fn lock_keys(store: &dyn ObjectStore) -> Vec<String> {
        let listed = store.list("restic/ns/locks/").await.unwrap();
        listed.into_iter().map(|o| o.key).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn maintenance_removes_stale_locks_and_refuses_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fs = stowage_storage::FsStore::new("test", dir.path().join("store"));
        fs.create_root().await.unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(fs);
        let k = key();
        let mut old = LockFile::ours(false);
        old.time = (Timestamp::now() - SignedDuration::from_mins(31)).to_string();
        old.hostname = "another-node".into();
        let mut dead = LockFile::ours(true);
        dead.pid = i64::from(u32::MAX);
        put_lock(&*store, &k, &old).await;
        put_lock(&*store, &k, &dead).await;
        let exclusive = |remove_stale| {
            let (store, k) = (store.clone(), k.clone());
            let handle = Handle::current();
            tokio::task::spawn_blocking(move || {
                RepoLock::acquire_exclusive(store, "restic/ns/", &k, handle, "r", remove_stale)
            })
        };
        let shared = || {
            let (store, k) = (store.clone(), k.clone());
            let handle = Handle::current();
            tokio::task::spawn_blocking(move || {
                RepoLock::acquire(store, "restic/ns/", &k, handle, "r")
            })
        };

        // A dry run only counts the stale locks.
        let taken = exclusive(false).await.unwrap().unwrap();
        assert_eq!(taken.stale_locks, 2);
        assert_eq!(lock_keys(&*store).await.len(), 3);
        tokio::task::spawn_blocking(move || drop(taken))
            .await
            .unwrap();

        let taken = exclusive(true).await.unwrap().unwrap();
        assert_eq!(taken.stale_locks, 2);
        let keys = lock_keys(&*store).await;
        assert_eq!(keys.len(), 1, "only ours: {keys:?}");
        let ours = decode_json(&k.decrypt(&store.get(&keys[0]).await.unwrap()).unwrap()).unwrap();
        assert!(ours.exclusive && !ours.is_stale(Timestamp::now()));
        // While it is held, operations refuse to start.
        let err = shared().await.unwrap().err().expect("refused");
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
        assert_eq!(lock_keys(&*store).await, keys, "the refused lock is gone");
        tokio::task::spawn_blocking(move || drop(taken))
            .await
            .unwrap();
        assert!(lock_keys(&*store).await.is_empty());

        // A fresh lock of a running operation keeps maintenance out, and stays; so do stale
        // locks beside it.
        let stale = put_lock(&*store, &k, &old).await;
        let running = shared().await.unwrap().unwrap();
        let before = lock_keys(&*store).await;
        assert_eq!(before.len(), 2);
        let err = exclusive(true).await.unwrap().err().expect("refused");
        assert!(matches!(err, EngineError::Busy { .. }), "{err}");
        assert!(err.is_busy());
        let msg = err.to_string();
        assert!(
            msg.contains("will run later") && msg.contains("pid"),
            "{msg}"
        );
        assert_eq!(lock_keys(&*store).await, before, "nothing removed or left");
        tokio::task::spawn_blocking(move || drop(running))
            .await
            .unwrap();
        assert_eq!(lock_keys(&*store).await, [stale]);
    }
}

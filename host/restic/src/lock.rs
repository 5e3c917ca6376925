//! restic-compatible, non-exclusive repository locks (see the crate docs for why).
//!
//! A lock is `locks/<sha256 of the stored bytes>` holding restic's lock JSON, encrypted with
//! the repository key. restic treats a lock as stale when it is older than 30 minutes, or
//! when it was made on the same host by a process that no longer exists; it refreshes its own
//! locks every 5 minutes. We do the same, so:
//!
//! - a `restic prune`/`forget`/`check` started by a user while we write waits for us (its
//!   exclusive lock is refused while ours is fresh) instead of deleting packs we just wrote;
//! - we refuse to start while someone holds a fresh exclusive lock;
//! - locks left by a crashed agent go stale after 30 minutes, and never block us: we only
//!   ever take non-exclusive locks, which never conflict with each other.

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
    fn ours() -> Self {
        use std::os::unix::fs::MetadataExt;
        let (uid, gid) = std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()));
        LockFile {
            time: Timestamp::now().to_string(),
            exclusive: false,
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

/// Holds a non-exclusive lock while alive: refreshes it in the background and removes it on
/// drop, whether the operation succeeded, failed, panicked or was canceled. Must be dropped
/// on a thread that may block (the operation's blocking thread).
pub(crate) struct RepoLock {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    key: Arc<Mutex<String>>,
    refresher: JoinHandle<()>,
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
        let storage = |source| EngineError::Storage {
            repo: repo.to_string(),
            source: Box::new(source),
        };
        let dir = format!("{prefix}locks/");
        handle.block_on(refuse_exclusive(&*store, &dir, data_key, None, repo))?;
        let key = handle
            .block_on(write_lock(&*store, &dir, data_key))
            .map_err(storage)?;
        // Someone may have locked exclusively between our look and our write.
        if let Err(e) = handle.block_on(refuse_exclusive(&*store, &dir, data_key, Some(&key), repo))
        {
            let _ = handle.block_on(store.delete(&key));
            return Err(e);
        }
        let key = Arc::new(Mutex::new(key));
        let refresher = handle.spawn(refresh(store.clone(), dir, data_key.clone(), key.clone()));
        Ok(RepoLock {
            store,
            handle,
            key,
            refresher,
        })
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
) -> stowage_storage::Result<String> {
    let json = serde_json::to_vec(&LockFile::ours()).expect("lock JSON serialises");
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
    let storage = |source| EngineError::Storage {
        repo: repo.to_string(),
        source: Box::new(source),
    };
    let now = Timestamp::now();
    for object in store.list(dir).await.map_err(storage)? {
        if Some(object.key.as_str()) == ours {
            continue;
        }
        let data = match store.get(&object.key).await {
            Ok(data) => data,
            Err(e) if e.is_not_found() => continue, // removed meanwhile
            Err(e) => return Err(storage(e)),
        };
        let Some(lock) = data_key
            .decrypt(&data)
            .and_then(|plain| decode_json(&plain))
        else {
            tracing::debug!("ignoring unreadable lock {}", object.key);
            continue;
        };
        if lock.exclusive && !lock.is_stale(now) {
            return Err(EngineError::Locked {
                repo: repo.to_string(),
                holder: format!(
                    "{}@{} (pid {}) since {}",
                    lock.username, lock.hostname, lock.pid, lock.time
                ),
            });
        }
    }
    Ok(())
}

/// Replaces the lock with a fresh one every few minutes, as restic does, so that long
/// operations never look stale.
async fn refresh(
    store: Arc<dyn ObjectStore>,
    dir: String,
    data_key: DataKey,
    current: Arc<Mutex<String>>,
) {
    let mut interval = tokio::time::interval(REFRESH_EVERY);
    interval.tick().await; // the first tick is immediate
    loop {
        interval.tick().await;
        match write_lock(&*store, &dir, &data_key).await {
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
        let json = serde_json::to_vec(&LockFile::ours()).unwrap();
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
        let mut lock = LockFile::ours();
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
}

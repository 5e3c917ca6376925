//! The crate's one error type. Every variant names the repository (storage location and key
//! prefix) and says what to do about it.

use std::path::PathBuf;
use stowage_storage::StorageError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(
        "restic repository {repo} does not exist; it is created when the namespace's first \
         volume is backed up (check the storage location and its prefix)"
    )]
    NotInitialised { repo: String },

    #[error(
        "restic repository {repo}: the repository password opens none of its keys; the master \
         key Secret differs from the one that created the repository: restore the original \
         Secret"
    )]
    WrongPassword { repo: String },

    #[error("restic repository {repo}: {source}")]
    Storage {
        repo: String,
        #[source]
        source: Box<StorageError>,
    },

    #[error(
        "restic repository {repo}: volume path {}: {reason}; check that the volume is mounted \
         on this node", path.display()
    )]
    SourcePath {
        repo: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "restic repository {repo}: restore target {}: {reason}; the target must be an existing \
         directory", path.display()
    )]
    Target {
        repo: String,
        path: PathBuf,
        reason: String,
    },

    #[error("restic repository {repo}: snapshot \"{id}\" {reason}")]
    Snapshot {
        repo: String,
        id: String,
        reason: String,
    },

    #[error(
        "restic repository {repo} is locked exclusively by {holder}; wait for that operation \
         (a `restic prune` or `restic check`?) to finish, or run `restic unlock` if it is gone"
    )]
    Locked { repo: String, holder: String },

    /// Maintenance found a fresh lock of another operation (a running backup, restore or
    /// forget): it needs the repository to itself, and nothing was changed.
    #[error(
        "restic repository {repo} is in use: {holder} (a backup, restore or forget is running); \
         maintenance needs the repository to itself and will run later"
    )]
    Busy { repo: String, holder: String },

    #[error("restic repository {repo}: {operation} canceled")]
    Canceled {
        repo: String,
        operation: &'static str,
    },

    /// Any other failure inside the repository format engine.
    #[error("restic repository {repo}: {operation} failed: {message}")]
    Repository {
        repo: String,
        operation: &'static str,
        message: String,
    },
}

impl EngineError {
    pub fn is_canceled(&self) -> bool {
        matches!(self, EngineError::Canceled { .. })
    }

    /// Another operation holds the repository (a fresh lock): retry later.
    pub fn is_busy(&self) -> bool {
        matches!(self, EngineError::Busy { .. } | EngineError::Locked { .. })
    }
}

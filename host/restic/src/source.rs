//! Warnings of a backup: entries that could not be read (a file, a directory, a symlink's
//! target) are left out of the snapshot and reported to the caller, as restic does.

use std::sync::{Arc, Mutex};

pub(crate) type Warnings = Arc<Mutex<Vec<String>>>;

/// Logs `message` and adds it to the backup's warnings.
pub(crate) fn warn(warnings: &Warnings, message: String) {
    tracing::warn!("{message}");
    warnings.lock().expect("not poisoned").push(message);
}

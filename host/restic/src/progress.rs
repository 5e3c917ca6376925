//! Byte progress out of rustic_core: a [`ProgressBars`] that counts the bytes of the running
//! operation, and a ticker that hands them to the caller's callback.

use crate::Progress;
use rustic_core::{Progress as RusticProgressHandle, ProgressBars, ProgressType, RusticProgress};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the caller hears about progress while an operation runs.
pub(crate) const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct ByteCounters {
    done: AtomicU64,
    total: AtomicU64,
}

impl ByteCounters {
    pub(crate) fn snapshot(&self) -> Progress {
        Progress {
            bytes_done: self.done.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }
}

/// Counts the bytes of rustic_core's byte progress (backing up, restoring file contents);
/// counters and spinners (reading the index, listing snapshots) stay hidden.
#[derive(Debug, Clone, Default)]
pub(crate) struct CountingBars(pub(crate) Arc<ByteCounters>);

impl ProgressBars for CountingBars {
    fn progress(&self, progress_type: ProgressType, _prefix: &str) -> RusticProgressHandle {
        match progress_type {
            ProgressType::Bytes => {
                self.0.done.store(0, Ordering::Relaxed);
                self.0.total.store(0, Ordering::Relaxed);
                RusticProgressHandle::new(ByteProgress(self.0.clone()))
            }
            ProgressType::Counter | ProgressType::Spinner => RusticProgressHandle::hidden(),
        }
    }
}

#[derive(Debug)]
struct ByteProgress(Arc<ByteCounters>);

impl RusticProgress for ByteProgress {
    fn is_hidden(&self) -> bool {
        // Not hidden: rustic_core then scans the source for its total size.
        false
    }
    fn set_length(&self, len: u64) {
        self.0.total.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        self.0.done.fetch_add(inc, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

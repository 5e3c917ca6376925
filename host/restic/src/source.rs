//! The backup source: rustic_core's local directory walker, wrapped so that a canceled
//! backup stops reading at once and so that entries rustic_core skips with a log line (an
//! unreadable file or directory) are reported to the caller as warnings.

use crate::backend::CancelFlag;
use rustic_core::{
    ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult,
};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub(crate) type Warnings = Arc<Mutex<Vec<String>>>;

fn warn(warnings: &Warnings, message: String) {
    tracing::warn!("{message}");
    warnings.lock().expect("not poisoned").push(message);
}

pub(crate) struct GuardedSource<S> {
    inner: S,
    cancel: CancelFlag,
    warnings: Warnings,
}

impl<S> GuardedSource<S> {
    pub(crate) fn new(inner: S, cancel: CancelFlag, warnings: Warnings) -> Self {
        GuardedSource {
            inner,
            cancel,
            warnings,
        }
    }
}

impl<S: ReadSource> ReadSource for GuardedSource<S> {
    type Open = GuardedOpen<S::Open>;
    type Iter = GuardedIter<S::Iter>;

    fn size(&self) -> RusticResult<Option<u64>> {
        self.inner.size()
    }

    fn entries(&self) -> Self::Iter {
        GuardedIter {
            inner: self.inner.entries(),
            cancel: self.cancel.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

pub(crate) struct GuardedIter<I> {
    inner: I,
    cancel: CancelFlag,
    warnings: Warnings,
}

impl<I, O> Iterator for GuardedIter<I>
where
    I: Iterator<Item = RusticResult<ReadSourceEntry<O>>>,
{
    type Item = RusticResult<ReadSourceEntry<GuardedOpen<O>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cancel.is_cancelled() {
            return None;
        }
        Some(match self.inner.next()? {
            Ok(entry) => {
                let path = entry.path.clone();
                Ok(ReadSourceEntry {
                    path: entry.path,
                    node: entry.node,
                    open: entry.open.map(|inner| GuardedOpen {
                        inner,
                        path,
                        cancel: self.cancel.clone(),
                        warnings: self.warnings.clone(),
                    }),
                })
            }
            Err(e) => {
                warn(&self.warnings, format!("skipped: {}", e.display_log()));
                Err(e)
            }
        })
    }
}

pub(crate) struct GuardedOpen<O> {
    inner: O,
    path: PathBuf,
    cancel: CancelFlag,
    warnings: Warnings,
}

impl<O: ReadSourceOpen> ReadSourceOpen for GuardedOpen<O> {
    type Reader = GuardedReader<O::Reader>;

    fn open(self) -> RusticResult<Self::Reader> {
        if self.cancel.is_cancelled() {
            return Err(RusticError::new(ErrorKind::InputOutput, "backup canceled"));
        }
        match self.inner.open() {
            Ok(inner) => Ok(GuardedReader {
                inner,
                path: self.path,
                cancel: self.cancel,
                warnings: self.warnings,
            }),
            Err(e) => {
                let message = format!("{}: skipped: {}", self.path.display(), e.display_log());
                warn(&self.warnings, message);
                Err(e)
            }
        }
    }
}

pub(crate) struct GuardedReader<R> {
    inner: R,
    path: PathBuf,
    cancel: CancelFlag,
    warnings: Warnings,
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: readers retry that.
            return Err(io::Error::other("backup canceled"));
        }
        self.inner.read(buf).inspect_err(|e| {
            let message = format!("{}: skipped, reading failed: {e}", self.path.display());
            warn(&self.warnings, message);
        })
    }
}

//! Repository maintenance ([`crate::Repo::maintain`]): what `restic unlock` and `restic prune`
//! do, in one call.
//!
//! 1. Stale locks (older than 30 minutes, or made on this host by a process that is gone;
//!    see [`crate::lock`]) are removed.
//! 2. Maintenance refuses to run while any other lock is fresh: a backup, restore or forget
//!    holding its non-exclusive lock makes it fail with [`EngineError::Busy`], a user's
//!    `restic prune`/`check` with [`EngineError::Locked`]; nothing is changed then. Otherwise
//!    it takes an **exclusive** lock, held (and refreshed) for the whole prune and removed at
//!    its end, however it ends. While that lock is fresh, backups refuse to start (and
//!    `restic backup` waits), so no pack is written that the prune does not know of.
//! 3. The prune is rustic_core's (`Repository::prune_plan` and `Repository::prune`, the code
//!    behind `rustic prune`), with restic's semantics:
//!    - packs no snapshot references are deleted at once (`instant_delete`): we hold the
//!      exclusive lock, as restic does, so nothing can still need them. rustic_core's default
//!      instead marks them in the index (`packs_to_delete`, a field restic does not know)
//!      and deletes them in a later run; restic would see such packs as unindexed;
//!    - partly used packs are repacked, those with the largest unused share first, until at
//!      most `max_unused_percent` of the repository would be unused (restic's
//!      `--max-unused`, repository-wide, not per pack; tree packs with unused blobs are
//!      always repacked); there is no cap on how much is repacked (restic's default
//!      `--max-repack-size`; rustic_core's default caps it at 10%);
//!    - small packs are combined when enough of them collect, as rustic does;
//!    - the index is rewritten (index files that changed or are small are replaced), and the
//!      old index files are deleted before the packs they name.
//!
//!    rustic_core 0.13 takes no locks of its own (see the crate docs), so there is no second
//!    lock to take or to deadlock on. The index and packs it writes are restic's format (its
//!    index entries carry a pack `time`, a field restic ignores); `restic check --read-data`
//!    passes after a prune (see the tests).
//!
//! # Memory
//!
//! rustic_core's plan holds every index entry, the set of used blob ids and the index of
//! tree blobs; repacking holds a pack being filled per blob type and the blobs being copied
//! (bounded by the read budget, see `backend`). Maintenance of a repository of 100,000 blobs
//! peaked at 29–30 MiB for the whole process deleting whole packs, and at 48–53 MiB repacking
//! every data pack (`examples/maintain_memory.rs`, `BENCHMARKS.md`).

use crate::error::EngineError;
use rustic_core::{LimitOption, OpenStatus, PruneOptions, Repository, RusticError};
use std::collections::BTreeMap;
use stowage_storage::ObjectStore;
use tokio::runtime::Handle;

/// What [`crate::Repo::maintain`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaintenanceOptions {
    /// The share of the repository (in percent, 0 to 100) that may stay unused after
    /// maintenance, as restic's `--max-unused`: partly used packs are repacked until the
    /// unused share is at most this. 0 repacks every partly used pack; 100 or more repacks
    /// none (only wholly unused packs are deleted). Fractions are rounded down to a whole
    /// percent (rustic_core's limit is whole percents), which repacks a little more, never
    /// less. Default 5, restic's.
    pub max_unused_percent: f64,
    /// Only plan: remove no stale locks (count them), write and delete nothing but the
    /// exclusive lock held while planning; the summary gives what a real run would do, its
    /// sizes estimated from the blobs' sizes.
    pub dry_run: bool,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        MaintenanceOptions {
            max_unused_percent: 5.0,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceSummary {
    /// Stale locks removed before taking the exclusive lock (found, for a dry run).
    pub stale_locks_removed: usize,
    /// Pack files deleted because no snapshot used any of their blobs (or no index named
    /// them).
    pub packs_removed: u64,
    /// Partly used pack files whose used blobs were copied into new packs, then deleted.
    pub packs_repacked: u64,
    /// `bytes_before - bytes_after` (0 if the repository grew).
    pub bytes_freed: u64,
    /// Bytes of the repository's `data/` and `index/` files before maintenance.
    pub bytes_before: u64,
    /// The same after maintenance (a dry run: estimated).
    pub bytes_after: u64,
    /// Blobs in the index after maintenance (a dry run: that would remain).
    pub blobs: u64,
}

/// rustic_core's `max_unused` for `percent`.
pub(crate) fn max_unused(percent: f64) -> Result<LimitOption, String> {
    if percent.is_nan() || percent < 0.0 {
        return Err(format!(
            "max_unused_percent must be a percentage from 0 to 100, not {percent}"
        ));
    }
    if percent >= 100.0 {
        return Ok(LimitOption::Unlimited);
    }
    // A whole number below 100: the cast is exact.
    Ok(LimitOption::Percentage(percent.floor() as u64))
}

/// One maintenance run on a session that holds the exclusive lock.
pub(crate) struct Maintenance<'a> {
    pub(crate) repo: &'a Repository<OpenStatus>,
    pub(crate) store: &'a dyn ObjectStore,
    /// `restic/<namespace>/`
    pub(crate) prefix: &'a str,
    pub(crate) handle: &'a Handle,
    pub(crate) name: &'a str,
    pub(crate) err: &'a dyn Fn(Box<RusticError>) -> EngineError,
}

impl Maintenance<'_> {
    pub(crate) fn run(
        &self,
        max_unused: LimitOption,
        dry_run: bool,
        stale_locks: usize,
    ) -> Result<MaintenanceSummary, EngineError> {
        let opts = PruneOptions::default()
            .max_unused(max_unused)
            .max_repack(LimitOption::Unlimited)
            .instant_delete(true);
        let before = self.files()?;
        let bytes_before: u64 = before.values().sum();
        let plan = self.repo.prune_plan(&opts).map_err(self.err)?;
        let stats = &plan.stats;
        let blobs = stats.blobs_sum().total_after_prune();
        let packs_repacked = plan.repack_packs().len() as u64;
        tracing::info!(
            "maintenance of {}: {} unused packs, {} partly used ({} to repack), {} unindexed, \
             {} of {} index files to rewrite{}",
            self.name,
            stats.packs.unused,
            stats.packs.partly_used,
            stats.packs.repack,
            stats.packs_unref,
            stats.index_files_rebuild,
            stats.index_files,
            if dry_run { " (dry run)" } else { "" }
        );
        if dry_run {
            let sizes = stats.size_sum();
            let freed = sizes.remove
                + sizes.repackrm
                + stats.size_to_delete.remove
                + stats.size_to_delete.keep
                + stats.size_unref;
            let bytes_after = bytes_before.saturating_sub(freed);
            return Ok(MaintenanceSummary {
                stale_locks_removed: stale_locks,
                packs_removed: stats.packs.unused
                    + stats.packs_to_delete.remove
                    + stats.packs_to_delete.keep
                    + stats.packs_unref,
                packs_repacked,
                bytes_freed: bytes_before - bytes_after,
                bytes_before,
                bytes_after,
                blobs,
            });
        }
        self.repo.prune(&opts, plan).map_err(self.err)?;
        let after = self.files()?;
        let bytes_after: u64 = after.values().sum();
        let packs_gone = before
            .keys()
            .filter(|k| k.starts_with(&self.dir("data")) && !after.contains_key(*k))
            .count() as u64;
        Ok(MaintenanceSummary {
            stale_locks_removed: stale_locks,
            packs_removed: packs_gone.saturating_sub(packs_repacked),
            packs_repacked,
            bytes_freed: bytes_before.saturating_sub(bytes_after),
            bytes_before,
            bytes_after,
            blobs,
        })
    }

    fn dir(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    /// The keys and sizes of the repository's `data/` and `index/` files.
    fn files(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        let mut files = BTreeMap::new();
        for dir in ["data", "index"] {
            let listed = self
                .handle
                .block_on(self.store.list(&self.dir(dir)))
                .map_err(|source| EngineError::Storage {
                    repo: self.name.to_string(),
                    source: Box::new(source),
                })?;
            files.extend(listed.into_iter().map(|o| (o.key, o.size)));
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unused_is_a_whole_percentage_below_100() {
        let pct = |p| match max_unused(p) {
            Ok(LimitOption::Percentage(n)) => Some(n),
            Ok(LimitOption::Unlimited) => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(pct(5.0), Some(5));
        assert_eq!(pct(0.0), Some(0));
        assert_eq!(pct(2.9), Some(2));
        assert_eq!(pct(99.99), Some(99));
        assert_eq!(pct(100.0), None);
        assert_eq!(pct(f64::INFINITY), None);
        assert!(max_unused(-1.0).is_err());
        assert!(max_unused(f64::NAN).is_err());
    }
}

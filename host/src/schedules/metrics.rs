//! Per-schedule metrics, the garbage collector's and storage locations' availability: what
//! alerts on "no successful backup of schedule X lately", "X's last backup failed" and
//! "location Y is unavailable" need.

use std::collections::HashSet;
use std::sync::Mutex;

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stowage_api::{Backup, BackupPhase};

type Labels = Vec<(String, String)>;

pub struct ScheduleMetrics {
    attempts: Family<Labels, Counter>,
    successes: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    skipped: Family<Labels, Counter>,
    last_success: Family<Labels, Gauge>,
    last_status: Family<Labels, Gauge>,
    /// The typical time between runs, for "overdue" alerts; only for enabled schedules.
    interval: Family<Labels, Gauge>,
    /// When the schedule was created or last unpaused; only for enabled schedules.
    enabled_since: Family<Labels, Gauge>,
    /// 1 when a storage location passed its last check, 0 when not.
    pub location_available: Family<Labels, Gauge>,
    pub gc_runs: Counter,
    /// Deletion requests made, by reason (`expired`, `retention`).
    gc_deletions: Family<Labels, Counter>,
    /// Expired backups garbage collection could not delete, by reason, at its last look.
    pub gc_blocked: Family<Labels, Gauge>,
    /// Finished backups already counted, so each is counted once.
    counted: Mutex<HashSet<String>>,
    /// Schedules with series, so a deleted schedule's can be dropped.
    known: Mutex<HashSet<String>>,
    started: Timestamp,
}

fn schedule(name: &str) -> Labels {
    vec![("schedule".to_string(), name.to_string())]
}

impl ScheduleMetrics {
    pub fn new() -> ScheduleMetrics {
        let m = ScheduleMetrics {
            attempts: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            skipped: Family::default(),
            last_success: Family::default(),
            last_status: Family::default(),
            interval: Family::default(),
            enabled_since: Family::default(),
            location_available: Family::default(),
            gc_runs: Counter::default(),
            gc_deletions: Family::default(),
            gc_blocked: Family::default(),
            counted: Mutex::new(HashSet::new()),
            known: Mutex::new(HashSet::new()),
            started: Timestamp::now(),
        };
        // Known label values start at 0, so `increase()` sees the first one and panels and
        // alerts find the series before anything happened.
        for reason in ["expired", "retention"] {
            let _ = m.gc_deletions.get_or_create(&vec![("reason".to_string(), reason.to_string())]);
        }
        for reason in ["LocationReadOnly", "LocationNotFound", "LocationUnavailable"] {
            let _ = m.gc_blocked.get_or_create(&vec![("reason".to_string(), reason.to_string())]);
        }
        m
    }

    /// Adds these metrics to the server's registry (prefixed `stowage_`).
    pub fn register(&self, r: &mut Registry) {
        r.register("schedule_backup_attempt", "Backups created by each schedule", self.attempts.clone());
        r.register("schedule_backup_success", "Backups of each schedule that completed", self.successes.clone());
        r.register(
            "schedule_backup_failure",
            "Backups of each schedule that failed, partially failed or failed validation",
            self.failures.clone(),
        );
        r.register("schedule_run_skipped", "Runs skipped because the schedule's previous backup was still running", self.skipped.clone());
        r.register(
            "backup_last_successful_timestamp",
            "Completion time (Unix seconds) of each schedule's newest Completed backup",
            self.last_success.clone(),
        );
        r.register(
            "backup_last_status",
            "Whether each schedule's newest finished backup completed (1) or not (0)",
            self.last_status.clone(),
        );
        r.register(
            "schedule_interval_seconds",
            "Time between a schedule's runs (absent while it is paused or invalid)",
            self.interval.clone(),
        );
        r.register(
            "schedule_enabled_timestamp",
            "When a schedule was created or last unpaused (Unix seconds; absent while paused or invalid)",
            self.enabled_since.clone(),
        );
        r.register(
            "backup_location_available",
            "Whether a storage location passed its last check (1) or not (0)",
            self.location_available.clone(),
        );
        r.register("gc_runs", "Garbage collection passes over the backups", self.gc_runs.clone());
        r.register("gc_deletion_requests", "Backup deletions requested by garbage collection, by reason", self.gc_deletions.clone());
        r.register(
            "gc_blocked_backups",
            "Expired backups garbage collection cannot delete, by reason (LocationReadOnly, LocationNotFound, LocationUnavailable)",
            self.gc_blocked.clone(),
        );
    }

    pub fn attempted(&self, name: &str) {
        self.attempts.get_or_create(&schedule(name)).inc();
    }

    pub fn skipped(&self, name: &str) {
        self.skipped.get_or_create(&schedule(name)).inc();
    }

    pub fn gc_deletion(&self, reason: &str) {
        self.gc_deletions.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }

    /// Updates the schedule's gauges from its backups, and counts each backup that finished
    /// since the server started, once.
    pub fn observe(&self, name: &str, backups: &[Backup]) {
        let summary = summarize(backups);
        if let Some(t) = summary.last_success {
            self.last_success.get_or_create(&schedule(name)).set(t.as_second());
        }
        if let Some(ok) = summary.last_ok {
            self.last_status.get_or_create(&schedule(name)).set(i64::from(ok));
        }
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        for b in backups {
            let status = b.status.clone().unwrap_or_default();
            let (Some(phase), Some(done)) = (status.phase, status.completion_timestamp) else { continue };
            if !phase.is_terminal() || done.0 < self.started || !counted.insert(b.uid().unwrap_or_else(|| b.name_any())) {
                continue;
            }
            match phase {
                BackupPhase::Completed => self.successes.get_or_create(&schedule(name)).inc(),
                _ => self.failures.get_or_create(&schedule(name)).inc(),
            };
        }
    }

    /// Records an enabled schedule's cadence, for "overdue" alerts.
    pub fn enabled(&self, name: &str, interval: Option<std::time::Duration>, since: Timestamp) {
        if self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string()) {
            for counter in [&self.attempts, &self.successes, &self.failures, &self.skipped] {
                let _ = counter.get_or_create(&schedule(name));
            }
        }
        match interval {
            Some(i) => {
                self.interval.get_or_create(&schedule(name)).set(i.as_secs() as i64);
            }
            None => {
                self.interval.remove(&schedule(name));
            }
        }
        self.enabled_since.get_or_create(&schedule(name)).set(since.as_second());
    }

    /// A paused schedule is not overdue.
    pub fn paused(&self, name: &str) {
        self.interval.remove(&schedule(name));
        self.enabled_since.remove(&schedule(name));
    }

    /// Drops a schedule's gauges (deleted or invalid): stale values would mislead alerts.
    pub fn forget(&self, name: &str) {
        self.paused(name);
        self.last_success.remove(&schedule(name));
        self.last_status.remove(&schedule(name));
    }

    /// Drops the series of schedules that no longer exist.
    pub fn retain(&self, existing: &HashSet<String>) {
        let gone: Vec<String> = {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let gone = known.difference(existing).cloned().collect();
            known.retain(|n| existing.contains(n));
            gone
        };
        for name in gone {
            self.forget(&name);
        }
    }

    pub fn location(&self, name: &str, available: bool) {
        self.location_available.get_or_create(&vec![("location".to_string(), name.to_string())]).set(i64::from(available));
    }
}

impl Default for ScheduleMetrics {
    fn default() -> Self {
        ScheduleMetrics::new()
    }
}

/// What a schedule's backups say about it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub last_success: Option<Timestamp>,
    /// Whether the newest finished backup completed.
    pub last_ok: Option<bool>,
}

pub fn summarize(backups: &[Backup]) -> Summary {
    let finished = backups.iter().filter_map(|b| {
        let s = b.status.as_ref()?;
        let phase = s.phase.filter(|p| p.is_terminal())?;
        let at = s.completion_timestamp.as_ref().or(b.metadata.creation_timestamp.as_ref())?.0;
        Some((at, phase))
    });
    let mut summary = Summary::default();
    let mut newest: Option<Timestamp> = None;
    for (at, phase) in finished {
        if phase == BackupPhase::Completed && summary.last_success.is_none_or(|t| at > t) {
            summary.last_success = Some(at);
        }
        if newest.is_none_or(|t| at > t) {
            newest = Some(at);
            summary.last_ok = Some(phase == BackupPhase::Completed);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use stowage_api::{BackupSpec, BackupStatus};

    fn finished(name: &str, phase: BackupPhase, at: &str) -> Backup {
        let mut b = Backup::new(name, BackupSpec::default());
        b.metadata.uid = Some(format!("uid-{name}"));
        b.status = Some(BackupStatus {
            phase: Some(phase),
            completion_timestamp: Some(Time(at.parse().unwrap())),
            ..Default::default()
        });
        b
    }

    #[test]
    fn the_newest_finished_backup_sets_the_status() {
        let ok = finished("a", BackupPhase::Completed, "2026-05-01T01:00:00Z");
        let bad = finished("b", BackupPhase::PartiallyFailed, "2026-05-02T01:00:00Z");
        let s = summarize(&[ok.clone(), bad.clone()]);
        assert_eq!(s.last_success, Some("2026-05-01T01:00:00Z".parse().unwrap()));
        assert_eq!(s.last_ok, Some(false));
        let running = Backup::new("c", BackupSpec::default());
        assert_eq!(summarize(&[bad, running]).last_success, None);
        assert_eq!(summarize(&[ok]).last_ok, Some(true));
    }

    #[test]
    fn each_backup_is_counted_once_and_only_if_it_finished_since_start() {
        let m = ScheduleMetrics::new();
        let later = Timestamp::now().checked_add(jiff::SignedDuration::from_secs(5)).unwrap().to_string();
        let before = finished("old", BackupPhase::Failed, "2026-01-01T00:00:00Z");
        let ok = finished("new", BackupPhase::Completed, &later);
        m.observe("nightly", &[before.clone(), ok.clone()]);
        m.observe("nightly", &[before, ok]);
        let mut r = Registry::with_prefix("stowage");
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains(r#"stowage_schedule_backup_success_total{schedule="nightly"} 1"#), "{text}");
        assert!(!text.contains("stowage_schedule_backup_failure_total{"), "{text}");
        assert!(text.contains(r#"stowage_backup_last_status{schedule="nightly"} 1"#), "{text}");
        m.forget("nightly");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(!text.contains(r#"stowage_backup_last_status{schedule="nightly"}"#), "{text}");
    }
}

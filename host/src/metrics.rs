//! Prometheus metrics on `/metrics`: backup and restore attempts, outcomes, durations, items.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label names and values.
type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub backup_attempts: Counter,
    pub backup_successes: Counter,
    pub backup_partial_failures: Counter,
    pub backup_failures: Counter,
    pub backup_validation_failures: Counter,
    pub backup_duration: Histogram,
    pub backup_items: Gauge,
    pub backup_deletions: Counter,
    pub restore_attempts: Counter,
    pub restore_successes: Counter,
    pub restore_partial_failures: Counter,
    pub restore_failures: Counter,
    pub restore_validation_failures: Counter,
    pub restore_duration: Histogram,
    pub restore_items: Gauge,
    /// Extension calls by extension (`namespace/name`) and outcome.
    pub extension_calls: Family<Labels, Counter>,
    /// How long extension calls took, by extension.
    pub extension_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Extensions loaded from ConfigMaps that are quarantined (broken) now.
    pub extensions_quarantined: Gauge,
    /// Per-schedule and garbage-collection metrics.
    pub schedules: crate::schedules::metrics::ScheduleMetrics,
    /// 1 while this server holds the leader Lease and runs the controllers.
    pub leader: Gauge,
}

fn extension_durations() -> Histogram {
    // 10 µs to ~40 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stowage");
        let durations = || Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let m = Metrics {
            registry: Registry::default(),
            backup_attempts: Counter::default(),
            backup_successes: Counter::default(),
            backup_partial_failures: Counter::default(),
            backup_failures: Counter::default(),
            backup_validation_failures: Counter::default(),
            backup_duration: durations(),
            backup_items: Gauge::default(),
            backup_deletions: Counter::default(),
            restore_attempts: Counter::default(),
            restore_successes: Counter::default(),
            restore_partial_failures: Counter::default(),
            restore_failures: Counter::default(),
            restore_validation_failures: Counter::default(),
            restore_duration: durations(),
            restore_items: Gauge::default(),
            extension_calls: Family::default(),
            extension_duration: Family::new_with_constructor(extension_durations),
            extensions_quarantined: Gauge::default(),
            schedules: Default::default(),
            leader: Gauge::default(),
        };
        let r = &mut registry;
        r.register("backup_attempt", "Backups started", m.backup_attempts.clone());
        r.register("backup_success", "Backups completed", m.backup_successes.clone());
        r.register("backup_partial_failure", "Backups that partially failed", m.backup_partial_failures.clone());
        r.register("backup_failure", "Backups that failed", m.backup_failures.clone());
        r.register("backup_validation_failure", "Backups that failed validation", m.backup_validation_failures.clone());
        r.register("backup_duration_seconds", "Time a backup took", m.backup_duration.clone());
        r.register("backup_items", "Items in the last backup", m.backup_items.clone());
        r.register("backup_deletion", "Backups deleted", m.backup_deletions.clone());
        r.register("restore_attempt", "Restores started", m.restore_attempts.clone());
        r.register("restore_success", "Restores completed", m.restore_successes.clone());
        r.register("restore_partial_failure", "Restores that partially failed", m.restore_partial_failures.clone());
        r.register("restore_failure", "Restores that failed", m.restore_failures.clone());
        r.register("restore_validation_failure", "Restores that failed validation", m.restore_validation_failures.clone());
        r.register("restore_duration_seconds", "Time a restore took", m.restore_duration.clone());
        r.register("restore_items", "Items in the last restore", m.restore_items.clone());
        r.register("extension_calls", "Extension calls, by extension and outcome", m.extension_calls.clone());
        r.register("extension_duration_seconds", "Time an extension call took", m.extension_duration.clone());
        r.register("extensions_quarantined", "Extensions quarantined because they failed to load", m.extensions_quarantined.clone());
        r.register("server_leader", "1 while this server leads (holds the Lease and runs the controllers)", m.leader.clone());
        m.schedules.register(r);
        Metrics { registry, ..m }
    }

    /// Counts one extension call (see `stowage_runtime::CallObserver`).
    pub fn extension_call(&self, extension: &str, outcome: &str, took: Option<std::time::Duration>) {
        let name = vec![("extension".to_string(), extension.to_string())];
        let mut labels = name.clone();
        labels.push(("outcome".to_string(), outcome.to_string()));
        self.extension_calls.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.extension_duration.get_or_create(&name).observe(took.as_secs_f64());
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `/metrics`, `/healthz`, `/readyz` and the routes given (downloads) on one port.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>, more: axum::Router) -> anyhow::Result<()> {
    stowage_node_agent::metrics::serve_text_with(addr, move || metrics.render(), more).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_the_stowage_prefix() {
        let m = Metrics::new();
        m.backup_attempts.inc();
        m.backup_duration.observe(3.0);
        let text = m.render();
        assert!(text.contains("stowage_backup_attempt_total 1"), "{text}");
        assert!(text.contains("stowage_backup_duration_seconds_count 1"), "{text}");
    }

    #[test]
    fn extension_calls_are_counted_by_extension_and_outcome() {
        let m = Metrics::new();
        m.extension_call("stowage/mark", "changed", Some(std::time::Duration::from_micros(50)));
        m.extension_call("stowage/mark", "changed", Some(std::time::Duration::from_micros(70)));
        m.extension_call("stowage/mark", "error", None);
        let text = m.render();
        assert!(text.contains(r#"stowage_extension_calls_total{extension="stowage/mark",outcome="changed"} 2"#), "{text}");
        assert!(text.contains(r#"stowage_extension_calls_total{extension="stowage/mark",outcome="error"} 1"#), "{text}");
        assert!(text.contains(r#"stowage_extension_duration_seconds_count{extension="stowage/mark"} 2"#), "{text}");
    }
}

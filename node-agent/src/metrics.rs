//! The node agent's Prometheus metrics (`stowage_podvolume_*`) on `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub backups_completed: Counter,
    pub backups_failed: Counter,
    pub bytes_backed_up: Counter,
    pub backup_seconds: Histogram,
    pub restores_completed: Counter,
    pub restores_failed: Counter,
    pub restore_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stowage_podvolume");
        let seconds = || Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let m = Metrics {
            registry: Registry::default(),
            backups_completed: Counter::default(),
            backups_failed: Counter::default(),
            bytes_backed_up: Counter::default(),
            backup_seconds: seconds(),
            restores_completed: Counter::default(),
            restores_failed: Counter::default(),
            restore_seconds: seconds(),
        };
        let r = &mut registry;
        r.register("backup_success", "Pod volume backups completed", m.backups_completed.clone());
        r.register("backup_failure", "Pod volume backups that failed or were canceled", m.backups_failed.clone());
        r.register("backup_bytes", "Bytes of the volumes backed up", m.bytes_backed_up.clone());
        r.register("backup_duration_seconds", "Time a pod volume backup took", m.backup_seconds.clone());
        r.register("restore_success", "Pod volume restores completed", m.restores_completed.clone());
        r.register("restore_failure", "Pod volume restores that failed or were canceled", m.restores_failed.clone());
        r.register("restore_duration_seconds", "Time a pod volume restore took", m.restore_seconds.clone());
        Metrics { registry, ..m }
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

pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    serve_text(addr, move || metrics.render()).await
}

/// Serves `/metrics` (what `render` returns, in Prometheus' text format), `/healthz` and `/readyz`; the
/// server's metrics go out the same way.
pub async fn serve_text(
    addr: std::net::SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    serve_text_with(addr, render, axum::Router::new()).await
}

/// Like [`serve_text`], with more routes on the same port (the server's downloads).
pub async fn serve_text_with(
    addr: std::net::SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    more: axum::Router,
) -> anyhow::Result<()> {
    let app = more
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = render();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        // Ready once it serves: a standby server is ready too (it must not stall rolling updates).
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}; pick another --metrics-address"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_the_podvolume_prefix() {
        let m = Metrics::new();
        m.backups_completed.inc();
        m.bytes_backed_up.inc_by(42);
        let text = m.render();
        assert!(text.contains("stowage_podvolume_backup_success_total 1"), "{text}");
        assert!(text.contains("stowage_podvolume_backup_bytes_total 42"), "{text}");
    }

    #[tokio::test]
    async fn metrics_and_health_are_served_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        m.backups_completed.inc();
        tokio::spawn(serve(addr, m));
        let get = |path: &'static str| async move {
            for _ in 0..50 {
                if let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await {
                    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    conn.write_all(request.as_bytes()).await.unwrap();
                    let mut response = String::new();
                    conn.read_to_string(&mut response).await.unwrap();
                    return response;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("nothing listens on {addr}");
        };
        let metrics = get("/metrics").await;
        assert!(metrics.contains("stowage_podvolume_backup_success_total 1"), "{metrics}");
        assert!(get("/healthz").await.ends_with("ok"));
        assert!(get("/readyz").await.ends_with("ok"));
    }
}

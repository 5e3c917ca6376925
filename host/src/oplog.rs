//! The log of one backup or restore: what users read with `stowage backup logs`. Lines also go
//! to the server's own tracing output.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Clones share the same lines (extensions' host calls log into their operation's log).
#[derive(Debug, Default, Clone)]
pub struct OperationLog {
    kind: &'static str,
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl OperationLog {
    pub fn new(kind: &'static str, name: &str) -> Self {
        OperationLog { kind, name: name.to_string(), lines: Arc::new(Mutex::new(Vec::new())) }
    }

    fn push(&self, level: &str, msg: &str) {
        let ts = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let line = format!("time=\"{ts}\" level={level} msg={msg:?} {}={}", self.kind, self.name);
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }

    pub fn info(&self, msg: impl AsRef<str>) {
        tracing::info!(kind = self.kind, name = %self.name, "{}", msg.as_ref());
        self.push("info", msg.as_ref());
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        tracing::warn!(kind = self.kind, name = %self.name, "{}", msg.as_ref());
        self.push("warning", msg.as_ref());
    }

    pub fn error(&self, msg: impl AsRef<str>) {
        tracing::error!(kind = self.kind, name = %self.name, "{}", msg.as_ref());
        self.push("error", msg.as_ref());
    }

    /// Records each warning and error of a run's outcome, with the namespace it concerns, so
    /// that `stowage backup logs` and `restore logs` show them beside the rest.
    pub fn outcome(&self, outcome: &stowage_pipeline::Outcome) {
        let located = |ns: &str, m: &str| if ns.is_empty() { m.to_string() } else { format!("namespace {ns}: {m}") };
        for (ns, warnings) in &outcome.warnings {
            for w in warnings {
                self.warn(located(ns, w));
            }
        }
        for (ns, errors) in &outcome.errors {
            for e in errors {
                self.error(located(ns, e));
            }
        }
    }

    /// The log as uploaded: zstd-compressed text, one line per entry.
    pub fn compressed(&self) -> std::io::Result<Vec<u8>> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut enc = zstd::Encoder::new(Vec::new(), 3)?;
        for l in lines.iter() {
            enc.write_all(l.as_bytes())?;
            enc.write_all(b"\n")?;
        }
        enc.finish()
    }
}

/// zstd-compresses a JSON document for upload.
pub fn compress_json(value: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    let raw = serde_json::to_vec(value)?;
    zstd::encode_all(raw.as_slice(), 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trips_through_zstd() {
        let log = OperationLog::new("backup", "b1");
        log.info("started");
        log.warn("namespace \"x\" has no pods");
        let text = String::from_utf8(zstd::decode_all(log.compressed().unwrap().as_slice()).unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("level=warning") && text.contains("backup=b1"));
    }

    #[test]
    fn outcome_messages_are_logged_with_their_namespace() {
        let log = OperationLog::new("restore", "r1");
        let mut outcome = stowage_pipeline::Outcome::default();
        outcome.warn(Some("shop"), "configmaps shop/settings already exists");
        outcome.error(None, "widgets.example.com is not served");
        log.outcome(&outcome);
        let text = String::from_utf8(zstd::decode_all(log.compressed().unwrap().as_slice()).unwrap()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("level=warning") && lines[0].contains("namespace shop: configmaps shop/settings"), "{text}");
        assert!(lines[1].contains("level=error") && lines[1].contains("widgets.example.com"), "{text}");
    }
}

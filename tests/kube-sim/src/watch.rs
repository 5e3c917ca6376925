//! Watches: newline-delimited JSON events, resumable from a resourceVersion, with bookmarks,
//! timeouts, streaming initial lists, and 410 Gone when the client falls too far behind.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{AppState, Query};
use crate::store::{present, Event, EventType};
use crate::table::{self, IncludeObject};

const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns));
        ns_ok && self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }

    /// The event a watcher with this filter sees, if any: objects moving into or out of the
    /// selection appear as ADDED or DELETED.
    fn translate(&self, e: &Event) -> Option<(EventType, Value)> {
        if e.key != self.rt.key() {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match (e.kind, before, now) {
            (EventType::Added, _, true) | (EventType::Deleted, _, true) => e.kind,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            _ => return None,
        };
        Some((kind, present(&self.rt, &e.object)))
    }
}

struct Encoder {
    rt: ResourceType,
    as_table: bool,
    include: IncludeObject,
    sent_columns: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: Value) -> String {
        let obj = if self.as_table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
            let t = table::table(&self.rt, &[obj], self.include, !self.sent_columns, &rv);
            self.sent_columns = true;
            t
        } else {
            obj
        };
        let mut s = json!({"type": kind, "object": obj}).to_string();
        s.push('\n');
        s
    }
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

pub fn serve(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &Query,
    as_table: bool,
) -> ApiResult<Response> {
    let from_rv = match q.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {v:?}")))?),
        None => None,
    };
    let send_initial = q.get("sendInitialEvents") == Some("true");
    let bookmarks = q.get("allowWatchBookmarks") == Some("true");
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let filter = Filter { rt: rt.clone(), namespace: namespace.map(String::from), labels, fields };
    let mut enc = Encoder { rt: rt.clone(), as_table, include: IncludeObject::parse(q.get("includeObject")), sent_columns: false };

    // Without a specific version (unset or "0") a watch starts with synthetic ADDED events for
    // what exists now, as the API server does; `kubectl get NAME -w` relies on it.
    let synthetic_initial = send_initial || from_rv.is_none_or(|v| v == 0);
    let start = match state.store.watch(rt, from_rv, synthetic_initial, namespace) {
        Ok(s) => s,
        Err(e @ ApiError::Gone(_)) => {
            // As a real server does: the watch opens, then reports 410 as an ERROR event.
            let line = enc.line("ERROR", e.status());
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], line).into_response());
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(256);
    let store_rv = start.resource_version;
    tokio::spawn(async move {
        let mut live = start.live;
        let mut last_rv = store_rv;
        let send = |line: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(line)).await.is_ok() }
        };
        for obj in start.initial.into_iter().filter(|o| filter.matches(o)) {
            if !send(enc.line("ADDED", present(&filter.rt, &obj))).await {
                return;
            }
        }
        if send_initial && !send(enc.line("BOOKMARK", bookmark(&filter.rt, store_rv, true))).await {
            return;
        }
        for e in &start.replay {
            if let Some((kind, obj)) = filter.translate(e) {
                if !send(enc.line(kind.as_str(), obj)).await {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last_rv { continue; }
                        if e.key != filter.rt.key() { continue; }
                        last_rv = e.rv;
                        if let Some((kind, obj)) = filter.translate(&e) {
                            if !send(enc.line(kind.as_str(), obj)).await { return; }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = ApiError::Gone("watch fell too far behind; too old resource version".into());
                        let _ = send(enc.line("ERROR", gone.status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if !send(enc.line("BOOKMARK", bookmark(&filter.rt, last_rv, false))).await { return; }
                }
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

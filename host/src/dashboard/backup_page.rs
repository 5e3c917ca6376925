//! A backup's page: what it was asked to do, what it did, its volumes, hook runs and items.

use std::collections::BTreeMap;

use super::html::{
    badge, count, duration, esc, key_values, list, optional, page, progress, restore_rows, short_digest, table, time,
    unavailable, Html, RESTORE_HEADERS,
};
use super::model::{BackupDetail, Messages};
use crate::commands::output::human_bytes;

fn messages(m: &Messages) -> Html {
    let mut rows = Vec::new();
    for (what, tone, by_ns) in [("warning", "warn", &m.warnings), ("error", "bad", &m.errors)] {
        for (ns, lines) in by_ns {
            for line in lines {
                let ns = if ns.is_empty() { "cluster".to_string() } else { ns.clone() };
                rows.push(vec![Html::trusted(format!("<span class=\"{tone}\">{what}</span>")), Html::from(ns), Html::from(line.as_str())]);
            }
        }
    }
    table(&["Kind", "Namespace", "Message"], rows, "No messages.")
}

pub fn backup(d: &BackupDetail, namespace: &str) -> String {
    let b = &d.row;
    let mut body = format!("<h2 style=\"font-size:18px\">Backup {} {}</h2>", esc(&b.name), badge(&b.phase).0);
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let summary = key_values(vec![
        ("Schedule", optional(b.schedule.clone())),
        ("Storage location", Html::from(b.storage_location.clone().unwrap_or_else(|| "default".into()))),
        ("Items", progress(b.items_backed_up, b.total_items)),
        ("Warnings", count(b.warnings, "warn")),
        ("Errors", count(b.errors, "bad")),
        ("Created", time(b.created.as_ref())),
        ("Started", time(b.started.as_ref())),
        ("Completed", time(b.completed.as_ref())),
        ("Duration", optional(b.duration_seconds.map(duration))),
        ("Expires", time(d.expiration.as_ref())),
        ("Volume data", optional(b.volume_bytes.map(human_bytes))),
        ("Files in the location", match &d.stored_bytes {
            Ok(n) => Html::from(human_bytes(*n)),
            Err(e) => Html::trusted(format!("<span class=\"muted\">unknown: {}</span>", esc(e))),
        }),
        ("Failure reason", optional(b.failure_reason.clone())),
    ]);
    let spec = key_values(vec![
        ("Namespaces", list(&d.included_namespaces, "all")),
        ("Excluded namespaces", list(&d.excluded_namespaces, "none")),
        ("Resources", list(&d.included_resources, "all")),
        ("Excluded resources", list(&d.excluded_resources, "none")),
        ("Label selector", Html::from(d.label_selector.as_str())),
        ("TTL", Html::from(d.ttl.as_str())),
        ("Extensions requested", list(&d.extensions_requested, "none")),
        ("Labels", list(&labels, "none")),
    ]);
    body += &format!("<div class=\"cols\"><section><h2>Status</h2>{}</section><section><h2>Spec</h2>{}</section></div>", summary.0, spec.0);
    if !d.validation_errors.is_empty() {
        let rows = d.validation_errors.iter().map(|e| vec![Html::from(e.as_str())]).collect();
        body += &format!("<h2>Validation errors</h2>{}", table(&["Error"], rows, "").0);
    }
    match &d.messages {
        Some(Ok(m)) => body += &format!("<h2>Warnings and errors</h2>{}", messages(m).0),
        Some(Err(e)) => body += &format!("<h2>Warnings and errors</h2>{}", unavailable(e).0),
        None => {}
    }
    let volumes = d
        .volumes
        .iter()
        .map(|v| {
            let size = if v.phase == "Completed" || v.bytes_done == v.total_bytes {
                human_bytes(v.total_bytes)
            } else {
                format!("{} of {}", human_bytes(v.bytes_done), human_bytes(v.total_bytes))
            };
            vec![
                Html::from(v.pod.as_str()),
                Html::from(v.volume.as_str()),
                Html::from(v.node.as_str()),
                badge(&v.phase),
                Html::from(size),
                optional(v.snapshot_id.as_deref().map(|s| s[..s.len().min(8)].to_string())),
                optional(v.message.clone()),
            ]
        })
        .collect();
    body += &format!(
        "<h2>Volumes</h2>{}",
        table(&["Pod", "Volume", "Node", "Phase", "#Size", "Snapshot", "Message"], volumes, "No pod volumes backed up.").0
    );
    let runs = d
        .hook_runs
        .iter()
        .map(|r| {
            vec![
                Html::from(r.pod.as_str()),
                optional(Some(r.container.clone()).filter(|c| !c.is_empty())),
                Html::from(r.phase.as_str()),
                Html::from(r.hook.as_str()),
                match (r.exit_code, &r.error) {
                    (_, Some(_)) => Html::trusted(format!("<span class=\"bad\">{}</span>", esc(&r.exit_code.map_or("–".into(), |c| c.to_string())))),
                    (Some(c), None) => Html::from(c.to_string()),
                    (None, None) => optional(None),
                },
                Html::from(duration(r.duration_millis as f64 / 1000.0)),
                optional(r.error.clone()),
            ]
        })
        .collect();
    body += &format!(
        "<h2>Hook runs</h2><p class=\"note\">{} run, {} failed{}</p>{}",
        d.hooks_attempted,
        d.hooks_failed,
        if d.hook_runs.len() < d.hooks_attempted as usize { "; the first ones listed, the backup's log has every one" } else { "" },
        table(&["Pod", "Container", "Phase", "Hook", "#Exit code", "#Duration", "Error"], runs, "No hooks ran.").0
    );
    if !d.extension_runs.is_empty() {
        let rows = d
            .extension_runs
            .iter()
            .map(|e| vec![Html::from(e.name.as_str()), Html::from(short_digest(&e.digest)), optional(Some(e.scope.clone()).filter(|s| !s.is_empty()))])
            .collect();
        body += &format!("<h2>Extensions that ran</h2>{}", table(&["Extension", "Digest", "Scope"], rows, "").0);
    }
    body += &format!("<h2>Items</h2>{}", items(&d.items).0);
    body += &format!("<h2>Restores</h2>{}", table(&RESTORE_HEADERS, restore_rows(&d.restores), "Not restored.").0);
    page(&format!("Backup {} · Stowage", b.name), namespace, &Html::trusted(body))
}

/// The resource list as a table by kind, each kind's objects listed (the first 100).
fn items(items: &Result<BTreeMap<String, Vec<String>>, String>) -> Html {
    let list = match items {
        Ok(list) => list,
        Err(e) => return unavailable(e),
    };
    const SHOWN: usize = 100;
    let total: usize = list.values().map(Vec::len).sum();
    let rows = list
        .iter()
        .map(|(kind, objects)| {
            let mut names = objects.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if objects.len() > SHOWN {
                names += &format!(", … and {} more", objects.len() - SHOWN);
            }
            vec![Html::from(kind.as_str()), Html::from(objects.len().to_string()), Html::from(names)]
        })
        .collect();
    let t = table(&["Kind", "#Count", "Objects"], rows, "No items.");
    Html::trusted(format!("<p class=\"note\">{total} items, from the backup's resource list in its location.</p>{}", t.0))
}

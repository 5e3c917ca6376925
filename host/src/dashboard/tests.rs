use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};
use stowage_api::{Backup, BackupStorageLocation, PodVolumeBackup, Restore, Schedule};

use super::{backup_page, html, overview};
use super::model::{self, DetailParts, Listed, Messages};

/// A Backup in `phase` started at `start` (RFC 3339) and taking `secs`, with more fields merged in.
fn backup(name: &str, phase: &str, start: &str, secs: i64, extra: Value) -> Backup {
    let started: jiff::Timestamp = start.parse().unwrap();
    let completed = started + jiff::SignedDuration::from_secs(secs);
    let mut b = json!({"apiVersion": "stowage.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": name, "namespace": "stowage", "creationTimestamp": start},
        "spec": {"includedNamespaces": ["shop"]},
        "status": {"phase": phase, "startTimestamp": start, "completionTimestamp": completed.to_string(),
            "progress": {"totalItems": 12, "itemsBackedUp": 11}, "warnings": 2}});
    merge(&mut b, extra);
    serde_json::from_value(b).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => b.into_iter().for_each(|(k, v)| merge(a.entry(k).or_insert(Value::Null), v)),
        (a, b) => *a = b,
    }
}

fn pvb(backup: &str, volume: &str, bytes: u64) -> PodVolumeBackup {
    serde_json::from_value(json!({"apiVersion": "stowage.io/v1alpha1", "kind": "PodVolumeBackup",
        "metadata": {"name": format!("{backup}-{volume}"), "namespace": "stowage", "labels": {"stowage.io/backup-name": backup}},
        "spec": {"node": "node-1", "pod": {"namespace": "shop", "name": "db"}, "volume": volume,
            "backupStorageLocation": "default", "repoIdentifier": "s3:x"},
        "status": {"phase": "Completed", "snapshotID": "0123456789abcdef", "progress": {"totalBytes": bytes, "bytesDone": bytes}}}))
    .unwrap()
}

fn location() -> BackupStorageLocation {
    serde_json::from_value(json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
        "metadata": {"name": "default", "namespace": "stowage"},
        "spec": {"provider": "aws", "objectStorage": {"bucket": "backups"}, "default": true,
            "config": {"s3Url": "http://minio:9000", "profile": "very-private-profile"},
            "credential": {"name": "cloud-credentials", "key": "cloud"}},
        "status": {"phase": "Available", "lastValidationTime": "2026-11-21T10:00:00Z"}}))
    .unwrap()
}

fn listed() -> Listed {
    let schedule: Schedule = serde_json::from_value(json!({"apiVersion": "stowage.io/v1alpha1", "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": "stowage"}, "spec": {"schedule": "0 3 * * *", "template": {"ttl": "72h"}},
        "status": {"phase": "Enabled", "nextRun": "2026-11-22T03:00:00Z"}}))
    .unwrap();
    let restore: Restore = serde_json::from_value(json!({"apiVersion": "stowage.io/v1alpha1", "kind": "Restore",
        "metadata": {"name": "shop-restore", "namespace": "stowage", "creationTimestamp": "2026-11-21T11:00:00Z"},
        "spec": {"backupName": "shop-2"}, "status": {"phase": "Completed", "progress": {"totalItems": 5, "itemsRestored": 5}}}))
    .unwrap();
    let extension: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "broken", "namespace": "apps",
        "labels": {"stowage.io/extension": "item-action"},
        "annotations": {"stowage.io/extension-state": "Quarantined", "stowage.io/extension-error": "script.rhai: syntax error"}},
        "data": {"script.rhai": "fn ("}}))
    .unwrap();
    Listed {
        namespace: "stowage".into(),
        backups: vec![
            backup("shop-1", "Completed", "2026-11-21T09:00:00Z", 42, json!({})),
            backup("shop-2", "PartiallyFailed", "2026-11-21T10:00:00Z", 185, json!({"metadata": {"labels": {"stowage.io/schedule-name": "nightly"}}})),
        ],
        restores: vec![restore],
        schedules: vec![schedule],
        locations: vec![location()],
        pod_volume_backups: vec![pvb("shop-2", "data", 3 * 1024 * 1024), pvb("shop-2", "logs", 1024)],
        extensions: vec![extension],
    }
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-11-21T12:00:00Z".parse().unwrap())
}

#[test]
fn the_overview_has_progress_durations_sizes_and_states_newest_first() {
    let o = listed().overview(now());
    let names: Vec<&str> = o.backups.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["shop-2", "shop-1"]);
    let b = &o.backups[0];
    assert_eq!((b.items_backed_up, b.total_items, b.warnings), (11, 12, 2));
    assert_eq!(b.duration_seconds, Some(185.0));
    assert_eq!(b.volume_bytes, Some(3 * 1024 * 1024 + 1024));
    assert_eq!(b.schedule.as_deref(), Some("nightly"));
    assert_eq!(o.backups[1].volume_bytes, None, "no volumes: size unknown, not zero");
    assert_eq!(o.extensions[0].state, "Quarantined");
    assert_eq!(o.extensions[0].last_error.as_deref(), Some("script.rhai: syntax error"));

    let page = overview::overview(&o);
    for text in ["shop-1", "shop-2", "PartiallyFailed", "11/12", "3m 05s", "42s", "3.0 MiB (2 vol.)", "nightly",
        "<code>0 3 * * *</code>", "Quarantined", "script.rhai: syntax error", "shop-restore", "href=\"/backups/shop-2\""] {
        assert!(page.contains(text), "{text:?} missing from the overview:\n{page}");
    }
    assert_eq!(page.matches("<svg class=\"plot\"").count(), 2, "{page}");
    assert_eq!(page.matches("<circle").count(), 2 + 1, "two durations and one size: {page}");
}

#[test]
fn locations_are_shown_without_their_config_or_credentials() {
    let o = listed().overview(now());
    let json = serde_json::to_string(&o).unwrap();
    let page = overview::overview(&o);
    for secretish in ["very-private-profile", "cloud-credentials", "minio:9000"] {
        assert!(!json.contains(secretish) && !page.contains(secretish), "{secretish} shown:\n{json}\n{page}");
    }
    assert_eq!(o.locations[0].phase, "Available");
    assert_eq!(o.locations[0].access_mode, "ReadWrite");
}

#[test]
fn strings_from_the_cluster_are_escaped() {
    let evil = "<script>alert(1)</script>";
    let b = backup("shop-3", "PartiallyFailed", "2026-11-21T09:00:00Z", 5, json!({
        "metadata": {"labels": {"note": evil}},
        "spec": {"includedNamespaces": [evil]},
        "status": {"failureReason": evil, "validationErrors": [evil],
            "hookStatus": {"hooksAttempted": 1, "hooksFailed": 1,
                "runs": [{"pod": "shop/db", "container": "db", "phase": "pre", "hook": format!("spec {evil}"),
                    "exitCode": 3, "durationMillis": 12, "error": "<img src=x onerror=alert(2)>"}]}}}));
    let messages = Messages { warnings: BTreeMap::from([("shop".to_string(), vec![format!("configmap a: {evil}")])]), ..Default::default() };
    let items = BTreeMap::from([(format!("v1/{evil}"), vec![format!("shop/{evil}")])]);
    let parts = DetailParts { items: Ok(items), messages: Some(Ok(messages)), stored_bytes: Err(evil.to_string()) };
    let detail = model::backup_detail(&b, &[pvb("shop-3", "data", 10)], &[], parts);
    let page = backup_page::backup(&detail, "stowage");
    assert!(!page.contains("<script") && !page.contains("<img"), "markup from the cluster got through:\n{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(page.contains("note=&lt;script&gt;"), "the label is shown, escaped: {page}");
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"), "{page}");
    assert!(page.contains("configmap a: &lt;script&gt;"), "the warning message is shown, escaped: {page}");

    let mut listed = listed();
    listed.backups.push(b);
    let overview = overview::overview(&listed.overview(now()));
    assert!(!overview.contains("<script"), "{overview}");
    assert!(html::problem("Backup not found", "stowage", evil).contains("&lt;script&gt;"));
}

#[test]
fn a_backup_page_lists_volumes_hooks_items_and_restores() {
    let l = listed();
    let b = backup("shop-2", "PartiallyFailed", "2026-11-21T10:00:00Z", 185, json!({
        "metadata": {"labels": {"stowage.io/schedule-name": "nightly"}},
        "status": {"hookStatus": {"hooksAttempted": 2,
            "runs": [{"pod": "shop/db", "container": "db", "phase": "pre", "hook": "annotation", "exitCode": 0, "durationMillis": 1500}]}}}));
    let items = BTreeMap::from([("v1/ConfigMap".to_string(), vec!["shop/web".to_string(), "shop/db".to_string()])]);
    let parts = DetailParts { items: Ok(items), messages: Some(Err("the location did not answer".into())), stored_bytes: Ok(2048) };
    let detail = model::backup_detail(&b, &l.pod_volume_backups, &l.restores, parts);
    assert_eq!(detail.volumes.len(), 2);
    assert_eq!(detail.restores.len(), 1);
    let page = backup_page::backup(&detail, "stowage");
    for text in ["Backup shop-2", "shop/db", "data", "3.0 MiB", "01234567", "annotation", "1.5s", "2 run, 0 failed", "v1/ConfigMap",
        "shop/web, shop/db", "2 items", "shop-restore", "2.0 KiB", "Not available: the location did not answer", "nightly"] {
        assert!(page.contains(text), "{text:?} missing from the backup page:\n{page}");
    }
}

#[test]
fn durations_read_at_a_glance() {
    assert_eq!(html::duration(0.25), "250ms");
    assert_eq!(html::duration(1.5), "1.5s");
    assert_eq!(html::duration(42.0), "42s");
    assert_eq!(html::duration(185.0), "3m 05s");
    assert_eq!(html::duration(7260.0), "2h 01m");
}

//! Schedules, garbage collection and their metrics through the real server binary: a schedule
//! creating named backups from its template, one catch-up after the server was down and no run
//! taken twice, pausing, `schedule get/describe`; expired backups deleted with their restores
//! while others still restore; a ReadOnly location's expired backup labelled and kept.

mod e2e;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use e2e::apps::config_map;
use e2e::{wait_for, Env, NS};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::requests::DeleteBackupRequest;
use stowage_api::{Backup, Restore, Schedule};

async fn shop(env: &Env) {
    env.create_namespace("shop").await;
    for name in ["web", "db"] {
        env.create_in::<ConfigMap>("shop", config_map(name, json!({"app": name}))).await;
    }
}

/// The schedule's backups, by name.
async fn backups_of(env: &Env, schedule: &str) -> Vec<Backup> {
    let api: Api<Backup> = Api::namespaced(env.client.clone(), NS);
    let lp = ListParams::default().labels(&format!("stowage.io/schedule-name={schedule}"));
    let mut all = api.list(&lp).await.unwrap().items;
    all.sort_by_key(|b| b.name_any());
    all
}

/// The run time a scheduled backup's name carries.
fn stamp(schedule: &str, backup: &str) -> Timestamp {
    let s = backup.strip_prefix(&format!("{schedule}-")).unwrap_or_else(|| panic!("{backup} is not {schedule}-<stamp>"));
    assert_eq!(s.len(), 14, "{backup}");
    let iso = format!("{}-{}-{}T{}:{}:{}Z", &s[0..4], &s[4..6], &s[6..8], &s[8..10], &s[10..12], &s[12..14]);
    iso.parse().unwrap_or_else(|e| panic!("{backup}: {e}"))
}

fn cli(env: &Env, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage")).args(args).arg("--kubeconfig").arg(&env.kubeconfig).output().unwrap();
    assert!(out.status.success(), "stowage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn set_paused(env: &Env, name: &str, paused: bool) {
    let api: Api<Schedule> = Api::namespaced(env.client.clone(), NS);
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": paused}}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_takes_named_backups_makes_up_downtime_once_and_pauses() {
    let mut env = Env::start().await;
    shop(&env).await;
    // An always-on filter that keeps everything: its calls show in the metrics.
    env.create::<ConfigMap>(json!({"metadata": {"name": "keep-all", "namespace": NS, "labels": {"stowage.io/extension": "item-filter"}},
        "data": {"script.rhai": "fn filter(ctx, item) { true }\n"}})).await;
    env.start_server();
    let out = cli(&env, &["schedule", "create", "shop", "--schedule", "@every 2s", "--include-namespaces", "shop", "--ttl", "1h",
        "--labels", "team=web"]);
    assert!(out.contains("Schedule \"shop\" created"), "{out}");
    let created = env.get_in::<Schedule>(NS, "shop").await.unwrap()["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    let created: Timestamp = created.parse().unwrap();

    // Backups named after their runs, from the template, labelled with the schedule.
    let first = wait_for("two completed scheduled backups", 60, || async {
        let done: Vec<Backup> = backups_of(&env, "shop").await.into_iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(stowage_api::BackupPhase::Completed)).collect();
        (done.len() >= 2).then_some(done)
    }).await;
    for b in &first {
        let at = stamp("shop", &b.name_any());
        let since = at.duration_since(created).as_secs();
        assert!(since >= 2 && since % 2 == 0, "{}: runs are every 2s from the schedule's creation {created} (skipImmediately defaults to true)", b.name_any());
        assert_eq!(b.spec.included_namespaces, ["shop"]);
        assert_eq!(b.spec.ttl, "1h0m0s");
    }
    let status = env.get_in::<Schedule>(NS, "shop").await.unwrap()["status"].clone();
    assert_eq!(status["phase"], "Enabled", "{status}");
    assert!(status["lastBackup"].is_string() && status["nextRun"].is_string(), "{status}");

    // `schedule get` and `describe`.
    let table = cli(&env, &["schedule", "get"]);
    assert!(table.starts_with("NAME ") && table.contains("NEXT RUN") && table.contains("LAST BACKUP"), "{table}");
    let row = table.lines().find(|l| l.starts_with("shop ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("Enabled") && row.contains("@every 2s") && row.contains("false"), "{row}");
    let text = cli(&env, &["schedule", "describe", "shop"]);
    assert!(text.contains("Schedule:") && text.contains("@every 2s") && text.contains("Next run:"), "{text}");
    assert!(text.contains("Included namespaces:") && text.contains("team=web"), "{text}");

    // The server is down for ~5s (two or three runs): one catch-up backup, then on schedule.
    env.kill_server();
    let before: BTreeSet<String> = backups_of(&env, "shop").await.iter().map(|b| b.name_any()).collect();
    let last_before = before.iter().map(|n| stamp("shop", n)).max().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = Timestamp::now();
    env.start_server();
    wait_for("scheduled backups after the restart", 30, || async {
        let later = backups_of(&env, "shop").await.iter().filter(|b| stamp("shop", &b.name_any()) > restarted).count();
        (later >= 2).then_some(())
    }).await;
    let names: Vec<String> = backups_of(&env, "shop").await.iter().map(|b| b.name_any()).collect();
    let missed = restarted.duration_since(last_before).as_secs() / 2;
    assert!(missed >= 2, "the server was down for at least two runs ({last_before}..{restarted})");
    let made_up: Vec<&String> = names.iter()
        .filter(|n| { let t = stamp("shop", n); t > last_before && t <= restarted }).collect();
    // One backup stands for all the missed runs (none, if the server came up just as the next
    // run was due and that run stands for them).
    assert!(made_up.len() <= 1, "{missed} runs missed while down are made up once, not back-filled: {made_up:?} (down after {last_before}, back at {restarted})");
    let first_after = names.iter().map(|n| stamp("shop", n)).filter(|t| *t > last_before).min().unwrap();
    assert!(first_after.duration_since(restarted).as_secs() <= 3, "the catch-up comes at once, not at a later run: {first_after}");
    // Every run is at most one backup, and each one is on the schedule's 2s grid.
    for n in &names {
        assert_eq!(stamp("shop", n).duration_since(created).as_secs() % 2, 0, "{n}");
    }

    // Paused: nothing more; unpaused: nothing for the paused time.
    set_paused(&env, "shop", true).await;
    wait_for("the schedule to be seen paused", 20, || async {
        env.get_in::<Schedule>(NS, "shop").await?["status"]["pausedAt"].as_str().map(|_| ())
    }).await;
    let paused_at = Timestamp::now();
    let count = backups_of(&env, "shop").await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backups_of(&env, "shop").await.len(), count, "a paused schedule creates no backups");
    set_paused(&env, "shop", false).await;
    let unpaused = Timestamp::now();
    wait_for("a backup after unpausing", 20, || async {
        (backups_of(&env, "shop").await.len() > count).then_some(())
    }).await;
    for b in backups_of(&env, "shop").await {
        let t = stamp("shop", &b.name_any());
        assert!(!(t > paused_at.checked_add(Duration::from_secs(1)).unwrap() && t < unpaused.checked_sub(Duration::from_secs(1)).unwrap()),
            "{} back-fills the paused time ({paused_at}..{unpaused})", b.name_any());
    }

    // Every metric the dashboard queries is served, and the schedule's series are there.
    let metrics = env.metrics().await;
    assert!(metrics.contains(r#"stowage_backup_last_status{schedule="shop"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"stowage_backup_last_successful_timestamp{schedule="shop"}"#), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with(r#"stowage_schedule_backup_attempt_total{schedule="shop"}"#)), "{metrics}");
    assert!(metrics.contains(r#"stowage_schedule_backup_failure_total{schedule="shop"} 0"#), "{metrics}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring/grafana-dashboard.json")).unwrap(),
    ).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<String> = metric_names(expr);
            assert!(!names.is_empty(), "panel {}: {expr} uses no Stowage metric", panel["title"]);
            queried.extend(names);
        }
    }
    for name in &queried {
        let base = ["_total", "_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(metrics.contains(&format!("# TYPE {base} ")), "the dashboard queries {name}, which the server does not export:\n{metrics}");
    }
}

/// The `stowage_...` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("stowage_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_backups_go_with_their_restores_and_others_still_restore() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server_with(&["--garbage-collection-frequency", "2s"]);
    for name in ["old", "keep"] {
        let status = env.backup(name, json!({"includedNamespaces": ["shop"], "ttl": "1h"})).await;
        assert_eq!(status["phase"], "Completed", "{name}: {status}\n{}", env.server_log());
    }
    let status = env.restore("old-restore", json!({"backupName": "old", "namespaceMapping": {"shop": "shop-copy"}})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(!env.bucket_keys("restores/old-restore/").await.is_empty(), "the restore wrote its log and results");
    let keep_keys = env.bucket_keys("backups/keep/").await;

    // "old" expires: garbage collection deletes it, its files and its restore.
    let api: Api<Backup> = Api::namespaced(env.client.clone(), NS);
    api.patch_status("old", &PatchParams::default(), &Patch::Merge(json!({"status": {"expiration": "2020-01-01T00:00:00Z"}})))
        .await
        .unwrap();
    wait_for("the expired backup to be deleted", 60, || async {
        api.get_opt("old").await.unwrap().is_none().then_some(())
    }).await;
    assert!(env.bucket_keys("backups/old/").await.is_empty(), "its directory is gone");
    assert!(env.bucket_keys("restores/old-restore/").await.is_empty(), "its restore's directory is gone");
    assert!(env.get_in::<Restore>(NS, "old-restore").await.is_none(), "its Restore is gone");
    let requests: Api<DeleteBackupRequest> = Api::namespaced(env.client.clone(), NS);
    let made = requests.list(&ListParams::default().labels("stowage.io/backup-name=old")).await.unwrap().items;
    assert_eq!(made.len(), 1, "one deletion request: {made:?}");
    assert!(env.metrics().await.contains(r#"stowage_gc_deletion_requests_total{reason="expired"} 1"#));

    // The other backup is untouched and restores.
    assert_eq!(env.bucket_keys("backups/keep/").await, keep_keys);
    env.delete_namespace_and_wait("shop").await;
    let status = env.restore("keep-restore", json!({"backupName": "keep"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    assert!(env.get_in::<ConfigMap>("shop", "web").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_backup_in_a_read_only_location_is_labelled_and_kept() {
    let mut writer = Env::start().await;
    shop(&writer).await;
    writer.start_server();
    let status = writer.backup("legacy", json!({"includedNamespaces": ["shop"], "ttl": "1h"})).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}", writer.server_log());
    writer.kill_server();

    // Another cluster reads the bucket as a ReadOnly location: the backup syncs in.
    let mut reader = writer.second_cluster("ReadOnly").await;
    reader.start_server_with(&["--garbage-collection-frequency", "1s"]);
    let api: Api<Backup> = Api::namespaced(reader.client.clone(), NS);
    wait_for("the backup to sync", 60, || async {
        let b = api.get_opt("legacy").await.ok()??;
        (b.status?.phase? == stowage_api::BackupPhase::Completed).then_some(())
    }).await;
    let keys = reader.bucket_keys("").await;
    api.patch_status("legacy", &PatchParams::default(), &Patch::Merge(json!({"status": {"expiration": "2020-01-01T00:00:00Z"}})))
        .await
        .unwrap();
    wait_for("the gc-failure label", 30, || async {
        let b = api.get_opt("legacy").await.ok()??;
        (b.labels().get("stowage.io/gc-failure").map(String::as_str) == Some("LocationReadOnly")).then_some(())
    }).await;
    // Several GC and sync periods later: still there, still labelled, the bucket untouched,
    // no deletion requested.
    let uid = api.get("legacy").await.unwrap().uid();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = api.get("legacy").await.unwrap();
    assert_eq!(b.uid(), uid, "the same Backup object: not deleted and synced back");
    assert_eq!(b.labels().get("stowage.io/gc-failure").map(String::as_str), Some("LocationReadOnly"));
    assert_eq!(reader.bucket_keys("").await, keys, "nothing written to or deleted from a ReadOnly location");
    let requests: Api<DeleteBackupRequest> = Api::namespaced(reader.client.clone(), NS);
    assert!(requests.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(reader.metrics().await.contains(r#"stowage_gc_blocked_backups{reason="LocationReadOnly"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_based_retention_deletes_the_oldest_scheduled_backups() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server();
    cli(&env, &["schedule", "create", "kept", "--schedule", "@every 2s", "--include-namespaces", "shop", "--keep-last", "2"]);
    // Wait for the fifth run: by then retention has dropped the first ones.
    let created: Timestamp =
        env.get_in::<Schedule>(NS, "kept").await.unwrap()["metadata"]["creationTimestamp"].as_str().unwrap().parse().unwrap();
    let fifth = created.checked_add(Duration::from_secs(10)).unwrap();
    let first = format!("kept-{}", created.checked_add(Duration::from_secs(2)).unwrap().strftime("%Y%m%d%H%M%S"));
    wait_for("the first scheduled backup to exist", 30, || async {
        backups_of(&env, "kept").await.iter().any(|b| b.name_any() == first).then_some(())
    }).await;
    wait_for("the fifth run", 60, || async {
        backups_of(&env, "kept").await.iter().any(|b| stamp("kept", &b.name_any()) >= fifth).then_some(())
    }).await;
    set_paused(&env, "kept", true).await;
    let left = wait_for("retention to leave the newest backups", 60, || async {
        let all = backups_of(&env, "kept").await;
        (all.len() <= 3).then_some(all)
    }).await;
    let names: Vec<String> = left.iter().map(|b| b.name_any()).collect();
    assert!(!names.contains(&first), "the oldest backup is deleted: {names:?}");
    assert!(env.bucket_keys(&format!("backups/{first}/")).await.is_empty(), "with its files");
    assert!(names.iter().any(|n| stamp("kept", n) >= fifth), "the newest stays: {names:?}");
    let metrics = env.metrics().await;
    let requested = metrics.lines().find_map(|l| l.strip_prefix(r#"stowage_gc_deletion_requests_total{reason="retention"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(requested.is_some_and(|n| n >= 2.0), "retention requested the deletions: {requested:?}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_due_while_the_previous_backup_runs_are_skipped_and_bad_schedules_say_why() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server();
    // A schedule the CLI would refuse, applied directly: FailedValidation, naming the field.
    env.create::<Schedule>(json!({"metadata": {"name": "typo", "namespace": NS}, "spec": {"schedule": "0 3 * *"}})).await;
    let status = wait_for("the invalid schedule's status", 30, || async {
        let s = env.get_in::<Schedule>(NS, "typo").await?;
        (s["status"]["phase"] == "FailedValidation").then(|| s["status"].clone())
    }).await;
    let errors = status["validationErrors"].to_string();
    assert!(errors.contains("spec.schedule") && errors.contains("0 3 * * *"), "{status}");

    cli(&env, &["schedule", "create", "busy", "--schedule", "@every 2s", "--include-namespaces", "shop"]);
    let first = wait_for("a completed scheduled backup", 30, || async {
        backups_of(&env, "busy").await.into_iter()
            .find(|b| b.status.as_ref().and_then(|s| s.phase) == Some(stowage_api::BackupPhase::Completed))
    }).await;
    // The backup looks as if it were still running: the next runs are skipped, not queued.
    let api: Api<Backup> = Api::namespaced(env.client.clone(), NS);
    let set_phase = |phase: &'static str| {
        let api = api.clone();
        let name = first.name_any();
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": phase}}))).await.unwrap();
        }
    };
    set_phase("InProgress").await;
    let running_since = Timestamp::now();
    let skipped = wait_for("a skipped run", 30, || async {
        let s = env.get_in::<Schedule>(NS, "busy").await?;
        let t: Timestamp = s["status"]["lastSkipped"].as_str()?.parse().ok()?;
        (t > running_since).then_some(t)
    }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made_while_running: Vec<String> = backups_of(&env, "busy").await.iter().map(|b| b.name_any())
        .filter(|n| stamp("busy", n) > running_since.checked_add(Duration::from_secs(1)).unwrap()).collect();
    assert!(made_while_running.is_empty(), "no backup while the previous one runs: {made_while_running:?}");
    let metrics = env.metrics().await;
    assert!(!metrics.contains(r#"stowage_schedule_run_skipped_total{schedule="busy"} 0"#)
        && metrics.contains(r#"stowage_schedule_run_skipped_total{schedule="busy"}"#), "{metrics}");
    // Finished: the schedule carries on at its next due time; the skipped runs are not made up.
    set_phase("Completed").await;
    let finished = Timestamp::now();
    let next = wait_for("a backup after the previous one finished", 30, || async {
        backups_of(&env, "busy").await.into_iter().map(|b| stamp("busy", &b.name_any())).find(|t| *t > skipped)
    }).await;
    assert!(next >= finished.checked_sub(Duration::from_secs(1)).unwrap(), "the next run is a new one ({next}), not a skipped one made up (skipped {skipped}, finished {finished})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_backup_whose_location_is_missing_is_labelled_then_collected_once_it_exists() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server_with(&["--garbage-collection-frequency", "2s"]);
    let status = env.backup("stray", json!({"includedNamespaces": ["shop"], "ttl": "1h"})).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let api: Api<Backup> = Api::namespaced(env.client.clone(), NS);
    api.patch("stray", &PatchParams::default(), &Patch::Merge(json!({"spec": {"storageLocation": "archive"}}))).await.unwrap();
    api.patch_status("stray", &PatchParams::default(), &Patch::Merge(json!({"status": {"expiration": "2020-01-01T00:00:00Z"}})))
        .await
        .unwrap();
    wait_for("the LocationNotFound label", 30, || async {
        let b = api.get_opt("stray").await.ok()??;
        (b.labels().get("stowage.io/gc-failure").map(String::as_str) == Some("LocationNotFound")).then_some(())
    }).await;
    // Retried every period, quietly: one warning, not one per look.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(api.get_opt("stray").await.unwrap().is_some());
    assert_eq!(env.server_log().matches("expired backup kept").count(), 1, "{}", env.server_log());
    // The location appears (nothing else changes on the backup): the next look deletes it.
    env.apply_location("archive", &env.bucket, false, "ReadWrite").await;
    wait_for("the backup to be collected", 30, || async {
        api.get_opt("stray").await.unwrap().is_none().then_some(())
    }).await;
    assert!(env.bucket_keys("backups/stray/").await.is_empty());
    let metrics = env.metrics().await;
    let runs = metrics.lines().find_map(|l| l.strip_prefix("stowage_gc_runs_total ")).and_then(|v| v.trim().parse::<f64>().ok());
    assert!(runs.is_some_and(|n| n >= 2.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_schedule_that_owns_its_backups_deletes_them_with_their_files() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server();
    cli(&env, &["schedule", "create", "owner", "--schedule", "@every 2s", "--include-namespaces", "shop",
        "--use-owner-references-in-backup"]);
    cli(&env, &["schedule", "create", "other", "--schedule", "@every 2s", "--include-namespaces", "shop"]);
    let owned = wait_for("two completed backups of each schedule", 60, || async {
        let done = |all: Vec<Backup>| all.into_iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(stowage_api::BackupPhase::Completed)).count();
        let (o, t) = (backups_of(&env, "owner").await, backups_of(&env, "other").await);
        (done(o.clone()) >= 2 && done(t) >= 2).then_some(o)
    }).await;
    for b in &owned {
        let refs = b.metadata.owner_references.clone().unwrap_or_default();
        assert!(refs.iter().any(|r| r.kind == "Schedule" && r.name == "owner" && r.controller == Some(true)), "{}: {refs:?}", b.name_any());
    }
    assert!(backups_of(&env, "other").await.iter().all(|b| b.metadata.owner_references.is_none()));
    cli(&env, &["schedule", "pause", "other"]);
    cli(&env, &["schedule", "delete", "owner", "--confirm"]);
    wait_for("the schedule and its backups to be gone", 60, || async {
        let gone = env.get_in::<Schedule>(NS, "owner").await.is_none() && backups_of(&env, "owner").await.is_empty();
        gone.then_some(())
    }).await;
    for b in &owned {
        assert!(env.bucket_keys(&format!("backups/{}/", b.name_any())).await.is_empty(), "{}'s files are deleted", b.name_any());
    }
    // Sync does not bring them back; the other schedule's backups stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(backups_of(&env, "owner").await.is_empty());
    assert!(backups_of(&env, "other").await.len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_backup_exists_is_not_taken_again() {
    let mut env = Env::start().await;
    shop(&env).await;
    env.start_server();
    cli(&env, &["schedule", "create", "once", "--schedule", "@every 1h", "--include-namespaces", "shop",
        "--skip-immediately=false"]);
    let first = wait_for("the immediate backup", 30, || async {
        let all = backups_of(&env, "once").await;
        let s = env.get_in::<Schedule>(NS, "once").await?;
        (all.len() == 1 && s["status"]["lastBackup"].is_string()).then(|| all[0].clone())
    }).await;
    let created: Timestamp =
        env.get_in::<Schedule>(NS, "once").await.unwrap()["metadata"]["creationTimestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(stamp("once", &first.name_any()), created, "skipImmediately: false backs up at creation");
    // As if the server had stopped after creating the backup and before recording the run.
    env.kill_server();
    let api: Api<Schedule> = Api::namespaced(env.client.clone(), NS);
    api.patch_status("once", &PatchParams::default(), &Patch::Merge(json!({"status": {"lastBackup": null}}))).await.unwrap();
    env.start_server();
    wait_for("the run to be recorded again", 30, || async {
        env.get_in::<Schedule>(NS, "once").await?["status"]["lastBackup"].is_string().then_some(())
    }).await;
    let all = backups_of(&env, "once").await;
    assert_eq!(all.len(), 1, "the run's backup exists: it is not taken twice: {:?}", all.iter().map(|b| b.name_any()).collect::<Vec<_>>());
    assert_eq!(all[0].uid(), first.uid(), "the same backup");
    assert!(env.server_log().contains("run already taken"), "{}", env.server_log());
}

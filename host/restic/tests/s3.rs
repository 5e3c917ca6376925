//! A backup and restore over S3 (moto on loopback, see stowage-test-support), checked by the
//! `restic` CLI reading the same bucket.

mod common;

use common::*;
use std::sync::Arc;
use stowage_restic::{Repo, RepoConfig};
use stowage_storage::{ObjectStore, S3Config, S3Credentials, S3Store};
use stowage_test_support::{unique_name, S3Server};

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_over_s3_readable_by_restic() {
    let server = S3Server::shared();
    let bucket = unique_name("stowage-restic");
    let mut config = S3Config::new("default", &bucket);
    config.region = server.region().to_string();
    config.endpoint = Some(server.endpoint().to_string());
    config.force_path_style = true;
    config.credentials = Some(S3Credentials::new(server.access_key(), server.secret_key()));
    let s3 = S3Store::new(config).unwrap();
    s3.create_bucket().await.unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(s3);

    let cfg = RepoConfig {
        store: store.clone(),
        namespace: "apps".into(),
        password: PASSWORD.into(),
    };
    let (repo, created) = Repo::open_or_init(cfg.clone()).await.unwrap();
    assert!(created);
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    make_volume(&volume);
    let first = back_up(&repo, &volume, "u1").await;
    std::fs::write(volume.join("added"), b"more").unwrap();
    let second = back_up(&repo, &volume, "u1").await;
    assert_eq!(second.parent.as_deref(), Some(first.snapshot_id.as_str()));

    // A fresh open (another agent) restores it.
    let other = Repo::open(cfg).await.unwrap();
    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    restore_into(&other, &second.snapshot_id, &target).await;
    assert_same_tree(&volume, &target);
    assert!(store.list("restic/apps/locks/").await.unwrap().is_empty());

    // Maintenance over S3: the big file's data goes once no snapshot has it.
    std::fs::remove_file(volume.join("nested/big.bin")).unwrap();
    let third = back_up(&repo, &volume, "u1").await;
    repo.forget(&[first.snapshot_id.clone(), second.snapshot_id.clone()])
        .await
        .unwrap();
    let opts = stowage_restic::MaintenanceOptions {
        max_unused_percent: 0.0,
        dry_run: false,
    };
    let summary = repo.maintain(opts).await.unwrap();
    assert!(summary.bytes_freed > 2 << 20, "{summary:?}");
    assert!(store.list("restic/apps/locks/").await.unwrap().is_empty());

    let Some(restic) = restic() else { return };
    let repo_url = format!("s3:{}/{bucket}/restic/apps", server.endpoint());
    let mut cmd = restic_cmd(&restic, &repo_url, PASSWORD);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .env("AWS_DEFAULT_REGION", server.region())
        .args(["check", "--read-data"]);
    run_ok(&mut cmd);
    let mut cmd = restic_cmd(&restic, &repo_url, PASSWORD);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .args(["snapshots", "--json"]);
    let json = run_ok(&mut cmd);
    assert!(json.contains(&third.snapshot_id), "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{json}");
}

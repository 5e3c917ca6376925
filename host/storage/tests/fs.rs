//! FsStore against a real temporary directory.

mod common;

use bytes::Bytes;
use common::{digest, exercise_ranges, exercise_store, FailingReader, PatternReader};
use std::path::Path;
use stowage_storage::{open, FsStore, LocationSpec, ObjectStore, StorageError};

fn store_in(dir: &Path) -> FsStore {
    FsStore::new("local", dir.join("root"))
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn behaves_like_an_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.create_root().await.unwrap();
    exercise_store(&store).await;
    exercise_ranges(&store).await;
    // Deleting the last object removes its now-empty directories, as on S3.
    assert_eq!(
        files_under(dir.path()),
        ["root/restic/ns1/config", "root/top.txt"]
    );
    assert!(!dir.path().join("root/backups").exists());
}

#[tokio::test]
async fn keys_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.create_root().await.unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();

    let attacks = [
        "../secret",
        "a/../../secret",
        "..",
        "/etc/passwd",
        "a//b",
        "./a",
        "a/.",
        "a/",
        "",
        "..\\secret",
        "a\0b",
    ];
    for key in attacks {
        let data = Bytes::from_static(b"pwned");
        let results = [
            store.put(key, data).await.err(),
            store.put_stream(key, &mut &b"pwned"[..], None).await.err(),
            store.get(key).await.err(),
            store.get_stream(key).await.err(),
            store.head(key).await.err(),
            store.exists(key).await.err(),
            store.delete(key).await.err(),
        ];
        for (op, err) in results.into_iter().enumerate() {
            match err {
                Some(StorageError::InvalidKey { location, .. }) => assert_eq!(location, "local"),
                other => panic!("operation {op} on {key:?}: expected InvalidKey, got {other:?}"),
            }
        }
    }
    for prefix in ["../", "..", "/", "/etc", "a/../.."] {
        assert!(matches!(
            store.list(prefix).await,
            Err(StorageError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.list_dirs(prefix).await,
            Err(StorageError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.delete_prefix(prefix).await,
            Err(StorageError::InvalidKey { .. })
        ));
    }
    assert_eq!(
        std::fs::read(dir.path().join("secret")).unwrap(),
        b"outside"
    );
    assert_eq!(
        files_under(dir.path()),
        ["secret"],
        "nothing may be written anywhere"
    );
}

#[tokio::test]
async fn listing_does_not_follow_symlinks_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("leak"), b"x").unwrap();
    let store = store_in(dir.path());
    store
        .put("backups/a", Bytes::from_static(b"a"))
        .await
        .unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join("root/backups/link")).unwrap();
    let keys: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["backups/a"]);
}

#[tokio::test]
async fn failed_stream_leaves_previous_object_and_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store
        .put("backups/b.tar.zst", Bytes::from_static(b"old"))
        .await
        .unwrap();

    let err = store
        .put_stream("backups/b.tar.zst", &mut FailingReader::new(3 << 20), None)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(
        message.starts_with("storage location \"local\": writing \"backups/b.tar.zst\""),
        "{message}"
    );
    assert!(message.contains("simulated producer failure"), "{message}");
    assert_eq!(store.get("backups/b.tar.zst").await.unwrap(), &b"old"[..]);
    assert_eq!(files_under(dir.path()), ["root/backups/b.tar.zst"]);
}

#[tokio::test]
async fn streams_large_objects_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let len = 24 << 20;
    let written = store
        .put_stream("big", &mut PatternReader::new(len), Some(len))
        .await
        .unwrap();
    assert_eq!(written, len);
    let expected = digest(PatternReader::new(len)).await;
    assert_eq!(
        digest(store.get_stream("big").await.unwrap()).await,
        expected
    );
    assert_eq!(store.head("big").await.unwrap().size, len);
}

#[tokio::test]
async fn in_progress_writes_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store
        .put("backups/a", Bytes::from_static(b"a"))
        .await
        .unwrap();
    // What a crashed writer leaves behind.
    std::fs::write(
        dir.path().join("root/backups/.stowage-tmp.1.0.b"),
        b"partial",
    )
    .unwrap();
    let keys: Vec<_> = store
        .list("backups/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["backups/a"]);
}

#[tokio::test]
async fn missing_root_makes_the_location_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let root = dir.path().join("root").display().to_string();
    let expected = format!(
        "storage location \"local\": directory {root} does not exist; \
         create it or fix spec.objectStorage.bucket"
    );
    assert_eq!(store.check().await.unwrap_err().to_string(), expected);
    assert_eq!(store.list("").await.unwrap_err().to_string(), expected);
    assert!(store.get("x").await.unwrap_err().is_not_found());

    store.create_root().await.unwrap();
    store.check().await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn open_builds_a_filesystem_store_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LocationSpec {
        name: "embedded".into(),
        provider: "filesystem".into(),
        bucket: dir.path().display().to_string(),
        prefix: Some("cluster-a/".into()),
        ..Default::default()
    };
    let store = open(&spec).unwrap();
    store
        .put("backups/x/stowage-backup.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        files_under(dir.path()),
        ["cluster-a/backups/x/stowage-backup.json"]
    );
    assert_eq!(store.location(), "embedded");
}

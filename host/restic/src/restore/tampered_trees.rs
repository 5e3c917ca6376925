//! Restores of trees Stowage and restic never write, made with rustic_core's archiver from
//! entries a test chooses: a tree that names an entry twice is refused.

use crate::{Repo, RepoConfig};
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{BackupOptions, ReadSource, ReadSourceEntry, RusticResult, SnapshotOptions};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stowage_storage::FsStore;
use tokio_util::sync::CancellationToken;

/// Entries as a backup source: path, node, contents.
struct Entries(Vec<(PathBuf, Node, Vec<u8>)>);

impl ReadSource for Entries {
    type Open = Cursor<Vec<u8>>;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let entries: Vec<_> = self
            .0
            .iter()
            .map(|(path, node, data)| {
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: node.clone(),
                    open: node.is_file().then(|| Cursor::new(data.clone())),
                })
            })
            .collect();
        entries.into_iter()
    }
}

fn node(path: &str, node_type: NodeType, size: u64) -> Node {
    let name = Path::new(path).file_name().unwrap();
    let meta = Metadata {
        mode: Some(0o644),
        size,
        ..Default::default()
    };
    Node::new_node(name, node_type, meta)
}

fn file(path: &str, data: &str) -> (PathBuf, Node, Vec<u8>) {
    (PathBuf::from(path), node(path, NodeType::File, data.len() as u64), data.as_bytes().to_vec())
}

fn dir(path: &str) -> (PathBuf, Node, Vec<u8>) {
    (PathBuf::from(path), node(path, NodeType::Dir, 0), Vec::new())
}

fn symlink(path: &str, target: &Path) -> (PathBuf, Node, Vec<u8>) {
    (PathBuf::from(path), node(path, NodeType::from_link(target), 0), Vec::new())
}

/// A snapshot of `/vol` holding `entries` as they are, in their order.
async fn snapshot_of(repo: &Repo, entries: Vec<(PathBuf, Node, Vec<u8>)>) -> String {
    repo.with_rustic(move |r| {
        let r = r.to_indexed_ids().unwrap();
        let snap = SnapshotOptions::default().to_snapshot().unwrap();
        let opts = BackupOptions::default();
        let saved = r.archive(&opts, &Entries(entries), snap, &[PathBuf::from("/vol")]).unwrap();
        saved.id.to_hex().to_string()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_naming_an_entry_twice_is_refused_naming_the_path() {
    let dir_ = tempfile::tempdir().unwrap();
    let store = FsStore::new("default", dir_.path().join("bucket"));
    store.create_root().await.unwrap();
    let cfg = RepoConfig {
        store: Arc::new(store),
        namespace: "ns".into(),
        password: "pw".into(),
    };
    let repo = Repo::open_or_init(cfg).await.unwrap().0;
    let outside = dir_.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    let restore = |id: String, target: PathBuf| {
        let repo = repo.clone();
        async move {
            std::fs::create_dir_all(&target).unwrap();
            repo.restore(&id, &target, Arc::new(|_| {}), CancellationToken::new()).await
        }
    };

    // An honest tree made the same way restores: the archiver keeps what it is given.
    let honest = snapshot_of(&repo, vec![dir("/vol/d"), file("/vol/d/x", "x"), file("/vol/same", "one")]).await;
    let target = dir_.path().join("honest");
    restore(honest, target.clone()).await.unwrap();
    assert_eq!(std::fs::read(target.join("same")).unwrap(), b"one");
    assert_eq!(std::fs::read(target.join("d/x")).unwrap(), b"x");

    // Two files of one name: which would win is the tree's order.
    let twice = snapshot_of(&repo, vec![file("/vol/same", "one"), file("/vol/same", "two")]).await;
    let err = restore(twice, dir_.path().join("twice")).await.unwrap_err().to_string();
    assert!(err.contains("\"same\" twice") && err.contains("tampered"), "{err}");

    // A directory, then a symlink to the outside of that name, then the directory's name again
    // with contents: nothing goes through the symlink.
    let tricky = snapshot_of(
        &repo,
        vec![
            dir("/vol/d"),
            symlink("/vol/d", &outside),
            dir("/vol/d"),
            file("/vol/d/planted", "planted"),
        ],
    )
    .await;
    let err = restore(tricky, dir_.path().join("tricky")).await.unwrap_err().to_string();
    assert!(err.contains("\"d\" twice"), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
}

//! What a volume snapshot holds, for browsing it and choosing what to restore: entries by
//! path relative to the snapshot's root (the volume), and the check of paths users give.

use std::path::{Component, Path, PathBuf};

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{IndexedFullStatus, LsOptions, Repository, RusticError};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the volume, `/`-separated, without a leading `/`.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// RFC 3339, when the snapshot recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
}

pub(crate) enum ListError {
    Rustic(Box<RusticError>),
    NotFound,
}

fn entry(rel: &Path, node: &Node) -> Entry {
    let kind = match node.node_type {
        NodeType::Dir => "dir",
        NodeType::File => "file",
        NodeType::Symlink { .. } => "symlink",
        _ => "other",
    };
    Entry {
        path: rel.to_string_lossy().into_owned(),
        kind: kind.into(),
        size: if node.is_dir() { 0 } else { node.meta.size },
        mode: node.meta.mode.unwrap_or(0) & 0o7777,
        mtime: node.meta.mtime.map(|t| t.to_string()),
    }
}

/// The entries beneath `path` of the tree at `root`: its children, or everything with
/// `recursive`; a file's own entry when `path` names a file.
pub(crate) fn list(
    repo: &Repository<IndexedFullStatus>,
    root: &Node,
    path: &Path,
    recursive: bool,
) -> Result<Vec<Entry>, ListError> {
    let mut out = Vec::new();
    let mut found = path.as_os_str().is_empty();
    for item in repo.ls(root, &LsOptions::default()).map_err(ListError::Rustic)? {
        let (rel, node) = item.map_err(ListError::Rustic)?;
        if rel == path {
            found = true;
            if !node.is_dir() {
                out.push(entry(&rel, &node));
            }
            continue;
        }
        let Ok(below) = rel.strip_prefix(path) else { continue };
        found = true;
        if recursive || below.components().count() == 1 {
            out.push(entry(&rel, &node));
        }
    }
    if !found {
        return Err(ListError::NotFound);
    }
    Ok(out)
}

/// Paths as users write them (`/var/log/x.log` or `var/log/x.log`, relative to the volume) as
/// relative paths; `..` and empty paths are refused.
pub(crate) fn relative_paths(repo: &str, snapshot: &str, paths: &[PathBuf]) -> Result<Vec<PathBuf>, EngineError> {
    paths
        .iter()
        .map(|p| {
            let mut rel = PathBuf::new();
            for c in p.components() {
                match c {
                    Component::Normal(part) => rel.push(part),
                    Component::RootDir | Component::CurDir => {}
                    Component::ParentDir | Component::Prefix(_) => {
                        return Err(EngineError::Snapshot {
                            repo: repo.to_string(),
                            id: snapshot.to_string(),
                            reason: format!("path {:?} leads out of the volume; name a path inside it", p.display().to_string()),
                        })
                    }
                }
            }
            if rel.as_os_str().is_empty() {
                return Err(EngineError::Snapshot {
                    repo: repo.to_string(),
                    id: snapshot.to_string(),
                    reason: format!("path {:?} names the whole volume; restore the volume instead, or name a path inside it", p.display().to_string()),
                });
            }
            Ok(rel)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_paths_become_relative_and_may_not_leave_the_volume() {
        let ok = relative_paths("r", "s", &["/var/log/x.log".into(), "data/".into(), "./a/./b".into()]).unwrap();
        assert_eq!(ok, vec![PathBuf::from("var/log/x.log"), "data".into(), "a/b".into()]);
        let e = relative_paths("r", "s", &["/var/../../etc/passwd".into()]).unwrap_err().to_string();
        assert!(e.contains("leads out of the volume"), "{e}");
        assert!(relative_paths("r", "s", &["/".into()]).unwrap_err().to_string().contains("whole volume"));
    }

    #[test]
    fn a_selection_keeps_its_paths_what_is_beneath_and_the_way_there() {
        use crate::restore::selected;
        let include = [PathBuf::from("var/log/x.log"), PathBuf::from("data")];
        for yes in ["var", "var/log", "var/log/x.log", "data", "data/a/b"] {
            assert!(selected(&include, Path::new(yes)), "{yes}");
        }
        for no in ["var/log/y.log", "var/lib", "datax", "other"] {
            assert!(!selected(&include, Path::new(no)), "{no}");
        }
        assert!(selected(&[], Path::new("anything")));
    }
}

//! Where a pod's volume lives on the node: `<pods-dir>/<pod-uid>/volumes/<plugin>/<dir>`,
//! where `<dir>` is the PersistentVolume's name for claims and the volume's own name
//! otherwise, and CSI volumes keep their data in its `mount/` subdirectory.

use std::path::{Path, PathBuf};

/// The directory of one volume of one pod, or a message saying what was looked for.
pub fn volume_dir(pods_dir: &Path, pod_uid: &str, dir_name: &str) -> Result<PathBuf, String> {
    if pod_uid.is_empty() || pod_uid.contains(['/', '\\']) || pod_uid == ".." || dir_name.contains(['/', '\\']) || dir_name == ".." {
        return Err(format!("invalid pod uid {pod_uid:?} or volume directory {dir_name:?}"));
    }
    let volumes = pods_dir.join(pod_uid).join("volumes");
    let plugins = std::fs::read_dir(&volumes).map_err(|e| {
        format!(
            "{} cannot be read ({e}): is the pod running on this node, and is --kubelet-pods-dir the kubelet's pod directory?",
            volumes.display()
        )
    })?;
    let mut found = Vec::new();
    for plugin in plugins.flatten() {
        let candidate = plugin.path().join(dir_name);
        if candidate.is_dir() {
            found.push(candidate);
        }
    }
    found.sort();
    let Some(dir) = found.into_iter().next() else {
        return Err(format!("no directory {dir_name:?} under {}/*/", volumes.display()));
    };
    // Only a CSI volume keeps its data in `mount/`. In any other volume a `mount` entry is the
    // pod's own (a directory, or a symlink to `/`): never a reason to look elsewhere.
    let is_csi = dir.parent().and_then(Path::file_name).is_some_and(|p| p == "kubernetes.io~csi");
    if is_csi {
        let mount = dir.join("mount");
        if mount.is_dir() {
            return Ok(mount);
        }
        return Err(format!("{} has no mount/ directory: the CSI volume is not mounted", dir.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_empty_dir_and_csi_mount_directories() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path();
        std::fs::create_dir_all(pods.join("u1/volumes/kubernetes.io~empty-dir/cache")).unwrap();
        std::fs::create_dir_all(pods.join("u1/volumes/kubernetes.io~csi/pvc-123/mount")).unwrap();
        std::fs::create_dir_all(pods.join("u1/volumes/kubernetes.io~csi/pvc-456")).unwrap();
        assert_eq!(volume_dir(pods, "u1", "cache").unwrap(), pods.join("u1/volumes/kubernetes.io~empty-dir/cache"));
        assert_eq!(volume_dir(pods, "u1", "pvc-123").unwrap(), pods.join("u1/volumes/kubernetes.io~csi/pvc-123/mount"));
        assert!(volume_dir(pods, "u1", "pvc-456").unwrap_err().contains("not mounted"));
        assert!(volume_dir(pods, "u1", "other").unwrap_err().contains("no directory \"other\""));
        assert!(volume_dir(pods, "u2", "cache").unwrap_err().contains("is the pod running on this node"));
        assert!(volume_dir(pods, "..", "cache").is_err());
        // What a pod put in its own volume does not move the volume's directory: neither a
        // `mount` directory nor a `mount` symlink to the node's root.
        let cache = pods.join("u1/volumes/kubernetes.io~empty-dir/cache");
        std::os::unix::fs::symlink("/", cache.join("mount")).unwrap();
        assert_eq!(volume_dir(pods, "u1", "cache").unwrap(), cache);
        std::fs::remove_file(cache.join("mount")).unwrap();
        std::fs::create_dir(cache.join("mount")).unwrap();
        assert_eq!(volume_dir(pods, "u1", "cache").unwrap(), cache);
        assert!(volume_dir(pods, "u1", "../u1").is_err());
    }
}

//! Where the simulated nodes keep pod and volume files, mirroring a real kubelet's
//! `/var/lib/kubelet` so that code which finds volumes by path (the node agent) works unchanged:
//!
//! ```text
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~empty-dir/<volume>/
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv-name>/mount -> <root>/volumes/<pv-name>
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv-name>/vol_data.json
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~configmap/<volume>/<key>
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~secret/<volume>/<key>
//! <root>/pods/<pod-uid>/containers/<container>/rootfs/<mountPath> -> volume directory
//! <root>/pods/<pod-uid>/containers/<container>/log
//! <root>/volumes/<pv-name>/            (the PV's storage; outlives pods)
//! <root>/kubeconfig                     (how local processes reach the simulator)
//! ```
use std::path::{Component, Path, PathBuf};

pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CSI: &str = "kubernetes.io~csi";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";
pub const PROJECTED: &str = "kubernetes.io~projected";
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";

/// `<root>/pods/<uid>`: everything the node holds for one pod; removed when the pod goes.
pub fn pod_dir(root: &Path, pod_uid: &str) -> PathBuf {
    root.join("pods").join(pod_uid)
}

/// `<root>/pods/<uid>/volumes/<plugin>/<name>`.
pub fn volume_dir(root: &Path, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root, pod_uid).join("volumes").join(plugin).join(name)
}

/// The directory a CSI volume is mounted at inside the pod directory (a symlink to the PV's
/// storage here).
pub fn csi_mount(root: &Path, pod_uid: &str, pv_name: &str) -> PathBuf {
    volume_dir(root, pod_uid, CSI, pv_name).join("mount")
}

/// `<root>/volumes/<pv-name>`: the storage behind a provisioned PV.
pub fn pv_storage(root: &Path, pv_name: &str) -> PathBuf {
    root.join("volumes").join(pv_name)
}

pub fn container_dir(root: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pod_dir(root, pod_uid).join("containers").join(container)
}

/// The directory that stands for a container's filesystem.
pub fn container_rootfs(root: &Path, pod_uid: &str, container: &str) -> PathBuf {
    container_dir(root, pod_uid, container).join("rootfs")
}

/// Combined stdout and stderr of a container run as a local process.
pub fn container_log(root: &Path, pod_uid: &str, container: &str) -> PathBuf {
    container_dir(root, pod_uid, container).join("log")
}

/// The kubelet's own directory on a real node; a hostPath below it means the simulated node's.
pub const REAL_KUBELET_ROOT: &str = "/var/lib/kubelet";

/// Where a hostPath points on a simulated node: paths below `/var/lib/kubelet` lead into the
/// kubelet root (so a node agent mounting `/var/lib/kubelet/pods` sees the simulated pods),
/// anything else is the machine's own path.
pub fn host_path(root: &Path, path: &str) -> PathBuf {
    match Path::new(path).strip_prefix(REAL_KUBELET_ROOT) {
        Ok(rest) => join_inside(root, &rest.to_string_lossy()),
        Err(_) => PathBuf::from(path),
    }
}

/// The kubeconfig that containers run as local processes get as `KUBECONFIG`.
pub fn kubeconfig(root: &Path) -> PathBuf {
    root.join("kubeconfig")
}

/// Joins a container path (`/data/x`) below `base` without letting `..` escape it.
pub fn join_inside(base: &Path, container_path: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in Path::new(container_path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir if out != base => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_a_real_kubelet() {
        let root = Path::new("/k");
        assert_eq!(
            volume_dir(root, "u1", EMPTY_DIR, "cache"),
            Path::new("/k/pods/u1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(csi_mount(root, "u1", "pvc-9"), Path::new("/k/pods/u1/volumes/kubernetes.io~csi/pvc-9/mount"));
        assert_eq!(pv_storage(root, "pvc-9"), Path::new("/k/volumes/pvc-9"));
        assert_eq!(container_rootfs(root, "u1", "app"), Path::new("/k/pods/u1/containers/app/rootfs"));
    }

    #[test]
    fn kubelet_host_paths_lead_into_the_simulated_node() {
        let root = Path::new("/k");
        assert_eq!(host_path(root, "/var/lib/kubelet/pods"), Path::new("/k/pods"));
        assert_eq!(host_path(root, "/var/lib/kubelet"), Path::new("/k"));
        assert_eq!(host_path(root, "/var/lib/kubelet-other"), Path::new("/var/lib/kubelet-other"));
        assert_eq!(host_path(root, "/var/log"), Path::new("/var/log"));
    }

    #[test]
    fn join_inside_stays_below_base() {
        let base = Path::new("/r");
        assert_eq!(join_inside(base, "/data/x"), Path::new("/r/data/x"));
        assert_eq!(join_inside(base, "../../etc"), Path::new("/r/etc"));
        assert_eq!(join_inside(base, "/a/../b"), Path::new("/r/b"));
    }
}

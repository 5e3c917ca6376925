//! Lays out a pod's volume directories and its containers' stand-in filesystems.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::{Api, Client};
use serde_json::json;

use super::layout::{self, join_inside};

/// Why a pod cannot start yet; it stays Pending and the kubelet tries again.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
}

fn blocked(reason: &str, message: String) -> Blocked {
    Blocked { reason: reason.into(), message }
}

pub type Mounts = HashMap<String, PathBuf>;

/// Creates every volume and returns, per volume name, the path its mounts link to.
pub async fn prepare(client: &Client, root: &Path, node: &str, pod: &Pod) -> Result<Mounts, Blocked> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut mounts = Mounts::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for v in &volumes {
        let target = prepare_one(client, root, node, ns, uid, pod, v).await?;
        if let Some(t) = target {
            mounts.insert(v.name.clone(), t);
        }
    }
    Ok(mounts)
}

async fn prepare_one(
    client: &Client,
    root: &Path,
    node: &str,
    ns: &str,
    uid: &str,
    pod: &Pod,
    v: &Volume,
) -> Result<Option<PathBuf>, Blocked> {
    let io = |e: std::io::Error| blocked("VolumeSetupFailed", format!("volume {:?}: {e}", v.name));
    if let Some(hp) = &v.host_path {
        return Ok(Some(layout::host_path(root, &hp.path)));
    }
    if let Some(claim) = &v.persistent_volume_claim {
        return claim_volume(client, root, node, ns, uid, &claim.claim_name).await.map(Some);
    }
    let (plugin, files) = if let Some(cm) = &v.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let files = match api.get_opt(&cm.name).await {
            Ok(Some(obj)) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    obj.data.unwrap_or_default().into_iter().map(|(k, s)| (k, s.into_bytes())).collect();
                data.extend(obj.binary_data.unwrap_or_default().into_iter().map(|(k, b)| (k, b.0)));
                project(data, cm.items.as_deref())
            }
            Ok(None) if cm.optional == Some(true) => Vec::new(),
            Ok(None) => return Err(blocked("ConfigMapNotFound", format!("configmap {:?} not found", cm.name))),
            Err(e) => return Err(blocked("VolumeSetupFailed", format!("configmap {:?}: {e}", cm.name))),
        };
        (layout::CONFIG_MAP, files)
    } else if let Some(sec) = &v.secret {
        let name = sec.secret_name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let files = match api.get_opt(&name).await {
            Ok(Some(obj)) => {
                let data = obj.data.unwrap_or_default().into_iter().map(|(k, b)| (k, b.0)).collect();
                project(data, sec.items.as_deref())
            }
            Ok(None) if sec.optional == Some(true) => Vec::new(),
            Ok(None) => return Err(blocked("SecretNotFound", format!("secret {name:?} not found"))),
            Err(e) => return Err(blocked("VolumeSetupFailed", format!("secret {name:?}: {e}"))),
        };
        (layout::SECRET, files)
    } else if let Some(d) = &v.downward_api {
        let files = d
            .items
            .iter()
            .flatten()
            .filter_map(|i| Some((i.path.clone(), super::env::field_ref(pod, i.field_ref.as_ref()?)?.into_bytes())))
            .collect();
        (layout::DOWNWARD_API, files)
    } else if v.projected.is_some() {
        (layout::PROJECTED, vec![("token".to_string(), b"kube-sim-token".to_vec())])
    } else {
        if v.empty_dir.is_none() {
            tracing::warn!(pod = ?pod.metadata.name, volume = %v.name, "unsupported volume type; using an empty directory");
        }
        (layout::EMPTY_DIR, Vec::new())
    };
    let dir = layout::volume_dir(root, uid, plugin, &v.name);
    std::fs::create_dir_all(&dir).map_err(io)?;
    for (rel, bytes) in files {
        let path = join_inside(&dir, &rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, bytes).map_err(io)?;
    }
    Ok(Some(dir))
}

/// ConfigMap/Secret keys as files, all of them or only the listed `items`.
fn project(data: BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>) -> Vec<(String, Vec<u8>)> {
    match items {
        None => data.into_iter().collect(),
        Some(items) => items.iter().filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone()))).collect(),
    }
}

/// A claim's volume: for a CSI (or any network) PV, `kubernetes.io~csi/<pv>/mount` linked to the
/// PV's storage directory, so data follows the claim from pod to pod.
async fn claim_volume(client: &Client, root: &Path, node: &str, ns: &str, uid: &str, claim: &str) -> Result<PathBuf, Blocked> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = match pvcs.get_opt(claim).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(blocked("PersistentVolumeClaimNotFound", format!("persistentvolumeclaim {claim:?} not found"))),
        Err(e) => return Err(blocked("VolumeSetupFailed", format!("persistentvolumeclaim {claim:?}: {e}"))),
    };
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv_name = match pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
        Some(n) if bound && !n.is_empty() => n,
        _ => return Err(blocked("PersistentVolumeClaimNotBound", format!("persistentvolumeclaim {claim:?} is not bound"))),
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = match pvs.get_opt(&pv_name).await {
        Ok(Some(pv)) => pv,
        Ok(None) => return Err(blocked("PersistentVolumeNotFound", format!("persistentvolume {pv_name:?} not found"))),
        Err(e) => return Err(blocked("VolumeSetupFailed", format!("persistentvolume {pv_name:?}: {e}"))),
    };
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = &spec.host_path {
        return Ok(layout::host_path(root, &hp.path));
    }
    if let Some(local) = &spec.local {
        return Ok(layout::host_path(root, &local.path));
    }
    let io = |e: std::io::Error| blocked("VolumeSetupFailed", format!("persistentvolume {pv_name:?}: {e}"));
    let storage = layout::pv_storage(root, &pv_name);
    std::fs::create_dir_all(&storage).map_err(io)?;
    let mount = layout::csi_mount(root, uid, &pv_name);
    let dir = mount.parent().expect("mount has a parent").to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io)?;
    if std::fs::read_link(&mount).ok().as_deref() != Some(storage.as_path()) {
        let _ = std::fs::remove_file(&mount);
        std::os::unix::fs::symlink(&storage, &mount).map_err(io)?;
    }
    let csi = spec.csi.as_ref();
    let vol_data = json!({
        "driverName": csi.map(|c| c.driver.as_str()).unwrap_or("kube-sim.io/hostpath-csi"),
        "volumeHandle": csi.map(|c| c.volume_handle.as_str()).unwrap_or(&pv_name),
        "specVolID": pv_name,
        "nodeName": node,
        "volumeLifecycleMode": "Persistent",
    });
    std::fs::write(dir.join("vol_data.json"), vol_data.to_string()).map_err(io)?;
    Ok(mount)
}

/// Creates the container's rootfs with a symlink at each mount path to its volume.
pub fn link_mounts(root: &Path, uid: &str, container: &Container, mounts: &Mounts) -> std::io::Result<PathBuf> {
    let rootfs = layout::container_rootfs(root, uid, &container.name);
    std::fs::create_dir_all(&rootfs)?;
    let mut vms = container.volume_mounts.clone().unwrap_or_default();
    // Shallow paths first, so a nested mount is seen to sit below a link and skipped.
    vms.sort_by_key(|m| m.mount_path.len());
    for vm in vms {
        let Some(target) = mounts.get(&vm.name) else { continue };
        let mut target = target.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            target = join_inside(&target, sub);
            let _ = std::fs::create_dir_all(&target);
        }
        let link = join_inside(&rootfs, &vm.mount_path);
        if link == rootfs || crosses_symlink(&rootfs, &link) {
            tracing::warn!(container = %container.name, path = %vm.mount_path, "mount path nested in another mount; not linked");
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)?,
            Ok(m) if m.is_dir() => std::fs::remove_dir(&link)?,
            _ => {}
        }
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(rootfs)
}

/// Whether a directory between `base` and `path` is a symlink (writing there would land in
/// another volume).
fn crosses_symlink(base: &Path, path: &Path) -> bool {
    let mut p = path.parent();
    while let Some(dir) = p {
        if dir == base || !dir.starts_with(base) {
            return false;
        }
        if std::fs::symlink_metadata(dir).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
            return true;
        }
        p = dir.parent();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_mount_paths_into_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let vol = layout::volume_dir(root, "u", layout::EMPTY_DIR, "data");
        std::fs::create_dir_all(&vol).unwrap();
        let mounts = Mounts::from([("data".to_string(), vol.clone())]);
        let c: Container = serde_json::from_value(json!({"name": "app", "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/data"},
            {"name": "data", "mountPath": "/var/lib/data/nested"},
            {"name": "data", "mountPath": "/sub", "subPath": "s1"}]}))
        .unwrap();
        let rootfs = link_mounts(root, "u", &c, &mounts).unwrap();
        assert_eq!(std::fs::read_link(rootfs.join("var/lib/data")).unwrap(), vol);
        assert_eq!(std::fs::read_link(rootfs.join("sub")).unwrap(), vol.join("s1"));
        assert!(vol.join("s1").is_dir());
        // Nested mount skipped rather than created inside the volume.
        assert!(!vol.join("nested").exists());
        std::fs::write(rootfs.join("var/lib/data/f"), "x").unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "x");
        // Idempotent.
        link_mounts(root, "u", &c, &mounts).unwrap();
    }

    #[test]
    fn removing_a_pod_dir_keeps_the_storage_behind_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let storage = layout::pv_storage(root, "pv1");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::write(storage.join("keep"), "1").unwrap();
        let mount = layout::csi_mount(root, "u", "pv1");
        std::fs::create_dir_all(mount.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&storage, &mount).unwrap();
        std::fs::remove_dir_all(layout::pod_dir(root, "u")).unwrap();
        assert!(storage.join("keep").exists());
    }

    #[test]
    fn projects_items() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
        let items = [KeyToPath { key: "b".into(), path: "dir/b.txt".into(), mode: None }];
        assert_eq!(project(data.clone(), Some(&items)), vec![("dir/b.txt".to_string(), b"2".to_vec())]);
        assert_eq!(project(data, None).len(), 2);
    }
}

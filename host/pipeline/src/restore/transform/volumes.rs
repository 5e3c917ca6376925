//! Claims and volumes: their binding is recorded on both sides, with UIDs and annotations of
//! the old cluster. A restored pair binds again by name; a claim whose volume is not
//! restored is provisioned a new one.

use std::collections::BTreeSet;

use serde_json::Value;

use super::remove_at;
use crate::item::Item;
use crate::restore::plan::NamespaceMapping;

/// Annotations of the old binding and provisioning. `selected-node` names a node of the old
/// cluster; a claim waiting for a node that does not exist is never provisioned.
const CLAIM_BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];

const VOLUME_BINDING_ANNOTATIONS: &[&str] =
    &["pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller"];

pub(super) fn drop_claim_binding_annotations(pvc: &mut Value) {
    for key in CLAIM_BINDING_ANNOTATIONS {
        remove_at(pvc, &["metadata", "annotations", key]);
    }
}

/// Keeps `spec.volumeName` only when that volume is restored too; otherwise the claim would
/// wait forever for a volume that will not appear.
pub(super) fn keep_volume_name_if_restored(pvc: &mut Value, restored: &BTreeSet<String>) {
    let name = pvc.pointer("/spec/volumeName").and_then(Value::as_str);
    if name.is_some_and(|n| !restored.contains(n)) {
        remove_at(pvc, &["spec", "volumeName"]);
    }
}

/// Leaves the claim reference naming the claim (in its restored namespace) without the old
/// claim's UID, so the volume binds to the restored claim.
pub(super) fn reset_claim_ref(pv: &mut Value, mapping: &NamespaceMapping) {
    for key in VOLUME_BINDING_ANNOTATIONS {
        remove_at(pv, &["metadata", "annotations", key]);
    }
    remove_at(pv, &["spec", "claimRef", "uid"]);
    remove_at(pv, &["spec", "claimRef", "resourceVersion"]);
    let Some(claim_ref) = pv.pointer_mut("/spec/claimRef").and_then(Value::as_object_mut) else { return };
    if let Some(ns) = claim_ref.get("namespace").and_then(Value::as_str) {
        let target = mapping.target(ns).to_string();
        claim_ref.insert("namespace".into(), Value::String(target));
    }
}

/// Whether a backed-up PersistentVolume is recreated as it was, or left for the claim to be
/// provisioned a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeDecision {
    Restore,
    Reprovision { reason: &'static str },
}

/// Velero's rules, for a backup that keeps volume data in pod volume backups (no snapshots).
/// `has_pod_volume_backup`: a pod volume backup holds this volume's data.
pub fn decide_volume(pv: &Item, restore_pvs: bool, has_pod_volume_backup: bool) -> VolumeDecision {
    if !restore_pvs {
        return VolumeDecision::Reprovision { reason: "restorePVs is false" };
    }
    if has_pod_volume_backup {
        return VolumeDecision::Reprovision {
            reason: "its data is restored from a pod volume backup into a newly provisioned volume",
        };
    }
    let policy = pv.object.pointer("/spec/persistentVolumeReclaimPolicy").and_then(Value::as_str);
    if policy == Some("Delete") {
        return VolumeDecision::Reprovision {
            reason:
                "its reclaim policy is Delete, so the storage it pointed to may be gone; a new volume is provisioned",
        };
    }
    VolumeDecision::Restore
}

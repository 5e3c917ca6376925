//! Persistent volumes: the binder (claims to volumes, static or pre-bound), the CSI provisioner
//! for the simulator's driver, and reclaim (Delete or Release) when a claim goes away.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{pods::create_if_absent, resync, Ctx, Error};
use crate::kubelet::layout;

pub const DRIVER: &str = "kube-sim.io/hostpath-csi";
/// A claim that cannot be bound yet is looked at again this soon (a class or volume may appear).
const PENDING_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

pub fn spawn_claims(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let controller = Controller::new(claims, watcher::Config::default()).watches(volumes, watcher::Config::default(), |pv| {
        pv.spec
            .and_then(|s| s.claim_ref)
            .and_then(|c| Some(ObjectRef::new(c.name.as_deref()?).within(c.namespace.as_deref()?)))
    });
    super::run(controller, ctx, reconcile_claim)
}

pub fn spawn_volumes(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let controller = Controller::new(volumes, watcher::Config::default()).watches(claims, watcher::Config::default(), |pvc| {
        pvc.spec.and_then(|s| s.volume_name).filter(|n| !n.is_empty()).map(|n| ObjectRef::new(&n))
    });
    super::run(controller, ctx, reconcile_volume)
}

fn claim_matches(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(c) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    c.name == pvc.metadata.name
        && c.namespace == pvc.metadata.namespace
        && (c.uid.as_deref().unwrap_or("").is_empty() || c.uid == pvc.metadata.uid)
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let spec = pvc.spec.clone().unwrap_or_default();
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if let Some(name) = spec.volume_name.as_deref().filter(|n| !n.is_empty()) {
        // Bound already, or bound statically by the user (a restore names its volume).
        match pvs.get_opt(name).await? {
            Some(pv) if pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() || claim_matches(&pv, &pvc) => {
                bind(&ctx, &pv, &pvc, false).await?;
            }
            Some(_) => {
                tracing::info!(pvc = %pvc.name_any(), pv = %name, "volume is bound to another claim");
                return Ok(Action::requeue(PENDING_RETRY));
            }
            None if phase == "Bound" => set_claim_phase(&ctx, &pvc, "Lost").await?,
            None => return Ok(Action::requeue(PENDING_RETRY)),
        }
        return Ok(resync());
    }
    let all = pvs.list(&ListParams::default()).await?.items;
    // A volume pre-bound to this claim, then a matching available one, then a new one.
    let available = |pv: &&PersistentVolume| pv_phase(pv) != "Released" && pv.metadata.deletion_timestamp.is_none();
    if let Some(pv) = all.iter().filter(available).find(|pv| claim_matches(pv, &pvc)) {
        bind(&ctx, pv, &pvc, true).await?;
        return Ok(resync());
    }
    let class = match spec.storage_class_name.clone() {
        Some(c) => Some(c).filter(|c| !c.is_empty()),
        None => default_class(&ctx).await?,
    };
    if let Some(pv) = all.iter().filter(available).find(|pv| fits(pv, &pvc, class.as_deref())) {
        bind(&ctx, pv, &pvc, true).await?;
        return Ok(resync());
    }
    let Some(class) = class else { return Ok(Action::requeue(PENDING_RETRY)) };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(sc) = classes.get_opt(&class).await? else { return Ok(Action::requeue(PENDING_RETRY)) };
    if sc.provisioner != DRIVER {
        return Ok(Action::requeue(PENDING_RETRY));
    }
    let pv = provision(&ctx, &pvc, &sc).await?;
    bind(&ctx, &pv, &pvc, true).await?;
    Ok(resync())
}

async fn default_class(ctx: &Ctx) -> Result<Option<String>, Error> {
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let list = classes.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .find(|sc| sc.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true"))
        .map(|sc| sc.name_any()))
}

/// An unclaimed volume of the claim's class, big enough and with the access modes asked for.
fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim, class: Option<&str>) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else { return false };
    let size = |q: Option<&Quantity>| q.map(|q| parse_quantity(&q.0)).unwrap_or(0);
    let wanted = size(cs.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")));
    let has = size(ps.capacity.as_ref().and_then(|c| c.get("storage")));
    let modes = ps.access_modes.clone().unwrap_or_default();
    ps.claim_ref.is_none()
        && ps.storage_class_name.as_deref().unwrap_or("") == class.unwrap_or("")
        && has >= wanted
        && cs.access_modes.iter().flatten().all(|m| modes.contains(m))
}

/// Bytes in a quantity like `1Gi`, `500M` or `1.5Ti` (good enough to compare sizes).
pub fn parse_quantity(q: &str) -> u128 {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().unwrap_or(0.0);
    let mult: f64 = match suffix {
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        _ => 1.0,
    };
    (n * mult) as u128
}

async fn provision(ctx: &Ctx, pvc: &PersistentVolumeClaim, sc: &StorageClass) -> Result<PersistentVolume, Error> {
    let uid = pvc.metadata.uid.clone().ok_or_else(|| Error::Invalid("claim has no uid".into()))?;
    let name = format!("pvc-{uid}");
    let spec = pvc.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER,
                     "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                     "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": sc.name_any(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "mountOptions": sc.mount_options,
            "claimRef": claim_ref(pvc),
            "csi": {"driver": DRIVER, "volumeHandle": name, "fsType": "ext4",
                    "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "kube-sim"}},
        }
    }))
    .map_err(|e| Error::Invalid(format!("building volume {name}: {e}")))?;
    std::fs::create_dir_all(layout::pv_storage(&ctx.config.kubelet_root, &name))
        .map_err(|e| Error::Invalid(format!("creating storage for {name}: {e}")))?;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    create_if_absent(&pvs, &pv).await?;
    tracing::info!(pvc = %pvc.name_any(), pv = %name, "provisioned");
    Ok(pvs.get(&name).await?)
}

fn claim_ref(pvc: &PersistentVolumeClaim) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": pvc.metadata.namespace,
           "name": pvc.metadata.name, "uid": pvc.metadata.uid, "resourceVersion": pvc.metadata.resource_version})
}

/// Binds both ways: the volume's claimRef and phase, then the claim's volumeName, annotations
/// and status, as the PV controller does.
async fn bind(ctx: &Ctx, pv: &PersistentVolume, pvc: &PersistentVolumeClaim, by_controller: bool) -> Result<(), Error> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv_name = pv.name_any();
    let ns = pvc.namespace().unwrap_or_default();
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let ref_uid = pv_spec.claim_ref.as_ref().and_then(|c| c.uid.clone()).unwrap_or_default();
    if ref_uid.is_empty() || pv_spec.claim_ref.is_none() {
        pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"claimRef": claim_ref(pvc)}}))).await?;
    }
    if pv_phase(pv) != "Bound" {
        pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut annotations = BTreeMap::from([("pv.kubernetes.io/bind-completed".to_string(), "yes".to_string())]);
    if by_controller {
        annotations.insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
    }
    if pv.annotations().get("pv.kubernetes.io/provisioned-by").map(String::as_str) == Some(DRIVER) {
        annotations.insert("volume.kubernetes.io/storage-provisioner".into(), DRIVER.into());
        annotations.insert("volume.beta.kubernetes.io/storage-provisioner".into(), DRIVER.into());
    }
    let missing = annotations.iter().any(|(k, v)| pvc.annotations().get(k) != Some(v));
    if missing || spec.volume_name.as_deref() != Some(pv_name.as_str()) {
        let mut patch = json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}});
        if spec.storage_class_name.is_none() {
            patch["spec"]["storageClassName"] = json!(pv_spec.storage_class_name.unwrap_or_default());
        }
        claims.patch(&pvc.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    let status = json!({"phase": "Bound", "capacity": pv_spec.capacity, "accessModes": pv_spec.access_modes});
    let current = serde_json::to_value(&pvc.status).unwrap_or_default();
    if super::status::differs(&current, &status) {
        claims.patch_status(&pvc.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
        tracing::info!(pvc = %format!("{ns}/{}", pvc.name_any()), pv = %pv_name, "bound");
    }
    Ok(())
}

async fn set_claim_phase(ctx: &Ctx, pvc: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    claims.patch_status(&pvc.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": phase}}))).await?;
    Ok(())
}

/// Keeps a volume's phase right: Available until claimed, and reclaimed once its claim is gone.
async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = pv.name_any();
    let spec = pv.spec.clone().unwrap_or_default();
    let phase = pv_phase(&pv).to_string();
    let set_phase = |p: &'static str| {
        let pvs = pvs.clone();
        let name = name.clone();
        async move { pvs.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": p}}))).await }
    };
    let Some(cref) = spec.claim_ref.clone() else {
        if phase != "Available" && phase != "Released" {
            set_phase("Available").await?;
        }
        return Ok(resync());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), cref.namespace.as_deref().unwrap_or(""));
    let claim = claims.get_opt(cref.name.as_deref().unwrap_or("")).await?;
    let ref_uid = cref.uid.clone().unwrap_or_default();
    let claim_gone = match &claim {
        None => !ref_uid.is_empty(),
        Some(c) => !ref_uid.is_empty() && c.metadata.uid.as_deref() != Some(ref_uid.as_str()),
    };
    if !claim_gone {
        if ref_uid.is_empty() && phase.is_empty() {
            set_phase("Available").await?;
        }
        return Ok(resync());
    }
    if phase == "Released" || phase == "Failed" {
        return Ok(resync());
    }
    match spec.persistent_volume_reclaim_policy.as_deref() {
        Some("Delete") => {
            tracing::info!(pv = %name, "claim is gone; deleting the volume");
            match pvs.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            if spec.csi.as_ref().is_some_and(|c| c.driver == DRIVER) {
                let dir = layout::pv_storage(&ctx.config.kubelet_root, &name);
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            Ok(Action::await_change())
        }
        _ => {
            tracing::info!(pv = %name, "claim is gone; volume released");
            set_phase("Released").await?;
            Ok(resync())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_by_bytes() {
        assert_eq!(parse_quantity("1Gi"), 1 << 30);
        assert_eq!(parse_quantity("500M"), 500_000_000);
        assert_eq!(parse_quantity("1.5Ki"), 1536);
        assert!(parse_quantity("2Gi") > parse_quantity("2G"));
        assert_eq!(parse_quantity("10"), 10);
    }

    #[test]
    fn a_claim_ref_without_uid_matches_by_name() {
        let pvc: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"}})).unwrap();
        let pv = |uid: Option<&str>| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "pv"},
                "spec": {"claimRef": {"name": "data", "namespace": "ns", "uid": uid}}}))
            .unwrap()
        };
        assert!(claim_matches(&pv(None), &pvc));
        assert!(claim_matches(&pv(Some("u1")), &pvc));
        assert!(!claim_matches(&pv(Some("u2")), &pvc));
    }
}

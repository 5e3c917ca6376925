//! DownloadRequests: the server reads a backup's or restore's file from its storage location
//! and hands it to the CLI through Secrets, so users need no bucket credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::layout::StoreLayout;
use stowage_api::requests::{DownloadRequestPhase, DownloadTarget};
use stowage_api::{Backup, DownloadRequest, Restore};
use stowage_storage::ObjectStore;

use crate::context::Context;
use crate::{locations, velero};

/// One Secret per chunk keeps each well under the 1 MiB object limit after base64.
pub const CHUNK: usize = 700 * 1024;

/// The Secret holding chunk `i` of a request's content (`part-NNNN` keys).
pub fn chunk_secret_name(request: &str, i: usize) -> String {
    if i == 0 {
        request.to_string()
    } else {
        format!("{request}-{i}")
    }
}

pub async fn run(ctx: Arc<Context>) {
    let api: Api<DownloadRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Controller::new(api, watcher::Config::default())
        .run(reconcile, |_, e, _| {
            tracing::warn!("download request: {e}");
            Action::requeue(Duration::from_secs(5))
        }, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(req: Arc<DownloadRequest>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    if req.status.as_ref().and_then(|s| s.phase) == Some(DownloadRequestPhase::Processed) {
        return Ok(Action::await_change());
    }
    let name = req.name_any();
    let api: Api<DownloadRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let status = match serve(&ctx, &req).await {
        Ok(()) => json!({"phase": "Processed", "content": {"secretName": name, "key": "part-0000"}}),
        Err(e) => json!({"phase": "Processed", "message": format!("{e:#}")}),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(Action::await_change())
}

/// The storage location a download target lives in.
async fn location_of(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<String> {
    use stowage_api::requests::DownloadTargetKind as K;
    let target = &req.spec.target;
    let backup_name = match target.kind {
        K::RestoreLog | K::RestoreResults => {
            let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let restore = restores.get_opt(&target.name).await?.ok_or_else(|| {
                anyhow::anyhow!("restore {:?} not found in namespace {}", target.name, ctx.namespace)
            })?;
            restore.spec.backup_name.clone().unwrap_or_default()
        }
        _ => target.name.clone(),
    };
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let backup = backups.get_opt(&backup_name).await?.ok_or_else(|| {
        anyhow::anyhow!("backup {backup_name:?} not found in namespace {}", ctx.namespace)
    })?;
    Ok(locations::resolve(ctx, backup.spec.storage_location.as_deref())
        .await?
        .metadata
        .name
        .unwrap_or_default())
}

/// The target's content, None when the location does not have it. A backup Velero wrote has
/// its log and resource list under Velero's names, gzip-compressed: served as zstd like ours.
async fn fetch(store: &dyn ObjectStore, target: &DownloadTarget) -> anyhow::Result<Option<Vec<u8>>> {
    let layout = StoreLayout::new(None);
    match store.get(&layout.download_target(target.kind, &target.name)).await {
        Ok(data) => return Ok(Some(data.to_vec())),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let Some(key) = velero::download_key(&layout, target.kind, &target.name) else { return Ok(None) };
    match store.get(&key).await {
        Ok(gz) => Ok(Some(velero::gzip_to_zstd(&gz).map_err(|e| anyhow::anyhow!("{key}: not gzip: {e}"))?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn serve(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<()> {
    use stowage_api::requests::DownloadTargetKind as K;
    let location = location_of(ctx, req).await?;
    let loc = locations::resolve(ctx, Some(&location)).await?;
    if matches!(req.spec.target.kind, K::RestoreLog | K::RestoreResults) && locations::ensure_writable(&loc).is_err() {
        anyhow::bail!(
            "restore {:?} read from storage location {location:?}, which is ReadOnly and never written to, \
             so its log and results were not kept; `stowage restore describe` shows its status, and the \
             server's log has its lines",
            req.spec.target.name
        );
    }
    let store = locations::open(ctx, &loc).await?;
    let data = fetch(store.as_ref(), &req.spec.target).await?.ok_or_else(|| {
        anyhow::anyhow!("{:?} of {:?} is not in storage location {location:?} (it may not have been written yet)",
            req.spec.target.kind, req.spec.target.name)
    })?;
    let owner = req.controller_owner_ref(&()).map(|mut o: OwnerReference| {
        o.controller = Some(false);
        o
    });
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(CHUNK).collect() };
    for (i, chunk) in chunks.into_iter().enumerate() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(chunk_secret_name(&req.name_any(), i)),
                namespace: Some(ctx.namespace.clone()),
                owner_references: owner.clone().map(|o| vec![o]),
                labels: Some(BTreeMap::from([("stowage.io/download-request".to_string(), req.name_any())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(format!("part-{i:04}"), ByteString(chunk.to_vec()))])),
            ..Default::default()
        };
        // Apply rather than create: a server that stopped before marking the request
        // Processed has left some of these behind.
        let pp = PatchParams::apply("stowage-server").force();
        secrets.patch(&chunk_secret_name(&req.name_any(), i), &pp, &Patch::Apply(&secret)).await?;
    }
    Ok(())
}

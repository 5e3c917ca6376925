//! DownloadRequests: the server reads a backup's or restore's file from its storage location
//! and hands it to the CLI through Secrets, so users need no bucket credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use stowage_api::layout::StoreLayout;
use stowage_api::requests::DownloadRequestPhase;
use stowage_api::{Backup, DownloadRequest, Restore};

use super::{locations, Context};

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

async fn serve(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<()> {
    let location = location_of(ctx, req).await?;
    let loc = locations::resolve(ctx, Some(&location)).await?;
    let store = locations::open(ctx, &loc).await?;
    let key = StoreLayout::new(None).download_target(req.spec.target.kind, &req.spec.target.name);
    let data = store.get(&key).await.map_err(|e| {
        if e.is_not_found() {
            anyhow::anyhow!("{:?} of {:?} is not in storage location {location:?} (it may not have been written yet)",
                req.spec.target.kind, req.spec.target.name)
        } else {
            anyhow::Error::from(e)
        }
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
        secrets.create(&PostParams::default(), &secret).await?;
    }
    Ok(())
}

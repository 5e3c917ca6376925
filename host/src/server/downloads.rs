//! DownloadRequests: the server hands the CLI a backup's or restore's file without the user
//! holding bucket credentials and without putting it in etcd. For an S3 location it answers
//! with a pre-signed URL (valid [`URL_LIFETIME`]); always, it also offers to stream the file
//! itself through the API server's service proxy (`services/stowage:http/proxy/downloads/<request>`),
//! for users the store does not reach (filesystem locations, private endpoints). A stream takes
//! the caller's `services/proxy` permission and the request's token, which only readers of the
//! request see. Processed requests are deleted once they expire.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use rand::RngCore;
use serde_json::json;
use stowage_api::layout::StoreLayout;
use stowage_api::requests::{DownloadRequestPhase, DownloadTarget, ServedStream, DOWNLOAD_TOKEN_HEADER};
use stowage_api::{names, Backup, DownloadRequest, Restore};
use stowage_storage::ObjectStore;

use crate::context::Context;
use crate::{locations, velero};

/// How long a pre-signed URL and a streamed download stay available (Velero's ten minutes).
pub const URL_LIFETIME: Duration = Duration::from_secs(600);

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

/// Seconds until a processed request expires; `None` when it has no expiration.
fn remaining(req: &DownloadRequest) -> Option<i64> {
    let expiration = req.status.as_ref()?.expiration.as_ref()?;
    Some(expiration.0.as_second() - Timestamp::now().as_second())
}

async fn reconcile(req: Arc<DownloadRequest>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let name = req.name_any();
    let api: Api<DownloadRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if req.status.as_ref().and_then(|s| s.phase) == Some(DownloadRequestPhase::Processed) {
        return match remaining(&req) {
            Some(left) if left > 0 => Ok(Action::requeue(Duration::from_secs(left as u64 + 1))),
            // Expired (or from an older server): its URL and token are worthless now.
            _ => {
                api.delete(&name, &DeleteParams::default()).await.map(|_| ()).or_else(ignore_not_found)?;
                Ok(Action::await_change())
            }
        };
    }
    let expiration = Time(Timestamp::now() + URL_LIFETIME);
    let status = match prepare(&ctx, &req).await {
        Ok((url, stream)) => json!({"phase": "Processed", "downloadURL": url, "stream": stream, "expiration": expiration}),
        Err(e) => json!({"phase": "Processed", "message": format!("{e:#}"), "expiration": expiration}),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(Action::requeue(URL_LIFETIME + Duration::from_secs(1)))
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(r) if r.code == 404 => Ok(()),
        e => Err(e),
    }
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
pub async fn fetch(store: &dyn ObjectStore, target: &DownloadTarget) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(found) = find(store, target).await? else { return Ok(None) };
    read_whole(store, &found).await.map(Some)
}

/// Where a target's bytes are in the store.
struct Found {
    key: String,
    /// Velero's gzip file, served as zstd.
    velero_gzip: bool,
}

async fn find(store: &dyn ObjectStore, target: &DownloadTarget) -> anyhow::Result<Option<Found>> {
    let layout = StoreLayout::new(None);
    let ours = layout.download_target(target.kind, &target.name);
    if store.exists(&ours).await? {
        return Ok(Some(Found { key: ours, velero_gzip: false }));
    }
    let Some(key) = velero::download_key(&layout, target.kind, &target.name) else { return Ok(None) };
    Ok(store.exists(&key).await?.then_some(Found { key, velero_gzip: true }))
}

async fn read_whole(store: &dyn ObjectStore, found: &Found) -> anyhow::Result<Vec<u8>> {
    let data = store.get(&found.key).await?;
    if found.velero_gzip {
        velero::gzip_to_zstd(&data).map_err(|e| anyhow::anyhow!("{}: not gzip: {e}", found.key))
    } else {
        Ok(data.to_vec())
    }
}

/// The store and key a request's file is read from, or why it cannot be served.
async fn source(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<(Arc<dyn ObjectStore>, Found)> {
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
    let found = find(store.as_ref(), &req.spec.target).await?.ok_or_else(|| {
        anyhow::anyhow!("{:?} of {:?} is not in storage location {location:?} (it may not have been written yet)",
            req.spec.target.kind, req.spec.target.name)
    })?;
    Ok((store, found))
}

/// The entries of a path in one of a backup's pod volumes, as JSON: read from the volume's
/// repository by the server, which holds its key.
async fn volume_listing(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<Vec<u8>> {
    let target = &req.spec.target;
    let vp = target.volume.as_ref().ok_or_else(|| anyhow::anyhow!("a volume listing names the pod volume (spec.target.volume)"))?;
    let location = location_of(ctx, req).await?;
    let loc = locations::resolve(ctx, Some(&location)).await?;
    let store = locations::open(ctx, &loc).await?;
    let volumes = crate::podvolumes::load(store.as_ref(), &target.name).await?;
    let of_pod = |p: &&stowage_api::PodVolumeBackup| {
        p.spec.pod.namespace.as_deref() == Some(vp.namespace.as_str()) && p.spec.pod.name.as_deref() == Some(vp.pod.as_str())
    };
    let pvb = volumes.iter().filter(of_pod).find(|p| p.spec.volume == vp.volume).ok_or_else(|| {
        let held: Vec<String> = volumes
            .iter()
            .map(|p| format!("{}/{} {}", p.spec.pod.namespace.as_deref().unwrap_or(""), p.spec.pod.name.as_deref().unwrap_or(""), p.spec.volume))
            .collect();
        anyhow::anyhow!(
            "backup {:?} holds no volume {:?} of pod {}/{} (it holds: {})",
            target.name, vp.volume, vp.namespace, vp.pod,
            if held.is_empty() { "no pod volumes".to_string() } else { held.join(", ") }
        )
    })?;
    let snapshot = pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()).filter(|s| !s.is_empty()).ok_or_else(|| {
        anyhow::anyhow!("volume {:?} of pod {}/{} was not backed up in backup {:?} (no snapshot)", vp.volume, vp.namespace, vp.pod, target.name)
    })?;
    let repo = stowage_restic::Repo::open(crate::repositories::config(ctx, &loc, store, &vp.namespace).await?).await?;
    let entries = repo.list(&snapshot, std::path::Path::new(vp.path.trim_start_matches('/')), false).await?;
    Ok(serde_json::to_vec(&entries)?)
}

/// A pre-signed URL when the store can sign one for the stored bytes, and the stream.
async fn prepare(ctx: &Context, req: &DownloadRequest) -> anyhow::Result<(Option<String>, ServedStream)> {
    let url = if req.spec.target.kind == stowage_api::requests::DownloadTargetKind::BackupVolumeListing {
        // Answered when fetched; checked now so that a wrong pod or path says so at once.
        volume_listing(ctx, req).await?;
        None
    } else {
        let (store, found) = source(ctx, req).await?;
        if found.velero_gzip { None } else { store.presigned_get(&found.key, URL_LIFETIME).await? }
    };
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let stream = ServedStream {
        service: names::SERVER.to_string(),
        port: names::SERVER_HTTP_PORT_NAME.to_string(),
        path: format!("/downloads/{}", req.name_any()),
        token: token.iter().map(|b| format!("{b:02x}")).collect(),
    };
    Ok((url, stream))
}

/// The routes every replica serves beside `/metrics`.
pub fn router(ctx: Arc<Context>) -> axum::Router {
    axum::Router::new().route("/downloads/{name}", axum::routing::get(download)).with_state(ctx)
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Equal without telling, by its timing, how much of a guess was right.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn download(State(ctx): State<Arc<Context>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = headers.get(DOWNLOAD_TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return refuse(StatusCode::UNAUTHORIZED, format!("a download needs the request's token in the {DOWNLOAD_TOKEN_HEADER} header"));
    };
    let api: Api<DownloadRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let req = match api.get_opt(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, format!("download request {name:?} not found in namespace {}", ctx.namespace)),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, format!("reading download request {name:?}: {e}")),
    };
    let expected = req.status.as_ref().and_then(|s| s.stream.as_ref()).map(|s| s.token.as_str()).unwrap_or_default();
    if expected.is_empty() || !same_token(expected, token) {
        return refuse(StatusCode::FORBIDDEN, format!("the token does not match download request {name:?}"));
    }
    if remaining(&req).is_some_and(|left| left <= 0) {
        return refuse(StatusCode::GONE, format!("download request {name:?} has expired; create a new one"));
    }
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    if req.spec.target.kind == stowage_api::requests::DownloadTargetKind::BackupVolumeListing {
        return match volume_listing(&ctx, &req).await {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => refuse(StatusCode::NOT_FOUND, format!("{e:#}")),
        };
    }
    let (store, found) = match source(&ctx, &req).await {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::NOT_FOUND, format!("{e:#}")),
    };
    if found.velero_gzip {
        return match read_whole(store.as_ref(), &found).await {
            Ok(bytes) => (octets, bytes).into_response(),
            Err(e) => refuse(StatusCode::BAD_GATEWAY, format!("{e:#}")),
        };
    }
    let size = store.head(&found.key).await.ok().map(|i| i.size);
    match store.get_stream(&found.key).await {
        Ok(reader) => {
            let mut response = (octets, Body::from_stream(tokio_util::io::ReaderStream::new(reader))).into_response();
            if let Some(size) = size {
                response.headers_mut().insert(header::CONTENT_LENGTH, size.into());
            }
            tracing::info!(request = %name, key = %found.key, "streaming a download");
            response
        }
        Err(e) => refuse(StatusCode::BAD_GATEWAY, format!("reading {}: {e}", found.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abcd", "abc"));
        assert!(!same_token("", "x"));
    }
}

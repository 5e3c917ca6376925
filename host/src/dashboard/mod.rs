//! A read-only web dashboard (`stowage server --dashboard-address`): backups, restores,
//! schedules, storage locations and extensions, a backup's items, volumes and hook runs, and
//! plots of backup duration and size over time. Pages are rendered on the server with inline
//! CSS and SVG — no script, no external asset — and `/api/overview.json` has the same data.
//!
//! It only reads: GET routes, objects from the API server, a backup's resource list and results
//! from its storage location. Every replica serves it, leading or not, since it acts on nothing.
//! It never shows Secrets or credentials: locations are shown without their config.

mod backup_page;
mod html;
mod model;
mod overview;
mod plot;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use stowage_api::layout::StoreLayout;
use stowage_api::requests::DownloadTargetKind;
use stowage_api::{Backup, BackupStorageLocation, PodVolumeBackup, Restore, Schedule};

use crate::context::Context;
use crate::locations;

pub use model::Overview;

/// How long a page waits for the storage location before it says the location did not answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the dashboard's address; an address in use fails the server's start, saying so.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("serving the dashboard on {addr}: {e}; choose another --dashboard-address, or leave it unset to serve none")
    })
}

/// Serves the dashboard until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>) -> anyhow::Result<()> {
    axum::serve(listener, router(ctx)).await?;
    Ok(())
}

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/api/overview.json", get(overview_json))
        .route("/backups/{name}", get(backup_page))
        .fallback(|State(ctx): State<Arc<Context>>| async move {
            html_response(StatusCode::NOT_FOUND, html::problem("Not found", &ctx.namespace, "No such page."))
        })
        .with_state(ctx)
}

/// Headers that keep a page from running anything, even if escaping failed somewhere.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html_response(status: StatusCode, body: String) -> Response {
    secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn unavailable(ctx: &Context, e: &anyhow::Error) -> Response {
    tracing::warn!("dashboard: {e:#}");
    let message = format!("{e:#}; the API server did not answer, or the server's ServiceAccount may not read Stowage's objects");
    html_response(StatusCode::SERVICE_UNAVAILABLE, html::problem("Cannot read the cluster", &ctx.namespace, &message))
}

async fn overview_page(State(ctx): State<Arc<Context>>) -> Response {
    match read_overview(&ctx).await {
        Ok(o) => html_response(StatusCode::OK, overview::overview(&o)),
        Err(e) => unavailable(&ctx, &e),
    }
}

async fn overview_json(State(ctx): State<Arc<Context>>) -> Response {
    match read_overview(&ctx).await {
        Ok(o) => secure(axum::Json(o).into_response()),
        Err(e) => {
            tracing::warn!("dashboard: {e:#}");
            secure((StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": format!("{e:#}")}))).into_response())
        }
    }
}

async fn backup_page(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    match read_backup(&ctx, &name).await {
        Ok(Some(d)) => html_response(StatusCode::OK, backup_page::backup(&d, &ctx.namespace)),
        Ok(None) => html_response(
            StatusCode::NOT_FOUND,
            html::problem("Backup not found", &ctx.namespace, &format!("There is no backup {name:?} in namespace {}.", ctx.namespace)),
        ),
        Err(e) => unavailable(&ctx, &e),
    }
}

async fn list<K>(ctx: &Context, what: &str) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let listed = api.list(&ListParams::default()).await;
    Ok(listed.map_err(|e| anyhow::anyhow!("listing {what} in namespace {}: {e}", ctx.namespace))?.items)
}

async fn read_overview(ctx: &Context) -> anyhow::Result<Overview> {
    let extensions = async {
        let api: Api<ConfigMap> = Api::all(ctx.client.clone());
        let listed = api.list(&ListParams::default().labels(stowage_runtime::EXTENSION_LABEL)).await;
        Ok::<_, anyhow::Error>(listed.map_err(|e| anyhow::anyhow!("listing extension ConfigMaps: {e}"))?.items)
    };
    let (backups, restores, schedules, locations, pod_volume_backups, extensions) = tokio::try_join!(
        list::<Backup>(ctx, "backups"),
        list::<Restore>(ctx, "restores"),
        list::<Schedule>(ctx, "schedules"),
        list::<BackupStorageLocation>(ctx, "storage locations"),
        list::<PodVolumeBackup>(ctx, "pod volume backups"),
        extensions,
    )?;
    let listed = model::Listed { namespace: ctx.namespace.clone(), backups, restores, schedules, locations, pod_volume_backups, extensions };
    Ok(listed.overview(locations::now()))
}

async fn read_backup(ctx: &Context, name: &str) -> anyhow::Result<Option<model::BackupDetail>> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(backup) = api.get_opt(name).await.map_err(|e| anyhow::anyhow!("reading backup {name:?}: {e}"))? else {
        return Ok(None);
    };
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={name}", stowage_api::labels::BACKUP_NAME.name);
    let (pvbs, restores) = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(pvbs.list(&ListParams::default().labels(&selector)).await?.items) },
        list::<Restore>(ctx, "restores"),
    )?;
    let parts = match tokio::time::timeout(STORE_TIMEOUT, from_location(ctx, &backup)).await {
        Ok(parts) => parts,
        Err(_) => {
            let why = format!("the storage location did not answer within {STORE_TIMEOUT:?}");
            model::DetailParts { items: Err(why.clone()), messages: None, stored_bytes: Err(why) }
        }
    };
    Ok(Some(model::backup_detail(&backup, &pvbs, &restores, parts)))
}

/// What the backup's location holds about it: its resource list, its results when it counts
/// warnings or errors, and the size of its files. Each part says why when it is missing.
async fn from_location(ctx: &Context, backup: &Backup) -> model::DetailParts {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let status = backup.status.clone().unwrap_or_default();
    let store = async {
        let loc = locations::resolve(ctx, backup.spec.storage_location.as_deref()).await?;
        locations::open(ctx, &loc).await
    };
    let store = match store.await {
        Ok(store) => store,
        Err(e) => {
            let why = format!("{e:#}");
            let messages = (status.warnings + status.errors > 0).then(|| Err(why.clone()));
            return model::DetailParts { items: Err(why.clone()), messages, stored_bytes: Err(why) };
        }
    };
    let layout = StoreLayout::new(None);
    let items = fetch_json::<BTreeMap<String, Vec<String>>>(store.as_ref(), &layout, DownloadTargetKind::BackupResourceList, &name).await;
    let messages = match status.warnings + status.errors > 0 {
        true => Some(fetch_json::<model::Messages>(store.as_ref(), &layout, DownloadTargetKind::BackupResults, &name).await),
        false => None,
    };
    let stored_bytes = match store.list(&layout.backup_dir(&name)).await {
        Ok(objects) => Ok(objects.iter().map(|o| o.size).sum()),
        Err(e) => Err(e.to_string()),
    };
    model::DetailParts { items, messages, stored_bytes }
}

/// A backup's JSON file from its location: Stowage's (zstd), else Velero's (gzip).
async fn fetch_json<T: serde::de::DeserializeOwned>(
    store: &dyn stowage_storage::ObjectStore,
    layout: &StoreLayout,
    kind: DownloadTargetKind,
    backup: &str,
) -> Result<T, String> {
    let key = layout.download_target(kind, backup);
    let raw = match store.get(&key).await {
        Ok(data) => zstd::decode_all(&data[..]).map_err(|e| format!("{key}: not zstd: {e}"))?,
        Err(e) if e.is_not_found() => {
            let velero = crate::velero::download_key(layout, kind, backup);
            let gz = match velero {
                Some(k) => store.get(&k).await.map_err(|e| if e.is_not_found() { format!("{key} is not in the location (not written yet?)") } else { e.to_string() })?,
                None => return Err(format!("{key} is not in the location (not written yet?)")),
            };
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).map_err(|e| format!("not gzip: {e}"))?;
            out
        }
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&raw).map_err(|e| format!("{key} is not valid: {e}"))
}

#[cfg(test)]
mod tests;

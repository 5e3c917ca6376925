//! BackupRepository objects: one restic-format repository per (storage location, volume
//! namespace), created on first use and initialised by the server, with a password derived from
//! the cluster master key (DESIGN §5).

use std::sync::Arc;

use kube::api::{Api, PostParams};
use kube::ResourceExt;
use serde_json::json;
use stowage_api::labels;
use stowage_api::repo_keys::repository_password;
use stowage_api::repository::{BackupRepositoryPhase, BackupRepositorySpec};
use stowage_api::{BackupRepository, BackupStorageLocation};
use stowage_storage::ObjectStore;

use crate::context::Context;

/// Label on a BackupRepository: the namespace whose volumes it holds.
pub const VOLUME_NAMESPACE_LABEL: &str = "stowage.io/volume-namespace";

/// The repository of `volume_namespace` in `loc`, created and initialised if need be.
pub async fn ensure(
    ctx: &Context,
    loc: &BackupStorageLocation,
    store: Arc<dyn ObjectStore>,
    volume_namespace: &str,
) -> anyhow::Result<BackupRepository> {
    let _one_at_a_time = ctx.repository_lock.lock().await;
    let location = loc.name_any();
    let repo_ref = stowage_access::repository_of(loc, volume_namespace)?;
    let name = stowage_access::repository_object_name(&location, volume_namespace);
    let api: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let existing = match api.get_opt(&name).await? {
        Some(r) => r,
        None => {
            let mut repo = BackupRepository::new(
                &name,
                BackupRepositorySpec {
                    volume_namespace: volume_namespace.to_string(),
                    backup_storage_location: location.clone(),
                    restic_identifier: repo_ref.restic_identifier.clone(),
                    maintenance_frequency: None,
                },
            );
            repo.metadata.labels = Some(
                [
                    (labels::STORAGE_LOCATION.name.to_string(), location.clone()),
                    (VOLUME_NAMESPACE_LABEL.to_string(), volume_namespace.to_string()),
                ]
                .into(),
            );
            match api.create(&PostParams::default(), &repo).await {
                Ok(r) => r,
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if existing.status.as_ref().and_then(|s| s.phase) == Some(BackupRepositoryPhase::Ready) {
        return Ok(existing);
    }
    let result = async {
        let config = config(ctx, loc, store, volume_namespace).await?;
        let (_, created) = stowage_restic::Repo::open_or_init(config).await?;
        anyhow::Ok(created)
    }
    .await;
    match result {
        Ok(created) => {
            if created {
                tracing::info!(repository = %name, "initialised repository {}", repo_ref.restic_identifier);
            }
            Ok(ctx
                .patch_status::<BackupRepository>(&name, json!({"phase": "Ready", "message": null}))
                .await?)
        }
        Err(e) => {
            let message = format!("repository {} ({}): {e:#}", name, repo_ref.restic_identifier);
            let _ = ctx.patch_status::<BackupRepository>(&name, json!({"phase": "NotReady", "message": message})).await;
            anyhow::bail!(message)
        }
    }
}

/// How to open the repository of `volume_namespace` in `loc`: its password is derived from the
/// cluster master key.
pub async fn config(
    ctx: &Context,
    loc: &BackupStorageLocation,
    store: Arc<dyn ObjectStore>,
    volume_namespace: &str,
) -> anyhow::Result<stowage_restic::RepoConfig> {
    let repo_ref = stowage_access::repository_of(loc, volume_namespace)?;
    let key = stowage_access::master_key(&ctx.client, &ctx.namespace).await?;
    let password = repository_password(&key, &repo_ref.identity)?;
    Ok(stowage_restic::RepoConfig { store, namespace: volume_namespace.to_string(), password })
}

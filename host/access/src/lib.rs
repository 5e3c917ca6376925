//! What the server, the node agents and the CLI share to reach stored data: opening a
//! BackupStorageLocation with the credentials its Secret holds, the cluster master key, and the
//! names of a namespace's restic-format repository (DESIGN §5).

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;
use sha2::{Digest, Sha256};
use stowage_api::location::Provider;
use stowage_api::repo_keys::repository_identity;
use stowage_api::{names, BackupStorageLocation};
use stowage_storage::{LocationSpec, ObjectStore};

/// The credentials file (an AWS-style ini) named by a location, if it has one.
pub async fn credentials_file(client: &Client, namespace: &str, loc: &BackupStorageLocation) -> anyhow::Result<Option<String>> {
    let name = loc.metadata.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (secret_name, key, required) = match &loc.spec.credential {
        Some(sel) => (sel.name.clone(), sel.key.clone(), !sel.optional.unwrap_or(false)),
        None => (names::CREDENTIALS_SECRET.to_string(), names::CREDENTIALS_SECRET_KEY.to_string(), false),
    };
    match secrets.get_opt(&secret_name).await? {
        Some(s) => match s.data.as_ref().and_then(|d| d.get(&key)) {
            Some(v) => Ok(Some(String::from_utf8(v.0.clone()).map_err(|_| {
                anyhow::anyhow!("storage location {name:?}: Secret {secret_name:?} key {key:?} is not UTF-8 text")
            })?)),
            None if required => {
                anyhow::bail!("storage location {name:?}: Secret {secret_name:?} has no key {key:?}; fix spec.credential")
            }
            None => Ok(None),
        },
        None if required => {
            anyhow::bail!("storage location {name:?}: credentials Secret {secret_name:?} not found in namespace {namespace}")
        }
        None => Ok(None),
    }
}

/// Opens the object store behind a location, with the credentials its Secret holds.
pub async fn open_location(client: &Client, namespace: &str, loc: &BackupStorageLocation) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let name = loc.metadata.name.clone().unwrap_or_default();
    let credentials_file = credentials_file(client, namespace, loc).await?;
    let ca_cert = match &loc.spec.object_storage.ca_cert {
        Some(b64) => {
            use base64::Engine;
            Some(base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
                anyhow::anyhow!("storage location {name:?}: spec.objectStorage.caCert is not valid base64")
            })?)
        }
        None => None,
    };
    let spec = LocationSpec {
        name,
        provider: loc.spec.provider.clone(),
        bucket: loc.spec.object_storage.bucket.clone(),
        prefix: loc.spec.object_storage.prefix.clone(),
        config: loc.spec.config.clone(),
        credentials_file,
        ca_cert,
    };
    Ok(stowage_storage::open(&spec)?)
}

/// The cluster master key every repository password is derived from.
pub async fn master_key(client: &Client, namespace: &str) -> anyhow::Result<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let key = secrets
        .get_opt(names::MASTER_KEY_SECRET)
        .await?
        .and_then(|s| s.data?.get(names::MASTER_KEY_SECRET_KEY).map(|v| v.0.clone()))
        .with_context(|| {
            format!(
                "Secret {namespace}/{} (key {}) not found: it holds the key every repository password is derived from; \
                 restore it from your copy, or run `stowage install` to create one for a new cluster",
                names::MASTER_KEY_SECRET,
                names::MASTER_KEY_SECRET_KEY
            )
        })?;
    anyhow::ensure!(
        key.len() == names::MASTER_KEY_LEN,
        "Secret {namespace}/{} key {} holds {} bytes, not {}; restore it from your copy",
        names::MASTER_KEY_SECRET,
        names::MASTER_KEY_SECRET_KEY,
        key.len(),
        names::MASTER_KEY_LEN
    );
    Ok(key)
}

/// Where one namespace's repository lives and what names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryRef {
    /// What the password is derived from (provider, bucket, prefix, namespace).
    pub identity: String,
    /// The repository as the restic CLI names it (`s3:https://host/bucket/prefix/restic/ns`, or a path).
    pub restic_identifier: String,
    /// The volume namespace.
    pub namespace: String,
}

/// The repository of `volume_namespace` in a location.
pub fn repository_of(loc: &BackupStorageLocation, volume_namespace: &str) -> anyhow::Result<RepositoryRef> {
    let spec = &loc.spec;
    let name = loc.metadata.name.as_deref().unwrap_or_default();
    let provider = spec.provider_kind().with_context(|| {
        format!("storage location {name:?} has provider {:?}, which this build does not know", spec.provider)
    })?;
    let bucket = &spec.object_storage.bucket;
    let prefix = spec.object_storage.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    let path = match prefix {
        Some(p) => format!("{bucket}/{p}/restic/{volume_namespace}"),
        None => format!("{bucket}/restic/{volume_namespace}"),
    };
    let restic_identifier = match provider {
        Provider::Aws => {
            let region = spec.config.get("region").cloned().unwrap_or_else(|| "us-east-1".to_string());
            let endpoint = spec
                .config
                .get("s3Url")
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
            format!("s3:{endpoint}/{path}")
        }
        Provider::Filesystem => path,
    };
    Ok(RepositoryRef {
        identity: repository_identity(provider.as_str(), bucket, prefix, volume_namespace),
        restic_identifier,
        namespace: volume_namespace.to_string(),
    })
}

/// The name of the BackupRepository object of (location, namespace): readable, stable (so two
/// writers agree on it) and a valid object name even for long names.
pub fn repository_object_name(location: &str, volume_namespace: &str) -> String {
    let plain = format!("{volume_namespace}-{location}");
    if plain.len() <= 63 {
        return plain;
    }
    let digest = Sha256::digest(format!("{volume_namespace}\0{location}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut head: String = plain.chars().take(63 - 9).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(spec: serde_json::Value) -> BackupStorageLocation {
        serde_json::from_value(serde_json::json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "stowage"}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn s3_repositories_are_named_as_restic_names_them() {
        let loc = location(serde_json::json!({"provider": "aws", "objectStorage": {"bucket": "velero", "prefix": "/c1/"},
            "config": {"s3Url": "http://minio:9000/"}}));
        let r = repository_of(&loc, "app").unwrap();
        assert_eq!(r.restic_identifier, "s3:http://minio:9000/velero/c1/restic/app");
        assert_eq!(r.identity, "aws:velero/c1/restic/app");
        let aws = location(serde_json::json!({"provider": "velero.io/aws", "objectStorage": {"bucket": "b"}, "config": {"region": "eu-west-1"}}));
        assert_eq!(repository_of(&aws, "ns").unwrap().restic_identifier, "s3:https://s3.eu-west-1.amazonaws.com/b/restic/ns");
        let fs = location(serde_json::json!({"provider": "filesystem", "objectStorage": {"bucket": "/var/backups"}}));
        assert_eq!(repository_of(&fs, "ns").unwrap().restic_identifier, "/var/backups/restic/ns");
        let odd = location(serde_json::json!({"provider": "gcp", "objectStorage": {"bucket": "b"}}));
        assert!(repository_of(&odd, "ns").unwrap_err().to_string().contains("\"gcp\""));
    }

    #[test]
    fn repository_object_names_are_stable_and_valid() {
        assert_eq!(repository_object_name("default", "app"), "app-default");
        let long = "n".repeat(60);
        let a = repository_object_name("default", &long);
        assert!(a.len() <= 63, "{a}");
        assert_eq!(a, repository_object_name("default", &long));
        assert_ne!(a, repository_object_name("other", &long));
    }
}

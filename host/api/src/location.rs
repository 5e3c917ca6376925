//! `BackupStorageLocation`: a bucket (or directory) where backups are kept.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serde_util::is_false;

/// Where backups are stored and how to reach it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.io",
    version = "v1alpha1",
    kind = "BackupStorageLocation",
    namespaced,
    status = "BackupStorageLocationStatus",
    category = "stowage",
    shortname = "bsl",
    derive = "PartialEq",
    doc = "An object store location where backups and volume repositories are kept.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.objectStorage.bucket"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Validated", type_ = "date", json_path = ".status.lastValidationTime"),
    printcolumn(name = "Access Mode", type_ = "string", json_path = ".spec.accessMode"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationSpec {
    /// `aws` (any S3-compatible store) or `filesystem`. Velero's `velero.io/aws` is accepted.
    pub provider: String,
    pub object_storage: ObjectStorageLocation,
    /// Provider settings. For `aws`: region, s3Url, s3ForcePathStyle, insecureSkipTLSVerify,
    /// profile (the credentials profile), ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// The Secret key holding the credentials file; the server's own credentials when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeySelector>,
    /// Backups that name no location go to the default one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// ReadOnly locations are never written to (restore-only, for migrations); unset means
    /// ReadWrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// How often backups in the location are synced into the cluster (Go duration; `0s`
    /// disables sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_sync_period: Option<String>,
    /// How often the location is checked for availability (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_frequency: Option<String>,
}

impl BackupStorageLocationSpec {
    /// The access mode in force (ReadWrite when unset).
    pub fn access_mode(&self) -> AccessMode {
        self.access_mode.unwrap_or_default()
    }

    /// The provider, recognised; None for providers this build does not know.
    pub fn provider_kind(&self) -> Option<Provider> {
        Provider::parse(&self.provider)
    }
}

/// The bucket and prefix of a location.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageLocation {
    /// The bucket; for the `filesystem` provider, the absolute directory holding the objects.
    pub bucket: String,
    /// A path inside the bucket under which everything is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Base64 of a PEM bundle used to verify the store's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

/// The object-store providers Stowage speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// S3 and S3-compatible stores (MinIO, Ceph RGW, garage, ...).
    Aws,
    /// A local or mounted directory.
    Filesystem,
}

impl Provider {
    pub fn parse(provider: &str) -> Option<Provider> {
        match provider {
            "aws" | "velero.io/aws" => Some(Provider::Aws),
            "filesystem" => Some(Provider::Filesystem),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Filesystem => "filesystem",
        }
    }
}

/// Whether Stowage may write to a location.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    #[default]
    ReadWrite,
    ReadOnly,
}

/// Whether a location was reachable when last checked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LocationPhase {
    Available,
    Unavailable,
}

/// Whether the location is reachable, and when it was last checked and synced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<LocationPhase>,
    /// When backups in the location were last synced into the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
    /// When the location was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation_time: Option<Time>,
    /// Why the location is Unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const VELERO_LIKE: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: BackupStorageLocation
metadata:
  name: default
  namespace: stowage
spec:
  provider: aws
  objectStorage:
    bucket: velero
    prefix: cluster-a
  config:
    region: minio
    s3ForcePathStyle: "true"
    s3Url: http://minio.velero.svc:9000
  credential:
    name: cloud-credentials
    key: cloud
  default: true
  accessMode: ReadOnly
  backupSyncPeriod: 1m
status:
  phase: Available
  lastValidationTime: "2024-05-01T10:00:00Z"
"#;

    #[test]
    fn round_trips_velero_like_yaml() {
        let bsl: BackupStorageLocation = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(bsl.spec.provider_kind(), Some(Provider::Aws));
        assert_eq!(bsl.spec.access_mode(), AccessMode::ReadOnly);
        assert_eq!(bsl.spec.config["s3ForcePathStyle"], "true");
        assert_eq!(bsl.spec.credential.as_ref().unwrap().key, "cloud");
        let original: serde_json::Value = serde_yaml::from_str(VELERO_LIKE).unwrap();
        assert_eq!(serde_json::to_value(&bsl).unwrap(), original);
    }

    #[test]
    fn defaults_and_providers() {
        let spec: BackupStorageLocationSpec =
            serde_yaml::from_str("provider: velero.io/aws\nobjectStorage: {bucket: b}").unwrap();
        assert_eq!(spec.access_mode(), AccessMode::ReadWrite);
        assert!(!spec.default);
        assert_eq!(spec.provider_kind(), Some(Provider::Aws));
        assert_eq!(Provider::parse("gcp"), None);
        assert_eq!(Provider::parse(Provider::Filesystem.as_str()), Some(Provider::Filesystem));
    }
}

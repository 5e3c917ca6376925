//! From a BackupStorageLocation's fields to a store. Kept free of the API crate's types so the
//! controller, the CLI and node agents can all call it with what they have.

use crate::credentials::S3Credentials;
use crate::error::{Result, StorageError};
use crate::fs::FsStore;
use crate::s3::{S3Config, S3Store, DEFAULT_REGION};
use crate::ObjectStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Velero aws-plugin settings Stowage does not implement; accepted with a warning so existing
/// BackupStorageLocations still load.
const IGNORED_CONFIG: &[&str] = &[
    "serverSideEncryption",
    "kmsKeyId",
    "customerKeyEncryptionFile",
    "signatureVersion",
    "tagging",
    "checksumAlgorithm",
    "enableSharedConfig",
    "credentialsFile",
];

/// What a BackupStorageLocation says about its storage.
#[derive(Debug, Clone, Default)]
pub struct LocationSpec {
    /// The BackupStorageLocation's name.
    pub name: String,
    /// `aws` (any S3-compatible server) or `filesystem`; `velero.io/` prefixes are accepted.
    pub provider: String,
    /// The bucket, or for `filesystem` an absolute directory.
    pub bucket: String,
    pub prefix: Option<String>,
    /// `spec.config`: `region`, `s3Url`, `publicUrl`, `s3ForcePathStyle`, `insecureSkipTLSVerify`,
    /// `profile`.
    pub config: BTreeMap<String, String>,
    /// Text of the credential Secret's key (an AWS credentials file).
    pub credentials_file: Option<String>,
    /// `spec.objectStorage.caCert`, PEM.
    pub ca_cert: Option<Vec<u8>>,
}

/// Builds the store for a location. Makes no request: call [`ObjectStore::check`] to find out
/// whether the location is available.
pub fn open(spec: &LocationSpec) -> Result<Arc<dyn ObjectStore>> {
    let provider = spec
        .provider
        .strip_prefix("velero.io/")
        .unwrap_or(&spec.provider);
    match provider {
        "aws" => Ok(Arc::new(S3Store::new(s3_config(spec)?)?)),
        "filesystem" => Ok(Arc::new(fs_store(spec)?)),
        other => Err(StorageError::config(
            &spec.name,
            format!(
                "provider \"{other}\" is not supported; use \"aws\" (any S3-compatible server) \
                 or \"filesystem\""
            ),
        )),
    }
}

fn s3_config(spec: &LocationSpec) -> Result<S3Config> {
    let setting = |key: &str| {
        spec.config
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let flag = |key: &str| -> Result<bool> {
        match setting(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(StorageError::config(
                &spec.name,
                format!("spec.config.{key} is \"{v}\"; use \"true\" or \"false\""),
            )),
        }
    };
    for key in spec.config.keys() {
        if IGNORED_CONFIG.contains(&key.as_str()) {
            tracing::warn!(location = %spec.name, key, "spec.config setting is not supported; ignored");
        } else if ![
            "region",
            "s3Url",
            "s3ForcePathStyle",
            "insecureSkipTLSVerify",
            "profile",
            "publicUrl",
        ]
        .contains(&key.as_str())
        {
            tracing::warn!(location = %spec.name, key, "unknown spec.config setting; ignored");
        }
    }

    let credentials = match &spec.credentials_file {
        None => None,
        Some(text) => {
            let profile = setting("profile").unwrap_or("default");
            Some(S3Credentials::from_ini(text, profile).map_err(|e| {
                StorageError::config(&spec.name, format!("{e}; check the credentials Secret"))
            })?)
        }
    };
    let mut config = S3Config::new(&spec.name, &spec.bucket);
    config.prefix = spec.prefix.clone();
    config.region = setting("region").unwrap_or(DEFAULT_REGION).to_string();
    config.endpoint = setting("s3Url").map(str::to_string);
    config.public_endpoint = setting("publicUrl").map(str::to_string);
    config.force_path_style = flag("s3ForcePathStyle")?;
    config.insecure_skip_tls_verify = flag("insecureSkipTLSVerify")?;
    config.credentials = credentials;
    config.ca_cert_pem = spec.ca_cert.clone();
    Ok(config)
}

fn fs_store(spec: &LocationSpec) -> Result<FsStore> {
    let root = Path::new(&spec.bucket);
    if !root.is_absolute() {
        return Err(StorageError::config(
            &spec.name,
            format!(
                "filesystem location needs an absolute directory in spec.objectStorage.bucket, \
                 not \"{}\"",
                spec.bucket
            ),
        ));
    }
    let prefix = spec.prefix.as_deref().unwrap_or("").trim_matches('/');
    if prefix.is_empty() {
        return Ok(FsStore::new(&spec.name, root));
    }
    crate::key::validate_key(&spec.name, prefix).map_err(|_| {
        StorageError::config(
            &spec.name,
            format!("invalid prefix \"{prefix}\"; fix spec.objectStorage.prefix"),
        )
    })?;
    Ok(FsStore::new(&spec.name, root.join(prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(provider: &str, bucket: &str, config: &[(&str, &str)]) -> LocationSpec {
        LocationSpec {
            name: "default".into(),
            provider: provider.into(),
            bucket: bucket.into(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_velero_minio_settings() {
        let mut s = spec(
            "velero.io/aws",
            "velero",
            &[
                ("region", "minio"),
                ("s3Url", "http://minio:9000"),
                ("s3ForcePathStyle", "true"),
            ],
        );
        s.prefix = Some("cluster-a".into());
        s.credentials_file =
            Some("[default]\naws_access_key_id=minio\naws_secret_access_key=minio123".into());
        let config = s3_config(&s).unwrap();
        assert_eq!(config.region, "minio");
        assert_eq!(config.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(config.force_path_style);
        assert_eq!(
            config.credentials,
            Some(S3Credentials::new("minio", "minio123"))
        );
        assert_eq!(open(&s).unwrap().location(), "default");
    }

    #[test]
    fn selects_the_credentials_profile_from_config() {
        let mut s = spec("aws", "b", &[("profile", "backup")]);
        s.credentials_file =
            Some("[default]\naws_access_key_id=a\naws_secret_access_key=b\n".into());
        let err = s3_config(&s).unwrap_err().to_string();
        assert_eq!(
            err,
            "storage location \"default\": credentials file: profile \"backup\" not found \
             (the file has: default); check the credentials Secret"
        );
    }

    #[test]
    fn rejects_bad_settings_with_the_field_to_fix() {
        let cases = [
            (spec("gcp", "b", &[]), "provider \"gcp\" is not supported"),
            (
                spec("aws", "b", &[("s3ForcePathStyle", "yes")]),
                "spec.config.s3ForcePathStyle is \"yes\"",
            ),
            (
                spec("aws", "b", &[("s3Url", "minio:9000")]),
                "fix spec.config.s3Url",
            ),
            (spec("aws", "", &[]), "set spec.objectStorage.bucket"),
            (
                spec("aws", "b", &[("insecureSkipTLSVerify", "true")]),
                "spec.objectStorage.caCert",
            ),
            (
                spec("filesystem", "relative/dir", &[]),
                "absolute directory",
            ),
        ];
        for (s, expected) in cases {
            let err = open(&s).expect_err(expected).to_string();
            assert!(err.starts_with("storage location \"default\": "), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        let mut s = spec("aws", "b", &[]);
        s.prefix = Some("a/../b".into());
        assert!(open(&s)
            .unwrap_err()
            .to_string()
            .contains("spec.objectStorage.prefix"));
    }

    #[test]
    fn filesystem_prefix_is_a_subdirectory() {
        let mut s = spec("filesystem", "/var/lib/stowage", &[]);
        s.prefix = Some("/cluster-a/".into());
        assert_eq!(
            fs_store(&s).unwrap().root(),
            Path::new("/var/lib/stowage/cluster-a")
        );
        s.prefix = Some("../etc".into());
        assert!(fs_store(&s).is_err());
    }
}

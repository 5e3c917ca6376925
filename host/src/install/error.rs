use std::path::PathBuf;

use thiserror::Error;

/// Why an install cannot go ahead; each message says what to do.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error(
        "--namespaced-extension-capabilities: {0}; write it like {{log: true, kubeRead: [pods]}}"
    )]
    ExtensionCapabilities(String),

    #[error("--default-repo-maintain-frequency {0}; write a Go duration such as 168h or 24h (0 turns scheduled maintenance off)")]
    MaintainFrequency(String),

    #[error(
        "--provider is required: use --provider aws (S3 or S3-compatible, e.g. MinIO) or --provider filesystem, \
         or pass --no-default-backup-location to install without a storage location"
    )]
    MissingProvider,

    #[error("--bucket is required with --provider {provider}: {what}")]
    MissingBucket { provider: &'static str, what: &'static str },

    #[error("--bucket must be an absolute directory with --provider filesystem, got {0:?}")]
    FilesystemBucketNotAbsolute(String),

    #[error("--bucket {0:?} is not a valid bucket name; pass the bucket name only, without s3:// or a path")]
    BadBucket(String),

    #[error("--backup-location-config: {pair:?} is not KEY=VALUE; write e.g. region=minio,s3ForcePathStyle=true")]
    MalformedConfigPair { pair: String },

    #[error("--backup-location-config: {key} is given twice; keep one")]
    DuplicateConfigKey { key: String },

    #[error("--backup-location-config: {key}={value:?} must be true or false")]
    ConfigNotBool { key: String, value: String },

    #[error("--backup-location-config: {key}={value:?} must be a URL starting with http:// or https://")]
    ConfigNotUrl { key: String, value: String },

    #[error(
        "--secret-file is required with --provider aws: an AWS credentials file with [default] \
         aws_access_key_id and aws_secret_access_key; or pass --no-secret if the pods get credentials \
         another way (e.g. IAM roles for service accounts)"
    )]
    MissingSecretFile,

    // Not `#[source]`: the cause is part of the sentence, and must not be printed twice.
    #[error("cannot read --secret-file {}: {error}; pass the path of an AWS credentials file", path.display())]
    UnreadableSecretFile { path: PathBuf, error: std::io::Error },

    #[error("--secret-file {}: {problem}", path.display())]
    MalformedSecretFile { path: PathBuf, problem: String },

    #[error("--kubelet-pods-dir must be an absolute path, got {0:?}")]
    RelativeKubeletDir(String),

    #[error("--namespace {0:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)")]
    BadNamespace(String),

    #[error("--image must not be empty")]
    EmptyImage,

    #[error("cannot read 32 random bytes from the operating system for the master key: {0}")]
    MasterKey(String),
}

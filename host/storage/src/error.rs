//! The crate's one error type. Every variant a user can see names the storage location and,
//! where there is one, what to change.

use std::io;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist (the bucket or directory does). Callers rely on telling this
    /// apart from every other failure, see [`StorageError::is_not_found`].
    #[error("storage location \"{location}\": object \"{key}\" not found")]
    NotFound { location: String, key: String },

    #[error(
        "storage location \"{location}\": bucket \"{bucket}\" does not exist at {endpoint}; \
         create it or fix spec.objectStorage.bucket"
    )]
    BucketNotFound {
        location: String,
        bucket: String,
        endpoint: String,
    },

    #[error(
        "storage location \"{location}\": directory {path} does not exist; \
         create it or fix spec.objectStorage.bucket"
    )]
    DirectoryNotFound { location: String, path: String },

    /// Bad or missing credentials, or credentials without the needed permission. `code` is the
    /// S3 error code (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, ...).
    #[error(
        "storage location \"{location}\": access denied ({code}); check the credentials Secret"
    )]
    AccessDenied { location: String, code: String },

    #[error(
        "storage location \"{location}\": bucket \"{bucket}\" is in a different region than \
         \"{region}\" ({code}); set spec.config.region to the bucket's region"
    )]
    WrongRegion {
        location: String,
        bucket: String,
        region: String,
        code: String,
    },

    /// No HTTP answer: connection refused, DNS, TLS or timeout.
    #[error(
        "storage location \"{location}\": cannot reach {endpoint}: {reason}; \
         check spec.config.s3Url and that the server is reachable"
    )]
    Unreachable {
        location: String,
        endpoint: String,
        reason: String,
    },

    #[error("storage location \"{location}\": invalid key \"{key}\": {reason}")]
    InvalidKey {
        location: String,
        key: String,
        reason: &'static str,
    },

    #[error("storage location \"{location}\": {message}")]
    InvalidConfig { location: String, message: String },

    /// A credentials file (`--secret-file`, the credential Secret) that cannot be used.
    /// Never carries the file's text: it holds secrets.
    #[error("credentials file: {0}")]
    CredentialsFile(String),

    #[error("storage location \"{location}\": {action}: {source}")]
    Io {
        location: String,
        action: String,
        #[source]
        source: io::Error,
    },

    /// Any other error the S3 server answered with.
    #[error(
        "storage location \"{location}\": {operation} failed: {code} (HTTP {status}): {message}"
    )]
    Service {
        location: String,
        operation: &'static str,
        code: String,
        status: u16,
        message: String,
    },
}

impl StorageError {
    /// True only for a missing object, not for a missing bucket or directory.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// The storage location the error is about, when it is about one.
    pub fn location(&self) -> Option<&str> {
        use StorageError::*;
        match self {
            NotFound { location, .. }
            | BucketNotFound { location, .. }
            | DirectoryNotFound { location, .. }
            | AccessDenied { location, .. }
            | WrongRegion { location, .. }
            | Unreachable { location, .. }
            | InvalidKey { location, .. }
            | InvalidConfig { location, .. }
            | Io { location, .. }
            | Service { location, .. } => Some(location),
            CredentialsFile(_) => None,
        }
    }

    pub(crate) fn io(location: &str, action: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            location: location.to_string(),
            action: action.into(),
            source,
        }
    }

    pub(crate) fn config(location: &str, message: impl Into<String>) -> Self {
        StorageError::InvalidConfig {
            location: location.to_string(),
            message: message.into(),
        }
    }
}

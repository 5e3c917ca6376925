//! Turns SDK errors into [`StorageError`]s a user can act on. The SDK's own messages
//! ("service error", "dispatch failure") say neither which location nor what to do.

use super::S3Store;
use crate::error::StorageError;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::error::Error;

/// Error codes meaning the credentials are wrong, expired or lack permission.
const ACCESS_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "InvalidSecurity",
    "AccountProblem",
];

/// Error codes meaning the bucket lives in another region than the one configured.
const REGION_CODES: &[&str] = &[
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
];

impl S3Store {
    /// Maps an SDK error from `operation` on `key` (`None` for bucket-level calls).
    pub(super) fn map_err<E>(
        &self,
        operation: &'static str,
        key: Option<&str>,
        err: SdkError<E>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StorageError::Unreachable {
                location: self.location.clone(),
                endpoint: self.endpoint.clone(),
                reason: innermost_message(&err),
            },
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let status = err.raw_response().map_or(0, |r| r.status().as_u16());
                let message = match err.message() {
                    Some(m) => m.to_string(),
                    None => DisplayErrorContext(&err).to_string(),
                };
                self.classify(operation, key, status, err.code(), message)
            }
            _ => StorageError::Service {
                location: self.location.clone(),
                operation,
                code: "ClientError".to_string(),
                status: 0,
                message: innermost_message(&err),
            },
        }
    }

    /// Maps an error the server reported by code and HTTP status (also used for the per-key
    /// errors in a DeleteObjects reply).
    pub(super) fn classify(
        &self,
        operation: &'static str,
        key: Option<&str>,
        status: u16,
        code: Option<&str>,
        message: String,
    ) -> StorageError {
        let location = self.location.clone();
        let not_found = |key: &str| StorageError::NotFound {
            location: self.location.clone(),
            key: key.to_string(),
        };
        let bucket_not_found = || StorageError::BucketNotFound {
            location: self.location.clone(),
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
        };
        let wrong_region = |code: &str| StorageError::WrongRegion {
            location: self.location.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            code: code.to_string(),
        };
        match (code, status) {
            (Some("NoSuchBucket"), _) => bucket_not_found(),
            (Some("NoSuchKey" | "NotFound"), _) => not_found(key.unwrap_or_default()),
            (Some(code), _) if ACCESS_CODES.contains(&code) => StorageError::AccessDenied {
                location,
                code: code.to_string(),
            },
            (Some(code), _) if REGION_CODES.contains(&code) => wrong_region(code),
            // HEAD replies have no body, so no code: the status is all there is.
            (None, 404) => match key {
                Some(key) => not_found(key),
                None => bucket_not_found(),
            },
            (None, 403) => StorageError::AccessDenied {
                location,
                code: "HTTP 403 Forbidden".to_string(),
            },
            (None, 301) => wrong_region("HTTP 301 Moved Permanently"),
            (code, status) => StorageError::Service {
                location,
                operation,
                code: code.map_or_else(|| format!("HTTP {status}"), str::to_string),
                status,
                message,
            },
        }
    }
}

/// The most specific message in an error's source chain ("Connection refused (os error 111)"
/// rather than "dispatch failure").
fn innermost_message(err: &(dyn Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

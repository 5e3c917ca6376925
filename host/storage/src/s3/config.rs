//! S3 location settings and the SDK client built from them. No aws-config: everything the
//! client needs comes from the BackupStorageLocation, with one HTTP stack (hyper 1 + rustls/ring).

use crate::credentials::S3Credentials;
use crate::error::{Result, StorageError};
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use std::time::Duration;

pub const DEFAULT_REGION: &str = "us-east-1";
/// Part size for multipart uploads: 8 MiB parts allow 80 GiB objects within S3's 10,000-part
/// limit; a size hint raises it for bigger objects.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// How often one request is tried before it fails. Connection errors, timeouts, 5xx replies
/// and throttling are retried after a jittered exponential backoff (up to 1 s, doubling to at
/// most 20 s): 12 tries wait about 75 s on average and at most about 2.5 minutes, so a request
/// rides out an outage of a minute or so and then fails naming the location.
pub const REQUEST_ATTEMPTS: u32 = 12;
/// Checking a location (its phase, `stowage backup-location get`) does not wait out an outage:
/// it reports one.
pub(super) const CHECK_ATTEMPTS: u32 = 3;
/// S3's minimum size for every part but the last.
pub(super) const MIN_PART_SIZE: usize = 5 << 20;

/// Where and how to reach one S3 storage location.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// BackupStorageLocation name, used in error messages.
    pub location: String,
    pub bucket: String,
    /// Keys live under `prefix/`; leading and trailing slashes are ignored.
    pub prefix: Option<String>,
    pub region: String,
    /// `s3Url`, for S3-compatible servers (MinIO, Ceph, ...). `None` means AWS.
    pub endpoint: Option<String>,
    /// `publicUrl`: the endpoint pre-signed download URLs name, for users outside the network
    /// the server reaches the store in (Velero's setting).
    pub public_endpoint: Option<String>,
    pub force_path_style: bool,
    /// `None` sends unsigned requests (public buckets).
    pub credentials: Option<S3Credentials>,
    /// Not supported (the TLS stack does not allow switching verification off); setting it is
    /// an error that suggests `ca_cert_pem` instead.
    pub insecure_skip_tls_verify: bool,
    /// Extra PEM CA certificate(s) to trust, for servers with a private CA (`caCert`).
    pub ca_cert_pem: Option<Vec<u8>>,
    pub part_size: usize,
}

impl S3Config {
    pub fn new(location: impl Into<String>, bucket: impl Into<String>) -> Self {
        S3Config {
            location: location.into(),
            bucket: bucket.into(),
            prefix: None,
            region: DEFAULT_REGION.to_string(),
            endpoint: None,
            public_endpoint: None,
            force_path_style: false,
            credentials: None,
            insecure_skip_tls_verify: false,
            ca_cert_pem: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// The URL requests go to, for messages.
    pub(super) fn endpoint_for_messages(&self) -> String {
        match &self.endpoint {
            Some(url) => url.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// The prefix without surrounding slashes, validated like a key.
    pub(super) fn normalized_prefix(&self) -> Result<String> {
        let prefix = self.prefix.as_deref().unwrap_or("").trim_matches('/');
        if !prefix.is_empty() {
            crate::key::validate_key(&self.location, prefix).map_err(|_| {
                StorageError::config(
                    &self.location,
                    format!("invalid prefix \"{prefix}\"; fix spec.objectStorage.prefix"),
                )
            })?;
        }
        Ok(prefix.to_string())
    }

    /// The client that signs download URLs: the same as [`S3Config::build_client`]'s, aimed
    /// at `publicUrl` when set.
    pub(super) fn build_presign_client(&self) -> Result<aws_sdk_s3::Client> {
        match &self.public_endpoint {
            None => self.build_client(),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                S3Config { endpoint: Some(url.clone()), public_endpoint: None, ..self.clone() }.build_client()
            }
            Some(url) => Err(StorageError::config(
                &self.location,
                format!("publicUrl \"{url}\" must start with http:// or https://; fix spec.config.publicUrl"),
            )),
        }
    }

    pub(super) fn build_client(&self) -> Result<aws_sdk_s3::Client> {
        let fail = |message: String| Err(StorageError::config(&self.location, message));
        if self.bucket.is_empty() {
            return fail("no bucket configured; set spec.objectStorage.bucket".into());
        }
        if self.insecure_skip_tls_verify {
            return fail(
                "insecureSkipTLSVerify is not supported; put the server's CA certificate in \
                 spec.objectStorage.caCert instead"
                    .into(),
            );
        }
        if self.part_size < MIN_PART_SIZE {
            return fail(format!(
                "part size {} is below S3's 5 MiB minimum",
                self.part_size
            ));
        }
        if let Some(url) = &self.endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return fail(format!(
                    "s3Url \"{url}\" must start with http:// or https://; fix spec.config.s3Url"
                ));
            }
        }

        let mut trust = TrustStore::default();
        if let Some(pem) = &self.ca_cert_pem {
            trust = trust.with_pem_certificate(pem.clone());
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| {
                StorageError::config(&self.location, format!("invalid TLS settings: {e}"))
            })?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context)
            .build_https();

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .http_client(http_client)
            .force_path_style(self.force_path_style)
            .timeout_config(timeouts)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(REQUEST_ATTEMPTS)
                    .with_initial_backoff(Duration::from_secs(1))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            // The SDK's shared retry quota would stop retrying every location after a burst
            // of failures in one; each request is bounded by its attempts instead.
            .retry_partition(
                RetryPartition::custom(format!("stowage-location-{}", self.location))
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            // Many S3-compatible servers reject the SDK's default trailing CRC checksums; the
            // SigV4 payload hash already covers the body.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &self.endpoint {
            builder = builder.endpoint_url(url.trim_end_matches('/'));
        }
        builder = match &self.credentials {
            Some(c) => builder.credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "stowage-storage-location",
            )),
            None => builder.allow_no_auth(),
        };
        Ok(aws_sdk_s3::Client::from_conf(builder.build()))
    }
}

//! A storage location in an S3-compatible bucket.

mod config;
mod errors;
mod upload;

pub use config::{S3Config, DEFAULT_PART_SIZE, DEFAULT_REGION, REQUEST_ATTEMPTS};

use crate::error::{Result, StorageError};
use crate::key::{dir_of, join, refuse_empty_prefix, validate_key, validate_prefix};
use crate::{ObjectInfo, ObjectReader, ObjectStore};
use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use bytes::Bytes;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncRead;

/// DeleteObjects takes at most this many keys per request.
const DELETE_BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// Signs download URLs (aimed at `publicUrl` when set).
    presign_client: aws_sdk_s3::Client,
    location: String,
    bucket: String,
    /// Without surrounding slashes; empty for none.
    prefix: String,
    region: String,
    /// For messages.
    endpoint: String,
    part_size: usize,
}

impl S3Store {
    /// Builds the client; no request is made until the first operation (see
    /// [`ObjectStore::check`]).
    pub fn new(config: S3Config) -> Result<Self> {
        Ok(S3Store {
            client: config.build_client()?,
            presign_client: config.build_presign_client()?,
            prefix: config.normalized_prefix()?,
            endpoint: config.endpoint_for_messages(),
            location: config.location,
            bucket: config.bucket,
            region: config.region,
            part_size: config.part_size,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket in the configured region; an existing bucket we own is fine.
    /// For tests and `stowage install` with a local server; locations normally point at
    /// existing buckets.
    pub async fn create_bucket(&self) -> Result<()> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        if self.region != DEFAULT_REGION {
            let constraint = BucketLocationConstraint::from(self.region.as_str());
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(constraint)
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.map_err("CreateBucket", None, e)),
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        validate_key(&self.location, key)?;
        Ok(join(&self.prefix, key))
    }

    fn full_prefix(&self, prefix: &str) -> Result<String> {
        validate_prefix(&self.location, prefix)?;
        Ok(match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, _) => prefix.to_string(),
            (false, true) => format!("{}/", self.prefix),
            (false, false) => format!("{}/{prefix}", self.prefix),
        })
    }

    /// A key from the bucket, relative to our prefix.
    fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    async fn put_object(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.map_err("PutObject", Some(key), e))?;
        Ok(())
    }

    async fn get_object(&self, key: &str) -> Result<ByteStream> {
        let full = self.full_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err("GetObject", Some(key), e))?;
        Ok(output.body)
    }
}

fn system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_object(key, data).await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size_hint: Option<u64>,
    ) -> Result<u64> {
        self.upload_stream(key, body, size_hint).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let body = self.get_object(key).await?;
        let data = body.collect().await.map_err(|e| {
            let e = std::io::Error::other(e);
            StorageError::io(&self.location, format!("reading \"{key}\""), e)
        })?;
        Ok(data.into_bytes())
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            self.head(key).await?;
            return Ok(Bytes::new());
        }
        let full = self.full_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await
            .map_err(|e| self.map_err("GetObject", Some(key), e))?;
        let data = output.body.collect().await.map_err(|e| {
            let e = std::io::Error::other(e);
            StorageError::io(&self.location, format!("reading \"{key}\""), e)
        })?;
        let data = data.into_bytes();
        // A server clamps a range that runs past the end instead of failing it.
        if data.len() as u64 != len {
            return Err(StorageError::io(
                &self.location,
                format!("reading bytes {offset}..{} of \"{key}\"", offset + len),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("got {} bytes; range reaches past the end of the object", data.len()),
                ),
            ));
        }
        Ok(data)
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader> {
        Ok(Box::new(self.get_object(key).await?.into_async_read()))
    }

    async fn presigned_get(&self, key: &str, expires_in: Duration) -> Result<Option<String>> {
        let full = self.full_key(key)?;
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| StorageError::config(&self.location, format!("pre-signing {key}: {e}")))?;
        let request = self
            .presign_client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .presigned(config)
            .await
            .map_err(|e| self.map_err("GetObject (pre-signing)", Some(key), e))?;
        Ok(Some(request.uri().to_string()))
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let full = self.full_key(key)?;
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err("HeadObject", Some(key), e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            last_modified: system_time(output.last_modified()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full_prefix = self.full_prefix(prefix)?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            // Some servers mishandle empty query parameters: only send what is set.
            .set_prefix(Some(full_prefix).filter(|p| !p.is_empty()))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("ListObjectsV2", None, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                objects.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: system_time(object.last_modified()),
                });
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(&self.location, prefix)?;
        let dir = dir_of(prefix);
        let full_dir = match join(&self.prefix, dir) {
            d if d.is_empty() => d,
            d => format!("{d}/"),
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix(Some(full_dir.clone()).filter(|p| !p.is_empty()))
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("ListObjectsV2", None, e))?;
            for common in page.common_prefixes() {
                let name = common
                    .prefix()
                    .and_then(|p| p.strip_prefix(full_dir.as_str()))
                    .and_then(|p| p.strip_suffix('/'));
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err("DeleteObject", Some(key), e))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        refuse_empty_prefix(&self.location, prefix)?;
        let keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(join(&self.prefix, k))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .expect("key is set");
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.map_err("DeleteObjects", None, e))?;
            // Quiet mode reports only failures, per key.
            if let Some(failed) = output.errors().first() {
                let key = failed
                    .key()
                    .and_then(|k| self.relative(k))
                    .unwrap_or_default();
                let message = failed.message().unwrap_or_default().to_string();
                return Err(self.classify("DeleteObjects", Some(key), 0, failed.code(), message));
            }
        }
        Ok(keys.len() as u64)
    }

    async fn check(&self) -> Result<()> {
        // A one-key listing rather than HeadBucket: HEAD replies carry no error code, and
        // listing is what backup sync needs permission for anyway.
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix(
                Some(&self.prefix)
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("{p}/")),
            )
            .max_keys(1)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(config::CHECK_ATTEMPTS),
            ))
            .send()
            .await
            .map_err(|e| self.map_err("ListObjectsV2", None, e))?;
        Ok(())
    }
}

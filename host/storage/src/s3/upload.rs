//! Streaming uploads: one PutObject for small bodies, otherwise a multipart upload with a few
//! parts in flight. Memory stays at about `part_size * (MAX_IN_FLIGHT + 1)` whatever the size.

use super::config::MIN_PART_SIZE;
use super::S3Store;
use crate::error::{Result, StorageError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

/// Parts uploaded concurrently; more buys little against one server and costs memory.
const MAX_IN_FLIGHT: usize = 4;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

impl S3Store {
    pub(super) async fn upload_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size_hint: Option<u64>,
    ) -> Result<u64> {
        let full = self.full_key(key)?;
        let part_size = part_size_for(self.part_size, size_hint);
        let first = self.read_part(key, body, part_size).await?;
        if first.len() < part_size {
            let len = first.len() as u64;
            self.put_object(key, first).await?;
            return Ok(len);
        }

        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.map_err("CreateMultipartUpload", Some(key), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let mut pending = PendingUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full.clone(),
            upload_id: Some(upload_id.clone()),
        };
        match self
            .upload_parts(key, &full, &upload_id, first, body, part_size)
            .await
        {
            Ok(total) => {
                pending.upload_id = None;
                Ok(total)
            }
            Err(e) => {
                pending.abort().await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        part_size: usize,
    ) -> Result<u64> {
        // Parts run as tasks so they progress while the next part is read; dropping the set
        // (on error) cancels the rest.
        let mut in_flight = JoinSet::new();
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut total = 0u64;
        let mut next = Some(first);
        for number in 1.. {
            let data = match next.take() {
                Some(data) => data,
                None => self.read_part(key, body, part_size).await?,
            };
            if data.is_empty() {
                break;
            }
            if number > MAX_PARTS {
                return Err(StorageError::config(
                    &self.location,
                    format!(
                        "\"{key}\" needs more than {MAX_PARTS} parts of {part_size} bytes; \
                         pass its size so a bigger part size is chosen"
                    ),
                ));
            }
            let last = data.len() < part_size;
            total += data.len() as u64;
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number as i32)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data));
            in_flight.spawn(async move { (number as i32, request.send().await) });
            while in_flight.len() >= MAX_IN_FLIGHT {
                done.push(self.finish_part(key, in_flight.join_next().await)?);
            }
            if last {
                break;
            }
        }
        while !in_flight.is_empty() {
            done.push(self.finish_part(key, in_flight.join_next().await)?);
        }
        done.sort_by_key(|p| p.part_number());

        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(_) => Ok(total),
            Err(e) => match unparsed_success_etag(&e) {
                Some(etag) if self.has_object(full, &etag, total).await => Ok(total),
                _ => Err(self.map_err("CompleteMultipartUpload", Some(key), e)),
            },
        }
    }

    /// Whether `full` now exists with this ETag and size.
    async fn has_object(&self, full: &str, etag: &str, size: u64) -> bool {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await;
        head.is_ok_and(|h| h.e_tag() == Some(etag) && h.content_length() == Some(size as i64))
    }

    fn finish_part(
        &self,
        key: &str,
        joined: Option<Result<(i32, UploadPartResult), tokio::task::JoinError>>,
    ) -> Result<CompletedPart> {
        let (number, result) = joined
            .expect("called with parts in flight")
            .expect("part upload tasks do not panic and are not cancelled here");
        let output = result.map_err(|e| self.map_err("UploadPart", Some(key), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(output.e_tag().map(str::to_string))
            .build())
    }

    /// Reads up to `size` bytes, fewer only at the end of the body.
    async fn read_part(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size: usize,
    ) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let want = (size - buf.len()) as u64;
            let n = (&mut *body)
                .take(want)
                .read_buf(&mut buf)
                .await
                .map_err(|e| {
                    StorageError::io(&self.location, format!("reading the data for \"{key}\""), e)
                })?;
            if n == 0 {
                break;
            }
        }
        Ok(buf.freeze())
    }
}

/// moto answers CompleteMultipartUpload with a `CompleteMultipartUploadResponse` root element
/// that the SDK refuses to parse. HTTP 200 without an error code means the server did complete
/// the upload: returns the ETag from the body, for the caller to confirm with HEAD.
fn unparsed_success_etag(
    err: &aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
    >,
) -> Option<String> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let response = err.raw_response()?;
    if response.status().as_u16() != 200 || err.code().is_some() {
        return None;
    }
    let body = std::str::from_utf8(response.body().bytes()?).ok()?;
    let start = body.find("<ETag>")? + "<ETag>".len();
    let end = start + body[start..].find("</ETag>")?;
    Some(
        body[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\""),
    )
}

type UploadPartResult = std::result::Result<
    aws_sdk_s3::operation::upload_part::UploadPartOutput,
    aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>,
>;

/// Big enough that `size_hint` bytes fit in S3's part limit, rounded up to whole MiB.
fn part_size_for(configured: usize, size_hint: Option<u64>) -> usize {
    let configured = configured.max(MIN_PART_SIZE);
    let Some(size) = size_hint else {
        return configured;
    };
    let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(needed as usize)
}

/// A multipart upload that must be aborted unless it completed, or the bucket keeps its parts
/// (and bills for them) forever. Aborts on error explicitly, and from `Drop` when the upload
/// future is cancelled.
struct PendingUpload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl PendingUpload {
    async fn abort(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort(
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                upload_id,
            )
            .await;
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            runtime.spawn(abort(client, bucket, key, upload_id));
        }
    }
}

async fn abort(client: aws_sdk_s3::Client, bucket: String, key: String, upload_id: String) {
    let result = client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await;
    if let Err(e) = result {
        tracing::warn!(
            bucket, key, upload_id,
            error = %aws_sdk_s3::error::DisplayErrorContext(&e),
            "could not abort a failed multipart upload; a bucket lifecycle rule can clean it up"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_when_the_object_needs_it() {
        let mib = 1usize << 20;
        assert_eq!(part_size_for(8 * mib, None), 8 * mib);
        assert_eq!(part_size_for(8 * mib, Some(200 * mib as u64)), 8 * mib);
        assert_eq!(part_size_for(1, None), MIN_PART_SIZE);
        // 200 GiB / 10,000 parts = 20.48 MiB, rounded up to 21 MiB.
        let big = part_size_for(8 * mib, Some(200 << 30));
        assert_eq!(big, 21 * mib);
        assert!(big as u64 * MAX_PARTS >= 200 << 30);
    }
}

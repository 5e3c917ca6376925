//! A storage location in a local directory (the `filesystem` provider). Writes are atomic:
//! data goes to a temporary file in the target's directory, is synced, then renamed over the
//! target, so readers never see a partial object.

use crate::error::{Result, StorageError};
use crate::key::{dir_of, refuse_empty_prefix, validate_key, validate_prefix};
use crate::{ObjectInfo, ObjectReader, ObjectStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};

/// Temporary files start with this; listings skip them.
const TMP_MARKER: &str = ".stowage-tmp.";
const COPY_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FsStore {
    location: String,
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root`, which need not exist yet (see [`FsStore::create_root`]).
    pub fn new(location: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        FsStore {
            location: location.into(),
            root: root.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the root directory (and its parents) if missing.
    pub async fn create_root(&self) -> Result<()> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| self.io_err(format!("creating {}", self.root.display()), e))
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(&self.location, key)?;
        Ok(self.root.join(key))
    }

    fn io_err(&self, action: impl Into<String>, e: io::Error) -> StorageError {
        StorageError::io(&self.location, action, e)
    }

    /// Maps "no such file" to [`StorageError::NotFound`] for `key`.
    fn read_err(&self, key: &str, e: io::Error) -> StorageError {
        if e.kind() == io::ErrorKind::NotFound {
            self.not_found(key)
        } else {
            self.io_err(format!("reading \"{key}\""), e)
        }
    }

    /// A missing root is the location missing, like a missing bucket on S3.
    fn list_err(&self, prefix: &str, e: io::Error) -> StorageError {
        if e.kind() == io::ErrorKind::NotFound {
            StorageError::DirectoryNotFound {
                location: self.location.clone(),
                path: self.root.display().to_string(),
            }
        } else {
            self.io_err(format!("listing \"{prefix}\""), e)
        }
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            location: self.location.clone(),
            key: key.to_string(),
        }
    }

    async fn write_atomically(
        &self,
        key: &str,
        path: &Path,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64> {
        let tmp = temp_path(path);
        let written = async {
            let mut file = create_in_dir(&tmp).await?;
            let mut reader = BufReader::with_capacity(COPY_BUFFER, body);
            let n = tokio::io::copy_buf(&mut reader, &mut file).await?;
            file.flush().await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, path).await?;
            Ok::<_, io::Error>(n)
        }
        .await;
        written.map_err(|e| {
            // Best effort: the temp file may not exist, and the write error matters more.
            let _ = std::fs::remove_file(&tmp);
            self.io_err(format!("writing \"{key}\""), e)
        })
    }

    /// Removes now-empty directories from `path`'s parent up to (not including) the root, so
    /// directories disappear with their last object as they do on S3.
    async fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            if tokio::fs::remove_dir(d).await.is_err() {
                break; // not empty (or already gone): stop climbing
            }
            dir = d.parent();
        }
    }
}

/// Creates `path` and its missing parent directories. Retries because a concurrent `delete`
/// may prune the directory between the two steps.
async fn create_in_dir(path: &Path) -> io::Result<tokio::fs::File> {
    let parent = path
        .parent()
        .expect("a validated key has a parent (the root)");
    let mut attempts = 0;
    loop {
        tokio::fs::create_dir_all(parent).await?;
        let opened = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await;
        match opened {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            other => return other,
        }
    }
}

/// Reads the parts in order, dropping each once read.
struct PartsReader(std::collections::VecDeque<Bytes>);

impl AsyncRead for PartsReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        while let Some(part) = self.0.front_mut() {
            if part.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = part.len().min(buf.remaining());
            buf.put_slice(&part.split_to(n));
            break;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{TMP_MARKER}{}.{n}.{name}", std::process::id()))
}

#[async_trait]
impl ObjectStore for FsStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        self.write_atomically(key, &path, &mut &data[..]).await?;
        Ok(())
    }

    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        let path = self.path_of(key)?;
        let mut body = PartsReader(parts.into());
        self.write_atomically(key, &path, &mut body).await?;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        _size_hint: Option<u64>,
    ) -> Result<u64> {
        let path = self.path_of(key)?;
        self.write_atomically(key, &path, body).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.head(key).await?; // a directory is not an object
        let path = self.path_of(key)?;
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| self.read_err(key, e))?;
        Ok(Bytes::from(data))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let read = tokio::task::spawn_blocking(move || read_range(&path, offset, len))
            .await
            .expect("ranged read does not panic");
        match read {
            Ok(data) => Ok(Bytes::from(data)),
            // A directory is not an object.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Err(self.not_found(key)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.io_err(
                format!("reading bytes {offset}..{} of \"{key}\"", offset + len),
                io::Error::new(e.kind(), "range reaches past the end of the object"),
            )),
            Err(e) => Err(self.read_err(key, e)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader> {
        self.head(key).await?;
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.read_err(key, e))?;
        Ok(Box::new(file))
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let path = self.path_of(key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| self.read_err(key, e))?;
        if !meta.is_file() {
            return Err(self.not_found(key));
        }
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.len(),
            last_modified: meta.modified().ok(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        validate_prefix(&self.location, prefix)?;
        // Walk only the deepest directory the prefix names; filter the rest by string prefix.
        let start = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let root = self.root.clone();
        let (start, prefix) = (start.to_string(), prefix.to_string());
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start, &mut out).map(|()| out)
        })
        .await
        .expect("directory walk does not panic")
        .map_err(|e| self.list_err(&prefix, e))?;
        found.retain(|info| info.key.starts_with(&prefix));
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(&self.location, prefix)?;
        let dir = self.root.join(dir_of(prefix));
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(self.list_err(prefix, e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| self.list_err(prefix, e))?
        {
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err(format!("deleting \"{key}\""), e)),
        }
        self.prune_empty_dirs(&path).await;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        refuse_empty_prefix(&self.location, prefix)?;
        let objects = self.list(prefix).await?;
        for object in &objects {
            self.delete(&object.key).await?;
        }
        Ok(objects.len() as u64)
    }

    async fn check(&self) -> Result<()> {
        match tokio::fs::metadata(&self.root).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::config(
                &self.location,
                format!("{} is not a directory", self.root.display()),
            )),
            Err(e) => Err(self.list_err("", e)),
        }
    }
}

/// `len` bytes at `offset` of the file at `path`; `UnexpectedEof` when the file is shorter.
fn read_range(path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::IsADirectory));
    }
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut data = vec![0; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut data)?;
    Ok(data)
}

/// Appends the regular files under `root/rel` to `out`, recursively. Symlinks are not followed
/// (they could lead outside the root) and temporary files are skipped.
fn walk(root: &Path, rel: &str, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match std::fs::read_dir(root.join(rel)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not valid UTF-8: cannot be a key this crate wrote
        };
        let key = crate::key::join(rel, &name);
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &key, out)?;
        } else if file_type.is_file() && !name.starts_with(TMP_MARKER) {
            let meta = entry.metadata()?;
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                last_modified: meta.modified().ok(),
            });
        }
    }
    Ok(())
}

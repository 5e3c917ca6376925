//! Reading an archive: Stowage's `tar.zst` or Velero's `tar.gz`, told apart by magic bytes,
//! with every entry checked before anything is written to disk.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::extracted::ExtractedArchive;
use super::{ArchiveError, ItemPath};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bounds on what extracting one archive may write. A small, highly compressed archive could
/// otherwise fill the server's disk (a decompression bomb): whoever can write to the bucket
/// must not be able to. Going over a bound fails the extraction, before anything is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Files and directories.
    pub max_entries: u64,
    /// The bytes of all files together.
    pub max_total_bytes: u64,
    /// The bytes of one file. etcd stores at most 1.5 MiB per object, so anything far larger
    /// is not an item of a backup.
    pub max_entry_bytes: u64,
}

impl Default for ExtractLimits {
    /// Generous: a million entries, 16 GiB, 64 MiB an entry.
    fn default() -> Self {
        ExtractLimits { max_entries: 1_000_000, max_total_bytes: 16 << 30, max_entry_bytes: 64 << 20 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stowage's `.tar.zst`.
    Zstd,
    /// Velero's `.tar.gz`.
    Gzip,
}

/// One regular file of the archive, read whole: entries are single objects, at most 64 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// The path, relative and checked, `/`-separated.
    pub path: String,
    pub bytes: Vec<u8>,
}

impl ArchiveEntry {
    /// What the path says about the item, if it is one.
    pub fn item_path(&self) -> Option<ItemPath> {
        ItemPath::parse(&self.path)
    }
}

pub struct ArchiveReader<'a> {
    archive: tar::Archive<Box<dyn Read + 'a>>,
    compression: Compression,
    limits: ExtractLimits,
}

impl<'a> ArchiveReader<'a> {
    /// Detects the compression from the first bytes.
    pub fn new<R: Read + 'a>(reader: R) -> Result<ArchiveReader<'a>, ArchiveError> {
        let mut buffered = BufReader::new(reader);
        let head = buffered.fill_buf()?;
        let (compression, stream): (Compression, Box<dyn Read + 'a>) = if head.starts_with(&ZSTD_MAGIC) {
            (Compression::Zstd, Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?))
        } else if head.starts_with(&GZIP_MAGIC) {
            (Compression::Gzip, Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
        } else {
            let magic = head.iter().take(4).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            return Err(ArchiveError::UnknownFormat { magic });
        };
        Ok(ArchiveReader { archive: tar::Archive::new(stream), compression, limits: ExtractLimits::default() })
    }

    /// Extracts within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: ExtractLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Streams the regular files in archive order, failing on the first unsafe entry.
    pub fn entries(
        &mut self,
    ) -> Result<impl Iterator<Item = Result<ArchiveEntry, ArchiveError>> + use<'_, 'a>, ArchiveError> {
        let entries = self.archive.entries()?;
        let max_entry_bytes = self.limits.max_entry_bytes;
        Ok(entries.filter_map(move |entry| read_entry(entry, max_entry_bytes).transpose()))
    }

    /// Extracts into `dir` (which should be empty): regular files and directories only.
    /// Failing to read the archive is [`ArchiveError::Damaged`]; failing to write the
    /// extraction is [`ArchiveError::Io`].
    pub fn extract(mut self, dir: &Path) -> Result<ExtractedArchive, ArchiveError> {
        let limits = self.limits;
        let (mut entries, mut total) = (0u64, 0u64);
        for entry in self.archive.entries().map_err(ArchiveError::Damaged)? {
            let mut entry = entry.map_err(ArchiveError::Damaged)?;
            let Some(relative) = checked_path(&entry, limits.max_entry_bytes)? else { continue };
            entries += 1;
            if entries > limits.max_entries {
                return Err(ArchiveError::OverLimit(format!("has more than {} entries", limits.max_entries)));
            }
            total += entry.header().entry_size().map_err(ArchiveError::Damaged)?;
            if total > limits.max_total_bytes {
                return Err(ArchiveError::OverLimit(format!("holds more than {} bytes uncompressed", limits.max_total_bytes)));
            }
            let target = dir.join(&relative);
            if entry.header().entry_type().is_dir() {
                fs::create_dir_all(&target)?;
                continue;
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            // tar reads exactly the size its header gave, which was checked above.
            copy_entry(&mut entry, &mut File::create(&target)?)?;
        }
        // tar stops at its end-of-archive blocks; reading on to the end of the compressed
        // stream makes the decoder check what follows (gzip's CRC and length, zstd's frame end
        // and checksum), so a damaged or cut-off archive fails here rather than restoring.
        io::copy(&mut self.archive.into_inner(), &mut io::sink()).map_err(ArchiveError::Damaged)?;
        ExtractedArchive::open(dir)
    }

    /// Extracts into a fresh temporary directory, removed when the result is dropped.
    pub fn extract_to_temp(self) -> Result<ExtractedArchive, ArchiveError> {
        let temp = tempfile::Builder::new().prefix("stowage-restore-").tempdir()?;
        let extracted = self.extract(temp.path())?;
        Ok(extracted.owning(temp))
    }
}

/// Copies one entry, telling a read failure (the archive) from a write failure (the disk).
fn copy_entry(from: &mut impl Read, to: &mut impl Write) -> Result<(), ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Damaged(e)),
        };
        to.write_all(&buf[..n])?;
    }
}

fn read_entry<R: Read>(entry: io::Result<tar::Entry<'_, R>>, max_entry_bytes: u64) -> Result<Option<ArchiveEntry>, ArchiveError> {
    let mut entry = entry?;
    let Some(relative) = checked_path(&entry, max_entry_bytes)? else { return Ok(None) };
    if entry.header().entry_type().is_dir() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes)?;
    let path = relative.to_string_lossy().into_owned();
    Ok(Some(ArchiveEntry { path, bytes }))
}

/// The entry's path if it is safe to extract, `None` for entries that carry no file (pax
/// global headers), an error naming the entry otherwise.
fn checked_path<R: Read>(entry: &tar::Entry<'_, R>, max_entry_bytes: u64) -> Result<Option<PathBuf>, ArchiveError> {
    let raw = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let unsafe_entry = |reason: &str| ArchiveError::UnsafeEntry { entry: name.clone(), reason: reason.to_string() };
    use tar::EntryType as T;
    match entry.header().entry_type() {
        T::Regular | T::Continuous | T::Directory => {}
        T::XGlobalHeader => return Ok(None),
        T::Symlink => return Err(unsafe_entry("is a symbolic link")),
        T::Link => return Err(unsafe_entry("is a hard link")),
        _ => return Err(unsafe_entry("is not a regular file or directory")),
    }
    if entry.header().entry_size().map_err(ArchiveError::Damaged)? > max_entry_bytes {
        return Err(ArchiveError::OverLimit(format!("entry {name:?} is larger than {max_entry_bytes} bytes, more than any Kubernetes object")));
    }
    if name.starts_with('/') {
        return Err(unsafe_entry("has an absolute path"));
    }
    let mut relative = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_entry("has a '..' component")),
            _ => relative.push(part),
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

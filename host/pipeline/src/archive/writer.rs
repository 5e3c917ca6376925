//! Writing an archive: items go straight through tar and zstd into the sink, one at a time.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use stowage_api::layout::archive::{item_path, preferred_version_item_path, FORMAT_VERSION, METADATA_VERSION};

use super::ArchiveError;
use crate::item::Item;

/// zstd's default level: ~3x on JSON at well over 100 MiB/s per core, so compression does not
/// slow a backup down; higher levels cost far more CPU for a few percent.
const ZSTD_LEVEL: i32 = 3;

/// Streams items into a zstd-compressed tar. Memory use is bounded by zstd's window and one
/// item, whatever the number of items: nothing is kept once written. Callers write each item
/// once (the collect stage tracks what it has seen).
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, W>>,
    mtime: u64,
    items: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive and writes its `metadata/version`.
    pub fn new(sink: W) -> Result<ArchiveWriter<W>, ArchiveError> {
        let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
        // A content checksum (4 bytes) lets a restore tell a damaged archive from a good one;
        // without it a flipped byte can decode into a different, valid-looking object.
        encoder.include_checksum(true)?;
        let mtime = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut writer = ArchiveWriter { tar: tar::Builder::new(encoder), mtime, items: 0 };
        writer.append(METADATA_VERSION, FORMAT_VERSION.as_bytes())?;
        Ok(writer)
    }

    /// Writes an item read in its group's preferred version (the one collect reads), under
    /// both the plain path and the `<version>-preferredversion/` path, as Velero does.
    pub fn add_item(&mut self, item: &Item) -> Result<(), ArchiveError> {
        check_file_name(item, "name", &item.name)?;
        if let Some(ns) = &item.namespace {
            check_file_name(item, "namespace", ns)?;
        }
        let bytes = serde_json::to_vec(&item.object)
            .map_err(|source| ArchiveError::Serialize { item: item.to_string(), source })?;
        let ns = item.namespace.as_deref();
        self.append(&item_path(&item.resource, &item.group, ns, &item.name), &bytes)?;
        let preferred = preferred_version_item_path(&item.resource, &item.group, &item.version, ns, &item.name);
        self.append(&preferred, &bytes)?;
        self.items += 1;
        Ok(())
    }

    pub fn items_written(&self) -> u64 {
        self.items
    }

    /// Ends the tar, flushes zstd's last frame, and hands back the sink.
    pub fn finish(self) -> Result<W, ArchiveError> {
        let encoder = self.tar.into_inner()?;
        Ok(encoder.finish()?)
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_size(bytes.len() as u64);
        // Paths past 100 bytes get a GNU long-name entry, which Velero's Go reader understands.
        self.tar.append_data(&mut header, path, bytes)?;
        Ok(())
    }
}

/// Names come from the API server, which never allows `/`; checked anyway because a path
/// built from them must stay inside its directory when the archive is extracted.
fn check_file_name(item: &Item, field: &'static str, value: &str) -> Result<(), ArchiveError> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(ArchiveError::UnsafeName { item: item.to_string(), field, value: value.to_string() });
    }
    Ok(())
}

//! The repository's index as a backup reads it (which blobs are stored, where the parent's
//! trees are) and the index files it writes; sealing and opening repository files.

use super::*;

impl Writer<'_> {
    /// Reads every index file: data blob ids and tree blob locations.
    pub(super) fn load_index(&self) -> Result<RepoIndex, EngineError> {
        let mut index = RepoIndex::default();
        let ids = self.backend.list(FileType::Index).map_err(self.err)?;
        for id in ids {
            self.check_cancel()?;
            let sealed = self.backend.read_full(FileType::Index, &id).map_err(self.err)?;
            let json = open_file(self.key, &sealed).ok_or_else(|| {
                self.fail(format!(
                    "index file {} cannot be decrypted or decoded; run `restic check`",
                    id.to_hex().as_str()
                ))
            })?;
            let parsed: IndexJson = serde_json::from_slice(&json).map_err(|e| {
                self.fail(format!(
                    "index file {} is not a restic index ({e}); run `restic check`",
                    id.to_hex().as_str()
                ))
            })?;
            for pack in parsed.packs {
                let Ok(pack_id) = pack.id.parse::<Id>() else {
                    continue;
                };
                for blob in pack.blobs {
                    let Ok(blob_id) = blob.id.parse::<Id>() else {
                        continue;
                    };
                    match blob.tpe.as_str() {
                        "data" => {
                            index.data_bytes += u64::from(blob.length);
                            index.data.insert(blob_id);
                        }
                        "tree" => {
                            index.trees.insert(
                                blob_id,
                                Location {
                                    pack: pack_id,
                                    offset: blob.offset,
                                    length: blob.length,
                                    uncompressed: blob.uncompressed_length,
                                },
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(index)
    }

    pub(super) fn read_tree(&self, index: &RepoIndex, id: &Id) -> Result<Tree, String> {
        let loc = index
            .trees
            .get(id)
            .ok_or_else(|| format!("tree {} is not in the index", id.to_hex().as_str()))?;
        let sealed = self
            .backend
            .read_partial(FileType::Pack, &loc.pack, false, loc.offset, loc.length)
            .map_err(|e| e.display_log())?;
        let plain = self
            .key
            .decrypt(&sealed)
            .ok_or_else(|| format!("tree {} does not decrypt", id.to_hex().as_str()))?;
        let plain = match loc.uncompressed {
            Some(len) => zstd::bulk::decompress(&plain, len as usize).map_err(|e| e.to_string())?,
            None => plain,
        };
        serde_json::from_slice(&plain).map_err(|e| format!("tree {}: {e}", id.to_hex().as_str()))
    }

    /// The parent snapshot's tree of the volume (under `as_path`), if it has one.
    pub(super) fn parent_volume_tree(
        &self,
        index: &RepoIndex,
        parent: &SnapshotFile,
        as_path: &Path,
    ) -> Option<(Id, Tree)> {
        let mut id = *parent.tree;
        for name in path_names(as_path) {
            let tree = self
                .read_tree(index, &id)
                .inspect_err(|e| tracing::warn!("parent snapshot {}: {e}", parent.id.to_hex().as_str()))
                .ok()?;
            let node = tree
                .nodes
                .into_iter()
                .find(|n| n.is_dir() && n.name() == name.as_os_str())?;
            id = *node.subtree?;
        }
        let tree = self
            .read_tree(index, &id)
            .inspect_err(|e| tracing::warn!("parent snapshot {}: {e}", parent.id.to_hex().as_str()))
            .ok()?;
        Some((id, tree))
    }

    pub(super) fn write_index(&self, packs: &[PackDone]) -> Result<(), EngineError> {
        let mut batch = Vec::new();
        let mut blobs = 0;
        for (n, pack) in packs.iter().enumerate() {
            let entries: Vec<serde_json::Value> = pack
                .entries
                .iter()
                .map(|e| {
                    let mut blob = serde_json::json!({
                        "id": e.id.to_hex().as_str(),
                        "type": if e.tree { "tree" } else { "data" },
                        "offset": e.offset,
                        "length": e.length,
                    });
                    if let Some(u) = e.uncompressed {
                        blob["uncompressed_length"] = u.into();
                    }
                    blob
                })
                .collect();
            blobs += entries.len();
            batch.push(serde_json::json!({ "id": pack.id.to_hex().as_str(), "blobs": entries }));
            if blobs >= INDEX_BLOBS || n + 1 == packs.len() {
                let json = serde_json::to_vec(&serde_json::json!({ "packs": batch }))
                    .map_err(|e| self.fail(format!("encoding the index: {e}")))?;
                let (id, sealed) = seal_file(self.key, &json, zstd::DEFAULT_COMPRESSION_LEVEL);
                self.backend
                    .put_parts(FileType::Index, &id, vec![sealed.into()])
                    .map_err(self.err)?;
                batch.clear();
                blobs = 0;
            }
        }
        Ok(())
    }
}

/// A repository file as restic v2 stores it: the version byte 2, the zstd-compressed JSON,
/// encrypted; its id is the SHA-256 of the stored bytes.
pub(super) fn seal_file(key: &DataKey, json: &[u8], level: i32) -> (Id, Vec<u8>) {
    let mut plain = vec![2u8];
    plain.extend(zstd::bulk::compress(json, level).expect("zstd compresses in memory"));
    let sealed = key.encrypt(&plain);
    (Id::new(sha256(&sealed)), sealed)
}

/// The JSON of a stored repository file: uncompressed (restic v1, starting with `{` or `[`)
/// or compressed (the version byte 2 and zstd).
pub(super) fn open_file(key: &DataKey, sealed: &[u8]) -> Option<Vec<u8>> {
    let plain = key.decrypt(sealed)?;
    match plain.first() {
        Some(b'{' | b'[') => Some(plain),
        Some(2) => zstd::stream::decode_all(&plain[1..]).ok(),
        _ => None,
    }
}

//! Blobs into packs: each chunk hashed, skipped when stored, else compressed, encrypted and
//! packed; full packs uploaded by the uploader thread, which saves index files as
//! [`IndexEvery`] says.

use super::*;

impl Packer {
    pub(super) fn add(&self, raw: [u8; 32], sealed: Vec<u8>, uncompressed: Option<u32>) -> Option<Pack> {
        let mut pack = self.current.lock().expect("not poisoned");
        let length = sealed.len() as u32;
        let offset = pack.size as u32;
        pack.entries.push(PackEntry {
            tree: self.tree,
            id: Id::new(raw),
            raw,
            offset,
            length,
            uncompressed,
        });
        pack.size += u64::from(length);
        pack.blobs.push(Bytes::from(sealed));
        (pack.size >= self.target).then(|| std::mem::take(&mut *pack))
    }

    pub(super) fn finish(&self) -> Option<Pack> {
        let pack = std::mem::take(&mut *self.current.lock().expect("not poisoned"));
        (!pack.entries.is_empty()).then_some(pack)
    }
}

impl Shared<'_> {
    /// Stores chunks (hashed side by side) unless the repository has them: returns their ids.
    pub(super) fn store_all(&self, zstd: &mut zstd::bulk::Compressor, chunks: &[&[u8]]) -> Result<Vec<Id>, EngineError> {
        self.w.check_cancel()?;
        let hashes = crate::sha256x8::sha256_many(chunks);
        let mut ids = Vec::with_capacity(chunks.len());
        for (raw, data) in hashes.into_iter().zip(chunks) {
            ids.push(self.store(zstd, raw, data)?);
            self.w.progress.inc(data.len() as u64);
        }
        Ok(ids)
    }

    /// Stores one chunk whose SHA-256 is `raw` unless the repository has it: returns its id.
    pub(super) fn store(&self, zstd: &mut zstd::bulk::Compressor, raw: [u8; 32], data: &[u8]) -> Result<Id, EngineError> {
        self.w.check_cancel()?;
        let id = Id::new(raw);
        if !self.known.lock().expect("not poisoned").insert(id) {
            return Ok(id);
        }
        // One buffer per blob: the nonce's room, the compressed bytes (or, when compressing
        // does not make them smaller, the chunk itself), encrypted in place, then the MAC.
        let mut buf = io::Cursor::new(vec![0u8; NONCE]);
        buf.get_mut().reserve_exact(data.len() + OVERHEAD - NONCE);
        buf.set_position(NONCE as u64);
        let compressed = zstd.compress_to_buffer(data, &mut buf);
        let mut sealed = buf.into_inner();
        let uncompressed = match compressed {
            Ok(n) if n < data.len() && sealed.len() == NONCE + n => Some(data.len() as u32),
            // Too large for the buffer (incompressible data) or no smaller: stored as it is.
            _ => {
                sealed.truncate(NONCE);
                sealed.extend_from_slice(data);
                None
            }
        };
        self.w.key.encrypt_in_place(&mut sealed);
        self.added.data_blobs.fetch_add(1, Ordering::Relaxed);
        self.added.data_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.added.data_packed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        if let Some(pack) = self.data.add(raw, sealed, uncompressed) {
            self.upload(pack)?;
        }
        Ok(id)
    }

    /// Hands a full pack to the uploader thread, waiting until it takes it (so at most two
    /// full packs are held besides the one filling: the one written and the one handed over).
    pub(super) fn upload(&self, pack: Pack) -> Result<(), EngineError> {
        self.upload_failure()?;
        let sender = self.uploads.lock().expect("not poisoned").clone();
        let sent = sender.map(|s| s.send(pack).is_ok());
        if sent != Some(true) {
            self.upload_failure()?;
            return Err(self.w.fail("the backup's pack uploader ended early".into()));
        }
        Ok(())
    }

    /// The uploader thread: writes the packs handed to it, in turn, and the index files of
    /// those written when they are due, until the backup ends or one fails (the failure is
    /// kept for [`Self::upload_failure`]).
    pub(super) fn upload_all(&self, packs: &Receiver<Pack>) {
        let _notice = DeathNotice(&self.died);
        loop {
            let next = match self.index_deadline() {
                Some(deadline) => packs.recv_deadline(deadline),
                None => packs.recv().map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
            };
            let result = match next {
                Ok(_) if self.stop.load(Ordering::Relaxed) => continue,
                Ok(pack) => self.write_pack(pack).and_then(|()| self.index_if_due()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.index_if_due(),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            if let Err(e) = result {
                self.upload_error.lock().expect("not poisoned").get_or_insert(e);
                self.upload_failed.store(true, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// When the packs waiting for an index file have waited long enough; `None` when none
    /// wait, or once the backup failed or was canceled (no index files are saved then).
    pub(super) fn index_deadline(&self) -> Option<Instant> {
        if self.stop.load(Ordering::Relaxed) || self.w.cancel.is_cancelled() {
            return None;
        }
        let since = self.written.lock().expect("not poisoned").since?;
        since.checked_add(self.w.index_every.age)
    }

    /// Saves an index file of the packs written since the last one, when enough are waiting
    /// or the oldest has waited long enough (not once the backup failed or was canceled).
    pub(super) fn index_if_due(&self) -> Result<(), EngineError> {
        if self.stop.load(Ordering::Relaxed) || self.w.cancel.is_cancelled() {
            return Ok(());
        }
        let every = self.w.index_every;
        let packs = {
            let mut written = self.written.lock().expect("not poisoned");
            let due = written.packs.len() >= every.packs
                || written.since.is_some_and(|since| since.elapsed() >= every.age);
            if !due {
                return Ok(());
            }
            std::mem::take(&mut *written).packs
        };
        self.w.write_index(&packs)
    }

    /// The failure of a pack upload, once one failed (the first caller gets the storage
    /// error itself).
    pub(super) fn upload_failure(&self) -> Result<(), EngineError> {
        if !self.upload_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self.upload_error.lock().expect("not poisoned").take().unwrap_or_else(|| self.stopped()))
    }

    /// The error of work refused after the backup failed (the failure itself is reported by
    /// whoever met it first).
    pub(super) fn stopped(&self) -> EngineError {
        if self.w.cancel.is_cancelled() {
            return self.w.canceled();
        }
        self.w.fail("stopped after an earlier failure".into())
    }

    /// Writes a pack: its blobs, the encrypted header, the header's length; the pack's id is
    /// the SHA-256 of all of it.
    pub(super) fn write_pack(&self, pack: Pack) -> Result<(), EngineError> {
        let mut header = Vec::with_capacity(pack.entries.len() * 41);
        for e in &pack.entries {
            let kind = match (e.tree, e.uncompressed.is_some()) {
                (false, false) => 0u8,
                (true, false) => 1,
                (false, true) => 2,
                (true, true) => 3,
            };
            header.push(kind);
            header.extend_from_slice(&e.length.to_le_bytes());
            if let Some(u) = e.uncompressed {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(&e.raw);
        }
        let header = self.w.key.encrypt(&header);
        let header_len = (header.len() as u32).to_le_bytes();
        let mut parts = pack.blobs;
        parts.push(Bytes::from(header));
        parts.push(Bytes::copy_from_slice(&header_len));
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for part in &parts {
            hash.update(part);
        }
        let id = Id::new(hash.finish().as_ref().try_into().expect("32 bytes"));
        self.w
            .backend
            .put_parts(FileType::Pack, &id, parts)
            .map_err(self.w.err)?;
        let mut written = self.written.lock().expect("not poisoned");
        written.since.get_or_insert_with(Instant::now);
        written.packs.push(PackDone {
            id,
            entries: pack.entries,
        });
        Ok(())
    }
}

/// The data pack size rustic_core uses for a repository holding `current` bytes of that
/// type: the configured size growing with the square root of the repository, up to the limit.
pub(super) fn pack_size(size: u32, grow: u32, limit: u32, current: u64) -> u64 {
    let grown = u64::from(size) + current.isqrt() * u64::from(grow);
    grown.min(u64::from(limit)).min(u64::from(u32::MAX))
}

/// SHA-256, restic's blob and file ids.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    crate::sha256x8::one(data)
}

//! Files on the worker threads: small files read whole, large ones in regions; their
//! chunks found and handed to the packs.

use super::*;

impl Shared<'_> {
    pub(super) fn work(&self, jobs: &Receiver<Job>, done: &Sender<Done>) {
        let _notice = DeathNotice(&self.died);
        let mut zstd = zstd::bulk::Compressor::new(self.level).expect("a valid zstd level");
        for job in jobs {
            if self.stop.load(Ordering::Relaxed) {
                // The backup failed: answer without working, so nobody waits.
                let stopped = || self.stopped();
                let answers: Vec<Done> = match job {
                    Job::Files(files) => files
                        .into_iter()
                        .map(|(slot, _)| Done::File {
                            slot,
                            result: Err(stopped()),
                        })
                        .collect(),
                    Job::Region { index, .. } => vec![Done::Region {
                        index,
                        result: Err(FileFailure::Fatal(stopped())),
                    }],
                    Job::Chunks { first, .. } => vec![Done::Chunks {
                        first,
                        result: Err(stopped()),
                    }],
                };
                for answer in answers {
                    if done.send(answer).is_err() {
                        return;
                    }
                }
                continue;
            }
            let answers = match job {
                Job::Files(files) => self.files(&mut zstd, files),
                Job::Region {
                    file,
                    start,
                    end,
                    last,
                    index,
                } => vec![Done::Region {
                    index,
                    result: self.region(&file, start, end, last),
                }],
                Job::Chunks { first, data } => {
                    let chunks: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
                    let result = self.store_all(&mut zstd, &chunks);
                    vec![Done::Chunks { first, result }]
                }
            };
            for answer in answers {
                if done.send(answer).is_err() {
                    return;
                }
            }
        }
    }

    /// Reads (with their extended attributes, on the open handle), chunks and stores whole
    /// files, the chunks of all of them hashed together.
    pub(super) fn files(&self, zstd: &mut zstd::bulk::Compressor, files: Vec<(usize, FileAt)>) -> Vec<Done> {
        let mut read: Vec<(usize, Option<(Vec<u8>, serde_json::Value)>)> = Vec::with_capacity(files.len());
        for (slot, file) in files {
            if let Err(e) = self.w.check_cancel() {
                return vec![Done::File {
                    slot,
                    result: Err(e),
                }];
            }
            let mut data = Vec::new();
            let result = beneath::open_file_at(file.dir.as_fd(), file.name(), file.seen).and_then(|(mut f, len)| {
                let attrs = xattrs(XattrsOf::Handle(f.as_fd()));
                data.reserve_exact(len.min(REGION) as usize);
                f.read_to_end(&mut data)?;
                Ok(attrs)
            });
            match result {
                Ok(attrs) => {
                    self.added.read.fetch_add(data.len() as u64, Ordering::Relaxed);
                    read.push((slot, Some((data, attrs))));
                }
                Err(e) => {
                    let message = format!("{}: skipped, reading failed: {e}", file.path.display());
                    warn(&self.w.warnings, message);
                    read.push((slot, None));
                }
            }
        }
        // Every chunk of every file, and how many each file has.
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut counts = Vec::with_capacity(read.len());
        for (_, file) in &read {
            let Some((data, _)) = file else {
                counts.push(0);
                continue;
            };
            let mut start = 0;
            let cuts = self.chunker.cuts(data, true);
            counts.push(cuts.len());
            for cut in cuts {
                chunks.push(&data[start..cut]);
                start = cut;
            }
        }
        let mut ids = match self.store_all(zstd, &chunks) {
            Ok(ids) => ids.into_iter(),
            Err(e) => {
                let mut answers = Vec::new();
                let mut e = Some(e);
                for (slot, _) in &read {
                    let result = Err(e.take().unwrap_or_else(|| self.stopped()));
                    answers.push(Done::File { slot: *slot, result });
                }
                return answers;
            }
        };
        read.into_iter()
            .zip(counts)
            .map(|((slot, file), count)| {
                let result = Ok(match file {
                    Some((data, xattrs)) => FileOutcome::Stored {
                        ids: ids.by_ref().take(count).map(DataId::from).collect(),
                        size: data.len() as u64,
                        xattrs,
                    },
                    None => FileOutcome::Skipped,
                });
                Done::File { slot, result }
            })
            .collect()
    }

    pub(super) fn region(
        &self,
        file: &File,
        start: u64,
        end: u64,
        last: bool,
    ) -> Result<(Vec<u64>, Bytes), FileFailure> {
        self.w.check_cancel().map_err(FileFailure::Fatal)?;
        let data = read_at(file, start, (end - start) as usize).map_err(FileFailure::Read)?;
        self.added.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        let cuts = self
            .chunker
            .cuts(&data, last)
            .into_iter()
            .map(|c| c as u64 + start)
            .collect();
        Ok((cuts, Bytes::from(data)))
    }
}

/// `len` bytes of `file` from `offset`, into a buffer that is not zeroed first (zeroing 8 MiB
/// regions took a twentieth of a backup's CPU).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut data: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0;
    while done < len {
        let spare = &mut data.spare_capacity_mut()[..len - done];
        let at = libc::off_t::try_from(offset + done as u64).map_err(io::Error::other)?;
        // SAFETY: pread writes at most `spare.len()` bytes into the vector's spare capacity.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            n if n > 0 => {
                done += n as usize;
                // SAFETY: the first `done` bytes were written by pread.
                unsafe { data.set_len(done) };
            }
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter")),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(data)
}

/// The bytes `a..b` of the file from the region buffers, if they hold them.
pub(super) fn chunk_data(buffers: &BTreeMap<usize, Bytes>, starts: &[u64], a: u64, b: u64) -> Option<Bytes> {
    let first = starts.partition_point(|&s| s <= a) - 1;
    let last = starts.partition_point(|&s| s < b) - 1;
    if first == last {
        let buf = buffers.get(&first)?;
        let base = starts[first];
        return Some(buf.slice((a - base) as usize..(b - base) as usize));
    }
    let mut out = Vec::with_capacity((b - a) as usize);
    for (i, &base) in starts.iter().enumerate().take(last + 1).skip(first) {
        let buf = buffers.get(&i)?;
        let from = a.max(base) - base;
        let to = b.min(base + buf.len() as u64) - base;
        out.extend_from_slice(&buf[from as usize..to as usize]);
    }
    Some(Bytes::from(out))
}

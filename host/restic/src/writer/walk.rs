//! The walk on the calling thread: directories in name order, unchanged files kept from the
//! parent snapshot, files handed to the workers, trees stored children first.

use super::*;

impl Walk<'_, '_> {
    pub(super) fn w(&self) -> &Writer<'_> {
        self.sh.w
    }

    /// Walks the volume and stores its trees; returns the snapshot's root tree.
    pub(super) fn run(
        &mut self,
        volume: &Path,
        as_path: &Path,
        parent: Option<(Id, Tree)>,
    ) -> Result<Id, EngineError> {
        let handle = beneath::open_root(volume).map_err(|e| {
            self.w().fail(format!("reading the volume directory {}: {e}", volume.display()))
        })?;
        let root = self.dir(volume, Some(Arc::new(handle)), parent, 0)?;
        self.drain_until(|walk| walk.trees[root].is_some())?;
        let mut id = self.trees[root].expect("finalised");
        let root_meta = Metadata {
            mode: Some(0o755),
            ..Default::default()
        };
        for name in path_names(as_path).iter().rev() {
            let mut node = Node::new_node(name, NodeType::Dir, root_meta.clone());
            node.subtree = Some(TreeId::from(id));
            id = self.store_tree(Tree { nodes: vec![node] })?;
        }
        Ok(id)
    }

    /// Handles answers until `ready` holds, finalising the directories that can be.
    pub(super) fn drain_until(&mut self, ready: impl Fn(&Self) -> bool) -> Result<(), EngineError> {
        self.flush_files()?;
        loop {
            self.finalise()?;
            if ready(self) {
                return Ok(());
            }
            let done = self.recv()?;
            self.answer(done)?;
        }
    }

    /// Records a worker's answer about a small file.
    pub(super) fn answer(&mut self, done: Done) -> Result<(), EngineError> {
        match done {
            Done::File { slot, result } => {
                let outcome = result?;
                self.files[slot] = Some(Ok(outcome));
                Ok(())
            }
            Done::Region { .. } | Done::Chunks { .. } => {
                Err(self.w().fail("a large file's answer arrived after the file".into()))
            }
        }
    }

    /// The next worker answer; an error when a worker thread died (a panic), whose answer
    /// would never come.
    pub(super) fn recv(&self) -> Result<Done, EngineError> {
        loop {
            match self.done.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(done) => return Ok(done),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.sh.upload_failure()?;
                    if self.sh.died.load(Ordering::Relaxed) {
                        return Err(self.w().fail("a backup worker thread failed".into()));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.w().fail("the backup's worker threads ended early".into()))
                }
            }
        }
    }

    /// Queues a small file for the workers, in batches of up to [`BATCH_FILES`] files and
    /// [`BATCH_BYTES`] bytes.
    pub(super) fn queue_file(&mut self, slot: usize, file: FileAt, size: u64) -> Result<(), EngineError> {
        if !self.batch.is_empty() && self.batch_bytes + size > BATCH_BYTES {
            self.flush_files()?;
        }
        self.batch.push((slot, file));
        self.batch_bytes += size;
        if self.batch.len() >= BATCH_FILES {
            self.flush_files()?;
        }
        Ok(())
    }

    pub(super) fn flush_files(&mut self) -> Result<(), EngineError> {
        if !self.batch.is_empty() {
            self.batch_bytes = 0;
            let files = std::mem::take(&mut self.batch);
            self.submit(Job::Files(files))?;
        }
        Ok(())
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), EngineError> {
        self.jobs
            .send(job)
            .map_err(|_| self.w().fail("the backup's worker threads ended early".into()))
    }

    /// Walks directory `path` through its `handle` (none: its contents are left out, a
    /// warning said why), `depth` directories below the volume; its parent snapshot's tree is
    /// `parent`. Returns its pending directory's number.
    ///
    /// Every entry is looked at relative to the directory's handle and every subdirectory and
    /// file opened by name relative to it, never following a symlink, and only when it is
    /// still the entry (device, inode) the listing saw: a pod that swaps a directory for a
    /// symlink meanwhile gets a warning, not the symlink's target in its snapshot.
    pub(super) fn dir(
        &mut self,
        path: &Path,
        handle: Option<Arc<OwnedFd>>,
        parent: Option<(Id, Tree)>,
        depth: usize,
    ) -> Result<usize, EngineError> {
        self.w().check_cancel()?;
        let skipped = |e: io::Error| {
            warn(&self.w().warnings, format!("{}: skipped an entry: {e}", path.display()));
        };
        let mut names: Vec<OsString> = match handle.as_deref().map(|h| beneath::names(h.as_fd(), skipped)) {
            None => Vec::new(),
            Some(Ok(names)) => names,
            Some(Err(e)) if depth == 0 => {
                return Err(self.w().fail(format!(
                    "reading the volume directory {}: {e}",
                    path.display()
                )))
            }
            Some(Err(e)) => {
                let message = format!("{}: skipped its contents, reading failed: {e}", path.display());
                warn(&self.w().warnings, message);
                Vec::new()
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let (parent_id, parent_nodes) = match parent {
            Some((id, tree)) => (Some(id), tree.nodes),
            None => (None, Vec::new()),
        };
        let parent_nodes: HashMap<OsString, Node> = parent_nodes
            .into_iter()
            .map(|n| (OsString::from(n.name()), n))
            .collect();
        let mut dir = PendingDir {
            nodes: Vec::with_capacity(names.len()),
            waits: Vec::new(),
            parent_tree: parent_id,
            in_parent: parent_id.is_some(),
        };
        let Some(handle) = handle else {
            return self.pend(dir);
        };
        for name in names {
            self.w().check_cancel()?;
            let full = path.join(&name);
            let st = match beneath::lstat_at(handle.as_fd(), &name) {
                Ok(st) => st,
                Err(e) => {
                    warn(&self.w().warnings, format!("{}: skipped: {e}", full.display()));
                    continue;
                }
            };
            let Some(mut node) = self.node(handle.as_fd(), &name, &full, &st) else {
                continue;
            };
            let seen = Identity::of(&st);
            let before = parent_nodes.get(&name);
            match &node.node_type {
                NodeType::Dir => {
                    let parent_sub = before
                        .filter(|p| p.is_dir())
                        .and_then(|p| p.subtree)
                        .and_then(|id| match self.w().read_tree(&self.index, &id) {
                            Ok(tree) => Some((*id, tree)),
                            Err(e) => {
                                tracing::warn!("parent tree of {}: {e}", full.display());
                                None
                            }
                        });
                    let sub_handle = if depth + 1 >= MAX_DEPTH {
                        let message = format!(
                            "{}: skipped its contents: a backup goes {MAX_DEPTH} directories deep",
                            full.display()
                        );
                        warn(&self.w().warnings, message);
                        None
                    } else {
                        match beneath::open_dir_at(handle.as_fd(), &name, seen) {
                            Ok(h) => Some(Arc::new(h)),
                            Err(e) => {
                                let message =
                                    format!("{}: skipped its contents, reading failed: {e}", full.display());
                                warn(&self.w().warnings, message);
                                None
                            }
                        }
                    };
                    match &sub_handle {
                        Some(sub) => read_xattrs(&mut node.meta, XattrsOf::Handle(sub.as_fd())),
                        None => {
                            let at = beneath::proc_path(handle.as_fd(), Some(&name));
                            read_xattrs(&mut node.meta, XattrsOf::Path(&at));
                        }
                    }
                    let sub = self.dir(&full, sub_handle, parent_sub, depth + 1)?;
                    dir.waits.push((dir.nodes.len(), Wait::Dir(sub)));
                    dir.nodes.push(node);
                }
                _ => {
                    // Files and the other entries count as files, as in restic's summary.
                    self.summary.total_files_processed += 1;
                    let is_file = matches!(node.node_type, NodeType::File);
                    if is_file {
                        self.summary.total_bytes_processed += node.meta.size;
                    }
                    match before {
                        Some(p) if self.unchanged(p, &node, is_file) => {
                            self.summary.files_unmodified += 1;
                            // Unread as well: changing one changes the ctime.
                            node.meta.extended_attributes = p.meta.extended_attributes.clone();
                            if is_file {
                                node.content = p.content.clone();
                                self.w().progress.inc(node.meta.size);
                            }
                            dir.nodes.push(node);
                            continue;
                        }
                        Some(_) => self.summary.files_changed += 1,
                        None => self.summary.files_new += 1,
                    }
                    if !is_file {
                        let at = beneath::proc_path(handle.as_fd(), Some(&name));
                        read_xattrs(&mut node.meta, XattrsOf::Path(&at));
                        dir.nodes.push(node);
                        continue;
                    }
                    // A file's extended attributes are read on its handle, with its contents.
                    let file = FileAt {
                        dir: handle.clone(),
                        seen,
                        path: full,
                    };
                    if node.meta.size > REGION {
                        if let Some((ids, size, xattrs)) = self.large_file(&file, node.meta.size)? {
                            node.content = Some(ids);
                            node.meta.size = size;
                            set_xattrs(&mut node.meta, xattrs);
                            dir.nodes.push(node);
                        }
                    } else {
                        let slot = self.files.len();
                        self.files.push(None);
                        self.queue_file(slot, file, node.meta.size)?;
                        dir.waits.push((dir.nodes.len(), Wait::File(slot)));
                        dir.nodes.push(node);
                        self.poll()?;
                    }
                }
            }
        }
        self.pend(dir)
    }

    /// Adds a walked directory to those waiting for their tree; returns its number.
    fn pend(&mut self, dir: PendingDir) -> Result<usize, EngineError> {
        self.flush_files()?;
        let k = self.pending.len();
        self.pending.push(Some(dir));
        self.trees.push(None);
        self.finalise()?;
        Ok(k)
    }

    /// Takes the answers that are there without waiting.
    pub(super) fn poll(&mut self) -> Result<(), EngineError> {
        while let Ok(done) = self.done.try_recv() {
            self.answer(done)?;
        }
        self.finalise()
    }

    /// Whether the parent's node `p` stands for `node` (a file: unread): as restic and
    /// rustic_core compare (type, size, mtime, ctime, inode), and a file's blobs are stored.
    pub(super) fn unchanged(&self, p: &Node, node: &Node, is_file: bool) -> bool {
        let (a, b) = (&p.meta, &node.meta);
        p.node_type == node.node_type
            && a.size == b.size
            && a.mtime == b.mtime
            && a.ctime == b.ctime
            && (a.inode == 0 || b.inode == 0 || a.inode == b.inode)
            && (!is_file || p.content.as_ref().is_some_and(|c| {
                let known = self.sh.known.lock().expect("not poisoned");
                c.iter().all(|id| known.contains(&**id))
            }))
    }

    /// Stores the trees of the pending directories whose contents are all known, in order.
    pub(super) fn finalise(&mut self) -> Result<(), EngineError> {
        while self.next_dir < self.pending.len() {
            let k = self.next_dir;
            let ready = {
                let dir = self.pending[k].as_ref().expect("not finalised yet");
                dir.waits.iter().all(|(_, wait)| match wait {
                    Wait::File(slot) => self.files[*slot].is_some(),
                    Wait::Dir(sub) => self.trees[*sub].is_some(),
                })
            };
            if !ready {
                return Ok(());
            }
            let dir = self.pending[k].take().expect("not finalised yet");
            let mut nodes: Vec<Option<Node>> = dir.nodes.into_iter().map(Some).collect();
            for (at, wait) in dir.waits {
                match wait {
                    Wait::File(slot) => match self.files[slot].take().expect("ready") {
                        Ok(FileOutcome::Stored { ids, size, xattrs }) => {
                            let node = nodes[at].as_mut().expect("present");
                            node.content = Some(ids);
                            node.meta.size = size;
                            set_xattrs(&mut node.meta, xattrs);
                        }
                        Ok(FileOutcome::Skipped) => nodes[at] = None,
                        Err(e) => return Err(e),
                    },
                    Wait::Dir(sub) => {
                        let node = nodes[at].as_mut().expect("present");
                        node.subtree = Some(TreeId::from(self.trees[sub].expect("ready")));
                    }
                }
            }
            let tree = Tree {
                nodes: nodes.into_iter().flatten().collect(),
            };
            let id = self.store_tree(tree)?;
            self.summary.total_dirs_processed += 1;
            match (dir.in_parent, dir.parent_tree == Some(id)) {
                (true, true) => self.summary.dirs_unmodified += 1,
                (true, false) => self.summary.dirs_changed += 1,
                (false, _) => self.summary.dirs_new += 1,
            }
            self.trees[k] = Some(id);
            self.next_dir += 1;
        }
        Ok(())
    }

    pub(super) fn store_tree(&mut self, tree: Tree) -> Result<Id, EngineError> {
        let mut json = serde_json::to_vec(&tree)
            .map_err(|e| self.w().fail(format!("encoding a tree: {e}")))?;
        json.push(b'\n');
        self.summary.total_dirsize_processed += json.len() as u64;
        let raw = sha256(&json);
        let id = Id::new(raw);
        if self.index.trees.contains_key(&id) || !self.known_trees.insert(id) {
            return Ok(id);
        }
        let compressed = zstd::bulk::compress(&json, self.sh.level)
            .map_err(|e| self.w().fail(format!("compressing a tree: {e}")))?;
        let (plain, uncompressed) = if compressed.len() < json.len() {
            (&compressed[..], Some(json.len() as u32))
        } else {
            (&json[..], None)
        };
        let sealed = self.w().key.encrypt(plain);
        let added = &self.sh.added;
        added.tree_blobs.fetch_add(1, Ordering::Relaxed);
        added.tree_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
        added.tree_packed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        if let Some(pack) = self.tree_packer.add(raw, sealed, uncompressed) {
            self.sh.upload(pack)?;
        }
        Ok(id)
    }

    /// Backs up a file larger than [`REGION`]: its regions chunked on the workers, merged
    /// here, its chunks stored on the workers. Returns its content list, size and extended
    /// attributes, or `None` when it could not be read (a warning).
    pub(super) fn large_file(
        &mut self,
        at: &FileAt,
        size: u64,
    ) -> Result<Option<(Vec<DataId>, u64, serde_json::Value)>, EngineError> {
        self.flush_files()?;
        let path = &at.path;
        let (file, attrs) = match beneath::open_file_at(at.dir.as_fd(), at.name(), at.seen) {
            Ok((f, _)) => {
                let attrs = xattrs(XattrsOf::Handle(f.as_fd()));
                (Arc::new(f), attrs)
            }
            Err(e) => {
                warn(&self.w().warnings, format!("{}: skipped, reading failed: {e}", path.display()));
                return Ok(None);
            }
        };
        let starts: Vec<u64> = (0..size).step_by(REGION as usize).collect();
        let n = starts.len();
        let region_end = |i: usize| starts.get(i + 1).copied().unwrap_or(size);
        let chunker = self.sh.chunker.clone();
        let mut merge = Merge::new(&starts, size);
        // Each region's cuts, until merged; `None` while it is out.
        let mut regions: Vec<Option<Vec<u64>>> = vec![None; n];
        let mut buffers: BTreeMap<usize, Bytes> = BTreeMap::new();
        let (mut submitted, mut merged, mut emitted, mut stored) = (0, 0, 0, 0);
        let mut cuts: Vec<u64> = Vec::new();
        let mut ids: Vec<Option<Id>> = Vec::new();
        let mut failure: Option<io::Error> = None;
        loop {
            while failure.is_none() && submitted < n && submitted < merged + REGIONS_AHEAD {
                self.submit(Job::Region {
                    file: file.clone(),
                    start: starts[submitted],
                    end: region_end(submitted),
                    last: submitted + 1 == n,
                    index: submitted,
                })?;
                submitted += 1;
            }
            while failure.is_none() && merged < n && regions[merged].is_some() {
                let region = regions[merged].take().expect("checked");
                merged += 1;
                // Most chunks end within 2 MiB (min 512 KiB + 1 MiB on average): read that
                // first, the maximum chunk size only when no cut is in it.
                let mut catch_up = |pos: u64| -> io::Result<u64> {
                    let most = (size - pos).min(chunker.max as u64) as usize;
                    let mut len = most.min(2 << 20);
                    loop {
                        let mut data = vec![0u8; len];
                        file.read_exact_at(&mut data, pos)?;
                        match chunker.next_cut(&data) {
                            Some(cut) => return Ok(pos + cut as u64),
                            None if len == most => return Ok(pos + len as u64),
                            None => len = most,
                        }
                    }
                };
                match merge.push(&region, &mut catch_up) {
                    Ok(new) => cuts.extend(new),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                // The chunks this region settled, as one job (hashed side by side).
                let first = ids.len();
                let mut batch = Vec::new();
                while ids.len() < cuts.len() {
                    let at = ids.len();
                    let a = if at == 0 { 0 } else { cuts[at - 1] };
                    let b = cuts[at];
                    let data = match chunk_data(&buffers, &starts, a, b) {
                        Some(d) => d,
                        None => {
                            let mut d = vec![0u8; (b - a) as usize];
                            if let Err(e) = file.read_exact_at(&mut d, a) {
                                failure = Some(e);
                                break;
                            }
                            Bytes::from(d)
                        }
                    };
                    ids.push(None);
                    batch.push(data);
                }
                if !batch.is_empty() {
                    emitted += batch.len();
                    self.submit(Job::Chunks { first, data: batch })?;
                }
                let pos = cuts.last().copied().unwrap_or(0);
                buffers.retain(|&i, _| region_end(i) > pos);
            }
            let out = (merged..submitted).filter(|&i| regions[i].is_none()).count();
            if stored == emitted && (merged == n || (failure.is_some() && out == 0)) {
                break;
            }
            let done = self.recv()?;
            match done {
                Done::Region { index, result } => match result {
                    Ok((region_cuts, buffer)) => {
                        regions[index] = Some(region_cuts);
                        if failure.is_none() {
                            buffers.insert(index, buffer);
                        }
                    }
                    Err(FileFailure::Read(e)) => {
                        regions[index] = Some(Vec::new());
                        failure.get_or_insert(e);
                    }
                    Err(FileFailure::Fatal(e)) => return Err(e),
                },
                Done::Chunks { first, result } => {
                    for (i, id) in result?.into_iter().enumerate() {
                        ids[first + i] = Some(id);
                        stored += 1;
                    }
                }
                other => self.answer(other)?,
            }
            self.finalise()?;
        }
        if let Some(e) = failure {
            let message = format!("{}: skipped, reading failed: {e}", path.display());
            warn(&self.w().warnings, message);
            return Ok(None);
        }
        let ids = ids.into_iter().map(|id| DataId::from(id.expect("stored"))).collect();
        Ok(Some((ids, size, attrs)))
    }
}

/// The names of the directories of a snapshot path, from the root.
pub(super) fn path_names(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

/// The total size of the regular files under `root`, for progress (0 once `stop` holds):
/// walked as the backup walks, through handles and as deep.
pub(super) fn tree_size(root: &Path, stop: impl Fn() -> bool) -> u64 {
    // The stat field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn size(dir: BorrowedFd<'_>, depth: usize, stop: &dyn Fn() -> bool) -> u64 {
        let Ok(names) = beneath::names(dir, |_| {}) else {
            return 0;
        };
        let mut total = 0;
        for name in names {
            if stop() {
                return 0;
            }
            let Ok(st) = beneath::lstat_at(dir, &name) else {
                continue;
            };
            match beneath::kind(&st) {
                Kind::RegularFile => total += st.st_size as u64,
                Kind::Directory if depth + 1 < MAX_DEPTH => {
                    if let Ok(sub) = beneath::open_dir_at(dir, &name, Identity::of(&st)) {
                        total += size(sub.as_fd(), depth + 1, stop);
                    }
                }
                _ => {}
            }
        }
        total
    }
    match beneath::open_root(root) {
        Ok(handle) if !stop() => {
            let total = size(handle.as_fd(), 0, &stop);
            if stop() {
                0
            } else {
                total
            }
        }
        _ => 0,
    }
}

//! An entry's node: the metadata rustic_core's local source records (mode, ids and names,
//! times, inode, links, size, extended attributes).

use super::*;

impl Walk<'_, '_> {
    /// The node of entry `name` of directory `dir` (at `full`), whose `fstatat` is `st`, but
    /// its extended attributes, or `None` with a warning. A symlink's target is read relative
    /// to `dir`'s handle.
    // The stat field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub(super) fn node(&mut self, dir: BorrowedFd<'_>, name: &OsStr, full: &Path, st: &Stat) -> Option<Node> {
        let time = |secs: i64, nanos: i64| rustic_core::jiff::Timestamp::new(secs, nanos as i32).ok();
        let mtime = time(st.st_mtime as i64, st.st_mtime_nsec as i64);
        let kind = beneath::kind(st);
        let is_dir = kind == Kind::Directory;
        let (size, nlink) = (st.st_size as u64, st.st_nlink as u64);
        let meta = Metadata {
            mode: Some(go_mode(st.st_mode as u32)),
            mtime,
            atime: mtime,
            ctime: time(st.st_ctime as i64, st.st_ctime_nsec as i64),
            uid: Some(st.st_uid as u32),
            gid: Some(st.st_gid as u32),
            user: self.names.user(st.st_uid as u32),
            group: self.names.group(st.st_gid as u32),
            inode: st.st_ino as u64,
            device_id: if nlink > 1 && !is_dir { st.st_dev as u64 } else { 0 },
            size: if is_dir { 0 } else { size },
            links: if is_dir { 0 } else { nlink },
            // Read by the walk once it knows whether the entry changed (see `Walk::dir`).
            extended_attributes: Vec::new(),
        };
        let rdev = st.st_rdev as u64;
        let node_type = match kind {
            Kind::Directory => NodeType::Dir,
            Kind::Symlink => match beneath::read_link_at(dir, name) {
                Ok(target) => NodeType::from_link(&target),
                Err(e) => {
                    warn(&self.w().warnings, format!("{}: skipped: {e}", full.display()));
                    return None;
                }
            },
            Kind::BlockDevice => NodeType::Dev { device: rdev },
            Kind::CharacterDevice => NodeType::Chardev { device: rdev },
            Kind::Fifo => NodeType::Fifo,
            Kind::Socket => NodeType::Socket,
            _ => NodeType::File,
        };
        Some(Node::new_node(name, node_type, meta))
    }
}

/// Go's `os.FileMode` for a Unix mode, as restic stores it.
pub(super) fn go_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const FIFO: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHARDEV: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    const IRREGULAR: u32 = 1 << 19;
    let mut go = mode & 0o777;
    go |= match mode & libc::S_IFMT {
        libc::S_IFSOCK => SOCKET,
        libc::S_IFLNK => SYMLINK,
        libc::S_IFBLK => DEVICE,
        libc::S_IFDIR => DIR,
        libc::S_IFCHR => CHARDEV | DEVICE,
        libc::S_IFIFO => FIFO,
        libc::S_IFREG => 0,
        _ => IRREGULAR,
    };
    if mode & libc::S_ISUID != 0 {
        go |= SETUID;
    }
    if mode & libc::S_ISGID != 0 {
        go |= SETGID;
    }
    if mode & libc::S_ISVTX != 0 {
        go |= STICKY;
    }
    go
}

/// User and group names by id, looked up once each.
#[derive(Default)]
pub(super) struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    pub(super) fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                // SAFETY: getpwuid_r with the buffers `name_by_id` hands it.
                name_by_id(|entry, buf, len, out| unsafe { libc::getpwuid_r(uid, entry, buf, len, out) }, |p: &libc::passwd| p.pw_name)
            })
            .clone()
    }

    pub(super) fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                // SAFETY: getgrgid_r with the buffers `name_by_id` hands it.
                name_by_id(|entry, buf, len, out| unsafe { libc::getgrgid_r(gid, entry, buf, len, out) }, |g: &libc::group| g.gr_name)
            })
            .clone()
    }
}

/// The name a reentrant libc lookup by id (`getpwuid_r`, `getgrgid_r`) finds: `lookup` fills an
/// entry of type `T` using a buffer, `name` points at the entry's name in that buffer.
pub(super) fn name_by_id<T>(
    lookup: impl FnOnce(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    name: impl FnOnce(&T) -> *const libc::c_char,
) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut entry = std::mem::MaybeUninit::<T>::zeroed();
    let mut out = std::ptr::null_mut();
    let rc = lookup(entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out);
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: the lookup succeeded, so it filled the entry, whose name is a C string in `buf`
    // (alive until the end of this function).
    let name = unsafe { std::ffi::CStr::from_ptr(name(entry.assume_init_ref())) };
    Some(name.to_string_lossy().into_owned())
}

/// Reads an entry's extended attributes into its node's metadata.
pub(super) fn read_xattrs(meta: &mut Metadata, of: XattrsOf<'_>) {
    set_xattrs(meta, xattrs(of));
}

/// Sets a node's extended attributes from what [`xattrs`] read.
pub(super) fn set_xattrs(meta: &mut Metadata, xattrs: serde_json::Value) {
    meta.extended_attributes = serde_json::from_value(xattrs).unwrap_or_default();
}

/// Where an entry's extended attributes are read: its open handle, or a path whose last
/// component is not followed (a directory handle's `/proc/self/fd` path and the entry's name:
/// never a path a symlink could redirect).
pub(super) enum XattrsOf<'a> {
    Handle(BorrowedFd<'a>),
    Path(&'a Path),
}

/// The extended attributes of an entry as rustic_core's node JSON holds them (name, base64
/// value); none when they cannot be read.
pub(super) fn xattrs(of: XattrsOf<'_>) -> serde_json::Value {
    let list = |buf: &mut [u8]| match &of {
        XattrsOf::Handle(fd) => rustix::fs::flistxattr(fd, buf),
        XattrsOf::Path(path) => rustix::fs::llistxattr(*path, buf),
    };
    let get = |name: &CStr, buf: &mut [u8]| match &of {
        XattrsOf::Handle(fd) => rustix::fs::fgetxattr(fd, name, buf),
        XattrsOf::Path(path) => rustix::fs::lgetxattr(*path, name, buf),
    };
    let Some(names) = grown(4096, 1 << 20, list) else {
        return serde_json::Value::Array(Vec::new());
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(c_name) = CString::new(name) else {
            continue;
        };
        let Some(value) = grown(4096, 1 << 24, |buf| get(&c_name, buf)) else {
            continue;
        };
        out.push(serde_json::json!({
            "name": String::from_utf8_lossy(name),
            "value": base64(&value),
        }));
    }
    serde_json::Value::Array(out)
}

/// What `read` puts into a buffer, grown (from `first` up to `most` bytes) while it is too
/// small; `None` when reading fails.
fn grown(first: usize, most: usize, read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; first];
    loop {
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < most => buf.resize(buf.len() * 4, 0),
            Err(_) => return None,
        }
    }
}

/// Standard base64 with padding.
pub(super) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

//! An entry's node: the metadata rustic_core's local source records (mode, ids and names,
//! times, inode, links, size, extended attributes).

use super::*;

impl Walk<'_, '_> {
    /// The node of `full` (named `name`), or `None` with a warning.
    pub(super) fn node(&mut self, name: &OsStr, full: &Path, m: &std::fs::Metadata) -> Option<Node> {
        let time = |secs: i64, nanos: i64| rustic_core::jiff::Timestamp::new(secs, nanos as i32).ok();
        let mtime = time(m.mtime(), m.mtime_nsec());
        let is_dir = m.is_dir();
        let meta = Metadata {
            mode: Some(go_mode(m.mode())),
            mtime,
            atime: mtime,
            ctime: time(m.ctime(), m.ctime_nsec()),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            user: self.names.user(m.uid()),
            group: self.names.group(m.gid()),
            inode: m.ino(),
            device_id: if m.nlink() > 1 && !is_dir { m.dev() } else { 0 },
            size: if is_dir { 0 } else { m.len() },
            links: if is_dir { 0 } else { m.nlink() },
            extended_attributes: serde_json::from_value(xattrs(full)).unwrap_or_default(),
        };
        let ft = m.file_type();
        let node_type = if is_dir {
            NodeType::Dir
        } else if ft.is_symlink() {
            match std::fs::read_link(full) {
                Ok(target) => NodeType::from_link(&target),
                Err(e) => {
                    warn(&self.w().warnings, format!("{}: skipped: {e}", full.display()));
                    return None;
                }
            }
        } else if ft.is_block_device() {
            NodeType::Dev { device: m.rdev() }
        } else if ft.is_char_device() {
            NodeType::Chardev { device: m.rdev() }
        } else if ft.is_fifo() {
            NodeType::Fifo
        } else if ft.is_socket() {
            NodeType::Socket
        } else {
            NodeType::File
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

/// The extended attributes of `path` (not following a symlink) as rustic_core's node JSON
/// holds them (name, base64 value); none when they cannot be read.
pub(super) fn xattrs(path: &Path) -> serde_json::Value {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return serde_json::Value::Array(Vec::new());
    };
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer is writable for its length; the path is a C string.
        let n = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && names.len() < 1 << 20 {
            names.resize(names.len() * 4, 0);
            continue;
        }
        return serde_json::Value::Array(Vec::new());
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(c_name) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 4096];
        let got = loop {
            // SAFETY: as above.
            let n = unsafe {
                libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if n >= 0 {
                break Some(n as usize);
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && value.len() < 1 << 24 {
                value.resize(value.len() * 4, 0);
                continue;
            }
            break None;
        };
        let Some(n) = got else {
            continue;
        };
        out.push(serde_json::json!({
            "name": String::from_utf8_lossy(name),
            "value": base64(&value[..n]),
        }));
    }
    serde_json::Value::Array(out)
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

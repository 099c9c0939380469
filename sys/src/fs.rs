//! Opening paths without following links, mount attributes, `pivot_root`.
//!
//! Everything here is allocation-free and async-signal-safe.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::{check, errno, Errno};

/// `AT_RECURSIVE` of the new mount API: the call covers the whole mount tree at the fd.
const AT_RECURSIVE: libc::c_long = 0x8000;

/// `openat2(dir, path, {flags | O_CLOEXEC, mode, resolve})`: the new fd, always close-on-exec.
/// `dir` may be [`rustix::fs::CWD`] (see [`cwd`]).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, resolve).map_err(errno)
}

/// `AT_FDCWD`: paths relative to the working directory.
pub fn cwd() -> BorrowedFd<'static> {
    rustix::fs::CWD
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {attr_set: set})`: sets `MOUNT_ATTR_*`
/// bits on the mount `fd` was opened on (the root of a mount) and, with `recursive`, on every
/// mount below it. `ENOSYS` before Linux 5.12. (rustix does not have it.)
pub fn mount_setattr(fd: BorrowedFd<'_>, set: u64, recursive: bool) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_long | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `fd` is an open fd borrowed for the call, the path is an empty NUL-terminated
    // string and `attr` a valid `struct mount_attr` of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_RECURSIVE | AT_EMPTY_PATH | OPEN_TREE_CLOEXEC)`: a
/// detached copy of the mount tree at `fd` (like a recursive bind mount that is not attached
/// anywhere yet), to set attributes on and [`move_mount`] into place. `ENOSYS` before Linux 5.2.
pub fn open_tree_clone(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    let flags = OPEN_TREE_CLONE
        | AT_RECURSIVE
        | libc::AT_EMPTY_PATH as libc::c_long
        | libc::O_CLOEXEC as libc::c_long;
    // SAFETY: `fd` is an open fd borrowed for the call and the path an empty NUL-terminated
    // string; the kernel returns a new fd that nothing else owns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            flags,
        )
    };
    let raw = check(ret)? as i32;
    // SAFETY: `raw` was just returned by open_tree and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a detached copy of the
/// mount of what `path` names, rooted there and not recursive (a bind of one file, say),
/// resolved in the caller's mount namespace (which must be one the caller may mount in).
/// `ENOSYS` before Linux 5.2.
pub fn open_tree_clone_path(path: &CStr) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    // SAFETY: `path` is NUL-terminated and alive for the call; the kernel returns a new fd
    // that nothing else owns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD as libc::c_long,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_long,
        )
    };
    let raw = check(ret)? as i32;
    // SAFETY: `raw` was just returned by open_tree and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// A file's identity: its device and inode, as `statx` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Major number of the device the file system is on.
    pub dev_major: u32,
    /// Minor number of that device.
    pub dev_minor: u32,
    /// Inode number.
    pub ino: u64,
}

/// `statx(fd, "", AT_EMPTY_PATH, STATX_INO)`: the identity of the file `fd` refers to.
pub fn file_id(fd: BorrowedFd<'_>) -> Result<FileId, Errno> {
    // SAFETY: an all-zero `struct statx` is a valid value of it.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call, the path is an empty NUL-terminated string and `st` a
    // valid, writable `struct statx`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_statx,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_long,
            libc::STATX_INO as libc::c_long,
            &mut st as *mut libc::statx,
        )
    };
    check(ret)?;
    Ok(FileId {
        dev_major: st.stx_dev_major,
        dev_minor: st.stx_dev_minor,
        ino: st.stx_ino,
    })
}

/// `move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`:
/// attaches the detached tree `tree` (from [`open_tree_clone`]) on top of what `target` (an
/// `O_PATH` fd) is. `ENOSYS` before Linux 5.2.
pub fn move_mount(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_long = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_long = 0x40;
    // SAFETY: both fds are open and borrowed for the call; both paths are empty NUL-terminated
    // strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            target.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    rustix::process::pivot_root(new_root, put_old).map_err(errno)
}

/// The protocol of a socket, by a path to it (`/proc/PID/fd/N`): sockfs's
/// `system.sockprotoname` (`TCP`, `TCPv6`, `UDP`, `UNIX`, …). Looks at the socket without
/// holding it (a held copy could become its last reference, and closing that may linger).
pub fn socket_protocol(path: &std::path::Path) -> Option<String> {
    let mut buf = [0u8; 32];
    let n = rustix::fs::getxattr(path, "system.sockprotoname", &mut buf).ok()?;
    let name = buf[..n].split(|b| *b == 0).next()?;
    std::str::from_utf8(name).ok().map(str::to_string)
}

/// Whether absolute `path` names a regular file or a directory without sockets among its
/// first 256 entries, reached from `/` without any symbolic link, magic link or mount crossing
/// (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`): for paths
/// someone else chose, before suggesting to mount them.
pub fn plain_host_entry(path: &std::path::Path) -> bool {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    let Some(rel) = path
        .strip_prefix("/")
        .ok()
        .and_then(|r| std::ffi::CString::new(r.as_os_str().as_encoded_bytes()).ok())
    else {
        return false;
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(root) = rustix::fs::open("/", flags, Mode::empty()) else {
        return false;
    };
    let open = |flags: OFlags| {
        rustix::fs::openat2(
            &root,
            rel.as_c_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    let Ok(st) = open(OFlags::PATH).and_then(|fd| rustix::fs::fstat(&fd)) else {
        return false;
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => true,
        FileType::Directory => {
            let Ok(dir) = open(OFlags::RDONLY | OFlags::DIRECTORY) else {
                return false;
            };
            let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
                return false;
            };
            let mut n = 0;
            for e in entries {
                let Ok(e) = e else { return false };
                n += 1;
                if n > 258 || matches!(e.file_type(), FileType::Socket | FileType::Unknown) {
                    return false;
                }
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn openat2_refuses_links_and_escapes() {
        let dir = std::env::temp_dir().join(format!("hatchery-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
        let d = std::fs::File::open(&dir).unwrap();
        let no_links = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let f = openat2(d.as_fd(), c"file", OFlags::PATH, Mode::empty(), no_links).unwrap();
        assert!(rustix::io::fcntl_getfd(&f)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
        let link = openat2(d.as_fd(), c"link", OFlags::PATH, Mode::empty(), no_links);
        assert_eq!(link.unwrap_err(), libc::ELOOP);
        let up = openat2(
            d.as_fd(),
            c"../x",
            OFlags::PATH,
            Mode::empty(),
            ResolveFlags::BENEATH,
        );
        assert_eq!(up.unwrap_err(), libc::EXDEV);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

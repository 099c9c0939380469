//! The per-user cache directory of short-lived processes (the `hatchery` CLI): what a process
//! that runs one command would otherwise redo every time, kept between runs. Two users of it,
//! each off until enabled: compiled seccomp filters
//! ([`seccomp::enable_disk_cache`](crate::seccomp::enable_disk_cache)) and a copy of the embedded
//! shim ([`shim_binary::enable_disk_cache`](crate::shim_binary::enable_disk_cache)).
//!
//! ```text
//!  <dir>/        created 0700; used only if owned by this euid, not group/world writable,
//!                and reached without following a symlink (its parents may be links)
//!    <entry>     written to a temporary name and renamed into place, so a reader sees a whole
//!                file or none; used only if a regular file owned by this euid, not group/world
//!                writable
//! ```
//!
//! Only a root host keeps a cache. The cache must be out of reach of every container: a copy of
//! the shim changed by a container would run, on a later run, outside any sandbox, and a changed
//! filter would weaken later containers. A container's ids never map to host root (a map that
//! includes host id 0 is refused, `Error::HostRootMapped`), so no container can write root's
//! 0700 directory or its 0500/0600 entries, whatever is bound into it. An unprivileged host's
//! containers run as that user (the container's root maps to the user's own id), so a container
//! given the cache directory, or a parent of it such as `~/.cache`, could rewrite its entries:
//! there the cache is off (each process compiles its filters and copies the shim into a sealed
//! memfd). Other users cannot reach a root cache (0700, checked on every open).

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hatchery_sys::fs::{openat2, Mode, OFlags, ResolveFlags};

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Sets the cache directory: `dir`, or `$XDG_CACHE_HOME/hatchery` (else `$HOME/.cache/hatchery`)
/// when `dir` is `None`. Only the first call counts.
pub(crate) fn set_dir(dir: Option<PathBuf>) {
    let dir = dir.or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("hatchery"))
    });
    let _ = DIR.set(dir);
}

/// The cache directory set by [`set_dir`], if any.
pub(crate) fn dir_path() -> Option<&'static Path> {
    DIR.get()?.as_deref()
}

/// The cache directory, opened and checked, or `None`: none set, not a safe one, or not a root
/// host (see the module header: only root's cache is out of every container's reach).
pub(crate) fn open_dir() -> Option<OwnedFd> {
    if !host_root() {
        return None;
    }
    open_dir_at(dir_path()?)
}

/// The cache directory, opened and checked, whoever this process is: for a cache its user has
/// chosen to trust although the user's own containers could change it (see the module header).
pub(crate) fn open_dir_any_user() -> Option<OwnedFd> {
    open_dir_at(dir_path()?)
}

/// Whether this process is the host's root: euid 0 in a user namespace whose ids are the host's
/// (the initial one, or one mapping all of its parent's ids onto themselves, which only a parent
/// with all ids, and so in the end the initial namespace, can make). Uid 0 of any other user
/// namespace (`unshare -r`, a rootless container) is an ordinary user of the host, whose other
/// containers run as that user and could reach its cache.
fn host_root() -> bool {
    static HOST_IDS: OnceLock<bool> = OnceLock::new();
    nix::unistd::geteuid().is_root()
        && *HOST_IDS.get_or_init(|| {
            std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| identity_map(&m))
        })
}

/// Whether `uid_map` maps every id onto itself (the initial user namespace's map).
fn identity_map(uid_map: &str) -> bool {
    uid_map.split_whitespace().eq(["0", "0", "4294967295"])
}

/// `dir` (created if missing), opened and checked.
pub(crate) fn open_dir_at(dir: &Path) -> Option<OwnedFd> {
    let parent = dir.parent()?;
    let name = CString::new(dir.file_name()?.as_bytes()).ok()?;
    // The parent is the user's choice (it may be reached through a link, like a linked home,
    // and is created like any other cache's); the cache directory itself is never a link.
    if !parent.exists() {
        let _ = std::fs::create_dir_all(parent);
    }
    // O_DIRECTORY: a FIFO in its place fails instead of blocking the open.
    let parent: OwnedFd = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(parent)
            .ok()?
            .into()
    };
    let _ = nix::sys::stat::mkdirat(
        Some(parent.as_raw_fd()),
        name.as_c_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o700),
    );
    let fd = openat2(
        parent.as_fd(),
        &name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    private(fd.as_fd(), libc::S_IFDIR).then_some(fd)
}

/// Whether `fd` is of type `kind`, owned by this process's euid and writable by it alone.
pub(crate) fn private(fd: BorrowedFd<'_>, kind: libc::mode_t) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == kind
            && st.st_uid == nix::unistd::geteuid().as_raw()
            && st.st_mode & 0o022 == 0
    })
}

/// The entry `name` of `dir`, opened read-only if it is a private regular file (see
/// [`private`]); never through a link, and without blocking on a FIFO or a device in its place.
pub(crate) fn open_entry(dir: BorrowedFd<'_>, name: &CStr) -> Option<OwnedFd> {
    let fd = openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    private(fd.as_fd(), libc::S_IFREG).then_some(fd)
}

/// Stores `bytes` as the entry `name` of `dir` with `mode` (written to a temporary name, then
/// renamed into place). Best effort: `false` when anything failed, and nothing is left behind.
pub(crate) fn store_entry(dir: BorrowedFd<'_>, name: &CStr, bytes: &[u8], mode: u32) -> bool {
    let tmp = CString::new(format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ))
    .expect("no NUL in the name");
    let Ok(fd) = openat2(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_bits_truncate(mode & 0o700),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) else {
        return false;
    };
    let written = std::fs::File::from(fd).write_all(bytes).is_ok();
    let dir_raw = Some(dir.as_raw_fd());
    if written && nix::fcntl::renameat(dir_raw, tmp.as_c_str(), dir_raw, name).is_ok() {
        return true;
    }
    let _ = nix::unistd::unlinkat(
        dir_raw,
        tmp.as_c_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hatchery-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn only_the_initial_namespaces_map_is_the_hosts_ids() {
        assert!(identity_map("         0          0 4294967295\n"));
        assert!(!identity_map("         0       1001          1\n"));
        assert!(!identity_map("         0          0          1\n"));
        assert!(!identity_map(
            "         0          0 4294967295\n         1          1 1\n"
        ));
        assert!(!identity_map(""));
    }

    #[test]
    fn a_directory_others_can_write_or_a_link_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let d = temp_dir("mode");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            open_dir_at(&d).is_none(),
            "a world-writable cache dir was used"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(open_dir_at(&d).is_some());
        let link = temp_dir("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(open_dir_at(&link).is_none(), "a linked cache dir was used");
        std::fs::remove_file(&link).unwrap();
        // An entry round-trips; a group-writable one, or a link to one, is not opened.
        let dir = open_dir_at(&d).unwrap();
        assert!(store_entry(dir.as_fd(), c"e", b"bytes", 0o600));
        assert!(open_entry(dir.as_fd(), c"e").is_some());
        let path = d.join("e");
        std::os::unix::fs::symlink(&path, d.join("l")).unwrap();
        assert!(open_entry(dir.as_fd(), c"l").is_none(), "opened a link");
        // A FIFO in an entry's place is not opened, and the open does not block.
        nix::unistd::mkfifo(
            &d.join("f"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(open_entry(dir.as_fd(), c"f").is_none(), "opened a FIFO");
        std::fs::remove_file(d.join("f")).unwrap();
        // A FIFO in the parent's place: no directory, no block.
        nix::unistd::mkfifo(
            &d.join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(open_dir_at(&d.join("p").join("cache")).is_none());
        std::fs::remove_file(d.join("p")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(open_entry(dir.as_fd(), c"e").is_none());
        // Nothing temporary is left behind.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

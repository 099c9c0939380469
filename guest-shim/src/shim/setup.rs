//! Stage 1: building the container from a [`SetupPlan`], in the shim (a fresh, single-threaded
//! process that is PID 1 of new namespaces, so ordinary code is fine here).
//!
//! ```text
//!  host tree (private copy)         scratch tmpfs on /tmp              after pivot_root
//!  /                                /tmp/root  <- tmpfs (the new root)  /
//!  ├── usr ─── bind, ro, nosuid ──▶ /tmp/root/usr                       ├── usr
//!  ├── dev/null ─ bind ───────────▶ /tmp/root/dev/null (small tmpfs)    ├── dev
//!  ├── proc (host)  proc (new ns) ▶ /tmp/root/proc                      ├── proc
//!  │                                /tmp/files  staged file() contents  └── tmp (tmpfs, capped)
//!  └── rootdir/{a,b} ─ bind, ro ──▶ /tmp/root/{a,b}  (read-only rootdir: top-level entries)
//! ```
//!
//! Host sources (binds, the rootdir and its entries) are opened (`O_PATH`) before the scratch
//! tmpfs covers the host's `/tmp`, and mounted through `/proc/self/fd/N`, so host paths under
//! `/tmp` stay bindable.
//!
//! Nothing here follows a symbolic link inside the new root: every container path is walked
//! from an fd of the root one component at a time with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`, directories are made with `mkdirat` and files with `mknodat`/`openat2`
//! on the parent's fd, permissions are set with `fchmod` on the opened fd, and mounts land on
//! `/proc/self/fd/N` of the opened target. A link in the way fails the step with `ELOOP` and
//! the container path, so a link planted in a rootdir or a writable bind (by a user or by an
//! earlier run) can never make setup create, change or cover anything outside the sandbox.
//! A read-only rootdir is never written: its entries are bound read-only into the root tmpfs
//! before anything is created, so what it lacks is made in the tmpfs. Every failing call
//! becomes a [`SetupFailure`] naming the step, the errno and the path.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use hatchery_protocol::{
    default_nr_inodes, IdPlan, MountOp, OverlayUpper, RootPlan, SetupFailure, SetupPlan, SetupStep,
    ShimMode, DEFAULT_SHM_BYTES, DEFAULT_TMPFS_BYTES, REMOUNT_ATTRS,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

use hatchery_sys as sys;
use sys::fs::{OFlags, ResolveFlags, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// The shim's scratch tmpfs, in its private copy of the host mount tree. Never part of the
/// container: it is detached with the old root at `pivot_root`.
const SCRATCH: &str = "/tmp";
/// Where the new root is assembled (a mount inside the scratch tmpfs).
const STAGING: &str = "/tmp/root";
/// Contents of files placed over read-only targets, bound from here.
const STAGED_FILES: &str = "/tmp/files";

const READ_ONLY: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
/// `MOUNT_ATTR_NOEXEC`.
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// Most lower directories an overlay may have (each is a `/proc/self/fd/N` in one page of
/// mount options).
pub(crate) const MAX_OVERLAY_LOWERS: usize = 128;

/// Lookups inside the root: `/` is the root, and no symbolic link is followed.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn fail(step: SetupStep, errno: impl Into<i32>, detail: impl AsRef<Path>) -> SetupFailure {
    SetupFailure {
        step,
        errno: errno.into(),
        detail: detail.as_ref().to_string_lossy().into_owned(),
    }
}

fn io_fail(step: SetupStep, err: std::io::Error, detail: impl AsRef<Path>) -> SetupFailure {
    fail(step, err.raw_os_error().unwrap_or(libc::EIO), detail)
}

fn nix_fail(step: SetupStep, err: nix::Error, detail: impl AsRef<Path>) -> SetupFailure {
    fail(step, err as i32, detail)
}

fn cstr(step: SetupStep, p: &OsStr) -> Result<CString, SetupFailure> {
    CString::new(p.as_bytes()).map_err(|_| fail(step, libc::EINVAL, p))
}

/// The components of a container path (absolute, no `..`), for `step`'s errors.
pub(crate) fn components(
    step: SetupStep,
    container_path: &[u8],
) -> Result<Vec<&OsStr>, SetupFailure> {
    let p = Path::new(OsStr::from_bytes(container_path));
    let mut out = Vec::new();
    let mut saw_root = false;
    for c in p.components() {
        match c {
            Component::RootDir => saw_root = true,
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(fail(step, libc::EINVAL, p)),
        }
    }
    if !saw_root {
        return Err(fail(step, libc::EINVAL, p));
    }
    Ok(out)
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn is_dir(step: SetupStep, fd: &OwnedFd, detail: &Path) -> Result<bool, SetupFailure> {
    let st = fstat(fd.as_raw_fd()).map_err(|e| nix_fail(step, e, detail))?;
    Ok(st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits())
}

/// Opens `name` (one component) below the directory `dir` without following links.
fn open_child(dir: &OwnedFd, name: &OsStr, flags: OFlags, mode: u32) -> Result<OwnedFd, i32> {
    let c = CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)?;
    let mode = sys::fs::Mode::from_raw_mode(mode);
    sys::fs::openat2(dir.as_fd(), &c, flags, mode, IN_ROOT)
}

/// The staging root, as an fd every container path is resolved from.
struct Root {
    fd: OwnedFd,
}

impl Root {
    fn open_staging(step: SetupStep) -> Result<Root, SetupFailure> {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(STAGING)
            .map_err(|e| io_fail(step, e, STAGING))?;
        Ok(Root { fd: fd.into() })
    }

    /// After a mount on the root itself, the root is the new mount.
    fn refresh(&mut self, step: SetupStep, parts: &[&OsStr]) -> Result<(), SetupFailure> {
        if parts.is_empty() {
            *self = Root::open_staging(step)?;
        }
        Ok(())
    }

    /// An `O_PATH` fd of an existing container path (crossing mounts, never links).
    fn open(&self, step: SetupStep, path: &[u8]) -> Result<OwnedFd, SetupFailure> {
        let parts = components(step, path)?;
        let detail = Path::new(OsStr::from_bytes(path));
        let rel: PathBuf = if parts.is_empty() {
            PathBuf::from(".")
        } else {
            parts.iter().collect()
        };
        let c = cstr(step, rel.as_os_str())?;
        sys::fs::openat2(
            self.fd.as_fd(),
            &c,
            OFlags::PATH,
            sys::fs::Mode::empty(),
            IN_ROOT,
        )
        .map_err(|e| fail(step, e, detail))
    }

    /// Walks `parts` from the root, making missing directories with `mode`; returns an `O_PATH`
    /// fd of the last one. A link (or a non-directory) in the way fails with `ELOOP`
    /// (`ENOTDIR`).
    fn mkdir_p(
        &self,
        step: SetupStep,
        parts: &[&OsStr],
        mode: u32,
        detail: &Path,
    ) -> Result<OwnedFd, SetupFailure> {
        let mut cur = self.fd.try_clone().map_err(|e| io_fail(step, e, detail))?;
        for name in parts {
            cur = subdir(step, &cur, name, mode, detail)?;
        }
        Ok(cur)
    }

    /// The parent directory (made if missing) and the last component of a container path.
    fn parent_of<'p>(
        &self,
        step: SetupStep,
        path: &'p [u8],
    ) -> Result<(OwnedFd, &'p OsStr), SetupFailure> {
        let parts = components(step, path)?;
        let detail = Path::new(OsStr::from_bytes(path));
        let Some((name, dirs)) = parts.split_last() else {
            return Err(fail(step, libc::EEXIST, detail));
        };
        Ok((self.mkdir_p(step, dirs, 0o755, detail)?, name))
    }

    /// A directory mount point at `path` (made if missing), as an `O_PATH` fd.
    fn mount_point_dir(
        &self,
        step: SetupStep,
        path: &[u8],
        mode: u32,
    ) -> Result<OwnedFd, SetupFailure> {
        let parts = components(step, path)?;
        self.mkdir_p(step, &parts, mode, Path::new(OsStr::from_bytes(path)))
    }

    /// A file mount point at `path` (an empty file made if missing), as an `O_PATH` fd.
    fn mount_point_file(&self, step: SetupStep, path: &[u8]) -> Result<OwnedFd, SetupFailure> {
        let detail = Path::new(OsStr::from_bytes(path));
        let (dir, name) = self.parent_of(step, path)?;
        file_stub(step, &dir, name, 0o644, detail)
    }
}

/// An `O_PATH` fd of the directory `name` in `dir` (made with `mode` if missing). A link (or a
/// non-directory) there fails with `ELOOP` (`ENOTDIR`).
fn subdir(
    step: SetupStep,
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    detail: &Path,
) -> Result<OwnedFd, SetupFailure> {
    match open_child(dir, name, OFlags::PATH | OFlags::DIRECTORY, 0) {
        Ok(fd) => Ok(fd),
        Err(libc::ENOENT) => new_subdir(step, dir, name, mode, detail),
        Err(e) => Err(fail(step, e, detail)),
    }
}

/// [`subdir`] for a directory that is usually new: made first, then opened (`EEXIST`: whatever
/// is there is opened the same way, so a link still fails with `ELOOP`). [`subdir`] ends here
/// when its first look finds nothing.
fn new_subdir(
    step: SetupStep,
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    detail: &Path,
) -> Result<OwnedFd, SetupFailure> {
    match nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        name,
        Mode::from_bits_truncate(mode & 0o7777),
    ) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(nix_fail(step, e, detail)),
    }
    open_child(dir, name, OFlags::PATH | OFlags::DIRECTORY, 0).map_err(|e| fail(step, e, detail))
}

/// The mount points of consecutive binds, made in the directory the previous one was made in
/// without walking to it again from the root (the minimal `/etc` is ~20 binds in one
/// directory). Only binds use it and anything else forgets it: a bind never covers its own
/// parent (its target is one component longer), so the directory an fd here names is still the
/// one its path resolves to; any other operation may mount anywhere.
#[derive(Default)]
struct BindParent {
    /// The parent's components and an `O_PATH` fd of it.
    last: Option<(Vec<Vec<u8>>, OwnedFd)>,
}

impl BindParent {
    /// A mount point for a bind at `path` (a directory when `dir`, else an empty file), made
    /// where missing, as an `O_PATH` fd. `None` for the root itself.
    fn mount_point(
        &mut self,
        root: &Root,
        step: SetupStep,
        path: &[u8],
        dir: bool,
    ) -> Result<Option<OwnedFd>, SetupFailure> {
        let parts = components(step, path)?;
        let detail = Path::new(OsStr::from_bytes(path));
        let Some((name, dirs)) = parts.split_last() else {
            // A bind onto the root replaces the tree the remembered fd is in.
            self.forget();
            return Ok(None);
        };
        let key: Vec<Vec<u8>> = dirs.iter().map(|d| d.as_bytes().to_vec()).collect();
        let parent = match self.last.take() {
            Some((k, fd)) if k == key => fd,
            _ => root.mkdir_p(step, dirs, 0o755, detail)?,
        };
        // Mount points are usually new: made first, opened after.
        let point = if dir {
            new_subdir(step, &parent, name, 0o755, detail)
        } else {
            file_stub(step, &parent, name, 0o644, detail)
        };
        self.last = Some((key, parent));
        point.map(Some)
    }

    fn forget(&mut self) {
        self.last = None;
    }
}

/// An `O_PATH` fd of the file `name` in `dir`, made empty with `mode` if missing.
fn file_stub(
    step: SetupStep,
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    detail: &Path,
) -> Result<OwnedFd, SetupFailure> {
    // Usually new: make first, open what exists after `EEXIST` (which the kernel reports before
    // a read-only file system's `EROFS`).
    match nix::sys::stat::mknodat(
        Some(dir.as_raw_fd()),
        name,
        SFlag::S_IFREG,
        Mode::from_bits_truncate(mode & 0o7777),
        0,
    ) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(nix_fail(step, e, detail)),
    }
    open_child(dir, name, OFlags::PATH, 0).map_err(|e| fail(step, e, detail))
}

/// Sets mount attributes on the mount `fd` is the root of and, with `recursive`, every mount
/// below it. Without `mount_setattr` (Linux < 5.12) a classic bind remount handles one mount;
/// a recursive read-only request then fails (`ENOSYS`) rather than leave submounts writable.
fn set_mount_attrs(
    fd: &OwnedFd,
    attrs: u64,
    recursive: bool,
    detail: &Path,
) -> Result<(), SetupFailure> {
    set_mount_attrs_as(SetupStep::RemountReadOnly, fd, attrs, recursive, detail)
}

/// [`set_mount_attrs`], failing as `step`.
fn set_mount_attrs_as(
    step: SetupStep,
    fd: &OwnedFd,
    attrs: u64,
    recursive: bool,
    detail: &Path,
) -> Result<(), SetupFailure> {
    match sys::fs::mount_setattr(fd.as_fd(), attrs, recursive) {
        Ok(()) => return Ok(()),
        Err(libc::ENOSYS) if !(recursive && attrs & MOUNT_ATTR_RDONLY != 0) => {}
        Err(e) => return Err(fail(step, e, detail)),
    }
    let path = fd_path(fd);
    // Keep the flags the kernel locks in a user namespace (nosuid, nodev, noexec, ...).
    let st = nix::sys::statvfs::fstatvfs(fd).map_err(|e| nix_fail(step, e, detail))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let f = st.flags();
    use nix::sys::statvfs::FsFlags;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    if attrs & MOUNT_ATTR_RDONLY != 0 {
        flags |= MsFlags::MS_RDONLY;
    }
    if attrs & MOUNT_ATTR_NOSUID != 0 {
        flags |= MsFlags::MS_NOSUID;
    }
    if attrs & MOUNT_ATTR_NODEV != 0 {
        flags |= MsFlags::MS_NODEV;
    }
    if attrs & MOUNT_ATTR_NOEXEC != 0 {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount(None::<&str>, &path, None::<&str>, flags, None::<&str>)
        .map_err(|e| nix_fail(step, e, detail))
}

/// Takes the ids the plan names inside the user namespace (the maps were written by the host
/// before it sent the plan).
pub(crate) fn set_ids(ids: &IdPlan) -> Result<(), SetupFailure> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let gid = Gid::from_raw(ids.gid);
    setresgid(gid, gid, gid).map_err(|e| nix_fail(SetupStep::SetIds, e, "setresgid"))?;
    if ids.setgroups_allowed {
        setgroups(&[]).map_err(|e| nix_fail(SetupStep::SetGroups, e, "setgroups"))?;
    }
    let uid = Uid::from_raw(ids.uid);
    setresuid(uid, uid, uid).map_err(|e| nix_fail(SetupStep::SetIds, e, "setresuid"))
}

/// One top-level entry of a read-only rootdir, opened before the scratch tmpfs.
enum RootEntry {
    /// A directory or a file (or anything else that can be bound), `O_PATH`.
    Bound { name: CString, fd: OwnedFd },
    /// A symbolic link, recreated as a link in the root tmpfs.
    Link { name: CString, original: CString },
}

/// Opens the top-level entries of a read-only rootdir (never following a link).
fn rootdir_entries(dir: &OwnedFd, detail: &Path) -> Result<Vec<RootEntry>, SetupFailure> {
    let step = SetupStep::MountRoot;
    let listing = std::fs::read_dir(fd_path(dir)).map_err(|e| io_fail(step, e, detail))?;
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| io_fail(step, e, detail))?;
        let name = entry.file_name();
        let c = cstr(step, &name)?;
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        let fd = sys::fs::openat2(dir.as_fd(), &c, flags, sys::fs::Mode::empty(), IN_ROOT)
            .map_err(|e| fail(step, e, detail.join(&name)))?;
        let st = fstat(fd.as_raw_fd()).map_err(|e| nix_fail(step, e, detail.join(&name)))?;
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
            let original = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name.as_os_str())
                .map_err(|e| nix_fail(step, e, detail.join(&name)))?;
            out.push(RootEntry::Link {
                name: c,
                original: cstr(step, &original)?,
            });
        } else {
            out.push(RootEntry::Bound { name: c, fd });
        }
    }
    Ok(out)
}

/// Host directories the guest can change: the sources of writable binds and a writable
/// rootdir. What lies below them is the guest's to replace (a directory swapped for a link by
/// one run, or by a concurrent one), so host paths below them are resolved without links.
fn guest_writable_sources(plan: &SetupPlan) -> Vec<&Path> {
    let mut out: Vec<&Path> = plan
        .mounts
        .iter()
        .filter_map(|op| match op {
            MountOp::Bind {
                source,
                writable: true,
                ..
            } => Some(vec![Path::new(OsStr::from_bytes(&source.0))]),
            MountOp::Overlay {
                upper: OverlayUpper::Host { upper, work },
                ..
            } => Some(vec![
                Path::new(OsStr::from_bytes(&upper.0)),
                Path::new(OsStr::from_bytes(&work.0)),
            ]),
            _ => None,
        })
        .flatten()
        .collect();
    if let RootPlan::HostDir {
        path,
        writable: true,
    } = &plan.root
    {
        out.push(Path::new(OsStr::from_bytes(&path.0)));
    }
    out
}

/// Opens a host source (`O_PATH`). One below a directory in `writable` (see
/// [`guest_writable_sources`]; the outermost one when several hold it) is opened from that
/// directory without following any link or leaving it: a link there fails with `ELOOP`. Other
/// host paths are the profile author's and resolved as usual.
fn open_host_source(
    step: SetupStep,
    p: &[u8],
    writable: &[&Path],
) -> Result<OwnedFd, SetupFailure> {
    let path = Path::new(OsStr::from_bytes(p));
    let open = |p: &Path, extra: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC | extra)
            .open(p)
            .map(OwnedFd::from)
            .map_err(|e| io_fail(step, e, p))
    };
    let outer = writable
        .iter()
        .filter(|w| path != **w && path.starts_with(w))
        .min_by_key(|w| w.components().count());
    let Some(outer) = outer else {
        return open(path, 0);
    };
    let base = open(outer, libc::O_DIRECTORY)?;
    let rest = path.strip_prefix(outer).unwrap_or(path);
    let c = cstr(step, rest.as_os_str())?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    sys::fs::openat2(
        base.as_fd(),
        &c,
        OFlags::PATH,
        sys::fs::Mode::empty(),
        resolve,
    )
    .map_err(|e| fail(step, e, path))
}

/// A recursive bind of `src` onto `dst` with `attrs` set (recursively) before it is attached:
/// `open_tree` clones the source's tree detached, `mount_setattr` sets the attributes on the
/// detached copy, `move_mount` attaches it onto the already opened `dst`. No path is resolved
/// (both ends are fds opened without following links) and the mount is never visible without its
/// attributes. `Ok(false)` on a kernel without these calls (before 5.12): nothing was mounted,
/// the caller binds the classic way.
fn bind_detached(
    step: SetupStep,
    src: &OwnedFd,
    dst: &OwnedFd,
    attrs: u64,
    detail: &Path,
) -> Result<bool, SetupFailure> {
    let tree = match sys::fs::open_tree_clone(src.as_fd()) {
        Ok(t) => t,
        Err(libc::ENOSYS) => return Ok(false),
        Err(e) => return Err(fail(step, e, detail)),
    };
    match sys::fs::mount_setattr(tree.as_fd(), attrs, true) {
        Ok(()) => {}
        Err(libc::ENOSYS) => return Ok(false),
        Err(e) => return Err(fail(SetupStep::RemountReadOnly, e, detail)),
    }
    sys::fs::move_mount(tree.as_fd(), dst.as_fd()).map_err(|e| fail(step, e, detail))?;
    Ok(true)
}

fn bind(step: SetupStep, src: &OwnedFd, dst: &OwnedFd, detail: &Path) -> Result<(), SetupFailure> {
    mount(
        Some(&fd_path(src)),
        &fd_path(dst),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| nix_fail(step, e, detail))
}

/// A tmpfs's options: always a size and an inode bound ([`default_nr_inodes`] when none is
/// given).
pub(crate) fn tmpfs_options(mode: u32, size: u64, nr_inodes: Option<u64>) -> String {
    let n = nr_inodes.unwrap_or(default_nr_inodes(size));
    format!("mode={:o},size={size},nr_inodes={n}", mode & 0o7777)
}

/// Builds the file tree and pivots into it. `fds` are the fds that came with the plan.
pub(crate) fn build_root(
    plan: &SetupPlan,
    fds: &[OwnedFd],
    watch: &mut crate::shim::Stopwatch,
) -> Result<(), SetupFailure> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| nix_fail(SetupStep::MountPropagation, e, "/"))?;

    // Open every host source before the scratch mount hides the host's /tmp.
    let writable = guest_writable_sources(plan);
    let open_source = |step: SetupStep, p: &[u8]| open_host_source(step, p, &writable);
    let (root_src, entries) = match &plan.root {
        RootPlan::Tmpfs => (None, Vec::new()),
        RootPlan::HostDir { path, writable } => {
            let fd = open_source(SetupStep::MountRoot, &path.0)?;
            let detail = Path::new(OsStr::from_bytes(&path.0));
            if !is_dir(SetupStep::MountRoot, &fd, detail)? {
                return Err(fail(SetupStep::MountRoot, libc::ENOTDIR, detail));
            }
            let entries = if *writable {
                Vec::new()
            } else {
                rootdir_entries(&fd, detail)?
            };
            (Some((fd, *writable)), entries)
        }
    };
    let mut sources = Vec::new();
    let mut overlays = Vec::new();
    for op in &plan.mounts {
        match op {
            MountOp::Bind {
                source, optional, ..
            } => match open_source(SetupStep::BindMount, &source.0) {
                Err(f) if *optional && f.errno == libc::ENOENT => sources.push(None),
                opened => sources.push(Some(opened?)),
            },
            MountOp::Overlay {
                target,
                lower,
                upper,
            } => overlays.push(open_overlay_sources(&open_source, target, lower, upper)?),
            _ => {}
        }
    }

    // The scratch tmpfs: the staging root's mount point and the staged files, never in the
    // container.
    let step = SetupStep::MountRoot;
    mount(
        Some("tmpfs"),
        SCRATCH,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| nix_fail(step, e, SCRATCH))?;
    // Unbindable: a recursive bind of a host directory holding the scratch's mount point (a
    // rootdir `/`, its `tmp`) must not copy the scratch, or the root, into the container.
    mount(
        None::<&str>,
        SCRATCH,
        None::<&str>,
        MsFlags::MS_UNBINDABLE,
        None::<&str>,
    )
    .map_err(|e| nix_fail(step, e, SCRATCH))?;
    nix::unistd::mkdir(STAGING, Mode::from_bits_truncate(0o700))
        .map_err(|e| nix_fail(step, e, STAGING))?;
    match &root_src {
        Some((src, true)) => {
            mount(
                Some(&fd_path(src)),
                STAGING,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| nix_fail(step, e, STAGING))?;
            let root = Root::open_staging(step)?;
            set_mount_attrs(
                &root.fd,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                true,
                Path::new("/"),
            )?;
        }
        _ => mount(
            Some("tmpfs"),
            STAGING,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| nix_fail(step, e, STAGING))?,
    }
    let mut root = Root::open_staging(step)?;
    // A read-only rootdir: its entries, read-only (recursively) before anything is created.
    for entry in &entries {
        match entry {
            RootEntry::Link { name, original } => {
                nix::unistd::symlinkat(
                    original.as_c_str(),
                    Some(root.fd.as_raw_fd()),
                    name.as_c_str(),
                )
                .map_err(|e| nix_fail(step, e, OsStr::from_bytes(name.as_bytes())))?;
            }
            RootEntry::Bound { name, fd } => {
                let n = OsStr::from_bytes(name.as_bytes());
                let detail = Path::new("/").join(n);
                let stub = if is_dir(step, fd, &detail)? {
                    root.mkdir_p(step, &[n], 0o755, &detail)?
                } else {
                    file_stub(step, &root.fd, n, 0o644, &detail)?
                };
                bind(step, fd, &stub, &detail)?;
                let mounted =
                    open_child(&root.fd, n, OFlags::PATH, 0).map_err(|e| fail(step, e, &detail))?;
                set_mount_attrs(&mounted, READ_ONLY, true, &detail)?;
            }
        }
    }
    drop(entries);

    watch.lap("open sources + root mount");
    let blob = plan.blob.and_then(|i| fds.get(i as usize));
    let mut read_only_later: Vec<(OwnedFd, PathBuf)> = Vec::new();
    let mut sources = sources.into_iter();
    let mut overlays = overlays.into_iter();
    let mut staged = 0u32;
    let mut staged_files = false;
    let mut ephemeral = 0u32;
    let mut bind_parent = BindParent::default();
    for op in &plan.mounts {
        if !matches!(op, MountOp::Bind { .. }) {
            bind_parent.forget();
        }
        match op {
            MountOp::Bind {
                target,
                writable,
                device,
                ..
            } => {
                let step = SetupStep::BindMount;
                // A missing optional source: nothing to bind.
                let Some(src) = sources.next().expect("one source per bind") else {
                    continue;
                };
                let detail = Path::new(OsStr::from_bytes(&target.0));
                let is_dir = is_dir(step, &src, detail)?;
                let dst = match bind_parent.mount_point(&root, step, &target.0, is_dir)? {
                    Some(point) => point,
                    None if is_dir => root.mount_point_dir(step, &target.0, 0o755)?,
                    None => root.mount_point_file(step, &target.0)?,
                };
                let attrs = MOUNT_ATTR_NOSUID
                    | if *device { 0 } else { MOUNT_ATTR_NODEV }
                    | if *writable { 0 } else { MOUNT_ATTR_RDONLY };
                if bind_detached(step, &src, &dst, attrs, detail)? {
                    root.refresh(step, &components(step, &target.0)?)?;
                } else {
                    bind(step, &src, &dst, detail)?;
                    root.refresh(step, &components(step, &target.0)?)?;
                    let mounted = root.open(step, &target.0)?;
                    set_mount_attrs(&mounted, attrs, true, detail)?;
                }
            }
            MountOp::Tmpfs {
                target,
                size_bytes,
                nr_inodes,
                mode,
                read_only,
            } => {
                let step = SetupStep::MountTmpfs;
                let detail = Path::new(OsStr::from_bytes(&target.0));
                // The kernel reads size=0 as "unbounded": every tmpfs has a size.
                if *size_bytes == Some(0) {
                    return Err(fail(step, libc::EINVAL, detail));
                }
                let dst = root.mount_point_dir(step, &target.0, 0o755)?;
                let opts =
                    tmpfs_options(*mode, size_bytes.unwrap_or(DEFAULT_TMPFS_BYTES), *nr_inodes);
                mount(
                    Some("tmpfs"),
                    &fd_path(&dst),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|e| nix_fail(step, e, detail))?;
                root.refresh(step, &components(step, &target.0)?)?;
                if *read_only {
                    read_only_later.push((root.open(step, &target.0)?, detail.to_path_buf()));
                }
            }
            MountOp::Proc { target } => {
                let step = SetupStep::MountProc;
                let detail = Path::new(OsStr::from_bytes(&target.0));
                let dst = root.mount_point_dir(step, &target.0, 0o555)?;
                // A zygote's or supervisor's pid namespace outlives its requests: a `/proc` fd
                // one sent out would list the next one's processes, and their `cmdline` is
                // world-readable. `hidepid=invisible` shows a process only to those who may
                // ptrace it (its own request, the owner of the container's user namespace),
                // never to another user; a sandbox's landlock file rules already keep it from
                // reading through such an fd.
                let options =
                    (!matches!(plan.mode, ShimMode::OneShot { .. })).then_some("hidepid=invisible");
                mount(
                    Some("proc"),
                    &fd_path(&dst),
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    options,
                )
                .map_err(|e| nix_fail(step, e, detail))?;
                root.refresh(step, &components(step, &target.0)?)?;
            }
            MountOp::Devfs {
                target,
                mqueue,
                writable,
            } => {
                let dev = build_devfs(&mut root, &target.0)?;
                if *mqueue {
                    mount_mqueue(&dev, &target.0)?;
                }
                // A one-shot command may write into a writable /dev (hakoniwa's devfs is one;
                // the device nodes stay the host's, bound in; the tmpfs is 64 KiB, 64 inodes,
                // noexec). A zygote's /dev is shared by its requests, so it is read-only.
                let one_shot = matches!(plan.mode, ShimMode::OneShot { .. });
                if !(*writable && one_shot) {
                    read_only_later.push((dev, PathBuf::from(OsStr::from_bytes(&target.0))));
                }
            }
            MountOp::Overlay { target, upper, .. } => {
                let src = overlays.next().expect("one source set per overlay");
                if let OverlayUpper::Ephemeral { .. } = upper {
                    ephemeral += 1;
                }
                mount_overlay(&mut root, &target.0, upper, src, ephemeral)?;
            }
            MountOp::Remount { target, attrs } => {
                let step = SetupStep::Remount;
                let detail = Path::new(OsStr::from_bytes(&target.0));
                if *attrs == 0 || *attrs & !REMOUNT_ATTRS != 0 {
                    return Err(fail(step, libc::EINVAL, detail));
                }
                let fd = root.open(step, &target.0)?;
                set_mount_attrs_as(step, &fd, *attrs, true, detail)?;
            }
            MountOp::Dir { path, mode } => {
                let step = SetupStep::MakeDir;
                let detail = Path::new(OsStr::from_bytes(&path.0));
                let dir = root.mount_point_dir(step, &path.0, *mode)?;
                set_mode(step, &dir, *mode, detail)?;
            }
            MountOp::File {
                path,
                mode,
                offset,
                len,
            } => {
                staged += 1;
                write_file(
                    &root,
                    &path.0,
                    *mode,
                    blob,
                    (*offset, *len),
                    staged,
                    &mut staged_files,
                )?;
            }
            MountOp::Symlink { original, link } => {
                let step = SetupStep::Symlink;
                let detail = Path::new(OsStr::from_bytes(&link.0));
                let (dir, name) = root.parent_of(step, &link.0)?;
                nix::unistd::symlinkat(OsStr::from_bytes(&original.0), Some(dir.as_raw_fd()), name)
                    .map_err(|e| nix_fail(step, e, detail))?;
            }
        }
    }

    watch.lap("mounts and files");
    if let Some(name) = &plan.hostname {
        nix::unistd::sethostname(name).map_err(|e| nix_fail(SetupStep::Hostname, e, name))?;
    }

    for (fd, detail) in read_only_later.iter().rev() {
        set_mount_attrs(fd, READ_ONLY, false, detail)?;
    }
    let root_writable = matches!(plan.root, RootPlan::HostDir { writable: true, .. });
    if !root_writable {
        set_mount_attrs(&root.fd, READ_ONLY, false, Path::new("/"))?;
    }
    drop(root);

    watch.lap("hostname + read-only remounts");
    let r = pivot_into(Path::new(STAGING));
    watch.lap("pivot_root");
    r
}

/// The host directories of one overlay, opened (`O_PATH`, directories) before the scratch
/// tmpfs covers the host's `/tmp`.
struct OverlaySources {
    lower: Vec<OwnedFd>,
    /// Upper and work directories of a persistent overlay.
    host: Option<(OwnedFd, OwnedFd)>,
}

/// Checks an overlay's shape (what the kernel would refuse with a bare `EINVAL`, named here)
/// and opens its host directories.
fn open_overlay_sources(
    open_source: &impl Fn(SetupStep, &[u8]) -> Result<OwnedFd, SetupFailure>,
    target: &hatchery_protocol::Bytes,
    lower: &[hatchery_protocol::Bytes],
    upper: &OverlayUpper,
) -> Result<OverlaySources, SetupFailure> {
    let step = SetupStep::MountOverlay;
    let detail = Path::new(OsStr::from_bytes(&target.0));
    let least = if matches!(upper, OverlayUpper::ReadOnly) {
        2
    } else {
        1
    };
    if lower.len() < least || lower.len() > MAX_OVERLAY_LOWERS {
        return Err(fail(step, libc::EINVAL, detail));
    }
    if let OverlayUpper::Ephemeral { size_bytes: 0 } = upper {
        return Err(fail(step, libc::EINVAL, detail));
    }
    let open_dir = |p: &[u8]| -> Result<OwnedFd, SetupFailure> {
        let fd = open_source(step, p)?;
        let path = Path::new(OsStr::from_bytes(p));
        if !is_dir(step, &fd, path)? {
            return Err(fail(step, libc::ENOTDIR, path));
        }
        Ok(fd)
    };
    let lower = lower
        .iter()
        .map(|l| open_dir(&l.0))
        .collect::<Result<Vec<_>, _>>()?;
    let host = match upper {
        OverlayUpper::Host { upper, work } => Some((open_dir(&upper.0)?, open_dir(&work.0)?)),
        _ => None,
    };
    Ok(OverlaySources { lower, host })
}

/// Mounts an overlay at `target`: `lowerdir`, `upperdir` and `workdir` are the opened
/// directories (`/proc/self/fd/N`, so no path needs escaping and none is looked up again); an
/// ephemeral one gets its upper and work directories on a fresh tmpfs in the scratch area
/// (number `serial`), which the overlay keeps alive after `pivot_root` detaches the scratch.
fn mount_overlay(
    root: &mut Root,
    target: &[u8],
    upper: &OverlayUpper,
    src: OverlaySources,
    serial: u32,
) -> Result<(), SetupFailure> {
    let step = SetupStep::MountOverlay;
    let detail = Path::new(OsStr::from_bytes(target));
    let lower: Vec<String> = src
        .lower
        .iter()
        .map(|fd| fd_path(fd).to_string_lossy().into_owned())
        .collect();
    let mut opts = format!("lowerdir={}", lower.join(":"));
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let ephemeral_dirs;
    let dirs = match (upper, &src.host) {
        (OverlayUpper::ReadOnly, _) => {
            flags |= MsFlags::MS_RDONLY;
            None
        }
        (OverlayUpper::Ephemeral { size_bytes }, _) => {
            ephemeral_dirs = ephemeral_upper(*size_bytes, serial, detail)?;
            Some((&ephemeral_dirs.0, &ephemeral_dirs.1))
        }
        (OverlayUpper::Host { .. }, Some((u, w))) => Some((u, w)),
        (OverlayUpper::Host { .. }, None) => return Err(fail(step, libc::EINVAL, detail)),
    };
    if let Some((u, w)) = dirs {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            fd_path(u).display(),
            fd_path(w).display()
        ));
    }
    opts.push_str(",userxattr");
    let dst = root.mount_point_dir(step, target, 0o755)?;
    mount(
        Some("overlay"),
        &fd_path(&dst),
        Some("overlay"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(|e| nix_fail(step, e, detail))?;
    root.refresh(step, &components(step, target)?)
}

/// A fresh tmpfs of `size` at `SCRATCH/overlay.<serial>` with empty `upper` and `work`
/// directories, opened.
fn ephemeral_upper(
    size: u64,
    serial: u32,
    detail: &Path,
) -> Result<(OwnedFd, OwnedFd), SetupFailure> {
    let step = SetupStep::MountOverlay;
    let dir = Path::new(SCRATCH).join(format!("overlay.{serial}"));
    nix::unistd::mkdir(&dir, Mode::from_bits_truncate(0o700))
        .map_err(|e| nix_fail(step, e, detail))?;
    let opts = tmpfs_options(0o755, size, None);
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| nix_fail(step, e, detail))?;
    let mut out = Vec::with_capacity(2);
    for name in ["upper", "work"] {
        let p = dir.join(name);
        nix::unistd::mkdir(&p, Mode::from_bits_truncate(0o755))
            .map_err(|e| nix_fail(step, e, detail))?;
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(|e| io_fail(step, e, detail))?
            .into();
        out.push(fd);
    }
    let work = out.pop().expect("two directories");
    let upper = out.pop().expect("two directories");
    Ok((upper, work))
}

/// A private mqueue instance (of the container's IPC namespace) at `mqueue` in the /dev tmpfs
/// `dev`.
fn mount_mqueue(dev: &OwnedFd, target: &[u8]) -> Result<(), SetupFailure> {
    let step = SetupStep::MountMqueue;
    let detail = Path::new(OsStr::from_bytes(target)).join("mqueue");
    nix::sys::stat::mkdirat(
        Some(dev.as_raw_fd()),
        "mqueue",
        Mode::from_bits_truncate(0o1777),
    )
    .map_err(|e| nix_fail(step, e, &detail))?;
    let dir = open_child(
        dev,
        OsStr::new("mqueue"),
        OFlags::PATH | OFlags::DIRECTORY,
        0,
    )
    .map_err(|e| fail(step, e, &detail))?;
    mount(
        Some("mqueue"),
        &fd_path(&dir),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| nix_fail(step, e, &detail))
}

/// `fchmod` on a directory reached through `dir` (an `O_PATH` fd), unless it has the mode.
fn set_mode(step: SetupStep, dir: &OwnedFd, mode: u32, detail: &Path) -> Result<(), SetupFailure> {
    let mode = mode & 0o7777;
    let st = fstat(dir.as_raw_fd()).map_err(|e| nix_fail(step, e, detail))?;
    if st.st_mode & 0o7777 == mode {
        return Ok(());
    }
    let opened = sys::fs::openat2(
        dir.as_fd(),
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY,
        sys::fs::Mode::empty(),
        IN_ROOT,
    )
    .map_err(|e| fail(step, e, detail))?;
    nix::sys::stat::fchmod(opened.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| nix_fail(step, e, detail))
}

/// Makes the directory staged files are bound from, the first time one is staged: a tmpfs of
/// its own in the scratch (bindable, unlike the scratch), which most containers never need.
fn staged_files_dir(ready: &mut bool) -> Result<(), SetupFailure> {
    if *ready {
        return Ok(());
    }
    let step = SetupStep::WriteFile;
    nix::unistd::mkdir(STAGED_FILES, Mode::from_bits_truncate(0o700))
        .map_err(|e| nix_fail(step, e, STAGED_FILES))?;
    mount(
        Some("tmpfs"),
        STAGED_FILES,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| nix_fail(step, e, STAGED_FILES))?;
    *ready = true;
    Ok(())
}

/// Writes a placed file (`len` bytes at `offset` in the blob) at `path`; inside a read-only
/// mount it is staged (`serial` names it) and bound over the target instead.
fn write_file(
    root: &Root,
    path: &[u8],
    mode: u32,
    blob: Option<&OwnedFd>,
    (offset, len): (u64, u64),
    serial: u32,
    staged_files: &mut bool,
) -> Result<(), SetupFailure> {
    let step = SetupStep::WriteFile;
    let dst = Path::new(OsStr::from_bytes(path));
    let blob = blob.ok_or_else(|| fail(step, libc::EBADF, dst))?;
    if len > (1 << 31) {
        return Err(fail(step, libc::EFBIG, dst));
    }
    let mut buf = vec![0u8; len as usize];
    let file = std::fs::File::from(blob.try_clone().map_err(|e| io_fail(step, e, dst))?);
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| io_fail(step, e, dst))?;
    let (dir, name) = root.parent_of(step, path)?;
    // Non-blocking: a fifo left there (by a guest, in a writable bind) must not hang setup
    // waiting for a reader; whatever opens is used only if it is a regular file.
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    match open_child(&dir, name, flags, mode & 0o7777) {
        Ok(fd) => {
            let st = fstat(fd.as_raw_fd()).map_err(|e| nix_fail(step, e, dst))?;
            if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
                return Err(fail(step, libc::EINVAL, dst));
            }
            fill(step, fd, mode, &buf, dst).map(drop)
        }
        // Inside a read-only mount (a read-only rootdir or bind): never write through to the
        // host. Stage the file in the scratch tmpfs and bind it over the existing target.
        Err(libc::EROFS) => {
            let target = open_child(&dir, name, OFlags::PATH, 0).map_err(|e| fail(step, e, dst))?;
            if is_dir(step, &target, dst)? {
                return Err(fail(step, libc::EISDIR, dst));
            }
            staged_files_dir(staged_files)?;
            let staged_path = Path::new(STAGED_FILES).join(serial.to_string());
            let staged: OwnedFd = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&staged_path)
                .map_err(|e| io_fail(step, e, dst))?
                .into();
            let staged = fill(step, staged, mode, &buf, dst)?;
            mount(
                Some(&fd_path(&staged)),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| nix_fail(step, e, dst))?;
            let mounted =
                open_child(&dir, name, OFlags::PATH, 0).map_err(|e| fail(step, e, dst))?;
            set_mount_attrs(&mounted, READ_ONLY, false, dst)
        }
        Err(e) => Err(fail(step, e, dst)),
    }
}

/// Writes `contents` into the opened file and sets its mode on the same fd.
fn fill(
    step: SetupStep,
    fd: OwnedFd,
    mode: u32,
    contents: &[u8],
    detail: &Path,
) -> Result<OwnedFd, SetupFailure> {
    let out = std::fs::File::from(fd);
    out.write_all_at(contents, 0)
        .map_err(|e| io_fail(step, e, detail))?;
    nix::sys::stat::fchmod(out.as_raw_fd(), Mode::from_bits_truncate(mode & 0o7777))
        .map_err(|e| nix_fail(step, e, detail))?;
    Ok(out.into())
}

/// A minimal /dev at `target`: a small tmpfs with the harmless host devices bound in, the
/// stdio links, a private devpts instance and a size-capped /dev/shm tmpfs. Returns the fd of
/// the /dev tmpfs (made read-only once the tree is built).
fn build_devfs(root: &mut Root, target: &[u8]) -> Result<OwnedFd, SetupFailure> {
    let step = SetupStep::MountDevfs;
    let detail = Path::new(OsStr::from_bytes(target));
    let dst = root.mount_point_dir(step, target, 0o755)?;
    mount(
        Some("tmpfs"),
        &fd_path(&dst),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536,nr_inodes=64"),
    )
    .map_err(|e| nix_fail(step, e, detail))?;
    root.refresh(step, &components(step, target)?)?;
    let dev = root.open(step, target)?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let n = OsStr::new(name);
        let stub = file_stub(step, &dev, n, 0o666, &detail.join(name))?;
        let src = Path::new("/dev").join(name);
        mount(
            Some(&src),
            &fd_path(&stub),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| nix_fail(step, e, &src))?;
        let mounted = open_child(&dev, n, OFlags::PATH, 0).map_err(|e| fail(step, e, &src))?;
        set_mount_attrs(&mounted, MOUNT_ATTR_NOSUID, false, &src)?;
    }
    for (link, original) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        // Never /dev/core (kcore), not even as a dangling name.
        nix::unistd::symlinkat(original, Some(dev.as_raw_fd()), link)
            .map_err(|e| nix_fail(step, e, detail.join(link)))?;
    }
    let pts = dir_in(&dev, "pts", 0o755, &detail.join("pts"))?;
    mount(
        Some("devpts"),
        &fd_path(&pts),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(|e| nix_fail(step, e, detail.join("pts")))?;
    let shm = dir_in(&dev, "shm", 0o1777, &detail.join("shm"))?;
    let opts = tmpfs_options(0o1777, DEFAULT_SHM_BYTES, None);
    mount(
        Some("tmpfs"),
        &fd_path(&shm),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| nix_fail(step, e, detail.join("shm")))?;
    Ok(dev)
}

/// A directory `name` made in `dir` (a fresh tmpfs), as an `O_PATH` fd.
fn dir_in(dir: &OwnedFd, name: &str, mode: u32, detail: &Path) -> Result<OwnedFd, SetupFailure> {
    let step = SetupStep::MountDevfs;
    nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode))
        .map_err(|e| nix_fail(step, e, detail))?;
    open_child(dir, OsStr::new(name), OFlags::PATH | OFlags::DIRECTORY, 0)
        .map_err(|e| fail(step, e, detail))
}

/// `pivot_root(".", ".")` in the new root, then detach the old root lying on top of it.
fn pivot_into(root: &Path) -> Result<(), SetupFailure> {
    let step = SetupStep::PivotRoot;
    nix::unistd::chdir(root).map_err(|e| nix_fail(step, e, root))?;
    sys::fs::pivot_root(c".", c".").map_err(|e| fail(step, e, root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| nix_fail(step, e, "old root"))?;
    nix::unistd::chdir("/").map_err(|e| nix_fail(step, e, "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_reject_escapes() {
        let s = SetupStep::MakeDir;
        let names = |p: &[u8]| -> Vec<String> {
            components(s, p)
                .unwrap()
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(b"/usr/lib"), ["usr", "lib"]);
        assert!(names(b"/").is_empty());
        assert_eq!(names(b"/a/./b//"), ["a", "b"]);
        assert!(components(s, b"/a/../../etc").is_err());
        assert!(components(s, b"relative").is_err());
    }

    #[test]
    fn tmpfs_mounts_always_get_a_size() {
        assert_eq!(
            tmpfs_options(0o1777, 64 << 20, None),
            "mode=1777,size=67108864,nr_inodes=16384"
        );
        assert_eq!(
            tmpfs_options(0o1777, 4096, None),
            "mode=1777,size=4096,nr_inodes=64"
        );
        assert_eq!(
            tmpfs_options(0o40755, 1, Some(8)),
            "mode=755,size=1,nr_inodes=8"
        );
    }
}

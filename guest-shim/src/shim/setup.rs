//! Stage 1: building the container from a [`SetupPlan`], in the shim (a fresh, single-threaded
//! process that is PID 1 of new namespaces, so ordinary code is fine here).
//!
//! ```text
//!  host tree (private copy)            staging (/tmp of the private copy)      after pivot_root
//!  /                                   /tmp  <- tmpfs (or the rootdir bind)     /
//!  ├── usr ───── bind, ro, nosuid ───▶ /tmp/usr                                 ├── usr
//!  ├── dev/null ─ bind ──────────────▶ /tmp/dev/null  (in a small tmpfs)        ├── dev
//!  └── proc (host)   proc (new pidns)▶ /tmp/proc                                ├── proc
//!                                                                               └── tmp (tmpfs)
//! ```
//!
//! Bind sources are opened (`O_PATH`) before the staging tmpfs covers the host's `/tmp`, and
//! mounted through `/proc/self/fd/N`, so host paths under `/tmp` stay bindable. Every failing
//! call becomes a [`SetupFailure`] naming the step, the errno and the path.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use hatchery_protocol::{IdPlan, MountOp, RootPlan, SetupFailure, SetupPlan, SetupStep};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, SFlag};

use crate::sys;

/// Where the new root is assembled, in the shim's private copy of the host mount tree.
const STAGING: &str = "/tmp";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

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

fn cstr(step: SetupStep, p: &Path) -> Result<CString, SetupFailure> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| fail(step, libc::EINVAL, p))
}

/// A container path (absolute, no `..`) below `root`.
pub fn below(root: &Path, container_path: &[u8]) -> Result<PathBuf, SetupFailure> {
    let p = Path::new(std::ffi::OsStr::from_bytes(container_path));
    let mut out = root.to_path_buf();
    let mut saw_root = false;
    for c in p.components() {
        match c {
            Component::RootDir => saw_root = true,
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(fail(SetupStep::MakeDir, libc::EINVAL, p))
            }
        }
    }
    if !saw_root {
        return Err(fail(SetupStep::MakeDir, libc::EINVAL, p));
    }
    Ok(out)
}

fn mkdir_p(path: &Path, mode: u32) -> Result<(), SetupFailure> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if path.is_dir() => {
            let _ = e;
            Ok(())
        }
        Err(e) => Err(io_fail(SetupStep::MakeDir, e, path)),
    }
}

fn touch(path: &Path, mode: u32) -> Result<(), SetupFailure> {
    if let Some(parent) = path.parent() {
        mkdir_p(parent, 0o755)?;
    }
    if path.exists() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(drop)
        .map_err(|e| io_fail(SetupStep::MakeDir, e, path))
}

/// Sets mount attributes on the mount at `path` and, with `recursive`, every mount below it.
/// Falls back to a classic bind remount (one mount only) on kernels without `mount_setattr`.
fn set_mount_attrs(path: &Path, attrs: u64, recursive: bool) -> Result<(), SetupFailure> {
    let c = cstr(SetupStep::RemountReadOnly, path)?;
    if recursive {
        match sys::mount_setattr_recursive(&c, attrs) {
            Ok(()) => return Ok(()),
            Err(libc::ENOSYS) => {}
            Err(e) => return Err(fail(SetupStep::RemountReadOnly, e, path)),
        }
    }
    // Keep the flags the kernel locks in a user namespace (nosuid, nodev, noexec, ...).
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| nix_fail(SetupStep::RemountReadOnly, e, path))?;
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
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| nix_fail(SetupStep::RemountReadOnly, e, path))
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Takes the ids the plan names inside the user namespace (the maps were written by the host
/// before it sent the plan).
pub fn set_ids(ids: &IdPlan) -> Result<(), SetupFailure> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let gid = Gid::from_raw(ids.gid);
    setresgid(gid, gid, gid).map_err(|e| nix_fail(SetupStep::SetIds, e, "setresgid"))?;
    if ids.setgroups_allowed {
        setgroups(&[]).map_err(|e| nix_fail(SetupStep::SetGroups, e, "setgroups"))?;
    }
    let uid = Uid::from_raw(ids.uid);
    setresuid(uid, uid, uid).map_err(|e| nix_fail(SetupStep::SetIds, e, "setresuid"))
}

/// Builds the file tree and pivots into it. `fds` are the fds that came with the plan.
pub fn build_root(
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

    // Open every host source before the staging mount hides the host's /tmp.
    let open_source = |step: SetupStep, p: &[u8]| -> Result<OwnedFd, SetupFailure> {
        let path = Path::new(std::ffi::OsStr::from_bytes(p));
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)
            .map(OwnedFd::from)
            .map_err(|e| io_fail(step, e, path))
    };
    let root_src = match &plan.root {
        RootPlan::Tmpfs => None,
        RootPlan::HostDir { path, .. } => Some(open_source(SetupStep::MountRoot, &path.0)?),
    };
    let mut sources = Vec::new();
    for op in &plan.mounts {
        if let MountOp::Bind { source, .. } = op {
            sources.push(Some(open_source(SetupStep::BindMount, &source.0)?));
        }
    }

    let root = PathBuf::from(STAGING);
    match (&plan.root, &root_src) {
        (RootPlan::HostDir { .. }, Some(src)) => mount(
            Some(&fd_path(src)),
            &root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| nix_fail(SetupStep::MountRoot, e, &root))?,
        _ => mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| nix_fail(SetupStep::MountRoot, e, &root))?,
    }

    watch.lap("open sources + root mount");
    let blob = plan.blob.and_then(|i| fds.get(i as usize));
    let mut read_only_later: Vec<PathBuf> = Vec::new();
    let mut sources = sources.into_iter();
    for op in &plan.mounts {
        match op {
            MountOp::Bind {
                target, writable, ..
            } => {
                let src = sources.next().flatten().expect("one source per bind");
                let dst = below(&root, &target.0)?;
                let st =
                    fstat(src.as_raw_fd()).map_err(|e| nix_fail(SetupStep::BindMount, e, &dst))?;
                if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
                    mkdir_p(&dst, 0o755)?;
                } else {
                    touch(&dst, 0o644)?;
                }
                mount(
                    Some(&fd_path(&src)),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| nix_fail(SetupStep::BindMount, e, &dst))?;
                let attrs = MOUNT_ATTR_NOSUID
                    | MOUNT_ATTR_NODEV
                    | if *writable { 0 } else { MOUNT_ATTR_RDONLY };
                set_mount_attrs(&dst, attrs, true)?;
            }
            MountOp::Tmpfs {
                target,
                size_bytes,
                nr_inodes,
                mode,
                read_only,
            } => {
                let dst = below(&root, &target.0)?;
                mkdir_p(&dst, 0o755)?;
                let mut opts = format!("mode={:o}", mode & 0o7777);
                if let Some(s) = size_bytes {
                    opts.push_str(&format!(",size={s}"));
                }
                if let Some(n) = nr_inodes {
                    opts.push_str(&format!(",nr_inodes={n}"));
                }
                mount(
                    Some("tmpfs"),
                    &dst,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|e| nix_fail(SetupStep::MountTmpfs, e, &dst))?;
                if *read_only {
                    read_only_later.push(dst);
                }
            }
            MountOp::Proc { target } => {
                let dst = below(&root, &target.0)?;
                mkdir_p(&dst, 0o555)?;
                mount(
                    Some("proc"),
                    &dst,
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )
                .map_err(|e| nix_fail(SetupStep::MountProc, e, &dst))?;
            }
            MountOp::Devfs { target } => {
                let dst = below(&root, &target.0)?;
                build_devfs(&dst)?;
                read_only_later.push(dst);
            }
            MountOp::Dir { path, mode } => {
                let dst = below(&root, &path.0)?;
                mkdir_p(&dst, *mode)?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(*mode & 0o7777))
                    .map_err(|e| io_fail(SetupStep::MakeDir, e, &dst))?;
            }
            MountOp::File {
                path,
                mode,
                offset,
                len,
            } => {
                let dst = below(&root, &path.0)?;
                write_file(&root, &dst, *mode, blob, *offset, *len)?;
            }
            MountOp::Symlink { original, link } => {
                let dst = below(&root, &link.0)?;
                if let Some(parent) = dst.parent() {
                    mkdir_p(parent, 0o755)?;
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&original.0), &dst)
                    .map_err(|e| io_fail(SetupStep::Symlink, e, &dst))?;
            }
        }
    }

    watch.lap("mounts and files");
    if let Some(name) = &plan.hostname {
        nix::unistd::sethostname(name).map_err(|e| nix_fail(SetupStep::Hostname, e, name))?;
    }

    for p in read_only_later.iter().rev() {
        set_mount_attrs(
            p,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            false,
        )?;
    }
    let root_writable = matches!(plan.root, RootPlan::HostDir { writable: true, .. });
    if !root_writable {
        set_mount_attrs(
            &root,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            false,
        )?;
    }

    watch.lap("hostname + read-only remounts");
    let r = pivot_into(&root);
    watch.lap("pivot_root");
    r
}

fn write_file(
    root: &Path,
    dst: &Path,
    mode: u32,
    blob: Option<&OwnedFd>,
    offset: u64,
    len: u64,
) -> Result<(), SetupFailure> {
    let blob = blob.ok_or_else(|| fail(SetupStep::WriteFile, libc::EBADF, dst))?;
    if len > (1 << 31) {
        return Err(fail(SetupStep::WriteFile, libc::EFBIG, dst));
    }
    let mut buf = vec![0u8; len as usize];
    let file = std::fs::File::from(
        blob.try_clone()
            .map_err(|e| io_fail(SetupStep::WriteFile, e, dst))?,
    );
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| io_fail(SetupStep::WriteFile, e, dst))?;
    if let Some(parent) = dst.parent() {
        mkdir_p(parent, 0o755)?;
    }
    match create_with(dst, mode, &buf) {
        Ok(()) => Ok(()),
        // Inside a read-only bind (a host directory): never write through to the host. Place the
        // file in the root tmpfs and bind it over the existing target instead.
        Err(e) if e.raw_os_error() == Some(libc::EROFS) && dst.exists() => {
            let staging = root.join(".hatchery-file");
            create_with(&staging, mode, &buf)
                .map_err(|e| io_fail(SetupStep::WriteFile, e, &staging))?;
            let bound = mount(
                Some(&staging),
                dst,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| nix_fail(SetupStep::WriteFile, e, dst));
            let _ = std::fs::remove_file(&staging);
            bound?;
            set_mount_attrs(
                dst,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                false,
            )
        }
        Err(e) => Err(io_fail(SetupStep::WriteFile, e, dst)),
    }
}

fn create_with(path: &Path, mode: u32, contents: &[u8]) -> std::io::Result<()> {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    out.write_all_at(contents, 0)?;
    out.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
}

/// A minimal /dev: a small tmpfs with the harmless host devices bound in, the stdio links, a
/// private devpts instance and a /dev/shm tmpfs.
fn build_devfs(dev: &Path) -> Result<(), SetupFailure> {
    let step = SetupStep::MountDevfs;
    mkdir_p(dev, 0o755)?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536,nr_inodes=64"),
    )
    .map_err(|e| nix_fail(step, e, dev))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let dst = dev.join(name);
        touch(&dst, 0o666)?;
        let src = Path::new("/dev").join(name);
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| nix_fail(step, e, &src))?;
        set_mount_attrs(&dst, MOUNT_ATTR_NOSUID, false)?;
    }
    for (link, original) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        if link == "core" {
            continue; // never expose kcore, even as a dangling name
        }
        std::os::unix::fs::symlink(original, dev.join(link))
            .map_err(|e| io_fail(step, e, dev.join(link)))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts, 0o755)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(|e| nix_fail(step, e, &pts))?;
    let shm = dev.join("shm");
    mkdir_p(&shm, 0o1777)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(|e| nix_fail(step, e, &shm))
}

/// `pivot_root(".", ".")` in the new root, then detach the old root lying on top of it.
fn pivot_into(root: &Path) -> Result<(), SetupFailure> {
    let step = SetupStep::PivotRoot;
    nix::unistd::chdir(root).map_err(|e| nix_fail(step, e, root))?;
    sys::pivot_root(c".", c".").map_err(|e| fail(step, e, root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| nix_fail(step, e, "old root"))?;
    nix::unistd::chdir("/").map_err(|e| nix_fail(step, e, "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_rejects_escapes() {
        let r = Path::new("/tmp");
        assert_eq!(
            below(r, b"/usr/lib").unwrap(),
            PathBuf::from("/tmp/usr/lib")
        );
        assert_eq!(below(r, b"/").unwrap(), PathBuf::from("/tmp"));
        assert_eq!(below(r, b"/a/./b").unwrap(), PathBuf::from("/tmp/a/b"));
        assert!(below(r, b"/a/../../etc").is_err());
        assert!(below(r, b"relative").is_err());
    }
}

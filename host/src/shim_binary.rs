//! The `hatchery-shim` binary every container starts from, kept as an immutable copy.
//!
//! The guest must never be able to open the shim's binary for writing (the runc
//! `/proc/self/exe` overwrite, CVE-2019-5736). The host therefore copies the binary once per
//! process into a memfd, seals it against every change (`F_SEAL_WRITE | F_SEAL_GROW |
//! F_SEAL_SHRINK | F_SEAL_SEAL`) and executes that memfd with `execveat(AT_EMPTY_PATH)`. All
//! containers of the process share its pages.
//!
//! Where the bytes come from, in this order:
//!
//! 1. `$HATCHERY_SHIM`, the path of a `hatchery-shim` binary (for packagers, and for tests that
//!    run another shim). When it is set, nothing else is tried.
//! 2. The shim embedded in this library at build time (the default `embed-shim` feature: the
//!    crate's build script builds `hatchery-guest`'s `hatchery-shim` from the same sources, so its
//!    protocol version always matches). No file is looked up: `cargo add hatchery` is enough.
//! 3. Only when nothing is embedded (the feature is off, or the crate was built for docs.rs or by
//!    clippy): `hatchery-shim` next to the running executable, in its parent directory (cargo puts
//!    test binaries in `target/*/deps` and examples in `target/*/examples`), then on `$PATH`.
//!
//! The memfd is created on first use (a copy of about 2 MB) and kept for the process's lifetime.
//!
//! A short-lived process (the `hatchery` CLI) pays that copy on every run (1.2–1.4 ms on a slow
//! VM, the allocation of ~600 shared-memory pages). With [`enable_disk_cache`] it executes the
//! embedded shim from a file of the per-user cache instead (`<cache>/shim-<digest>`, written
//! once, mode 0500), with the same guarantee: the cloned child, already in the container's new
//! user and mount namespaces, resolves the file's path there, checks that it is the inode the
//! host checked, clones it as a detached mount (`open_tree(OPEN_TREE_CLONE)`), makes that mount
//! read-only (`mount_setattr`) and executes it from there. The shim's `/proc/<pid>/exe` then
//! names a file on a read-only mount that is attached nowhere: opening it for writing fails with
//! `EROFS` whoever asks, as runc 1.2 does it with its own binary. Only a root host keeps the
//! cache (`disk_cache`): no container can write root's files, where an unprivileged user's
//! containers run as that user and one given `~/.cache` could change what later runs execute
//! before any sandbox is built. A cache on a `noexec` mount, or a copy whose exec fails, falls
//! back to the sealed memfd for the rest of the process.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// File name of the shim binary.
pub const SHIM_NAME: &str = "hatchery-shim";

/// The shim embedded at build time (empty when nothing is embedded; see [`embedded`]).
static EMBEDDED: &[u8] = include_bytes!(env!("HATCHERY_EMBEDDED_SHIM"));

/// Why nothing is embedded (empty when the shim is embedded), set by the build script.
const NOT_EMBEDDED: &str = env!("HATCHERY_SHIM_NOT_EMBEDDED");

/// A digest of [`EMBEDDED`] and its length, set by the build script: names its cached copy.
const DIGEST: &str = env!("HATCHERY_EMBEDDED_SHIM_DIGEST");

/// The `hatchery-shim` embedded in this build of the library, or `None` when it was built without
/// one (without the `embed-shim` feature, for docs.rs, or by clippy).
pub fn embedded() -> Option<&'static [u8]> {
    (!EMBEDDED.is_empty()).then_some(EMBEDDED)
}

/// Why this build embeds no shim, or `None` when it does.
pub fn not_embedded_reason() -> Option<&'static str> {
    embedded().is_none().then_some(if NOT_EMBEDDED.is_empty() {
        "no shim was embedded"
    } else {
        NOT_EMBEDDED
    })
}

/// Where the sealed shim was copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShimOrigin {
    /// The shim embedded in the library at build time.
    Embedded,
    /// A file: `$HATCHERY_SHIM`, or found by the lookup when nothing is embedded.
    File(PathBuf),
}

/// The sealed copy of the shim, loaded on first use.
#[derive(Debug)]
pub struct ShimBinary {
    fd: OwnedFd,
    origin: ShimOrigin,
}

impl ShimBinary {
    /// The memfd to execute.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where it was copied from.
    pub fn origin(&self) -> &ShimOrigin {
        &self.origin
    }
}

/// The file lookup used when `$HATCHERY_SHIM` is unset and nothing is embedded: next to the
/// running executable, its parent directory, then `$PATH`, in that order. With `$HATCHERY_SHIM`
/// set, that path alone.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("HATCHERY_SHIM") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(SHIM_NAME));
            if let Some(up) = dir.parent() {
                out.push(up.join(SHIM_NAME));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            out.push(dir.join(SHIM_NAME));
        }
    }
    out
}

/// A memfd holding `copy`'s bytes, sealed against every change.
fn sealed(copy: impl FnOnce(&std::fs::File) -> std::io::Result<()>) -> std::io::Result<OwnedFd> {
    let mfd = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .allow_sealing(true)
        .create(SHIM_NAME)
        .map_err(std::io::Error::other)?;
    on_one_cpu(|| {
        copy(mfd.as_file())?;
        let seals = [
            memfd::FileSeal::SealShrink,
            memfd::FileSeal::SealGrow,
            memfd::FileSeal::SealWrite,
            memfd::FileSeal::SealSeal,
        ];
        // Once more if refused: a page can still be held for a moment by the kernel.
        mfd.add_seals(&seals)
            .or_else(|_| mfd.add_seals(&seals))
            .map_err(std::io::Error::other)
    })?;
    Ok(OwnedFd::from(mfd.into_file()))
}

/// Runs `f` with the calling thread kept on the CPU it is on now (as far as it may choose).
/// `F_SEAL_WRITE` is refused (`EBUSY`) while a page of the memfd has a reference beyond its
/// mappings, and a page just written sits in the writing CPU's LRU batch, holding one, until
/// that CPU drains it; the kernel drains only the sealing CPU's batch before it looks. A thread
/// moved to another CPU between the write and the seal failed about once in 400 `hatchery run`s
/// under load (`hatchery bench --cases run-cli,oneshot`).
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
    let me = nix::unistd::Pid::from_raw(0);
    let pinned = (|| {
        let allowed = sched_getaffinity(me).ok()?;
        let mut here = CpuSet::new();
        here.set(sched_getcpu().ok()?).ok()?;
        sched_setaffinity(me, &here).ok()?;
        Some(allowed)
    })();
    let out = f();
    if let Some(allowed) = pinned {
        let _ = sched_setaffinity(me, &allowed);
    }
    out
}

fn load_file(path: &Path) -> Result<ShimBinary> {
    let fd = sealed(|mfd| {
        let mut file = std::fs::File::open(path)?;
        // A kernel-side copy (copy_file_range/sendfile), no userspace buffer.
        std::io::copy(&mut file, &mut { mfd }).map(drop)
    })
    .map_err(|source| Error::ShimLoad {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ShimBinary {
        fd,
        origin: ShimOrigin::File(path.to_path_buf()),
    })
}

fn load_embedded(bytes: &'static [u8]) -> Result<ShimBinary> {
    let fd = sealed(|mut mfd| mfd.write_all(bytes)).map_err(Error::io(
        "copying the embedded hatchery-shim into a sealed memfd",
    ))?;
    Ok(ShimBinary {
        fd,
        origin: ShimOrigin::Embedded,
    })
}

fn load() -> Result<ShimBinary> {
    if let Some(p) = std::env::var_os("HATCHERY_SHIM") {
        return load_file(Path::new(&p));
    }
    if let Some(bytes) = embedded() {
        return load_embedded(bytes);
    }
    let searched = candidates();
    match searched.iter().find(|p| p.is_file()) {
        Some(p) => load_file(p),
        None => Err(Error::ShimNotFound {
            why_not_embedded: not_embedded_reason().unwrap_or("no shim is embedded"),
            searched,
        }),
    }
}

/// A failed load, kept so that every later call returns the same error.
#[derive(Debug)]
enum Failure {
    NotFound(Vec<PathBuf>),
    Load(PathBuf, std::io::ErrorKind, String),
    Io(&'static str, std::io::ErrorKind, String),
}

impl Failure {
    fn of(e: Error) -> Failure {
        match e {
            Error::ShimNotFound { searched, .. } => Failure::NotFound(searched),
            Error::ShimLoad { path, source } => {
                Failure::Load(path, source.kind(), source.to_string())
            }
            Error::Io { op, source } => Failure::Io(op, source.kind(), source.to_string()),
            other => Failure::Io(
                "loading hatchery-shim",
                std::io::ErrorKind::Other,
                other.to_string(),
            ),
        }
    }

    fn error(&self) -> Error {
        match self {
            Failure::NotFound(searched) => Error::ShimNotFound {
                why_not_embedded: not_embedded_reason().unwrap_or("no shim is embedded"),
                searched: searched.clone(),
            },
            Failure::Load(path, kind, msg) => Error::ShimLoad {
                path: path.clone(),
                source: std::io::Error::new(*kind, msg.clone()),
            },
            Failure::Io(op, kind, msg) => Error::Io {
                op,
                source: std::io::Error::new(*kind, msg.clone()),
            },
        }
    }
}

/// The process-wide sealed shim, loaded on first call. A failure is returned again on every call
/// (it is not retried: fix the installation and restart).
pub fn get() -> Result<&'static ShimBinary> {
    static SHIM: OnceLock<std::result::Result<ShimBinary, Failure>> = OnceLock::new();
    match SHIM.get_or_init(|| load().map_err(Failure::of)) {
        Ok(s) => Ok(s),
        Err(f) => Err(f.error()),
    }
}

static CACHE_ENABLED: AtomicBool = AtomicBool::new(false);
/// An exec of the cached copy failed in this process: the sealed memfd from then on.
static CACHE_FAILED: AtomicBool = AtomicBool::new(false);

/// Executes the embedded shim from a copy in `dir` (created mode 0700 if missing), or in
/// `$XDG_CACHE_HOME/hatchery` (else `$HOME/.cache/hatchery`) when `dir` is `None`, instead of
/// copying it into a sealed memfd in every process (see the module header: the copy is executed
/// from a read-only detached mount, so it cannot be opened for writing from a container either).
/// The directory is shared with
/// [`seccomp::enable_disk_cache`](crate::seccomp::enable_disk_cache): the first call of either
/// sets it. For short-lived processes that start one or a few containers. Has no effect unless
/// the process is the host's root (euid 0 with the host's ids: not uid 0 of another user
/// namespace; an unprivileged user's containers run as that user and could rewrite the copy),
/// with `$HATCHERY_SHIM` set, or without an embedded shim; `HATCHERY_SHIM_CACHE=0` turns it off.
pub fn enable_disk_cache(dir: Option<PathBuf>) {
    crate::disk_cache::set_dir(dir);
    CACHE_ENABLED.store(true, Ordering::Relaxed);
}

/// The file name of the embedded shim's copy in the disk cache (`shim-<digest of its bytes>`),
/// or `None` when nothing is embedded.
pub fn cached_copy_name() -> Option<String> {
    embedded().map(|_| format!("shim-{DIGEST}"))
}

/// The cached copy of the embedded shim: where the child finds it and what it must be.
#[derive(Debug)]
pub(crate) struct CachedShim {
    /// Its absolute path, resolved again by the child in the container's mount namespace.
    pub(crate) path: CString,
    /// The file the host checked: device (major, minor) and inode, as `statx` reports them.
    pub(crate) id: hatchery_sys::fs::FileId,
    /// That file, kept open so that its inode number cannot be given to another file.
    _file: OwnedFd,
}

/// What a container's child executes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ShimExec {
    /// The cached copy, from a read-only detached mount the child makes of it.
    Cached(&'static CachedShim),
    /// The process's sealed memfd.
    Sealed(&'static ShimBinary),
}

/// The shim to execute: the cached copy when [`enable_disk_cache`] was called and it is usable,
/// else the process-wide sealed memfd ([`get`]).
pub(crate) fn for_exec() -> Result<ShimExec> {
    if CACHE_ENABLED.load(Ordering::Relaxed) && !CACHE_FAILED.load(Ordering::Relaxed) {
        // The environment is read once, with the copy, not on every spawn.
        static CACHED: OnceLock<Option<CachedShim>> = OnceLock::new();
        if let Some(c) = CACHED.get_or_init(load_cached) {
            return Ok(ShimExec::Cached(c));
        }
    }
    get().map(ShimExec::Sealed)
}

/// Records that executing the cached copy failed: the sealed memfd for the rest of the process.
pub(crate) fn cached_exec_failed() {
    CACHE_FAILED.store(true, Ordering::Relaxed);
}

/// The cached copy of the embedded shim, written first if missing or not whole; `None` with
/// `$HATCHERY_SHIM` or `HATCHERY_SHIM_CACHE=0` set, without an embedded shim or a usable cache
/// directory, or when the copy cannot be executed from where it is (a `noexec` mount).
fn load_cached() -> Option<CachedShim> {
    if std::env::var_os("HATCHERY_SHIM").is_some()
        || std::env::var_os("HATCHERY_SHIM_CACHE").as_deref() == Some("0".as_ref())
    {
        return None;
    }
    let bytes = embedded()?;
    let dir = crate::disk_cache::open_dir()?;
    let vfs = nix::sys::statvfs::fstatvfs(&dir).ok()?;
    if vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) {
        return None;
    }
    let name = CString::new(cached_copy_name()?).ok()?;
    let fd = match crate::disk_cache::open_entry(dir.as_fd(), &name) {
        Some(fd) if holds(&fd, bytes) => fd,
        _ => {
            remove_other_copies(dir.as_fd(), &name);
            crate::disk_cache::store_entry(dir.as_fd(), &name, bytes, 0o500)
                .then(|| crate::disk_cache::open_entry(dir.as_fd(), &name))
                .flatten()
                .filter(|fd| holds(fd, bytes))?
        }
    };
    let id = hatchery_sys::fs::file_id(fd.as_fd()).ok()?;
    // The directory's path as the kernel knows it (absolute, in this mount namespace), which
    // the child's copy of the namespace resolves the same way.
    let dir_path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    if !dir_path.is_absolute() {
        return None;
    }
    let path = CString::new(dir_path.join(name.to_str().ok()?).as_os_str().as_bytes()).ok()?;
    Some(CachedShim {
        path,
        id,
        _file: fd,
    })
}

/// Whether `fd` holds `bytes`: the same length, and the same first and last pages (the name is
/// a digest of the bytes; this catches a copy damaged after it was written).
fn holds(fd: &OwnedFd, bytes: &[u8]) -> bool {
    let file = std::fs::File::from(match fd.try_clone() {
        Ok(f) => f,
        Err(_) => return false,
    });
    if file.metadata().map(|m| m.len()).ok() != Some(bytes.len() as u64) {
        return false;
    }
    let page = 4096.min(bytes.len());
    let tail = bytes.len() - page;
    let mut buf = vec![0u8; page];
    file.read_exact_at(&mut buf, 0).is_ok()
        && buf == bytes[..page]
        && file.read_exact_at(&mut buf, tail as u64).is_ok()
        && buf == bytes[tail..]
}

/// Removes the copies other builds left in the cache directory (`shim-*` but `keep`), and
/// temporary files of copies whose writer is gone (older than a minute).
fn remove_other_copies(dir: BorrowedFd<'_>, keep: &std::ffi::CStr) {
    let Ok(listing) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    let names: Vec<CString> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| CString::new(e.file_name().as_bytes()).ok())
        .filter(|n| n.to_bytes().starts_with(b"shim-") && n.as_c_str() != keep)
        .collect();
    let now = std::time::SystemTime::now();
    for n in names {
        if n.to_bytes().ends_with(b".tmp") {
            let fresh = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                n.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| {
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(st.st_mtime.max(0) as u64);
                now.duration_since(mtime)
                    .is_ok_and(|age| age.as_secs() < 60)
            });
            if fresh {
                continue;
            }
        }
        let _ = nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            n.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "embed-shim")]
    fn the_default_build_embeds_an_elf_shim() {
        // The crate's own tests run with the default features, outside clippy.
        let Some(bytes) = embedded() else {
            panic!("no shim embedded: {:?}", not_embedded_reason());
        };
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(not_embedded_reason(), None);
    }

    #[test]
    fn an_embedded_shim_is_sealed_against_writes() {
        let shim = load_embedded(b"\x7fELF not really").unwrap();
        assert_eq!(shim.origin(), &ShimOrigin::Embedded);
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&shim.fd())
        );
        // Whatever a reopened fd allows, the seals refuse every change.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            assert!(f.write_all(b"x").is_err(), "wrote into the sealed shim");
            assert!(f.set_len(1).is_err(), "truncated the sealed shim");
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"\x7fELF not really");
    }
}

//! A per-user disk cache of compiled filters, for short-lived processes (the `hatchery` CLI):
//! libseccomp takes milliseconds to compile a policy of a few hundred rules, which a process
//! that runs one command pays every time. Off unless [`enable_disk_cache`] is called; a
//! long-lived process compiles each filter once in memory anyway.
//!
//! ```text
//!  <dir>/                       created 0700; used only if owned by this euid, not group/world
//!                               writable, and reached without following a symlink
//!    <hash>.bpf                 "HTCHBPF2", the full key, notify flags, the BPF words (whether the
//!                               program needs the hand-over revoked is read off the words)
//! ```
//!
//! The key is everything the program depends on: this crate's version, libseccomp's version and
//! API level, the filter as data (default, architectures, rules, ioctls, leniency) and whether
//! notifications compile as kills. A hit compares the whole key, not just its hash, so a
//! collision is a miss. Entries are written to a temporary name and renamed into place, so a
//! reader sees a whole file or none. Anything unexpected (ownership, mode, size, format) is a
//! miss and the filter is compiled as without a cache.
//!
//! Trust: the cache is as trusted as the user's own files. Whoever can write to the directory
//! can already change what this user runs; other users cannot (0700, checked on every open).

use std::ffi::CString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hatchery_sys::fs::{openat2, Mode, OFlags, ResolveFlags};

use super::Program;

const MAGIC: &[u8; 8] = b"HTCHBPF2";
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_WORDS: u64 = 4096;
/// An entry's key is the filter as text: bounded, to bound what a read allocates.
const MAX_KEY: u64 = 1 << 20;

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Keeps compiled filters in `dir` (created mode 0700 if missing, its parents as usual), or in
/// `$XDG_CACHE_HOME/hatchery` (else `$HOME/.cache/hatchery`) when `dir` is `None`. Only the first
/// call counts. Costs nothing until a filter is compiled; then one small file read per filter,
/// instead of libseccomp's compile (milliseconds for the default profile's policy).
pub fn enable_disk_cache(dir: Option<PathBuf>) {
    let dir = dir.or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("hatchery"))
    });
    let _ = DIR.set(dir);
}

/// Whether [`enable_disk_cache`] was called (with a directory to use).
pub(super) fn enabled() -> bool {
    DIR.get().is_some_and(Option::is_some)
}

/// The enabled cache directory, opened and checked, or `None` (no cache, or not a safe one).
fn open_dir() -> Option<OwnedFd> {
    open_dir_at(DIR.get()?.as_ref()?)
}

/// `dir` (created if missing), opened and checked.
fn open_dir_at(dir: &std::path::Path) -> Option<OwnedFd> {
    let parent = dir.parent()?;
    let name = CString::new(dir.file_name()?.as_bytes()).ok()?;
    // The parent is the user's choice (it may be reached through a link, like a linked home,
    // and is created like any other cache's); the cache directory itself is never a link.
    if !parent.exists() {
        let _ = std::fs::create_dir_all(parent);
    }
    let parent: OwnedFd = std::fs::File::open(parent).ok()?.into();
    let _ = nix::sys::stat::mkdirat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&parent)),
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
fn private(fd: BorrowedFd<'_>, kind: libc::mode_t) -> bool {
    nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == kind
            && st.st_uid == nix::unistd::geteuid().as_raw()
            && st.st_mode & 0o022 == 0
    })
}

/// The cache key of a compile: everything the program depends on.
pub(super) fn key(filter_data: &str, notify_as_kill: bool) -> String {
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let api = libseccomp::get_api();
    format!(
        "hatchery {} libseccomp {v} api {api} arch {} notify_as_kill {notify_as_kill}\n{filter_data}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
    )
}

fn file_name(key: &str) -> CString {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    CString::new(format!("{:016x}.bpf", h.finish())).expect("no NUL in a hex name")
}

/// The cached program for `key`, if there is a valid entry.
pub(super) fn load(key: &str) -> Option<Program> {
    load_from(&open_dir()?, key)
}

fn load_from(dir: &OwnedFd, key: &str) -> Option<Program> {
    let fd = openat2(
        dir.as_fd(),
        &file_name(key),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    if !private(fd.as_fd(), libc::S_IFREG) {
        return None;
    }
    let mut f = std::fs::File::from(fd);
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    if &head[..8] != MAGIC {
        return None;
    }
    let key_len = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if key_len != key.len() as u64 || key_len > MAX_KEY {
        return None;
    }
    let mut stored = vec![0u8; key_len as usize];
    f.read_exact(&mut stored).ok()?;
    if stored != key.as_bytes() {
        return None;
    }
    let mut meta = [0u8; 10];
    f.read_exact(&mut meta).ok()?;
    let (notify, notify_exec) = (meta[0] == 1, meta[1] == 1);
    let count = u64::from_le_bytes(meta[2..10].try_into().ok()?);
    if count == 0 || count > MAX_WORDS || meta[0] > 1 || meta[1] > 1 {
        return None;
    }
    let mut body = vec![0u8; count as usize * 8];
    f.read_exact(&mut body).ok()?;
    if f.read(&mut [0u8; 1]).ok()? != 0 {
        return None;
    }
    let words: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    // Read off the program itself, not trusted from the file: a wrong bit would leave the
    // hand-over allowance unrevoked.
    let handover = super::needs_handover(&words, notify);
    Some(Program {
        words: Arc::from(words),
        notify,
        notify_exec,
        handover,
    })
}

/// Stores `program` under `key` (best effort: a failure only means the next process compiles).
pub(super) fn store(key: &str, program: &Program) {
    if let Some(dir) = open_dir() {
        store_in(&dir, key, program);
    }
}

fn store_in(dir: &OwnedFd, key: &str, program: &Program) {
    if program.words.len() as u64 > MAX_WORDS || key.len() as u64 > MAX_KEY {
        return;
    }
    let name = file_name(key);
    let tmp = CString::new(format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ))
    .expect("no NUL in the name");
    let Ok(fd) = openat2(
        dir.as_fd(),
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_bits_truncate(0o600),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) else {
        return;
    };
    let mut bytes = Vec::with_capacity(16 + key.len() + 10 + program.words.len() * 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(u8::from(program.notify));
    bytes.push(u8::from(program.notify_exec));
    bytes.extend_from_slice(&(program.words.len() as u64).to_le_bytes());
    for w in program.words.iter() {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let written = std::fs::File::from(fd).write_all(&bytes).is_ok();
    let dir_raw = Some(std::os::fd::AsRawFd::as_raw_fd(dir));
    if !written || nix::fcntl::renameat(dir_raw, tmp.as_c_str(), dir_raw, name.as_c_str()).is_err()
    {
        let _ = nix::unistd::unlinkat(
            dir_raw,
            tmp.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_what_the_program_depends_on() {
        assert_ne!(key("a", false), key("a", true));
        assert_ne!(key("a", false), key("b", false));
        assert_ne!(file_name(&key("a", false)), file_name(&key("b", false)));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("hatchery-bpf-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn program() -> Program {
        Program {
            words: Arc::from(vec![1u64, 2, 0x7fff_0000_0000_0006]),
            notify: true,
            notify_exec: false,
            handover: false,
        }
    }

    #[test]
    fn an_entry_round_trips_and_a_changed_key_misses() {
        let d = temp_dir("round-trip");
        let dir = open_dir_at(&d).expect("cache dir");
        assert!(load_from(&dir, "k1").is_none());
        store_in(&dir, "k1", &program());
        let got = load_from(&dir, "k1").expect("hit");
        assert_eq!(&*got.words, &*program().words);
        assert!(got.notify && !got.notify_exec && !got.handover);
        assert!(load_from(&dir, "k2").is_none());
        // Whether the hand-over must be revoked comes from the words, whatever was stored: a
        // notifying program that fails sendmsg (here: everything) needs it.
        let denying = Program {
            words: Arc::from(vec![0x0005_0001_0000_0006u64]),
            handover: false,
            ..program()
        };
        store_in(&dir, "k3", &denying);
        assert!(load_from(&dir, "k3").expect("hit").handover);
        // A truncated or extended entry is a miss.
        let path = d.join(file_name("k1").to_str().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(load_from(&dir, "k1").is_none());
        bytes.truncate(bytes.len() - 9);
        std::fs::write(&path, &bytes).unwrap();
        assert!(load_from(&dir, "k1").is_none());
        std::fs::remove_dir_all(&d).unwrap();
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
        // A group-writable entry is a miss.
        let dir = open_dir_at(&d).unwrap();
        store_in(&dir, "k", &program());
        let path = d.join(file_name("k").to_str().unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(load_from(&dir, "k").is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

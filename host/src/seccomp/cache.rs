//! A per-user disk cache of compiled filters, for short-lived processes (the `hatchery` CLI):
//! libseccomp takes milliseconds to compile a policy of a few hundred rules, which a process
//! that runs one command pays every time. Off unless [`enable_disk_cache`] is called; a
//! long-lived process compiles each filter once in memory anyway.
//!
//! ```text
//!  <dir>/                       the cache directory (see `disk_cache`: private to this euid)
//!    <hash>.bpf                 "HTCHBPF2", the full key, notify flags, the BPF words (whether the
//!                               program needs the hand-over revoked is read off the words)
//! ```
//!
//! The key is everything the program depends on: this crate's version and a digest of its
//! seccomp sources (the compiler and the built-in profiles; in a workspace build also the
//! evaluator of `hatchery-sys` the compiler checks with), `hatchery-sys`'s version, the
//! listener hand-over's `sendmsg` flags, libseccomp's version and API level,
//! the filter (a built-in profile by its name, any other as data: default, architectures,
//! rules, ioctls, leniency) and whether notifications compile as kills. A hit compares the whole key, not just its hash, so a
//! collision is a miss. Anything unexpected (ownership, mode, size, format) is a miss and the
//! filter is compiled as without a cache. Trust: as the user's own files (see `disk_cache`).

use std::ffi::CString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Program;

const MAGIC: &[u8; 8] = b"HTCHBPF2";
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_WORDS: u64 = 4096;
/// An entry's key is the filter as text: bounded, to bound what a read allocates.
const MAX_KEY: u64 = 1 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Keeps compiled filters in `dir` (created mode 0700 if missing, its parents as usual), or in
/// `$XDG_CACHE_HOME/hatchery` (else `$HOME/.cache/hatchery`) when `dir` is `None`. The directory
/// is shared with [`shim_binary::enable_disk_cache`](crate::shim_binary::enable_disk_cache): the
/// first call of either sets it. Costs nothing until a filter is compiled; then one small file
/// read per filter, instead of libseccomp's compile (milliseconds for the default profile's
/// policy; the built-in profiles are precompiled where libseccomp is Debian 12's). Has no effect
/// unless the process is the host's root (not uid 0 of another user namespace): an unprivileged
/// user's containers run as that user, and one given the cache directory (a bind of `~/.cache`,
/// say) could replace a filter of later containers with a weaker one.
pub fn enable_disk_cache(dir: Option<PathBuf>) {
    crate::disk_cache::set_dir(dir);
    ENABLED.store(true, Ordering::Relaxed);
}

static ANY_USER: AtomicBool = AtomicBool::new(false);

/// [`enable_disk_cache`], also for a process that is not the host's root: its filters are then
/// read from a directory that the user's own containers could change if one were given it (a
/// bind of `~/.cache` or of a parent), and a changed entry would weaken the filter of later
/// containers. For a user who never gives a sandbox that directory; libseccomp's compile of the
/// default policy costs about 6 ms per process otherwise. (`hatchery run` with
/// `HATCHERY_SECCOMP_CACHE=user`.)
pub fn enable_disk_cache_any_user(dir: Option<PathBuf>) {
    ANY_USER.store(true, Ordering::Relaxed);
    enable_disk_cache(dir);
}

/// Whether [`enable_disk_cache`] was called (with a directory to use).
pub(super) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) && crate::disk_cache::dir_path().is_some()
}

/// The enabled cache directory, opened and checked, or `None` (no cache, or not a safe one).
fn open_dir() -> Option<OwnedFd> {
    if ANY_USER.load(Ordering::Relaxed) {
        crate::disk_cache::open_dir_any_user()
    } else {
        crate::disk_cache::open_dir()
    }
}

/// The cache key of a compile: everything the program depends on.
pub(super) fn key(filter_data: &str, notify_as_kill: bool) -> String {
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let api = libseccomp::get_api();
    format!(
        "hatchery {} sources {} sys {} listener flags {:#x} libseccomp {v} api {api} arch {} \
         notify_as_kill {notify_as_kill}\n{filter_data}",
        env!("CARGO_PKG_VERSION"),
        env!("HATCHERY_SECCOMP_SOURCES_DIGEST"),
        hatchery_sys::seccomp::CRATE_VERSION,
        hatchery_protocol::LISTENER_SEND_FLAGS,
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
    let fd = crate::disk_cache::open_entry(dir.as_fd(), &file_name(key))?;
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
    crate::disk_cache::store_entry(dir.as_fd(), &file_name(key), &bytes, 0o600);
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
        let dir = crate::disk_cache::open_dir_at(&d).expect("cache dir");
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
    fn a_group_writable_entry_is_a_miss() {
        use std::os::unix::fs::PermissionsExt;
        let d = temp_dir("mode");
        let dir = crate::disk_cache::open_dir_at(&d).unwrap();
        store_in(&dir, "k", &program());
        assert!(load_from(&dir, "k").is_some());
        let path = d.join(file_name("k").to_str().unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(load_from(&dir, "k").is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Network namespaces the host makes for one-shot containers and keeps for the next one.
//!
//! Making a network namespace is the costliest part of a container's start, and tearing it down
//! costs as much again in a kernel worker, on the same cores (a C loop of `clone` into the other
//! six namespaces on the development VM: 283 µs, with `CLONE_NEWNET` 783 µs; entering a kept one
//! around the clone instead, 347 µs). A host that may enter network namespaces it made (it holds
//! `CAP_SYS_ADMIN` in its own user namespace: root) makes the container's namespace itself and
//! clones the shim into it; once the container is gone (its shim reaped: every process of its
//! pid namespace is dead), a namespace that shows no trace of it is kept for the next container:
//!
//! ```text
//!  host thread                                    the container
//!  take(): a kept namespace, or unshare(CLONE_NEWNET) (+ lo up) and setns back
//!  setns(it) ─ clone(NEWUSER|NEWNS|NEWPID|…) ─ setns(back)  ─▶ born in it
//!  …                                                            runs, exits
//!  reaper: the shim reaped, give_back(): kept when untouched    (every process dead)
//! ```
//!
//! The namespace belongs to the host's user namespace, not the container's: the container holds
//! no capability over it, so it cannot change what a later container finds there (interfaces,
//! addresses, routes, netfilter rules, its `sysctl`s, whose files belong to the host's root, and
//! the guest is never the host's root, see [`idmap`](crate::idmap)). What a process without those
//! capabilities can leave behind is sockets and what they sent, and a namespace is kept only when
//! none of that shows ([`sys::net::untouched`]: no socket alive anywhere, none in `TIME_WAIT`, no
//! fragment queued, no packet counted on any interface), and only when the container was given
//! no socket (over which it could have sent out an fd that holds the namespace, or a `/proc`
//! file of it that shows what the next container does there). A container that could use a
//! capability in its network namespace (hakurei's `Privileged`) or configures it (pasta) gets a
//! namespace of its own from the clone, as before; so does every container of a host that may not
//! enter namespaces (an unprivileged user: `setns` needs `CAP_SYS_ADMIN` in the caller's own
//! user namespace) and of a process that runs one container and exits (the `hatchery` CLI, see
//! [`reaper::tear_down_on_caller`](crate::reaper::tear_down_on_caller)), where nothing would be
//! kept for anyone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use hatchery_protocol::{MountOp, SetupPlan};
use hatchery_sys as sys;
use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};

/// How many unused namespaces of each kind (loopback up, loopback down) are kept.
const KEPT: usize = 4;

/// A network namespace lent to one container.
#[derive(Debug)]
pub(crate) struct Lease {
    ns: OwnedFd,
    /// Its counters and flow labels when it was made ([`sys::net::activity`]).
    made: String,
    loopback: bool,
    /// The container was given a socket: the namespace is not kept.
    exposed: bool,
}

/// How long kept namespaces wait for a one-shot container before they are closed (by the
/// reaper thread, see [`reaper`](crate::reaper)).
pub(crate) const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Live pools: the last one to go closes the kept namespaces.
static POOLS: AtomicUsize = AtomicUsize::new(0);

/// Entering a namespace was refused once (no `CAP_SYS_ADMIN`): not tried again.
static REFUSED: AtomicBool = AtomicBool::new(false);

static UNUSED: Mutex<Vec<Lease>> = Mutex::new(Vec::new());

/// The process [`UNUSED`] belongs to (its [`fork::generation`](crate::fork), plus one: 0 is
/// none yet): a child forked from it holds copies of the same fds, and two processes must never
/// lend one namespace at once (see [`unused`]).
static OWNER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The kept namespaces, locked; in a process forked from the one that kept them, none (its
/// copies of their fds are closed: the parent lends them).
fn unused() -> std::sync::MutexGuard<'static, Vec<Lease>> {
    let mut kept = UNUSED.lock().unwrap_or_else(|e| e.into_inner());
    let me = crate::fork::generation() + 1;
    if OWNER.swap(me, Ordering::Relaxed) != me {
        kept.clear();
    }
    kept
}

/// A network namespace for the container of `setup`, cloned with `clone_flags`: for one with a
/// network namespace of its own that pasta does not configure and in which none of its processes
/// could use a capability, and only where this process may make and enter namespaces. `None`:
/// the container's clone makes its own.
pub(crate) fn take_for(clone_flags: libc::c_int, setup: &SetupPlan) -> Option<Lease> {
    let mut lease = take(wanted(clone_flags, setup)?)?;
    lease.expose_to(setup);
    Some(lease)
}

/// The kind of namespace [`take_for`] would lend the container of `setup` (its loopback up or
/// down), or `None` when it would lend none.
pub(crate) fn wanted(clone_flags: libc::c_int, setup: &SetupPlan) -> Option<bool> {
    if clone_flags & libc::CLONE_NEWNET == 0 || !setup.own_network || setup.params.privileged {
        return None;
    }
    Some(setup.loopback)
}

/// Whether the container can reach a unix socket on the host through its tree (see
/// [`SetupPlan::may_reach_host_sockets`]), or a bind's source is one.
fn reaches_host_sockets(setup: &SetupPlan) -> bool {
    use std::os::unix::fs::FileTypeExt;
    setup.may_reach_host_sockets()
        || setup.mounts.iter().any(|m| match m {
            MountOp::Bind { source, .. } => {
                std::fs::metadata(std::ffi::OsStr::from_bytes(&source.0))
                    .is_ok_and(|m| m.file_type().is_socket())
            }
            _ => false,
        })
}

/// Whether `fd` is a socket (over which a container could send fds out).
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map_or(true, |st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// A network namespace, its loopback up or down as `loopback` says: a kept one, or a new one.
pub(crate) fn take(loopback: bool) -> Option<Lease> {
    if REFUSED.load(Ordering::Relaxed) {
        return None;
    }
    {
        let mut unused = unused();
        if let Some(i) = unused.iter().rposition(|l| l.loopback == loopback) {
            return Some(unused.swap_remove(i));
        }
    }
    match make(loopback) {
        Ok(lease) => Some(lease),
        Err(Errno::EPERM) => {
            REFUSED.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

/// Takes back the namespace of a container that is gone (its every process dead), to keep it
/// if it shows no trace of the container and fewer than [`KEPT`] of its kind wait.
pub(crate) fn give_back(lease: Lease) {
    if lease.exposed || !lease.untouched() {
        return;
    }
    let mut unused = unused();
    if unused
        .iter()
        .filter(|l| l.loopback == lease.loopback)
        .count()
        < KEPT
    {
        unused.push(lease);
    }
}

impl Lease {
    /// Runs `clone` with the calling thread in this namespace, so the child is born in it, and
    /// brings the thread back to its own before returning.
    pub(crate) fn around<R>(&self, clone: impl FnOnce() -> R) -> Result<R, Errno> {
        let home = own_namespace()?;
        setns(self.ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let r = clone();
        back_home(&home);
        Ok(r)
    }

    /// The container is given a socket: the namespace will not be kept.
    pub(crate) fn expose(&mut self) {
        self.exposed = true;
    }

    /// Exposes the namespace when the tree of `setup` reaches host sockets (see
    /// [`take_for`]).
    pub(crate) fn expose_to(&mut self, setup: &SetupPlan) {
        if reaches_host_sockets(setup) {
            self.expose();
        }
    }

    /// Whether it shows no trace of a container, read from inside it (`/proc/thread-self/net`
    /// shows the calling thread's namespace): no socket, no packet ([`sys::net::untouched`]),
    /// and its counters and flow labels as they were when it was made
    /// ([`sys::net::activity`]). Without IPv6 there is no `sockstat6`.
    fn untouched(&self) -> bool {
        let read = |p: &str| std::fs::read_to_string(p);
        let figures = self.around(|| {
            let v6 = match read("/proc/thread-self/net/sockstat6") {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                other => other,
            };
            (
                read("/proc/thread-self/net/sockstat"),
                v6,
                read("/proc/thread-self/net/dev"),
                sys::net::activity("/proc/thread-self/net"),
            )
        });
        match figures {
            Ok((Ok(v4), Ok(v6), Ok(dev), Some(activity))) => {
                sys::net::untouched(&v4, &v6, &dev) && activity == self.made
            }
            _ => false,
        }
    }
}

/// A pool was built.
pub(crate) fn pool_started() {
    POOLS.fetch_add(1, Ordering::SeqCst);
}

/// A pool is gone: once none is left, the kept namespaces are closed, so a program that is done
/// with its pools holds none of them.
pub(crate) fn pool_gone() {
    if POOLS.fetch_sub(1, Ordering::SeqCst) == 1 {
        drop_unused();
    }
}

/// Whether any namespace is kept.
pub(crate) fn any_kept() -> bool {
    !unused().is_empty()
}

/// Drops every kept namespace (see [`reaper::drop_kept_network_namespaces`]).
///
/// [`reaper::drop_kept_network_namespaces`]: crate::reaper::drop_kept_network_namespaces
pub(crate) fn drop_unused() {
    let unused = std::mem::take(&mut *unused());
    drop(unused);
}

fn own_namespace() -> Result<OwnedFd, Errno> {
    std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Makes a namespace with the calling thread (`unshare` moves only the thread) and brings the
/// thread back.
fn make(loopback: bool) -> Result<Lease, Errno> {
    let home = own_namespace()?;
    unshare(CloneFlags::CLONE_NEWNET)?;
    let made = opened_inside(loopback);
    back_home(&home);
    made
}

fn opened_inside(loopback: bool) -> Result<Lease, Errno> {
    if loopback {
        sys::net::loopback_up().map_err(Errno::from_raw)?;
    }
    Ok(Lease {
        ns: own_namespace()?,
        made: sys::net::activity("/proc/thread-self/net").ok_or(Errno::EIO)?,
        loopback,
        exposed: false,
    })
}

/// Brings the calling thread back to the network namespace it came from. A thread left in a
/// container's namespace would make every later socket of the host there, so a failure (which
/// entering the namespace the thread was in cannot meet short of a broken kernel) aborts.
fn back_home(home: &OwnedFd) {
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        eprintln!("hatchery: cannot return to the host's network namespace ({e}); aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    }

    /// As root: a namespace is made, entered only around the closure, kept when untouched and
    /// lent again; one that saw a socket is not kept.
    #[test]
    fn a_kept_namespace_is_lent_again_only_when_untouched() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let home = inode("/proc/thread-self/ns/net");
        let Some(lease) = take(true) else {
            panic!("root could not make a network namespace");
        };
        let inside = lease.around(|| inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, home);
        assert_eq!(inode("/proc/thread-self/ns/net"), home);
        assert!(lease.untouched(), "a new namespace with its loopback up");
        give_back(lease);
        let again = take(true).expect("kept");
        assert_eq!(
            again.around(|| inode("/proc/thread-self/ns/net")).unwrap(),
            inside
        );
        // A socket bound in it and still open: not kept.
        let sock = again
            .around(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        assert!(!again.untouched());
        give_back(again);
        drop(sock);
        let next = take(true).expect("made");
        assert_ne!(
            next.around(|| inode("/proc/thread-self/ns/net")).unwrap(),
            inside
        );
        // Exposed: not kept either.
        let mut next = next;
        next.expose();
        let ns = next.around(|| inode("/proc/thread-self/ns/net")).unwrap();
        give_back(next);
        let other = take(true).expect("made");
        assert_ne!(
            other.around(|| inode("/proc/thread-self/ns/net")).unwrap(),
            ns
        );
    }
}

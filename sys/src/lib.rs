//! The system calls hatchery makes below std and nix: capabilities, landlock, seccomp, the fd
//! table, exec. Used by both fork boundaries (the host's clone child, the shim's request child
//! and the helper zygote's call fork) and by the shim's container setup.
//!
//! Built on [rustix] where it has the call (its Linux backend issues raw system calls: no libc
//! `errno`, no allocation, no lock); raw `libc` only where rustix lacks the call or its types
//! do not fit: landlock, seccomp filters and user-notification ioctls, `close_range`,
//! `execve`/`execveat`, `_exit`, `mount_setattr`, signal masks and dispositions, `dup2` onto a
//! number nobody owns, the `SIOC[GS]IFFLAGS` ioctls.
//!
//! Every call returns the kernel's errno ([`Errno`]) on failure.
//!
//! # What may run between fork and exec
//!
//! Code between `fork`/`clone` and `execve` (or `_exit`) must not allocate, lock or call
//! anything that is not async-signal-safe. Each module says which of its functions qualify:
//!
//! | module       | allocation-free, async-signal-safe | not: allocates, call before the fork     |
//! |--------------|------------------------------------|------------------------------------------|
//! | [`caps`]     | everything else                    | [`caps::last_cap`] (reads `/proc`)       |
//! | [`exec`]     | everything else                    | [`exec::CStringArray::new`]              |
//! | [`fd`]       | everything                         |                                          |
//! | [`fs`]       | everything                         |                                          |
//! | [`landlock`] | everything                         |                                          |
//! | [`net`]      | everything else (no use after a fork) | [`net::activity`] (reads `/proc`)     |
//! | [`process`]  | everything                         |                                          |
//! | [`seccomp`]  | everything                         |                                          |
//! | [`signal`]   | everything else                    | [`signal::non_default`] (returns a `Vec`) |
//!
//! "Allocation-free" covers this crate's code and the rustix and libc calls it makes. A child
//! that shares its parent's memory (`CLONE_VM`) must also write nothing but its own stack: the
//! rustix-backed calls write nothing else; the libc-backed ones may also set the thread's
//! `errno`, which such a child shares with its suspended parent thread (harmless: that thread
//! only looks at `errno` when its clone failed, and then there is no child).
//!
//! # Safety contracts
//!
//! Functions that act on fd numbers the caller does not own ([`fd::dup2_keep`],
//! [`fd::close_range`]) are `unsafe fn`s. Everything that creates an fd returns an
//! [`OwnedFd`](std::os::fd::OwnedFd), and every fd argument is a
//! [`BorrowedFd`](std::os::fd::BorrowedFd). There is deliberately no generic `prctl`: each
//! option used has its own, safe function; the credential ones ([`caps`]) change only the
//! calling thread, as their module says, and no memory or fd invariant depends on them.
#![deny(unsafe_code)]

pub mod caps;
pub mod exec;
pub mod fd;
pub mod fs;
pub mod landlock;
pub mod net;
pub mod process;
pub mod seccomp;
pub mod signal;

/// An errno value (`E*`).
pub type Errno = i32;

/// The calling thread's `errno` (`EIO` if there is none). Allocation-free.
pub(crate) fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A rustix error as an errno.
pub(crate) fn errno(e: rustix::io::Errno) -> Errno {
    e.raw_os_error()
}

/// A raw syscall's return value, or the errno it left.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

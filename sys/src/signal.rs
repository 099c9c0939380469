//! Signal masks and dispositions for a child about to exec, through libc (rustix has no stable
//! `sigaction` or `sigprocmask`).
//!
//! [`unblock_all`], [`reset`] and [`reset_handlers`] are allocation-free and async-signal-safe;
//! [`non_default`] **allocates** (it returns a `Vec`): call it before the fork.
#![allow(unsafe_code)]

use crate::Errno;

/// The highest signal number queried (the kernel's `_NSIG`).
const LAST_SIGNAL: i32 = 64;

/// Unblocks every signal of the calling thread.
pub fn unblock_all() -> Result<(), Errno> {
    // SAFETY: an all-zero sigset_t is a valid (empty) set; sigemptyset makes it explicit.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid local sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is initialised; the old-mask pointer is null.
    if unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) } != 0 {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// The disposition of `sig` (`None` for numbers the kernel refuses).
fn disposition(sig: i32) -> Option<libc::sighandler_t> {
    // SAFETY: an all-zero sigaction is valid; the query writes into it.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying a disposition into a valid local struct.
    let ok = unsafe { libc::sigaction(sig, std::ptr::null(), &mut current) } == 0;
    ok.then_some(current.sa_sigaction)
}

/// The signals whose disposition is not the default: ignored ones (such as Rust's `SIGPIPE`),
/// which would survive exec, and handled ones (such as Rust's `SIGSEGV` guard), which must not
/// run in a child that shares the parent's memory. A child resets exactly these before exec.
///
/// **Allocates**: call it before the fork.
pub fn non_default() -> Vec<i32> {
    (1..=LAST_SIGNAL)
        .filter(|&sig| disposition(sig).is_some_and(|d| d != libc::SIG_DFL))
        .collect()
}

/// Resets `signals` to their default disposition (invalid numbers are ignored).
pub fn reset(signals: &[i32]) {
    for &sig in signals {
        // SAFETY: SIG_DFL is always a valid disposition; invalid numbers return EINVAL, ignored.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Resets every signal that has a handler to its default disposition, leaving ignored ones
/// ignored: no handler of the parent may run in a child that shares its memory, and exec would
/// drop handlers anyway (it keeps `SIG_IGN`).
pub fn reset_handlers() {
    for sig in 1..=LAST_SIGNAL {
        if disposition(sig).is_some_and(|d| d != libc::SIG_DFL && d != libc::SIG_IGN) {
            // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask and no flags.
            let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: installing SIG_DFL from a valid local struct.
            unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust runtime ignores SIGPIPE in every test binary.
    #[test]
    fn rusts_ignored_sigpipe_is_not_default() {
        assert!(non_default().contains(&libc::SIGPIPE));
        assert!(!non_default().contains(&libc::SIGKILL));
    }
}

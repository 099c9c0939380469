//! Signal masks and dispositions for a child about to exec, through libc (rustix has no stable
//! `sigaction` or `sigprocmask`).
//!
//! [`unblock_all`], [`reset`], [`block_every`] and [`set_mask`] are allocation-free and
//! async-signal-safe;
//! [`non_default`] **allocates** (it returns a `Vec`): call it before the fork.
#![allow(unsafe_code)]

use crate::{check, Errno};

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

/// The kernel's signal mask of a thread (`_NSIG` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mask(u64);

// The kernel's signal set is 64 bits on the architectures this crate is built for (MIPS has
// 128 and would need a wider `Mask`).
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
compile_error!("hatchery-sys's signal masks assume a 64-signal kernel sigset");

/// Blocks every signal in the calling thread, glibc's own too (libc's `sigprocmask` keeps its
/// thread-cancellation and `setxid` signals, 32 and 33, deliverable), and returns the mask it
/// replaced. With every signal blocked, no handler of the process can run in a `CLONE_VM` child
/// before its exec (which resets every handler itself), so such a child needs no reset of its
/// dispositions. A program exec'd so starts with every signal blocked: it sets its mask with
/// `SIG_SETMASK` (the shim does, and so do its children before they exec a command).
pub fn block_every() -> Result<Mask, Errno> {
    let all = u64::MAX;
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask reads 8 bytes from `all` and writes 8 to `old`, both valid locals
    // (the kernel's sigset size is 8 bytes, checked above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    check(ret).map(|_| Mask(old))
}

/// Sets the calling thread's signal mask to `mask` (one [`block_every`] returned).
pub fn set_mask(mask: Mask) {
    // SAFETY: as in `block_every`; the old-mask pointer is null.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask.0 as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
}

/// The calling thread's signal mask.
pub fn current_mask() -> Mask {
    let mut now = 0u64;
    // SAFETY: as in `block_every`, reading only.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut now as *mut u64,
            8usize,
        )
    };
    Mask(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every signal, glibc's 32 and 33 included, is blocked, and the old mask comes back.
    #[test]
    fn block_every_blocks_glibcs_signals_too_and_restores() {
        let before = current_mask();
        let old = block_every().unwrap();
        assert_eq!(old, before);
        assert_eq!(
            current_mask(),
            Mask(!((1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)))),
            "SIGKILL and SIGSTOP cannot be blocked, all others are"
        );
        set_mask(old);
        assert_eq!(current_mask(), before);
    }

    /// The Rust runtime ignores SIGPIPE in every test binary.
    #[test]
    fn rusts_ignored_sigpipe_is_not_default() {
        assert!(non_default().contains(&libc::SIGPIPE));
        assert!(!non_default().contains(&libc::SIGKILL));
    }
}

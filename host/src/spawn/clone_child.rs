//! THE FORK BOUNDARY OF THE HOST: `clone` into new namespaces, then `execveat` of the shim.
//!
//! The host is a multithreaded program (the user's server). The child runs with `CLONE_VM |
//! CLONE_VFORK` on a stack prepared here, like `posix_spawn`: it shares the parent's memory while
//! the calling thread is suspended until the exec. So the code in [`child_main`] follows strict
//! rules: no allocation, no locks, only async-signal-safe calls, no writes to anything but its own
//! stack, and it ends in `execveat` or `_exit`. It only reads a [`Prepared`] built before the
//! clone. All signals are blocked in the calling thread around the clone, so no handler of the
//! host ever runs on the child's stack; the shim sets its own mask after the exec.
//!
//! The child keeps the capabilities it has in its new user namespace across the exec by raising
//! them into the ambient set: the shim needs them to build the container, whatever uid the maps
//! (written by the parent after the clone) give it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use hatchery_sys as sys;
use sys::exec::CStringArray;
use sys::fd::CloseRange;

/// Everything the child needs, built before the clone.
pub struct Prepared<'a> {
    /// The sealed shim memfd.
    pub shim: BorrowedFd<'a>,
    /// `/dev/null`, opened read-write; becomes fds 0, 1 and 2 of the shim.
    pub devnull: BorrowedFd<'a>,
    /// The guest end of the control socket; becomes fd 3.
    pub control: BorrowedFd<'a>,
    /// Write end of a close-on-exec pipe that receives the errno if the exec fails.
    pub err_pipe: BorrowedFd<'a>,
    /// Highest capability number of the kernel.
    pub last_cap: u32,
    /// `RLIMIT_NOFILE` soft limit, for the close-range fallback.
    pub fd_limit: u32,
    argv: CStringArray,
    envp: CStringArray,
}

impl<'a> Prepared<'a> {
    /// Builds the plan. `argv0` becomes the shim's process title.
    pub fn new(
        shim: BorrowedFd<'a>,
        devnull: BorrowedFd<'a>,
        control: BorrowedFd<'a>,
        err_pipe: BorrowedFd<'a>,
        argv0: &str,
    ) -> Prepared<'a> {
        let argv0 = CString::new(argv0).unwrap_or_else(|_| c"hatchery-shim".to_owned());
        let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 20) as u32)
            .unwrap_or(1024);
        Prepared {
            shim,
            devnull,
            control,
            err_pipe,
            last_cap: sys::caps::last_cap(),
            fd_limit,
            argv: CStringArray::new([argv0]),
            envp: CStringArray::new([]),
        }
    }
}

const STACK_SIZE: usize = 64 * 1024;

/// Clones a child into new namespaces (`flags` holds the `CLONE_NEW*` bits) that execs the shim.
/// Returns its pid once the exec happened (or the child failed: then the errno is in the pipe).
pub fn spawn(flags: libc::c_int, prepared: &Prepared<'_>) -> Result<libc::pid_t, i32> {
    // Every fd the child dups from must not collide with 0..=3.
    for fd in [
        prepared.devnull,
        prepared.control,
        prepared.err_pipe,
        prepared.shim,
    ] {
        debug_assert!(fd.as_raw_fd() > 3, "fork-boundary fds must be above 3");
    }
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every architecture we support; keep 16-byte alignment.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;

    // SAFETY: sigfillset initialises `all`; `old` is written by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid local sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: both sets are valid local sigset_t values.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    // SAFETY: `child_main` only reads `prepared` (alive: this thread is suspended until the child
    // execs or exits, CLONE_VFORK) and runs on `stack`, which outlives the call for the same
    // reason. CLONE_VM without CLONE_SIGHAND gives the child its own signal dispositions.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            prepared as *const Prepared<'_> as *mut libc::c_void,
        )
    };
    let err = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    // SAFETY: restoring the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid)
    }
}

/// The child. See the module header for the rules.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&Prepared` passed to clone, alive while the parent is suspended.
    let p: &Prepared<'_> = unsafe { &*(arg as *const Prepared<'_>) };
    let fail = |errno: i32| -> ! {
        sys::fd::write_all_ignoring_errors(p.err_pipe, &errno.to_le_bytes());
        sys::exec::exit_now(127)
    };
    // Handlers of the host must not survive into the shim (ignored signals may stay ignored:
    // exec keeps SIG_IGN and the shim resets its children itself).
    sys::signal::reset_handlers();
    for target in 0..3 {
        // SAFETY: the child's fds 0-2 are its own (a copy of the host's table; the host's own
        // stdio is untouched) and become the shim's.
        if let Err(e) = unsafe { sys::fd::dup2_keep(p.devnull, target) } {
            fail(e);
        }
    }
    // SAFETY: as above, for fd 3 (every fd the child reads is above 3, checked in `spawn`).
    if let Err(e) = unsafe { sys::fd::dup2_keep(p.control, 3) } {
        fail(e);
    }
    // Everything else closes at exec (the shim memfd must stay open until then).
    // SAFETY: the child's fd table is a copy of the host's: marking its fds above 3
    // close-on-exec leaves the host's own table untouched.
    let closed = unsafe { sys::fd::close_range(4, u32::MAX, CloseRange::CloseOnExec, p.fd_limit) };
    if let Err(e) = closed {
        fail(e);
    }
    let all_caps = if p.last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (p.last_cap + 1)) - 1
    };
    if let Err(e) = sys::caps::capset_all(all_caps) {
        fail(e);
    }
    if let Err(e) = sys::caps::raise_ambient(p.last_cap) {
        fail(e);
    }
    let e = sys::exec::fexecve(p.shim, &p.argv, &p.envp);
    fail(e)
}

/// Reads the 4-byte errno the child left if its exec failed (`None`: the exec succeeded).
pub fn read_exec_error(pipe: RawFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    // SAFETY: reading into a local buffer; the pipe's write ends are closed, so this never blocks.
    let n = unsafe { libc::read(pipe, buf.as_mut_ptr().cast(), buf.len()) };
    (n == 4).then(|| i32::from_le_bytes(buf))
}

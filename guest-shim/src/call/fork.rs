//! The helper zygote's fork boundary: forks one call process and gives it the per-call
//! lockdown before it can receive a call.
//!
//! The zygote is single-threaded (checked at Ready, and asserted before each fork in debug
//! builds), so the child may allocate afterwards; this file itself only makes raw system calls
//! on data prepared before the fork ([`CallLockdown`]). The child:
//!
//! 1. leads a process group of its own (`setpgid(0, 0)`): the supervisor kills the whole group
//!    when the call ends, and the call filter below keeps every process of the call in it;
//! 2. closes every fd but its channel to the supervisor (moved to fd 3);
//! 3. enters a landlock domain of its own that only scopes signals and abstract unix sockets
//!    (where the kernel has scopes): it cannot signal, ptrace or connect to the zygote, the
//!    supervisor or another call;
//! 4. installs the call filter: `setsid` and `setpgid` fail with `EPERM` (no process of the call
//!    can leave its group), and so do limits, scheduling (priority, policy, affinity) and I/O
//!    priority set on any process but itself: the helper zygote shares the call's ids, and what
//!    is set on it would carry over to every later call.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use hatchery_sys as sys;
use sys::fd::CloseRange;

/// The per-call lockdown, built once in the zygote before any fork.
pub(super) struct CallLockdown {
    filter: Vec<libc::sock_filter>,
    scopes: u64,
}

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// What the call filter does with one system call.
enum Rule {
    /// Always `EPERM`.
    Deny,
    /// Allowed only when each listed argument (index, value) is exactly that value (all 64
    /// bits), so the call can only act on the calling process itself; `EPERM` otherwise.
    Only(&'static [(u32, u32)]),
}

/// Which system calls the call filter restricts. Scheduling and I/O priority, affinity and
/// limits of another process (the helper zygote is the call's parent, with the same ids) would
/// otherwise carry over to every later call forked from it.
const RULES: &[(libc::c_long, Rule)] = &[
    (libc::SYS_setsid, Rule::Deny),
    (libc::SYS_setpgid, Rule::Deny),
    // prlimit64(pid, ...), sched_*(pid, ...): pid 0 is the caller.
    (libc::SYS_prlimit64, Rule::Only(&[(0, 0)])),
    (libc::SYS_sched_setaffinity, Rule::Only(&[(0, 0)])),
    (libc::SYS_sched_setscheduler, Rule::Only(&[(0, 0)])),
    (libc::SYS_sched_setparam, Rule::Only(&[(0, 0)])),
    (libc::SYS_sched_setattr, Rule::Only(&[(0, 0)])),
    // setpriority(PRIO_PROCESS, 0, ...): PRIO_USER with who 0 would be every process of the uid.
    (libc::SYS_setpriority, Rule::Only(&[(0, 0), (1, 0)])),
    // ioprio_set(IOPRIO_WHO_PROCESS, 0, ...).
    (libc::SYS_ioprio_set, Rule::Only(&[(0, 1), (1, 0)])),
];

/// The call filter (see the module doc). Foreign ABIs are already killed by the container's
/// policy, which runs first.
pub(super) fn call_filter() -> Vec<libc::sock_filter> {
    // Offsets in `struct seccomp_data`: nr at 0, args[i] at 16 + 8 i (low word first).
    let deny = stmt(RET, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    let allow = stmt(RET, SECCOMP_RET_ALLOW);
    let mut f = vec![stmt(LD_ABS, 0)];
    for (nr, rule) in RULES {
        // The block run for this syscall: it always returns, so the accumulator still holds
        // the syscall number when the next rule is checked.
        let block = match rule {
            Rule::Deny => vec![deny],
            Rule::Only(args) => {
                let mut b = Vec::new();
                let n = args.len() * 4;
                for (i, (idx, val)) in args.iter().enumerate() {
                    let off = 16 + 8 * idx;
                    // Instructions left before the final deny, after each jump.
                    let to_deny = |at: usize| (n - at - 1 + 1) as u8;
                    b.push(stmt(LD_ABS, off));
                    b.push(jeq(*val, 0, to_deny(i * 4 + 1)));
                    b.push(stmt(LD_ABS, off + 4));
                    b.push(jeq(0, 0, to_deny(i * 4 + 3)));
                }
                b.push(allow);
                b.push(deny);
                b
            }
        };
        f.push(jeq(*nr as u32, 0, block.len() as u8));
        f.extend(block);
    }
    f.push(allow);
    f
}

impl CallLockdown {
    /// The lockdown for this kernel (landlock scopes where its ABI has them).
    pub(super) fn new() -> CallLockdown {
        let abi = sys::landlock::abi().unwrap_or(0);
        CallLockdown {
            filter: call_filter(),
            scopes: crate::shim::confine::scopes(abi),
        }
    }
}

/// Forks a call process. In the child, applies the lockdown and returns `Ok(None)` with its
/// channel on fd 3 (the caller serves the call and `_exit`s); in the zygote, returns the child's
/// pid. A child whose lockdown fails exits with status 125 before touching any call.
pub(super) fn spawn(channel: OwnedFd, lockdown: &CallLockdown) -> Result<Option<i32>, i32> {
    debug_assert_eq!(
        crate::shim::thread_count(),
        1,
        "the helper zygote must be single-threaded to fork"
    );
    // SAFETY: the zygote is single-threaded (checked before Ready), so the child inherits no
    // lock held by another thread; it runs only raw syscalls here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EAGAIN));
    }
    if pid > 0 {
        return Ok(Some(pid));
    }
    if lock_down(channel.as_fd(), lockdown).is_err() {
        // SAFETY: leave at once, running nothing of the helper's.
        unsafe { libc::_exit(125) };
    }
    std::mem::forget(channel);
    Ok(None)
}

/// The channel's fd in a call process.
pub(super) const CALL_CHANNEL_FD: RawFd = 3;

fn lock_down(channel: BorrowedFd<'_>, l: &CallLockdown) -> Result<(), i32> {
    // SAFETY: integer-only syscalls.
    if unsafe { libc::setpgid(0, 0) } < 0 {
        return Err(errno());
    }
    if channel.as_raw_fd() != CALL_CHANNEL_FD {
        // SAFETY: fd 3 is the zygote's control channel, whose owner the call process forgets
        // without using it (see the zygote's loop); `channel` is open.
        unsafe { sys::fd::dup2_keep(channel, CALL_CHANNEL_FD) }?;
    }
    // SAFETY: every fd above 3 is the zygote's (or the helper's, opened while preloading); the
    // call process forgets the zygote's owners without using them and serves the call only
    // from fd 3 and the fds the call brings.
    unsafe {
        sys::fd::close_range(
            (CALL_CHANNEL_FD + 1) as u32,
            u32::MAX,
            CloseRange::Close,
            65536,
        )
    }?;
    // SAFETY: fd 3 now holds the call's channel (placed above), which only the call process
    // adopts afterwards.
    let call_channel = unsafe { BorrowedFd::borrow_raw(CALL_CHANNEL_FD) };
    let _ = sys::fd::set_cloexec(call_channel);
    if l.scopes != 0 {
        let ruleset = sys::landlock::create_ruleset(&sys::landlock::RulesetAttr {
            handled_access_fs: 0,
            handled_access_net: 0,
            scoped: l.scopes,
        })?;
        sys::landlock::restrict_self(ruleset.as_fd())?;
    }
    sys::seccomp::install(&l.filter, false)?;
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump of the call filter lands inside it, and it ends on a return.
    #[test]
    fn call_filter_jumps_stay_inside() {
        let f = call_filter();
        for (i, ins) in f.iter().enumerate() {
            if ins.code == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16 {
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + (off as usize) < f.len(), "jump at {i}");
                }
            }
        }
        assert_eq!(f.last().unwrap().code, RET);
        assert_eq!(f.last().unwrap().k, SECCOMP_RET_ALLOW);
    }
}

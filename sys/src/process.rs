//! Attributes of the calling process: dumpability, the parent-death signal, resource limits.
//!
//! Everything here is allocation-free and async-signal-safe.

pub use rustix::process::Resource;

use crate::{errno, Errno};

/// Makes the process non-dumpable (`PR_SET_DUMPABLE` 0): no core dumps, and `/proc/PID/*` and
/// `ptrace` are out of reach of processes with the same ids but not `CAP_SYS_PTRACE`.
pub fn set_non_dumpable() -> Result<(), Errno> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(errno)
}

/// `SIGKILL`s this process when its parent (thread) dies (`PR_SET_PDEATHSIG`).
pub fn kill_with_parent() -> Result<(), Errno> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(errno)
}

/// Sets a limit of the calling process (`prlimit64(0, …)`); `u64::MAX` is unlimited.
pub fn set_rlimit(resource: Resource, soft: u64, hard: u64) -> Result<(), Errno> {
    let value = |v: u64| (v != libc::RLIM64_INFINITY).then_some(v);
    rustix::process::setrlimit(
        resource,
        rustix::process::Rlimit {
            current: value(soft),
            maximum: value(hard),
        },
    )
    .map_err(errno)
}

/// Sets the scheduling policy (`SCHED_*`) and static priority of the calling process
/// (`sched_setscheduler(0, …)`); its children inherit them.
#[allow(unsafe_code)] // rustix has no sched_setscheduler
pub fn set_scheduler(policy: i32, priority: i32) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the caller.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// A pidfd for process `pid` (`pidfd_open`): signals sent through it reach that process or
/// nobody, never a later process that reuses the number.
pub fn pidfd_open(pid: libc::pid_t) -> Result<std::os::fd::OwnedFd, Errno> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(libc::ESRCH)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(errno)
}

/// `SIGKILL`s the process of `pidfd` (`pidfd_send_signal`); `ESRCH` once it is gone.
pub fn pidfd_kill(pidfd: std::os::fd::BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL).map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_the_soft_core_limit() {
        let before = rustix::process::getrlimit(Resource::Core);
        let hard = before.maximum.unwrap_or(u64::MAX);
        set_rlimit(Resource::Core, 0, hard).unwrap();
        let after = rustix::process::getrlimit(Resource::Core);
        assert_eq!(after.current, Some(0));
        assert_eq!(after.maximum, before.maximum);
    }
}

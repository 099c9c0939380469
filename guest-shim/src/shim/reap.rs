//! PID 1 duties: reap every exited process, keep the one we wait for, classify how it ended.
#![allow(unsafe_code)]

use hatchery_protocol::{Outcome, Usage};

/// A reaped process we were waiting for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    /// Raw wait status.
    pub(crate) status: i32,
    /// Its rusage (and that of the descendants it waited for); wall time is filled by the caller.
    pub(crate) usage: Usage,
}

fn micros(tv: libc::timeval) -> u64 {
    (tv.tv_sec as u64) * 1_000_000 + tv.tv_usec as u64
}

fn reaped(status: i32, ru: &libc::rusage) -> Reaped {
    Reaped {
        status,
        usage: Usage {
            wall_us: 0,
            user_us: micros(ru.ru_utime),
            sys_us: micros(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
        },
    }
}

/// Reaps every exited child without blocking; returns `main`'s result if it was among them.
pub(crate) fn reap_all(main: libc::pid_t) -> Option<Reaped> {
    let mut found = None;
    reap_each(|pid, r| {
        if pid == main {
            found = Some(r);
        }
    });
    found
}

/// Waits (blocking) for `pid` to exit and reaps it.
pub(crate) fn wait_for(pid: libc::pid_t) -> Option<Reaped> {
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value for the kernel to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid for writes for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut ru) };
        if r == pid {
            return Some(reaped(status, &ru));
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Reaps every exited child without blocking, handing each to `f`.
pub(crate) fn reap_each(mut f: impl FnMut(libc::pid_t, Reaped)) {
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value for the kernel to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid for writes for the duration of the call.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL, &mut ru) };
        if pid <= 0 {
            break;
        }
        f(pid, reaped(status, &ru));
    }
}

/// Whether this process still has a child (running or not yet reaped).
pub(crate) fn children_left() -> bool {
    // SAFETY: zeroed siginfo is a valid value for the kernel to overwrite.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes; WNOWAIT leaves any exited child to be reaped.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
        )
    };
    r == 0
}

/// How a process with this wait status ended. `cpu_limit_secs` is its RLIMIT_CPU, if any: the
/// kernel sends SIGXCPU at the soft limit and SIGKILL at the hard one.
pub(crate) fn outcome(done: &Reaped, cpu_limit_secs: Option<u64>) -> Outcome {
    let status = done.status;
    if libc::WIFEXITED(status) {
        return Outcome::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let cpu_us = done.usage.user_us + done.usage.sys_us;
        // The kernel's RLIMIT_CPU check counts sampled ticks (utime + stime), rusage reports
        // the precise runtime split by those samples: on a loaded or virtualised machine the two
        // differ by several percent (945 ms of a 1 s limit was seen in CI). A SIGKILL with at
        // least 90% of the limit used is the hard limit.
        let over_cpu = cpu_limit_secs
            .is_some_and(|l| cpu_us.saturating_mul(100) >= l.saturating_mul(90_000_000));
        if signal == libc::SIGXCPU || (signal == libc::SIGKILL && over_cpu) {
            return Outcome::CpuTimeExceeded;
        }
        return Outcome::Signaled {
            signal,
            core_dumped: libc::WCOREDUMP(status),
        };
    }
    Outcome::Exited(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: i32, cpu_s: u64) -> Reaped {
        Reaped {
            status,
            usage: Usage {
                user_us: cpu_s * 1_000_000,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn classifies_wait_statuses() {
        assert_eq!(outcome(&r(3 << 8, 0), None), Outcome::Exited(3));
        assert_eq!(
            outcome(&r(libc::SIGSEGV, 0), None),
            Outcome::Signaled {
                signal: libc::SIGSEGV,
                core_dumped: false
            }
        );
        assert_eq!(
            outcome(&r(libc::SIGXCPU, 1), Some(1)),
            Outcome::CpuTimeExceeded
        );
        assert_eq!(
            outcome(&r(libc::SIGKILL, 2), Some(1)),
            Outcome::CpuTimeExceeded
        );
        assert!(matches!(
            outcome(&r(libc::SIGKILL, 0), Some(1)),
            Outcome::Signaled { signal: 9, .. }
        ));
    }
}

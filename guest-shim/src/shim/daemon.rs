//! hakurei's daemons (one-shot mode): processes started in the finished container before the
//! command, each with the command's confinement, and waited for until its ready path exists.
//!
//! ```text
//!  build root ─▶ for each daemon: fork+exec (launch) ─▶ wait: ready path exists?  ─▶ command
//!                                                         │ daemon exited, violated its
//!                                                         │ policy, or the deadline passed
//!                                                         ▼
//!                                       SetupFailed { Daemon, .. }; the shim exits and the
//!                                       kernel kills every process of the container
//! ```
//!
//! A daemon dies with the container: it is a process of the container's pid namespace, whose
//! init (this shim) ends the namespace when it exits.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hatchery_protocol::{DaemonSpec, SetupFailure, SetupPlan, SetupStep};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::shim::confine::Confinement;
use crate::shim::explain::{Explainer, Handled};
use crate::shim::launch::{self, LaunchRequest};

/// A started daemon.
#[derive(Debug)]
pub(crate) struct Daemon {
    /// Its pid (in the container's pid namespace); it leads a session of its own.
    pub(crate) pid: libc::pid_t,
    /// The seccomp notification listener of its filter, when the filter notifies.
    pub(crate) listener: Option<OwnedFd>,
}

fn fail(errno: i32, detail: String) -> SetupFailure {
    SetupFailure {
        step: SetupStep::Daemon,
        errno,
        detail,
    }
}

/// Starts the plan's daemons in order, each once the one before is ready. `stderr` is the
/// command's (daemons get `/dev/null` for stdin and stdout). On failure the daemons started so
/// far keep running: the caller reports the failure and exits, which ends them. An
/// `explainer` answers the daemons' notifications while they start.
pub(crate) fn start_all(
    plan: &SetupPlan,
    confinement: Confinement,
    devnull: &OwnedFd,
    stderr: Option<&OwnedFd>,
    signals: &SignalFd,
    mut explainer: Option<&mut Explainer>,
) -> Result<Vec<Daemon>, SetupFailure> {
    let mut out = Vec::with_capacity(plan.daemons.len());
    for spec in &plan.daemons {
        let program = String::from_utf8_lossy(&spec.exec.program.0).into_owned();
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| fail(e.raw_os_error().unwrap_or(libc::EIO), program.clone()))
        };
        let fds = vec![
            (dup(devnull)?, 0),
            (dup(devnull)?, 1),
            (dup(stderr.unwrap_or(devnull))?, 2),
        ];
        let mut prepared = launch::prepare(LaunchRequest {
            exec: &spec.exec,
            fds,
            rlimits: &plan.rlimits,
            user: plan.ids.user.as_ref(),
            setgroups_allowed: plan.ids.setgroups_allowed,
            confinement,
            no_new_privs: plan.no_new_privs,
        })
        .map_err(|f| fail(f.errno, format!("{program}: {:?} {}", f.step, f.detail)))?;
        prepared.new_session = true;
        if plan.params.privileged {
            prepared.keep_caps = hatchery_sys::caps::CAP_SYS_ADMIN_MASK;
        }
        let started = launch::launch(&prepared)
            .map_err(|f| fail(f.errno, format!("{program}: {:?} {}", f.step, f.detail)))?;
        let daemon = Daemon {
            pid: started.pid,
            listener: started.listener,
        };
        wait_ready(spec, &daemon, &program, signals, explainer.as_deref_mut())?;
        out.push(daemon);
    }
    Ok(out)
}

/// Waits until the daemon's ready path exists, the daemon ends, its policy stops it, or the
/// deadline passes. The path is looked at after every signal and at growing intervals (1 to
/// 16 ms): a daemon announces readiness by creating a file, which nothing can wait on until its
/// parent directory exists.
fn wait_ready(
    spec: &DaemonSpec,
    daemon: &Daemon,
    program: &str,
    signals: &SignalFd,
    mut explainer: Option<&mut Explainer>,
) -> Result<(), SetupFailure> {
    let timeout = Duration::from_micros(spec.timeout_us.max(1));
    let deadline = Instant::now() + timeout;
    let ready = Path::new(OsStr::from_bytes(&spec.ready.0));
    let mut interval = Duration::from_millis(1);
    loop {
        if std::fs::symlink_metadata(ready).is_ok() {
            return Ok(());
        }
        match waitpid(Pid::from_raw(daemon.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                return Err(fail(
                    libc::ECHILD,
                    format!(
                        "{program} ended ({status:?}) before {} appeared",
                        ready.display()
                    ),
                ))
            }
            Err(e) => return Err(fail(e as i32, format!("waiting for {program}"))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                libc::ETIMEDOUT,
                format!(
                    "{} did not appear within {timeout:?} (daemon {program})",
                    ready.display()
                ),
            ));
        }
        let mut pfds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(l) = &daemon.listener {
            pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        let wait = interval.min(left);
        let ms = PollTimeout::try_from(wait.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut pfds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(fail(e as i32, "poll".into())),
        }
        let notified = pfds
            .get(1)
            .and_then(|p| p.revents())
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(pfds);
        if let (true, Some(e), Some(l)) = (notified, explainer.as_deref_mut(), &daemon.listener) {
            // An explaining shim answers what the policy allows or fails; only a violation
            // stops the daemon.
            match e.receive(l) {
                Some(Handled::Violation(_, id)) => {
                    kill_all(std::slice::from_ref(daemon));
                    crate::shim::confine::deny(l, id);
                }
                _ => continue,
            }
        }
        if notified {
            return Err(fail(
                libc::EPERM,
                format!("{program} was stopped by the seccomp policy before it was ready"),
            ));
        }
        // SIGCHLD is looked at above; other signals before the command runs are dropped.
        while let Ok(Some(_)) = signals.read_signal() {}
        interval = (interval * 2).min(Duration::from_millis(16));
    }
}

/// Kills every daemon and its session's process group (before the adopt wait: daemons are not
/// processes the command left behind).
pub(crate) fn kill_all(daemons: &[Daemon]) {
    for d in daemons {
        let _ = nix::sys::signal::kill(Pid::from_raw(-d.pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(Pid::from_raw(d.pid), nix::sys::signal::Signal::SIGKILL);
    }
}

//! Stage 1, "start": the shim's entry point. Says Hello, receives the
//! [`SetupPlan`](hatchery_protocol::SetupPlan), takes its ids, builds the root (`setup`), drops the bounding
//! set, prepares seccomp and landlock (`confine`), then hands over to the loop of its mode:
//! one-shot, exec zygote or call-mode supervisor.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use hatchery_protocol::{
    Channel, Features, Hello, Kind, Message, SetupFailure, SetupStep, ShimMode,
};
use hatchery_sys as sys;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::shim::{confine, oneshot, setup, zygote, Stopwatch, CONTROL_FD};

#[allow(unsafe_code)] // adopting the inherited control socket
fn control_channel() -> Channel {
    // SAFETY: the host's fork boundary places the control socket on CONTROL_FD before exec'ing
    // the shim, and nothing else in this process refers to that fd.
    let fd = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // Make sure the socket never leaks into a command.
    let _ = nix::fcntl::fcntl(
        CONTROL_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Channel::new(fd)
}

/// Signals PID 1 handles itself through a signalfd.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// The kernel's number of a scheduling policy.
fn sched_policy(p: hatchery_protocol::SchedPolicy) -> i32 {
    use hatchery_protocol::SchedPolicy as P;
    match p {
        P::Other => libc::SCHED_OTHER,
        P::Fifo => libc::SCHED_FIFO,
        P::RoundRobin => libc::SCHED_RR,
        P::Batch => libc::SCHED_BATCH,
        P::Idle => libc::SCHED_IDLE,
    }
}

fn setup_failed(chan: &mut Channel, failure: SetupFailure) -> i32 {
    let _ = chan.send(&Message::SetupFailed(failure), &[], None);
    125
}

/// Moves the shim (one thread, nothing started yet) into the container's cgroups by writing
/// `0` into each v1 `tasks` file the host sent as the plan's last `n` fds, and closes them: the
/// kernel moves a thread that moves itself without its global threadgroup lock, whose write
/// side would wait for an RCU grace period (see `SetupPlan::join_cgroups`).
fn join_cgroups(fds: &mut Vec<OwnedFd>, n: u8) -> Result<(), SetupFailure> {
    let fail = |errno: i32| SetupFailure {
        step: SetupStep::JoinCgroup,
        errno,
        detail: "tasks".into(),
    };
    let first = fds
        .len()
        .checked_sub(n as usize)
        .ok_or_else(|| fail(libc::EBADF))?;
    for fd in fds.drain(first..) {
        match nix::unistd::write(&fd, b"0") {
            Ok(1) => {}
            Ok(_) => return Err(fail(libc::EIO)),
            Err(e) => return Err(fail(e as i32)),
        }
    }
    Ok(())
}

/// The shim's entry point; returns the process exit code.
pub(crate) fn main() -> i32 {
    let mut watch = Stopwatch::new();
    let last_cap = sys::caps::last_cap();
    let mut chan = control_channel();
    let signals = handled_signals();
    if signals.thread_set_mask().is_err()
        || nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).is_err()
    {
        return 125;
    }
    let Ok(sigfd) = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        return 125;
    };
    if chan
        .send(
            &Message::Hello(Hello {
                shim_version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            &[],
            None,
        )
        .is_err()
    {
        return 125;
    }
    // Stage 1 waits for its plan as long as it takes; the host holds the deadline and kills us.
    let received = match chan.recv_expect(Kind::SetupPlan, None) {
        Ok(r) => r,
        Err(e) => {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::ReceivePlan,
                    errno: 0,
                    detail: e.to_string(),
                },
            )
        }
    };
    let Message::SetupPlan(plan) = received.message else {
        return 125;
    };
    let mut fds = received.fds;
    watch.lap("shim start + receive plan");
    if plan.join_cgroups > 0 {
        if let Err(f) = join_cgroups(&mut fds, plan.join_cgroups) {
            return setup_failed(&mut chan, f);
        }
        watch.lap("join cgroup");
    }
    // Rooted where the shim is now: its own cgroup when it has one.
    if plan.cgroup_namespace {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::CgroupNamespace,
                    errno: e as i32,
                    detail: "unshare(CLONE_NEWCGROUP)".into(),
                },
            );
        }
    }

    if let Err(f) = setup::set_ids(&plan.ids) {
        return setup_failed(&mut chan, f);
    }
    watch.lap("set ids");
    // Kept for requests whose stdio is null, whatever the container's /dev holds.
    let devnull: OwnedFd = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
    {
        Ok(f) => f.into(),
        Err(e) => {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::StdioSetup,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    detail: "/dev/null".into(),
                },
            )
        }
    };
    if plan.loopback {
        if let Err(e) = sys::net::loopback_up() {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::Loopback,
                    errno: e,
                    detail: "lo".into(),
                },
            );
        }
    }
    // The limit is the container's user namespace's own (whichever /proc shows it: the
    // host's, before the root is built); it holds for every process in it and beneath.
    if plan.params.disable_userns {
        if let Err(e) = std::fs::write("/proc/sys/user/max_user_namespaces", "0") {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::DisableUserns,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    detail: "/proc/sys/user/max_user_namespaces".into(),
                },
            );
        }
    }
    if let Err(f) = setup::build_root(&plan, &fds, &mut watch) {
        return setup_failed(&mut chan, f);
    }
    // Every process of the container inherits the shim's policy.
    if let Some((policy, priority)) = plan.params.scheduler {
        if let Err(e) = sys::process::set_scheduler(sched_policy(policy), priority as i32) {
            return setup_failed(
                &mut chan,
                SetupFailure {
                    step: SetupStep::Scheduler,
                    errno: e,
                    detail: format!("{policy:?} priority {priority}"),
                },
            );
        }
    }
    // Nothing started from here on can gain a capability at exec.
    // hakurei's Privileged keeps CAP_SYS_ADMIN (one-shot only: the host refuses it in pools).
    let keep = if plan.params.privileged {
        sys::caps::CAP_SYS_ADMIN_MASK
    } else {
        0
    };
    if let Err(e) = sys::caps::drop_bounding_set_except(last_cap, keep) {
        return setup_failed(
            &mut chan,
            SetupFailure {
                step: SetupStep::DropCapabilities,
                errno: e,
                detail: "bounding set".into(),
            },
        );
    }
    watch.lap("drop bounding set");
    // From here on, /proc/1/* of the shim is out of the guest's reach.
    if let Err(e) = sys::process::set_non_dumpable() {
        return setup_failed(
            &mut chan,
            SetupFailure {
                step: SetupStep::DropCapabilities,
                errno: e,
                detail: "PR_SET_DUMPABLE".into(),
            },
        );
    }
    let (confinement, landlock_abi, landlock) =
        match confine::prepare(plan.seccomp.as_ref(), plan.landlock.as_ref()) {
            Ok(c) => c,
            Err(f) => return setup_failed(&mut chan, f),
        };
    watch.lap("prepare seccomp + landlock");
    let features = Features {
        seccomp: plan.seccomp.is_some(),
        seccomp_notify: plan.seccomp.as_ref().is_some_and(|s| s.notify),
        landlock_abi,
        landlock,
        no_new_privs: plan.no_new_privs,
    };
    let fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    match &plan.mode {
        ShimMode::Helper { helper, .. } => {
            crate::call::supervisor::run(crate::call::supervisor::Start {
                chan: &mut chan,
                plan: &plan,
                helper,
                devnull,
                confinement,
                signals: &sigfd,
                features,
                watch,
            })
        }
        ShimMode::OneShot { .. } => oneshot::run(
            &mut chan,
            &plan,
            fds,
            &sigfd,
            (features, confinement, devnull),
            watch,
        ),
        ShimMode::Zygote { max_concurrent } => zygote::serve(zygote::Zygote {
            chan: &mut chan,
            plan: &plan,
            confinement,
            signals: &sigfd,
            features,
            devnull,
            max_concurrent: (*max_concurrent).max(1),
            watch,
        }),
    }
}

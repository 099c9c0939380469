//! One-shot mode: run one command in the finished container, act as its init (reap every
//! process, forward termination signals), report one [`Response`] and exit. When the shim, PID 1
//! of the container, exits, the kernel kills whatever the command left behind.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use hatchery_protocol::{
    Channel, Features, Message, Ready, Response, SetupFailure, SetupPlan, SetupStep, ShimMode,
    Usage,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::shim::confine::{self, Confinement};
use crate::shim::launch::{self, LaunchRequest};
use crate::shim::launch_plan::LaunchPlan;
use crate::shim::reap;
use crate::shim::verdict::{Seen, Watch};

/// Runs the command and returns the shim's exit code.
pub(crate) fn run(
    chan: &mut Channel,
    plan: &SetupPlan,
    mut fds: Vec<Option<OwnedFd>>,
    signals: &SignalFd,
    (features, confinement): (Features, Confinement),
    mut watch: crate::shim::Stopwatch,
) -> i32 {
    let ShimMode::OneShot {
        command,
        fds: assignments,
    } = &plan.mode
    else {
        return 125;
    };
    let mut moves = Vec::with_capacity(assignments.len());
    for a in assignments {
        match fds.get_mut(a.index as usize).and_then(Option::take) {
            Some(fd) => moves.push((fd, a.target)),
            None => {
                return report_failure(
                    chan,
                    SetupFailure {
                        step: SetupStep::MapFds,
                        errno: libc::EBADF,
                        detail: format!("fd index {} was not passed", a.index),
                    },
                )
            }
        }
    }
    let prepared: Result<LaunchPlan, SetupFailure> = launch::prepare(LaunchRequest {
        exec: command,
        fds: moves,
        rlimits: &plan.rlimits,
        user: plan.ids.user.as_ref(),
        setgroups_allowed: plan.ids.setgroups_allowed,
        confinement,
        no_new_privs: plan.no_new_privs,
    });
    let mut launch_plan = match prepared {
        Ok(p) => p,
        Err(f) => return report_failure(chan, f),
    };
    launch_plan.ignore_sigxfsz = true;
    watch.lap("prepare command");
    let received = Instant::now();
    let mut child = match launch::launch(&launch_plan) {
        Ok(c) => c,
        Err(f) => return report_failure(chan, f),
    };
    let spawn_us = received.elapsed().as_micros() as u64;
    watch.lap("fork + exec command");
    let cpu_limit = launch_plan.cpu_limit_secs;
    drop(launch_plan); // close our copies of the command's fds
    if chan
        .send(
            &Message::Ready(Ready {
                features,
                setup: watch.steps,
            }),
            &[],
            None,
        )
        .is_err()
    {
        return 1;
    }

    // A seccomp violation, once seen, decides the outcome (the host owns the deadline).
    let mut watch = Watch::new(child.started, None);
    loop {
        let (chan_ready, sig_ready, notified) = {
            let mut pfds = vec![
                PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(l) = &child.listener {
                pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            }
            let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            (
                ready(&pfds[0]),
                ready(&pfds[1]),
                pfds.get(2).map(|p| {
                    (
                        p.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)),
                        ready(p),
                    )
                }),
            )
        };
        match notified {
            Some((true, _)) => {
                if let Some((v, id)) = child.listener.as_ref().and_then(confine::receive_violation)
                {
                    // Every process of the container but us dies: the command's whole tree.
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
                    if let Some(l) = &child.listener {
                        confine::deny(l, id);
                    }
                    watch.kill(v);
                }
            }
            // Hang-up: no task uses the filter any more.
            Some((false, true)) => child.listener = None,
            _ => {}
        }
        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    continue;
                }
                // Forward termination and user signals to the command.
                if let Ok(s) = Signal::try_from(sig) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.pid), s);
                }
            }
            if let Some(done) = reap::reap_all(child.pid) {
                let outcome = watch.outcome(Seen {
                    exited: Some((done.status, done.usage)),
                    cpu_limit_secs: cpu_limit,
                    ..Seen::default()
                });
                let _ = chan.send(
                    &Message::Response(Box::new(Response {
                        id: 0,
                        outcome,
                        usage: Usage {
                            wall_us: child.started.elapsed().as_micros() as u64,
                            ..done.usage
                        },
                        spawn_us,
                        call: None,
                    })),
                    &[],
                    None,
                );
                return 0;
            }
        }
        if chan_ready {
            match chan.recv(None) {
                Ok(r) => match r.message {
                    Message::Cancel(_) | Message::Shutdown(_) => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(child.pid),
                            Signal::SIGKILL,
                        );
                    }
                    Message::Ping(p) => crate::shim::pong(chan, p.nonce, 1),
                    _ => return 1, // protocol violation by the host: give up
                },
                // The host is gone (or spoke garbage): die with it.
                Err(_) => return 1,
            }
        }
    }
}

fn report_failure(chan: &mut Channel, failure: SetupFailure) -> i32 {
    let _ = chan.send(&Message::SetupFailed(failure), &[], None);
    125
}

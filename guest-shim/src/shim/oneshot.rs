//! One-shot mode: start the plan's daemons, run one command in the finished container, act as
//! its init (reap every process, forward termination signals), report one [`Response`] and exit.
//! When the shim, PID 1 of the container, exits, the kernel kills whatever the command left
//! behind (after the plan's adopt wait, if any). A cancel kills the command, or, with the plan's
//! `forward_cancel`, sends it `SIGINT` (the host kills the container after its wait delay).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use hatchery_protocol::{
    Channel, Features, Message, Ready, Response, SetupFailure, SetupPlan, SetupStep, ShimMode,
    Usage,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::shim::confine::{self, Confinement};
use crate::shim::daemon;
use crate::shim::explain::{Explainer, Handled};
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
    (features, confinement, devnull): (Features, Confinement, OwnedFd),
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
    let stderr = moves.iter().find(|(_, t)| *t == 2).map(|(fd, _)| fd);
    let mut explainer = plan
        .seccomp
        .as_ref()
        .and_then(|s| Explainer::new(&s.explain, plan.landlock.as_ref(), features.landlock));
    let daemons = match daemon::start_all(
        plan,
        confinement,
        &devnull,
        stderr,
        signals,
        explainer.as_mut(),
    ) {
        Ok(d) => d,
        Err(f) => return report_failure(chan, f),
    };
    if !daemons.is_empty() {
        watch.lap("start daemons");
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
    launch_plan.new_session = !plan.params.retain_session;
    if plan.params.privileged {
        launch_plan.keep_caps = hatchery_sys::caps::CAP_SYS_ADMIN_MASK;
    }
    watch.lap("prepare command");
    let received = Instant::now();
    let child = match launch::launch_vfork(&launch_plan) {
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

    // The seccomp listeners: the command's, then the daemons'. A violation of any, once seen,
    // decides the outcome (the host owns the deadline).
    let mut listeners: Vec<Option<OwnedFd>> = std::iter::once(child.listener)
        .chain(
            daemons
                .iter()
                .map(|d| d.listener.as_ref().and_then(|l| l.try_clone().ok())),
        )
        .collect();
    let mut watch = Watch::new(child.started, None);
    loop {
        let (chan_ready, sig_ready, notified) = {
            let mut pfds = vec![
                PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            let watched: Vec<usize> = (0..listeners.len())
                .filter(|i| listeners[*i].is_some())
                .collect();
            for i in &watched {
                if let Some(l) = &listeners[*i] {
                    pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
            }
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            }
            let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            let notified: Vec<(usize, bool, bool)> = watched
                .iter()
                .zip(&pfds[2..])
                .map(|(i, p)| {
                    (
                        *i,
                        p.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)),
                        ready(p),
                    )
                })
                .collect();
            (ready(&pfds[0]), ready(&pfds[1]), notified)
        };
        for (i, pending, any) in notified {
            if pending {
                let received = listeners[i].as_ref().and_then(|l| match &mut explainer {
                    Some(e) => match e.receive(l)? {
                        Handled::Answered => None,
                        Handled::Violation(v, id) => Some((v, id)),
                    },
                    None => confine::receive_violation(l),
                });
                if let Some((v, id)) = received {
                    // Every process of the container but us dies: the command's whole tree
                    // and the daemons.
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
                    if let Some(l) = &listeners[i] {
                        confine::deny(l, id);
                    }
                    watch.kill(v);
                }
            } else if any {
                // Hang-up: no task uses the filter any more.
                listeners[i] = None;
            }
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
                if plan.params.adopt_wait_us > 0 {
                    daemon::kill_all(&daemons);
                    adopt_wait(signals, Duration::from_micros(plan.params.adopt_wait_us));
                }
                if let Some(e) = &explainer {
                    let report = e.report().bounded(hatchery_protocol::MAX_FRAME_LEN);
                    let _ = chan.send(&Message::Report(Box::new(report)), &[], None);
                }
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
                    // hakurei's ForwardCancel: the command may end by itself; the host kills
                    // the container after its wait delay otherwise.
                    Message::Cancel(_) if plan.params.forward_cancel => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(child.pid),
                            Signal::SIGINT,
                        );
                    }
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

/// hakurei's adopt wait: reaps the processes the command left behind as they exit, until none
/// is left or `delay` has passed (the rest die when the shim exits).
fn adopt_wait(signals: &SignalFd, delay: Duration) {
    let deadline = Instant::now() + delay;
    loop {
        reap::reap_each(|_, _| {});
        if !reap::children_left() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut pfds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut pfds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        while let Ok(Some(_)) = signals.read_signal() {}
    }
}

fn report_failure(chan: &mut Channel, failure: SetupFailure) -> i32 {
    let _ = chan.send(&Message::SetupFailed(failure), &[], None);
    125
}

//! One zygote as the host holds it: its process, its control socket, its container's cgroup
//! and, with `Isolation::Reuse`, its current worker's direct channel; how one is started; and a
//! [`Lease`] on it for one request.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hatchery_protocol::transport::{Receiver, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use super::slots::SlotId;
use super::{lock, lock_any, Inner};
use crate::container::Container;
use crate::error::Error;
use crate::plan::Plan;
use crate::spawn::{self, ShimProcess, StartSpec};

/// What every zygote of a pool is started from.
#[derive(Debug)]
pub(super) struct ProfilePlan {
    pub(super) container: Container,
    pub(super) plan: Plan,
}

/// One live zygote.
#[derive(Debug)]
pub(super) struct Zygote {
    pub(super) slot: SlotId,
    pub(super) pid: Pid,
    /// The control socket's sending half: callers send requests, cancellations and worker
    /// starts, the maintenance thread pings.
    pub(super) tx: Mutex<Sender>,
    /// Its receiving half: only the maintenance thread reads (pongs, hang-ups).
    pub(super) rx: Mutex<Receiver>,
    pub(super) dead: AtomicBool,
    /// Its container's cgroup (memory, pids, CPU limits), removed when the zygote goes.
    pub(super) cgroup: Option<crate::cgroup::Cgroup>,
    /// Reuse: the current worker's direct channel (set up by the first call; retired by
    /// dropping it).
    pub(super) direct: Mutex<Option<Direct>>,
    /// The network namespace the host made for it (see [`netns`](crate::netns)), given back
    /// once it is reaped ([`Zygote::reaped`]).
    netns: Mutex<Option<crate::netns::Lease>>,
}

/// A reuse worker's direct channel, as the host holds it: calls go out on `tx`, their answers
/// (and the supervisor's `WorkerExited`) come back on `rx`. Dropping it retires the worker: the
/// supervisor sees the hang-up and kills the worker's whole process tree.
#[derive(Debug)]
pub(super) struct Direct {
    pub(super) tx: Sender,
    pub(super) rx: Receiver,
    pub(super) tenant: Option<String>,
    /// Calls sent on it so far.
    pub(super) calls: u64,
}

impl Direct {
    /// Whether something (a `WorkerExited`, a hang-up) is waiting on it before any call was
    /// sent: then the worker is gone and the channel must not be used.
    pub(super) fn stale(&self) -> bool {
        let mut p = [PollFd::new(self.rx.as_fd(), PollFlags::POLLIN)];
        !matches!(poll(&mut p, PollTimeout::ZERO), Ok(0))
    }
}

impl Zygote {
    /// A request it is sent carries a socket: the network namespace the host made for it will
    /// not be kept (see [`netns`](crate::netns)).
    pub(super) fn exposed(&self) {
        if let Some(ns) = lock_any(&self.netns).as_mut() {
            ns.expose();
        }
    }

    /// Reaps the killed zygote (and with it every process of its container) and gives back the
    /// network namespace the host made for it.
    pub(super) fn reaped(&self) {
        let gone = spawn::reap(self.pid).is_some();
        if let (true, Some(ns)) = (gone, lock_any(&self.netns).take()) {
            crate::netns::give_back(ns);
        }
    }

    pub(super) fn kill(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Starts a zygote for `slot` and waits until it is ready. Blocks for the container's setup
    /// (milliseconds). Its process title is `hatchery:zygote:<slot>`. Returns what its
    /// container enforces.
    pub(super) fn start(
        p: &ProfilePlan,
        slot: SlotId,
    ) -> Result<(Zygote, hatchery_protocol::Features), Error> {
        let fds: Vec<BorrowedFd<'_>> = p.plan.blob.iter().map(|b| b.as_fd()).collect();
        // `ps` shows which slot a zygote serves.
        let title = format!("hatchery:zygote:{slot}");
        let netns = crate::netns::take_for(p.plan.clone_flags, &p.plan.setup);
        let mut shim: ShimProcess = spawn::start(StartSpec {
            clone_flags: p.plan.clone_flags,
            uid_maps: &p.container.uid_maps,
            gid_maps: &p.container.gid_maps,
            plan: p.plan.setup.clone(),
            plan_fds: fds,
            title: &title,
            cgroup: spawn::CgroupSpec {
                limits: &p.container.resources,
                ignore_failure: false,
            },
            existing_cgroup: None,
            netns,
        })?;
        let cgroup = shim.cgroup.take();
        let ready = shim.await_ready("starting a zygote")?;
        let (tx, rx) = shim.chan.split();
        let zygote = Zygote {
            slot,
            pid: shim.pid,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            dead: AtomicBool::new(false),
            cgroup,
            direct: Mutex::new(None),
            netns: Mutex::new(shim.netns.take()),
        };
        Ok((zygote, ready.features))
    }
}

/// A zygote leased for one request; released (and the zygote retired if the policy says so)
/// when dropped.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) inner: Arc<Inner>,
    pub(super) zygote: Arc<Zygote>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let retire = lock(&self.inner.state)
            .slots
            .release(self.zygote.slot, Instant::now());
        self.inner.cond.notify_all();
        if retire {
            self.inner.wake_maintenance();
        }
    }
}

//! The call-mode supervisor: `hatchery-shim` as PID 1 of a call-mode container. Trusted and
//! single-threaded; it never runs helper code.
//!
//! It starts the helper (locked down like any command, its seccomp listener handed to this
//! process), waits for the helper zygote's Ready, reports its own features to the host, keeps
//! one call process forked ahead of time (a *spare*), and then:
//!
//! - **Fresh**: sends each host `Request` to the spare; the call process answers with a
//!   `Response`. A deadline, a `Cancel`, the host closing the reply socket or a seccomp
//!   notification kills the call's process group; a call process that dies without answering
//!   is reported from the zygote's `ChildExited`. Exactly one `Response` goes to the host.
//!   Afterwards the call's group is killed, `/tmp`, `/dev/shm` and SysV IPC are emptied, and a
//!   new spare is forked, all before the next request is read.
//! - **Reuse**: a host `Worker` message (with a fresh direct channel) turns the spare into the
//!   worker, after killing and cleaning up the previous one. The host then talks to the worker
//!   directly. The supervisor keeps a copy of the worker's end: it sees the host retire the
//!   channel (hang-up) and kills the worker's group, and it answers `WorkerExited` there when
//!   the worker dies on its own or violates its policy.
//!
//! Host death: the control socket hangs up, the supervisor returns, and PID 1 exiting takes
//! every process of the container with it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hatchery_protocol::{
    Channel, ExecSpec, FdSlot, Features, Message, Outcome, Ready, Request, Response, SetupFailure,
    SetupPlan, SetupStep, Spawn, Usage, Work, WorkerExited,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;

use super::cleanup;
use crate::shim::confine::{self, Confinement};
use crate::shim::verdict::{self, Seen, Watch};
use crate::shim::{launch, reap, Stopwatch, CONTROL_FD};

/// How long the helper zygote may take to fork a call process or report an exit.
const ZYGOTE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a killed call's processes may take to exit.
const GROUP_DEADLINE: Duration = Duration::from_secs(1);

fn failure(step: SetupStep, errno: i32, detail: impl Into<String>) -> SetupFailure {
    SetupFailure {
        step,
        errno,
        detail: detail.into(),
    }
}

/// Kills a call's whole process group (and the process itself, should it not lead one yet).
fn kill_group(pid: i32) {
    for target in [-pid, pid] {
        // SAFETY: integer-only syscall; `pid` is a process of this container (a zygote child).
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(target, libc::SIGKILL)
        };
    }
}

/// A call process forked ahead of time, waiting for its call.
struct Spare {
    pid: i32,
    /// Readable once the process has exited (its fds and memory released), whoever reaps it.
    pidfd: Option<OwnedFd>,
    chan: Channel,
}

/// A Fresh call in flight.
struct Running {
    id: u64,
    pid: i32,
    pidfd: Option<OwnedFd>,
    chan: Channel,
    /// The host's reply socket for this request.
    reply: Channel,
    started: Instant,
    /// Its deadline, and why the supervisor killed it.
    watch: Watch,
    /// What the call process answered.
    answer: Option<Response>,
    /// Its channel hung up (it died or closed it).
    gone: bool,
    /// The zygote reaped it.
    exited: Option<(i32, Usage)>,
    /// An output cap applies (the call process's `RLIMIT_FSIZE` is set from it).
    output_capped: bool,
    /// Regular files and memfds the call writes into, with their caps.
    outputs: Vec<(OwnedFd, u64)>,
}

/// The Reuse worker.
struct Worker {
    pid: i32,
    /// A copy of the worker's end of its direct channel.
    direct: Channel,
    started: Instant,
    /// Why the supervisor killed it (the host owns its deadlines).
    watch: Watch,
}

struct Supervisor<'a> {
    host: &'a mut Channel,
    helper: Channel,
    helper_pid: i32,
    listener: Option<OwnedFd>,
    signals: &'a SignalFd,
    devnull: OwnedFd,
    spare: Option<Spare>,
    /// Our end of the channel of a call process the zygote is forking (`Spawn` sent, `Spawned`
    /// not yet received).
    pending: Option<Channel>,
    running: Option<Running>,
    worker: Option<Worker>,
    /// Exits reported by the zygote that no call claimed yet.
    exits: Vec<(i32, i32, Usage)>,
    accepting: bool,
    /// Unix sockets in the container while no call process exists (see
    /// [`cleanup::settle_unix`]).
    unix_clean: usize,
    /// The container's POSIX message queues, emptied with the rest.
    mqueues: Option<cleanup::Mqueues>,
    /// Call processes are kept apart by landlock scopes (each has a domain of its own), so the
    /// next call's process may be forked while a call runs: it cannot be signalled, traced or
    /// reached over an abstract socket by it, and it gets its call only after the cleanup.
    /// Without scopes it is forked only once the last call's processes are killed.
    fork_ahead: bool,
    /// The helper's `RLIMIT_CPU` (inherited by every call process), to tell its SIGKILL.
    cpu_limit_secs: Option<u64>,
}

/// Everything stage 1 hands the supervisor.
pub(crate) struct Start<'a> {
    /// Control socket to the host.
    pub(crate) chan: &'a mut Channel,
    /// The plan.
    pub(crate) plan: &'a SetupPlan,
    /// The helper to run.
    pub(crate) helper: &'a ExecSpec,
    /// `/dev/null`.
    pub(crate) devnull: OwnedFd,
    /// Seccomp and landlock for the helper.
    pub(crate) confinement: Confinement,
    /// SIGCHLD and termination signals.
    pub(crate) signals: &'a SignalFd,
    /// What the container enforces (reported to the host, never taken from the helper).
    pub(crate) features: Features,
    /// Setup timings.
    pub(crate) watch: Stopwatch,
}

fn setup_failed(chan: &mut Channel, f: SetupFailure) -> i32 {
    let _ = chan.send(&Message::SetupFailed(f), &[], None);
    125
}

/// Runs the supervisor; returns PID 1's exit code.
pub(crate) fn run(mut s: Start<'_>) -> i32 {
    let (ours, theirs) = match Channel::pair() {
        Ok(p) => p,
        Err(_) => {
            return setup_failed(s.chan, failure(SetupStep::Fork, libc::EMFILE, "socketpair"))
        }
    };
    let dup = |fd: &OwnedFd| {
        fd.try_clone().map_err(|e| {
            failure(
                SetupStep::MapFds,
                e.raw_os_error().unwrap_or(libc::EMFILE),
                "dup",
            )
        })
    };
    let launched = (|| {
        let fds = vec![
            (dup(&s.devnull)?, 0),
            (dup(&s.devnull)?, 1),
            (dup(&s.devnull)?, 2),
            (theirs.into_fd(), CONTROL_FD),
        ];
        let plan = launch::prepare(launch::LaunchRequest {
            exec: s.helper,
            fds,
            rlimits: &s.plan.rlimits,
            user: s.plan.ids.user.as_ref(),
            setgroups_allowed: s.plan.ids.setgroups_allowed,
            confinement: s.confinement,
            no_new_privs: s.plan.no_new_privs,
        })?;
        Ok((launch::launch(&plan)?, plan.cpu_limit_secs))
    })();
    let (launched, cpu_limit_secs) = match launched {
        Ok(l) => l,
        Err(f) => return setup_failed(s.chan, f),
    };
    s.watch.lap("start helper");
    let mut sup = Supervisor {
        host: s.chan,
        helper: ours,
        helper_pid: launched.pid,
        listener: launched.listener,
        signals: s.signals,
        devnull: s.devnull,
        spare: None,
        pending: None,
        running: None,
        worker: None,
        exits: Vec::new(),
        accepting: true,
        unix_clean: 0,
        mqueues: cleanup::Mqueues::open(),
        cpu_limit_secs,
        fork_ahead: confine::scopes(hatchery_sys::landlock::abi().unwrap_or(0)) != 0,
    };
    // The helper preloads, then its zygote reports Ready (or a failure).
    match sup.helper.recv(None) {
        Ok(r) => match r.message {
            Message::Ready(_) => {}
            Message::SetupFailed(f) => return setup_failed(sup.host, f),
            _ => {
                return setup_failed(
                    sup.host,
                    failure(
                        SetupStep::Exec,
                        libc::EPROTO,
                        "the helper broke the protocol",
                    ),
                )
            }
        },
        Err(_) => {
            let status = reap::wait_for(sup.helper_pid).map_or(0, |r| r.status);
            return setup_failed(
                sup.host,
                failure(
                    SetupStep::Exec,
                    libc::ECHILD,
                    format!(
                        "the helper exited before serving (wait status {status:#x}); does it call Exports::serve?"
                    ),
                ),
            );
        }
    }
    s.watch.lap("helper preload");
    sup.unix_clean = cleanup::unix_sockets().unwrap_or(0);
    if let Err(f) = sup.spawn_spare() {
        return setup_failed(sup.host, f);
    }
    let ready = Message::Ready(Ready {
        features: s.features,
        setup: std::mem::take(&mut s.watch.steps),
    });
    if sup.host.send(&ready, &[], None).is_err() {
        return 1;
    }
    sup.serve()
}

impl Supervisor<'_> {
    /// Has the zygote fork the next call process; waits for its pid.
    /// Asks the zygote to fork the next call process, without waiting for it: the fork runs
    /// while the host prepares its next request. [`Supervisor::spawned`] takes the answer.
    fn request_spare(&mut self) -> Result<(), SetupFailure> {
        if self.spare.is_some() || self.pending.is_some() {
            return Ok(());
        }
        let (ours, theirs) =
            Channel::pair().map_err(|_| failure(SetupStep::Fork, libc::EMFILE, "socketpair"))?;
        self.helper
            .send(&Message::Spawn(Spawn {}), &[theirs.as_fd()], None)
            .map_err(|_| failure(SetupStep::Fork, libc::EPIPE, "the helper zygote is gone"))?;
        self.pending = Some(ours);
        Ok(())
    }

    /// The zygote's answer to the pending `Spawn`.
    fn spawned(&mut self, pid: i32) -> Result<(), ()> {
        let chan = self.pending.take().ok_or(())?;
        let pidfd = cleanup::pidfd_open(pid);
        self.spare = Some(Spare { pid, pidfd, chan });
        Ok(())
    }

    /// Makes sure a spare call process exists: requests one if needed and waits for it.
    fn spawn_spare(&mut self) -> Result<(), SetupFailure> {
        self.request_spare()?;
        let deadline = Instant::now() + ZYGOTE_DEADLINE;
        while self.spare.is_none() {
            let gone = || failure(SetupStep::Fork, libc::EPIPE, "the helper zygote is gone");
            let r = self.helper.recv(Some(deadline)).map_err(|_| gone())?;
            match r.message {
                Message::Spawned(sp) => self.spawned(sp.pid).map_err(|()| gone())?,
                Message::ChildExited(e) => self.child_exited(e.pid, e.status, e.usage),
                Message::SetupFailed(f) => return Err(f),
                _ => {
                    return Err(failure(
                        SetupStep::Fork,
                        libc::EPROTO,
                        "helper zygote protocol",
                    ))
                }
            }
        }
        Ok(())
    }

    fn child_exited(&mut self, pid: i32, status: i32, usage: Usage) {
        if let Some(r) = self.running.as_mut().filter(|r| r.pid == pid) {
            r.exited = Some((status, usage));
        } else if self.worker.as_ref().is_some_and(|w| w.pid == pid) {
            self.worker_died(status, usage);
        } else if self.spare.as_ref().is_some_and(|s| s.pid == pid) {
            self.spare = None;
        } else {
            self.exits.push((pid, status, usage));
            if self.exits.len() > 64 {
                self.exits.remove(0);
            }
        }
    }

    /// The worker died on its own (or was killed for a violation): tell the host on its
    /// channel, kill what is left of it and clean up.
    fn worker_died(&mut self, status: i32, usage: Usage) {
        let Some(mut w) = self.worker.take() else {
            return;
        };
        kill_group(w.pid);
        let outcome = w.watch.outcome(Seen {
            exited: Some((status, usage)),
            cpu_limit_secs: self.cpu_limit_secs,
            ..Seen::default()
        });
        let msg = Message::WorkerExited(Box::new(WorkerExited {
            outcome,
            usage: Usage {
                wall_us: w.started.elapsed().as_micros() as u64,
                ..usage
            },
        }));
        let _ = w
            .direct
            .send(&msg, &[], Some(Instant::now() + Duration::from_millis(100)));
        let pid = w.pid;
        drop(w);
        if !self.wipe(pid) {
            // Something of the worker outlived it: this container serves no more calls.
            self.accepting = false;
        }
    }

    /// After a call's processes are killed (its process group `group`) and its channels
    /// closed: waits until every one of them has exited and whatever they left in flight is
    /// collected (or reports that it was not), then empties the scratch space. False: something
    /// of the call outlived it, and the container must go.
    fn wipe(&mut self, group: i32) -> bool {
        // A process killed inside a system call finishes that call first: a file it creates
        // then, after the wipe, would be there for the next call. Its leader's death says
        // nothing about the rest of its group.
        let gone = cleanup::await_group(group, Instant::now() + GROUP_DEADLINE);
        // The channel of a spare (or one being forked) is a socket pair of its own.
        let extra = if self.spare.is_some() || self.pending.is_some() {
            2
        } else {
            0
        };
        let settled = gone && cleanup::settle_unix(self.unix_clean + extra);
        cleanup::wipe(self.mqueues.as_ref()) && settled
    }

    /// Ends the current worker (the host retired it, or a new one replaces it): kills its
    /// group, waits for the zygote to reap it, cleans up.
    fn retire_worker(&mut self) -> Result<(), ()> {
        let Some(w) = self.worker.take() else {
            return Ok(());
        };
        kill_group(w.pid);
        self.wait_exit(w.pid)?;
        let pid = w.pid;
        drop(w);
        if !self.wipe(pid) {
            return Err(());
        }
        Ok(())
    }

    /// Waits until the zygote reports `pid` reaped.
    fn wait_exit(&mut self, pid: i32) -> Result<(i32, Usage), ()> {
        if let Some(pos) = self.exits.iter().position(|e| e.0 == pid) {
            let (_, status, usage) = self.exits.remove(pos);
            return Ok((status, usage));
        }
        let deadline = Instant::now() + ZYGOTE_DEADLINE;
        loop {
            let r = self.helper.recv(Some(deadline)).map_err(|_| ())?;
            match r.message {
                Message::ChildExited(e) if e.pid == pid => return Ok((e.status, e.usage)),
                Message::ChildExited(e) => self.child_exited(e.pid, e.status, e.usage),
                Message::Spawned(sp) => self.spawned(sp.pid)?,
                _ => return Err(()),
            }
        }
    }

    fn respond(reply: &mut Channel, resp: Response) {
        let _ = reply.send(
            &Message::Response(Box::new(resp)),
            &[],
            Some(Instant::now() + Duration::from_secs(1)),
        );
    }

    fn refuse(&self, req: &Request, fds: &mut [Option<OwnedFd>], f: SetupFailure) {
        if let Some(reply) = fds.get_mut(req.reply as usize).and_then(Option::take) {
            Self::respond(
                &mut Channel::new(reply),
                Response {
                    id: req.id,
                    outcome: Outcome::SetupFailed(f),
                    usage: Usage::default(),
                    spawn_us: 0,
                    call: None,
                },
            );
        }
    }

    /// Starts a Fresh call on the spare.
    fn start(&mut self, req: Request, fds: Vec<OwnedFd>) {
        let received = Instant::now();
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        if !self.accepting || self.running.is_some() || self.worker.is_some() {
            let f = failure(
                SetupStep::Fork,
                libc::EAGAIN,
                "the helper is busy or shutting down",
            );
            return self.refuse(&req, &mut fds, f);
        }
        if !matches!(req.work, Work::Call { .. }) {
            let f = failure(
                SetupStep::Exec,
                libc::ENOSYS,
                "exec requests need an exec-mode pool",
            );
            return self.refuse(&req, &mut fds, f);
        }
        if let Err(f) = self.spawn_spare() {
            return self.refuse(&req, &mut fds, f);
        }
        let Some(reply) = fds.get_mut(req.reply as usize).and_then(Option::take) else {
            return;
        };
        let Some(mut spare) = self.spare.take() else {
            return;
        };
        // Output caps are checked here too, from the files' sizes: whatever the call does to
        // its limits, reaching a cap is never a truncated success.
        let mut outputs = Vec::new();
        if let Some(cap) = req.limits.output_bytes {
            for slot in &req.stdio[1..] {
                if let FdSlot::Passed(i) = slot {
                    if let Some(fd) = fds.get(*i as usize).and_then(Option::as_ref) {
                        if is_regular(fd.as_fd()) {
                            if let Ok(d) = fd.try_clone() {
                                outputs.push((d, cap));
                            }
                        }
                    }
                }
            }
        }
        // The call process must not get the host's reply socket: /dev/null in its place.
        let mut send: Vec<OwnedFd> = Vec::with_capacity(fds.len());
        for fd in fds {
            match fd {
                Some(fd) => send.push(fd),
                None => match self.devnull.try_clone() {
                    Ok(d) => send.push(d),
                    Err(_) => return,
                },
            }
        }
        let borrowed: Vec<BorrowedFd<'_>> = send.iter().map(|f| f.as_fd()).collect();
        let id = req.id;
        let watch = Watch::new(received, req.limits.wall_time_us);
        let output_capped = req.limits.output_bytes.is_some();
        let sent = spare
            .chan
            .send(&Message::Request(Box::new(req)), &borrowed, None);
        drop(borrowed);
        drop(send);
        let mut r = Running {
            id,
            pid: spare.pid,
            pidfd: spare.pidfd,
            chan: spare.chan,
            reply: Channel::new(reply),
            started: received,
            watch,
            output_capped,
            answer: None,
            gone: false,
            exited: None,
            outputs,
        };
        if sent.is_err() {
            r.gone = true;
        }
        self.running = Some(r);
        if self.fork_ahead {
            // A failure here shows again (and is answered) when the next call needs the spare.
            let _ = self.request_spare();
        }
    }

    /// Kills the running call for `why` (first reason wins).
    fn kill_running(&mut self, why: Outcome) {
        if let Some(r) = self.running.as_mut() {
            if r.watch.kill(why) {
                kill_group(r.pid);
            }
        }
    }

    /// Answers the host once the call is decided, then cleans up for the next one.
    fn finish_if_done(&mut self) -> Result<(), ()> {
        let done = self.running.as_ref().is_some_and(|r| {
            r.answer.is_some() || r.exited.is_some() || (r.watch.is_killed() && r.gone)
        });
        if !done {
            return Ok(());
        }
        let Some(mut r) = self.running.take() else {
            return Ok(());
        };
        kill_group(r.pid);
        // A call that answered is answered now; its exit (the process is SIGKILLed) is waited
        // for afterwards, before the next call. Otherwise the exit status is the outcome.
        let answered = !r.watch.is_killed() && r.answer.is_some();
        let mut exited = r.exited;
        if exited.is_none() && !answered {
            exited = self.wait_exit(r.pid).ok();
        }
        let wall_us = r.started.elapsed().as_micros() as u64;
        let exceeded = r
            .outputs
            .iter()
            .any(|(fd, cap)| file_size(fd.as_fd()) > *cap);
        let answer = r.answer.take().filter(|_| answered);
        let outcome = r.watch.outcome(Seen {
            answered: answer.as_ref().map(|a| &a.outcome),
            exited,
            cpu_limit_secs: self.cpu_limit_secs,
            output_capped: r.output_capped,
            output_exceeded: exceeded,
        });
        let mut resp = answer.unwrap_or(Response {
            id: r.id,
            outcome: outcome.clone(),
            usage: exited.map(|e| e.1).unwrap_or_default(),
            spawn_us: 0,
            call: None,
        });
        if resp.outcome != outcome {
            // Not the call's own answer any more (its output went past the cap).
            resp.outcome = outcome;
            resp.call = None;
        }
        resp.id = r.id;
        resp.usage.wall_us = wall_us;
        Self::respond(&mut r.reply, resp);
        let pid = r.pid;
        let pidfd = r.pidfd.take();
        drop(r);
        if self.accepting {
            // The next call's process (unless it was forked ahead): forked from the clean
            // zygote while this call is cleaned up; it gets its call only once the cleanup is
            // done.
            self.request_spare().map_err(|_| ())?;
        }
        if exited.is_none() && answered {
            // Only its death matters now (its status is the answer's): the pidfd says so as
            // soon as it has exited, without waiting for the zygote to reap and report it.
            let dead = pidfd.as_ref().is_some_and(|fd| {
                cleanup::wait_readable(fd.as_fd(), Instant::now() + ZYGOTE_DEADLINE)
            });
            exited = if dead {
                Some((0, Usage::default()))
            } else {
                self.wait_exit(pid).ok()
            };
        }
        if exited.is_none() {
            // The zygote did not report the call process: it is wedged.
            return Err(());
        }
        if !self.wipe(pid) {
            return Err(());
        }
        Ok(())
    }

    /// The host's Worker message: retire the old worker, turn the spare into the new one.
    fn start_worker(
        &mut self,
        w: hatchery_protocol::Worker,
        direct: Option<OwnedFd>,
    ) -> Result<(), ()> {
        self.retire_worker()?;
        let Some(direct) = direct else {
            return Ok(());
        };
        if !self.accepting || self.running.is_some() {
            return Ok(());
        }
        if self.spawn_spare().is_err() {
            return Err(());
        }
        let Some(mut spare) = self.spare.take() else {
            return Err(());
        };
        let Ok(copy) = direct.try_clone() else {
            return Err(());
        };
        if spare
            .chan
            .send(&Message::Worker(w), &[direct.as_fd()], None)
            .is_err()
        {
            kill_group(spare.pid);
            return Ok(());
        }
        self.worker = Some(Worker {
            pid: spare.pid,
            direct: Channel::new(copy),
            started: Instant::now(),
            watch: Watch::new(Instant::now(), None),
        });
        Ok(())
    }

    fn serve(&mut self) -> i32 {
        loop {
            if !self.accepting && self.running.is_none() {
                if let Some(w) = self.worker.take() {
                    kill_group(w.pid);
                }
                return 0;
            }
            let timeout = self
                .running
                .as_ref()
                .and_then(|r| r.watch.pending_deadline())
                .map(|d| {
                    let ms = d
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                })
                .unwrap_or(PollTimeout::NONE);
            let ev = {
                let mut pfds = vec![
                    PollFd::new(self.host.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.helper.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                let mut idx = [usize::MAX; 5];
                if let Some(l) = &self.listener {
                    idx[0] = pfds.len();
                    pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
                if let Some(r) = &self.running {
                    if !r.gone && r.answer.is_none() {
                        idx[1] = pfds.len();
                        pfds.push(PollFd::new(r.chan.as_fd(), PollFlags::POLLIN));
                    }
                    idx[2] = pfds.len();
                    pfds.push(PollFd::new(r.reply.as_fd(), PollFlags::POLLIN));
                }
                if let Some(w) = &self.worker {
                    // Only hang-ups: the calls on it are the worker's to read.
                    idx[3] = pfds.len();
                    pfds.push(PollFd::new(w.direct.as_fd(), PollFlags::empty()));
                }
                match poll(&mut pfds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return 1,
                }
                let get = |i: usize| {
                    pfds.get(i)
                        .and_then(|p| p.revents())
                        .unwrap_or(PollFlags::empty())
                };
                [
                    get(0),
                    get(1),
                    get(2),
                    get(idx[0]),
                    get(idx[1]),
                    get(idx[2]),
                    get(idx[3]),
                ]
            };
            let [host_ev, helper_ev, sig_ev, listener_ev, call_ev, reply_ev, worker_ev] = ev;
            if listener_ev.contains(PollFlags::POLLIN) {
                if let Some((v, nid)) = self.listener.as_ref().and_then(confine::receive_violation)
                {
                    if self.running.is_some() {
                        self.kill_running(v);
                    } else if let Some(w) = self.worker.as_mut() {
                        if w.watch.kill(v) {
                            kill_group(w.pid);
                        }
                    } else {
                        // The helper zygote itself broke its policy: the container is done.
                        return 1;
                    }
                    if let Some(l) = &self.listener {
                        confine::deny(l, nid);
                    }
                }
            } else if !listener_ev.is_empty() {
                self.listener = None;
            }
            if !call_ev.is_empty() {
                if let Some(r) = self.running.as_mut() {
                    match r.chan.recv(Some(Instant::now())) {
                        Ok(m) => match m.message {
                            Message::Response(resp) => r.answer = Some(bounded(*resp)),
                            _ => {
                                // A broken call process: it ends here.
                                kill_group(r.pid);
                                r.watch.kill(verdict::CANCELLED);
                                r.gone = true;
                            }
                        },
                        Err(hatchery_protocol::ProtocolError::Timeout { .. }) => {}
                        Err(_) => r.gone = true,
                    }
                }
            }
            if !reply_ev.is_empty() {
                // The host gave up on the call.
                self.kill_running(verdict::CANCELLED);
            }
            if let Some(r) = self.running.as_mut() {
                if r.watch.expire(Instant::now()) {
                    kill_group(r.pid);
                }
            }
            if !worker_ev.is_empty() && self.retire_worker().is_err() {
                return 1;
            }
            if !helper_ev.is_empty() {
                match self.helper.recv(Some(Instant::now())) {
                    Ok(m) => match m.message {
                        Message::ChildExited(e) => self.child_exited(e.pid, e.status, e.usage),
                        Message::Spawned(sp) => {
                            if self.spawned(sp.pid).is_err() {
                                return 1;
                            }
                        }
                        _ => return 1,
                    },
                    Err(hatchery_protocol::ProtocolError::Timeout { .. }) => {}
                    // The helper zygote is gone: so is the container.
                    Err(_) => return 1,
                }
            }
            if !sig_ev.is_empty() {
                let mut terminate = false;
                while let Ok(Some(info)) = self.signals.read_signal() {
                    if info.ssi_signo as i32 != libc::SIGCHLD {
                        terminate = true;
                    }
                }
                let mut helper_died = false;
                let helper_pid = self.helper_pid;
                // Orphans of calls are reparented here: reap them.
                reap::reap_each(|pid, _| helper_died |= pid == helper_pid);
                if helper_died || terminate {
                    return 1;
                }
            }
            if self.finish_if_done().is_err() {
                return 1;
            }
            if host_ev.is_empty() {
                continue;
            }
            let received = match self
                .host
                .recv(Some(Instant::now() + Duration::from_secs(1)))
            {
                Ok(r) => r,
                Err(hatchery_protocol::ProtocolError::Timeout { .. }) => continue,
                // The host is gone or broken: PID 1 exiting takes everything with it.
                Err(_) => return 1,
            };
            match received.message {
                Message::Request(req) => self.start(*req, received.fds),
                Message::Worker(w) => {
                    if self
                        .start_worker(w, received.fds.into_iter().next())
                        .is_err()
                    {
                        return 1;
                    }
                }
                Message::Cancel(c) => {
                    if self.running.as_ref().is_some_and(|r| r.id == c.id) {
                        self.kill_running(verdict::CANCELLED);
                    }
                }
                Message::Ping(p) => crate::shim::pong(
                    self.host,
                    p.nonce,
                    (self.running.is_some() || self.worker.is_some()) as u32,
                ),
                Message::Shutdown(s) => {
                    self.accepting = false;
                    if s.kill {
                        self.kill_running(verdict::CANCELLED);
                    }
                }
                _ => return 1,
            }
        }
    }
}

/// A call process's answer as the supervisor relays it: bounded as the protocol says, whatever
/// the (possibly compromised) call process sent, so that it always fits the host's reply
/// socket and the trusted supervisor never breaks the protocol on a call's behalf. Messages are
/// cut to `MAX_CALL_MESSAGE`; a violation's syscall name is the host's to fill in.
fn bounded(mut resp: Response) -> Response {
    use super::process::cut;
    use hatchery_protocol::CallStatus;
    resp.call = resp.call.map(|c| match c {
        CallStatus::Failed(m) => CallStatus::Failed(cut(m)),
        CallStatus::Panicked(m) => CallStatus::Panicked(cut(m)),
        CallStatus::Decode(m) => CallStatus::Decode(cut(m)),
        other => other,
    });
    resp.outcome = match resp.outcome {
        Outcome::Violation { nr, args, .. } => Outcome::Violation {
            syscall: String::new(),
            nr,
            args,
        },
        Outcome::SetupFailed(mut f) => {
            f.detail = cut(f.detail);
            Outcome::SetupFailed(f)
        }
        other => other,
    };
    resp
}

fn stat(fd: BorrowedFd<'_>) -> Option<libc::stat> {
    // SAFETY: an all-zero stat is a valid out-buffer.
    #[allow(unsafe_code)]
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable.
    #[allow(unsafe_code)]
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    (r == 0).then_some(st)
}

fn is_regular(fd: BorrowedFd<'_>) -> bool {
    stat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

fn file_size(fd: BorrowedFd<'_>) -> u64 {
    stat(fd).map_or(0, |st| st.st_size.max(0) as u64)
}

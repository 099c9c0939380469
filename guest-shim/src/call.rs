//! Call mode: a helper binary that exports functions, called per request like a WebAssembly
//! instance.
//!
//! ```no_run
//! fn thumbnail(call: &mut hatchery_guest::Call) -> Result<Vec<u8>, String> {
//!     Ok(call.arg().to_vec())
//! }
//! fn main() {
//!     // Preload here: tables, models, fonts. This already runs inside the finished sandbox.
//!     hatchery_guest::Exports::new().export("thumbnail", thumbnail).serve()
//! }
//! ```
//!
//! The trusted `hatchery-shim` builds the container, drops every privilege (capabilities,
//! no_new_privs, the profile's ids and limits) and only then execs the helper in its place, with
//! the control socket on fd 3: no helper code runs outside the finished sandbox. [`Exports::serve`]
//! reports Ready and serves [`Work::Call`] requests:
//!
//! ```text
//!  helper (PID 1 of the container, warm)
//!   ├─ Fresh: fork per call ─▶ child runs the export, writes the result to fd 1, exits
//!   └─ Reuse: one worker (forked once) runs calls in a loop, recycled after N calls, any fault
//!      or a timeout; the host sends it calls directly after the first
//! ```
//!
//! ## Wire contract (for helpers in other languages)
//!
//! A C helper can follow the same contract: read [`Message`] frames on fd 3 (see
//! `hatchery-protocol`), send `Ready` first, and for each `Request` whose work is
//! `Call { export, arg }` answer exactly one `Response` on the request's reply socket (the fd at
//! index `reply` among the fds that came with it). The result bytes go to the request's stdout
//! (a capped memfd), an error message to its stderr, and the `Response` outcome is
//! `Exited(code)` with [`status`] codes: 0 success, 100 the export returned an error, 101 it
//! panicked, 102 the argument did not decode, 103 the result exceeded the output limit. An
//! unknown export is `SetupFailed { step: FindProgram, errno: ENOENT, detail: "unknown export
//! <name>" }`. Closing a reply socket means the host gave up: kill that call.
//!
//! With `Reuse` isolation (`HATCHERY_REUSE=N` in the helper's environment) the first call also
//! carries a direct channel ([`Request::direct`]): the host sends every further call on it, in
//! the same format (reply socket at index `reply`), without waking the helper's PID 1. A helper
//! keeps one worker reading it (replaced whenever it goes, so queued calls are always served);
//! `Exports::serve` has the worker announce each direct call to PID 1 (the request and a handle
//! on its reply socket) before running it, so PID 1 still enforces its wall time, kills it when
//! the host gives up, and reports a crash on that reply socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use hatchery_protocol::{
    Channel, FdSlot, Features, Message, Outcome, Pong, Ready, Request, Response, SetupFailure,
    SetupStep, Usage, Work,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::shim::reap;

/// Exit codes of a call (the `Exited(code)` outcome).
pub mod status {
    /// The export returned its result.
    pub const OK: i32 = 0;
    /// The export returned an error (its message is on stderr).
    pub const FAILED: i32 = 100;
    /// The export panicked (the panic message is on stderr).
    pub const PANICKED: i32 = 101;
    /// The argument did not decode (typed exports).
    pub const DECODE: i32 = 102;
    /// The result did not fit the output limit.
    pub const OUTPUT_TOO_LARGE: i32 = 103;
}

/// Fds are lifted above this number while a call's fd table is arranged.
const LIFT_ABOVE: RawFd = 256;

/// One call, as an export sees it.
#[derive(Debug)]
pub struct Call {
    arg: Vec<u8>,
    named: Vec<(String, RawFd)>,
}

impl Call {
    /// The argument bytes.
    pub fn arg(&self) -> &[u8] {
        &self.arg
    }

    /// A named fd passed with the request.
    pub fn fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, fd)| {
                #[allow(unsafe_code)]
                // SAFETY: the fd was passed with this call and stays open while the call runs.
                unsafe {
                    BorrowedFd::borrow_raw(*fd)
                }
            })
    }

    /// The request's stdin (for inputs too large to pass inline: the host sends them as a
    /// sealed memfd), as a new handle of its own.
    pub fn stdin(&self) -> std::io::Result<std::fs::File> {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
    }
}

type ExportFn = Box<dyn Fn(&mut Call) -> Result<Vec<u8>, CallFailure>>;

/// Why an export did not return a result.
#[derive(Debug)]
pub enum CallFailure {
    /// The export's own error.
    Failed(String),
    /// The argument did not decode.
    Decode(String),
}

/// The functions a helper exports, by name.
#[derive(Default)]
pub struct Exports {
    exports: BTreeMap<String, ExportFn>,
}

impl Exports {
    /// No exports yet.
    pub fn new() -> Exports {
        Exports::default()
    }

    /// Exports `f` under `name`: it gets the call (argument bytes, named fds) and returns the
    /// result bytes or an error message.
    pub fn export<F, E>(mut self, name: &str, f: F) -> Exports
    where
        F: Fn(&mut Call) -> Result<Vec<u8>, E> + 'static,
        E: std::fmt::Display,
    {
        self.exports.insert(
            name.to_string(),
            Box::new(move |c| f(c).map_err(|e| CallFailure::Failed(e.to_string()))),
        );
        self
    }

    /// Exports a typed function: the argument and the result are MessagePack (rmp-serde), as
    /// `Pool::call_typed` sends and expects them.
    pub fn export_typed<Req, Resp, F, E>(mut self, name: &str, f: F) -> Exports
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req) -> Result<Resp, E> + 'static,
        E: std::fmt::Display,
    {
        self.exports.insert(
            name.to_string(),
            Box::new(move |c| {
                let req: Req = rmp_serde::from_slice(c.arg())
                    .map_err(|e| CallFailure::Decode(e.to_string()))?;
                let resp = f(req).map_err(|e| CallFailure::Failed(e.to_string()))?;
                rmp_serde::to_vec(&resp).map_err(|e| CallFailure::Failed(e.to_string()))
            }),
        );
        self
    }

    /// Reports Ready and serves calls until the host shuts the pool down. Call it from `main`
    /// of a helper started by a call-mode pool, after preloading. The process must be
    /// single-threaded here (calls are forked); a helper that started threads gets a setup
    /// failure.
    pub fn serve(self) -> ! {
        crate::sys::exit_now(serve(self))
    }
}

fn failure(step: SetupStep, errno: i32, detail: impl Into<String>) -> SetupFailure {
    SetupFailure {
        step,
        errno,
        detail: detail.into(),
    }
}

fn respond(reply: &mut Channel, id: u64, outcome: Outcome, usage: Usage, spawn_us: u64) {
    let _ = reply.send(
        &Message::Response(Box::new(Response {
            id,
            outcome,
            usage,
            spawn_us,
        })),
        &[],
        Some(Instant::now() + Duration::from_secs(1)),
    );
}

/// One call's fds, taken from those that came with the request.
struct CallFds {
    reply: Channel,
    stdio: [Option<OwnedFd>; 3],
    named: Vec<(String, i32, OwnedFd)>,
    /// The host's direct channel for further calls ([`Request::direct`]).
    direct: Option<OwnedFd>,
}

fn take_fds(req: &Request, fds: Vec<OwnedFd>) -> Result<CallFds, (Option<Channel>, SetupFailure)> {
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let reply = fds
        .get_mut(req.reply as usize)
        .and_then(Option::take)
        .map(Channel::new)
        .ok_or((
            None,
            failure(SetupStep::MapFds, libc::EBADF, "no reply socket"),
        ))?;
    let mut take = |i: u8| fds.get_mut(i as usize).and_then(Option::take);
    let mut stdio: [Option<OwnedFd>; 3] = [None, None, None];
    for (slot, out) in req.stdio.iter().zip(stdio.iter_mut()) {
        if let FdSlot::Passed(i) = slot {
            *out = take(*i);
        }
    }
    let mut named = Vec::new();
    for n in &req.named {
        if let Some(fd) = take(n.index) {
            named.push((n.name.clone().unwrap_or_default(), n.target, fd));
        }
    }
    let direct = req.direct.and_then(&mut take);
    Ok(CallFds {
        reply,
        stdio,
        named,
        direct,
    })
}

/// Runs one export in the current process with the call's fds on 0/1/2 and their targets, and
/// returns the status code. The result goes to fd 1, an error message to fd 2.
fn run_export(f: &ExportFn, arg: Vec<u8>, fds: &CallFds) -> i32 {
    // Lift every source above the targets first, so placing one cannot clobber another (or the
    // process's own sockets, which live above the targets' range as well).
    let lift = |fd: RawFd| -> Option<OwnedFd> {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(LIFT_ABOVE))
            .ok()
            .map(|raw| {
                #[allow(unsafe_code)]
                // SAFETY: F_DUPFD_CLOEXEC just created `raw`; nothing else owns it.
                unsafe {
                    OwnedFd::from_raw_fd(raw)
                }
            })
    };
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok()
        .and_then(|d| lift(d.as_raw_fd()));
    let stdio: Vec<Option<OwnedFd>> = fds
        .stdio
        .iter()
        .map(|fd| lift(fd.as_ref().map_or(-1, |f| f.as_raw_fd())))
        .collect();
    let named_src: Vec<(String, i32, Option<OwnedFd>)> = fds
        .named
        .iter()
        .map(|(n, t, fd)| (n.clone(), *t, lift(fd.as_raw_fd())))
        .collect();
    for (i, fd) in stdio.iter().enumerate() {
        let src = fd.as_ref().or(devnull.as_ref()).map(|f| f.as_raw_fd());
        if let Some(src) = src {
            let _ = nix::unistd::dup2(src, i as RawFd);
        }
    }
    let mut named = Vec::new();
    for (name, target, fd) in &named_src {
        if let Some(fd) = fd {
            if nix::unistd::dup2(fd.as_raw_fd(), *target).is_ok() {
                named.push((name.clone(), *target));
            }
        }
    }
    let mut call = Call { arg, named };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut call)));
    #[allow(unsafe_code)]
    // SAFETY: fd 1 is the call's stdout, dup'd above and owned by the fd table; ManuallyDrop keeps
    // it open after this function.
    let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    #[allow(unsafe_code)]
    // SAFETY: as above, for fd 2 (stderr).
    let mut err = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    match result {
        Ok(Ok(bytes)) => match out.write_all(&bytes) {
            Ok(()) => status::OK,
            Err(_) => status::OUTPUT_TOO_LARGE,
        },
        Ok(Err(CallFailure::Failed(msg))) => {
            let _ = err.write_all(msg.as_bytes());
            status::FAILED
        }
        Ok(Err(CallFailure::Decode(msg))) => {
            let _ = err.write_all(msg.as_bytes());
            status::DECODE
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".into());
            let _ = err.write_all(msg.as_bytes());
            status::PANICKED
        }
    }
}

fn usage_of(ru: &nix::sys::resource::Usage) -> (u64, u64, u64) {
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    (
        us(ru.user_time()),
        us(ru.system_time()),
        ru.max_rss().max(0) as u64,
    )
}

/// A call being served.
struct Running {
    id: u64,
    pid: libc::pid_t,
    reply: Channel,
    deadline: Option<Instant>,
    started: Instant,
    /// Served by the reuse worker (which answers itself) rather than a forked child.
    by_worker: bool,
    killed: Option<Outcome>,
}

/// The reuse worker: forked once, serves calls from its channel.
struct Worker {
    pid: libc::pid_t,
    chan: Channel,
}

fn kill(pid: libc::pid_t) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

/// Removes everything a call left in the container's writable scratch directory.
fn wipe_tmp() {
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let p = e.path();
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

/// The reuse worker's loop: calls forwarded by the helper's PID 1 on `chan`, and calls the host
/// sends directly on `direct`. A direct call is announced to PID 1 first (the request and its
/// reply socket, so PID 1 can enforce its deadline, notice the host giving up and report a
/// crash); every call's completion is reported to PID 1 before the host hears of it.
fn worker_loop(exports: &Exports, mut chan: Channel, direct: Option<Channel>, max: u64) -> i32 {
    let mut direct = direct;
    let mut served = 0u64;
    loop {
        let from_direct = match &direct {
            None => false,
            Some(d) => {
                let mut pfds = [
                    PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                    PollFd::new(d.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut pfds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return 1,
                }
                let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
                !ready(&pfds[0]) && ready(&pfds[1])
            }
        };
        let source = match (from_direct, direct.as_mut()) {
            (true, Some(d)) => d,
            _ => &mut chan,
        };
        let received = match source.recv(None) {
            Ok(r) => r,
            Err(_) if from_direct => {
                // The host's end is gone: only forwarded calls remain.
                direct = None;
                continue;
            }
            Err(_) => return 0,
        };
        let Message::Request(req) = received.message else {
            return 1;
        };
        let Work::Call { export, arg } = &req.work else {
            return 1;
        };
        let Ok(mut fds) = take_fds(&req, received.fds) else {
            return 1;
        };
        if from_direct {
            // Announce it (with a handle on its reply socket) before running it.
            let announce = Message::Request(Box::new(Request {
                reply: 0,
                stdio: [FdSlot::Null; 3],
                named: Vec::new(),
                direct: None,
                ..(*req).clone()
            }));
            if chan.send(&announce, &[fds.reply.as_fd()], None).is_err() {
                return 1;
            }
        }
        let Some(f) = exports.exports.get(export) else {
            let _ = chan.send(
                &Message::Pong(Pong {
                    nonce: req.id,
                    running: 0,
                }),
                &[],
                None,
            );
            respond(
                &mut fds.reply,
                req.id,
                Outcome::SetupFailed(unknown_export(export)),
                Usage::default(),
                0,
            );
            continue;
        };
        let before = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| usage_of(&u))
            .unwrap_or_default();
        let t = Instant::now();
        let code = run_export(f, arg.0.clone(), &fds);
        let after = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| usage_of(&u))
            .unwrap_or_default();
        // Release the call's fds before answering: /dev/null on 0-2 (keeping those numbers
        // taken), the named targets closed.
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for i in 0..3 {
                let _ = nix::unistd::dup2(null.as_raw_fd(), i);
            }
        }
        for (_, target, _) in &fds.named {
            let _ = nix::unistd::close(*target);
        }
        let usage = Usage {
            wall_us: t.elapsed().as_micros() as u64,
            user_us: after.0.saturating_sub(before.0),
            sys_us: after.1.saturating_sub(before.1),
            max_rss_kib: after.2,
        };
        served += 1;
        // Recycled after `max` calls or any failed call; the zygote learns it with this call's
        // completion (`running: 1` = this worker is retiring), before the next call arrives.
        let retiring = code != status::OK || served >= max;
        // The zygote hears of the completion before the host does, so the host closing its
        // reply socket afterwards is never mistaken for a cancellation.
        let _ = chan.send(
            &Message::Pong(Pong {
                nonce: req.id,
                running: retiring as u32,
            }),
            &[],
            None,
        );
        respond(&mut fds.reply, req.id, Outcome::Exited(code), usage, 0);
        if retiring {
            return 0;
        }
    }
}

fn unknown_export(export: &str) -> SetupFailure {
    failure(
        SetupStep::FindProgram,
        libc::ENOENT,
        format!("unknown export {export}"),
    )
}

/// Forks the reuse worker (with its own channel to PID 1, and the host's direct channel).
fn spawn_worker(
    exports: &Exports,
    control_fd: RawFd,
    direct: Option<&OwnedFd>,
    max: u64,
) -> Result<Worker, SetupFailure> {
    let (ours, theirs) =
        Channel::pair().map_err(|_| failure(SetupStep::Fork, libc::EMFILE, "socketpair"))?;
    let direct_dup = match direct {
        Some(d) => Some(
            d.try_clone()
                .map_err(|_| failure(SetupStep::Fork, libc::EMFILE, "dup"))?,
        ),
        None => None,
    };
    #[allow(unsafe_code)]
    // SAFETY: single-threaded helper (checked before Ready).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(ours);
        let _ = nix::unistd::close(control_fd);
        let code = worker_loop(exports, theirs, direct_dup.map(Channel::new), max.max(1));
        #[allow(unsafe_code)]
        // SAFETY: leave without running the helper's destructors.
        unsafe {
            libc::_exit(code)
        };
    }
    if pid < 0 {
        return Err(failure(SetupStep::Fork, libc::EAGAIN, "fork worker"));
    }
    Ok(Worker { pid, chan: ours })
}

fn serve(exports: Exports) -> i32 {
    let fd = crate::shim::CONTROL_FD;
    #[allow(unsafe_code)]
    // SAFETY: the shim exec'd this helper with the control socket on fd 3, owned by nobody else.
    let mut chan = Channel::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    if crate::shim::thread_count() != 1 {
        let _ = chan.send(
            &Message::SetupFailed(failure(
                SetupStep::Fork,
                libc::EINVAL,
                "the helper started threads before serve(); calls are forked, so it must be single-threaded",
            )),
            &[],
            None,
        );
        return 125;
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    if set.thread_block().is_err() {
        return 125;
    }
    let Ok(signals) = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        return 125;
    };
    // Writes past the output limit fail with EFBIG instead of killing the call.
    #[allow(unsafe_code)]
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn);
    }
    let reuse: Option<u64> = std::env::var("HATCHERY_REUSE")
        .ok()
        .and_then(|v| v.parse().ok());
    if chan
        .send(
            &Message::Ready(Ready {
                features: Features {
                    no_new_privs: true,
                    ..Features::default()
                },
                setup: Vec::new(),
            }),
            &[],
            None,
        )
        .is_err()
    {
        return 1;
    }
    let mut running: Option<Running> = None;
    let mut worker: Option<Worker> = None;
    // Reuse: the host's direct channel; the worker takes calls from it (and a replacement is
    // started whenever the worker goes, so calls queued there are always served).
    let mut direct: Option<OwnedFd> = None;
    let mut accepting = true;
    loop {
        if !accepting && running.is_none() {
            if let Some(w) = worker.take() {
                kill(w.pid);
            }
            return 0;
        }
        if let (None, Some(d), Some(max), true) = (&worker, &direct, reuse, accepting) {
            // The worker went (retired, failed, killed): its replacement serves what the host
            // queues on the direct channel.
            match spawn_worker(&exports, fd, Some(d), max) {
                Ok(w) => worker = Some(w),
                // Without a worker nobody reads the direct channel: drop it, so the host's next
                // direct send fails instead of waiting.
                Err(_) => direct = None,
            }
        }
        let timeout = running
            .as_ref()
            .and_then(|r| r.deadline.filter(|_| r.killed.is_none()))
            .map(|d| {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            })
            .unwrap_or(PollTimeout::NONE);
        let (chan_ev, sig_ev, reply_ev, worker_ev) = {
            let mut pfds = vec![
                PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(r) = &running {
                pfds.push(PollFd::new(r.reply.as_fd(), PollFlags::POLLIN));
            }
            if let Some(w) = &worker {
                pfds.push(PollFd::new(w.chan.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut pfds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return 1,
            }
            let ev = |i: usize| {
                pfds.get(i)
                    .and_then(|p| p.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let reply_idx = 2;
            let worker_idx = if running.is_some() { 3 } else { 2 };
            (
                ev(0),
                ev(1),
                running.is_some() && ev(reply_idx),
                worker.is_some() && ev(worker_idx),
            )
        };
        if worker_ev {
            // The worker finished a call (it answered the host itself) or went away.
            let done = worker.as_mut().map(|w| w.chan.recv(Some(Instant::now())));
            match done {
                Some(Ok(r)) => match r.message {
                    // A direct call starts: track it like a forwarded one.
                    Message::Request(req) => {
                        let reply = r.fds.into_iter().next();
                        if let (None, Some(reply), Some(w)) = (&running, reply, &worker) {
                            let now = Instant::now();
                            running = Some(Running {
                                id: req.id,
                                pid: w.pid,
                                reply: Channel::new(reply),
                                deadline: req
                                    .limits
                                    .wall_time_us
                                    .map(|us| now + Duration::from_micros(us)),
                                started: now,
                                by_worker: true,
                                killed: None,
                            });
                        }
                    }
                    message => {
                        if running.as_ref().is_some_and(|r| r.by_worker) {
                            running = None;
                        }
                        if matches!(message, Message::Pong(Pong { running: 1, .. })) {
                            // The worker retires: the next call gets a new one (this one is
                            // reaped as an unknown child).
                            worker = None;
                        }
                    }
                },
                Some(Err(hatchery_protocol::ProtocolError::Timeout { .. })) | None => {}
                Some(Err(_)) => {
                    // Worker channel closed: reaped below.
                }
            }
        }
        // The host gave up on the call, or its time is up: kill whoever runs it.
        if let Some(r) = running.as_mut() {
            let expired = r.deadline.is_some_and(|d| Instant::now() >= d);
            if r.killed.is_none() && (reply_ev || expired) {
                kill(r.pid);
                r.killed = Some(if expired {
                    Outcome::TimedOut
                } else {
                    Outcome::Signaled {
                        signal: libc::SIGKILL,
                        core_dumped: false,
                    }
                });
            }
        }
        if sig_ev {
            while let Ok(Some(_)) = signals.read_signal() {}
            reap::reap_each(|pid, root| {
                if worker.as_ref().is_some_and(|w| w.pid == pid) {
                    worker = None;
                }
                if running.as_ref().is_some_and(|r| r.pid == pid) {
                    let Some(mut r) = running.take() else { return };
                    let outcome = match r.killed.take() {
                        Some(o) => o,
                        None if r.by_worker => Outcome::Signaled {
                            signal: if libc::WIFSIGNALED(root.status) {
                                libc::WTERMSIG(root.status)
                            } else {
                                libc::SIGKILL
                            },
                            core_dumped: false,
                        },
                        None => reap::outcome(&root, None),
                    };
                    let usage = Usage {
                        wall_us: r.started.elapsed().as_micros() as u64,
                        ..root.usage
                    };
                    respond(&mut r.reply, r.id, outcome, usage, 0);
                }
            });
            if running.is_none() && reuse.is_none() {
                // Fresh: nothing of the call survives it.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
                while let Ok(_) | Err(nix::errno::Errno::EINTR) =
                    nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::__WALL))
                {
                }
                wipe_tmp();
            }
        }
        if chan_ev {
            let received = match chan.recv(Some(Instant::now() + Duration::from_secs(1))) {
                Ok(r) => r,
                Err(hatchery_protocol::ProtocolError::Timeout { .. }) => continue,
                Err(_) => {
                    if let Some(w) = &worker {
                        kill(w.pid);
                    }
                    return 1;
                }
            };
            match received.message {
                Message::Request(req) => {
                    let received_at = Instant::now();
                    let id = req.id;
                    let mut fds = match take_fds(&req, received.fds) {
                        Ok(f) => f,
                        Err((Some(mut reply), f)) => {
                            respond(&mut reply, id, Outcome::SetupFailed(f), Usage::default(), 0);
                            continue;
                        }
                        Err((None, _)) => continue,
                    };
                    if let Some(d) = fds.direct.take() {
                        // A new direct channel: the worker (if any) belonged to the old one.
                        if let Some(w) = worker.take() {
                            kill(w.pid);
                        }
                        direct = Some(d);
                    }
                    let fail_now = |fds: &mut CallFds, f: SetupFailure| {
                        respond(
                            &mut fds.reply,
                            id,
                            Outcome::SetupFailed(f),
                            Usage::default(),
                            0,
                        );
                    };
                    // One call at a time: a call still running here belongs to a request the
                    // host gave up on (it closes the reply socket before it hands the zygote the
                    // next request). Kill it if that was not noticed yet, then finish it now (it is
                    // SIGKILLed, so this is quick).
                    if let Some(r) = running.as_mut().filter(|r| r.killed.is_none()) {
                        let mut p = [PollFd::new(r.reply.as_fd(), PollFlags::POLLIN)];
                        if matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0) {
                            kill(r.pid);
                            r.killed = Some(Outcome::Signaled {
                                signal: libc::SIGKILL,
                                core_dumped: false,
                            });
                        }
                    }
                    if running.as_ref().is_some_and(|r| r.killed.is_some()) {
                        if let Some(mut r) = running.take() {
                            let root = reap::wait_for(r.pid);
                            if worker.as_ref().is_some_and(|w| w.pid == r.pid) {
                                worker = None;
                            }
                            let usage = Usage {
                                wall_us: r.started.elapsed().as_micros() as u64,
                                ..root.map(|x| x.usage).unwrap_or_default()
                            };
                            let outcome = r.killed.take().unwrap_or(Outcome::TimedOut);
                            respond(&mut r.reply, r.id, outcome, usage, 0);
                        }
                    }
                    if !accepting || running.is_some() {
                        fail_now(
                            &mut fds,
                            failure(
                                SetupStep::Fork,
                                libc::EAGAIN,
                                "the helper is busy or shutting down",
                            ),
                        );
                        continue;
                    }
                    let Work::Call { export, arg } = &req.work else {
                        fail_now(
                            &mut fds,
                            failure(
                                SetupStep::Exec,
                                libc::ENOSYS,
                                "exec requests need an exec-mode pool",
                            ),
                        );
                        continue;
                    };
                    let Some(f) = exports.exports.get(export) else {
                        fail_now(&mut fds, unknown_export(export));
                        continue;
                    };
                    let deadline = req
                        .limits
                        .wall_time_us
                        .map(|us| received_at + Duration::from_micros(us));
                    match reuse {
                        None => {
                            #[allow(unsafe_code)]
                            // SAFETY: the helper is single-threaded (checked before Ready), so the
                            // child may allocate; it runs the export and exits.
                            let pid = unsafe { libc::fork() };
                            if pid == 0 {
                                // The call gets no handle on the control socket.
                                let _ = nix::unistd::close(fd);
                                let code = run_export(f, arg.0.clone(), &fds);
                                #[allow(unsafe_code)]
                                // SAFETY: leave without running the helper's destructors or atexit.
                                unsafe {
                                    libc::_exit(code)
                                };
                            }
                            if pid < 0 {
                                fail_now(
                                    &mut fds,
                                    failure(
                                        SetupStep::Fork,
                                        nix::errno::Errno::last() as i32,
                                        "fork",
                                    ),
                                );
                                continue;
                            }
                            running = Some(Running {
                                id,
                                pid,
                                reply: fds.reply,
                                deadline,
                                started: received_at,
                                by_worker: false,
                                killed: None,
                            });
                        }
                        Some(max) => {
                            if worker.is_none() {
                                match spawn_worker(&exports, fd, direct.as_ref(), max) {
                                    Ok(w) => worker = Some(w),
                                    Err(f) => {
                                        fail_now(&mut fds, f);
                                        continue;
                                    }
                                }
                            }
                            let Some(w) = worker.as_mut() else { continue };
                            // Hand the call, with all its fds, to the worker; keep a dup of the
                            // reply socket to notice the host giving up.
                            let reply_dup = match fds.reply.as_fd().try_clone_to_owned() {
                                Ok(d) => d,
                                Err(_) => continue,
                            };
                            let mut send_fds: Vec<BorrowedFd<'_>> = vec![fds.reply.as_fd()];
                            let mut stdio = [FdSlot::Null; 3];
                            for (i, fd) in fds.stdio.iter().enumerate() {
                                if let Some(fd) = fd {
                                    send_fds.push(fd.as_fd());
                                    stdio[i] = FdSlot::Passed((send_fds.len() - 1) as u8);
                                }
                            }
                            let mut named = Vec::new();
                            for (name, target, fd) in &fds.named {
                                send_fds.push(fd.as_fd());
                                named.push(hatchery_protocol::FdAssignment {
                                    index: (send_fds.len() - 1) as u8,
                                    target: *target,
                                    name: Some(name.clone()),
                                });
                            }
                            let fwd = Request {
                                id,
                                reply: 0,
                                work: req.work.clone(),
                                limits: req.limits.clone(),
                                stdio,
                                named,
                                direct: None,
                            };
                            if w.chan
                                .send(&Message::Request(Box::new(fwd)), &send_fds, None)
                                .is_err()
                            {
                                kill(w.pid);
                                fail_now(
                                    &mut fds,
                                    failure(SetupStep::Fork, libc::EPIPE, "worker gone"),
                                );
                                continue;
                            }
                            running = Some(Running {
                                id,
                                pid: w.pid,
                                reply: Channel::new(reply_dup),
                                deadline,
                                started: received_at,
                                by_worker: true,
                                killed: None,
                            });
                        }
                    }
                }
                Message::Ping(p) => crate::shim::pong(&mut chan, p.nonce, running.is_some() as u32),
                Message::Cancel(c) => {
                    if let Some(r) = running
                        .as_mut()
                        .filter(|r| r.id == c.id && r.killed.is_none())
                    {
                        kill(r.pid);
                        r.killed = Some(Outcome::Signaled {
                            signal: libc::SIGKILL,
                            core_dumped: false,
                        });
                    }
                }
                Message::Shutdown(s) => {
                    accepting = false;
                    if s.kill {
                        if let Some(r) = running.as_mut() {
                            kill(r.pid);
                        }
                    }
                }
                // Anything else from the host is a protocol violation: stop.
                _ => return 1,
            }
        }
    }
}

//! A call process, after its lockdown ([`super::fork`]): serves one Fresh call from the
//! supervisor, or becomes the Reuse worker and serves calls from its direct channel.
//!
//! Its fd table while a call runs is exactly the call's stdio on 0–2, the named fds on their
//! targets, and its channel, moved above every target (so no target can clobber it).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use hatchery_protocol::{
    CallStatus, Channel, FdSlot, Message, Outcome, Request, Response, SetupFailure, SetupStep,
    Usage, Work, MAX_CALL_MESSAGE,
};

use hatchery_sys::process::Resource;

use super::exports::{Call, CallFailure, ExportFn, Exports};

/// Highest fd number a named fd may be placed on (exclusive).
pub(super) const MAX_TARGET: RawFd = 1024;

/// Serves what the supervisor sends on `chan`; returns the exit code.
pub(super) fn run(exports: &Exports, mut chan: Channel) -> i32 {
    let Ok(received) = chan.recv(None) else {
        return 0;
    };
    match received.message {
        Message::Request(req) => {
            let resp = serve_one(exports, &req, received.fds, &mut chan);
            send(&mut chan, resp);
            0
        }
        Message::Worker(w) => {
            let Some(direct) = received.fds.into_iter().next() else {
                return 1;
            };
            drop(chan);
            worker(exports, Channel::new(direct), w.output_bytes)
        }
        _ => 1,
    }
}

fn send(chan: &mut Channel, resp: Response) {
    let _ = chan.send(&Message::Response(Box::new(resp)), &[], None);
}

fn setup_failed(id: u64, step: SetupStep, errno: i32, detail: impl Into<String>) -> Response {
    Response {
        id,
        outcome: Outcome::SetupFailed(SetupFailure {
            step,
            errno,
            detail: detail.into(),
        }),
        usage: Usage::default(),
        spawn_us: 0,
        call: None,
    }
}

/// The Reuse worker: serves every call the host sends on `direct` until the host closes it.
fn worker(exports: &Exports, mut direct: Channel, output_bytes: Option<u64>) -> i32 {
    if let Some(cap) = output_bytes {
        let lim = cap.saturating_add(1);
        let _ = hatchery_sys::process::set_rlimit(Resource::Fsize, lim, lim);
    }
    loop {
        let Ok(received) = direct.recv(None) else {
            return 0;
        };
        let Message::Request(req) = received.message else {
            return 1;
        };
        let resp = serve_one(exports, &req, received.fds, &mut direct);
        // Release the call's fds before answering: /dev/null on 0–2, named targets closed.
        reset_fds(&req);
        send(&mut direct, resp);
    }
}

fn reset_fds(req: &Request) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for i in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), i);
        }
    }
    for n in &req.named {
        let _ = nix::unistd::close(n.target);
    }
}

/// `s` cut to [`MAX_CALL_MESSAGE`] bytes at a char boundary.
pub(super) fn cut(mut s: String) -> String {
    if s.len() > MAX_CALL_MESSAGE {
        let mut end = MAX_CALL_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Places the call's fds, runs the export, writes its result to fd 1.
fn serve_one(exports: &Exports, req: &Request, fds: Vec<OwnedFd>, chan: &mut Channel) -> Response {
    let started = Instant::now();
    let Work::Call { export, arg } = &req.work else {
        return setup_failed(
            req.id,
            SetupStep::Exec,
            libc::ENOSYS,
            "exec requests need an exec-mode pool",
        );
    };
    let named = match place_fds(req, fds, chan) {
        Ok(n) => n,
        Err((errno, detail)) => return setup_failed(req.id, SetupStep::MapFds, errno, detail),
    };
    if let Some(cap) = req.limits.output_bytes {
        // One byte of room past the cap: reaching it is reported, never a truncated success.
        let lim = cap.saturating_add(1);
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
            .map_or(lim, |(_, h)| h.min(lim));
        let _ = hatchery_sys::process::set_rlimit(Resource::Fsize, hard, hard);
    }
    let before = usage_now();
    let status = match exports.exports.get(export) {
        None => CallStatus::UnknownExport,
        Some(f) => run_export(f, arg.0.clone(), named),
    };
    let after = usage_now();
    Response {
        id: req.id,
        outcome: Outcome::Exited(0),
        usage: Usage {
            wall_us: started.elapsed().as_micros() as u64,
            user_us: after.0.saturating_sub(before.0),
            sys_us: after.1.saturating_sub(before.1),
            max_rss_kib: after.2,
        },
        spawn_us: 0,
        call: Some(status),
    }
}

/// Puts stdio on 0–2 and each named fd on its target, with `chan` moved above every target.
/// Returns the named fds as the export sees them.
fn place_fds(
    req: &Request,
    fds: Vec<OwnedFd>,
    chan: &mut Channel,
) -> Result<Vec<(String, RawFd)>, (i32, String)> {
    let mut targets: Vec<RawFd> = req.named.iter().map(|n| n.target).collect();
    targets.sort_unstable();
    for w in targets.windows(2) {
        if w[0] == w[1] {
            return Err((libc::EINVAL, format!("two named fds on fd {}", w[0])));
        }
    }
    if let Some(t) = targets.iter().find(|&&t| !(3..MAX_TARGET).contains(&t)) {
        return Err((
            libc::EINVAL,
            format!("named fd target {t} (must be 3..{MAX_TARGET})"),
        ));
    }
    let top = targets.last().map_or(3, |t| t + 1);
    let lift = |fd: RawFd| -> Result<OwnedFd, (i32, String)> {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(top))
            .map(|raw| {
                #[allow(unsafe_code)]
                // SAFETY: F_DUPFD_CLOEXEC just created `raw`; nothing else owns it.
                unsafe {
                    OwnedFd::from_raw_fd(raw)
                }
            })
            .map_err(|e| (e as i32, "dup".to_string()))
    };
    // The channel first, so nothing placed below can land on it.
    let lifted_chan = lift(chan.as_fd().as_raw_fd())?;
    let old = std::mem::replace(chan, Channel::new(lifted_chan));
    drop(old);
    let take = |i: u8| -> Result<OwnedFd, (i32, String)> {
        fds.get(i as usize)
            .ok_or((libc::EBADF, format!("fd index {i} not passed")))
            .and_then(|f| lift(f.as_raw_fd()))
    };
    let mut stdio = Vec::with_capacity(3);
    for slot in &req.stdio {
        stdio.push(match slot {
            FdSlot::Passed(i) => Some(take(*i)?),
            FdSlot::Null => None,
        });
    }
    let mut named_src = Vec::with_capacity(req.named.len());
    for n in &req.named {
        named_src.push((n.name.clone().unwrap_or_default(), n.target, take(n.index)?));
    }
    drop(fds);
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| {
            (
                e.raw_os_error().unwrap_or(libc::EIO),
                "/dev/null".to_string(),
            )
        })?;
    for (i, fd) in stdio.iter().enumerate() {
        let src = fd.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
        nix::unistd::dup2(src, i as RawFd).map_err(|e| (e as i32, "dup2 stdio".to_string()))?;
    }
    let mut named = Vec::with_capacity(named_src.len());
    for (name, target, fd) in &named_src {
        nix::unistd::dup2(fd.as_raw_fd(), *target)
            .map_err(|e| (e as i32, format!("dup2 onto {target}")))?;
        named.push((name.clone(), *target));
    }
    Ok(named)
}

fn usage_now() -> (u64, u64, u64) {
    let Ok(ru) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) else {
        return (0, 0, 0);
    };
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    (
        us(ru.user_time()),
        us(ru.system_time()),
        ru.max_rss().max(0) as u64,
    )
}

/// Runs one export with the call's fds in place; the result goes to fd 1.
fn run_export(f: &ExportFn, arg: Vec<u8>, named: Vec<(String, RawFd)>) -> CallStatus {
    let mut call = Call { arg, named };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut call)));
    match result {
        Ok(Ok(bytes)) => {
            #[allow(unsafe_code)]
            // SAFETY: fd 1 is the call's stdout, placed above and owned by the fd table;
            // ManuallyDrop keeps it open after this function.
            let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
            match out.write_all(&bytes) {
                Ok(()) => CallStatus::Ok,
                Err(_) => CallStatus::OutputTooLarge,
            }
        }
        Ok(Err(CallFailure::Failed(msg))) => CallStatus::Failed(cut(msg)),
        Ok(Err(CallFailure::Decode(msg))) => CallStatus::Decode(cut(msg)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".into());
            CallStatus::Panicked(cut(msg))
        }
    }
}

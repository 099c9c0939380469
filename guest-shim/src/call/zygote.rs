//! The helper zygote: the warm helper after `serve()`. Single-threaded by design (every call
//! process is a fork of it). It never receives call data: it forks a call process for each
//! `Spawn` from the supervisor (before the call exists) and reports every child it reaps.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use hatchery_protocol::{
    Channel, ChildExited, Features, Message, Ready, SetupFailure, SetupStep, Spawned,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::exports::Exports;
use super::fork::{self, CallLockdown};

fn failed(chan: &mut Channel, errno: i32, detail: &str) -> i32 {
    let _ = chan.send(
        &Message::SetupFailed(SetupFailure {
            step: SetupStep::Fork,
            errno,
            detail: detail.into(),
        }),
        &[],
        None,
    );
    125
}

/// The zygote loop; returns the exit code.
pub(super) fn serve(exports: &Exports) -> i32 {
    let fd = crate::shim::CONTROL_FD;
    #[allow(unsafe_code)]
    // SAFETY: the supervisor started this helper with its channel on fd 3, owned by nobody else.
    let mut chan = Channel::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    if crate::shim::thread_count() != 1 {
        return failed(
            &mut chan,
            libc::EINVAL,
            "the helper started threads before serve(); calls are forked, so it must be single-threaded",
        );
    }
    if let Some(m) = shared_mapping() {
        return failed(
            &mut chan,
            libc::EINVAL,
            &format!(
                "the helper maps shared writable memory before serve() ({m}); calls are forked, so every call would share it with the next"
            ),
        );
    }
    // Nobody (a call process included) may read or write this process's memory.
    if hatchery_sys::process::set_non_dumpable().is_err() {
        return failed(&mut chan, libc::EPERM, "PR_SET_DUMPABLE");
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
    // Writes past an output limit fail with EFBIG instead of killing the call.
    #[allow(unsafe_code)]
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn);
    }
    let lockdown = CallLockdown::new();
    let ready = Message::Ready(Ready {
        features: Features::default(),
        setup: Vec::new(),
    });
    if chan.send(&ready, &[], None).is_err() {
        return 1;
    }
    loop {
        let (chan_ev, sig_ev) = {
            let mut pfds = [
                PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return 1,
            }
            let ev = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            (ev(&pfds[0]), ev(&pfds[1]))
        };
        if sig_ev {
            while let Ok(Some(_)) = signals.read_signal() {}
            let mut exits = Vec::new();
            crate::shim::reap::reap_each(|pid, r| exits.push((pid, r)));
            for (pid, r) in exits {
                let msg = Message::ChildExited(ChildExited {
                    pid,
                    status: r.status,
                    usage: r.usage,
                });
                if chan.send(&msg, &[], None).is_err() {
                    return 1;
                }
            }
        }
        if chan_ev {
            let Ok(received) = chan.recv(None) else {
                // The supervisor is gone: so is the container.
                return 0;
            };
            let Message::Spawn(_) = received.message else {
                return 1;
            };
            let Some(call_chan) = received.fds.into_iter().next() else {
                return 1;
            };
            match fork::spawn(call_chan, &lockdown) {
                Ok(Some(pid)) => {
                    if chan
                        .send(&Message::Spawned(Spawned { pid }), &[], None)
                        .is_err()
                    {
                        return 1;
                    }
                }
                Ok(None) => {
                    // The call process: its channel is on fd 3, everything else is closed.
                    // Both fds were closed by the lockdown (fd 3 now is the call's channel).
                    std::mem::forget(signals);
                    std::mem::forget(chan);
                    #[allow(unsafe_code)]
                    // SAFETY: the lockdown left the call's channel on CALL_CHANNEL_FD, owned by
                    // nothing else in this process.
                    let call = Channel::new(unsafe { OwnedFd::from_raw_fd(fork::CALL_CHANNEL_FD) });
                    let _ = set.thread_unblock();
                    let code = super::process::run(exports, call);
                    hatchery_sys::exec::exit_now(code)
                }
                Err(errno) => return failed(&mut chan, errno, "fork a call process"),
            }
        }
    }
}

/// A mapping of this process that a forked call process would share with it and with every
/// later call: `VM_SHARED` (an anonymous or memfd `MAP_SHARED` mapping, an attached SysV
/// segment, a file mapped shared from a writable fd), as `/proc/self/smaps` shows it (`sh` in
/// `VmFlags`; a file mapped shared from a read-only fd is not, and cannot become, writable).
fn shared_mapping() -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut header = "";
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "sh") {
                return Some(header.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
        {
            // A mapping's first line starts with its address range; the others name a field.
            header = line;
        }
    }
    None
}

impl Exports {
    /// Reports Ready to the supervisor and serves as the helper zygote until the container
    /// goes away. Call it from `main` of a helper started by a call-mode pool, after
    /// preloading. The process must be single-threaded here (call processes are forked); a
    /// helper that started threads gets a setup failure. So does one that holds shared
    /// writable memory (`MAP_SHARED` of anonymous memory, a memfd or a writable file, an
    /// attached SysV segment): every call process would share it with the next. Map what you
    /// preload privately (a file mapped shared from a read-only fd is fine).
    pub fn serve(self) -> ! {
        hatchery_sys::exec::exit_now(serve(&self))
    }
}

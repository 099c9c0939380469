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
//! The trusted `hatchery-shim` builds the container and stays its PID 1 (the *supervisor*): it
//! starts the helper with every privilege dropped (capabilities, no_new_privs, ids, limits,
//! landlock, the seccomp policy whose listener the supervisor holds), so no helper code runs
//! outside the finished sandbox. The helper's `main` preloads and calls [`Exports::serve`], which
//! turns the process into the *helper zygote*: it only forks call processes on the
//! supervisor's demand and reports their exits. Call data never passes through it.
//!
//! ```text
//!  host ─control─▶ supervisor (hatchery-shim, PID 1: deadlines, kills, output caps, seccomp
//!   │               │  listener, features, cleanup between calls, dies with the host)
//!   │               ├─ helper zygote (warm, never sees call data) ─fork─▶ call process
//!   │               │                                                   (own process group,
//!   │               │                                                   landlock scope, call
//!   │               │                                                   filter, exact fd table)
//!   │  Fresh: Request ─▶ supervisor ─▶ pre-forked call process ─▶ Response ─▶ supervisor ─▶ host
//!   └─ Reuse: Worker{direct} ─▶ supervisor ─▶ call process becomes the worker;
//!             calls and responses then go host ⇄ worker on that channel only
//! ```
//!
//! **Fresh**: every call is a process forked from the warm zygote *before* the call arrived,
//! so no earlier call's data is anywhere in its memory; the supervisor sends it the call, and
//! when it answers (or dies, times out, is cancelled) the supervisor kills its whole process
//! group, waits until all of it has exited and empties `/tmp`, `/dev/shm`, every SysV IPC
//! object and every POSIX message queue before the next call.
//!
//! **Reuse**: one call process serves many calls on a direct channel of its own; state (memory,
//! files in `/tmp`, processes it forked) is shared by the calls of that one worker and never
//! beyond it. The host retires a worker (after `max_requests` calls, any failed call, a timeout,
//! a cancellation, or another tenant's call) by closing the channel; the supervisor then kills
//! the worker's whole process group and cleans up as above, and the next worker gets a new
//! channel. The host never sends a call on a retired worker's channel.
//!
//! ## Wire contract (for helpers in other languages)
//!
//! A helper follows it on fd 3 with [`Message`](hatchery_protocol::Message) frames: send
//! `Ready`, then for each `Spawn` (one fd: the new process's channel) fork, report `Spawned
//! {pid}`, and report every reaped child as `ChildExited`. The forked process reads one
//! `Request` (a call with its stdio and named fds) and answers one `Response` whose `call` is a
//! [`CallStatus`](hatchery_protocol::CallStatus), or reads a `Worker` message (one fd: the direct
//! channel) and then answers every `Request` arriving there with a `Response` on the same
//! channel.

mod cleanup;
mod fork;
mod process;
pub(crate) mod supervisor;
mod zygote;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

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
                // SAFETY: the fd was placed for this call and stays open while the call runs.
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
pub(crate) enum CallFailure {
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

    /// Reports Ready to the supervisor and serves as the helper zygote until the container
    /// goes away. Call it from `main` of a helper started by a call-mode pool, after
    /// preloading. The process must be single-threaded here (call processes are forked); a
    /// helper that started threads gets a setup failure. So does one that holds shared
    /// writable memory (`MAP_SHARED` of anonymous memory, a memfd or a writable file, an
    /// attached SysV segment): every call process would share it with the next. Map what you
    /// preload privately (a file mapped shared from a read-only fd is fine).
    pub fn serve(self) -> ! {
        hatchery_sys::exec::exit_now(zygote::serve(&self))
    }
}

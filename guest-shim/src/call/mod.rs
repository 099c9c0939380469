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
mod exports;
mod fork;
mod process;
pub(crate) mod supervisor;
mod zygote;

pub use exports::{Call, Exports};

//! hatchery: run untrusted native helpers in hardened Linux containers, one request at a time.
//!
//! This crate is what applications embed. It has two ways in:
//!
//! - **One-shot**, compatible with the crate hakoniwa: describe a sandbox with [`Container`],
//!   run a program in it with [`Command`], and get a typed [`ExitStatus`] (exit code, signal or
//!   wall-time limit, with resource usage) or a typed [`Error`] naming the container setup step
//!   that failed. One container per command.
//! - **A pool** ([`Pool`]) of pre-forked containers for servers: exec mode runs any program per
//!   request from a warm zygote with the full confinement (per-request landlock domain, seccomp,
//!   cgroup); call mode runs a Rust helper's exported functions (`hatchery_guest::Exports`),
//!   each call in a fresh process ([`Isolation::Fresh`]) or a per-tenant worker
//!   ([`Isolation::Reuse`]), under a trusted supervisor that is PID 1 of the container.
//!
//! The `hatchery` binary (`hatchery run`, `map`, `bench`) is built on the same API.
//!
//! ```no_run
//! use hatchery::Container;
//! let mut c = Container::new();
//! c.rootfs("/")?.devfsmount("/dev").tmpfsmount("/tmp");
//! let out = c.command("/bin/sh").args(["-c", "echo hello; id -u"]).output()?;
//! assert!(out.status.success());
//! # Ok::<(), hatchery::Error>(())
//! ```
//!
//! How a command starts:
//!
//! ```text
//!  host (any thread)            container (new user, mount, pid, ... namespaces)
//!  clone + execveat ──────────▶ hatchery-shim (PID 1, from a sealed memfd)
//!  id maps, SetupPlan ────────▶   builds the root, pivot_root, hostname
//!                                 fork ─▶ setsid, fds, rlimits, caps dropped,
//!                                         no_new_privs ─▶ execve(program)
//!  Response (status, rusage) ◀──  reaps everything, reports, exits
//! ```
#![deny(unsafe_code)]

pub mod cgroup;
pub mod cgroups;
mod child;
mod command;
mod container;
pub mod denial;
mod disk_cache;
mod error;
mod fork;
mod hakurei;
pub mod idmap;
pub mod landlock;
mod netns;
pub mod network;
pub mod ops;
mod plan;
pub mod pool;
pub mod reaper;
pub mod seccomp;
pub mod shim_binary;
mod spare;
mod spawn;
mod wire;

pub use child::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus, Output, Rusage};
pub use command::{Command, Stdio, Timeout};
pub use container::{Container, Namespace, Rlimit, Runctl};
pub use denial::{Allow, Denial, Layer, Learned};
pub use error::{Error, Result, ShimEnd};
pub use hatchery_protocol::{Features, LandlockEnforced, Outcome, SetupStep};
pub use network::{Network, Pasta};
pub use ops::{BindFlags, RemountFlags, SchedPolicy};
pub use pool::{CallRequest, Isolation, Pool, PoolBuilder, PoolError, Request, RunResult};

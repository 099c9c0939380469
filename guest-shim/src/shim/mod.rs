//! `hatchery-shim`: the trusted process that builds a container from inside and then runs
//! commands in it.
//!
//! The host starts it through its fork boundary: `clone` with new namespaces, then `execveat` of
//! a sealed memfd copy of this binary, with `/dev/null` on fds 0–2 and the control socket on
//! fd 3. The shim is PID 1 of its pid namespace and single-threaded by design: it forks a child
//! per command, and a fork is only safe when no other thread can hold a lock.
//!
//! ```text
//!  start ─▶ Hello ─▶ wait for SetupPlan ─▶ set ids ─▶ build root ─▶ pivot_root
//!        ─▶ non-dumpable ─▶ OneShot: fork+exec the command, reap, Response, exit
//! ```
//!
//! Files, each using only those below it (and the shared items of this one):
//!
//! ```text
//!  start      stage 1: Hello, plan, ids, root, confinement; then one of
//!  ├─ oneshot   one command, reaped, one Response
//!  ├─ zygote    exec zygote: one request per fork
//!  └─ call::supervisor (call mode)
//!  setup      building the root          confine   seccomp and landlock, prepared once
//!  daemon     hakurei's daemons, started before a one-shot command
//!  launch     parent side of a command: prepare, start, read the child's report
//!  child      the fork boundary: reads a launch_plan::LaunchPlan, ends in exec or _exit
//!  verdict, reap, users   pure decisions, reaping, /etc/passwd lookups
//! ```

pub(crate) mod child;
pub(crate) mod confine;
mod daemon;
pub(crate) mod explain;
pub(crate) mod launch;
pub(crate) mod launch_plan;
mod oneshot;
pub(crate) mod reap;
pub(crate) mod setup;
pub(crate) mod start;
pub(crate) mod users;
pub(crate) mod verdict;
mod zygote;

use hatchery_protocol::{Channel, Message};

/// Times consecutive setup steps for the Ready report.
#[derive(Debug)]
pub(crate) struct Stopwatch {
    last: std::time::Instant,
    /// Steps so far.
    pub(crate) steps: Vec<hatchery_protocol::StepTime>,
}

impl Stopwatch {
    /// Starts timing.
    pub(crate) fn new() -> Stopwatch {
        Stopwatch {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Ends the current step under `name` and starts the next.
    pub(crate) fn lap(&mut self, name: &str) {
        let now = std::time::Instant::now();
        self.steps.push(hatchery_protocol::StepTime {
            step: name.to_string(),
            us: now.duration_since(self.last).as_micros() as u64,
        });
        self.last = now;
    }
}

impl Default for Stopwatch {
    fn default() -> Self {
        Stopwatch::new()
    }
}

/// The fd the host puts the control socket on.
pub(crate) const CONTROL_FD: i32 = 3;

/// Number of threads of this process (1 is the only acceptable answer before a fork).
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Answers a health check (best effort: a host that stopped reading is handled by its deadline).
pub(crate) fn pong(chan: &mut Channel, nonce: u64, running: u32) {
    let _ = chan.send(
        &Message::Pong(hatchery_protocol::Pong { nonce, running }),
        &[],
        Some(std::time::Instant::now() + std::time::Duration::from_secs(1)),
    );
}

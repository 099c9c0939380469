//! The zygote pool: pre-forked, fully confined containers that serve requests.
//!
//! ```text
//!   callers (any threads)                 maintenance thread              zygotes (one container each)
//!   run(req) ─▶ acquire a slot ──┐        starts/retires zygotes,         ┌──────────────────────────┐
//!              (bounded queue,   │        pings them, reaps the dead      │ hatchery-shim, PID 1      │
//!               acquire timeout) │                 │ ▲                    │  ├ request root (own pid, │
//!   send Request + fds ──────────┼─ control socket ┘ │ Pong / hangup      │  │  mount, ipc ns) ─ cmd  │
//!   wait on the request's own ◀──┘                                       │  └ request root ─ cmd     │
//!   reply socket ◀──────────────────────────────── Response ─────────────└──────────────────────────┘
//! ```
//!
//! Each request brings its own reply socket: the zygote answers there, and closing it (dropping
//! a [`Ticket`] or an async future) makes the zygote kill the request. A zygote that dies, stops
//! answering pings, or breaks the protocol is killed, reaped and replaced; requests in flight in it
//! get [`PoolError::ZygoteLost`]. The policy (which zygote, when to grow, shrink or recycle) is the
//! pure [`slots`] module.
//!
//! Costs: an idle zygote is one small process (the shim) plus its namespaces; a request costs a
//! socketpair, one message with its fds, one clone with new pid/mount/ipc namespaces and a fork
//! inside the zygote, and the helper's exec.
//!
//! One concept per file:
//!
//! ```text
//!  mod.rs          Pool, the state its clones share (Inner), shutdown
//!  builder.rs      PoolBuilder and Isolation: every knob, and starting a pool
//!  zygote.rs       one zygote: its process, control socket (sender and receiver halves), cgroup,
//!                  its reuse worker's direct channel; starting one; a Lease on it
//!  dispatch.rs     acquiring a zygote (bounded queue, acquire timeout) and sending it a
//!                  request: on its control socket, or for a reuse call on the direct channel
//!  ticket.rs       Ticket: a dispatched request; waiting, cancelling, its RunResult
//!  maintenance.rs  the maintenance thread: start, retire, ping and replace zygotes; stop
//!  slots.rs        the pure slot policy          health.rs   the pure ping bookkeeping
//!  request.rs      what a request carries in and what comes back; call.rs: calls
//!  metrics.rs, profile.rs (the default profile), asynch.rs (tokio), error.rs
//! ```

#[cfg(feature = "tokio")]
mod asynch;
mod builder;
mod call;
mod dispatch;
mod error;
mod health;
mod maintenance;
mod metrics;
mod profile;
mod request;
pub mod slots;
mod ticket;
mod zygote;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use builder::{Isolation, PoolBuilder, HELPER_PATH};
pub use call::{CallError, CallOutput};
pub use error::PoolError;
pub use metrics::{MetricsSnapshot, ZygoteCounts, LATENCY_BUCKETS_US};
pub use profile::{
    add_system_dirs, default_profile, etc_is_secret, DEFAULT_TMP_BYTES, ETC_NEVER, ETC_SHARED,
};
pub use request::{
    sealed_memfd, AnyRequest, CallRequest, Input, Request, RunResult, Sink, Timings,
    DEFAULT_STDERR_LIMIT, DEFAULT_STDOUT_LIMIT, MAX_INLINE_ARG,
};
use slots::{SlotId, Slots};
pub use ticket::Ticket;
use zygote::{ProfilePlan, Zygote};

use crate::error::Error;

/// The builder's knobs that matter once the pool runs.
#[derive(Debug)]
struct Config {
    max_queue: usize,
    acquire_timeout: Duration,
    health_interval: Duration,
    health_timeout: Duration,
    default_wall: Option<Duration>,
}

/// What the state lock guards: the slots and their zygotes, the queue, health checks.
#[derive(Debug)]
struct State {
    slots: Slots,
    zygotes: HashMap<SlotId, Arc<Zygote>>,
    waiters: usize,
    closed: bool,
    /// Pings in flight.
    pings: health::Pings,
    last_spawn_error: Option<Arc<Error>>,
}

/// What every clone of a [`Pool`] (and every [`Ticket`]) shares.
#[derive(Debug)]
struct Inner {
    cfg: Config,
    /// Call mode with `Isolation::Reuse { max_requests }`: calls go straight to each helper's
    /// worker, which serves at most this many.
    reuse: Option<u64>,
    profile: ProfilePlan,
    state: Mutex<State>,
    cond: Condvar,
    metrics: metrics::Metrics,
    next_id: AtomicU64,
    wake: OwnedFd,
    stopping: AtomicBool,
    maintenance: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// What the last zygote reported as enforced.
    features: Mutex<Option<hatchery_protocol::Features>>,
}

/// Locks a mutex, whether or not a holder panicked.
fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    lock_any(m)
}

/// Dropped with the last [`Pool`] clone: stops everything synchronously, so nothing outlives
/// the pool (tickets still in flight then end with [`PoolError::ZygoteLost`]).
#[derive(Debug)]
struct Owner {
    inner: Arc<Inner>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.stop();
    }
}

/// A pool of warm zygote containers. `Send + Sync`, cheap to clone (an `Arc`); the zygotes
/// and the maintenance thread go away when the last clone and the last [`Ticket`] are dropped,
/// or at [`shutdown`](Pool::shutdown). No process, fd or zombie outlives the pool.
#[derive(Debug, Clone)]
pub struct Pool {
    // Declared first: dropped first, so the last clone stops the pool before its `Arc<Inner>`.
    _owner: Arc<Owner>,
    inner: Arc<Inner>,
}

impl Pool {
    /// A builder with the secure default profile.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// What the zygotes' containers enforce, as reported by the last one started: seccomp
    /// (and whether violations are reported), the landlock ABI and the rights and scopes it
    /// enforces, no_new_privs. `None` before the first zygote is ready. In call mode this is
    /// the trusted supervisor's report, never the helper's.
    pub fn features(&self) -> Option<hatchery_protocol::Features> {
        lock_any(&self.inner.features).clone()
    }

    /// Metrics: zygotes by state, queue depth, outcomes, restarts, latency histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        let st = lock(&self.inner.state);
        let (starting, warm, busy, draining) = st.slots.counts();
        let counts = ZygoteCounts {
            starting,
            warm,
            busy,
            draining,
        };
        let waiters = st.waiters;
        drop(st);
        self.inner.metrics.snapshot(counts, waiters)
    }

    /// Replaces every zygote (and with them every reuse worker and its state): each is retired
    /// once its running requests finish, and fresh ones are started in the background.
    pub fn recycle(&self) {
        let mut st = lock(&self.inner.state);
        let ids: Vec<SlotId> = st.slots.iter().map(|s| s.id).collect();
        for id in ids {
            st.slots.drain(id);
        }
        drop(st);
        self.inner.wake_maintenance();
    }

    /// Host pids of the live zygotes (for monitoring and tests).
    pub fn zygote_pids(&self) -> Vec<i32> {
        lock(&self.inner.state)
            .zygotes
            .values()
            .map(|z| z.pid.as_raw())
            .collect()
    }

    /// Stops taking requests, waits up to `grace` for running ones, then kills and reaps every
    /// zygote. Requests still running after `grace` end with [`PoolError::ZygoteLost`].
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = lock(&self.inner.state);
        st.closed = true;
        self.inner.cond.notify_all();
        while st.slots.iter().any(|s| s.running > 0) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .inner
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        self.inner.stop();
    }
}

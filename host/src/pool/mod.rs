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

#[cfg(feature = "tokio")]
mod asynch;
mod call;
mod error;
mod health;
mod metrics;
mod profile;
mod request;
pub mod slots;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hatchery_protocol::{Channel, Kind, Message, Outcome, Ping, ProtocolError, ShimMode};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

pub use call::{CallError, CallOutput};
pub use error::PoolError;
pub use metrics::{MetricsSnapshot, ZygoteCounts, LATENCY_BUCKETS_US};
pub use profile::{
    add_system_dirs, default_profile, etc_is_secret, DEFAULT_TMP_BYTES, ETC_NEVER, ETC_SHARED,
};
pub use request::{
    sealed_memfd, Input, Request, RunResult, Sink, Timings, Usage, DEFAULT_STDERR_LIMIT,
    DEFAULT_STDOUT_LIMIT, MAX_INLINE_ARG,
};
use slots::{Policy, SlotId, SlotState, Slots};

use crate::container::Container;
use crate::error::Error;
use crate::plan::{self, Plan};
use crate::spawn::{self, ShimProcess, StartSpec};

/// How requests are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Every request is a new process tree, with its own pid, mount and IPC namespaces and
    /// tmpfs, forked from a warm zygote (the default).
    #[default]
    Fresh,
    /// One container per request: a zygote serves once and is retired; the pool refills in the
    /// background.
    Dedicated,
    /// Call mode only: one long-lived worker per zygote (forked once from the warm helper) serves
    /// calls without forking, like a reused wasm instance. It is recycled after `max_requests`
    /// calls, after any call that did not succeed (error, panic, signal, timeout, output cap),
    /// on cancellation, and when a call carries another tenant ([`Request::tenant`]). State
    /// (memory, `/tmp`, processes it forked) persists across the calls of one worker, never
    /// across workers: retiring one kills its whole process tree and cleans up.
    Reuse {
        /// Calls one worker serves before it is replaced.
        max_requests: u64,
    },
}

/// Largest frame accepted on a request's reply socket (responses are small): bounds the host's
/// memory per in-flight request.
const REPLY_MAX_FRAME: usize = 16 << 10;

/// Slack the host gives a zygote beyond a request's wall-time limit before it declares the
/// zygote wedged.
const WALL_GRACE: Duration = Duration::from_secs(2);

/// Builds a [`Pool`]. Every knob documents its default and what it costs.
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    profile: Container,
    isolation: Isolation,
    min: usize,
    max: usize,
    per_zygote: u32,
    max_queue: usize,
    acquire_timeout: Duration,
    idle_timeout: Option<Duration>,
    recycle_after: Option<u64>,
    health_interval: Duration,
    health_timeout: Duration,
    default_wall: Option<Duration>,
    helper: Option<std::path::PathBuf>,
}

/// Where a call-mode helper is mounted inside the container.
pub const HELPER_PATH: &str = "/.hatchery-helper";

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            profile: default_profile(),
            isolation: Isolation::Fresh,
            min: 1,
            max: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            per_zygote: 1,
            max_queue: 1024,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
            recycle_after: Some(10_000),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            default_wall: None,
            helper: None,
        }
    }
}

impl PoolBuilder {
    /// A builder with the secure [`default_profile`].
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The sandbox every zygote is built from (default: [`default_profile`]). All `Container`
    /// options apply; each request additionally gets fresh instances of the profile's writable
    /// tmpfs mounts and of its `/proc`.
    pub fn profile(mut self, profile: Container) -> Self {
        self.profile = profile;
        self
    }

    /// Call mode: the zygotes run this helper binary (a program that links `hatchery-guest` and
    /// calls `Exports::serve`), mounted read-only at [`HELPER_PATH`] in the container and exec'd
    /// by the shim once the container is built and every privilege is dropped. Requests are then
    /// [`Request::call`]s, made with [`Pool::call`] or [`Pool::call_typed`].
    pub fn call_helper(mut self, host_path: impl AsRef<std::path::Path>) -> Self {
        self.helper = Some(host_path.as_ref().to_path_buf());
        self
    }

    /// Isolation level (default [`Isolation::Fresh`]).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Zygotes kept warm (default 1). Each costs one idle shim process and its namespaces.
    pub fn min_zygotes(mut self, n: usize) -> Self {
        self.min = n;
        self
    }

    /// Most zygotes at once (default: the number of CPUs, at least 2).
    pub fn max_zygotes(mut self, n: usize) -> Self {
        self.max = n.max(1);
        self
    }

    /// Requests one zygote runs at once (default 1). More shares a zygote's memory between
    /// concurrent requests; each still gets its own pid, mount and IPC namespaces.
    pub fn max_concurrent_per_zygote(mut self, n: u32) -> Self {
        self.per_zygote = n.max(1);
        self
    }

    /// Most requests waiting for a zygote before [`PoolError::QueueFull`] (default 1024).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// How long a request waits for a zygote before [`PoolError::AcquireTimeout`] (default 30 s).
    pub fn acquire_timeout(mut self, t: Duration) -> Self {
        self.acquire_timeout = t;
        self
    }

    /// Retire zygotes above the minimum once idle this long (default 60 s; `None` never).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Replace a zygote after it served this many requests (default 10,000; `None` never).
    pub fn recycle_after(mut self, n: Option<u64>) -> Self {
        self.recycle_after = n;
        self
    }

    /// How often zygotes are pinged (default 5 s) and how long a pong may take (default 2 s)
    /// before the zygote is declared wedged, killed and replaced.
    pub fn health_check(mut self, interval: Duration, timeout: Duration) -> Self {
        self.health_interval = interval;
        self.health_timeout = timeout;
        self
    }

    /// Wall-time limit of requests that set none (default: none).
    pub fn default_wall_time(mut self, t: Duration) -> Self {
        self.default_wall = Some(t);
        self
    }

    /// Starts the pool and its `min` zygotes (so a broken profile fails here, typed).
    pub fn build(mut self) -> Result<Pool, PoolError> {
        let reuse = match self.isolation {
            Isolation::Reuse { max_requests } => Some(max_requests.max(1)),
            _ => None,
        };
        if reuse.is_some() && self.helper.is_none() {
            return Err(PoolError::InvalidRequest {
                what: "Isolation::Reuse".into(),
                reason: "reuse needs a call-mode helper (PoolBuilder::call_helper)",
            });
        }
        if let Some(h) = &self.helper {
            self.profile.bindmount_ro(&h.to_string_lossy(), HELPER_PATH);
            // Calls are served one at a time per zygote.
            self.per_zygote = 1;
        }
        let mode = match &self.helper {
            None => ShimMode::Zygote {
                max_concurrent: self.per_zygote,
            },
            Some(_) => ShimMode::Helper {
                helper: hatchery_protocol::ExecSpec {
                    program: HELPER_PATH.into(),
                    argv: vec![HELPER_PATH.into()],
                    env: Vec::new(),
                    cwd: None,
                },
                reuse,
            },
        };
        // The blob of placed files is the only fd sent with a zygote's plan.
        let plan =
            plan::build(&self.profile, mode, 0).map_err(|e| PoolError::Spawn(Arc::new(e)))?;
        let wake: OwnedFd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| PoolError::io("eventfd")(e.into()))?
        .into();
        let inner = Arc::new(Inner {
            reuse,
            cfg: Config {
                max_queue: self.max_queue,
                acquire_timeout: self.acquire_timeout,
                health_interval: self.health_interval,
                health_timeout: self.health_timeout,
                default_wall: self.default_wall,
            },
            profile: ProfilePlan {
                container: self.profile.clone(),
                plan,
            },
            state: Mutex::new(State {
                slots: Slots::new(Policy {
                    min: self.min,
                    max: self.max.max(self.min).max(1),
                    per_zygote: self.per_zygote,
                    recycle_after: self.recycle_after,
                    idle_timeout: self.idle_timeout,
                    dedicated: self.isolation == Isolation::Dedicated,
                }),
                zygotes: HashMap::new(),
                waiters: 0,
                closed: false,
                pings: health::Pings::default(),
                last_spawn_error: None,
            }),
            cond: Condvar::new(),
            metrics: metrics::Metrics::default(),
            next_id: AtomicU64::new(1),
            wake,
            stopping: AtomicBool::new(false),
            maintenance: Mutex::new(None),
            features: Mutex::new(None),
        });
        // Warm the minimum now, so configuration errors surface here.
        for _ in 0..self.min {
            inner.start_one().map_err(PoolError::Spawn)?;
        }
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("hatchery-pool".into())
            .spawn(move || maintenance(weak))
            .map_err(PoolError::io("spawn the maintenance thread"))?;
        *lock_any(&inner.maintenance) = Some(handle);
        Ok(Pool {
            _owner: Arc::new(Owner {
                inner: inner.clone(),
            }),
            inner,
        })
    }
}

#[derive(Debug)]
struct Config {
    max_queue: usize,
    acquire_timeout: Duration,
    health_interval: Duration,
    health_timeout: Duration,
    default_wall: Option<Duration>,
}

#[derive(Debug)]
struct ProfilePlan {
    container: Container,
    plan: Plan,
}

/// One live zygote.
#[derive(Debug)]
struct Zygote {
    slot: SlotId,
    pid: Pid,
    raw_fd: RawFd,
    /// Callers send requests; only the maintenance thread reads.
    chan: Mutex<Channel>,
    dead: AtomicBool,
    /// Its container's cgroup (memory, pids, CPU limits), removed when the zygote goes.
    cgroup: Option<crate::cgroup::Cgroup>,
    /// Reuse: the current worker's direct channel (set up by the first call; retired by
    /// dropping it).
    direct: Mutex<Option<Direct>>,
}

/// A reuse worker's direct channel, as the host holds it. Dropping it retires the worker: the
/// supervisor sees the hang-up and kills the worker's whole process tree.
#[derive(Debug)]
struct Direct {
    chan: Channel,
    tenant: Option<String>,
    /// Calls sent on it so far.
    calls: u64,
}

impl Direct {
    /// Whether something (a `WorkerExited`, a hang-up) is waiting on it before any call was
    /// sent: then the worker is gone and the channel must not be used.
    fn stale(&self) -> bool {
        let mut p = [PollFd::new(self.chan.as_fd(), PollFlags::POLLIN)];
        !matches!(poll(&mut p, PollTimeout::ZERO), Ok(0))
    }
}

impl Zygote {
    fn kill(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

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

impl Inner {
    fn wake_maintenance(&self) {
        let _ = nix::unistd::write(self.wake.as_fd(), &1u64.to_ne_bytes());
    }

    /// Starts one zygote and registers it. Blocks for the container's setup (milliseconds).
    fn start_one(&self) -> Result<(), Arc<Error>> {
        let slot = lock(&self.state).slots.add_starting(Instant::now());
        let result = self.start_zygote(slot);
        let mut st = lock(&self.state);
        match result {
            Ok(z) => {
                if st.closed {
                    drop(st);
                    z.kill();
                    spawn::reap(z.pid);
                    return Ok(());
                }
                st.slots.mark_ready(slot, Instant::now());
                st.zygotes.insert(slot, Arc::new(z));
                st.last_spawn_error = None;
                self.metrics.zygotes_started.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.cond.notify_all();
                Ok(())
            }
            Err(e) => {
                st.slots.remove(slot);
                let e = Arc::new(e);
                st.last_spawn_error = Some(e.clone());
                self.metrics.zygotes_failed.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.cond.notify_all();
                Err(e)
            }
        }
    }

    fn start_zygote(&self, slot: SlotId) -> Result<Zygote, Error> {
        let p = &self.profile;
        let fds: Vec<BorrowedFd<'_>> = p.plan.blob.iter().map(|b| b.as_fd()).collect();
        let cgroup = crate::cgroup::Cgroup::create(&p.container.resources)?;
        let mut shim: ShimProcess = spawn::start(StartSpec {
            clone_flags: p.plan.clone_flags,
            uid_maps: &p.container.uid_maps,
            gid_maps: &p.container.gid_maps,
            plan: p.plan.setup.clone(),
            plan_fds: fds,
            title: "hatchery:zygote",
            cgroup: cgroup.as_ref(),
        })?;
        let ready = shim.await_ready("starting a zygote")?;
        *lock_any(&self.features) = Some(ready.features);
        let raw_fd = shim.chan.as_fd().as_raw_fd();
        Ok(Zygote {
            slot,
            pid: shim.pid,
            raw_fd,
            chan: Mutex::new(shim.chan),
            dead: AtomicBool::new(false),
            cgroup,
            direct: Mutex::new(None),
        })
    }

    /// Waits for a free zygote until `deadline`.
    fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, PoolError> {
        let started = Instant::now();
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return Err(PoolError::Closed);
            }
            if let Some(slot) = st.slots.lease() {
                if let Some(z) = st.zygotes.get(&slot).cloned() {
                    return Ok(Lease {
                        inner: self.clone(),
                        zygote: z,
                    });
                }
                st.slots.release(slot, Instant::now());
            }
            if st.slots.live() == 0 {
                if let Some(e) = &st.last_spawn_error {
                    return Err(PoolError::Spawn(e.clone()));
                }
            }
            if st.waiters >= self.cfg.max_queue {
                return Err(PoolError::QueueFull { depth: st.waiters });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::AcquireTimeout {
                    waited: started.elapsed(),
                });
            }
            st.waiters += 1;
            self.wake_maintenance();
            let (guard, _) = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.waiters -= 1;
        }
    }

    /// Removes a zygote from the pool, kills and reaps it.
    fn discard(&self, slot: SlotId, restart: bool) {
        let z = {
            let mut st = lock(&self.state);
            st.slots.remove(slot);
            st.pings.remove(slot);
            st.zygotes.remove(&slot)
        };
        if let Some(z) = z {
            z.kill();
            spawn::reap(z.pid);
            if restart {
                self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
            } else {
                self.metrics.retired.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.cond.notify_all();
        self.wake_maintenance();
    }

    fn kill_all(&self) {
        let zygotes: Vec<Arc<Zygote>> = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.pings.clear();
            let ids: Vec<SlotId> = st.zygotes.keys().copied().collect();
            for id in &ids {
                st.slots.remove(*id);
            }
            st.zygotes.drain().map(|(_, z)| z).collect()
        };
        for z in zygotes {
            z.kill();
            spawn::reap(z.pid);
        }
        self.cond.notify_all();
    }
}

impl Inner {
    /// Stops the maintenance thread (joining it unless called from it) and kills every zygote.
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_maintenance();
        let handle = lock_any(&self.maintenance).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        self.kill_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
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

/// A zygote leased for one request; released (and the zygote retired if the policy says so)
/// when dropped.
#[derive(Debug)]
struct Lease {
    inner: Arc<Inner>,
    zygote: Arc<Zygote>,
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

/// A request that was dispatched to a zygote. [`wait`](Ticket::wait) for its result; dropping
/// the ticket instead cancels the request (its processes are killed) and frees the zygote.
#[derive(Debug)]
pub struct Ticket {
    // Field order is drop order: the reply socket closes (the zygote sees the cancellation)
    // before the lease is released and the zygote can be handed the next request.
    reply: Channel,
    id: u64,
    stdout: Option<(std::fs::File, u64)>,
    stderr: Option<(std::fs::File, u64)>,
    wall: Option<Duration>,
    started: Instant,
    queued: Duration,
    /// OOM kills in the zygote's cgroup when the request was sent.
    oom_before: u64,
    /// The one result (or error) was received.
    done: bool,
    /// A reuse call: the worker's channel (`reply` is a copy of it), handed back to the zygote
    /// when the call succeeded and the worker may serve again; dropped (retiring the worker)
    /// otherwise.
    direct: Option<Direct>,
    lease: Lease,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done && self.direct.is_none() {
            // Cancelled (a reuse call is cancelled by dropping its worker's channel). Tell the zygote on its control socket, before the lease is released and
            // the zygote can be handed the next request: closing the reply socket alone is not
            // enough, as a copy of it may briefly live on in a child this process is spawning.
            let cancel = Message::Cancel(hatchery_protocol::Cancel { id: self.id });
            let _ = lock_any(&self.lease.zygote.chan).send(
                &cancel,
                &[],
                Some(Instant::now() + Duration::from_millis(100)),
            );
        }
    }
}

impl Ticket {
    /// The request's id (unique within the pool).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The reply socket, for event loops (readable once the result is in).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.reply.as_fd()
    }

    fn lost(&mut self, e: ProtocolError) -> PoolError {
        self.done = true;
        let z = &self.lease.zygote;
        let violation = e.is_peer_violation();
        let pid = z.pid.as_raw();
        self.lease.inner.discard(z.slot, true);
        if violation {
            PoolError::ProtocolViolation { pid, source: e }
        } else {
            PoolError::ZygoteLost { pid }
        }
    }

    /// Waits for the request's one result.
    pub fn wait(mut self) -> Result<RunResult, PoolError> {
        // A reuse call's deadline is the host's to enforce (retiring the worker kills it); the
        // supervisor enforces every other one, the host only notices a wedged zygote.
        let grace = if self.direct.is_some() {
            Duration::ZERO
        } else {
            WALL_GRACE
        };
        let deadline = self.wall.map(|w| Instant::now() + w + grace);
        let res = self.receive(deadline);
        self.record(&res);
        res
    }

    fn record(&self, res: &Result<RunResult, PoolError>) {
        let metrics = &self.lease.inner.metrics;
        match res {
            Ok(r) => metrics.record(&r.outcome, r.timings.total),
            Err(_) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn receive(&mut self, deadline: Option<Instant>) -> Result<RunResult, PoolError> {
        let received = match self.reply.recv(deadline) {
            Ok(r) => r,
            Err(ProtocolError::Timeout { .. }) if self.direct.is_some() => {
                self.done = true;
                self.direct = None;
                return Ok(self.ended(Outcome::TimedOut, None));
            }
            Err(ProtocolError::Timeout { .. }) => {
                // The zygote did not enforce the wall-time limit: it is wedged.
                return Err(self.lost(ProtocolError::Timeout { op: "receive" }));
            }
            Err(e) => return Err(self.lost(e)),
        };
        self.finish(received.message)
    }

    /// Non-blocking: the result if it is in.
    pub fn try_wait(&mut self) -> Result<Option<RunResult>, PoolError> {
        match self.reply.recv(Some(Instant::now())) {
            Ok(r) => self.finish(r.message).map(Some),
            Err(ProtocolError::Timeout { .. }) => Ok(None),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// A reuse call that ended without an answer from the worker.
    fn ended(&mut self, outcome: Outcome, usage: Option<hatchery_protocol::Usage>) -> RunResult {
        let u = usage.unwrap_or_default();
        let run = Duration::from_micros(u.wall_us);
        RunResult {
            outcome,
            usage: Usage {
                wall: run,
                user: Duration::from_micros(u.user_us),
                system: Duration::from_micros(u.sys_us),
                max_rss_kib: u.max_rss_kib,
            },
            timings: Timings {
                queued: self.queued,
                dispatch: Duration::ZERO,
                run,
                total: self.started.elapsed(),
            },
            stdout: Vec::new(),
            stderr: Vec::new(),
            call: None,
        }
    }

    fn finish(&mut self, message: Message) -> Result<RunResult, PoolError> {
        self.done = true;
        let resp = match message {
            Message::WorkerExited(w) if self.direct.is_some() => {
                self.direct = None;
                let mut outcome = w.outcome;
                crate::seccomp::name_violation(&mut outcome);
                return Ok(self.ended(outcome, Some(w.usage)));
            }
            Message::Response(r) if r.id == self.id => r,
            Message::Response(_) => {
                return Err(self.lost(ProtocolError::UnexpectedMessage {
                    expected: "Response for this request",
                    got: Kind::Response,
                }))
            }
            other => {
                return Err(self.lost(ProtocolError::UnexpectedMessage {
                    expected: Kind::Response.name(),
                    got: other.kind(),
                }))
            }
        };
        let (stdout, out_full) = request::read_capture(self.stdout.take())?;
        let (stderr, err_full) = request::read_capture(self.stderr.take())?;
        let mut outcome = resp.outcome;
        crate::seccomp::name_violation(&mut outcome);
        if let Some(cg) = &self.lease.zygote.cgroup {
            outcome = crate::cgroup::oom_outcome(outcome, self.oom_before, || cg.oom_kills());
        }
        if (out_full || err_full)
            && matches!(
                outcome,
                Outcome::Exited(_) | Outcome::Signaled { .. } | Outcome::OutputExceeded
            )
        {
            outcome = Outcome::OutputExceeded;
        }
        let total = self.started.elapsed();
        if let Some(d) = self.direct.take() {
            // The worker serves again only after a call that went well, up to its limit.
            let max = self.lease.inner.reuse.unwrap_or(1);
            if outcome == Outcome::Exited(0)
                && resp.call == Some(hatchery_protocol::CallStatus::Ok)
                && d.calls < max
            {
                *lock_any(&self.lease.zygote.direct) = Some(d);
            }
        }
        Ok(RunResult {
            outcome,
            call: resp.call.clone(),
            usage: Usage {
                wall: Duration::from_micros(resp.usage.wall_us),
                user: Duration::from_micros(resp.usage.user_us),
                system: Duration::from_micros(resp.usage.sys_us),
                max_rss_kib: resp.usage.max_rss_kib,
            },
            timings: Timings {
                queued: self.queued,
                dispatch: Duration::from_micros(resp.spawn_us),
                run: Duration::from_micros(resp.usage.wall_us),
                total,
            },
            stdout,
            stderr,
        })
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

    /// Runs a request to its end: waits for a zygote, dispatches, waits for the result.
    pub fn run(&self, request: Request) -> Result<RunResult, PoolError> {
        self.submit(request)?.wait()
    }

    /// Dispatches a request and returns its [`Ticket`] without waiting for the result.
    pub fn submit(&self, request: Request) -> Result<Ticket, PoolError> {
        let started = Instant::now();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let tenant = request.tenant.clone();
        let prepared = request.prepare(id, self.inner.cfg.default_wall)?;
        let wall = prepared.wire.limits.wall_time_us.map(Duration::from_micros);
        let lease = self
            .inner
            .acquire(started + self.inner.cfg.acquire_timeout)?;
        let queued = started.elapsed();
        // OOM kills in the zygote's cgroup before this request: only newer ones are its own.
        let oom_before = lease.zygote.cgroup.as_ref().map_or(0, |cg| cg.oom_kills());
        let (host_end, guest_end) =
            Channel::pair().map_err(|e| PoolError::io("socketpair")(std::io::Error::other(e)))?;
        let request::Prepared {
            wire,
            fds,
            stdout,
            stderr,
        } = prepared;
        let send_by = Some(Instant::now() + Duration::from_secs(5));
        let reuse_call =
            self.inner.reuse.is_some() && matches!(wire.work, hatchery_protocol::Work::Call { .. });
        let borrowed: Vec<BorrowedFd<'_>> = std::iter::once(guest_end.as_fd())
            .chain(fds.iter().map(|f| f.as_fd()))
            .collect();
        let mut direct = None;
        let sent = if reuse_call {
            // The zygote's worker, if it may serve this call; otherwise it is retired (dropped)
            // and a new one is started on a channel of its own.
            let current = lock_any(&lease.zygote.direct)
                .take()
                .filter(|d| d.tenant == tenant && !d.stale());
            let d = match current {
                Some(d) => Ok(d),
                None => Channel::pair().and_then(|(ours, theirs)| {
                    let start = Message::Worker(hatchery_protocol::Worker {
                        output_bytes: wire.limits.output_bytes,
                    });
                    lock_any(&lease.zygote.chan).send(&start, &[theirs.as_fd()], send_by)?;
                    Ok(Direct {
                        chan: ours,
                        tenant: tenant.clone(),
                        calls: 0,
                    })
                }),
            };
            match d {
                Ok(mut d) => {
                    let sent = d
                        .chan
                        .send(&Message::Request(Box::new(wire)), &borrowed, send_by);
                    d.calls += 1;
                    let copy = d.chan.as_fd().try_clone_to_owned();
                    direct = Some(d);
                    match copy {
                        Ok(c) => sent.map(|()| Some(Channel::new(c))),
                        Err(e) => Err(ProtocolError::Io {
                            op: "dup",
                            source: nix::errno::Errno::from_raw(
                                e.raw_os_error().unwrap_or(libc::EMFILE),
                            ),
                        }),
                    }
                }
                Err(e) => Err(e),
            }
        } else {
            lock_any(&lease.zygote.chan)
                .send(&Message::Request(Box::new(wire)), &borrowed, send_by)
                .map(|()| None)
        };
        drop(borrowed);
        drop(fds);
        drop(guest_end);
        let (reply, sent) = match sent {
            Ok(Some(copy)) => (copy, Ok(())),
            Ok(None) => (host_end, Ok(())),
            Err(e) => (host_end, Err(e)),
        };
        let mut ticket = Ticket {
            lease,
            id,
            reply: reply.with_max_frame(REPLY_MAX_FRAME),
            stdout,
            stderr,
            wall,
            started,
            queued,
            oom_before,
            done: false,
            direct,
        };
        if let Err(e) = sent {
            self.inner.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return Err(ticket.lost(e));
        }
        Ok(ticket)
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

/// The maintenance thread: starts zygotes (to the minimum and for waiting requests), retires
/// them (recycling, idle shrink, dedicated use), pings them, and replaces dead or wedged ones.
/// It holds only a weak reference, so dropping the pool stops it.
fn maintenance(weak: Weak<Inner>) {
    let mut last_health = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Start what the policy asks for.
        let to_start = {
            let st = lock(&inner.state);
            if st.closed {
                0
            } else {
                st.slots.to_start(st.waiters)
            }
        };
        // Zygotes start in parallel (each is mostly the kernel building namespaces and the
        // shim's setup), so a dedicated pool refills as fast as it is drained.
        if to_start > 0 && !inner.stopping.load(Ordering::SeqCst) {
            std::thread::scope(|s| {
                for _ in 0..to_start {
                    s.spawn(|| {
                        if let Err(e) = inner.start_one() {
                            tracing::warn!(error = %e, "starting a zygote failed");
                        }
                    });
                }
            });
        }
        // Retire drained and idle zygotes.
        let retire = lock(&inner.state).slots.to_retire(Instant::now());
        for slot in retire {
            inner.discard(slot, false);
        }
        // Health: ping every ready zygote; a pong overdue means wedged. The pings are recorded
        // under the state lock and sent after it is released: a send may block (up to the
        // health timeout) on a zygote that does not read, and acquire() must never wait for it.
        let now = Instant::now();
        let (mut wedged, to_ping) = {
            let mut st = lock(&inner.state);
            let wedged = st.pings.overdue(now, inner.cfg.health_timeout);
            let mut to_ping = Vec::new();
            if now.duration_since(last_health) >= inner.cfg.health_interval {
                last_health = now;
                let ready: Vec<Arc<Zygote>> = st
                    .zygotes
                    .values()
                    .filter(|z| !st.pings.pending(z.slot))
                    .filter(|z| {
                        st.slots
                            .iter()
                            .any(|s| s.id == z.slot && s.state != SlotState::Starting)
                    })
                    .cloned()
                    .collect();
                for z in ready {
                    let nonce = st.pings.sent(z.slot, now);
                    to_ping.push((z, nonce));
                }
            }
            (wedged, to_ping)
        };
        for (z, nonce) in to_ping {
            let sent = lock_any(&z.chan).send(
                &Message::Ping(Ping { nonce }),
                &[],
                Some(now + inner.cfg.health_timeout),
            );
            if sent.is_err() {
                wedged.push(z.slot);
            }
        }
        for slot in wedged {
            tracing::warn!(?slot, "zygote failed its health check; replacing it");
            inner.discard(slot, true);
        }
        // Wait for pongs, hangups or a wake-up.
        // Holding the zygotes keeps their sockets open while we poll them.
        let watch: Vec<Arc<Zygote>> = lock(&inner.state).zygotes.values().cloned().collect();
        let wake_fd = inner.wake.as_raw_fd();
        let tick = inner
            .cfg
            .health_interval
            .min(inner.cfg.health_timeout)
            .min(Duration::from_millis(500));
        let ready = {
            let borrowed: Vec<BorrowedFd<'_>> = watch
                .iter()
                .map(|z| borrow(z.raw_fd))
                .chain(std::iter::once(inner.wake.as_fd()))
                .collect();
            let mut pfds: Vec<PollFd<'_>> = borrowed
                .iter()
                .map(|b| PollFd::new(*b, PollFlags::POLLIN))
                .collect();
            let ms = tick.as_millis().min(i32::MAX as u128) as i32;
            let _ = poll(
                &mut pfds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            pfds.iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        if ready.last().copied().unwrap_or(false) {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(wake_fd, &mut buf);
        }
        for (z, hit) in watch.iter().zip(ready.iter()) {
            if !hit || z.dead.load(Ordering::SeqCst) {
                continue;
            }
            let slot = &z.slot;
            let got = lock_any(&z.chan).recv(Some(Instant::now()));
            match got {
                Ok(r) => match r.message {
                    Message::Pong(p) => {
                        let verdict = lock(&inner.state).pings.answer(*slot, p.nonce);
                        if verdict == health::PongVerdict::Unsolicited {
                            tracing::warn!(
                                ?slot,
                                nonce = p.nonce,
                                "zygote sent a Pong nobody asked for; killing it"
                            );
                            inner.discard(*slot, true);
                        }
                    }

                    other => {
                        tracing::warn!(?slot, kind = ?other.kind(), "zygote sent an unexpected message; killing it");
                        inner.discard(*slot, true);
                    }
                },
                Err(ProtocolError::Timeout { .. }) => {}
                Err(e) => {
                    if !matches!(e, ProtocolError::Closed) {
                        tracing::warn!(?slot, error = %e, "zygote broke the protocol; killing it");
                    }
                    inner.discard(*slot, true);
                }
            }
        }
        drop(inner);
    }
}

fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    #[allow(unsafe_code)]
    // SAFETY: `fd` is the socket of a zygote whose `Arc` the caller holds for as long as it uses
    // the result (the `watch` list of one maintenance iteration), so the socket stays open.
    unsafe {
        BorrowedFd::borrow_raw(fd)
    }
}

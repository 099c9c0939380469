//! [`PoolBuilder`]: every knob of a pool, with its default and its cost, and [`Isolation`].
//! [`build`](PoolBuilder::build) turns the profile into one setup plan and starts the minimum
//! of zygotes and the maintenance thread.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hatchery_protocol::ShimMode;

use super::slots::{Policy, Slots};
use super::zygote::ProfilePlan;
use super::{
    default_profile, health, lock_any, maintenance, metrics, Config, Inner, Owner, Pool, PoolError,
    State,
};
use crate::container::Container;
use crate::plan;

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
    /// on cancellation, and when a call carries another tenant ([`CallRequest::tenant`](super::CallRequest::tenant)). State
    /// (memory, `/tmp`, processes it forked) persists across the calls of one worker, never
    /// across workers: retiring one kills its whole process tree and cleans up.
    Reuse {
        /// Calls one worker serves before it is replaced.
        max_requests: u64,
    },
}

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
    /// [`CallRequest`](super::CallRequest)s, made with [`Pool::call`] or [`Pool::call_typed`].
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
            return Err(PoolError::InvalidConfig {
                what: "Isolation::Reuse".into(),
                reason: "reuse needs a call-mode helper (PoolBuilder::call_helper)",
            });
        }
        match (self.profile.recording, self.helper.is_some()) {
            (crate::denial::Recording::Learn, _) => {
                return Err(PoolError::InvalidConfig {
                    what: "Container::learn".into(),
                    reason: "recording is for one-shot runs on trusted samples (hatchery learn), never a pool",
                })
            }
            (crate::denial::Recording::Explain, true) => {
                return Err(PoolError::InvalidConfig {
                    what: "Container::explain".into(),
                    reason: "call-mode helpers have no trusted supervisor per call to explain them; explain exec pools",
                })
            }
            _ => {}
        }
        if let Some(reason) = self.profile.pool_incompatible_op() {
            return Err(PoolError::InvalidConfig {
                what: "the profile's ops".into(),
                reason,
            });
        }
        if self.helper.is_none() {
            // Every writable tmpfs is mounted afresh for each request: a bind beneath one would
            // be hidden (and its landlock rule would name a missing path).
            if let Some((bind, tmpfs)) = hidden_bind(&self.profile) {
                return Err(PoolError::InvalidConfig {
                    what: format!("the bind mount at {bind}, beneath the tmpfs at {tmpfs}"),
                    reason: "every request gets that tmpfs afresh, which hides the bind: mount it elsewhere",
                });
            }
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
        crate::netns::pool_started();
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
            .spawn(move || maintenance::run(weak))
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

/// A bind mount of `profile` (its target) beneath one of its writable tmpfs mounts (its
/// target), if any: the pool mounts every writable tmpfs afresh per request, over the bind.
fn hidden_bind(profile: &Container) -> Option<(String, String)> {
    use crate::container::MountEntry;
    let tmpfs: Vec<&String> = profile
        .mounts
        .iter()
        .filter(|(_, m)| {
            matches!(
                m,
                MountEntry::Tmpfs {
                    read_only: false,
                    ..
                }
            )
        })
        .map(|(t, _)| t)
        .collect();
    profile
        .mounts
        .iter()
        .filter(|(_, m)| matches!(m, MountEntry::Bind { .. }))
        .find_map(|(target, _)| {
            tmpfs
                .iter()
                .find(|t| target != **t && std::path::Path::new(target).starts_with(t.as_str()))
                .map(|t| (target.clone(), (*t).clone()))
        })
}

#[cfg(test)]
mod hidden_bind_tests {
    use super::*;

    #[test]
    fn a_bind_beneath_a_per_request_tmpfs_is_found() {
        let mut c = Container::new();
        c.tmpfsmount("/tmp").bindmount_ro("/usr", "/usr");
        assert_eq!(hidden_bind(&c), None);
        c.bindmount_ro("/usr/share", "/tmp/share");
        assert_eq!(hidden_bind(&c), Some(("/tmp/share".into(), "/tmp".into())));
    }
}

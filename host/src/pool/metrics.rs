//! Pool metrics: counters updated lock-free on the request path, read as a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hatchery_protocol::Outcome;

/// Upper bounds (µs) of the latency histogram buckets; the last bucket is open-ended.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    5_000_000,
    30_000_000,
    u64::MAX,
];

const OUTCOMES: [&str; 9] = [
    "exited_ok",
    "exited_error",
    "signaled",
    "timed_out",
    "cpu_time_exceeded",
    "memory_exceeded",
    "output_exceeded",
    "violation",
    "setup_failed",
];

fn outcome_index(o: &Outcome) -> usize {
    match o {
        Outcome::Exited(0) => 0,
        Outcome::Exited(_) => 1,
        Outcome::Signaled { .. } => 2,
        Outcome::TimedOut => 3,
        Outcome::CpuTimeExceeded => 4,
        Outcome::MemoryExceeded => 5,
        Outcome::OutputExceeded => 6,
        Outcome::Violation { .. } => 7,
        _ => 8,
    }
}

/// Counters shared by the pool's threads.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    outcomes: [AtomicU64; 9],
    pub errors: AtomicU64,
    pub zygotes_started: AtomicU64,
    pub zygotes_failed: AtomicU64,
    pub restarts: AtomicU64,
    pub retired: AtomicU64,
    latency: [AtomicU64; 16],
}

impl Metrics {
    pub fn record(&self, outcome: &Outcome, total: Duration) {
        self.outcomes[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
        let us = total.as_micros() as u64;
        let b = LATENCY_BUCKETS_US
            .iter()
            .position(|&ub| us <= ub)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.latency[b].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, zygotes: ZygoteCounts, queue_depth: usize) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            zygotes,
            queue_depth,
            outcomes: OUTCOMES
                .iter()
                .zip(self.outcomes.iter())
                .map(|(n, c)| (*n, load(c)))
                .collect(),
            errors: load(&self.errors),
            zygotes_started: load(&self.zygotes_started),
            zygotes_failed: load(&self.zygotes_failed),
            restarts: load(&self.restarts),
            retired: load(&self.retired),
            latency_us: LATENCY_BUCKETS_US
                .iter()
                .zip(self.latency.iter())
                .map(|(b, c)| (*b, load(c)))
                .collect(),
        }
    }
}

/// Zygotes by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZygoteCounts {
    /// Being started.
    pub starting: usize,
    /// Ready and idle.
    pub warm: usize,
    /// Ready and running requests.
    pub busy: usize,
    /// Taking no new requests, retired once idle.
    pub draining: usize,
}

/// A point-in-time copy of the pool's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Zygotes by state.
    pub zygotes: ZygoteCounts,
    /// Requests waiting for a zygote.
    pub queue_depth: usize,
    /// Finished requests by outcome (`exited_ok`, `exited_error`, `signaled`, `timed_out`, …).
    pub outcomes: Vec<(&'static str, u64)>,
    /// Requests that ended in a host-side error ([`PoolError`](crate::pool::PoolError)).
    pub errors: u64,
    /// Zygotes started successfully.
    pub zygotes_started: u64,
    /// Zygotes that failed to start.
    pub zygotes_failed: u64,
    /// Zygotes that died or were killed as unhealthy and replaced.
    pub restarts: u64,
    /// Zygotes retired by policy (recycling, idle shrink, dedicated use).
    pub retired: u64,
    /// Latency histogram of finished requests: (bucket upper bound in µs, count).
    pub latency_us: Vec<(u64, u64)>,
}

impl MetricsSnapshot {
    /// Finished requests with this outcome name.
    pub fn outcome(&self, name: &str) -> u64 {
        self.outcomes
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// All finished requests.
    pub fn requests(&self) -> u64 {
        self.outcomes.iter().map(|(_, c)| c).sum()
    }
}

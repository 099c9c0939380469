//! hakoniwa's cgroups API ([`Resources`] with [`Cpu`], [`Memory`] and [`Pids`], given to
//! [`Container::cgroups_resources`](crate::Container::cgroups_resources)), over hatchery's own
//! per-container cgroups ([`crate::cgroup`]: v2, v1, or rlimits without either).
//!
//! ```text
//!  Cpu { quota, period }     ──▶ Limits::cpus = quota / period (cpu.max / CFS quota)
//!  Memory { limit, swap }    ──▶ Limits::memory, Limits::memory_swap (memory + swap, as OCI)
//!  Pids { limit }            ──▶ Limits::pids
//!  Cpu shares / weight, Memory reservation: not enforced by hatchery, so refused at spawn
//!  (Error::InvalidConfig) rather than ignored
//! ```
//!
//! Negative values mean "no limit", as in the OCI runtime spec.

/// The error of setting up a cgroup (hakoniwa's `cgroups::Error`).
pub use crate::cgroup::CgroupError as Error;

/// The CPU controller.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub(crate) shares: Option<u64>,
    pub(crate) period: Option<u64>,
    pub(crate) quota: Option<i64>,
}

impl Cpu {
    /// A relative weight (cgroup v2 `cpu.weight`, 1 to 10000). Not enforced by hatchery:
    /// spawning fails with [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    pub fn weight(&mut self, val: u64) -> &mut Self {
        self.shares = Some(val);
        self
    }

    /// A relative weight (cgroup v1 `cpu.shares`). Not enforced by hatchery, as
    /// [`weight`](Cpu::weight).
    pub fn shares(&mut self, val: u64) -> &mut Self {
        self.shares = Some(val);
        self
    }

    /// The period of the CPU bandwidth, in microseconds (default 100 000).
    pub fn period(&mut self, val: u64) -> &mut Self {
        self.period = Some(val);
        self
    }

    /// The CPU time the container may use per period, in microseconds (negative: no limit).
    pub fn quota(&mut self, val: i64) -> &mut Self {
        self.quota = Some(val);
        self
    }
}

/// The memory controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub(crate) reservation: Option<i64>,
    pub(crate) limit: Option<i64>,
    pub(crate) swap: Option<i64>,
}

impl Memory {
    /// A soft limit (`memory.low`). Not enforced by hatchery: spawning fails with
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    pub fn reservation(&mut self, val: i64) -> &mut Self {
        self.reservation = Some(val);
        self
    }

    /// The memory limit in bytes (negative: no limit).
    pub fn limit(&mut self, val: i64) -> &mut Self {
        self.limit = Some(val);
        self
    }

    /// The memory plus swap limit in bytes (negative: no limit).
    pub fn swap(&mut self, val: i64) -> &mut Self {
        self.swap = Some(val);
        self
    }
}

/// The pids controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pids {
    pub(crate) limit: Option<i64>,
}

impl Pids {
    /// The largest number of processes and threads (negative: no limit).
    pub fn limit(&mut self, val: i64) -> &mut Self {
        self.limit = Some(val);
        self
    }
}

/// The resources of a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub(crate) cpu: Option<Cpu>,
    pub(crate) memory: Option<Memory>,
    pub(crate) pids: Option<Pids>,
}

impl Resources {
    /// Sets the CPU controller.
    pub fn cpu(&mut self, cpu: Cpu) -> &mut Self {
        self.cpu = Some(cpu);
        self
    }

    /// Sets the memory controller.
    pub fn memory(&mut self, memory: Memory) -> &mut Self {
        self.memory = Some(memory);
        self
    }

    /// Sets the pids controller.
    pub fn pids(&mut self, pids: Pids) -> &mut Self {
        self.pids = Some(pids);
        self
    }

    /// hatchery's limits, or the first setting hatchery does not enforce.
    pub(crate) fn to_limits(self) -> Result<crate::cgroup::Limits, &'static str> {
        let positive = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u64);
        let mut l = crate::cgroup::Limits::default();
        if let Some(c) = self.cpu {
            if c.shares.is_some() {
                return Err("cpu shares/weight");
            }
            if let Some(q) = positive(c.quota) {
                let period = c.period.unwrap_or(100_000).max(1);
                l.cpus = Some(q as f64 / period as f64);
            }
        }
        if let Some(m) = self.memory {
            if m.reservation.is_some() {
                return Err("memory reservation");
            }
            l.memory = positive(m.limit);
            l.memory_swap = positive(m.swap);
        }
        if let Some(p) = self.pids {
            l.pids = positive(p.limit);
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_hatcherys_limits() {
        let mut r = Resources::default();
        r.cpu(*Cpu::default().quota(50_000).period(100_000))
            .memory(*Memory::default().limit(1 << 30).swap(2 << 30))
            .pids(*Pids::default().limit(64));
        let l = r.to_limits().unwrap();
        assert_eq!(l.cpus, Some(0.5));
        assert_eq!(
            (l.memory, l.memory_swap, l.pids),
            (Some(1 << 30), Some(2 << 30), Some(64))
        );
        r.pids(*Pids::default().limit(-1));
        assert_eq!(r.to_limits().unwrap().pids, None);
        r.cpu(*Cpu::default().shares(512));
        assert_eq!(r.to_limits(), Err("cpu shares/weight"));
    }
}

//! Memory, pids and CPU limits with cgroups, and the rlimit fallback.
//!
//! ```text
//!  mechanism (decided once per process)           per container (one-shot) / per zygote (pool)
//!  1. cgroup v2: $HATCHERY_CGROUP_PARENT (a        mkdir hatchery-<pid>-<n>, write the limits,
//!     delegated directory), or /sys/fs/cgroup      move the shim in right after clone (before it
//!     itself when root on a pure-v2 host          starts anything); OOM kills counted from
//!  2. cgroup v1 memory/pids/cpu hierarchies        memory.events / memory.oom_control turn a
//!     (root only)                                  SIGKILL into Outcome::MemoryExceeded;
//!  3. rlimits: memory → RLIMIT_AS, pids →          teardown: cgroup.kill (v2) or SIGKILL of
//!     RLIMIT_NPROC (counted per user namespace,    every member; wait until it is empty (poll
//!     i.e. per container); no CPU share            cgroup.events on v2, rmdir with backoff on
//!                                                  v1; at most 5 s), then rmdir
//! ```
//!
//! A cgroup holds a whole container: for a pool that is one zygote, which runs one request at a
//! time by default, so the limits apply per request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hatchery_protocol::Outcome;

/// Limits a container's processes share.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory in bytes (RAM; swap is not allowed on top where the kernel can say so, unless
    /// [`memory_swap`](Limits::memory_swap) allows it).
    pub memory: Option<u64>,
    /// Memory plus swap in bytes (hakoniwa's and the OCI spec's `memory.swap`): on cgroup v2,
    /// `memory.swap.max` is this minus [`memory`](Limits::memory); on v1,
    /// `memory.memsw.limit_in_bytes`. Without a cgroup it is `RLIMIT_AS` when `memory` is unset.
    pub memory_swap: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs (0.5 = half of one CPU).
    pub cpus: Option<f64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some()
            || self.memory_swap.is_some()
            || self.pids.is_some()
            || self.cpus.is_some()
    }
}

/// How limits are enforced on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mechanism {
    /// cgroup v2, beneath this directory.
    CgroupV2(PathBuf),
    /// cgroup v1 hierarchies (memory, pids, cpu), beneath our own cgroup in each.
    CgroupV1,
    /// No usable cgroup: memory and pids limits become `RLIMIT_AS` and `RLIMIT_NPROC`; a CPU
    /// limit cannot be enforced and is refused.
    Rlimits,
}

/// Setting up a cgroup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// Creating or configuring the cgroup failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CPU limit was asked for and no cgroup can enforce it.
    #[error(
        "a CPU limit needs a cgroup: run as root, or point HATCHERY_CGROUP_PARENT at a \
         delegated cgroup v2 directory with the cpu controller"
    )]
    CpuUnavailable,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn controllers(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default()
}

/// Enables memory, pids and cpu (where available) for the children of `dir`.
fn enable_controllers(dir: &Path) {
    let available = controllers(dir);
    for c in ["memory", "pids", "cpu"] {
        if available.split_whitespace().any(|a| a == c) {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

fn v2_parent() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HATCHERY_CGROUP_PARENT") {
        let p = PathBuf::from(p);
        if is_cgroup2(&p) {
            enable_controllers(&p);
            return Some(p);
        }
    }
    let root = Path::new("/sys/fs/cgroup");
    if is_root() && is_cgroup2(root) && controllers(root).contains("memory") {
        let dir = root.join("hatchery");
        enable_controllers(root);
        if std::fs::create_dir(&dir).is_ok() || dir.is_dir() {
            enable_controllers(&dir);
            return Some(dir);
        }
    }
    None
}

/// Our own cgroup path in the v1 hierarchy of `controller`.
fn v1_own_path(controller: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

fn v1_base(controller: &str) -> Option<PathBuf> {
    let mount = Path::new("/sys/fs/cgroup").join(controller);
    if !mount.is_dir() || is_cgroup2(&mount) {
        return None;
    }
    let own = v1_own_path(controller)?;
    Some(mount.join(own.trim_start_matches('/')))
}

/// The mechanism in force on this host (decided once).
pub fn mechanism() -> &'static Mechanism {
    static M: OnceLock<Mechanism> = OnceLock::new();
    M.get_or_init(|| {
        if let Some(p) = v2_parent() {
            return Mechanism::CgroupV2(p);
        }
        // Root of the host only: uid 0 of another user namespace (`unshare -r`, a rootless
        // container) is an ordinary user to the host's cgroup directories.
        let writable = |base: Option<PathBuf>| {
            base.is_some_and(|b| {
                nix::unistd::faccessat(
                    None,
                    &b,
                    nix::unistd::AccessFlags::W_OK,
                    nix::fcntl::AtFlags::AT_EACCESS,
                )
                .is_ok()
            })
        };
        if is_root() && writable(v1_base("memory")) && writable(v1_base("pids")) {
            return Mechanism::CgroupV1;
        }
        Mechanism::Rlimits
    })
}

/// A cgroup (one directory per v1 hierarchy) holding one container; removed on drop.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// (controller or "" for v2, directory).
    dirs: Vec<(&'static str, PathBuf)>,
    v2: bool,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io(&path))
}

/// `hatchery-<pid>-<token>-<n>`: the token is random per process, so a directory that an
/// earlier process with the same pid left behind (one killed with SIGKILL cannot remove its
/// cgroups; a server restarted in a container usually gets the same pid again) never collides
/// with a new one (`EEXIST` would fail every zygote start).
fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static TOKEN: OnceLock<u32> = OnceLock::new();
    let token = *TOKEN.get_or_init(|| {
        // std seeds every RandomState from the OS's random source, once per thread.
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32
    });
    format!(
        "hatchery-{}-{token:08x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// When the process now holding `pid` started, as a time (`None`: no such process), from its
/// start in clock ticks after boot; `boot` is the boot time and the tick rate.
fn process_start(pid: u32, boot: (std::time::SystemTime, u64)) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parentheses).
    let after = stat.rsplit_once(") ")?.1;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    Some(boot.0 + std::time::Duration::from_millis(ticks * 1000 / boot.1))
}

/// The boot time (`btime` in `/proc/stat`) and the clock tick rate.
fn boot_clock() -> Option<(std::time::SystemTime, u64)> {
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)? as u64;
    Some((
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(boot),
        hz,
    ))
}

/// How old an empty cgroup must be before a sweep removes it: a container's cgroup is populated
/// milliseconds after it is made, until its owner removes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `name` (`hatchery-<pid>-<token>-<n>`, made at `made`) was left by a process that is
/// gone: made more than [`STALE_AFTER`] ago, and none holds `<pid>` now or the one that does
/// started after the directory was made (a second of margin for the clocks' granularity). The
/// age alone keeps a cgroup another process (in another pid namespace, whose pids this one
/// cannot look up) is just setting up.
fn left_by_a_gone_process(
    name: &str,
    made: std::time::SystemTime,
    boot: (std::time::SystemTime, u64),
) -> bool {
    let old = std::time::SystemTime::now()
        .duration_since(made)
        .is_ok_and(|age| age > STALE_AFTER);
    if !old {
        return false;
    }
    let Some(pid) = name
        .strip_prefix("hatchery-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    match process_start(pid, boot) {
        None => true,
        Some(started) => made + std::time::Duration::from_secs(1) < started,
    }
}

/// Removes the empty cgroups that processes killed before they could clean up left in `parent`
/// (a host killed with SIGKILL cannot remove its cgroups). Only `hatchery-<pid>-…` directories
/// of gone processes are tried, and `rmdir` refuses a cgroup with processes or children, so no
/// live container is touched.
fn sweep_stale(parent: &Path) {
    let (Ok(entries), Some(boot)) = (std::fs::read_dir(parent), boot_clock()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("hatchery-")) else {
            continue;
        };
        let made = entry.metadata().and_then(|m| m.modified());
        if let Ok(made) = made {
            if left_by_a_gone_process(name, made, boot) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// [`sweep_stale`] over every directory this process makes its cgroups in, once per process
/// (before its first cgroup).
fn sweep_stale_once() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| match mechanism() {
        Mechanism::CgroupV2(parent) => sweep_stale(parent),
        Mechanism::CgroupV1 => {
            for controller in ["memory", "pids", "cpu"] {
                if let Some(base) = v1_base(controller) {
                    sweep_stale(&base);
                }
            }
        }
        Mechanism::Rlimits => {}
    });
}

impl Cgroup {
    /// A new cgroup with `limits`, or `None` when limits are enforced with rlimits (or there
    /// are none).
    pub fn create(limits: &Limits) -> Result<Option<Cgroup>, CgroupError> {
        if !limits.any() {
            return Ok(None);
        }
        let name = unique_name();
        sweep_stale_once();
        match mechanism() {
            Mechanism::Rlimits => {
                if limits.cpus.is_some() {
                    return Err(CgroupError::CpuUnavailable);
                }
                Ok(None)
            }
            Mechanism::CgroupV2(parent) => {
                let dir = parent.join(&name);
                std::fs::create_dir(&dir).map_err(io(&dir))?;
                let cg = Cgroup {
                    dirs: vec![("", dir.clone())],
                    v2: true,
                };
                if let Some(m) = limits.memory {
                    write(&dir, "memory.max", &m.to_string())?;
                    if limits.memory_swap.is_none() {
                        let _ = write(&dir, "memory.swap.max", "0");
                    }
                }
                if let Some(total) = limits.memory_swap {
                    let swap = total.saturating_sub(limits.memory.unwrap_or(0));
                    write(&dir, "memory.swap.max", &swap.to_string())?;
                }
                if let Some(p) = limits.pids {
                    write(&dir, "pids.max", &p.to_string())?;
                }
                if let Some(c) = limits.cpus {
                    write(
                        &dir,
                        "cpu.max",
                        &format!("{} 100000", ((c * 100_000.0) as u64).max(1000)),
                    )?;
                }
                Ok(Some(cg))
            }
            Mechanism::CgroupV1 => {
                let mut cg = Cgroup {
                    dirs: Vec::new(),
                    v2: false,
                };
                let mut make = |controller: &'static str| -> Result<PathBuf, CgroupError> {
                    let base = v1_base(controller).ok_or_else(|| CgroupError::Io {
                        path: PathBuf::from("/sys/fs/cgroup").join(controller),
                        source: std::io::Error::from_raw_os_error(libc::ENOENT),
                    })?;
                    let dir = base.join(&name);
                    std::fs::create_dir(&dir).map_err(io(&dir))?;
                    cg.dirs.push((controller, dir.clone()));
                    Ok(dir)
                };
                // Memory is always created: it reports OOM kills.
                let mem = make("memory")?;
                if let Some(m) = limits.memory {
                    write(&mem, "memory.limit_in_bytes", &m.to_string())?;
                }
                if let Some(total) = limits.memory_swap.or(limits.memory) {
                    if mem.join("memory.memsw.limit_in_bytes").exists() {
                        write(&mem, "memory.memsw.limit_in_bytes", &total.to_string())?;
                    }
                }
                if let Some(p) = limits.pids {
                    let dir = make("pids")?;
                    write(&dir, "pids.max", &p.to_string())?;
                }
                if let Some(c) = limits.cpus {
                    let dir = make("cpu")?;
                    write(&dir, "cpu.cfs_period_us", "100000")?;
                    write(
                        &dir,
                        "cpu.cfs_quota_us",
                        &((c * 100_000.0) as u64).max(1000).to_string(),
                    )?;
                }
                Ok(Some(cg))
            }
        }
    }

    /// Moves process `pid` (and its future children) in.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// v1: every hierarchy's `tasks` file, opened for writing, for the shim to write `0` into
    /// (it moves itself in: one thread moving itself does not take the kernel's global
    /// threadgroup lock, whose write side waits for an RCU grace period whenever no migration
    /// happened in the last few milliseconds; writing a pid into `cgroup.procs` takes it).
    /// `None` on v2, where `cgroup.procs` takes the lock whoever writes it and a thread can
    /// move alone only within a threaded subtree: the host attaches the shim instead.
    pub fn self_join_files(&self) -> Result<Option<Vec<std::os::fd::OwnedFd>>, CgroupError> {
        if self.v2 {
            return Ok(None);
        }
        self.dirs
            .iter()
            .map(|(_, dir)| {
                let path = dir.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(io(&path))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// v2: the cgroup's directory, opened for `clone3`'s `CLONE_INTO_CGROUP`; `None` on v1 (or
    /// when it cannot be opened).
    pub fn open_v2_dir(&self) -> Option<std::os::fd::OwnedFd> {
        if !self.v2 {
            return None;
        }
        std::fs::File::open(&self.dirs[0].1)
            .ok()
            .map(std::os::fd::OwnedFd::from)
    }

    /// OOM kills in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        self.dirs
            .iter()
            .find(|(c, _)| c.is_empty() || *c == "memory")
            .and_then(|(_, d)| std::fs::read_to_string(d.join(file)).ok())
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(key))
                        .then(|| it.next()?.parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0)
    }

    fn members(&self) -> Vec<i32> {
        self.dirs
            .iter()
            .filter_map(|(_, d)| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }
}

/// How a request that ran in a cgroup ended, with its OOM kills taken into account: a SIGKILL
/// while the cgroup's OOM-kill count rose during the request is [`Outcome::MemoryExceeded`];
/// anything else is `outcome` unchanged. `before` is the count when the request started;
/// `after` reads it now and is called only for a SIGKILL (the cgroup is read then, not after
/// every request).
///
/// The one rule for the one-shot command and the pool. A cgroup holds one container; when a
/// zygote runs several requests at once (`max_concurrent_per_zygote`), an OOM kill of one of
/// them during another's SIGKILL is attributed to both.
pub(crate) fn oom_outcome(outcome: Outcome, before: u64, after: impl FnOnce() -> u64) -> Outcome {
    match outcome {
        Outcome::Signaled { signal, .. } if signal == libc::SIGKILL && after() > before => {
            Outcome::MemoryExceeded
        }
        other => other,
    }
}

/// How long teardown waits for a killed cgroup to empty before giving up (and logging).
const TEARDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Cgroup {
    /// Kills every member: `cgroup.kill` on v2, SIGKILL to each pid in `cgroup.procs` on v1.
    fn kill_members(&self) {
        if self.v2 {
            let _ = write(&self.dirs[0].1, "cgroup.kill", "1");
        } else {
            for pid in self.members() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// v2: waits (poll on `cgroup.events`, which the kernel signals on every change) until the
    /// cgroup is no longer populated, or `deadline`.
    fn wait_empty_v2(&self, deadline: std::time::Instant) {
        use std::io::{Read, Seek};
        use std::os::fd::AsFd;
        let path = self.dirs[0].1.join("cgroup.events");
        let Ok(mut f) = std::fs::File::open(&path) else {
            return;
        };
        loop {
            let mut s = String::new();
            if f.rewind().is_err() || f.read_to_string(&mut s).is_err() {
                return;
            }
            if s.lines().any(|l| l.trim() == "populated 0") {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let mut pfd = [nix::poll::PollFd::new(
                f.as_fd(),
                nix::poll::PollFlags::POLLPRI,
            )];
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let _ = nix::poll::poll(
                &mut pfd,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            );
        }
    }
}

/// Removes `dir`, retrying with exponential backoff while it is busy (v1 has no notification
/// that a cgroup emptied), re-killing members each time (`kill_again`), until `deadline`.
fn remove_with_backoff(dir: &Path, deadline: std::time::Instant, kill_again: &dyn Fn()) {
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    tracing::warn!(dir = %dir.display(), "cgroup still busy; left behind");
                    return;
                }
                kill_again();
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
                return;
            }
        }
    }
}

impl Drop for Cgroup {
    /// Kills every member, waits for the cgroup to empty (bounded by [`TEARDOWN_LIMIT`]) and
    /// removes every directory. Dying processes leave a cgroup asynchronously (a large address
    /// space takes a while to free), so removing right after the kill can fail with `EBUSY`.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + TEARDOWN_LIMIT;
        self.kill_members();
        if self.v2 {
            self.wait_empty_v2(deadline);
        }
        for (_, dir) in &self.dirs {
            remove_with_backoff(dir, deadline, &|| self.kill_members());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(signal: i32) -> Outcome {
        Outcome::Signaled {
            signal,
            core_dumped: false,
        }
    }

    #[test]
    fn a_sigkill_with_new_oom_kills_is_memory_exceeded() {
        assert_eq!(
            oom_outcome(killed(libc::SIGKILL), 0, || 1),
            Outcome::MemoryExceeded
        );
        assert_eq!(
            oom_outcome(killed(libc::SIGKILL), 3, || 5),
            Outcome::MemoryExceeded
        );
    }

    #[test]
    fn old_oom_kills_are_not_this_requests() {
        // Kills before the request started (an earlier request's) do not count.
        assert_eq!(
            oom_outcome(killed(libc::SIGKILL), 2, || 2),
            killed(libc::SIGKILL)
        );
        assert_eq!(
            oom_outcome(killed(libc::SIGKILL), 0, || 0),
            killed(libc::SIGKILL)
        );
    }

    #[test]
    fn only_a_sigkill_can_be_an_oom_kill_and_only_then_is_the_cgroup_read() {
        let unread = || -> u64 { panic!("the cgroup must not be read") };
        for outcome in [
            Outcome::Exited(0),
            Outcome::Exited(137),
            killed(libc::SIGSEGV),
            killed(libc::SIGTERM),
            Outcome::TimedOut,
            Outcome::OutputExceeded,
        ] {
            assert_eq!(oom_outcome(outcome.clone(), 0, unread), outcome);
        }
    }

    #[test]
    fn no_limits_no_cgroup() {
        assert!(Cgroup::create(&Limits::default()).unwrap().is_none());
        assert!(!Limits::default().any());
    }
}

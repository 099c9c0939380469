//! Starting a shim in new namespaces and handing it its plan.
//!
//! ```text
//!  host thread                                   child (CLONE_VM|CLONE_VFORK)      shim
//!  prepare fds, argv  ──clone(NEW*)──────────▶   fds 0-3, caps→ambient ──execveat─▶ Hello
//!  (resumes at exec)
//!  write uid_map/gid_map (or newuidmap)
//!  send SetupPlan + fds ─────────────────────────────────────────────────────────▶ build root
//!  receive Hello (version check) ◀──────────────────────────────────────────────
//! ```
//!
//! The plan is sent without waiting for Hello (it queues in the socket), so starting a shim
//! costs one clone, one exec and the map writes on the host's side.

pub(crate) mod clone_child;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hatchery_protocol::frame::MAX_PLAN_FDS;
use hatchery_protocol::{Channel, Kind, Message, SetupPlan, Usage};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::idmap::{self, IdMap};
use crate::shim_binary;

/// How long a shim may take to start and say Hello.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
pub(crate) struct StartSpec<'a> {
    /// `CLONE_NEW*` flags (user, mount and pid are always added).
    pub clone_flags: libc::c_int,
    pub uid_maps: &'a [IdMap],
    pub gid_maps: &'a [IdMap],
    /// The plan; `ids.setgroups_allowed` is filled in here.
    pub plan: SetupPlan,
    /// Fds sent with the plan.
    pub plan_fds: Vec<BorrowedFd<'a>>,
    /// Process title.
    pub title: &'a str,
    /// The cgroup to create for the shim, which joins it right after clone, before it starts
    /// anything (see [`CgroupSpec`]).
    pub cgroup: CgroupSpec<'a>,
    /// An existing cgroup's directory (hakurei's cgroup fd), joined the same way.
    pub existing_cgroup: Option<BorrowedFd<'a>>,
    /// A network namespace the host made to clone the shim into (without `CLONE_NEWNET` then),
    /// kept with the shim and given back once it is reaped (see [`netns`](crate::netns)).
    pub netns: Option<crate::netns::Lease>,
}

/// The container's own cgroup. On v1 it is created after the clone, while the shim starts up on
/// the other core (the shim waits for its plan, so nothing of the container runs before it
/// joined); on v2 before it, and the shim is cloned into it (`CLONE_INTO_CGROUP`).
#[derive(Clone, Copy)]
pub(crate) struct CgroupSpec<'a> {
    /// Its limits (no cgroup when there are none, or when they are enforced with rlimits).
    pub limits: &'a crate::cgroup::Limits,
    /// Go on without a cgroup when it cannot be created (hakoniwa's runctl).
    pub ignore_failure: bool,
}

/// A running shim that accepted its plan.
#[derive(Debug)]
pub(crate) struct ShimProcess {
    pub pid: Pid,
    pub chan: Channel,
    /// How long the host's side of the start took, step by step.
    pub host_steps: Vec<(String, Duration)>,
    /// The cgroup created for it (from [`StartSpec::cgroup`]), which it joined.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// The network namespace it was cloned into ([`StartSpec::netns`]).
    pub netns: Option<crate::netns::Lease>,
}

impl ShimProcess {
    /// SIGKILLs the shim (and with it its whole pid namespace) and reaps it.
    pub fn kill_and_reap(&self) -> Option<nix::sys::wait::WaitStatus> {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        reap(self.pid)
    }

    /// Kills and reaps the shim after `e` broke the conversation while the host was doing
    /// `op`: a closed socket means the shim died, anything else is a protocol error.
    fn lost(&self, op: &'static str, e: hatchery_protocol::ProtocolError) -> Error {
        let status = self.kill_and_reap();
        match e {
            hatchery_protocol::ProtocolError::Closed => Error::ShimLost {
                status: crate::error::ShimEnd::from_wait(status),
            },
            other => Error::Protocol { op, source: other },
        }
    }

    /// Waits for the end of stage 1: `Ready`, or a typed error (the shim's `SetupFailed`, another
    /// message, a timeout, the shim dying), after which the shim is killed and reaped.
    pub fn await_ready(&mut self, op: &'static str) -> Result<hatchery_protocol::Ready> {
        let got = self.chan.recv(Some(Instant::now() + START_TIMEOUT));
        let err = match got {
            Ok(r) => match r.message {
                Message::Ready(ready) => return Ok(ready),
                Message::SetupFailed(f) => Error::Setup {
                    step: f.step,
                    errno: f.errno,
                    detail: f.detail,
                },
                other => Error::Protocol {
                    op,
                    source: hatchery_protocol::ProtocolError::UnexpectedMessage {
                        expected: Kind::Ready.name(),
                        got: other.kind(),
                    },
                },
            },
            Err(e) => return Err(self.lost(op, e)),
        };
        self.kill_and_reap();
        Err(err)
    }
}

/// Waits for `pid`, retrying on EINTR.
pub(crate) fn reap(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(s) => return Some(s),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn high_cloexec(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map(|raw| {
            #[allow(unsafe_code)]
            // SAFETY: F_DUPFD_CLOEXEC just created `raw`; nothing else owns it.
            unsafe {
                std::os::fd::FromRawFd::from_raw_fd(raw)
            }
        })
        .map_err(|e| Error::io("dup")(e.into()))
}

/// Starts a shim: clone + exec, id maps, plan. On any error the child is killed and reaped.
pub(crate) fn start(spec: StartSpec<'_>) -> Result<ShimProcess> {
    start_with(spec, |_| Ok(()))
}

/// [`start`], running `before_plan(pid)` once the id maps are written and before the plan is
/// sent (the shim waits for its plan, so nothing of the container is built yet): the place to
/// configure the container's namespaces from the host, e.g. its network.
pub(crate) fn start_with(
    spec: StartSpec<'_>,
    before_plan: impl FnOnce(Pid) -> Result<()>,
) -> Result<ShimProcess> {
    let launched = launch(LaunchSpec {
        clone_flags: spec.clone_flags,
        uid_maps: spec.uid_maps,
        gid_maps: spec.gid_maps,
        title: spec.title,
        cgroup: spec.cgroup,
        netns: spec.netns,
    })?;
    hand_plan(
        launched,
        spec.plan,
        spec.plan_fds,
        spec.existing_cgroup,
        before_plan,
    )
}

/// The part of a [`StartSpec`] that does not depend on the plan.
pub(crate) struct LaunchSpec<'a> {
    pub clone_flags: libc::c_int,
    pub uid_maps: &'a [IdMap],
    pub gid_maps: &'a [IdMap],
    pub title: &'a str,
    pub cgroup: CgroupSpec<'a>,
    pub netns: Option<crate::netns::Lease>,
}

/// A shim cloned into its namespaces, its id maps written and its cgroup made, waiting for its
/// plan: the part of a start that no plan decides (see [`spare`](crate::spare)).
#[derive(Debug)]
pub(crate) struct Launched {
    shim: ShimProcess,
    /// It was cloned into its cgroup (v2).
    born_in: bool,
    /// What the id maps allow (`SetupPlan::ids.setgroups_allowed`).
    setgroups_allowed: bool,
}

impl Launched {
    /// Whether the shim is still waiting for its plan: its socket not hung up (one `poll`; its
    /// Hello may be queued).
    pub(crate) fn alive(&self) -> bool {
        use std::os::fd::AsFd;
        let fd = self.shim.chan.as_fd();
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::empty())];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Kills and reaps the shim, removes its cgroup and gives its network namespace back.
    pub(crate) fn discard(mut self) {
        let reaped = self.shim.kill_and_reap().is_some();
        drop(self.shim.cgroup.take());
        if let (true, Some(ns)) = (reaped, self.shim.netns.take()) {
            crate::netns::give_back(ns);
        }
    }

    /// Closes this process's fds of a shim that is another process's child (a copy inherited by
    /// a fork): neither killed nor reaped here, its cgroup left to its parent.
    pub(crate) fn abandon(mut self) {
        std::mem::forget(self.shim.cgroup.take());
        drop(self.shim.netns.take());
    }

    /// Its network namespace, to be marked as exposed by a container given a socket.
    pub(crate) fn netns_mut(&mut self) -> Option<&mut crate::netns::Lease> {
        self.shim.netns.as_mut()
    }

    /// Notes that this shim was started ahead of its container.
    pub(crate) fn started_ahead(&mut self, took: Duration) {
        self.shim.host_steps = vec![("host: a shim started ahead (spare)".to_string(), took)];
    }
}

/// Clones and execs a shim, writes its id maps and makes its cgroup. On any error the child is
/// killed and reaped.
pub(crate) fn launch(spec: LaunchSpec<'_>) -> Result<Launched> {
    let mut flags = spec.clone_flags | libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    if spec.netns.is_some() {
        flags &= !libc::CLONE_NEWNET;
    }
    let mut host_steps = Vec::new();
    // cgroup v2: the cgroup is made first and the shim is cloned straight into it, so nothing
    // migrates it (a write into `cgroup.procs` waits for an RCU grace period after a pause).
    let t = Instant::now();
    let early = born_in_cgroup(spec.cgroup)?;
    if !matches!(early, Early::NotTried) {
        host_steps.push((
            "host: cgroup create (v2, before the clone)".to_string(),
            t.elapsed(),
        ));
    }
    let (pid, host_end, born_in) = loop {
        let t = Instant::now();
        let shim = shim_binary::for_exec()?;
        host_steps.push(("host: shim memfd (first use only)".to_string(), t.elapsed()));
        let t = Instant::now();
        let (pid, host_end, born_in, exec_error) =
            clone_shim(flags, shim, spec.title, &early, spec.netns.as_ref())?;
        host_steps.push(("host: clone + exec shim".to_string(), t.elapsed()));
        match exec_error {
            None => break (pid, host_end, born_in),
            Some(errno) => {
                reap(pid);
                if !matches!(shim, shim_binary::ShimExec::Cached(_)) {
                    return Err(Error::ShimExec { errno });
                }
                // The cached copy could not be executed from where it is (a mount the
                // container's namespace cannot clone, say): the sealed memfd from now on.
                shim_binary::cached_exec_failed();
            }
        }
    };
    let mut shim_proc = ShimProcess {
        pid,
        chan: host_end,
        host_steps: Vec::new(),
        cgroup: None,
        netns: spec.netns,
    };
    let t = Instant::now();
    let setgroups_allowed = match idmap::write_maps(pid.as_raw(), spec.uid_maps, spec.gid_maps) {
        Ok(allowed) => allowed,
        Err(e) => {
            shim_proc.kill_and_reap();
            return Err(e);
        }
    };
    host_steps.push(("host: id maps".to_string(), t.elapsed()));
    let t = Instant::now();
    if let Early::Made(cg, _) = early {
        shim_proc.cgroup = Some(cg);
    } else if spec.cgroup.limits.any() && !matches!(early, Early::Failed) {
        match crate::cgroup::Cgroup::create(spec.cgroup.limits) {
            Ok(cg) => shim_proc.cgroup = cg,
            Err(_) if spec.cgroup.ignore_failure => {}
            Err(e) => {
                shim_proc.kill_and_reap();
                return Err(e.into());
            }
        }
        host_steps.push(("host: cgroup create".to_string(), t.elapsed()));
    }
    shim_proc.host_steps = host_steps;
    Ok(Launched {
        shim: shim_proc,
        born_in,
        setgroups_allowed,
    })
}

/// Moves a [`Launched`] shim into its cgroup (v1: it joins itself), joins `existing_cgroup`,
/// runs `before_plan(pid)` and sends the plan. On any error the shim is killed and reaped.
pub(crate) fn hand_plan(
    launched: Launched,
    mut plan: SetupPlan,
    plan_fds: Vec<BorrowedFd<'_>>,
    existing_cgroup: Option<BorrowedFd<'_>>,
    before_plan: impl FnOnce(Pid) -> Result<()>,
) -> Result<ShimProcess> {
    let Launched {
        shim: mut shim_proc,
        born_in,
        setgroups_allowed,
    } = launched;
    let pid = shim_proc.pid;
    let mut host_steps = std::mem::take(&mut shim_proc.host_steps);
    plan.ids.setgroups_allowed = setgroups_allowed;
    let t = Instant::now();
    // v1: the shim moves itself in, first thing (see `Cgroup::self_join_files`), unless the
    // plan's fds leave no room for the files (a plan carries at most `MAX_PLAN_FDS`).
    let join = match shim_proc.cgroup.as_ref().map(|cg| cg.self_join_files()) {
        Some(Ok(Some(files))) if plan_fds.len() + files.len() <= MAX_PLAN_FDS => files,
        Some(Err(e)) => {
            shim_proc.kill_and_reap();
            return Err(e.into());
        }
        _ => Vec::new(),
    };
    if join.is_empty() && !born_in {
        if let Some(cg) = &shim_proc.cgroup {
            if let Err(e) = cg.attach(pid.as_raw()) {
                shim_proc.kill_and_reap();
                return Err(e.into());
            }
        }
    }
    plan.join_cgroups = join.len() as u8;
    // (A new binding: the join files live shorter than the caller's fds.)
    let mut plan_fds: Vec<BorrowedFd<'_>> = plan_fds;
    // Without a cgroup of its own the shim is where the namespace made at clone time is rooted.
    plan.cgroup_namespace &= shim_proc.cgroup.is_some() || existing_cgroup.is_some();
    plan_fds.extend(join.iter().map(|f| f.as_fd()));
    if let Some(dir) = existing_cgroup {
        let procs = format!("/proc/self/fd/{}/cgroup.procs", dir.as_raw_fd());
        if let Err(e) = std::fs::write(&procs, pid.as_raw().to_string()) {
            shim_proc.kill_and_reap();
            return Err(Error::Io {
                op: "joining the given cgroup (writing its cgroup.procs)",
                source: e,
            });
        }
    }
    if !join.is_empty() {
        host_steps.push((
            "host: cgroup tasks files (the shim joins)".to_string(),
            t.elapsed(),
        ));
    } else if (shim_proc.cgroup.is_some() && !born_in) || existing_cgroup.is_some() {
        host_steps.push(("host: cgroup attach".to_string(), t.elapsed()));
    }
    let t = Instant::now();
    if let Err(e) = before_plan(pid) {
        shim_proc.kill_and_reap();
        return Err(e);
    }
    let deadline = Some(Instant::now() + START_TIMEOUT);
    let sent = shim_proc
        .chan
        .send(&Message::SetupPlan(Box::new(plan)), &plan_fds, deadline);
    let hello = sent.and_then(|()| shim_proc.chan.recv_expect(Kind::Hello, deadline));
    match hello {
        Ok(_) => {
            host_steps.push(("host: send plan + hello".to_string(), t.elapsed()));
            shim_proc.host_steps = host_steps;
            Ok(shim_proc)
        }
        Err(e) => Err(shim_proc.lost("starting the shim", e)),
    }
}

/// Clones the shim's child into `flags`' new namespaces (into the cgroup of `early` when there
/// is one to be born in, and into `netns` when given) and waits for its exec. Returns its pid, the
/// host end of its control socket, whether it was born in the cgroup, and the errno of a failed
/// exec (the child is then a zombie to reap).
fn clone_shim(
    flags: libc::c_int,
    shim: shim_binary::ShimExec,
    title: &str,
    early: &Early,
    netns: Option<&crate::netns::Lease>,
) -> Result<(Pid, Channel, bool, Option<i32>)> {
    let (host_end, guest_end) = Channel::pair().map_err(Error::protocol("creating the socket"))?;
    let devnull: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(Error::io("open /dev/null"))?
        .into();
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("pipe2")(e.into()))?;
    // Lift every fd the child handles above 3, so its dup2s onto 0-3 cannot clobber them.
    let devnull = high_cloexec(devnull.as_fd())?;
    let guest = high_cloexec(guest_end.as_fd())?;
    drop(guest_end);
    let err_w = high_cloexec(err_w.as_fd())?;
    let shim_fd;
    let source = match shim {
        shim_binary::ShimExec::Sealed(s) => {
            shim_fd = high_cloexec(s.fd())?;
            clone_child::Shim::Sealed(shim_fd.as_fd())
        }
        shim_binary::ShimExec::Cached(c) => clone_child::Shim::Cached {
            path: &c.path,
            id: c.id,
        },
    };
    let prepared =
        clone_child::Prepared::new(source, devnull.as_fd(), guest.as_fd(), err_w.as_fd(), title);
    let spawn = |cgroup: Option<BorrowedFd<'_>>| match netns {
        Some(ns) => ns
            .around(|| clone_child::spawn(flags, &prepared, cgroup))
            .map_err(|e| e as i32)
            .and_then(|r| r),
        None => clone_child::spawn(flags, &prepared, cgroup),
    };
    let into = match early {
        Early::Made(_, dir) => match spawn(Some(dir.as_fd())) {
            Ok(pid) => Some(pid),
            Err(errno) => {
                // No clone3 (before 5.3, or a container's seccomp profile answering ENOSYS) or no
                // CLONE_INTO_CGROUP (before 5.7): not worth trying again in this process. Other
                // errors may be this clone's own (a refused user namespace): tried again.
                if matches!(errno, libc::ENOSYS | libc::E2BIG) {
                    CLONE3_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                None
            }
        },
        _ => None,
    };
    let pid = match into {
        Some(pid) => pid,
        None => spawn(None).map_err(|errno| Error::Clone { errno })?,
    };
    drop(prepared);
    drop(guest);
    drop(err_w);
    let exec_error = clone_child::read_exec_error(err_r.as_raw_fd());
    Ok((Pid::from_raw(pid), host_end, into.is_some(), exec_error))
}

/// What [`born_in_cgroup`] did.
enum Early {
    /// Nothing: the cgroup (if any) is made after the clone.
    NotTried,
    /// The cgroup could not be made and the spec ignores that (hakoniwa's runctl): no cgroup.
    Failed,
    /// The cgroup, and its directory opened for `CLONE_INTO_CGROUP`.
    Made(crate::cgroup::Cgroup, OwnedFd),
}

/// `clone3` into a cgroup failed in a way that will not change in this process.
static CLONE3_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the container's cgroup before the clone, to clone the shim into it: on cgroup v2 where
/// this architecture can, unless the limits hold a CPU bandwidth (the child runs in the cgroup
/// from its first instruction, while the host's thread waits for its exec: a small `cpu.max`
/// would throttle the host's thread too) or `clone3` was refused before. Otherwise the cgroup
/// is made after the clone, while the shim starts. A cgroup that cannot be made fails the
/// start, unless `ignore_failure`, as it would after the clone.
fn born_in_cgroup(spec: CgroupSpec<'_>) -> Result<Early> {
    if !clone_child::CAN_CLONE_INTO_CGROUP
        || !spec.limits.any()
        || spec.limits.cpus.is_some()
        || CLONE3_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
        || !matches!(
            crate::cgroup::mechanism(),
            crate::cgroup::Mechanism::CgroupV2(_)
        )
    {
        return Ok(Early::NotTried);
    }
    let cg = match crate::cgroup::Cgroup::create(spec.limits) {
        Ok(Some(cg)) => cg,
        Ok(None) => return Ok(Early::NotTried),
        Err(_) if spec.ignore_failure => return Ok(Early::Failed),
        Err(e) => return Err(e.into()),
    };
    // A directory that cannot be opened: the cgroup is dropped (removed) and made again after
    // the clone, the usual way.
    Ok(match cg.open_v2_dir() {
        Some(dir) => Early::Made(cg, dir),
        None => Early::NotTried,
    })
}

/// SIGKILLs `pid` and reaps it with `wait4`, returning the raw wait status and its rusage (which
/// covers the descendants it reaped itself; `wall_us` is 0: the caller knows when it started).
#[allow(unsafe_code)]
pub(crate) fn kill_and_reap_with_usage(pid: Pid) -> (i32, Usage) {
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `ru` are valid for writes for the duration of the call.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut ru) };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let us = |tv: libc::timeval| (tv.tv_sec as u64) * 1_000_000 + tv.tv_usec as u64;
    (
        status,
        Usage {
            wall_us: 0,
            user_us: us(ru.ru_utime),
            sys_us: us(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
        },
    )
}

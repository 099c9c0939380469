//! Zygote mode: serve requests in the finished container, one fresh process tree per request.
//!
//! ```text
//!  zygote (PID 1, single-threaded)
//!  poll: control socket, signalfd,   one at a time: vfork ─▶ command, in the zygote's own mount
//!        every reply socket,           and IPC namespaces, renewed per request (below)
//!        deadlines                   several at once: clone(NEWPID|NEWNS|NEWIPC) ─▶ request root
//!                                      (PID 1 of its own pid ns): fresh tmpfs, fresh /proc,
//!                                      vfork ─▶ command
//!  reap ─▶ Response on the request's reply socket (exactly one per request)
//! ```
//!
//! The zygote never runs guest code and stays pristine. A zygote serving one request at a time
//! runs it in its own namespaces and renews them: right after the start it moves itself to a
//! fresh IPC namespace (the request keeps the old one, which dies with its last process), and
//! after the command exits it kills and reaps every other process (`kill(-1)` from PID 1), then
//! mounts fresh instances of the private tmpfs mounts over the detached ones (`renew`), so files
//! in its tmpfs, its processes and its SysV/POSIX IPC objects are gone before the next request.
//! When a renewal cannot be done, and for zygotes that run several requests at once, every request
//! gets its own pid, mount and IPC namespaces under a request root. A wall-time limit, a Cancel,
//! or the host closing the reply socket SIGKILLs the request (the request root, which takes its
//! pid namespace with it, or every process but the zygote).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use hatchery_protocol::{
    Channel, FdSlot, Features, Message, MountOp, Outcome, Ready, Request, Resource, Response,
    Rlimit, SetupFailure, SetupPlan, SetupStep, Usage, Work, DEFAULT_SHM_BYTES,
    DEFAULT_TMPFS_BYTES,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;

use hatchery_sys as sys;

use crate::shim::child;
use crate::shim::confine::{self, Confinement};
use crate::shim::explain::{Explainer, Handled};
use crate::shim::launch::{self, LaunchRequest};
use crate::shim::reap;
use crate::shim::verdict::{self, Seen, Watch};

/// A request being served.
struct Running {
    id: u64,
    pid: libc::pid_t,
    reply: Channel,
    started: Instant,
    spawn_us: u64,
    /// The request root's report of the command's status; `None` when the command runs as a
    /// single process in the zygote's own (renewed) namespaces, reaped directly.
    status: Option<OwnedFd>,
    cpu_limit: Option<u64>,
    /// Its deadline, and why the zygote killed it, if it did.
    watch: Watch,
    /// Its seccomp filter's notification listener (never held by the guest).
    listener: Option<OwnedFd>,
    /// Explaining its denials, if the plan asks.
    explainer: Option<Explainer>,
    /// The output cap and the regular files it writes to, with their sizes at the start.
    outputs: Option<OutputWatch>,
    /// It was given a socket, over which it could send fds out of the container (a `/proc` file
    /// of its network namespace, say, which holds the namespace without a socket in it).
    given_socket: bool,
}

/// Detects that a request reached its output cap, whatever it did about it. `RLIMIT_FSIZE` is
/// the cap plus one byte, so a file larger than the cap is one the command tried to make larger
/// still: the outcome is `OutputExceeded` even if it ignored `SIGXFSZ` and exited 0 (or 1) after
/// `EFBIG`.
struct OutputWatch {
    cap: u64,
    /// Its stdout, stderr and named fds that are regular files (captures are memfds) opened for
    /// writing, each with its size when the request started.
    files: Vec<(OwnedFd, u64)>,
}

impl OutputWatch {
    fn new(cap: u64, moves: &[(OwnedFd, i32)]) -> OutputWatch {
        let mut files = Vec::new();
        for (fd, target) in moves {
            if *target == 0 {
                continue;
            }
            let writable = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
                .is_ok_and(|fl| fl & libc::O_ACCMODE != libc::O_RDONLY);
            let size = match nix::sys::stat::fstat(fd.as_raw_fd()) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => st.st_size as u64,
                _ => continue,
            };
            if writable {
                if let Ok(dup) = fd.try_clone() {
                    files.push((dup, size));
                }
            }
        }
        OutputWatch { cap, files }
    }

    /// Whether some output grew past the cap.
    fn exceeded(&self) -> bool {
        self.files.iter().any(|(fd, start)| {
            nix::sys::stat::fstat(fd.as_raw_fd())
                .is_ok_and(|st| st.st_size as u64 > self.cap && st.st_size as u64 > *start)
        })
    }
}

/// Private mounts every request gets, derived from the plan.
/// Each tmpfs: (container path, size, mode, whether a request's `tmp_bytes` may resize it). Every
/// one has a size: the plan's, [`DEFAULT_TMPFS_BYTES`] when it has none, and
/// [`DEFAULT_SHM_BYTES`] for a devfs's `/dev/shm`.
struct PrivateMounts {
    tmpfs: Vec<(String, u64, Option<u64>, u32, bool)>,
    proc: Vec<String>,
}

impl PrivateMounts {
    fn from_plan(plan: &SetupPlan) -> PrivateMounts {
        let mut tmpfs = Vec::new();
        let mut proc = Vec::new();
        for op in &plan.mounts {
            match op {
                MountOp::Tmpfs {
                    target,
                    size_bytes,
                    nr_inodes,
                    mode,
                    read_only: false,
                } => tmpfs.push((
                    String::from_utf8_lossy(&target.0).into_owned(),
                    size_bytes.unwrap_or(DEFAULT_TMPFS_BYTES),
                    *nr_inodes,
                    *mode,
                    true,
                )),
                MountOp::Devfs { target, .. } => tmpfs.push((
                    format!(
                        "{}/shm",
                        String::from_utf8_lossy(&target.0).trim_end_matches('/')
                    ),
                    DEFAULT_SHM_BYTES,
                    None,
                    0o1777,
                    false,
                )),
                MountOp::Proc { target } => {
                    proc.push(String::from_utf8_lossy(&target.0).into_owned())
                }
                _ => {}
            }
        }
        PrivateMounts { tmpfs, proc }
    }

    /// Whether `path` (absolute, without `.` or `..`) lies strictly inside one of the private
    /// tmpfs mounts.
    fn holds(&self, path: &str) -> bool {
        let p = std::path::Path::new(path);
        let plain = p.is_absolute()
            && p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        plain
            && self
                .tmpfs
                .iter()
                .any(|(t, ..)| p != std::path::Path::new(t) && p.starts_with(t))
    }

    fn tmpfs_options(&self, size_override: Option<u64>) -> Vec<(String, String)> {
        self.tmpfs
            .iter()
            .map(|(t, size, nr_inodes, mode, resizable)| {
                let size = match size_override {
                    Some(s) if *resizable => s,
                    _ => *size,
                };
                (
                    t.clone(),
                    crate::shim::setup::tmpfs_options(*mode, size, *nr_inodes),
                )
            })
            .collect()
    }
}

fn failure(step: SetupStep, errno: i32, detail: impl Into<String>) -> SetupFailure {
    SetupFailure {
        step,
        errno,
        detail: detail.into(),
    }
}

/// Longest failure detail sent in a response (the host bounds reply frames).
const MAX_DETAIL: usize = 1024;

fn truncated(mut f: SetupFailure) -> SetupFailure {
    if f.detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !f.detail.is_char_boundary(end) {
            end -= 1;
        }
        f.detail.truncate(end);
    }
    f
}

fn respond(reply: &mut Channel, resp: Response) {
    // The host may have gone away (cancelled); there is nobody else to tell.
    let _ = reply.send(
        &Message::Response(Box::new(resp)),
        &[],
        Some(Instant::now() + Duration::from_secs(1)),
    );
}

/// Everything the serve loop needs from stage 1.
pub(crate) struct Zygote<'a> {
    /// Control socket.
    pub(crate) chan: &'a mut Channel,
    /// The plan it was built from.
    pub(crate) plan: &'a SetupPlan,
    /// Seccomp and landlock for every request.
    pub(crate) confinement: Confinement,
    /// SIGCHLD and termination signals.
    pub(crate) signals: &'a SignalFd,
    /// What is enforced.
    pub(crate) features: Features,
    /// `/dev/null`, opened before pivot_root.
    pub(crate) devnull: OwnedFd,
    /// Requests running at once.
    pub(crate) max_concurrent: u32,
    /// Setup timings so far.
    pub(crate) watch: crate::shim::Stopwatch,
}

impl Zygote<'_> {
    fn start(
        &self,
        req: Request,
        mut fds: Vec<Option<OwnedFd>>,
        mounts: &PrivateMounts,
        prebuilt: Result<Option<OwnedFd>, i32>,
        late: &'static [usize],
        renewed: bool,
    ) -> Result<Running, (Channel, SetupFailure)> {
        let received = Instant::now();
        let Some(reply) = fds.get_mut(req.reply as usize).and_then(Option::take) else {
            // No reply socket: nowhere to answer. The host broke the protocol.
            return Err((
                Channel::new(self.devnull.try_clone().expect("dup /dev/null")),
                failure(SetupStep::MapFds, libc::EBADF, "no reply socket"),
            ));
        };
        let reply = Channel::new(reply);
        // A rule's path that could not be opened when the zygote started serving fails every
        // request, as the child would: it is never resolved again, so nothing a request creates
        // there later becomes a rule.
        let prebuilt = match prebuilt {
            Ok(p) => p,
            Err(e) => {
                return Err((
                    reply,
                    failure(
                        SetupStep::Landlock,
                        e,
                        "entering the landlock domain (a rule's path may be missing)",
                    ),
                ))
            }
        };
        let Work::Exec(exec) = &req.work else {
            return Err((
                reply,
                failure(
                    SetupStep::Exec,
                    libc::ENOSYS,
                    "call requests need a call-mode helper",
                ),
            ));
        };
        let mut take = |index: u8| -> Result<OwnedFd, SetupFailure> {
            fds.get_mut(index as usize)
                .and_then(Option::take)
                .ok_or_else(|| {
                    failure(
                        SetupStep::MapFds,
                        libc::EBADF,
                        format!("fd index {index} not passed"),
                    )
                })
        };
        // A single-process request runs in the zygote's own namespaces, renewed for it (see
        // `renew`); it suspends the zygote until the command execs, so a filter that notifies
        // that exec would wait for the suspended zygote forever: such a request, and every
        // request of a zygote that runs several at once or could not renew, gets a request
        // root of its own with fresh mounts.
        let notify_exec = self.confinement.seccomp.is_some_and(|s| s.notify_exec);
        let single = self.max_concurrent == 1 && !notify_exec && renewed;
        let (private_tmpfs, private_proc, network) = if single {
            (Vec::new(), &[][..], None)
        } else {
            (
                mounts.tmpfs_options(req.limits.tmp_bytes),
                &mounts.proc[..],
                self.plan.own_network.then_some(self.plan.loopback),
            )
        };
        let mut moves = Vec::new();
        let mut exec = exec.clone();
        let prepared = (|| {
            for (slot, target) in req.stdio.iter().zip(0..3) {
                let fd = match slot {
                    FdSlot::Passed(i) => take(*i)?,
                    FdSlot::Null => self.devnull.try_clone().map_err(|e| {
                        failure(
                            SetupStep::MapFds,
                            e.raw_os_error().unwrap_or(libc::EMFILE),
                            "dup",
                        )
                    })?,
                };
                moves.push((fd, target));
            }
            for named in &req.named {
                if named.target < 3 {
                    return Err(failure(
                        SetupStep::MapFds,
                        libc::EINVAL,
                        format!("named fd target {}", named.target),
                    ));
                }
                moves.push((take(named.index)?, named.target));
                if let Some(name) = &named.name {
                    exec.env.push(
                        format!("HATCHERY_FD_{}={}", name.to_uppercase(), named.target)
                            .as_str()
                            .into(),
                    );
                }
            }
            let mut placed = Vec::with_capacity(req.placed.len());
            for p in &req.placed {
                let path = String::from_utf8_lossy(&p.path.0).into_owned();
                if !mounts.holds(&path) {
                    return Err(failure(
                        SetupStep::MapFds,
                        libc::EINVAL,
                        format!("placed file {path}: not inside a per-request tmpfs"),
                    ));
                }
                placed.push((path, take(p.index)?));
            }
            let mut rlimits: Vec<Rlimit> = self.plan.rlimits.clone();
            for r in &req.limits.rlimits {
                rlimits.retain(|x| x.resource != r.resource);
                rlimits.push(*r);
            }
            // The cap plus one byte: see OutputWatch.
            let mut outputs = None;
            if let Some(out) = req.limits.output_bytes {
                let cap = rlimits
                    .iter()
                    .find(|r| r.resource == Resource::Fsize)
                    .map_or(out, |r| r.hard.min(out));
                rlimits.retain(|x| x.resource != Resource::Fsize);
                rlimits.push(Rlimit {
                    resource: Resource::Fsize,
                    soft: cap.saturating_add(1),
                    hard: cap.saturating_add(1),
                });
                outputs = Some(OutputWatch::new(cap, &moves));
            }
            let given_socket = moves.iter().any(|(fd, _)| {
                nix::sys::stat::fstat(fd.as_raw_fd())
                    .map_or(true, |st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
            });
            let plan = launch::prepare(LaunchRequest {
                exec: &exec,
                fds: std::mem::take(&mut moves),
                rlimits: &rlimits,
                user: self.plan.ids.user.as_ref(),
                setgroups_allowed: self.plan.ids.setgroups_allowed,
                confinement: self.confinement,
                no_new_privs: self.plan.no_new_privs,
            })?
            .with_private_mounts(&private_tmpfs, private_proc, network)?
            .with_placed(placed)?
            .with_prebuilt_ruleset(prebuilt, late)?;
            let launched = if single {
                let l = launch::launch_vfork(&plan)?;
                (l.pid, l.started, None, l.listener)
            } else {
                let l = launch::launch_request(&plan)?;
                (l.pid, l.started, Some(l.status), l.listener)
            };
            Ok((launched, plan.cpu_limit_secs, outputs, given_socket))
        })();
        match prepared {
            Ok(((pid, started, status, listener), cpu_limit, outputs, given_socket)) => {
                Ok(Running {
                    id: req.id,
                    pid,
                    reply,
                    watch: Watch::new(started, req.limits.wall_time_us),
                    started,
                    spawn_us: received.elapsed().as_micros() as u64,
                    status,
                    cpu_limit,
                    listener,
                    explainer: self.plan.seccomp.as_ref().and_then(|s| {
                        Explainer::new(
                            &s.explain,
                            self.plan.landlock.as_ref(),
                            self.features.landlock,
                        )
                    }),
                    outputs,
                    given_socket,
                })
            }
            Err(f) => Err((reply, f)),
        }
    }
}

/// Renews the files a single-process request may leave behind in the zygote's own mount
/// namespace, once no request runs (whatever is left of the previous one is killed and reaped
/// first): a fresh instance of each private tmpfs (`/tmp`, `/dev/shm`), of `size_override` where
/// resizable, each only where its path still leads to the instance in `current`. Mount points are
/// reached without following links. An error leaves the zygote to give each request namespaces
/// of its own.
///
/// Where the spare namespace has fresh instances of that size, the zygote moves into it instead
/// (the namespace left becomes the spare, renewed while the next request runs). Returns the
/// roots of the instances the zygote is in afterwards.
///
/// `exposed`: a request since the last renewal was given a socket, over which it could have sent
/// out an fd of a directory above the mount points (`/`, `/dev`); a walk from such an fd follows
/// whatever that namespace mounts there later, so the namespace is never used again: the zygote
/// moves to a fresh copy instead (the namespace left goes with its last user, its mounts with it).
fn fresh_mounts(
    plan: &SetupPlan,
    exposed: bool,
    mounts: &PrivateMounts,
    size_override: Option<u64>,
    current: &Roots,
    spare: &mut Option<Spare>,
) -> Result<Roots, SetupFailure> {
    // Called only when no request runs: nothing of the previous one may outlive this.
    end_request(plan, exposed)?;
    if let Some(roots) = spare
        .as_mut()
        .and_then(|s| s.swap(current, size_override, exposed))
    {
        return Ok(roots);
    }
    if exposed {
        copy_mount_ns()?;
        // The spare's way back is the copy now.
        if let Some(s) = spare.as_mut() {
            match open_mount_ns() {
                Ok(fd) => s.current = fd,
                Err(_) => *spare = None,
            }
        }
    }
    renew_mounts(mounts, size_override, current)
}

/// A copy of the zygote's current mount namespace (`current`, its fd) with fresh instances, and
/// their roots; the zygote is back in `current` afterwards, or the error says it may not be.
fn fresh_copy(
    mounts: &PrivateMounts,
    current_roots: &Roots,
    current: &OwnedFd,
) -> Result<(OwnedFd, Roots), SetupFailure> {
    copy_mount_ns()?;
    // The copy's instances are the current namespace's (same file systems): replaced here,
    // they are fresh.
    let made = open_mount_ns().and_then(|ns| Ok((ns, renew_mounts(mounts, None, current_roots)?)));
    enter(current)?;
    made
}

/// What every renewal does first, once no request runs: kills and reaps whatever is left of the
/// previous request and renews the network namespace if it may have been reached.
fn end_request(plan: &SetupPlan, exposed: bool) -> Result<(), SetupFailure> {
    kill_everything_else();
    reap_everything_else();
    renew_network(plan, exposed)
}

/// A fresh instance of each private tmpfs in the zygote's current mount namespace (see
/// [`fresh_mounts`]), where each mount point must still lead to its instance in `current`.
fn renew_mounts(
    mounts: &PrivateMounts,
    size_override: Option<u64>,
    current: &Roots,
) -> Result<Roots, SetupFailure> {
    // Only the instances the zygote mounted are detached: a path that now leads elsewhere (a
    // directory renamed in a writable bind) fails the renewal instead.
    if private_roots(mounts) != *current || current.iter().any(Option::is_none) {
        return Err(failure(
            SetupStep::MountTmpfs,
            libc::ENOENT,
            "a private tmpfs mount point no longer leads to its instance",
        ));
    }
    for (target, options) in mounts.tmpfs_options(size_override) {
        let cstr =
            |s: &str| CString::new(s).map_err(|_| failure(SetupStep::MountTmpfs, libc::EINVAL, s));
        let (t, o) = (cstr(&target)?, cstr(&options)?);
        child::umount_exactly(&t)
            .map_err(|e| failure(SetupStep::MountTmpfs, e, format!("umount {target}")))?;
        child::mount_exactly(
            &t,
            c"tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            o.as_ptr().cast(),
        )
        .map_err(|e| failure(SetupStep::MountTmpfs, e, target.clone()))?;
    }
    // Each must resolve to its new instance now (a mount point removed meanwhile by another
    // party sharing a writable bind took the mount with it).
    let roots = private_roots(mounts);
    if roots.iter().any(Option::is_none) {
        return Err(failure(
            SetupStep::MountTmpfs,
            libc::ENOENT,
            "a private tmpfs mount point went away",
        ));
    }
    Ok(roots)
}

/// A second mount namespace of the zygote, a copy of its own that differs only in the private
/// tmpfs instances: a request runs in one while the zygote renews the other's instances, so the
/// next request of a back-to-back client starts in fresh ones without waiting for a renewal
/// (whose detach waits for an expedited RCU grace period). The two swap at every request's end.
struct Spare {
    /// The other namespace (`/proc/self/ns/mnt` opened in it).
    ns: OwnedFd,
    /// The namespace the zygote is in now, to come back to from the other.
    current: OwnedFd,
    /// The other namespace's instances.
    roots: Roots,
    /// Whether they are fresh (no request ran since their renewal), and of which size.
    fresh: Option<Option<u64>>,
    /// The other namespace may be reached from outside (see [`fresh_mounts`]): it is replaced by
    /// a fresh copy instead of renewed.
    replace: bool,
}

fn open_mount_ns() -> Result<OwnedFd, SetupFailure> {
    std::fs::File::open("/proc/self/ns/mnt")
        .map(OwnedFd::from)
        .map_err(|e| {
            failure(
                SetupStep::MountTmpfs,
                e.raw_os_error().unwrap_or(libc::EIO),
                "/proc/self/ns/mnt",
            )
        })
}

/// Moves the zygote to a copy of its mount namespace (whose tmpfs instances are still the
/// original's).
fn copy_mount_ns() -> Result<(), SetupFailure> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| failure(SetupStep::MountTmpfs, e as i32, "unshare(CLONE_NEWNS)"))
}

fn enter(ns: &OwnedFd) -> Result<(), SetupFailure> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| failure(SetupStep::MountTmpfs, e as i32, "setns(CLONE_NEWNS)"))
}

impl Spare {
    /// Makes the second namespace (with fresh instances) and comes back to the current one.
    /// `None` where it cannot be made (no `/proc`, say): renewals then stay between requests.
    fn make(mounts: &PrivateMounts, current_roots: &Roots) -> Option<Spare> {
        let current = open_mount_ns().ok()?;
        // A failure that left the zygote in the copy is caught by the next request's check of
        // its roots (the copy's are not `current_roots`), which renews in place.
        let (ns, roots) = fresh_copy(mounts, current_roots, &current).ok()?;
        // The current instances must be untouched by the copy's renewal.
        if private_roots(mounts) != *current_roots {
            return None;
        }
        Some(Spare {
            ns,
            current,
            roots,
            fresh: Some(None),
            replace: false,
        })
    }

    /// Renews the other namespace's instances, or replaces it by a fresh copy of the current one
    /// (`current_roots`, its instances), while a request runs in the current one, and comes back.
    /// After an error the spare is dropped; should the zygote be left elsewhere, the next
    /// request's check of its roots renews in place.
    fn renew(&mut self, mounts: &PrivateMounts, current_roots: &Roots) -> Result<(), SetupFailure> {
        if self.fresh.is_some() {
            return Ok(());
        }
        if self.replace {
            (self.ns, self.roots) = fresh_copy(mounts, current_roots, &self.current)?;
        } else {
            enter(&self.ns)?;
            let renewed = renew_mounts(mounts, None, &self.roots);
            enter(&self.current)?;
            self.roots = renewed?;
        }
        self.fresh = Some(None);
        self.replace = false;
        Ok(())
    }

    /// Moves the zygote into the other namespace if its instances are fresh and of `size`,
    /// returning their roots; the namespace left becomes the other one, to be renewed (or, if
    /// `exposed`, replaced).
    fn swap(&mut self, current_roots: &Roots, size: Option<u64>, exposed: bool) -> Option<Roots> {
        if self.fresh != Some(size) {
            return None;
        }
        enter(&self.ns).ok()?;
        std::mem::swap(&mut self.ns, &mut self.current);
        let roots = std::mem::replace(&mut self.roots, current_roots.clone());
        self.fresh = None;
        self.replace = exposed;
        Some(roots)
    }
}

/// Whether nobody can move or replace the private tmpfs mount points for as long as the zygote
/// serves, so renewing them in place is sound: every ancestor of each lies on the container's own
/// read-only root or `/dev` (file systems its setup made, which no other party shares and no
/// request can write to), and no `/dev` has an mqueue instance (which belongs to the setup's IPC
/// namespace). Otherwise (a private tmpfs beneath a bind or a writable directory, where a request
/// or another container could rename a parent and take the mount along) every request gets a
/// request root with mounts of its own.
fn mount_points_fixed(plan: &SetupPlan, mounts: &PrivateMounts) -> bool {
    // The root is the setup's tmpfs (a read-only host root is a tmpfs of read-only entry binds);
    // a writable host root is a host directory others may change.
    if matches!(
        plan.root,
        hatchery_protocol::RootPlan::HostDir { writable: true, .. }
    ) {
        return false;
    }
    let trimmed = |p: &[u8]| {
        let p = String::from_utf8_lossy(p).into_owned();
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    let mut own = Vec::new();
    for op in &plan.mounts {
        if let MountOp::Devfs { target, mqueue, .. } = op {
            if *mqueue {
                return false;
            }
            own.push(trimmed(&target.0));
        }
    }
    own.push("/".to_string());
    // Nothing else is mounted over the root or a /dev: their file systems stay the setup's own.
    for op in &plan.mounts {
        let target = match op {
            MountOp::Bind { target, .. }
            | MountOp::Overlay { target, .. }
            | MountOp::Tmpfs { target, .. }
            | MountOp::Proc { target } => target,
            _ => continue,
        };
        if own.contains(&trimmed(&target.0)) {
            return false;
        }
    }
    let identity = |path: &str| -> Option<(u64, bool)> {
        let fd = child::open_dir_exactly(&CString::new(path).ok()?).ok()?;
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
        let vfs = nix::sys::statvfs::fstatvfs(&fd).ok()?;
        if own.iter().any(|o| o == path)
            && nix::sys::statfs::fstatfs(&fd).ok()?.filesystem_type()
                != nix::sys::statfs::TMPFS_MAGIC
        {
            return None;
        }
        Some((
            st.st_dev,
            vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        ))
    };
    let Some(own_devs) = own
        .iter()
        .map(|p| identity(p).filter(|(_, ro)| *ro).map(|(dev, _)| dev))
        .collect::<Option<Vec<u64>>>()
    else {
        return false;
    };
    mounts.tmpfs.iter().all(|(target, ..)| {
        std::path::Path::new(target).ancestors().skip(1).all(|a| {
            identity(&a.to_string_lossy()).is_some_and(|(dev, ro)| ro && own_devs.contains(&dev))
        })
    })
}

/// The device and inode of each private tmpfs's root as its mount point now resolves (without
/// following links; `None` where it does not resolve to a directory).
type Roots = Vec<Option<(u64, u64)>>;

fn private_roots(mounts: &PrivateMounts) -> Roots {
    mounts
        .tmpfs
        .iter()
        .map(|(target, ..)| {
            let fd = child::open_dir_exactly(&CString::new(target.as_str()).ok()?).ok()?;
            let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
            Some((st.st_dev, st.st_ino))
        })
        .collect()
}

/// Moves the zygote to a fresh IPC namespace (and, with `network`, a fresh network namespace, its
/// loopback up if the plan asks), right after it started a single-process request (which keeps
/// the old one, with its SysV objects and POSIX message queues, until its last process dies): the
/// next request inherits one that no request used.
fn renew_namespaces(plan: &SetupPlan, network: bool) -> Result<(), SetupFailure> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
        .map_err(|e| failure(SetupStep::Fork, e as i32, "unshare(CLONE_NEWIPC)"))?;
    if network {
        new_network(plan)?;
    }
    Ok(())
}

/// Moves the zygote to a fresh network namespace, its loopback up if the plan asks.
fn new_network(plan: &SetupPlan) -> Result<(), SetupFailure> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| failure(SetupStep::Fork, e as i32, "unshare(CLONE_NEWNET)"))?;
    if plan.loopback {
        sys::net::loopback_up().map_err(|e| failure(SetupStep::Loopback, e, "lo"))?;
    }
    note_network_made();
    Ok(())
}

/// The counters and flow labels of the zygote's network namespace when it was made (for the one
/// its clone made, when it began to serve), which [`network_untouched`] compares; `None` where
/// they could not be read. The zygote is one single-threaded process.
static NETWORK_MADE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn note_network_made() {
    *NETWORK_MADE.lock().unwrap_or_else(|e| e.into_inner()) = sys::net::activity("/proc/self/net");
}

/// Renews the zygote's network namespace once a single-process request ended (every process of
/// it dead), unless the request left it as it was made and could not have sent a hold on it out:
/// it was given no socket (`exposed`: over one it could send out an fd of a `/proc/self/net`
/// file or of the namespace itself, which keep the namespace and show what the next request does
/// in it), no socket of it is alive anywhere (one it sent out would keep the namespace, its ports
/// and what arrives there), none in `TIME_WAIT`, no IP fragment queued, and no packet counted on
/// any interface. Making a network
/// namespace costs hundreds of microseconds (and as much again to tear it down), which the many
/// requests that never touch the network do not pay. Without a `/proc` to tell, it is renewed.
fn renew_network(plan: &SetupPlan, exposed: bool) -> Result<(), SetupFailure> {
    if !plan.own_network || (!exposed && network_untouched()) {
        return Ok(());
    }
    new_network(plan)
}

/// Whether the zygote's network namespace is as it was made: no socket, no packet
/// ([`sys::net::untouched`]), and its counters and flow labels as they were then
/// ([`NETWORK_MADE`]; a send that found no route leaves no socket and no packet, only a count).
fn network_untouched() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let made = NETWORK_MADE.lock().unwrap_or_else(|e| e.into_inner());
    match (
        read("/proc/self/net/sockstat"),
        read("/proc/self/net/sockstat6"),
        read("/proc/self/net/dev"),
        sys::net::activity("/proc/self/net"),
    ) {
        (Some(v4), Some(v6), Some(dev), Some(now)) => {
            sys::net::untouched(&v4, &v6, &dev) && made.as_deref() == Some(now.as_str())
        }
        _ => false,
    }
}

fn kill_pid(pid: libc::pid_t) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Kills a request's whole process tree: its request root (which takes its pid namespace with
/// it), or, for a single-process request, every process of the container but the zygote.
fn kill_request(r: &Running) {
    if r.status.is_some() {
        kill_pid(r.pid);
    } else {
        kill_everything_else();
    }
}

/// Kills a request for `why`, unless it was already killed (the first reason is its outcome).
fn stop(r: &mut Running, why: Outcome) {
    if r.watch.kill(why) {
        kill_request(r);
    }
}

/// `kill(-1, SIGKILL)` from PID 1: every other process of the container dies.
fn kill_everything_else() {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-1),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Reaps every child, blocking until none is left (they were SIGKILLed), so nothing of a
/// finished request overlaps with the next one.
fn reap_everything_else() {
    while let Ok(_) | Err(nix::errno::Errno::EINTR) =
        nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::__WALL))
    {}
}

fn read_status(fd: Option<&OwnedFd>) -> Option<i32> {
    let fd = fd?;
    let mut buf = [0u8; 4];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(4) => Some(i32::from_le_bytes(buf)),
        _ => None,
    }
}

/// Numbers the next process of the zygote's pid namespace 2 again, once only the zygote is
/// left: otherwise a request's first pid would tell the next how many processes it made.
/// `last_pid` is the pid namespace's `ns_last_pid`, opened when the zygote started serving
/// (none without a `/proc`: pids then go on counting).
fn renumber_pids(last_pid: Option<&std::fs::File>) {
    if let Some(f) = last_pid {
        let _ = std::os::unix::fs::FileExt::write_at(f, b"1", 0);
    }
}

fn finish(mut r: Running, root: reap::Reaped, last_pid: Option<&std::fs::File>) {
    let wall_us = r.started.elapsed().as_micros() as u64;
    let usage = Usage {
        wall_us,
        ..root.usage
    };
    let single = r.status.is_none();
    if single {
        // The command itself was reaped: its leftovers die now, before the next request.
        kill_everything_else();
        reap_everything_else();
        renumber_pids(last_pid);
    }
    let status = if single {
        Some(root.status)
    } else {
        read_status(r.status.as_ref())
    };
    // Without a status the request root died without a report: killed from outside.
    let outcome = r.watch.outcome(Seen {
        answered: None,
        exited: status.map(|s| (s, usage)),
        cpu_limit_secs: r.cpu_limit,
        output_capped: r.outputs.is_some(),
        output_exceeded: r.outputs.as_ref().is_some_and(OutputWatch::exceeded),
    });
    if let Some(e) = &r.explainer {
        let report = e.report().bounded(hatchery_protocol::MAX_POOL_REPORT);
        let _ = r.reply.send(
            &Message::Report(Box::new(report)),
            &[],
            Some(Instant::now() + Duration::from_secs(1)),
        );
    }
    respond(
        &mut r.reply,
        Response {
            id: r.id,
            outcome,
            usage,
            spawn_us: r.spawn_us,
            call: None,
        },
    );
}

/// Serves requests until Shutdown or until the host goes away; returns the exit code.
pub(crate) fn serve(mut z: Zygote<'_>) -> i32 {
    let mounts = PrivateMounts::from_plan(z.plan);
    // The rules a prebuilt landlock ruleset leaves to the request (those in its private mounts).
    let late: &'static [usize] = match z.confinement.landlock {
        Some(ll) => {
            let private: Vec<String> = mounts
                .tmpfs
                .iter()
                .map(|(t, ..)| t.clone())
                .chain(mounts.proc.iter().cloned())
                .collect();
            Vec::leak(confine::late_rules(ll, &private))
        }
        None => &[],
    };
    // Every rule but the late ones, their paths opened now, before any request runs.
    let pinned = z
        .confinement
        .landlock
        .map(|ll| confine::pin_rules(ll, late));
    // The next request's landlock ruleset, built while the zygote waits.
    let mut prebuilt: Option<OwnedFd> = None;
    if z.chan
        .send(
            &Message::Ready(Ready {
                features: z.features.clone(),
                setup: std::mem::take(&mut z.watch.steps),
            }),
            &[],
            None,
        )
        .is_err()
    {
        return 1;
    }
    // Single-process requests run in the zygote's own mount and IPC namespaces, renewed
    // between requests; `dirty` after one ran, `renewed_size` the tmpfs size override of the
    // renewal. Without renewal (a failure, or several requests at once), each request gets a
    // request root with namespaces of its own.
    let notify_exec = z.confinement.seccomp.is_some_and(|s| s.notify_exec);
    // The IPC namespace is renewed now: the profile may not have unshared one, and the zygote's
    // would then be the host's. The network namespace is not: the clone made it, and nothing but
    // the setup's loopback ran in it (the first request's end checks it as every other's). The
    // setup's tmpfs instances are fresh (no guest ran yet), unless the plan itself put files in
    // one, which requests never see.
    let mut renewable = z.max_concurrent == 1
        && !notify_exec
        && mount_points_fixed(z.plan, &mounts)
        && renew_namespaces(z.plan, false).is_ok();
    if z.plan.own_network {
        note_network_made();
    }
    let mut renewed_size: Option<u64> = None;
    let mut roots = private_roots(&mounts);
    let mut dirty = roots.iter().any(Option::is_none)
        || mounts.tmpfs.iter().any(|(target, ..)| {
            std::fs::read_dir(target).map_or(true, |mut entries| entries.next().is_some())
        });
    let last_pid = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/kernel/ns_last_pid")
        .ok();
    renumber_pids(last_pid.as_ref());
    // A request since the last renewal was given a socket, over which it could send fds out:
    // the network namespace is renewed whatever it looks like, and the mount namespace is left
    // for a fresh copy (see `fresh_mounts`).
    let mut exposed = false;
    // A tree that reaches host paths where others may listen on a socket (a writable bind, a
    // bound socket, ...) exposes every request as a given socket would.
    let reaches_out = z.plan.may_reach_host_sockets()
        || z.plan.mounts.iter().any(|m| match m {
            MountOp::Bind { target, .. } => std::fs::symlink_metadata(OsStr::from_bytes(&target.0))
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())),
            _ => false,
        });
    let mut spare = if renewable {
        Spare::make(&mounts, &roots)
    } else {
        None
    };
    let mut running: Vec<Running> = Vec::new();
    let mut accepting = true;
    loop {
        if !accepting && running.is_empty() {
            return 0;
        }
        // Right after a request ended (its every process is dead and reaped), while the host
        // reads the response.
        if dirty && renewable && running.is_empty() && accepting {
            match fresh_mounts(z.plan, exposed, &mounts, None, &roots, &mut spare) {
                Ok(r) => roots = r,
                Err(_) => renewable = false,
            }
            renewed_size = None;
            dirty = false;
            exposed = false;
        }
        // Built as soon as the previous one is used: while the request runs (its command is
        // another process; the zygote only waits), so the next request does not wait for it.
        if prebuilt.is_none() && accepting {
            prebuilt = z
                .confinement
                .landlock
                .zip(pinned.as_ref().and_then(|p| p.as_ref().ok()))
                .and_then(|(ll, pinned)| confine::prebuild_ruleset(ll, pinned).ok());
        }
        let now = Instant::now();
        let timeout = running
            .iter()
            .filter_map(|r| r.watch.pending_deadline())
            .min()
            .map(|d| {
                let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            })
            .unwrap_or(PollTimeout::NONE);
        let (chan_ev, sig_ev, reply_ev, listener_ev) = {
            let mut pfds = Vec::with_capacity(2 + 2 * running.len());
            pfds.push(PollFd::new(z.chan.as_fd(), PollFlags::POLLIN));
            pfds.push(PollFd::new(z.signals.as_fd(), PollFlags::POLLIN));
            for r in &running {
                pfds.push(PollFd::new(r.reply.as_fd(), PollFlags::POLLIN));
            }
            // Listeners of requests still alive (a killed one's notifications do not matter).
            for r in &running {
                if let Some(l) = r.listener.as_ref().filter(|_| !r.watch.is_killed()) {
                    pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
            }
            match poll(&mut pfds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return 1,
            }
            let ev = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            let n = running.len();
            (
                ev(&pfds[0]),
                ev(&pfds[1]),
                pfds[2..2 + n].iter().map(ev).collect::<Vec<bool>>(),
                pfds[2 + n..]
                    .iter()
                    .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                    .collect::<Vec<PollFlags>>(),
            )
        };
        // Seccomp notifications: a violation kills its request and becomes its outcome.
        let mut listener_ev = listener_ev.into_iter();
        for r in running.iter_mut() {
            if r.listener.is_none() || r.watch.is_killed() {
                continue;
            }
            let flags = listener_ev.next().unwrap_or(PollFlags::empty());
            if flags.contains(PollFlags::POLLIN) {
                let received = match (&r.listener, &mut r.explainer) {
                    (Some(l), Some(e)) => match e.receive(l) {
                        Some(Handled::Violation(v, id)) => Some((v, id)),
                        _ => None,
                    },
                    (Some(l), None) => confine::receive_violation(l),
                    (None, _) => None,
                };
                if let Some((v, id)) = received {
                    stop(r, v);
                    if let Some(l) = &r.listener {
                        confine::deny(l, id);
                    }
                }
            } else if !flags.is_empty() {
                // Hang-up: no task uses the filter any more.
                r.listener = None;
            }
        }
        // The host closed a reply socket (or wrote to it, which it never does): cancel.
        for (r, hit) in running.iter_mut().zip(reply_ev) {
            if hit {
                stop(r, verdict::CANCELLED);
            }
        }
        let now = Instant::now();
        for r in running.iter_mut() {
            if r.watch.expire(now) {
                kill_request(r);
            }
        }
        if sig_ev {
            let mut terminate = false;
            while let Ok(Some(info)) = z.signals.read_signal() {
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    terminate = true;
                }
            }
            if terminate {
                for r in &running {
                    kill_request(r);
                }
                accepting = false;
            }
            reap::reap_each(|pid, root| {
                if let Some(pos) = running.iter().position(|r| r.pid == pid) {
                    finish(running.swap_remove(pos), root, last_pid.as_ref());
                }
            });
        }
        if chan_ev {
            match z.chan.recv(Some(Instant::now() + Duration::from_secs(1))) {
                Ok(received) => match received.message {
                    Message::Request(req) => {
                        let fds = received.fds.into_iter().map(Some).collect();
                        // Requests being killed (cancelled, timed out) no longer count: the host
                        // already released their slot. A single-process zygote first finishes
                        // them (they are SIGKILLed, so this is quick): its cleanup kills every
                        // other process, which must not hit the new request.
                        if z.max_concurrent == 1 {
                            // The host releases a zygote only after closing the reply socket of a
                            // request it gave up on; look again, right now, for such hang-ups.
                            for r in running.iter_mut().filter(|r| !r.watch.is_killed()) {
                                let mut p = [PollFd::new(r.reply.as_fd(), PollFlags::POLLIN)];
                                let hung_up =
                                    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0);
                                if hung_up {
                                    stop(r, verdict::CANCELLED);
                                }
                            }
                            while let Some(pos) = running.iter().position(|r| r.watch.is_killed()) {
                                let r = running.swap_remove(pos);
                                match reap::wait_for(r.pid) {
                                    Some(root) => finish(r, root, last_pid.as_ref()),
                                    None => drop(r),
                                }
                            }
                        }
                        let live = running.iter().filter(|r| !r.watch.is_killed()).count();
                        if !accepting || live >= z.max_concurrent as usize {
                            let mut fds: Vec<Option<OwnedFd>> = fds;
                            if let Some(reply) =
                                fds.get_mut(req.reply as usize).and_then(Option::take)
                            {
                                respond(
                                    &mut Channel::new(reply),
                                    Response {
                                        id: req.id,
                                        outcome: Outcome::SetupFailed(failure(
                                            SetupStep::Fork,
                                            libc::EAGAIN,
                                            "the zygote is at its concurrency limit or shutting down",
                                        )),
                                        usage: Usage::default(),
                                        spawn_us: 0,
                                    call: None,
                                },
                                );
                            }
                            continue;
                        }
                        let id = req.id;
                        // A single-process request needs the zygote's namespaces renewed after the
                        // previous one, with its own tmpfs size.
                        // The mounts must still be the renewed ones: a mount point in a writable
                        // bind that another party removed on its side took the mount with it.
                        if renewable
                            && (dirty
                                || req.limits.tmp_bytes != renewed_size
                                || private_roots(&mounts) != roots)
                        {
                            // Only used instances are left for the spare's.
                            let mut none = None;
                            let spare = if dirty { &mut spare } else { &mut none };
                            match fresh_mounts(
                                z.plan,
                                exposed,
                                &mounts,
                                req.limits.tmp_bytes,
                                &roots,
                                spare,
                            ) {
                                Ok(r) => roots = r,
                                Err(_) => renewable = false,
                            }
                            renewed_size = req.limits.tmp_bytes;
                            exposed = false;
                        }
                        dirty = true;
                        // The prebuilt ruleset, or one built now from the pinned rules.
                        let ruleset = match (z.confinement.landlock, &pinned) {
                            (Some(ll), Some(Ok(p))) => match prebuilt.take() {
                                Some(fd) => Ok(Some(fd)),
                                None => confine::prebuild_ruleset(ll, p).map(Some),
                            },
                            (_, Some(Err(e))) => Err(*e),
                            _ => Ok(None),
                        };
                        match z.start(*req, fds, &mounts, ruleset, late, renewable) {
                            Ok(r) => {
                                // The command runs in the zygote's IPC namespace: the next
                                // request gets another one, made while this one runs.
                                if renewable && r.status.is_none() {
                                    renewable = renew_namespaces(z.plan, false).is_ok();
                                    // The other mount namespace gets fresh instances while
                                    // this request runs.
                                    if spare
                                        .as_mut()
                                        .is_some_and(|s| s.renew(&mounts, &roots).is_err())
                                    {
                                        spare = None;
                                    }
                                }
                                exposed |= r.given_socket || reaches_out;
                                running.push(r);
                            }
                            Err((mut reply, f)) => respond(
                                &mut reply,
                                Response {
                                    id,
                                    outcome: Outcome::SetupFailed(truncated(f)),
                                    usage: Usage::default(),
                                    spawn_us: 0,
                                    call: None,
                                },
                            ),
                        }
                    }
                    Message::Cancel(c) => {
                        if let Some(r) = running
                            .iter_mut()
                            .find(|r| r.id == c.id && !r.watch.is_killed())
                        {
                            stop(r, verdict::CANCELLED);
                        }
                    }
                    Message::Ping(p) => crate::shim::pong(z.chan, p.nonce, running.len() as u32),
                    Message::Shutdown(s) => {
                        accepting = false;
                        if s.kill {
                            for r in running.iter_mut() {
                                stop(r, verdict::CANCELLED);
                            }
                        }
                    }
                    // Anything else from the host is a protocol violation: stop.
                    _ => return 1,
                },
                // Timeout: spurious wakeup. Anything else: the host is gone or broken; PID 1
                // exiting takes every request with it.
                Err(hatchery_protocol::ProtocolError::Timeout { .. }) => {}
                Err(_) => return 1,
            }
        }
    }
}

//! The parent side of starting a command: preparing its [`LaunchPlan`] (every string, pointer
//! array, fd move and limit is built here, before the fork), starting the fork boundary
//! (`child`) and reading what the child reports back.
//!
//! ```text
//!  prepare ─▶ LaunchPlan ─▶ start: report socket, fork/clone ─▶ child (reads the plan only)
//!                                  read_report ◀── listener fd, then EOF at exec │ failure
//! ```

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hatchery_protocol::{ExecSpec, Resource, Rlimit, SetupFailure, SetupStep, UserSpec};
use hatchery_sys as sys;
use sys::exec::CStringArray;

use crate::shim::child;
use crate::shim::confine::Confinement;
use crate::shim::launch_plan::{ChildIds, LaunchPlan};
use crate::shim::users;

/// The PATH searched when the command's environment has none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

fn fail(step: SetupStep, errno: i32, detail: impl Into<String>) -> SetupFailure {
    SetupFailure {
        step,
        errno,
        detail: detail.into(),
    }
}

impl LaunchPlan {
    /// Gives the request its own tmpfs at each `(path, options)`, a fresh proc at each path and,
    /// with `network`, its own network namespace (its loopback up if `network` is `Some(true)`).
    pub(crate) fn with_private_mounts(
        mut self,
        tmpfs: &[(String, String)],
        proc: &[String],
        network: Option<bool>,
    ) -> Result<LaunchPlan, SetupFailure> {
        self.private_network = network;
        for (t, o) in tmpfs {
            self.private_tmpfs.push((
                cstring(SetupStep::MountTmpfs, t.as_bytes())?,
                cstring(SetupStep::MountTmpfs, o.as_bytes())?,
            ));
        }
        for p in proc {
            self.private_proc
                .push(cstring(SetupStep::MountProc, p.as_bytes())?);
        }
        Ok(self)
    }

    /// Uses `ruleset` (built by [`confine::prebuild_ruleset`](crate::shim::confine::prebuild_ruleset)
    /// with every rule but those at `late`) for the command's landlock domain; the child adds the
    /// `late` rules, so it serves this one launch only. The plan owns it, above every fd target
    /// (the child's fd mapping must neither close nor replace it before the domain is entered).
    pub(crate) fn with_prebuilt_ruleset(
        mut self,
        ruleset: Option<OwnedFd>,
        late: &'static [usize],
    ) -> Result<LaunchPlan, SetupFailure> {
        if let Some(fd) = ruleset {
            let fd = if fd.as_raw_fd() > self.max_target {
                fd
            } else {
                sys::fd::dup_above(fd.as_fd(), self.max_target + 1)
                    .map_err(|e| fail(SetupStep::Landlock, e, "dup"))?
            };
            self.landlock_prebuilt = Some((fd.as_raw_fd(), late));
            self._ruleset = Some(fd);
        }
        Ok(self)
    }

    /// Places read-only copies of `placed` sources at their paths once the private tmpfs
    /// mounts exist (paths checked by the caller to lie inside one).
    pub(crate) fn with_placed(
        mut self,
        placed: Vec<(String, OwnedFd)>,
    ) -> Result<LaunchPlan, SetupFailure> {
        for (path, fd) in placed {
            self.placed
                .push((cstring(SetupStep::MapFds, path.as_bytes())?, fd));
        }
        Ok(self)
    }
}

/// A started child.
#[derive(Debug)]
pub(crate) struct Launched {
    /// Its pid (in the container's pid namespace).
    pub(crate) pid: libc::pid_t,
    /// When it was forked.
    pub(crate) started: Instant,
    /// The seccomp notification listener of its filter, when the filter notifies.
    pub(crate) listener: Option<OwnedFd>,
}

fn resource(r: Resource) -> sys::process::Resource {
    use sys::process::Resource as R;
    match r {
        Resource::As => R::As,
        Resource::Core => R::Core,
        Resource::Cpu => R::Cpu,
        Resource::Data => R::Data,
        Resource::Fsize => R::Fsize,
        Resource::Locks => R::Locks,
        Resource::Memlock => R::Memlock,
        Resource::Msgqueue => R::Msgqueue,
        Resource::Nice => R::Nice,
        Resource::Nofile => R::Nofile,
        Resource::Nproc => R::Nproc,
        Resource::Rss => R::Rss,
        Resource::Rtprio => R::Rtprio,
        Resource::Rttime => R::Rttime,
        Resource::Sigpending => R::Sigpending,
        Resource::Stack => R::Stack,
    }
}

fn cstring(step: SetupStep, bytes: &[u8]) -> Result<CString, SetupFailure> {
    CString::new(bytes).map_err(|_| {
        fail(
            step,
            libc::EINVAL,
            format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes)),
        )
    })
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves a program name the way `execvp` would, inside the container.
pub(crate) fn find_program(
    program: &[u8],
    env: &[hatchery_protocol::Bytes],
) -> Result<PathBuf, SetupFailure> {
    if program.is_empty() {
        return Err(fail(
            SetupStep::FindProgram,
            libc::ENOENT,
            "empty program name",
        ));
    }
    if program.contains(&b'/') {
        return Ok(PathBuf::from(OsStr::from_bytes(program)));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.0.strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    for dir in path_var.split(|b| *b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(program));
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(fail(
        SetupStep::FindProgram,
        libc::ENOENT,
        format!("{} not found on PATH", String::from_utf8_lossy(program)),
    ))
}

/// Inputs of [`prepare`].
pub(crate) struct LaunchRequest<'a> {
    /// The command.
    pub(crate) exec: &'a ExecSpec,
    /// Fds and the numbers they get.
    pub(crate) fds: Vec<(OwnedFd, RawFd)>,
    /// Limits (RLIMIT_CORE is 0 unless given).
    pub(crate) rlimits: &'a [Rlimit],
    /// The user to become, resolved in the container's /etc.
    pub(crate) user: Option<&'a UserSpec>,
    /// Whether setgroups is permitted in this user namespace.
    pub(crate) setgroups_allowed: bool,
    /// Seccomp and landlock, prepared in stage 1.
    pub(crate) confinement: Confinement,
    /// Set no_new_privs before exec.
    pub(crate) no_new_privs: bool,
}

/// Builds a [`LaunchPlan`].
pub(crate) fn prepare(req: LaunchRequest<'_>) -> Result<LaunchPlan, SetupFailure> {
    let exec = req.exec;
    let path = find_program(&exec.program.0, &exec.env)?;
    let path = cstring(SetupStep::FindProgram, path.as_os_str().as_bytes())?;
    let argv = exec
        .argv
        .iter()
        .map(|a| cstring(SetupStep::Exec, &a.0))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = exec
        .env
        .iter()
        .map(|a| cstring(SetupStep::Exec, &a.0))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = exec
        .cwd
        .as_ref()
        .map(|c| cstring(SetupStep::Chdir, &c.0))
        .transpose()?;

    let max_target = req.fds.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2);
    let mut fd_moves = Vec::with_capacity(req.fds.len());
    let mut sources = Vec::with_capacity(req.fds.len());
    for (fd, target) in &req.fds {
        if *target < 0 {
            return Err(fail(
                SetupStep::MapFds,
                libc::EBADF,
                format!("fd target {target}"),
            ));
        }
        let high = sys::fd::dup_above(fd.as_fd(), max_target + 1)
            .map_err(|e| fail(SetupStep::MapFds, e, "dup"))?;
        fd_moves.push((high.as_raw_fd(), *target));
        sources.push(high);
    }
    let mut sorted_targets: Vec<RawFd> = fd_moves.iter().map(|(_, t)| *t).collect();
    sorted_targets.sort_unstable();
    sorted_targets.dedup();

    let mut rlimits = Vec::new();
    let mut late_rlimits = Vec::new();
    if !req.rlimits.iter().any(|r| r.resource == Resource::Core) {
        rlimits.push((sys::process::Resource::Core, 0, 0));
    }
    for r in req.rlimits {
        // The open-file limit comes last, right before exec: the lockdown itself opens fds
        // (landlock's ruleset and paths, the seccomp listener), and a limit of 3 must leave the
        // command to fail loading its libraries, as under hakoniwa, not the setup.
        let into = if r.resource == Resource::Nofile {
            &mut late_rlimits
        } else {
            &mut rlimits
        };
        into.push((resource(r.resource), r.soft, r.hard));
    }
    let cpu_limit_secs = req
        .rlimits
        .iter()
        .find(|r| r.resource == Resource::Cpu)
        .map(|r| r.hard.min(r.soft));

    let ids = match req.user {
        None => None,
        Some(spec) => {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let r = users::resolve(spec, &passwd, &group).map_err(|e| {
                let what = match e {
                    users::ResolveError::NoUser(u) => {
                        format!("no user {u:?} in the container's /etc/passwd")
                    }
                    users::ResolveError::NoGroup(g) => {
                        format!("no group {g:?} in the container's /etc/group")
                    }
                };
                fail(SetupStep::ResolveUser, libc::ENOENT, what)
            })?;
            Some(ChildIds {
                uid: r.uid,
                gid: r.gid,
                groups: r.groups,
                set_groups: req.setgroups_allowed,
            })
        }
    };
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as u32)
        .unwrap_or(1024);
    Ok(LaunchPlan {
        path,
        argv: CStringArray::new(argv),
        envp: CStringArray::new(envp),
        cwd,
        fd_moves,
        sorted_targets,
        max_target,
        _sources: sources,
        rlimits,
        late_rlimits,
        ids,
        confinement: req.confinement,
        no_new_privs: req.no_new_privs,
        ignore_sigxfsz: false,
        fd_limit,
        cpu_limit_secs,
        private_tmpfs: Vec::new(),
        placed: Vec::new(),
        private_proc: Vec::new(),
        private_network: None,
        reset_signals: non_default_signals(),
        child_stack_top: child_stack_top(),
        die_with_parent: true,
        new_session: true,
        keep_caps: 0,
        landlock_prebuilt: None,
        _ruleset: None,
    })
}

/// One stack, allocated once, for every `CLONE_VM | CLONE_VFORK` start of this single-threaded
/// shim: only one such child runs on it at a time, because its parent is suspended until the child
/// execs (the zygote itself, or a request root, which uses its own copy-on-write copy). Returns
/// its 16-byte aligned top.
fn child_stack_top() -> usize {
    static TOP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *TOP.get_or_init(|| {
        let stack: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
        (stack.as_mut_ptr() as usize + stack.len()) & !15
    })
}

/// The shim's non-default signal dispositions, queried once (they never change after start).
fn non_default_signals() -> &'static [i32] {
    static SIGNALS: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(sys::signal::non_default)
}

/// A request started in its own namespaces.
#[derive(Debug)]
pub(crate) struct LaunchedRequest {
    /// Pid of the request root (PID 1 of the request's pid namespace).
    pub(crate) pid: libc::pid_t,
    /// When it was cloned.
    pub(crate) started: Instant,
    /// Receives the command's raw wait status when it ends (non-blocking).
    pub(crate) status: OwnedFd,
    /// The seccomp notification listener of its filter, when the filter notifies.
    pub(crate) listener: Option<OwnedFd>,
}

/// The child's report channel: a close-on-exec seqpacket pair, the child's end above every fd
/// target. The child sends its seccomp listener on it, or its failure; EOF means it exec'd.
fn report_pipe(plan: &LaunchPlan) -> Result<(OwnedFd, OwnedFd), SetupFailure> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (r, w) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| fail(SetupStep::Fork, e as i32, "socketpair"))?;
    Ok((r, above_targets(plan, &w)?))
}

/// `fd` duplicated above every fd target of `plan` (so the child's dup2s cannot clobber it).
fn above_targets(plan: &LaunchPlan, fd: &OwnedFd) -> Result<OwnedFd, SetupFailure> {
    sys::fd::dup_above(fd.as_fd(), plan.max_target + 1).map_err(|e| fail(SetupStep::Fork, e, "dup"))
}

/// Reads the child's report: its seccomp listener if its filter notifies, then EOF once it
/// exec'd (`Ok`), or an 8-byte failure (`step index: u32`, `errno: i32`).
///
/// A pending notification before EOF ends the wait with `Ok` too, leaving the notification for
/// the supervisor (which kills the request and reports the violation): either the command
/// already runs and violated its policy before every other holder of the report socket closed
/// it (a request root closes its copy only once its vfork returns), or the policy notifies the
/// `execve` itself, which would otherwise wait forever. A hung-up listener (the command already
/// exited) is not a notification: the wait goes on for the report.
fn read_report(sock: &OwnedFd) -> Result<Option<OwnedFd>, (SetupStep, i32)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut listener: Option<OwnedFd> = None;
    // Whether the listener may still deliver a notification (it hangs up once the filter has
    // no users left).
    let mut watch_listener = true;
    loop {
        if let (Some(l), true) = (&listener, watch_listener) {
            let mut pfds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(l.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err((SetupStep::Exec, e as i32)),
            }
            let sock_ready = pfds[0].revents().is_some_and(|r| !r.is_empty());
            let l_events = pfds[1].revents().unwrap_or(PollFlags::empty());
            if !sock_ready {
                if l_events.contains(PollFlags::POLLIN) {
                    return Ok(listener);
                }
                if !l_events.is_empty() {
                    watch_listener = false;
                }
                continue;
            }
        }
        let mut buf = [0u8; 8];
        let (n, got_fd) = match sys::fd::recv_fd(sock.as_fd(), &mut buf) {
            Ok(got) => got,
            Err(libc::EINTR) => continue,
            Err(e) => return Err((SetupStep::Exec, e)),
        };
        if n == 0 {
            return Ok(listener);
        }
        if n == 8 && buf == child::LISTENER_MSG {
            if got_fd.is_none() {
                return Err((SetupStep::Seccomp, libc::EBADF));
            }
            listener = got_fd;
            continue;
        }
        if n != 8 {
            return Err((SetupStep::Exec, libc::EIO));
        }
        return Err(decode_failure(buf));
    }
}

/// The step and errno of a failure report (see [`child::failure_message`]); an index the child
/// does not use reads as [`SetupStep::Exec`].
fn decode_failure(buf: [u8; 8]) -> (SetupStep, i32) {
    let idx = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    (
        *child::CHILD_STEPS.get(idx).unwrap_or(&SetupStep::Exec),
        errno,
    )
}

/// Starts a child with `spawn` (given the report pipe's write end), then waits for its exec or
/// its failure report; a failed child is reaped.
fn start(
    plan: &LaunchPlan,
    what: &str,
    spawn: impl FnOnce(BorrowedFd<'_>) -> Result<libc::pid_t, i32>,
) -> Result<Launched, SetupFailure> {
    let (r, w) = report_pipe(plan)?;
    let started = Instant::now();
    let pid = spawn(w.as_fd()).map_err(|e| fail(SetupStep::Fork, e, what))?;
    drop(w);
    match read_report(&r) {
        Ok(listener) => Ok(Launched {
            pid,
            started,
            listener,
        }),
        Err((step, errno)) => {
            // The child has _exit'ed or is about to; reap it so no zombie is left.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(fail(step, errno, failure_detail(plan, step)))
        }
    }
}

/// Starts a request in new pid, mount and IPC namespaces; returns once the command exec'd.
pub(crate) fn launch_request(plan: &LaunchPlan) -> Result<LaunchedRequest, SetupFailure> {
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| fail(SetupStep::Fork, e as i32, "pipe2"))?;
    let status_high = above_targets(plan, &status_w)?;
    drop(status_w);
    let launched = start(plan, "clone", |w| {
        child::clone_request(plan, w, status_high.as_fd())
    });
    drop(status_high);
    let launched = launched?;
    Ok(LaunchedRequest {
        pid: launched.pid,
        started: launched.started,
        status: status_r,
        listener: launched.listener,
    })
}

fn failure_detail(plan: &LaunchPlan, step: SetupStep) -> String {
    match step {
        SetupStep::Exec => plan.path.to_string_lossy().into_owned(),
        SetupStep::Landlock => "entering the landlock domain (a rule's path may be missing)".into(),
        SetupStep::Chdir => plan
            .cwd
            .as_ref()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Forks the child, waits for its exec (or its failure report) and returns it.
pub(crate) fn launch(plan: &LaunchPlan) -> Result<Launched, SetupFailure> {
    start(plan, "fork", |w| child::fork_and_run(plan, w))
}

/// [`launch`] `posix_spawn`-style (`CLONE_VM | CLONE_VFORK`: no copy of the shim's page tables):
/// the shim is suspended until the command execs, so only for a policy whose filter does not
/// notify that exec (which would wait for the suspended shim forever); otherwise a fork.
pub(crate) fn launch_vfork(plan: &LaunchPlan) -> Result<Launched, SetupFailure> {
    if plan.confinement.seccomp.is_some_and(|s| s.notify_exec) {
        return launch(plan);
    }
    start(plan, "clone", |w| child::spawn_vfork(plan, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child's failure report, in golden bytes, and back.
    #[test]
    fn failure_report_round_trip() {
        let msg = child::failure_message(SetupStep::Landlock, libc::EPERM);
        assert_eq!(msg, [11, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(decode_failure(msg), (SetupStep::Landlock, libc::EPERM));
        for step in child::CHILD_STEPS {
            assert_eq!(decode_failure(child::failure_message(step, 7)), (step, 7));
        }
        assert_eq!(decode_failure([99, 0, 0, 0, 2, 0, 0, 0]).0, SetupStep::Exec);
        assert_ne!(
            child::LISTENER_MSG,
            child::failure_message(SetupStep::Exec, 0)
        );
    }
}

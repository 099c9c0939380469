//! THE FORK BOUNDARY OF THE SHIM: the code a request child runs between `fork` and `execve`.
//!
//! Rules for everything in [`run`]: no allocation, no locks, only async-signal-safe calls, and it
//! ends in `execve` or `_exit`. It only reads a [`LaunchPlan`] that was fully built before the
//! fork. A failure is reported as a fixed 8-byte message (`step index: u32`, `errno: i32`, little
//! endian, see [`failure_message`]) on a close-on-exec socket; EOF on it means the exec
//! succeeded. The parent side (`launch`) reads it; this file imports nothing of it.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use hatchery_protocol::SetupStep;
use hatchery_sys as sys;
use sys::fd::CloseRange;
use sys::fs::{Mode, OFlags, ResolveFlags};

use crate::shim::launch_plan::LaunchPlan;

/// The steps the child can fail at, indexed by the number it reports.
pub(super) const CHILD_STEPS: [SetupStep; 15] = [
    SetupStep::Fork,
    SetupStep::MountTmpfs,
    SetupStep::MountProc,
    SetupStep::NewSession,
    SetupStep::Rlimit,
    SetupStep::MapFds,
    SetupStep::DropCapabilities,
    SetupStep::SetGroups,
    SetupStep::SetIds,
    SetupStep::NoNewPrivs,
    SetupStep::Chdir,
    SetupStep::Landlock,
    SetupStep::Seccomp,
    SetupStep::Exec,
    SetupStep::Loopback,
];

/// The report message that carries the seccomp listener (a step index no failure uses).
pub(super) const LISTENER_MSG: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// The failure report of `step`: its index in [`CHILD_STEPS`] (`u32`), then the errno (`i32`),
/// little endian.
pub(super) fn failure_message(step: SetupStep, errno: i32) -> [u8; 8] {
    let index = CHILD_STEPS.iter().position(|s| *s == step).unwrap_or(0) as u32;
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&index.to_le_bytes());
    msg[4..].copy_from_slice(&errno.to_le_bytes());
    msg
}

/// Forks. In the child runs [`run`] (never returns); in the parent returns the child's pid.
///
/// The shim is single-threaded (checked in debug builds), so the child may not hold a lock that
/// another thread owns.
pub(crate) fn fork_and_run(
    plan: &LaunchPlan,
    err_pipe: BorrowedFd<'_>,
) -> Result<libc::pid_t, i32> {
    debug_assert_eq!(
        crate::shim::thread_count(),
        1,
        "the shim must stay single-threaded"
    );
    // SAFETY: the shim is single-threaded, and the child only runs `run`, which is
    // async-signal-safe and ends in exec or _exit.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)),
        0 => run(plan, err_pipe),
        pid => Ok(pid),
    }
}

/// Clones a request root: PID 1 of new pid, mount and IPC namespaces (so the request sees only
/// its own processes and SysV IPC, and killing this one process ends the whole request). It
/// mounts the request's private tmpfs and proc instances, forks the command ([`run`]), waits for
/// it, writes its raw wait status (4 bytes) to `status_pipe` and exits, which makes the kernel
/// kill whatever the command left behind.
pub(crate) fn clone_request(
    plan: &LaunchPlan,
    err_pipe: BorrowedFd<'_>,
    status_pipe: BorrowedFd<'_>,
) -> Result<libc::pid_t, i32> {
    debug_assert_eq!(
        crate::shim::thread_count(),
        1,
        "the shim must stay single-threaded"
    );
    let network = if plan.private_network.is_some() {
        libc::CLONE_NEWNET
    } else {
        0
    };
    let flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | network | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no CLONE_VM) of a single-threaded process; the child only runs
    // `request_root`, which is async-signal-safe and ends in _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_long, 0, 0, 0, 0) };
    match pid {
        -1 => Err(errno()),
        0 => request_root(plan, err_pipe, status_pipe),
        pid => Ok(pid as libc::pid_t),
    }
}

/// Starts the command like `posix_spawn`, in the shim's own namespaces: the child shares the
/// shim's memory while the shim is suspended (`CLONE_VM | CLONE_VFORK`) until the command execs,
/// on the plan's own stack, and runs [`run`]. The one-shot shim's way: no copy of its page
/// tables for a child that only execs.
pub(crate) fn spawn_vfork(plan: &LaunchPlan, err_pipe: BorrowedFd<'_>) -> Result<libc::pid_t, i32> {
    clone_on_plan_stack(plan, err_pipe, 0, vfork_main)
}

/// `clone(CLONE_VM | CLONE_VFORK | namespaces)` running `main` on the plan's child stack with
/// the plan and the report pipe as its argument.
fn clone_on_plan_stack(
    plan: &LaunchPlan,
    err_pipe: BorrowedFd<'_>,
    namespaces: libc::c_int,
    main: extern "C" fn(*mut libc::c_void) -> libc::c_int,
) -> Result<libc::pid_t, i32> {
    debug_assert_eq!(
        crate::shim::thread_count(),
        1,
        "the shim must stay single-threaded"
    );
    let args = CommandArgs { plan, err_pipe };
    let top = plan.child_stack_top;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | namespaces | libc::SIGCHLD;
    // SAFETY: `main` only reads `args` (alive: this thread is suspended until the child execs
    // or exits) and runs on the shim's child stack, which nothing else uses meanwhile.
    let pid = unsafe {
        libc::clone(
            main,
            top as *mut libc::c_void,
            flags,
            &args as *const CommandArgs<'_> as *mut libc::c_void,
        )
    };
    if pid < 0 {
        Err(errno())
    } else {
        Ok(pid)
    }
}

extern "C" fn vfork_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `CommandArgs` of `spawn_vfork`, alive while the shim is suspended.
    let args: &CommandArgs<'_> = unsafe { &*(arg as *const CommandArgs<'_>) };
    run(args.plan, args.err_pipe)
}

/// Opens the directory `target` (`O_PATH`) without following a symbolic link anywhere in its
/// path. Raw syscalls only.
pub(crate) fn open_dir_exactly(target: &std::ffi::CStr) -> Result<std::os::fd::OwnedFd, i32> {
    sys::fs::openat2(
        sys::fs::cwd(),
        target,
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Runs `op` (a system call on `.`, returning its raw result) with the working directory at
/// `target` (see [`open_dir_exactly`]), then goes back to `/`.
fn in_dir_exactly(target: &std::ffi::CStr, op: impl FnOnce() -> libc::c_int) -> Result<(), i32> {
    let dir = open_dir_exactly(target)?;
    // SAFETY: `dir` is open for the call.
    if unsafe { libc::fchdir(dir.as_raw_fd()) } < 0 {
        return Err(errno());
    }
    let r = op();
    let e = errno();
    // SAFETY: a constant NUL-terminated path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    if r < 0 {
        return Err(e);
    }
    Ok(())
}

/// Mounts `fstype` on `target` without following a symbolic link anywhere in its path: the
/// target is opened with `RESOLVE_NO_SYMLINKS` and the mount lands on that very directory
/// (through the working directory), so a guest that replaced a mount point in a writable bind
/// with a link between requests gets `ELOOP`, never a mount elsewhere. Raw syscalls only.
/// Leaves the working directory at `/`.
pub(crate) fn mount_exactly(
    target: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    flags: libc::c_ulong,
    data: *const libc::c_void,
) -> Result<(), i32> {
    // SAFETY: NUL-terminated strings; `data` is null or a NUL-terminated option string, all
    // built before the fork.
    in_dir_exactly(target, || unsafe {
        libc::mount(fstype.as_ptr(), c".".as_ptr(), fstype.as_ptr(), flags, data)
    })
}

/// Detaches the mount whose root is `target`, reached without following a symbolic link (see
/// [`mount_exactly`]). Leaves the working directory at `/`.
pub(crate) fn umount_exactly(target: &std::ffi::CStr) -> Result<(), i32> {
    // SAFETY: a constant NUL-terminated path (the mount at the working directory).
    in_dir_exactly(target, || unsafe {
        libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
    })
}

fn mount_private_tmpfs(plan: &LaunchPlan, err_pipe: BorrowedFd<'_>) {
    for (target, opts) in plan.private_tmpfs.iter() {
        let data = opts.as_ptr().cast();
        if let Err(e) = mount_exactly(target, c"tmpfs", libc::MS_NOSUID | libc::MS_NODEV, data) {
            fail(err_pipe, SetupStep::MountTmpfs, e);
        }
    }
}

/// Creates `path` (mode 0444, never through a link, never over an existing entry) with the
/// contents of `source` from offset 0 (its own offset is not moved). Raw syscalls only.
fn place_copy(path: &std::ffi::CStr, source: BorrowedFd<'_>) -> Result<(), i32> {
    let out = sys::fs::openat2(
        sys::fs::cwd(),
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let mut offset: libc::off_t = 0;
    loop {
        // SAFETY: two open fds and a valid offset pointer.
        let n =
            unsafe { libc::sendfile(out.as_raw_fd(), source.as_raw_fd(), &mut offset, 1 << 20) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
    }
}

fn request_root(plan: &LaunchPlan, err_pipe: BorrowedFd<'_>, status_pipe: BorrowedFd<'_>) -> ! {
    if let Err(e) = sys::process::kill_with_parent() {
        fail(err_pipe, SetupStep::Fork, e);
    }
    if plan.private_network == Some(true) {
        if let Err(e) = sys::net::loopback_up() {
            fail(err_pipe, SetupStep::Loopback, e);
        }
    }
    mount_private_tmpfs(plan, err_pipe);
    for target in plan.private_proc.iter() {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if let Err(e) = mount_exactly(target, c"proc", flags, std::ptr::null()) {
            fail(err_pipe, SetupStep::MountProc, e);
        }
    }
    // The command is started like posix_spawn: sharing our memory (a private copy of the
    // zygote's) while we are suspended until it execs, on a stack prepared before the fork.
    let args = CommandArgs { plan, err_pipe };
    let top = plan.child_stack_top;
    // SAFETY: `command_main` only reads `args` (alive: we are suspended until the command execs
    // or exits, CLONE_VFORK) and runs on the shim's child stack, which nobody else uses meanwhile.
    let pid = unsafe {
        libc::clone(
            command_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const CommandArgs<'_> as *mut libc::c_void,
        )
    };
    if pid < 0 {
        fail(err_pipe, SetupStep::Fork, errno());
    }
    // Our copy of the report pipe must go, so the zygote sees EOF once the command execs.
    // SAFETY: closing this process's copy of the fd (its own table: no CLONE_FILES); the owner
    // in the zygote's memory is never dropped here, as this process ends in _exit.
    unsafe { libc::close(err_pipe.as_raw_fd()) };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid local; no rusage requested.
        let r = unsafe { libc::wait4(-1, &mut status, libc::__WALL, std::ptr::null_mut()) };
        if r == pid as libc::pid_t {
            sys::fd::write_all_ignoring_errors(status_pipe, &status.to_le_bytes());
            sys::exec::exit_now(0);
        }
        if r < 0 && errno() != libc::EINTR {
            sys::exec::exit_now(1);
        }
    }
}

struct CommandArgs<'a> {
    plan: &'a LaunchPlan,
    err_pipe: BorrowedFd<'a>,
}

extern "C" fn command_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `CommandArgs` on the request root's stack, alive while it is suspended.
    let args: &CommandArgs<'_> = unsafe { &*(arg as *const CommandArgs<'_>) };
    run(args.plan, args.err_pipe)
}

fn fail(err_pipe: BorrowedFd<'_>, step: SetupStep, errno: i32) -> ! {
    sys::fd::write_all_ignoring_errors(err_pipe, &failure_message(step, errno));
    sys::exec::exit_now(127)
}

fn raw(ret: libc::c_long) -> Result<(), i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// The request child. See the module header for the rules.
fn run(plan: &LaunchPlan, err_pipe: BorrowedFd<'_>) -> ! {
    // Placed files first, with the shim's own ids, in the request's fresh tmpfs mounts.
    for (path, source) in plan.placed.iter() {
        if let Err(e) = place_copy(path, source.as_fd()) {
            fail(err_pipe, SetupStep::MapFds, e);
        }
    }
    let (step, errno) = setup_and_exec(plan, err_pipe);
    fail(err_pipe, step, errno)
}

/// Opens `path` for the rule "`access` beneath `path`" like `open(path, O_PATH)` (links are
/// followed, as the rule's author wrote the path): the fd and the rights the rule grants on it
/// (a file gets only the rights that apply to files; `None` when none is left).
/// Async-signal-safe: also used by the zygote to pin its rules.
pub(crate) fn open_rule(
    path: &std::ffi::CStr,
    access: u64,
) -> Result<Option<(std::os::fd::OwnedFd, u64)>, i32> {
    let fd = sys::fs::openat2(
        sys::fs::cwd(),
        path,
        OFlags::PATH,
        Mode::empty(),
        ResolveFlags::empty(),
    )?;
    // SAFETY: an all-zero `stat` is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is a writable stat buffer.
    let is_dir = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let access = if is_dir {
        access
    } else {
        access & crate::shim::confine::FS_FILE_RIGHTS
    };
    Ok((access != 0).then_some((fd, access)))
}

/// Adds the rule "`access` beneath `path`" to `ruleset` (see [`open_rule`]).
pub(crate) fn add_path_rule(
    ruleset: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    access: u64,
) -> Result<(), i32> {
    if let Some((fd, access)) = open_rule(path, access)? {
        sys::landlock::allow_path(ruleset, fd.as_fd(), access)?;
    }
    Ok(())
}

/// Enters a new landlock domain built from `ll`: rules on the paths as this process sees them
/// (its private mounts included), then `landlock_restrict_self`. With a ruleset the zygote
/// prebuilt, only the rules on paths in the private mounts are added here.
fn enter_landlock(
    ll: &crate::shim::confine::LandlockLaunch,
    prebuilt: Option<(std::os::fd::RawFd, &[usize])>,
) -> Result<(), i32> {
    if let Some((raw, late)) = prebuilt {
        // SAFETY: the plan keeps the prebuilt ruleset open while it is used (see
        // `LaunchPlan::landlock_prebuilt`).
        let ruleset = unsafe { BorrowedFd::borrow_raw(raw) };
        for &i in late {
            if let Some((path, access)) = ll.paths.get(i) {
                add_path_rule(ruleset, path, *access)?;
            }
        }
        return sys::landlock::restrict_self(ruleset);
    }
    let ruleset = sys::landlock::create_ruleset(&ll.attr)?;
    for (path, access) in ll.paths.iter() {
        add_path_rule(ruleset.as_fd(), path, *access)?;
    }
    for &(port, access) in ll.ports.iter() {
        sys::landlock::allow_port(ruleset.as_fd(), port, access)?;
    }
    sys::landlock::restrict_self(ruleset.as_fd())
}

/// The lockdown sequence, ending in `execve`; returns the failed step and errno otherwise.
/// `report` is the channel to the shim, which gets the seccomp listener.
fn setup_and_exec(plan: &LaunchPlan, report: BorrowedFd<'_>) -> (SetupStep, i32) {
    sys::signal::reset(plan.reset_signals);
    if plan.ignore_sigxfsz {
        // SAFETY: SIG_IGN is always a valid disposition; it survives exec.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    }
    if let Err(e) = sys::signal::unblock_all() {
        return (SetupStep::NewSession, e);
    }
    // SAFETY: setsid takes no arguments.
    if plan.new_session && unsafe { libc::setsid() } < 0 {
        return (SetupStep::NewSession, errno());
    }
    if plan.die_with_parent {
        if let Err(e) = sys::process::kill_with_parent() {
            return (SetupStep::NewSession, e);
        }
    }
    for &(resource, soft, hard) in plan.rlimits.iter() {
        if let Err(e) = sys::process::set_rlimit(resource, soft, hard) {
            return (SetupStep::Rlimit, e);
        }
    }
    // Fd table: each source (already above every target) to its target, then close the gaps
    // below the highest target and mark everything above it close-on-exec.
    for &(src, target) in plan.fd_moves.iter() {
        // SAFETY: the plan owns `src` (`_sources`), open while the plan lives.
        let src = unsafe { BorrowedFd::borrow_raw(src) };
        // SAFETY: `target` is a number of this process's own table (a fork: no CLONE_FILES)
        // that becomes the command's; no owner of it is used again here, as this process ends
        // in exec or _exit.
        let moved = unsafe { sys::fd::dup2_keep(src, target) };
        if let Err(e) = moved {
            return (SetupStep::MapFds, e);
        }
    }
    let mut fd = 0;
    while fd <= plan.max_target {
        if plan.sorted_targets.binary_search(&fd).is_err() {
            // SAFETY: closing an fd number that is not one of the command's targets.
            unsafe { libc::close(fd) };
        }
        fd += 1;
    }
    let first = (plan.max_target + 1) as u32;
    // SAFETY: every fd above the targets closes at exec: the command's table is an allow-list,
    // and nothing in this process runs after the exec.
    let marked =
        unsafe { sys::fd::close_range(first, u32::MAX, CloseRange::CloseOnExec, plan.fd_limit) };
    if let Err(e) = marked {
        return (SetupStep::MapFds, e);
    }

    let locked = if plan.keep_caps == 0 {
        sys::caps::lock_capabilities()
    } else {
        sys::caps::lock_capabilities_but_ambient()
    };
    if let Err(e) = locked {
        return (SetupStep::DropCapabilities, e);
    }
    if let Some(ids) = &plan.ids {
        if ids.set_groups {
            // SAFETY: `groups` is a live slice of gid_t; the length matches.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_setgroups,
                    ids.groups.len() as libc::c_long,
                    ids.groups.as_ptr(),
                )
            };
            if let Err(e) = raw(r) {
                return (SetupStep::SetGroups, e);
            }
        }
        // Raw syscalls: this thread only, no glibc setxid broadcast.
        // SAFETY: integer-only syscalls.
        let r = unsafe { libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) };
        if let Err(e) = raw(r) {
            return (SetupStep::SetIds, e);
        }
        // SAFETY: integer-only syscall.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) };
        if let Err(e) = raw(r) {
            return (SetupStep::SetIds, e);
        }
    }
    if let Err(e) = sys::caps::capset_all(plan.keep_caps) {
        return (SetupStep::DropCapabilities, e);
    }
    if let Err(e) = sys::caps::raise_ambient_mask(plan.keep_caps) {
        return (SetupStep::DropCapabilities, e);
    }
    if plan.no_new_privs {
        if let Err(e) = sys::caps::set_no_new_privs() {
            return (SetupStep::NoNewPrivs, e);
        }
    }
    if let Some(cwd) = &plan.cwd {
        // SAFETY: `cwd` is a NUL-terminated CString built before the fork.
        if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
            return (SetupStep::Chdir, errno());
        }
    }
    if let Some(ll) = plan.confinement.landlock {
        if let Err(e) = enter_landlock(ll, plan.landlock_prebuilt) {
            return (SetupStep::Landlock, e);
        }
    }
    if let Some(sc) = plan.confinement.seccomp {
        match sys::seccomp::install(&sc.filter, sc.notify) {
            Err(e) => return (SetupStep::Seccomp, e),
            // Between here and execve only the hand-over runs: `sendmsg` with
            // LISTENER_SEND_FLAGS and `seccomp(SET_MODE_FILTER, 0)`, which every notifying
            // filter allows, first or by its own rules; where it allows them first, the second
            // installs the filter that revokes the first, so the command never has that
            // allowance. The listener is close-on-exec: the command never holds it, and this
            // process never closes it (a `close` would already run under the filter).
            Ok(Some(listener)) => {
                let listener = ManuallyDrop::new(listener);
                if let Err(e) = sys::fd::send_fd(
                    report,
                    &LISTENER_MSG,
                    listener.as_fd(),
                    hatchery_protocol::LISTENER_SEND_FLAGS,
                ) {
                    return (SetupStep::Seccomp, e);
                }
                if !sc.revoke.is_empty() {
                    if let Err(e) = sys::seccomp::install(&sc.revoke, false) {
                        return (SetupStep::Seccomp, e);
                    }
                }
            }
            Ok(None) => {}
        }
    }
    for &(resource, soft, hard) in plan.late_rlimits.iter() {
        if let Err(e) = sys::process::set_rlimit(resource, soft, hard) {
            return (SetupStep::Rlimit, e);
        }
    }
    let e = sys::exec::execve(&plan.path, &plan.argv, &plan.envp);
    (SetupStep::Exec, e)
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

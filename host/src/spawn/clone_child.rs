//! THE FORK BOUNDARY OF THE HOST: `clone` into new namespaces, then `execveat` of the shim.
//!
//! The host is a multithreaded program (the user's server). The child runs with `CLONE_VM |
//! CLONE_VFORK` on a stack prepared here, like `posix_spawn`: it shares the parent's memory while
//! the calling thread is suspended until the exec. So the code in [`child_main`] follows strict
//! rules: no allocation, no locks, only async-signal-safe calls, no writes to anything but its own
//! stack, and it ends in `execveat` or `_exit`. It only reads a [`Prepared`] built before the
//! clone. All signals, glibc's internal ones too, are blocked in the calling thread around the
//! clone (the raw system call: libc's `sigprocmask` leaves glibc's cancellation and `setxid`
//! signals open), so no handler of the host ever runs on the child's stack, and the exec resets
//! the handlers; the shim sets its own mask after the exec.
//!
//! The child keeps the capabilities it has in its new user namespace across the exec by raising
//! them into the ambient set: the shim needs them to build the container, whatever uid the maps
//! (written by the parent after the clone) give it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use hatchery_sys as sys;
use sys::exec::CStringArray;
use sys::fd::CloseRange;

/// The shim the child executes.
#[derive(Clone, Copy)]
pub enum Shim<'a> {
    /// A sealed memfd.
    Sealed(BorrowedFd<'a>),
    /// A file the child resolves in its new mount namespace, checks to be the file `id`, clones
    /// as a detached mount, makes that read-only and executes from there.
    Cached {
        /// Absolute path of the file.
        path: &'a std::ffi::CStr,
        /// The file the host checked.
        id: sys::fs::FileId,
    },
}

/// Everything the child needs, built before the clone.
pub struct Prepared<'a> {
    /// The shim to execute.
    pub shim: Shim<'a>,
    /// `/dev/null`, opened read-write; becomes fds 0, 1 and 2 of the shim.
    pub devnull: BorrowedFd<'a>,
    /// The guest end of the control socket; becomes fd 3.
    pub control: BorrowedFd<'a>,
    /// Write end of a close-on-exec pipe that receives the errno if the exec fails.
    pub err_pipe: BorrowedFd<'a>,
    /// Highest capability number of the kernel.
    pub last_cap: u32,
    /// `RLIMIT_NOFILE` soft limit, for the close-range fallback.
    pub fd_limit: u32,
    argv: CStringArray,
    envp: CStringArray,
}

impl<'a> Prepared<'a> {
    /// Builds the plan. `argv0` becomes the shim's process title.
    pub fn new(
        shim: Shim<'a>,
        devnull: BorrowedFd<'a>,
        control: BorrowedFd<'a>,
        err_pipe: BorrowedFd<'a>,
        argv0: &str,
    ) -> Prepared<'a> {
        let argv0 = CString::new(argv0).unwrap_or_else(|_| c"hatchery-shim".to_owned());
        let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 20) as u32)
            .unwrap_or(1024);
        Prepared {
            shim,
            devnull,
            control,
            err_pipe,
            last_cap: sys::caps::last_cap(),
            fd_limit,
            argv: CStringArray::new([argv0]),
            envp: CStringArray::new([]),
        }
    }
}

const STACK_SIZE: usize = 64 * 1024;

/// Whether [`spawn`] can clone straight into a cgroup v2 directory (`clone3` with
/// `CLONE_INTO_CGROUP`, written for this architecture).
pub const CAN_CLONE_INTO_CGROUP: bool = cfg!(target_arch = "x86_64");

/// Clones a child into new namespaces (`flags` holds the `CLONE_NEW*` bits) that execs the shim.
/// Returns its pid once the exec happened (or the child failed: then the errno is in the pipe).
///
/// With `cgroup` (a cgroup v2 directory, opened for reading), the child is born in it (`clone3`
/// with `CLONE_INTO_CGROUP`, Linux 5.7): no migration afterwards, so no wait for the kernel's
/// threadgroup lock, whose write side waits for an RCU grace period after a pause. An error
/// (an older kernel, an architecture without [`CAN_CLONE_INTO_CGROUP`], a cgroup the kernel
/// refuses) means no child was made: the caller clones without it and attaches the child.
pub fn spawn(
    flags: libc::c_int,
    prepared: &Prepared<'_>,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<libc::pid_t, i32> {
    // Every fd the child dups from must not collide with 0..=3.
    for fd in [prepared.devnull, prepared.control, prepared.err_pipe] {
        debug_assert!(fd.as_raw_fd() > 3, "fork-boundary fds must be above 3");
    }
    if let Shim::Sealed(fd) = prepared.shim {
        debug_assert!(fd.as_raw_fd() > 3, "fork-boundary fds must be above 3");
    }
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every architecture we support; keep 16-byte alignment.
    let base = stack.as_mut_ptr() as usize;
    let top = (base + STACK_SIZE) & !15;

    // Every signal, glibc's own included, stays blocked in this thread, and so in the child,
    // until the exec, which resets every handler: no handler of the host runs on the child's
    // stack, and the child resets no disposition itself.
    let old = sys::signal::block_every()?;
    let result = match cgroup {
        Some(dir) => clone3_into_cgroup(flags, prepared, base, top - base, dir),
        None => {
            // SAFETY: `child_main` only reads `prepared` (alive: this thread is suspended until
            // the child execs or exits, CLONE_VFORK) and runs on `stack`, which outlives the call
            // for the same reason. CLONE_VM without CLONE_SIGHAND gives the child its own signal
            // dispositions.
            let pid = unsafe {
                libc::clone(
                    child_main,
                    top as *mut libc::c_void,
                    flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    prepared as *const Prepared<'_> as *mut libc::c_void,
                )
            };
            if pid < 0 {
                Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO))
            } else {
                Ok(pid)
            }
        }
    };
    sys::signal::set_mask(old);
    drop(stack);
    result
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP | flags)` with the child on the stack
/// `[stack, stack + size)`, running [`child_main`]`(prepared)` and exiting with what it returns
/// (it never returns: it execs or `_exit`s). The child starts on its own stack at the system
/// call's return, so this part is written in assembly, as libc's `clone` is: nothing of the
/// parent's frame is touched by the child. Signals are blocked by the caller.
#[cfg(target_arch = "x86_64")]
fn clone3_into_cgroup(
    flags: libc::c_int,
    prepared: &Prepared<'_>,
    stack: usize,
    size: usize,
    cgroup: BorrowedFd<'_>,
) -> Result<libc::pid_t, i32> {
    let args = CloneArgs {
        flags: u64::from(flags as u32)
            | (libc::CLONE_VM | libc::CLONE_VFORK) as u64
            | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: size as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let entry: extern "C" fn(*mut libc::c_void) -> libc::c_int = child_main;
    let ret: i64;
    // SAFETY: the parent returns from the system call with only rax, rcx and r11 changed
    // (declared). The child (rax == 0) runs on the new stack the kernel switched it to (its top
    // 16-byte aligned by the caller, as the ABI wants at a call), calls `child_main(prepared)`
    // (r12, r13 keep their values across the system call) and exits with its return value; it
    // never comes back into this function. `args` and `prepared` outlive the call: the parent is
    // suspended until the child execs or exits (CLONE_VFORK).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") prepared as *const Prepared<'_>,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err((-ret) as i32)
    } else {
        Ok(ret as libc::pid_t)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3_into_cgroup(
    _flags: libc::c_int,
    _prepared: &Prepared<'_>,
    _stack: usize,
    _size: usize,
    _cgroup: BorrowedFd<'_>,
) -> Result<libc::pid_t, i32> {
    Err(libc::ENOSYS)
}

/// The child. See the module header for the rules.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&Prepared` passed to clone, alive while the parent is suspended.
    let p: &Prepared<'_> = unsafe { &*(arg as *const Prepared<'_>) };
    let fail = |errno: i32| -> ! {
        sys::fd::write_all_ignoring_errors(p.err_pipe, &errno.to_le_bytes());
        sys::exec::exit_now(127)
    };
    // No handler of the host can run here: every signal is blocked until the exec, which resets
    // the handlers (ignored signals stay ignored: exec keeps SIG_IGN and the shim resets its
    // children itself).
    for target in 0..3 {
        // SAFETY: the child's fds 0-2 are its own (a copy of the host's table; the host's own
        // stdio is untouched) and become the shim's.
        if let Err(e) = unsafe { sys::fd::dup2_keep(p.devnull, target) } {
            fail(e);
        }
    }
    // SAFETY: as above, for fd 3 (every fd the child reads is above 3, checked in `spawn`).
    if let Err(e) = unsafe { sys::fd::dup2_keep(p.control, 3) } {
        fail(e);
    }
    // Everything else closes at exec (the shim memfd must stay open until then).
    // SAFETY: the child's fd table is a copy of the host's: marking its fds above 3
    // close-on-exec leaves the host's own table untouched.
    let closed = unsafe { sys::fd::close_range(4, u32::MAX, CloseRange::CloseOnExec, p.fd_limit) };
    if let Err(e) = closed {
        fail(e);
    }
    let all_caps = if p.last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (p.last_cap + 1)) - 1
    };
    if let Err(e) = sys::caps::capset_all(all_caps) {
        fail(e);
    }
    if let Err(e) = sys::caps::raise_ambient(p.last_cap) {
        fail(e);
    }
    let e = match p.shim {
        Shim::Sealed(fd) => sys::exec::fexecve(fd, &p.argv, &p.envp),
        Shim::Cached { path, id } => exec_read_only(path, id, p),
    };
    fail(e)
}

/// Executes the file at `path` if it is the file `id`, from a read-only detached mount of it
/// made in the child's own (new) mount namespace: the shim's `/proc/<pid>/exe` then names a file
/// nobody can open for writing (`EROFS`). Returns the errno of what failed (`ESTALE`: `path`
/// names another file now). Part of the child: no allocation, async-signal-safe calls only.
fn exec_read_only(path: &std::ffi::CStr, id: sys::fs::FileId, p: &Prepared<'_>) -> i32 {
    let tree = match sys::fs::open_tree_clone_path(path) {
        Ok(t) => t,
        Err(e) => return e,
    };
    match sys::fs::file_id(tree.as_fd()) {
        Ok(seen) if seen == id => {}
        Ok(_) => return libc::ESTALE,
        Err(e) => return e,
    }
    let read_only =
        sys::fs::MOUNT_ATTR_RDONLY | sys::fs::MOUNT_ATTR_NOSUID | sys::fs::MOUNT_ATTR_NODEV;
    if let Err(e) = sys::fs::mount_setattr(tree.as_fd(), read_only, false) {
        return e;
    }
    sys::exec::fexecve(tree.as_fd(), &p.argv, &p.envp)
}

/// Reads the 4-byte errno the child left if its exec failed (`None`: the exec succeeded).
pub fn read_exec_error(pipe: RawFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    // SAFETY: reading into a local buffer; the pipe's write ends are closed, so this never blocks.
    let n = unsafe { libc::read(pipe, buf.as_mut_ptr().cast(), buf.len()) };
    (n == 4).then(|| i32::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::path::PathBuf;

    fn high(fd: impl AsFd) -> OwnedFd {
        let raw = nix::fcntl::fcntl(
            fd.as_fd().as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10),
        )
        .unwrap();
        // SAFETY: F_DUPFD_CLOEXEC just created `raw`; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    /// This process's cgroup v2 directory, where a cgroup2 file system is mounted.
    fn own_cgroup2_dir() -> Option<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(mount.join(path.trim_start_matches('/')))
    }

    /// `clone3` with `CLONE_INTO_CGROUP`: the child runs `child_main` on its own stack, execs,
    /// and is in the given cgroup from its first instruction (a cgroup v2 directory needs no
    /// controller for that). Root only: it makes a cgroup, and the child keeps its capabilities.
    #[test]
    fn a_child_cloned_into_a_cgroup_v2_is_born_in_it() {
        if !CAN_CLONE_INTO_CGROUP || !nix::unistd::geteuid().is_root() {
            eprintln!("needs root on x86_64");
            return;
        }
        let must_run = std::env::var("HATCHERY_TESTS_MUST_RUN").is_ok_and(|v| v == "1");
        let Some(parent) = own_cgroup2_dir() else {
            assert!(
                !must_run,
                "SKIP not allowed: no cgroup2 file system mounted"
            );
            eprintln!("SKIP no cgroup2 file system mounted");
            return;
        };
        let dir = parent.join(format!("hatchery-clone3-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("a cgroup in {}: {e}", parent.display()));
        /// Removes the test's cgroup however the test ends.
        struct Removed(PathBuf);
        impl Drop for Removed {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let dir = Removed(dir);
        let dir = &dir.0;
        // `cat` reads the pipe as stdin, so it lives until the write end is closed.
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (control, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let program = high(std::fs::File::open("/bin/cat").unwrap());
        let (stdin_r, err_w, control) = (high(stdin_r), high(err_w), high(control));
        let prepared = Prepared::new(
            Shim::Sealed(program.as_fd()),
            stdin_r.as_fd(),
            control.as_fd(),
            err_w.as_fd(),
            "cat",
        );
        let cgroup = std::fs::File::open(dir).unwrap();
        // A user namespace of its own, as every shim has: the child raises all its capabilities.
        let pid = spawn(libc::CLONE_NEWUSER, &prepared, Some(cgroup.as_fd()))
            .expect("clone3 into the cgroup");
        drop(err_w);
        assert_eq!(read_exec_error(err_r.as_raw_fd()), None, "exec failed");
        let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        drop(stdin_w);
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(seen.contains(&name), "child's cgroup: {seen:?}");
        assert_eq!(procs.trim(), pid.to_string(), "members: {procs:?}");
        assert!(matches!(
            status,
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ));
    }

    /// A cached shim: the child resolves its path in its own new mount namespace, refuses
    /// another file than the one the host checked, and executes it from a read-only detached
    /// mount, so that the running program's `/proc/<pid>/exe` cannot be reopened for writing
    /// (the CVE-2019-5736 pattern: an `O_PATH` fd kept until the program is gone, then reopened
    /// through `/proc/self/fd`), not even by the host's root.
    #[test]
    fn a_cached_shim_runs_from_a_read_only_mount_and_only_as_the_checked_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hatchery-cached-shim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("cat");
        std::fs::copy("/bin/cat", &file).unwrap();
        // Writable by its owner: only the mount may refuse the write.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        let id = sys::fs::file_id(std::fs::File::open(&file).unwrap().as_fd()).unwrap();
        let must_run = std::env::var("HATCHERY_TESTS_MUST_RUN").is_ok_and(|v| v == "1");
        let start = |id: sys::fs::FileId| {
            let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
            let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let (control, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let (stdin_r, err_w, control) = (high(stdin_r), high(err_w), high(control));
            let prepared = Prepared::new(
                Shim::Cached { path: &path, id },
                stdin_r.as_fd(),
                control.as_fd(),
                err_w.as_fd(),
                "cat",
            );
            let pid = spawn(libc::CLONE_NEWUSER | libc::CLONE_NEWNS, &prepared, None);
            drop(err_w);
            pid.map(|pid| (pid, read_exec_error(err_r.as_raw_fd()), stdin_w))
        };
        let reap =
            |pid: libc::pid_t| nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let other = sys::fs::FileId {
            ino: id.ino + 1,
            ..id
        };
        let (pid, error, _stdin) = match start(other) {
            Ok(x) => x,
            Err(errno) => {
                assert!(
                    !must_run,
                    "SKIP not allowed: no user namespace (errno {errno})"
                );
                eprintln!("SKIP no user and mount namespace (errno {errno})");
                return;
            }
        };
        assert_eq!(
            error,
            Some(libc::ESTALE),
            "ran a file other than the checked one"
        );
        let _ = reap(pid);

        let (pid, error, stdin) = start(id).expect("clone");
        assert_eq!(error, None, "exec of the cached file failed");
        let exe = nix::fcntl::open(
            format!("/proc/{pid}/exe").as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("the child's exe");
        drop(stdin);
        assert!(matches!(
            reap(pid),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ));
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{exe}"));
        assert_eq!(
            reopened.map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EROFS)),
            "the exited program's file was reopened for writing"
        );
        let _ = nix::unistd::close(exe);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read("/bin/cat").unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

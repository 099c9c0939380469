//! Built-in policies: `podman` (the default, modelled on the container runtimes' default
//! allowlists), `strict` (pure compute), `audit` (log everything) and `unconfined`.

use std::sync::OnceLock;

use super::{Action, ArgCmp, ArgCmpOp, Filter};

/// A built-in seccomp profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// The default: the allowlist of the container runtimes (Docker, podman) that runs
    /// ordinary programs (shells, coreutils, python, ImageMagick); calls not on it fail with
    /// `ENOSYS` (so programs fall back, as they do on older kernels). The kernel attack
    /// surface a helper never needs is reported and killed ([`Action::Notify`]): namespace
    /// creation (`unshare`, `setns`, `clone` with namespace flags), mount and the new mount
    /// API, `pivot_root`, `chroot`, `ptrace`, `process_vm_readv/writev`, `bpf`,
    /// `perf_event_open`, `userfaultfd`, `keyctl`, `add_key`, `request_key`, kexec and module
    /// loading, `open_by_handle_at`, and the `TIOCSTI`/`TIOCLINUX` ioctls. `clone3` and
    /// `io_uring_*` fail with `ENOSYS` (libc and io_uring users fall back), `personality`
    /// only reads or sets harmless personas, and foreign ABIs (x32, i386) kill the process.
    /// `socket` creates only `AF_UNIX`, `AF_INET`, `AF_INET6` and route netlink sockets and
    /// `socketpair` only `AF_UNIX` pairs; other families (`AF_VSOCK`, `AF_ALG`, `AF_PACKET`,
    /// …) fail with `EAFNOSUPPORT`.
    Podman,
    /// Pure compute: what a statically or dynamically linked program needs to start (exec,
    /// the loader's read-only opens and mappings), read and write on the fds it was given,
    /// memory, time, signals for itself, and exit. Everything else is a reported violation
    /// (`socket` and `socketpair` included, whatever the family).
    Strict,
    /// Everything is allowed and logged to the kernel audit log: a tool to learn what a helper
    /// calls, not a confinement (it restricts no call and no socket family).
    Audit,
    /// No filter.
    Unconfined,
}

impl Profile {
    /// Parses `podman`, `strict`, `audit`, `unconfined` (and `default` for `podman`).
    pub fn from_name(name: &str) -> Option<Profile> {
        Some(match name {
            "podman" | "default" | "docker" => Profile::Podman,
            "strict" => Profile::Strict,
            "audit" => Profile::Audit,
            "unconfined" => Profile::Unconfined,
            _ => return None,
        })
    }

    /// The profile's filter (`None` for `unconfined`). Built once per process; clones share
    /// the compiled program.
    pub fn filter(self) -> Option<Filter> {
        static PODMAN: OnceLock<Filter> = OnceLock::new();
        static STRICT: OnceLock<Filter> = OnceLock::new();
        static AUDIT: OnceLock<Filter> = OnceLock::new();
        match self {
            Profile::Podman => Some(PODMAN.get_or_init(podman).clone()),
            Profile::Strict => Some(STRICT.get_or_init(strict).clone()),
            Profile::Audit => Some(
                AUDIT
                    .get_or_init(|| Filter::new(Action::Log).named("audit").built_in("audit"))
                    .clone(),
            ),
            Profile::Unconfined => None,
        }
    }
}

/// The runtimes' default allowlist, across architectures (names a system's libseccomp does not
/// know, or that do not exist on the native architecture, are skipped).
const PODMAN_ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_mempolicy",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "mbind",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_mempolicy",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Calls newer than Debian 12's libseccomp (2.5.4), by their number, which since Linux 5.1 is
/// the same on every architecture but alpha: cachestat 451, fchmodat2 452, map_shadow_stack
/// 453, futex_wake 454, futex_wait 455, futex_requeue 456, mseal 462.
const NEW_ALLOW_NRS: &[i32] = &[451, 452, 453, 454, 455, 456, 462];

/// Reported and killed: the kernel attack surface a helper never needs.
const PODMAN_VIOLATIONS: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "chroot",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
];

/// Denied with ENOSYS: callers have fallbacks.
const PODMAN_ENOSYS: &[&str] = &[
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// Namespace flags of `clone`.
const CLONE_NAMESPACES: [u64; 6] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The address families `socket` may create: what helpers use (unix sockets, IPv4 and IPv6 on
/// the container's own network, route netlink for `getaddrinfo(AI_ADDRCONFIG)` and
/// `if_nameindex`). Every other family (`AF_VSOCK`, `AF_ALG`, `AF_PACKET`, `AF_KEY`,
/// `AF_BLUETOOTH`, …) fails with `EAFNOSUPPORT`, as on a kernel built without it.
pub(crate) const SOCKET_FAMILIES: [u64; 4] = [
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

/// `socket` for [`SOCKET_FAMILIES`] only (netlink with `NETLINK_ROUTE` only, other netlink
/// protocols fail with `EPROTONOSUPPORT`), `socketpair` for `AF_UNIX` only; everything else
/// fails with `EAFNOSUPPORT`. The family is compared on all 64 bits: a value with high bits set
/// (which the kernel would truncate to an int) is refused too.
fn add_socket_rules(f: &mut Filter) {
    let deny = Action::Errno(libc::EAFNOSUPPORT);
    for (call, allowed) in [
        ("socket", &SOCKET_FAMILIES[..]),
        ("socketpair", &[libc::AF_UNIX as u64][..]),
    ] {
        // Every value below the largest allowed one that is not allowed, then all above it.
        let top = *allowed.iter().max().unwrap_or(&0);
        for family in 0..=top {
            if family == libc::AF_NETLINK as u64 && call == "socket" {
                let netlink = ArgCmp::new(0, ArgCmpOp::Eq, family, 0);
                let route = libc::NETLINK_ROUTE as u64;
                f.add_rule_conditional(
                    Action::Allow,
                    call,
                    &[netlink, ArgCmp::new(2, ArgCmpOp::Eq, route, 0)],
                );
                f.add_rule_conditional(
                    Action::Errno(libc::EPROTONOSUPPORT),
                    call,
                    &[netlink, ArgCmp::new(2, ArgCmpOp::Ne, route, 0)],
                );
                continue;
            }
            let action = if allowed.contains(&family) {
                Action::Allow
            } else {
                deny
            };
            f.add_rule_conditional(action, call, &[ArgCmp::new(0, ArgCmpOp::Eq, family, 0)]);
        }
        f.add_rule_conditional(deny, call, &[ArgCmp::new(0, ArgCmpOp::Gt, top, 0)]);
    }
}

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

fn podman() -> Filter {
    let mut f = Filter::new(Action::Errno(libc::ENOSYS))
        .named("podman")
        .lenient();
    for name in PODMAN_ALLOW {
        if !matches!(*name, "ioctl" | "socket" | "socketpair") {
            f.add_rule(Action::Allow, name);
        }
    }
    add_socket_rules(&mut f);
    for nr in NEW_ALLOW_NRS {
        f.add_rule_nr(Action::Allow, *nr);
    }
    for name in PODMAN_VIOLATIONS {
        f.add_rule(Action::Notify, name);
    }
    for name in PODMAN_ENOSYS {
        f.add_rule(Action::Errno(libc::ENOSYS), name);
    }
    // clone: allowed without namespace flags (CLONE_NEWCGROUP is checked too); any namespace
    // flag is a violation.
    let all_ns = CLONE_NAMESPACES
        .iter()
        .fold(libc::CLONE_NEWCGROUP as u64, |a, b| a | b);
    f.add_rule_conditional(
        Action::Allow,
        "clone",
        &[ArgCmp::new(0, ArgCmpOp::MaskedEq, all_ns, 0)],
    );
    for flag in CLONE_NAMESPACES
        .iter()
        .chain(&[libc::CLONE_NEWCGROUP as u64])
    {
        f.add_rule_conditional(
            Action::Notify,
            "clone",
            &[ArgCmp::new(0, ArgCmpOp::MaskedEq, *flag, *flag)],
        );
    }
    // ioctl: TIOCSTI and TIOCLINUX (compared on the low 32 bits, as the kernel does) are
    // violations, everything else is allowed.
    for req in [TIOCSTI, TIOCLINUX] {
        f.add_ioctl_rule(Action::Notify, req);
    }
    f.add_rule(Action::Allow, "ioctl");
    // personality: only querying it, PER_LINUX, PER_LINUX32 and UNAME26 (as the runtimes);
    // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the rest fail with ENOSYS.
    for persona in [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        f.add_rule_conditional(
            Action::Allow,
            "personality",
            &[ArgCmp::new(0, ArgCmpOp::Eq, persona, 0)],
        );
    }
    f.built_in("podman")
}

/// Startup of a (dynamically linked) program, and pure compute afterwards.
const STRICT_ALLOW: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "exit",
    "exit_group",
    "rt_sigreturn",
    "rt_sigaction",
    "rt_sigprocmask",
    "sigaltstack",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "getrandom",
    "futex",
    "sched_yield",
    "sched_getaffinity",
    "restart_syscall",
    "execve",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "getrlimit",
    "getpid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "uname",
    "poll",
    "ppoll",
    "getcwd",
    "sysinfo",
    "ioctl",
];

fn strict() -> Filter {
    let mut f = Filter::new(Action::Notify).named("strict").lenient();
    for name in STRICT_ALLOW {
        if *name != "ioctl" {
            f.add_rule(Action::Allow, name);
        }
    }
    // The loader opens libraries read-only; nothing may be opened for writing.
    for name in ["open", "openat"] {
        let flags_arg = if name == "open" { 1 } else { 2 };
        f.add_rule_conditional(
            Action::Allow,
            name,
            &[ArgCmp::new(
                flags_arg,
                ArgCmpOp::MaskedEq,
                libc::O_ACCMODE as u64,
                libc::O_RDONLY as u64,
            )],
        );
    }
    // isatty() probes from stdio: terminal queries only.
    f.add_rule_conditional(
        Action::Errno(libc::ENOTTY),
        "ioctl",
        &[ArgCmp::new(1, ArgCmpOp::Eq, libc::TCGETS, 0)],
    );
    // Signals only to itself (raise/abort).
    f.add_rule_conditional(
        Action::Allow,
        "tgkill",
        &[ArgCmp::new(2, ArgCmpOp::Eq, libc::SIGABRT as u64, 0)],
    );
    f.built_in("strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_compiles() {
        for p in [Profile::Podman, Profile::Strict, Profile::Audit] {
            let prog = p.filter().unwrap().compile(false).unwrap();
            assert!(prog.words.len() > 3, "{p:?}");
        }
        assert!(
            Profile::Podman
                .filter()
                .unwrap()
                .compile(false)
                .unwrap()
                .notify
        );
        assert!(Profile::Unconfined.filter().is_none());
    }

    #[test]
    fn names_parse() {
        assert_eq!(Profile::from_name("podman"), Some(Profile::Podman));
        assert_eq!(Profile::from_name("strict"), Some(Profile::Strict));
        assert_eq!(Profile::from_name("nope"), None);
    }
}

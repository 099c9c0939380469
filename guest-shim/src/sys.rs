//! Raw system calls that neither std nor nix wraps, each async-signal-safe and allocation-free,
//! so that both fork-boundary modules (the host's clone child and the shim's request child) can
//! call them. Every function here is a thin wrapper returning the errno on failure.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::RawFd;

/// An errno value.
pub type Errno = i32;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective, permitted and inheritable sets of the calling thread to `mask` each.
pub fn capset_all(mask: u64) -> Result<(), Errno> {
    let header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: header and data are valid, properly laid out `__user_cap_header_struct` and two
    // `__user_cap_data_struct`s (the v3 ABI), alive for the duration of the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Reads the calling thread's permitted set.
pub fn capget_permitted() -> Result<u64, Errno> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: as in `capset_all`; the kernel writes two data structs into `data`.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: libc::c_int, a2: libc::c_ulong, a3: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: only integer arguments are passed; options that take pointers are not used here.
    let ret = unsafe { libc::prctl(option, a2, a3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Raises every capability up to `last_cap` into the ambient set (they must be permitted and
/// inheritable), so they survive `execve` whatever the uid.
pub fn raise_ambient(last_cap: u32) -> Result<(), Errno> {
    for cap in 0..=last_cap {
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap as libc::c_ulong,
        )?;
    }
    Ok(())
}

/// Empties the bounding set. It only limits what an exec can gain, so the shim does this once,
/// after building the container, and keeps its own effective capabilities for its work; every
/// child inherits the empty set.
pub fn drop_bounding_set(last_cap: u32) -> Result<(), Errno> {
    for cap in 0..=last_cap {
        match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// First half of dropping every capability for good (the bounding set is already empty, see
/// [`drop_bounding_set`]): ambient set cleared, securebits locked so that uid 0 gains nothing at
/// exec and changing uids keeps the remaining capabilities (so `setresuid` still works after
/// this). Finish with `capset_all(0)` once the ids are set.
pub fn lock_capabilities() -> Result<(), Errno> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )?;
    // SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | ..._LOCKED |
    // SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | ..._LOCKED
    const BITS: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;
    prctl(libc::PR_SET_SECUREBITS, BITS, 0).map(drop)
}

/// `close_range(first, last, flags)`; falls back to closing one by one up to `fallback_max`
/// on kernels without it (< 5.9). `flags` may be `CLOSE_RANGE_CLOEXEC` (then the fallback marks
/// each fd close-on-exec instead).
pub fn close_range(first: u32, last: u32, cloexec: bool, fallback_max: u32) -> Result<(), Errno> {
    const CLOSE_RANGE_CLOEXEC: libc::c_long = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range takes integers only; closing fds we own is what the caller asked for.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_long,
            last as libc::c_long,
            flags,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let e = errno();
    if e != libc::ENOSYS && e != libc::EINVAL {
        return Err(e);
    }
    let end = last.min(fallback_max);
    let mut fd = first;
    while fd <= end {
        if cloexec {
            // SAFETY: integer-only fcntl on an fd in the caller's range; EBADF is ignored.
            unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC) };
        } else {
            // SAFETY: closing an fd in the caller's range; EBADF for holes is ignored.
            unsafe { libc::close(fd as RawFd) };
        }
        fd += 1;
    }
    Ok(())
}

/// `dup2(old, new)`; when `old == new` clears close-on-exec instead (dup2 would not).
pub fn dup2_keep(old: RawFd, new: RawFd) -> Result<(), Errno> {
    if old == new {
        // SAFETY: integer-only fcntl on an fd the caller owns.
        let ret = unsafe { libc::fcntl(old, libc::F_SETFD, 0) };
        return if ret < 0 { Err(errno()) } else { Ok(()) };
    }
    // SAFETY: integer-only dup2; `new` is a slot the caller means to replace.
    let ret = unsafe { libc::dup2(old, new) };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Unblocks every signal of the calling thread.
pub fn unblock_all_signals() -> Result<(), Errno> {
    // SAFETY: an all-zero sigset_t is a valid (empty) set; sigemptyset makes it explicit.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid local sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is initialised; the old-mask pointer is null.
    if unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) } != 0 {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// The signals whose disposition is not the default: ignored ones (such as Rust's `SIGPIPE`),
/// which would survive exec, and handled ones (such as Rust's `SIGSEGV` guard), which must not
/// run in a child that shares the parent's memory. A child resets exactly these before exec.
pub fn non_default_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| {
            // SAFETY: an all-zero sigaction is valid; the query writes into it.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: querying a disposition into a valid local struct.
            let ok = unsafe { libc::sigaction(sig, std::ptr::null(), &mut current) } == 0;
            ok && current.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

/// Resets `signals` to their default disposition.
pub fn reset_signals(signals: &[i32]) {
    for &sig in signals {
        // SAFETY: SIG_DFL is always a valid disposition; invalid numbers return EINVAL, ignored.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// `setrlimit` through `prlimit64` on the calling process.
pub fn set_rlimit(resource: libc::c_int, soft: u64, hard: u64) -> Result<(), Errno> {
    let lim = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit64; the old-limit pointer is null.
    let ret = unsafe {
        libc::prlimit64(
            0,
            resource as libc::__rlimit_resource_t,
            &lim,
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;

/// Installs a classic BPF seccomp filter (the caller sets no_new_privs first). With `listener`
/// the filter gets a user-notification listener, whose (close-on-exec) fd is returned.
pub fn install_seccomp(
    program: &[libc::sock_filter],
    listener: bool,
) -> Result<Option<RawFd>, Errno> {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let flags = if listener {
        SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_long, /* SECCOMP_SET_MODE_FILTER */
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    let ret = check(ret)?;
    Ok(listener.then_some(ret as RawFd))
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Arguments.
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompNotif {
    /// Cookie for the response.
    pub id: u64,
    /// Calling thread, in the listener's pid namespace.
    pub pid: u32,
    /// Unused.
    pub flags: u32,
    /// The call.
    pub data: SeccompData,
}

#[repr(C)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `SECCOMP_IOCTL_NOTIF_RECV` = `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND` = `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// Receives one pending notification from a seccomp listener.
pub fn seccomp_notif_recv(listener: RawFd) -> Result<SeccompNotif, Errno> {
    // The kernel insists on a zeroed buffer.
    let mut notif = SeccompNotif::default();
    // SAFETY: `notif` is a writable `struct seccomp_notif` of the size the ioctl number encodes.
    let r = unsafe { libc::ioctl(listener, NOTIF_RECV, &mut notif as *mut SeccompNotif) };
    check(r as libc::c_long)?;
    Ok(notif)
}

/// Answers notification `id`: the call fails with `errno`.
pub fn seccomp_notif_deny(listener: RawFd, id: u64, errno: i32) -> Result<(), Errno> {
    let resp = SeccompNotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: `resp` is a `struct seccomp_notif_resp` of the size the ioctl number encodes.
    let r = unsafe { libc::ioctl(listener, NOTIF_SEND, &resp as *const SeccompNotifResp) };
    check(r as libc::c_long).map(drop)
}

/// Sends `fd` with an 8-byte message over a unix socket (SCM_RIGHTS), without allocating.
pub fn send_fd(sock: RawFd, msg: &[u8; 8], fd: RawFd, flags: i32) -> Result<(), Errno> {
    // One cmsghdr carrying one int: the data follows the (16-byte, aligned) header, which is
    // where CMSG_DATA puts it on Linux.
    #[repr(C)]
    struct FdControl {
        hdr: libc::cmsghdr,
        fd: RawFd,
    }
    // SAFETY: cmsghdr is plain integers; all-zero is valid.
    let zeroed_hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
    let mut control = FdControl {
        hdr: zeroed_hdr,
        fd,
    };
    control.hdr.cmsg_level = libc::SOL_SOCKET;
    control.hdr.cmsg_type = libc::SCM_RIGHTS;
    // SAFETY: CMSG_LEN is a pure size computation.
    control.hdr.cmsg_len = unsafe { libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live locals.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = (&mut control as *mut FdControl).cast();
    hdr.msg_controllen = std::mem::size_of::<FdControl>();
    loop {
        // SAFETY: `hdr` and everything it points to are alive for the call.
        let r = unsafe { libc::sendmsg(sock, &hdr, flags) };
        if r >= 0 {
            return Ok(());
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// `struct landlock_ruleset_attr` (ABI 6: fs, net, scoped).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LandlockRulesetAttr {
    /// Handled `LANDLOCK_ACCESS_FS_*`.
    pub handled_access_fs: u64,
    /// Handled `LANDLOCK_ACCESS_NET_*`.
    pub handled_access_net: u64,
    /// `LANDLOCK_SCOPE_*`.
    pub scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// The kernel's landlock ABI version (`Err` when landlock is absent or disabled).
pub fn landlock_abi() -> Result<u32, Errno> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0 only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<LandlockRulesetAttr>(),
            0usize,
            1u32, /* LANDLOCK_CREATE_RULESET_VERSION */
        )
    };
    check(r).map(|v| v as u32)
}

/// Creates a ruleset; returns its (close-on-exec) fd.
pub fn landlock_create_ruleset(attr: &LandlockRulesetAttr) -> Result<RawFd, Errno> {
    // SAFETY: `attr` is a live struct of the size passed. The kernel accepts a larger struct than
    // it knows as long as the unknown tail is zero, which the caller ensures.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const LandlockRulesetAttr,
            std::mem::size_of::<LandlockRulesetAttr>(),
            0u32,
        )
    };
    check(r).map(|fd| fd as RawFd)
}

/// Allows `access` beneath the file or directory open at `parent_fd`.
pub fn landlock_allow_path(ruleset: RawFd, parent_fd: RawFd, access: u64) -> Result<(), Errno> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd,
    };
    // SAFETY: `attr` is a live `struct landlock_path_beneath_attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1u32, /* LANDLOCK_RULE_PATH_BENEATH */
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    check(r).map(drop)
}

/// Allows `access` on TCP `port`.
pub fn landlock_allow_port(ruleset: RawFd, port: u64, access: u64) -> Result<(), Errno> {
    let attr = NetPortAttr {
        allowed_access: access,
        port,
    };
    // SAFETY: `attr` is a live `struct landlock_net_port_attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            2u32, /* LANDLOCK_RULE_NET_PORT */
            &attr as *const NetPortAttr,
            0u32,
        )
    };
    check(r).map(drop)
}

/// Restricts the calling thread (and what it execs and forks) to `ruleset`.
pub fn landlock_restrict_self(ruleset: RawFd) -> Result<(), Errno> {
    // SAFETY: integer-only syscall.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    check(r).map(drop)
}

/// `execve(path, argv, envp)`; only returns on failure.
///
/// `argv` and `envp` are null-terminated arrays of pointers to NUL-terminated strings that the
/// caller keeps alive.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: the caller guarantees null-terminated pointer arrays of live C strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: executes the file behind `fd`.
pub fn fexecve(fd: RawFd, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: as in `execve`; the empty path is a static NUL-terminated string.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd as libc::c_long,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_long,
        )
    };
    errno()
}

/// Writes all of `buf` to `fd`, retrying on `EINTR`; errors are ignored (used to report a
/// failure from a child that is about to `_exit`).
pub fn write_all_ignoring_errors(fd: RawFd, buf: &[u8]) {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: `buf[off..]` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n > 0 {
            off += n as usize;
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// `_exit(code)`: leaves without running atexit handlers or flushing stdio.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both paths are NUL-terminated strings alive for the call.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket() takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into `req`, a valid ifreq.
    let mut res = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    if res == 0 {
        // SAFETY: the flags member of the union was just filled by SIOCGIFFLAGS.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq.
        res = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
    }
    let err = errno();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if res < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

/// `RESOLVE_NO_MAGICLINKS`: do not follow `/proc/*/fd`-style links.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `RESOLVE_NO_SYMLINKS`: fail with `ELOOP` on any symbolic link, the last component included.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// `RESOLVE_BENEATH`: fail with `EXDEV` on anything (`..`, an absolute link) leaving the
/// starting directory.
pub const RESOLVE_BENEATH: u64 = 0x08;
/// `RESOLVE_IN_ROOT`: treat the starting directory as `/` (`..` and absolute links stay in it).
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(dir, path, {flags, mode, resolve})`, returning the new fd (always close-on-exec).
pub fn openat2(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd};
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u32 as u64,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `dir` is an open fd borrowed for the call, `path` is NUL-terminated and `how` a
    // valid `struct open_how` of the size passed; all alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd() as libc::c_long,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = check(ret)? as RawFd;
    // SAFETY: the kernel just returned `fd`, a new open file descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {attr_set: set})`: sets `MOUNT_ATTR_*`
/// bits on the mount `fd` was opened on (the root of a mount) and, with `recursive`, on every
/// mount below it.
pub fn mount_setattr_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    set: u64,
    recursive: bool,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    const AT_RECURSIVE: libc::c_long = 0x8000;
    let flags = libc::AT_EMPTY_PATH as libc::c_long | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `fd` is an open fd borrowed for the call, the path is an empty NUL-terminated
    // string and `attr` a valid `struct mount_attr` of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

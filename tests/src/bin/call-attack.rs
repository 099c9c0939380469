//! A call-mode helper whose exports behave as if their input had compromised them: one attack
//! per export. The tests in `tests/tests/call_attacks.rs` check that none of them reaches another
//! call, the helper's supervisor or the host.

#![allow(clippy::multiple_unsafe_ops_per_block)] // an attack program: raw calls in a row

use std::io::Write;

use hatchery_guest::{Call, Exports};

type R = Result<Vec<u8>, String>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks a process that keeps every inherited fd and steals whatever arrives on any socket
/// among them, answering nothing (a hijacker planted for the next callers).
fn plant(_: &mut Call) -> R {
    // SAFETY: the helper is single-threaded; the child only makes raw syscalls and loops.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            let mut fds: Vec<libc::pollfd> = (3..256)
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a live array of pollfd of the given length.
            #[allow(unsafe_code)]
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
            if n <= 0 {
                continue;
            }
            for p in &fds {
                if p.revents & libc::POLLIN != 0 {
                    let mut buf = [0u8; 65536];
                    // SAFETY: reading into a live stack buffer.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::recv(p.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                    };
                }
            }
        }
    }
    Ok(format!("planted {pid}").into_bytes())
}

/// Searches this process's memory for the bytes of the argument reversed (so the marker itself
/// is never built here): finds what an earlier call received.
fn scan(c: &mut Call) -> R {
    // The marker is the argument reversed, XORed here byte by byte so it is never materialised.
    let key: Vec<u8> = c.arg().iter().rev().map(|b| b ^ 0x5a).collect();
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let mem = std::fs::File::open("/proc/self/mem").map_err(|e| e.to_string())?;
    let mut hits = 0usize;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut buf = vec![0u8; (b - a) as usize];
        use std::os::unix::fs::FileExt;
        if mem.read_exact_at(&mut buf, a).is_err() {
            continue;
        }
        if key.is_empty() || buf.len() < key.len() {
            continue;
        }
        for w in buf.windows(key.len()) {
            if w.iter().zip(&key).all(|(x, k)| x ^ 0x5a == *k) {
                hits += 1;
            }
        }
    }
    Ok(hits.to_string().into_bytes())
}

/// Leaves a file in /tmp and /dev/shm, a SysV shared memory segment and a POSIX message
/// queue for the next call, and reports which of them an earlier call had left.
fn residue(_: &mut Call) -> R {
    let mut found = Vec::new();
    if std::path::Path::new("/tmp/planted").exists() {
        found.push("tmp");
    }
    if std::path::Path::new("/dev/shm/planted").exists() {
        found.push("shm");
    }
    // SAFETY: integer-only syscalls.
    #[allow(unsafe_code)]
    unsafe {
        if libc::shmget(0x4854_4348, 0, 0) >= 0 {
            found.push("sysv");
        }
        let name = c"/planted";
        let q = libc::mq_open(name.as_ptr(), libc::O_RDONLY);
        if q >= 0 {
            found.push("mqueue");
            libc::mq_close(q);
        }
        libc::shmget(0x4854_4348, 4096, libc::IPC_CREAT | 0o666);
        let q = libc::mq_open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_RDWR,
            0o666 as libc::mode_t,
            std::ptr::null::<libc::mq_attr>(),
        );
        if q >= 0 {
            libc::mq_close(q);
        }
    }
    let _ = std::fs::write("/tmp/planted", b"x");
    let _ = std::fs::write("/dev/shm/planted", b"x");
    Ok(found.join(",").into_bytes())
}

/// Writes 64 MiB to stdout whatever the limit says (SIGXFSZ ignored, errors ignored).
fn flood(_: &mut Call) -> R {
    // SAFETY: ignoring a signal installs no handler.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let mut out = std::fs::File::from(
        std::os::fd::AsFd::as_fd(&std::io::stdout())
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    );
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..64 {
        let _ = out.write(&chunk);
    }
    // Raise the limit if it can, and try again.
    // SAFETY: integer-only syscall on a live struct.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    for _ in 0..64 {
        let _ = out.write(&chunk);
    }
    Ok(Vec::new())
}

/// Tries to read PID 1's memory and to change PID 1's limits; reports both errnos.
fn pid1(_: &mut Call) -> R {
    let mem = match std::fs::File::open("/proc/1/mem") {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    let lim = libc::rlimit {
        rlim_cur: 4,
        rlim_max: 4,
    };
    // SAFETY: prlimit with a live input struct and no output.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prlimit(1, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    let pl = if r == 0 { 0 } else { errno() };
    // Signal PID 1 (must be refused or ignored).
    Ok(format!("mem={mem} prlimit={pl}").into_bytes())
}

/// Lists the open fds (number and kind) of this call.
fn fds(_: &mut Call) -> R {
    let mut out = Vec::new();
    for fd in 0..1024 {
        if let Ok(t) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            let t = t.to_string_lossy().into_owned();
            let kind = t.split(':').next().unwrap_or("").to_string();
            out.push(format!("{fd}={kind}"));
        }
    }
    Ok(out.join(" ").into_bytes())
}

/// Reports what this call can change outside its own process group: sysctls, the scheduling
/// of PID 1 and of the helper zygote (its parent), and writable directories.
fn probe(_: &mut Call) -> R {
    let mut out = Vec::new();
    // SAFETY: integer-only syscalls.
    #[allow(unsafe_code)]
    let (uid, ppid) = unsafe { (libc::geteuid(), libc::getppid()) };
    out.push(format!("uid={uid} ppid={ppid}"));
    for f in [
        "/proc/sys/net/ipv4/ping_group_range",
        "/proc/sys/kernel/msgmax",
        "/proc/sys/fs/mqueue/msg_max",
    ] {
        let r = std::fs::read_to_string(f).unwrap_or_default();
        let w = match std::fs::write(f, r.trim().as_bytes()) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        };
        out.push(format!("{f}={w}"));
    }
    for (name, pid) in [("pid1", 1), ("zygote", ppid)] {
        // SAFETY: integer-only syscalls.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 19) };
        out.push(format!("nice-{name}={}", if r == 0 { 0 } else { errno() }));
        // SAFETY: a zeroed cpu_set_t with cpu 0 set, passed by pointer.
        #[allow(unsafe_code)]
        let r = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        out.push(format!(
            "affinity-{name}={}",
            if r == 0 { 0 } else { errno() }
        ));
    }
    for d in [
        "/",
        "/etc",
        "/usr",
        "/dev",
        "/dev/mqueue",
        "/proc",
        "/sys",
        "/run",
        "/var",
        "/home",
    ] {
        let c = std::ffi::CString::new(d).unwrap();
        // SAFETY: a live C string.
        #[allow(unsafe_code)]
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
            let t = format!("{d}/.hatchery-probe");
            if std::fs::write(&t, b"x").is_ok() {
                out.push(format!("writable={d}"));
                let _ = std::fs::remove_file(&t);
            }
        }
    }
    Ok(out.join(" ").into_bytes())
}

/// Keeps a UDP port bound and a lock on /etc/passwd held after this call's processes are gone,
/// by leaving their fds in flight in an SCM_RIGHTS cycle; reports whether an earlier call had.
fn inflight(_: &mut Call) -> R {
    let mut found = Vec::new();
    // SAFETY: raw socket calls on live structs owned by this function.
    #[allow(unsafe_code)]
    unsafe {
        let udp = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_port = 47_123u16.to_be();
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(udp, (&a as *const libc::sockaddr_in).cast(), len) < 0 {
            found.push(format!("udp-bound({})", errno()));
        }
        let lock = libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY);
        if libc::flock(lock, libc::LOCK_EX | libc::LOCK_NB) < 0 {
            found.push(format!("locked({})", errno()));
        }
        let mut sv = [0i32; 2];
        libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, sv.as_mut_ptr());
        // Send sv[0], sv[1], the UDP socket and the locked file to sv[1]: a cycle.
        let fds = [sv[0], sv[1], udp, lock];
        let space = libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        if libc::sendmsg(sv[0], &msg, 0) < 0 {
            found.push(format!("sendmsg({})", errno()));
        }
        for fd in fds {
            libc::close(fd);
        }
    }
    Ok(found.join(",").into_bytes())
}

/// The pid of a process of this container, from `/proc/<pid>/stat`: its parent.
fn ppid_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every other child of this call process's parent (the helper zygote): the next call's
/// process, forked ahead while this call runs. Waits up to a second for one to appear.
fn siblings() -> Vec<i32> {
    // SAFETY: integer-only syscalls.
    #[allow(unsafe_code)]
    let (me, zygote) = unsafe { (libc::getpid(), libc::getppid()) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let found: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| p != me && ppid_of(p) == Some(zygote))
            .collect();
        if !found.is_empty() || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn rc(r: libc::c_long) -> i32 {
    if r >= 0 {
        0
    } else {
        errno()
    }
}

fn write_errno(path: &str, data: &[u8]) -> i32 {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => match f.write_all(data) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        },
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn open_errno(path: &str) -> i32 {
    match std::fs::File::open(path) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Attacks the next call's process (forked ahead while this call runs), the helper zygote and
/// PID 1 by every route that is not a plain `kill`: pidfds (signal, `pidfd_getfd` of the
/// channel), `/proc/<pid>/{mem,fd,environ}`, `F_SETOWN`/`F_SETSIG`
/// (SIGSTOP by I/O), and the `/proc` files that change a process's lot (`oom_score_adj`,
/// the session's autogroup nice). Reports `what=errno` (0: it worked) for each.
fn neighbours(_: &mut Call) -> R {
    let mut out = Vec::new();
    let sibs = siblings();
    out.push(format!("siblings={}", sibs.len()));
    // SAFETY: integer-only syscall.
    #[allow(unsafe_code)]
    let zygote = unsafe { libc::getppid() };
    let mut targets: Vec<(String, i32)> = sibs.iter().map(|&p| ("spare".to_string(), p)).collect();
    targets.push(("zygote".into(), zygote));
    targets.push(("pid1".into(), 1));
    for (name, pid) in &targets {
        let pid = *pid;
        // SAFETY: raw syscalls on integers and live buffers owned by this function.
        #[allow(unsafe_code)]
        unsafe {
            out.push(format!("{name}-kill0={}", rc(libc::kill(pid, 0) as _)));
            out.push(format!(
                "{name}-stop={}",
                rc(libc::kill(pid, libc::SIGSTOP) as _)
            ));
            if pid > 1 {
                out.push(format!(
                    "{name}-stop-group={}",
                    rc(libc::kill(-pid, libc::SIGSTOP) as _)
                ));
            } else {
                // kill(-1) is everyone this process may signal, and returns 0 even when every
                // target refused (EPERM): only the next calls tell whether it stopped any.
                out.push(format!(
                    "everyone-stop-sent:{}",
                    rc(libc::kill(-1, libc::SIGSTOP) as _)
                ));
            }
            out.push(format!(
                "{name}-tgkill={}",
                rc(libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGSTOP))
            ));
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
            if pidfd >= 0 {
                out.push(format!(
                    "{name}-pidfd-signal={}",
                    rc(libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd,
                        libc::SIGSTOP,
                        std::ptr::null::<libc::siginfo_t>(),
                        0
                    ))
                ));
                for fd in 0..8 {
                    let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0);
                    out.push(format!("{name}-getfd{fd}={}", rc(got)));
                    if got >= 0 {
                        libc::close(got as i32);
                    }
                }
                libc::close(pidfd as i32);
            }
            // SIGSTOP for I/O on a pipe whose owner is the target (a process, then its group).
            for (kind, owner) in [("pid", pid), ("pgrp", -pid)] {
                let mut p = [0i32; 2];
                if libc::pipe(p.as_mut_ptr()) == 0 {
                    let own = libc::fcntl(p[0], libc::F_SETOWN, owner);
                    let sig = libc::fcntl(p[0], 10 /* F_SETSIG */, libc::SIGSTOP);
                    let fl = libc::fcntl(p[0], libc::F_GETFL);
                    let asy = libc::fcntl(p[0], libc::F_SETFL, fl | libc::O_ASYNC);
                    libc::write(p[1], b"x".as_ptr().cast(), 1);
                    out.push(format!(
                        "{name}-sigio-{kind}-armed:{}",
                        if own == 0 && sig == 0 && asy == 0 {
                            0
                        } else {
                            errno()
                        }
                    ));
                    libc::close(p[0]);
                    libc::close(p[1]);
                }
            }
        }
        for f in ["mem", "environ", "fd/3", "fd/0", "fdinfo/3"] {
            out.push(format!(
                "{name}-open-{}={}",
                f.replace('/', ""),
                open_errno(&format!("/proc/{pid}/{f}"))
            ));
        }
        out.push(format!(
            "{name}-readlink-fd3={}",
            match std::fs::read_link(format!("/proc/{pid}/fd/3")) {
                Ok(_) => 0,
                Err(e) => e.raw_os_error().unwrap_or(-1),
            }
        ));
        out.push(format!(
            "{name}-oom-score-adj={}",
            write_errno(&format!("/proc/{pid}/oom_score_adj"), b"1000")
        ));
        out.push(format!(
            "{name}-autogroup={}",
            write_errno(&format!("/proc/{pid}/autogroup"), b"19")
        ));
        out.push(format!(
            "{name}-timerslack={}",
            write_errno(&format!("/proc/{pid}/timerslack_ns"), b"100000000")
        ));
        out.push(format!(
            "{name}-coredump-filter={}",
            write_errno(&format!("/proc/{pid}/coredump_filter"), b"0x7f")
        ));
        out.push(format!(
            "{name}-comm={}",
            write_errno(&format!("/proc/{pid}/comm"), b"pwned")
        ));
    }
    // The session's autogroup (shared with the zygote unless the call has its own session).
    out.push(format!(
        "self-autogroup={}",
        write_errno("/proc/self/autogroup", b"19")
    ));
    Ok(out.join(" ").into_bytes())
}

/// What a call process inherits from the helper zygote that an earlier call might have
/// changed: OOM score, niceness, autogroup, timer slack, limits, scheduling, signal
/// dispositions and mask, umask, session, comm.
fn selfstate(_: &mut Call) -> R {
    let mut out = Vec::new();
    let read = |f: &str| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("_")
    };
    out.push(format!("oom={}", read("/proc/self/oom_score_adj")));
    // The autogroup's name carries its id: keep only the nice value.
    let ag = read("/proc/self/autogroup");
    out.push(format!(
        "autogroup-nice={}",
        ag.rsplit("nice_").next().unwrap_or("")
    ));
    out.push(format!("comm={}", read("/proc/self/comm")));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status.lines() {
        if [
            "SigBlk",
            "SigIgn",
            "NoNewPrivs",
            "Seccomp:",
            "CapEff",
            "CapBnd",
        ]
        .iter()
        .any(|k| l.starts_with(k))
        {
            out.push(l.split_whitespace().collect::<Vec<_>>().join("="));
        }
    }
    // SAFETY: integer-only syscalls and live out-structs.
    #[allow(unsafe_code)]
    unsafe {
        *libc::__errno_location() = 0;
        out.push(format!("nice={}", libc::getpriority(libc::PRIO_PROCESS, 0)));
        out.push(format!(
            "slack={}",
            libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0)
        ));
        out.push(format!("policy={}", libc::sched_getscheduler(0)));
        out.push(format!(
            "ioprio={}",
            libc::syscall(libc::SYS_ioprio_get, 1, 0)
        ));
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        out.push(format!("cpus={}", libc::CPU_COUNT(&set)));
        let um = libc::umask(0o22);
        libc::umask(um);
        out.push(format!("umask={um:o}"));
        out.push(format!("own-group={}", libc::getpgid(0) == libc::getpid()));
        out.push(format!(
            "dumpable={}",
            libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0)
        ));
        for (n, r) in [
            ("nofile", libc::RLIMIT_NOFILE),
            ("nproc", libc::RLIMIT_NPROC),
            ("fsize", libc::RLIMIT_FSIZE),
            ("cpu", libc::RLIMIT_CPU),
            ("as", libc::RLIMIT_AS),
            ("stack", libc::RLIMIT_STACK),
            ("memlock", libc::RLIMIT_MEMLOCK),
            ("msgqueue", libc::RLIMIT_MSGQUEUE),
            ("core", libc::RLIMIT_CORE),
        ] {
            let mut l: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(r, &mut l);
            out.push(format!("{n}={}/{}", l.rlim_cur, l.rlim_max));
        }
        let q = libc::mq_open(
            c"/hatchery-probe".as_ptr(),
            libc::O_CREAT | libc::O_RDWR,
            0o600 as libc::mode_t,
            std::ptr::null::<libc::mq_attr>(),
        );
        out.push(format!("mq-open={}", if q >= 0 { 0 } else { errno() }));
        if q >= 0 {
            libc::mq_close(q);
            libc::mq_unlink(c"/hatchery-probe".as_ptr());
        }
    }
    Ok(out.join(" ").into_bytes())
}

/// Forks `arg` (default 16) descendants that let go of every socket (so nothing waits for
/// them), then race the supervisor's cleanup: each creates files in `/tmp` and `/dev/shm` in a
/// loop (removing its previous one), half of them at `SCHED_IDLE` so they may be preempted
/// mid-syscall and finish it late. Answers at once: the descendants are still creating files
/// when the call ends.
fn late(c: &mut Call) -> R {
    let n: usize = std::str::from_utf8(c.arg())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut started = 0;
    for i in 0..n {
        // SAFETY: the call process is single-threaded; the child makes raw syscalls on
        // buffers it owns.
        #[allow(unsafe_code)]
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                break;
            }
            if pid > 0 {
                started += 1;
                continue;
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            if i % 2 == 1 {
                let p = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &p);
            }
            let me = libc::getpid();
            let mut k: u64 = 0;
            loop {
                for dir in ["/tmp", "/dev/shm"] {
                    let cur = std::ffi::CString::new(format!("{dir}/late-{me}-{k}")).unwrap();
                    let fd = libc::open(cur.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    if k > 0 {
                        let prev =
                            std::ffi::CString::new(format!("{dir}/late-{me}-{}", k - 1)).unwrap();
                        libc::unlink(prev.as_ptr());
                    }
                }
                k += 1;
            }
        }
    }
    // Let them get going before answering.
    std::thread::sleep(std::time::Duration::from_millis(5));
    // SAFETY: integer-only syscalls.
    #[allow(unsafe_code)]
    let (me, pgrp) = unsafe { (libc::getpid(), libc::getpgid(0)) };
    Ok(format!("started {started} by {me} pgrp {pgrp}").into_bytes())
}

/// Every entry of `/tmp` and `/dev/shm` (what an earlier call may have left). With the
/// argument `twice`, looks again 100 ms later and reports only what appeared meanwhile (by
/// an earlier call's process still at work).
fn scratch(c: &mut Call) -> R {
    if c.arg() == b"twice" {
        let first = list_scratch();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let then = list_scratch();
        let names = |s: &str| {
            s.split_whitespace()
                .map(|w| w.split('(').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        let old = names(&first);
        let new: Vec<String> = names(&then)
            .into_iter()
            .filter(|n| !old.contains(n))
            .collect();
        return Ok(format!("before[{first}] new[{}]", new.join(" ")).into_bytes());
    }
    Ok(list_scratch().into_bytes())
}

fn list_scratch() -> String {
    let mut out = Vec::new();
    for dir in ["/tmp", "/dev/shm"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // A file of `late` names its creator: its state, if it still exists.
            let state = name.split('-').nth(1).and_then(|pid| {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
                Some(format!("{} ppid {} pgrp {} sid {}", f[0], f[1], f[2], f[3]))
            });
            let state = state.map(|c| format!("({c})")).unwrap_or_default();
            out.push(format!("{dir}/{name}{state}"));
        }
    }
    out.join(" ")
}

/// Builds a directory chain `arg` levels deep (default 4000) under `/tmp/deep` and
/// `/dev/shm/deep` with a file at the bottom, each level made relative to the one above (no
/// path is ever long): a recursive removal needs one fd (and one stack frame) per level.
fn deep(c: &mut Call) -> R {
    let depth: usize = std::str::from_utf8(c.arg())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let mut made = Vec::new();
    for top in [c"/tmp", c"/dev/shm"] {
        // SAFETY: raw *at calls on fds this function opens and closes, with live C strings.
        #[allow(unsafe_code)]
        unsafe {
            let mut dir = libc::open(top.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            let mut n = 0;
            for i in 0..depth {
                let name = if i == 0 { c"deep" } else { c"d" };
                if libc::mkdirat(dir, name.as_ptr(), 0o755) < 0 {
                    break;
                }
                let next = libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                libc::close(dir);
                dir = next;
                if dir < 0 {
                    break;
                }
                n += 1;
            }
            let f = libc::openat(
                dir,
                c"planted".as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            );
            libc::close(f);
            libc::close(dir);
            made.push(n.to_string());
        }
    }
    Ok(made.join(",").into_bytes())
}

/// Answers for itself on its channel (found among its fds: the one unix socket) with a
/// `Response` whose error message is `arg` bytes long (default 100 000: beyond what the host
/// accepts on a reply socket, far beyond `MAX_CALL_MESSAGE`), then leaves without the library's
/// own answer.
fn bigfail(c: &mut Call) -> R {
    use hatchery_protocol::{CallStatus, Channel, Message, Outcome, Response, Usage};
    use std::os::fd::FromRawFd;
    let len: usize = std::str::from_utf8(c.arg())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let chan = (3..1024)
        .find(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .ok_or("no channel")?;
    // SAFETY: the channel's fd, open; this process leaves right after using it.
    #[allow(unsafe_code)]
    let mut chan = Channel::new(unsafe { std::os::fd::OwnedFd::from_raw_fd(chan) });
    let resp = Response {
        id: 0,
        outcome: Outcome::Exited(0),
        usage: Usage::default(),
        spawn_us: 0,
        call: Some(CallStatus::Failed("x".repeat(len))),
    };
    let sent = chan.send(&Message::Response(Box::new(resp)), &[], None);
    // SAFETY: leaves at once.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(if sent.is_ok() { 0 } else { 3 })
    }
}

fn main() {
    Exports::new()
        .export("echo", |c: &mut Call| Ok::<_, String>(c.arg().to_vec()))
        .export("fail", |_: &mut Call| {
            Err::<Vec<u8>, _>("failing on purpose")
        })
        .export("plant", plant)
        .export("scan", scan)
        .export("residue", residue)
        .export("flood", flood)
        .export("pid1", pid1)
        .export("fds", fds)
        .export("uname", |_: &mut Call| {
            // SAFETY: uname writes into a live struct.
            #[allow(unsafe_code)]
            let r = unsafe {
                let mut u: libc::utsname = std::mem::zeroed();
                libc::uname(&mut u)
            };
            Ok::<_, String>(r.to_string().into_bytes())
        })
        .export("probe", probe)
        .export("inflight", inflight)
        .export("neighbours", neighbours)
        .export("selfstate", selfstate)
        .export("late", late)
        .export("scratch", scratch)
        .export("deep", deep)
        .export("bigfail", bigfail)
        .export("named", |c: &mut Call| {
            let n = (3..=20)
                .filter(|i| c.fd(&format!("f{i}")).is_some())
                .count();
            Ok::<_, String>(n.to_string().into_bytes())
        })
        .serve()
}

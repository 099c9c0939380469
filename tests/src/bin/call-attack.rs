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
        .export("named", |c: &mut Call| {
            let n = (3..=20)
                .filter(|i| c.fd(&format!("f{i}")).is_some())
                .count();
            Ok::<_, String>(n.to_string().into_bytes())
        })
        .serve()
}

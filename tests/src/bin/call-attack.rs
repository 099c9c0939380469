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
        .export("named", |c: &mut Call| {
            let n = (3..=20)
                .filter(|i| c.fd(&format!("f{i}")).is_some())
                .count();
            Ok::<_, String>(n.to_string().into_bytes())
        })
        .serve()
}

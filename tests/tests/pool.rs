//! End-to-end tests of the zygote pool (exec mode).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::pool::{Input, Sink};
use hatchery::{Outcome, Pool, PoolError, Request};
use hatchery_tests::{bin_dir, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn profile() -> hatchery::Container {
    let mut c = hatchery::pool::default_profile();
    c.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    c
}

fn pool() -> Pool {
    Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(2)
        .build()
        .expect("pool")
}

/// Polls (bounded) until no zygote of `p` has a child process: a killed request is fully gone.
fn wait_until_zygotes_have_no_children(p: &Pool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let children = |z: &i32| {
        std::fs::read_to_string(format!("/proc/{z}/task/{z}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .count()
    };
    while p.zygote_pids().iter().map(children).sum::<usize>() > 0 {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pool of exactly one zygote.
fn single() -> Pool {
    Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap()
}

fn sh(script: &str) -> Request {
    Request::exec("/bin/sh").args(["-c", script])
}

fn py(script: &str) -> Request {
    Request::exec("/usr/bin/python3").args(["-c", script])
}

/// Runs `request`, which must succeed, and returns its stdout.
fn stdout_of(p: &Pool, request: Request) -> String {
    let r = p.run(request).unwrap();
    assert!(r.success(), "{r:?}");
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[test]
fn runs_commands_with_captured_output() {
    if !ready() {
        return;
    }
    let p = pool();
    let r = p.run(sh("echo out; echo err >&2; exit 3")).unwrap();
    assert_eq!(r.outcome, Outcome::Exited(3));
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let r = p
        .run(Request::exec("cat").stdin_bytes(b"sealed input".to_vec()))
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout, b"sealed input");
    eprintln!("timings {:?}", r.timings);
}

#[test]
fn every_outcome_from_a_helper_built_to_cause_it() {
    if !ready() {
        return;
    }
    let p = pool();
    let r = p.run(sh("kill -SEGV $$")).unwrap();
    assert!(
        matches!(
            r.outcome,
            Outcome::Signaled {
                signal: libc::SIGSEGV,
                ..
            }
        ),
        "{r:?}"
    );
    let t = Instant::now();
    let r = p
        .run(
            Request::exec("/bin/sleep")
                .arg("10")
                .wall_time(Duration::from_millis(200)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = p
        .run(sh("while :; do :; done").rlimit(hatchery::Rlimit::Cpu, 1, 1))
        .unwrap();
    assert_eq!(r.outcome, Outcome::CpuTimeExceeded, "{r:?}");
    let r = p
        .run(
            Request::exec("/bin/sh")
                .args(["-c", "head -c 100000 /dev/zero"])
                .stdout(Sink::Capture(4096)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::OutputExceeded, "{r:?}");
    assert_eq!(r.stdout.len(), 4096);
    let r = p.run(Request::exec("no-such-program")).unwrap();
    match r.outcome {
        Outcome::SetupFailed(f) => assert_eq!(f.step, hatchery::SetupStep::FindProgram),
        o => panic!("{o:?}"),
    }
    let r = p
        .run(Request::exec("/bin/true").current_dir("/nonexistent"))
        .unwrap();
    assert!(
        matches!(r.outcome, Outcome::SetupFailed(ref f) if f.step == hatchery::SetupStep::Chdir),
        "{r:?}"
    );
    assert!(
        p.run(Request::exec("/bin/true")).unwrap().success(),
        "the pool still works"
    );
}

#[test]
fn timeouts_kill_the_whole_request_tree() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hatchery-pool-tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut prof = profile();
    prof.bindmount_rw(&dir.to_string_lossy(), "/out");
    let p = Pool::builder().profile(prof).build().unwrap();
    // Each request's processes hold the lifeline's write end (fd 3): its hang-up says they
    // are all gone.
    let line = hatchery_tests::Lifeline::new(&dir);
    let r = p
        .run(
            sh("exec 3>/out/lifeline; (setsid sh -c 'sleep 1; echo late > /out/late' &) ; sleep 10")
                .wall_time(Duration::from_millis(300)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert!(
        line.all_gone_within(Duration::from_secs(5)),
        "a process outlived its timed-out request"
    );
    drop(line);
    std::fs::remove_file(dir.join("lifeline")).unwrap();
    // Even a normal exit takes the request's leftovers with it.
    let line = hatchery_tests::Lifeline::new(&dir);
    let r = p
        .run(sh(
            "exec 3>/out/lifeline; (setsid sh -c 'sleep 1; echo late2 > /out/late2' &); exit 0",
        ))
        .unwrap();
    assert!(r.success());
    assert!(
        line.all_gone_within(Duration::from_secs(5)),
        "a process outlived its request"
    );
    assert!(!dir.join("late").exists() && !dir.join("late2").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_killed_zygote_is_replaced_and_in_flight_requests_get_zygote_lost() {
    if !ready() {
        return;
    }
    let p = single();
    let ticket = p.submit(Request::exec("/bin/sleep").arg("30")).unwrap();
    let pid = p.zygote_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match ticket.wait() {
        Err(PoolError::ZygoteLost { pid: lost }) => assert_eq!(lost, pid),
        other => panic!("{other:?}"),
    }
    let r = p.run(Request::exec("/bin/true")).unwrap();
    assert!(r.success());
    assert!(!p.zygote_pids().contains(&pid));
    assert!(p.metrics().restarts >= 1);
}

#[test]
fn a_zygotes_process_title_names_its_slot() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(2)
        .max_zygotes(2)
        .build()
        .unwrap();
    let mut slots: Vec<u64> = p
        .zygote_pids()
        .iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            let title = String::from_utf8_lossy(&cmdline);
            let title = title.trim_end_matches('\0');
            let slot = title.strip_prefix("hatchery:zygote:");
            slot.and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("zygote {pid} is titled {title:?}"))
        })
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 2, "one slot per zygote: {slots:?}");
}

#[test]
fn a_stopped_zygote_fails_its_health_check_and_is_replaced() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .health_check(Duration::from_millis(100), Duration::from_millis(300))
        .build()
        .unwrap();
    let ticket = p.submit(Request::exec("/bin/sleep").arg("30")).unwrap();
    let pid = p.zygote_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    assert!(matches!(ticket.wait(), Err(PoolError::ZygoteLost { .. })));
    assert!(p.run(Request::exec("/bin/true")).unwrap().success());
    assert!(!p.zygote_pids().contains(&pid));
}

#[test]
fn cancellation_at_random_points_keeps_the_pool_healthy() {
    if !ready() {
        return;
    }
    let p = pool();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ticket = p.submit(sh("sleep 5")).unwrap();
        let wait = Duration::from_micros(seed % 20_000);
        std::thread::sleep(wait);
        drop(ticket);
    }
    for _ in 0..5 {
        assert!(p.run(Request::exec("/bin/true")).unwrap().success());
    }
    // Every cancelled request's processes are gone: the zygotes have no children left.
    wait_until_zygotes_have_no_children(&p, "cancelled requests still running");
}

#[test]
fn nothing_crosses_from_one_request_to_the_next() {
    if !ready() {
        return;
    }
    let p = single();
    let plant = p
        .run(sh(
            "echo secret > /tmp/planted; echo x > /dev/shm/planted; \
                 (setsid sleep 100 &); ipcmk -M 4096 >/dev/null; ipcmk -Q >/dev/null; \
                 ls /proc | grep -c '^[0-9]'",
        ))
        .unwrap();
    assert!(
        plant.success(),
        "{plant:?} {}",
        String::from_utf8_lossy(&plant.stderr)
    );
    let look = p
        .run(sh(
            "ls -A /tmp /dev/shm; ipcs -m | grep -c '^0x'; ipcs -q | grep -c '^0x'; \
                 ls /proc | grep '^[0-9]' | wc -l",
        ))
        .unwrap();
    let out = String::from_utf8_lossy(&look.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/dev/shm:", "{out}");
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], "/tmp:", "{out}");
    assert_eq!(lines[3], "0", "SysV shm leaked: {out}");
    assert_eq!(lines[4], "0", "SysV queue leaked: {out}");
    // Only the request's own processes: its root, sh, ls, grep, wc.
    let procs: usize = lines[5].trim().parse().unwrap();
    assert!(procs <= 5, "foreign processes visible: {out}");
}

/// The inode number of the first file a request makes in `/tmp` and in `/dev/shm` (which it
/// must find empty: a file left there would be reused by `touch`, its number proving nothing).
fn first_inodes(p: &Pool) -> String {
    stdout_of(
        p,
        sh(
            "test -z \"$(ls -A /tmp)$(ls -A /dev/shm)\" && touch /tmp/f /dev/shm/f && \
            stat -c %i /tmp/f /dev/shm/f",
        ),
    )
}

/// A tmpfs numbers its inodes from a counter of its own, which anything made in it moves, even
/// what is removed again or never linked: every request must start from a fresh counter, or a
/// request could signal to the next through it.
#[test]
fn every_request_numbers_its_tmp_files_afresh() {
    if !ready() {
        return;
    }
    let p = single();
    let fresh = first_inodes(&p);
    let attack = "/hatchery-bin/attack";
    for (what, request) in [
        ("nothing", Request::exec("/bin/true")),
        (
            "files made and removed",
            sh("for i in 1 2 3; do touch /tmp/x$i /dev/shm/x$i; done; rm /tmp/x* /dev/shm/x*"),
        ),
        (
            "unnamed O_TMPFILEs, never linked",
            sh(&format!(
                "{attack} tmpfile-in /tmp && {attack} tmpfile-in /dev/shm"
            )),
        ),
    ] {
        let r = p.run(request).unwrap();
        assert!(r.success(), "{what}: {r:?}");
        assert_eq!(first_inodes(&p), fresh, "after {what}");
    }
}

/// Runs the attack `how` on `/tmp`, which sends an fd over a socket, and returns the fd
/// received.
fn passed_out(p: &Pool, how: &str) -> std::os::fd::OwnedFd {
    pass_out(p, Request::exec("/hatchery-bin/attack").args([how, "/tmp"]))
}

/// Runs `request` with a unix socket at fd 3, over which it sends one fd, and returns that fd.
fn pass_out(p: &Pool, request: Request) -> std::os::fd::OwnedFd {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let r = p.run(request.fd("out", theirs, 3)).unwrap();
    assert!(r.success(), "{r:?}");
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&ours),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let dir = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("the fd the request sent");
    // SAFETY: received just now, owned by nobody else.
    #[allow(unsafe_code)]
    unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir)
    }
}

/// What a request sees of its pid and network namespaces: its own pid, the packets the loopback
/// received, and, after binding UDP port 7777 on it (which fails if another request's socket
/// still holds the port), its network namespace.
const LOOK: &str = "import os, socket\n\
rx = [l.split()[2] for l in open('/proc/net/dev') if l.split()[0] == 'lo:'][0]\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
s.sendto(b'meant for this request', ('127.0.0.1', 7777))\n\
print(os.getpid(), rx, os.readlink('/proc/self/ns/net'))\n";

fn look(p: &Pool) -> Vec<String> {
    stdout_of(p, py(LOOK))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Pids, ports, sockets and interface counters are channels too: a request that forks, sends
/// packets over the loopback and passes its bound UDP socket out leaves the next request the
/// same first pid, an untouched loopback, a free port, and nothing it sends reaches that socket.
#[test]
fn every_request_gets_fresh_pid_numbers_and_a_fresh_network() {
    if !ready() {
        return;
    }
    let p = single();
    let first = look(&p);
    assert_eq!(first.len(), 3, "{first:?}");
    assert_eq!(first[1], "0", "the first request's loopback saw packets");
    let noisy = "import os, socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
for i in range(100):\n    s.sendto(b'x', ('127.0.0.1', 7777))\n\
for i in range(100):\n    s.recv(1)\n\
for i in range(20):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [s.fileno()])\n";
    let held = pass_out(&p, py(noisy));
    let held = std::net::UdpSocket::from(held);
    held.set_nonblocking(true).unwrap();
    for _ in 0..2 {
        let next = look(&p);
        assert_eq!(next[..2], first[..2], "pid and loopback packets: {next:?}");
        let mut buf = [0u8; 64];
        let got = held.recv(&mut buf);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "the passed-out socket received {got:?}"
        );
    }
}

fn net_ns_of_request(p: &Pool) -> String {
    stdout_of(p, sh("readlink /proc/self/ns/net"))
        .trim()
        .to_owned()
}

/// The network namespace is renewed only after a request that touched it, and a socket alone
/// touches it: one a request made and sent out, never bound, sending nothing, must not belong
/// to the namespace of the next request (its holder could bind the next request's ports).
#[test]
fn an_unbound_socket_a_request_passed_out_keeps_its_namespace_from_the_next_request() {
    if !ready() {
        return;
    }
    let p = single();
    let quiet = net_ns_of_request(&p);
    assert_eq!(
        net_ns_of_request(&p),
        quiet,
        "a request that never touched the network leaves its namespace to the next"
    );
    let held = pass_out(
        &p,
        py("import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [s.fileno()])\n"),
    );
    let next = net_ns_of_request(&p);
    // SIOCGSKNS: the socket's network namespace (its owner, this process, may ask).
    #[allow(unsafe_code)]
    // SAFETY: an ioctl without an argument on an open socket; it returns a new fd or -1.
    let ns = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&held), 0x894C) };
    assert!(ns >= 0, "SIOCGSKNS: {}", std::io::Error::last_os_error());
    #[allow(unsafe_code)]
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    let ns = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    let inode = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&ns))
        .unwrap()
        .st_ino;
    assert_eq!(
        quiet,
        format!("net:[{inode}]"),
        "the socket is of the quiet namespace"
    );
    assert_ne!(
        next, quiet,
        "the next request got the namespace a socket was sent out of"
    );
}

/// A `/proc/self/net` file holds its network namespace without a socket in it: one a request
/// opened and sent out must not show the next request's sockets.
#[test]
fn a_proc_net_file_a_request_passed_out_shows_nothing_of_the_next_request() {
    if !ready() {
        return;
    }
    use std::io::{Read, Seek};
    let p = single();
    let mut held = std::fs::File::from(pass_out(
        &p,
        py("import os, socket\n\
fd = os.open('/proc/self/net/unix', os.O_RDONLY)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [fd])\n"),
    ));
    let next = {
        let p = p.clone();
        std::thread::spawn(move || {
            p.run(py("import socket, time\n\
u = socket.socket(socket.AF_UNIX)\n\
u.bind('\\0secret-of-the-next-request')\n\
print('bound', flush=True)\n\
time.sleep(1)\n"))
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = String::new();
    held.rewind().unwrap();
    held.read_to_string(&mut seen).unwrap();
    let next = next.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&next.stdout), "bound\n", "{next:?}");
    assert!(
        !seen.contains("secret"),
        "the passed-out file shows: {seen}"
    );
}

/// The mount namespace a request runs in; it checks that `/tmp` is empty and leaves a file there.
fn mount_ns_of_request(p: &Pool) -> String {
    let out = stdout_of(
        p,
        sh("readlink /proc/self/ns/mnt; ls -A /tmp /dev/shm; touch /tmp/left /dev/shm/left"),
    );
    let mut lines = out.lines();
    let ns = lines.next().unwrap_or_default().to_owned();
    let listed: Vec<&str> = lines
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .collect();
    assert!(listed.is_empty(), "a request found files: {out}");
    ns
}

/// A one-at-a-time zygote keeps a second mount namespace whose instances it renews while a
/// request runs in the first: back-to-back requests alternate between the two, each finding a
/// fresh `/tmp` and `/dev/shm` (every request leaves a file in both).
#[test]
fn back_to_back_requests_alternate_between_two_mount_namespaces() {
    if !ready() {
        return;
    }
    let p = single();
    let ns: Vec<String> = (0..5).map(|_| mount_ns_of_request(&p)).collect();
    assert_ne!(ns[0], ns[1], "{ns:?}");
    assert_eq!(ns[0], ns[2], "{ns:?}");
    assert_eq!(ns[1], ns[3], "{ns:?}");
    assert_eq!(ns[0], ns[4], "{ns:?}");
}

/// Plants a file, as the owner of `/tmp`, in whatever `/tmp` a walk from the passed-out root
/// directory `root` reaches now; the error if none can be planted.
fn plant_through(root: &std::os::fd::OwnedFd) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let root = root.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            let tmp = nix::fcntl::openat(
                Some(root),
                "tmp",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )?;
            let owner = nix::sys::stat::fstat(tmp)?;
            // Only this thread takes the owner's ids for file access.
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(owner.st_gid));
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(owner.st_uid));
            let made = nix::fcntl::openat(
                Some(tmp),
                "planted",
                nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            );
            let _ = nix::unistd::close(tmp);
            made.map(|fd| {
                let _ = nix::unistd::close(fd);
            })
        })
        .join()
        .unwrap()
    })
}

/// A walk from a directory above the mount points (here `/`) that a request sent out follows
/// whatever its namespace mounts at `/tmp` later: that namespace must never serve a request again,
/// whether the zygote swaps to its second namespace or renews in place (a request with a `/tmp`
/// size of its own).
#[test]
fn a_root_fd_a_request_passed_out_reaches_no_later_requests_tmp() {
    if !ready() {
        return;
    }
    for sized in [false, true] {
        let p = single();
        let with_size = |r: Request| if sized { r.tmp_size(1 << 20) } else { r };
        let root = pass_out(
            &p,
            with_size(Request::exec("/hatchery-bin/attack").args(["send-dir-fd", "/"])),
        );
        // While the next request runs (the zygote renews meanwhile), and after it.
        let next = {
            let p = p.clone();
            let r = with_size(sh("sleep 1"));
            std::thread::spawn(move || p.run(r).unwrap())
        };
        std::thread::sleep(Duration::from_millis(500));
        let during = plant_through(&root);
        assert!(next.join().unwrap().success());
        let after = plant_through(&root);
        for _ in 0..3 {
            let r = p.run(with_size(sh("ls -A /tmp"))).unwrap();
            let listed = String::from_utf8_lossy(&r.stdout).into_owned();
            assert!(
                !listed.contains("planted"),
                "sized {sized}: planted ({during:?}, {after:?}) into a later request's /tmp"
            );
        }
    }
}

/// Requests that run at once in one zygote (each in a request root) have networks of their own:
/// both bind the same port.
#[test]
fn concurrent_requests_in_one_zygote_have_networks_of_their_own() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .max_concurrent_per_zygote(2)
        .build()
        .unwrap();
    let script = "import socket, time\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
time.sleep(0.5)\n\
print('bound')\n";
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.run(py(script)).unwrap())
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert!(r.success(), "{r:?}");
        assert_eq!(String::from_utf8_lossy(&r.stdout), "bound\n");
    }
}

/// A `/proc` fd a request sent out lists the zygote's pid namespace, where the next request
/// runs, and a process's `cmdline` is world-readable: another sandbox or another user holding
/// the fd must see none of the next request's processes.
#[test]
fn a_proc_fd_a_request_passed_out_shows_another_sandbox_nothing_of_the_next_request() {
    if !ready() {
        return;
    }
    use std::os::fd::AsRawFd;
    let p = single();
    let held = pass_out(
        &p,
        Request::exec("/hatchery-bin/attack").args(["send-dir-fd", "/proc"]),
    );
    let next = {
        let p = p.clone();
        std::thread::spawn(move || {
            p.run(Request::exec("/bin/sh").args(["-c", "sleep 1", "secret-of-the-next-request"]))
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    // This process may ptrace the request (it owns the container's user namespace): it sees it,
    // so the fd does list the next request's processes.
    let ours = std::fs::read_dir(format!("/proc/self/fd/{}", held.as_raw_fd()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains("secret-of-the-next-request"));
    assert!(ours, "the next request is not running");
    nix::fcntl::fcntl(
        held.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    // Another sandbox, and (only root can be) another user.
    let others: &[&str] = if hatchery_tests::is_root() {
        &["landlock", "nobody"]
    } else {
        &["landlock"]
    };
    for who in others {
        let other = std::process::Command::new(bin_dir().join("attack"))
            .args(["cmdlines-as", &format!("{}:{who}", held.as_raw_fd())])
            .output()
            .unwrap();
        let seen = String::from_utf8_lossy(&other.stdout).into_owned();
        assert!(other.status.success(), "{who}: {other:?}");
        assert!(!seen.contains("secret"), "{who} sees: {seen}");
    }
    drop(held);
    assert!(next.join().unwrap().success());
}

#[test]
fn a_tmp_whose_fd_a_request_passed_out_never_serves_another_request() {
    if !ready() {
        return;
    }
    let p = single();
    // The request is gone and left its /tmp untouched; whoever holds the fd it sent may write
    // through it at any time.
    let dir = passed_out(&p, "send-dir-fd");
    // Written as the owner of the instance's root (the container's root user on the host),
    // from a thread of its own (file-system ids are per thread).
    let owner = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&dir)).unwrap();
    let planted = std::thread::spawn(move || {
        // SAFETY: plain calls on this thread's own credentials.
        #[allow(unsafe_code)]
        unsafe {
            libc::setfsgid(owner.st_gid)
        };
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            libc::setfsuid(owner.st_uid)
        };
        nix::fcntl::openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
            "planted",
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
    })
    .join()
    .unwrap();
    assert!(planted.is_ok(), "writing through the fd: {planted:?}");
    let look = p.run(sh("ls -A /tmp")).unwrap();
    assert!(look.success(), "{look:?}");
    assert_eq!(
        String::from_utf8_lossy(&look.stdout),
        "",
        "a file planted through a passed-out fd reached the next request"
    );
}

#[test]
fn a_watch_a_request_passed_out_sees_nothing_of_the_next_request() {
    if !ready() {
        return;
    }
    let p = single();
    // An inotify instance watching the request's /tmp, which it left untouched, in the hands
    // of someone outside.
    let watch = std::fs::File::from(passed_out(&p, "send-watch"));
    let r = p.run(sh("touch /tmp/secret-name")).unwrap();
    assert!(r.success(), "{r:?}");
    let mut events = vec![0u8; 4096];
    let n = std::io::Read::read(&mut &watch, &mut events).unwrap_or(0);
    let seen = &events[..n];
    assert!(
        !seen.windows(11).any(|w| w == b"secret-name"),
        "the next request's file name reached a watch on an earlier request's /tmp"
    );
}

#[test]
fn named_fds_and_streamed_output() {
    if !ready() {
        return;
    }
    let p = pool();
    let (r, mut w) = std::io::pipe().unwrap();
    std::io::Write::write_all(&mut w, b"via named fd").unwrap();
    drop(w);
    let (out_r, out_w) = std::io::pipe().unwrap();
    let res = p
        .run(
            Request::exec("/bin/sh")
                .args([
                    "-c",
                    "cat <&$HATCHERY_FD_FONT; echo \" ($HATCHERY_FD_FONT)\"",
                ])
                .fd("font", r, 5)
                .stdout(Sink::Fd(out_w.into())),
        )
        .unwrap();
    assert!(res.success(), "{res:?}");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut { out_r }, &mut s).unwrap();
    assert_eq!(s, "via named fd (5)\n");
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let res = p.run(Request::exec("cat").stdin_fd(file)).unwrap();
    assert_eq!(res.stdout, std::fs::read("/etc/hostname").unwrap());
    let _ = Input::Null;
}

/// A named fd's number may be anything: the child's fd mapping must not close or replace the
/// landlock ruleset the zygote prebuilt for the request (it once sat at whatever number the
/// zygote's open fds left free, and a target there made the request fail at its landlock step).
#[test]
fn named_fds_at_any_number_keep_the_requests_landlock_ruleset() {
    if !ready() {
        return;
    }
    let p = single();
    for target in [3, 10, 20, 25, 30, 35, 40, 50, 64] {
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let res = p
            .run(sh(&format!("test -e /proc/self/fd/{target}")).fd("x", w, target))
            .unwrap();
        assert!(res.success(), "named fd {target}: {res:?}");
    }
}

#[test]
fn concurrent_requests_share_zygotes() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(2)
        .max_concurrent_per_zygote(3)
        .build()
        .unwrap();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let r = p.run(sh(&format!("sleep 0.2; echo {i}"))).unwrap();
                assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), i.to_string());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(p.zygote_pids().len() <= 2);
    assert_eq!(p.metrics().outcome("exited_ok"), 6);
}

#[test]
fn dedicated_isolation_uses_each_zygote_once() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .isolation(hatchery::Isolation::Dedicated)
        .min_zygotes(1)
        .max_zygotes(2)
        .build()
        .unwrap();
    for _ in 0..4 {
        let r = p.run(Request::exec("/bin/true")).unwrap();
        assert!(r.success());
    }
    // Each request had a zygote of its own (a reused one would leave fewer started: one serves
    // every request otherwise); retiring them happens in the background. The live zygotes seen
    // before each request are no proof either way: a refill still starting is not listed.
    assert!(p.metrics().zygotes_started >= 4, "{:?}", p.metrics());
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.metrics().retired < 4 {
        assert!(
            Instant::now() < deadline,
            "used zygotes not retired: {:?}",
            p.metrics()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn backpressure_queue_full_and_acquire_timeout() {
    if !ready() {
        return;
    }
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .max_queue(0)
        .build()
        .unwrap();
    let busy = p.submit(Request::exec("/bin/sleep").arg("30")).unwrap();
    assert!(matches!(
        p.run(Request::exec("/bin/true")),
        Err(PoolError::QueueFull { .. })
    ));
    drop(busy);
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .acquire_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let busy = p.submit(Request::exec("/bin/sleep").arg("30")).unwrap();
    let t = Instant::now();
    assert!(matches!(
        p.run(Request::exec("/bin/true")),
        Err(PoolError::AcquireTimeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(busy);
    assert!(p.run(Request::exec("/bin/true")).unwrap().success());
}

#[test]
fn shutdown_and_drop_leave_nothing_behind() {
    if !ready() {
        return;
    }
    let p = pool();
    assert!(p.run(Request::exec("/bin/true")).unwrap().success());
    let pids = p.zygote_pids();
    assert!(!pids.is_empty());
    p.shutdown(Duration::from_secs(1));
    assert!(matches!(
        p.run(Request::exec("/bin/true")),
        Err(PoolError::Closed)
    ));
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "zygote {pid} survived shutdown"
        );
    }
    let p = pool();
    let pids = p.zygote_pids();
    drop(p);
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "zygote {pid} survived drop"
        );
    }
}

#[test]
fn a_broken_profile_fails_at_build_with_a_typed_error() {
    if !ready() {
        return;
    }
    let mut prof = profile();
    prof.bindmount_ro("/no/such/dir", "/x");
    match Pool::builder().profile(prof).build() {
        Err(PoolError::Spawn(e)) => assert!(
            matches!(
                *e,
                hatchery::Error::Setup {
                    step: hatchery::SetupStep::BindMount,
                    ..
                }
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn metrics_and_pool_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Pool>();
    if !ready() {
        return;
    }
    let p = pool();
    for _ in 0..3 {
        p.run(Request::exec("/bin/true")).unwrap();
    }
    p.run(Request::exec("/bin/false")).unwrap();
    let m = p.metrics();
    assert_eq!(m.outcome("exited_ok"), 3);
    assert_eq!(m.outcome("exited_error"), 1);
    assert_eq!(m.latency_us.iter().map(|(_, c)| c).sum::<u64>(), 4);
    assert!(m.zygotes.warm + m.zygotes.busy >= 1);
    assert_eq!(m.queue_depth, 0);
}

#[test]
fn async_api_runs_and_cancels_by_drop() {
    if !ready() {
        return;
    }
    let rt = hatchery_tests::runtime();
    let p = pool();
    rt.block_on(async {
        let r = p
            .run_async(Request::exec("/bin/echo").arg("async"))
            .await
            .unwrap();
        assert_eq!(r.stdout, b"async\n");
        // Dropping the future (here, by a timeout) kills the request.
        let t = Instant::now();
        let dropped = tokio::time::timeout(
            Duration::from_millis(300),
            p.run_async(Request::exec("/bin/sleep").arg("30")),
        )
        .await;
        assert!(dropped.is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
        let r = p.run_async(Request::exec("/bin/true")).await.unwrap();
        assert!(r.success());
    });
    wait_until_zygotes_have_no_children(&p, "the dropped request kept running");
}

#[test]
fn long_failure_details_still_fit_the_reply() {
    if !ready() {
        return;
    }
    let p = pool();
    let long = format!("/{}", "a".repeat(5000));
    let r = p.run(Request::exec(&long)).unwrap();
    match r.outcome {
        Outcome::SetupFailed(f) => assert!(f.detail.len() <= 1024, "{}", f.detail.len()),
        o => panic!("{o:?}"),
    }
    assert!(p.run(Request::exec("/bin/true")).unwrap().success());
}

#[test]
fn a_cancelled_request_never_breaks_the_next_one_on_the_same_zygote() {
    if !ready() {
        return;
    }
    // One zygote, two threads: one cancels requests right after dispatch, the other runs
    // requests that must all succeed (the zygote must see each cancellation before it is handed
    // the next request).
    let p = single();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..150 {
                drop(p.submit(Request::exec("/bin/sleep").arg("5")).unwrap());
            }
        });
        s.spawn(|| {
            for i in 0..150 {
                let r = p
                    .run(Request::exec("/bin/echo").arg(i.to_string()))
                    .unwrap();
                assert!(r.success(), "{i}: {r:?}");
                assert_eq!(r.stdout, format!("{i}\n").as_bytes());
            }
        });
    });
}

#[test]
fn a_bind_hidden_by_the_per_request_tmp_is_refused_up_front() {
    let mut prof = profile();
    prof.bindmount_ro("/usr/share", "/tmp/share");
    match Pool::builder().profile(prof).build() {
        Err(hatchery::PoolError::InvalidConfig { what, .. }) => {
            assert!(
                what.contains("/tmp/share") && what.contains("/tmp"),
                "{what}"
            )
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a pool whose bind every request hides was built"),
    }
}

#[test]
fn placed_files_are_read_only_copies_inside_the_request_tmp_only() {
    if !ready() {
        return;
    }
    let p = single();
    let input = memfd_with;
    let r = p
        .run(
            Request::exec("/bin/sh")
                .args([
                    "-c",
                    "cat /tmp/in.txt; stat -c %a /tmp/in.txt; ! echo x >> /tmp/in.txt",
                ])
                .place("/tmp/in.txt", input("placed\n"))
                .stdout(Sink::Capture(1 << 16))
                .stderr(Sink::Null),
        )
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "placed\n444\n");
    // Only inside the request's own tmpfs: anywhere else is a setup failure, not a file.
    let r = p
        .run(Request::exec("/bin/true").place("/etc/planted", input("x")))
        .unwrap();
    assert!(
        matches!(&r.outcome, Outcome::SetupFailed(f) if f.detail.contains("not inside a per-request tmpfs")),
        "{r:?}"
    );
    assert!(matches!(
        p.run(Request::exec("/bin/true").place("/tmp/../etc/x", input("x"))),
        Err(PoolError::InvalidRequest { .. })
    ));
}

fn memfd_with(s: &str) -> std::os::fd::OwnedFd {
    use std::io::Write;
    let name = std::ffi::CString::new("placed").unwrap();
    // SAFETY: memfd_create with a NUL-terminated name.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    #[allow(unsafe_code)]
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(s.as_bytes()).unwrap();
    f.into()
}

//! One-shot containers of one process, one after another: a network namespace the host made for
//! one container and keeps for the next (as root, see `host/src/netns.rs`) must show the next
//! nothing of the last. Each test is an attack of the last container on the next: packets
//! counted on the loopback, a bound port, a socket or a `/proc/self/net` file sent out.
//! Unprivileged, every container gets a namespace of its own from its clone, and the same
//! checks hold.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, OnceLock};

use hatchery::{Container, Output};
use hatchery_tests::{is_root, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

/// The kept namespaces are the process's: the tests of this file take turns. No shim is started
/// ahead (it would hold a kept namespace of its own, and which one the next container gets would
/// depend on it; `spare.rs` tests those).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    hatchery::reaper::start_shims_ahead(false);
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pool's default profile (own network with its loopback up, landlock, seccomp), run once.
fn profile() -> Container {
    hatchery::pool::default_profile()
}

fn py(c: &Container, script: &str) -> Output {
    // The last container's namespace is back (or dropped) once its teardown is done.
    hatchery::reaper::settle();
    let out = c
        .command("/usr/bin/python3")
        .args(["-c", script])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{script}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What a container sees of its network: the packets its loopback received, and, after binding
/// UDP port 7777 (which fails while another container's socket holds it in the same namespace),
/// its network namespace.
const LOOK: &str = "import os, socket\n\
rx = [l.split()[2] for l in open('/proc/net/dev') if l.split()[0] == 'lo:'][0]\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
s.sendto(b'meant for this container', ('127.0.0.1', 7777))\n\
print(rx, os.readlink('/proc/self/ns/net'))\n";

fn look(c: &Container) -> (String, String) {
    let out = String::from_utf8(py(c, LOOK).stdout).unwrap();
    let mut words = out.split_whitespace().map(str::to_owned);
    (words.next().unwrap(), words.next().unwrap())
}

fn ns_of(c: &Container) -> String {
    let out = py(c, "import os\nprint(os.readlink('/proc/self/ns/net'))\n");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `script` with a unix socket at fd 3, over which it sends one fd, and returns that fd.
fn pass_out(c: &Container, script: &str) -> OwnedFd {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    hatchery::reaper::settle();
    let out = c
        .command("/usr/bin/python3")
        .args(["-c", script])
        .fd(theirs, 3)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("the fd the container sent");
    #[allow(unsafe_code)]
    // SAFETY: received just now, owned by nobody else.
    unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }
}

/// A container that never touches the network leaves its namespace to the next (as root: the
/// host kept it); one that sent packets over its loopback and closed its socket does not: the
/// next sees an untouched loopback either way.
#[test]
fn packets_counted_on_the_loopback_keep_the_namespace_from_the_next_container() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = profile();
    let quiet = ns_of(&c);
    if is_root() {
        assert_eq!(ns_of(&c), quiet, "a quiet container's namespace is kept");
    }
    let (rx, touched) = look(&c);
    assert_eq!(rx, "0", "the loopback of a kept namespace saw packets");
    if is_root() {
        assert_eq!(touched, quiet, "the quiet namespace is lent again");
    }
    // `look` sent a datagram to itself: its namespace is not lent again.
    let (rx, next) = look(&c);
    assert_eq!(
        rx, "0",
        "the next container's loopback saw the last one's packets"
    );
    assert_ne!(
        next, touched,
        "a namespace that counted packets was lent again"
    );
    let noisy = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
for i in range(100):\n    s.sendto(b'x', ('127.0.0.1', 7777))\n\
for i in range(100):\n    s.recv(1)\n\
s.close()\n";
    py(&c, noisy);
    let (rx, _) = look(&c);
    assert_eq!(rx, "0", "the loopback counted the last container's packets");
}

/// A bound socket sent out keeps its port and would receive what the next container sends
/// itself there; an unbound one sent out could be bound by its holder to the next container's
/// ports. Neither belongs to the next container's namespace.
#[test]
fn a_socket_sent_out_belongs_to_no_later_containers_namespace() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = profile();
    let held = pass_out(
        &c,
        "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 7777))\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [s.fileno()])\n",
    );
    let held = std::net::UdpSocket::from(held);
    held.set_nonblocking(true).unwrap();
    for _ in 0..2 {
        let (rx, _) = look(&c);
        assert_eq!(rx, "0");
        let mut buf = [0u8; 64];
        let got = held.recv(&mut buf);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "the socket sent out received {got:?}"
        );
    }
    let held = pass_out(
        &c,
        "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [s.fileno()])\n",
    );
    // SIOCGSKNS: the socket's network namespace (its owner, this process, may ask).
    #[allow(unsafe_code)]
    // SAFETY: an ioctl without an argument on an open socket; it returns a new fd or -1.
    let ns = unsafe { libc::ioctl(held.as_raw_fd(), 0x894C) };
    assert!(ns >= 0, "SIOCGSKNS: {}", std::io::Error::last_os_error());
    #[allow(unsafe_code)]
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    let ns = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    let inode = nix::sys::stat::fstat(ns.as_raw_fd()).unwrap().st_ino;
    for _ in 0..2 {
        assert_ne!(
            ns_of(&c),
            format!("net:[{inode}]"),
            "a later container got the namespace a socket was sent out of"
        );
    }
}

/// A `/proc/self/net` file holds its network namespace without any socket in it: one a
/// container opened and sent out must show nothing of the next container's sockets.
#[test]
fn a_proc_net_file_sent_out_shows_nothing_of_the_next_container() {
    if !ready() {
        return;
    }
    use std::io::{Read, Seek};
    let _turn = one_at_a_time();
    let c = profile();
    let mut held = std::fs::File::from(pass_out(
        &c,
        "import os, socket\n\
fd = os.open('/proc/self/net/udp', os.O_RDONLY)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [fd])\n",
    ));
    let next = {
        let c = profile();
        std::thread::spawn(move || {
            py(
                &c,
                "import socket, time\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 4321))\n\
print('bound', flush=True)\n\
time.sleep(1)\n",
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut seen = String::new();
    held.rewind().unwrap();
    held.read_to_string(&mut seen).unwrap();
    let next = next.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&next.stdout), "bound\n");
    // 4321 is 10E1 in /proc/net/udp's hex.
    assert!(
        !seen.contains(":10E1"),
        "the file sent out shows the next container's socket: {seen}"
    );
}

/// A pool whose every request gets a zygote of its own (`Isolation::Dedicated`): the zygotes'
/// network namespaces come and go back the same way, and the same attacks must fail across them.
#[test]
fn dedicated_zygotes_get_networks_that_show_nothing_of_the_last_request() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let p = hatchery::Pool::builder()
        .profile(profile())
        .isolation(hatchery::pool::Isolation::Dedicated)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap();
    let run = |request: hatchery::Request| {
        let r = p.run(request).unwrap();
        assert!(r.success(), "{r:?}");
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    let py = |script: &str| hatchery::Request::exec("/usr/bin/python3").args(["-c", script]);
    let mut last = String::new();
    for _ in 0..3 {
        let out = run(py(LOOK));
        let mut words = out.split_whitespace();
        assert_eq!(
            words.next(),
            Some("0"),
            "the loopback counted the last request's packets"
        );
        let ns = words.next().unwrap().to_owned();
        assert_ne!(ns, last, "a namespace that counted packets was lent again");
        last = ns;
    }
    // An unbound socket sent out: no later request runs in its namespace.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    run(py("import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
socket.send_fds(socket.socket(fileno=3), [b's'], [s.fileno()])\n")
    .fd("out", theirs, 3));
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let held = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("the socket the request sent");
    #[allow(unsafe_code)]
    // SAFETY: received just now, owned by nobody else.
    let held = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(held) };
    #[allow(unsafe_code)]
    // SAFETY: SIOCGSKNS, an ioctl without an argument on an open socket; a new fd or -1.
    let ns = unsafe { libc::ioctl(held.as_raw_fd(), 0x894C) };
    assert!(ns >= 0, "SIOCGSKNS: {}", std::io::Error::last_os_error());
    #[allow(unsafe_code)]
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    let ns = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    let inode = nix::sys::stat::fstat(ns.as_raw_fd()).unwrap().st_ino;
    for _ in 0..3 {
        let out = run(py("import os\nprint(os.readlink('/proc/self/ns/net'))\n"));
        assert_ne!(
            out.trim(),
            format!("net:[{inode}]"),
            "a later request got the namespace a socket was sent out of"
        );
    }
}

/// Kept namespaces are closed after a second without a container: a program done with its
/// containers holds no fd for them.
#[test]
fn kept_namespaces_are_closed_when_no_container_comes() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    hatchery::reaper::settle();
    hatchery::reaper::drop_kept_network_namespaces();
    let before = hatchery_tests::open_fds();
    let c = profile();
    for _ in 0..3 {
        ns_of(&c);
    }
    hatchery::reaper::settle();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while hatchery_tests::open_fds() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        hatchery_tests::open_fds() <= before,
        "fds: {before} then {}",
        hatchery_tests::open_fds()
    );
}

/// Sends `n` datagrams to an address without a route (each fails, `ENETUNREACH`: no packet on
/// any interface, no socket left), after printing how many such sends the namespace counted
/// before (`/proc/net/snmp`'s `OutNoRoutes`).
fn no_route_sends(n: u32) -> String {
    format!(
        "import socket\n\
l = open('/proc/net/snmp').read().split('\\n')\n\
ip = dict(zip(l[0].split()[1:], l[1].split()[1:]))\n\
print(ip['OutNoRoutes'])\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
for i in range({n}):\n    try: s.sendto(b'x', ('10.9.9.9', 9))\n    except OSError: pass\n"
    )
}

/// An IPv6 flow label, shared with anyone, that lingers 100 s after its socket is closed; and
/// what the namespace's table of labels shows before it is made.
const FLOW_LABEL: &str = "import socket, struct\n\
print(open('/proc/net/ip6_flowlabel').read())\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
req = socket.inet_pton(socket.AF_INET6, '::1') + struct.pack('!I', 0xbeef) + struct.pack('=BBHHHI', 0, 3, 1, 100, 100, 0)\n\
s.setsockopt(socket.IPPROTO_IPV6, 32, req)\n\
s.close()\n";

/// What a namespace counts without a packet or a socket (the MIB of `/proc/net/snmp`,
/// `snmp6`, `netstat`) and what outlives a socket in it (IPv6 flow labels) are channels too,
/// across one-shot containers and across a pool's requests, whether they share a zygote or not.
#[test]
fn counters_and_flow_labels_of_the_last_user_do_not_reach_the_next() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = profile();
    for n in [777, 778] {
        let seen = String::from_utf8(py(&c, &no_route_sends(n)).stdout).unwrap();
        assert_eq!(
            seen.trim(),
            "0",
            "a container saw the last one's failed sends"
        );
    }
    for _ in 0..2 {
        let seen = String::from_utf8(py(&c, FLOW_LABEL).stdout).unwrap();
        assert!(
            !seen.contains("BEEF"),
            "a container saw the last one's flow label: {seen}"
        );
    }
    for isolation in [
        hatchery::pool::Isolation::Fresh,
        hatchery::pool::Isolation::Dedicated,
    ] {
        let p = hatchery::Pool::builder()
            .profile(profile())
            .isolation(isolation)
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .unwrap();
        let run = |script: &str| {
            let r = p
                .run(hatchery::Request::exec("/usr/bin/python3").args(["-c", script]))
                .unwrap();
            assert!(r.success(), "{r:?}");
            String::from_utf8_lossy(&r.stdout).into_owned()
        };
        for n in [100, 101, 102] {
            assert_eq!(
                run(&no_route_sends(n)).trim(),
                "0",
                "{isolation:?}: a request saw the last one's failed sends"
            );
        }
        for _ in 0..2 {
            let seen = run(FLOW_LABEL);
            assert!(
                !seen.contains("BEEF"),
                "{isolation:?}: a request saw the last one's flow label: {seen}"
            );
        }
    }
}

/// A unix socket a party outside listens on in a directory the container has bound writable:
/// over it the container sends out a `/proc/self/net/udp` without being given any socket. The
/// holder must see nothing of the next container's (or request's) sockets.
#[test]
fn a_proc_net_file_sent_out_through_a_bound_socket_shows_nothing_of_the_next_user() {
    if !ready() {
        return;
    }
    use std::io::{Read, Seek};
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("hatchery-netns-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(&dir, 0o777);
    let path = dir.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    mode(&path, 0o777);
    let mut sharing = profile();
    sharing.bindmount_rw(&dir.to_string_lossy(), "/share");
    const SEND_OUT: &str = "import os, socket\n\
fd = os.open('/proc/self/net/udp', os.O_RDONLY)\n\
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
u.connect('/share/sock')\n\
socket.send_fds(u, [b's'], [fd])\n\
u.close()\n";
    const NEXT: &str = "import socket, time\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 4321))\n\
print('bound', flush=True)\n\
time.sleep(1)\n";
    let receive = |listener: &std::os::unix::net::UnixListener| -> std::fs::File {
        let (conn, _) = listener.accept().unwrap();
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut buf = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("the fd the container sent");
        #[allow(unsafe_code)]
        // SAFETY: received just now, owned by nobody else.
        unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }
    };
    let shows_4321 = |held: &mut std::fs::File| {
        let mut seen = String::new();
        held.rewind().unwrap();
        held.read_to_string(&mut seen).unwrap();
        // 4321 is 10E1 in /proc/net/udp's hex.
        seen.contains(":10E1")
    };
    // One-shot containers.
    std::thread::scope(|s| {
        let got = s.spawn(|| receive(&listener));
        py(&sharing, SEND_OUT);
        let mut held = got.join().unwrap();
        let next = s.spawn(|| py(&profile(), NEXT));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let seen = shows_4321(&mut held);
        let next = next.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&next.stdout), "bound\n");
        assert!(!seen, "the file sent out shows the next container's socket");
    });
    // A pool's requests, in one zygote and in one each.
    for isolation in [
        hatchery::pool::Isolation::Fresh,
        hatchery::pool::Isolation::Dedicated,
    ] {
        let p = hatchery::Pool::builder()
            .profile(sharing.clone())
            .isolation(isolation)
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .unwrap();
        let run = |script: &str| {
            let r = p
                .run(hatchery::Request::exec("/usr/bin/python3").args(["-c", script]))
                .unwrap();
            assert!(r.success(), "{r:?}");
            String::from_utf8_lossy(&r.stdout).into_owned()
        };
        std::thread::scope(|s| {
            let got = s.spawn(|| receive(&listener));
            run(SEND_OUT);
            let mut held = got.join().unwrap();
            let next = s.spawn(|| run(NEXT));
            std::thread::sleep(std::time::Duration::from_millis(500));
            let seen = shows_4321(&mut held);
            assert_eq!(next.join().unwrap(), "bound\n");
            assert!(
                !seen,
                "{isolation:?}: the file sent out shows the next request's socket"
            );
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

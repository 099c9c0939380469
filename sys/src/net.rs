//! The loopback interface of a fresh network namespace, and whether a namespace is as it was made.
//!
//! [`loopback_up`] is allocation-free and async-signal-safe, though only the shim's setup uses it.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::{errno, last_errno, Errno};

/// Brings the loopback interface of the current network namespace up (`SIOCGIFFLAGS`, then,
/// unless it is up already, `SIOCSIFFLAGS` with `IFF_UP`, through libc: rustix has no
/// interface-flag ioctls).
pub fn loopback_up() -> Result<(), Errno> {
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(errno)?;
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into `req`, a valid ifreq; `sock` is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: the flags member of the union was just filled by SIOCGIFFLAGS.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        // Already up: the host brought it up in a namespace it made (and the container, holding
        // no capability over that namespace, could not).
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq; `sock` is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Whether a network namespace is as it was made, from the text of its `/proc/<pid>/net/sockstat`,
/// `sockstat6` and `dev`: every count of the two `sockstat` files zero (sockets alive, orphaned
/// ones included, sockets bound per protocol, `TIME_WAIT` entries, IP fragments), the whole
/// system's figures aside (memory, orphans, TCP sockets allocated), and every counter of every
/// interface zero. Text that does not parse is not untouched.
pub fn untouched(sockstat: &str, sockstat6: &str, dev: &str) -> bool {
    fn counts_zero(text: &str) -> bool {
        text.lines().all(|line| {
            let mut words = line.split_whitespace().skip(1);
            while let Some(name) = words.next() {
                let Some(value) = words.next() else {
                    return false;
                };
                // The whole system's figures, not the namespace's.
                let system = name.starts_with("mem") || name == "orphan" || name == "alloc";
                if !system && value != "0" {
                    return false;
                }
            }
            true
        })
    }
    // Two header lines, then `name: counter…` per interface.
    let devices_quiet = dev.lines().skip(2).all(|line| {
        line.split_once(':')
            .is_some_and(|(_, counters)| counters.split_whitespace().all(|c| c == "0"))
    });
    counts_zero(sockstat) && counts_zero(sockstat6) && devices_quiet
}

/// The `/proc/<pid>/net` files that count what a namespace's sockets did without a socket or a
/// packet left to show for it (the MIB counters: `snmp`, `snmp6`, `netstat`, e.g. a send that
/// found no route) and what outlives a socket (`ip6_flowlabel`: a shared IPv6 flow label lingers
/// after its socket closes). A namespace is as it was made only while they read as they did then
/// (see [`activity`]); none of their figures counts for the whole system.
pub const ACTIVITY_FILES: [&str; 4] = ["snmp", "snmp6", "netstat", "ip6_flowlabel"];

/// The text of the [`ACTIVITY_FILES`] in `dir` (`/proc/self/net`, say), one after another, each
/// after its name; one that does not exist (no IPv6) reads as nothing. `None` when one cannot be
/// read. Allocates: not for use after a fork.
pub fn activity(dir: &str) -> Option<String> {
    let mut all = String::new();
    for name in ACTIVITY_FILES {
        all.push_str(name);
        all.push('\n');
        match std::fs::read_to_string(format!("{dir}/{name}")) {
            Ok(text) => all.push_str(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::untouched;

    const DEV_QUIET: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";
    const V4: &str = "sockets: used 0
TCP: inuse 0 orphan 3 tw 0 alloc 12 mem 4
UDP: inuse 0 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
";
    const V6: &str =
        "TCP6: inuse 0\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n";

    #[test]
    fn a_namespace_is_untouched_only_with_every_count_of_its_own_zero() {
        assert!(untouched(V4, V6, DEV_QUIET));
        assert!(!untouched(&V4.replace("used 0", "used 1"), V6, DEV_QUIET));
        assert!(!untouched(&V4.replace("tw 0", "tw 1"), V6, DEV_QUIET));
        assert!(!untouched(
            V4,
            &V6.replace("UDP6: inuse 0", "UDP6: inuse 2"),
            DEV_QUIET
        ));
        let counted = DEV_QUIET.replacen("       0       0", "     120       2", 1);
        assert_ne!(counted, DEV_QUIET);
        assert!(!untouched(V4, V6, &counted));
        // A count without its value does not parse.
        assert!(!untouched("sockets: used", V6, DEV_QUIET));
    }
}

//! What the supervisor removes between calls (Fresh) and between workers (Reuse), so nothing a
//! call leaves is there for the next one: every entry of `/tmp` and `/dev/shm`, and every SysV
//! shared memory segment, semaphore set and message queue of the container's IPC namespace.
//! Processes are killed before (the call's whole process group), and the wipe waits until
//! every one of them has exited ([`await_group`]).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Empties the shared scratch directories and the IPC namespace.
pub(super) fn wipe() {
    for dir in ["/tmp", "/dev/shm"] {
        wipe_dir(dir);
    }
    remove_sysv();
}

/// Unix sockets of the container's network namespace (every socket a call creates is one of
/// them), from `/proc/net/unix`.
pub(super) fn unix_sockets() -> Option<usize> {
    use std::io::Read;
    // One large read: seq_file hands over as much as fits, where `read_to_string` would start
    // with tiny reads (procfs reports no size).
    let mut f = std::fs::File::open("/proc/net/unix").ok()?;
    let mut buf = vec![0u8; 64 << 10];
    let mut lines = 0usize;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    Some(lines.saturating_sub(1))
}

/// Waits until the container has at most `clean` unix sockets, i.e. none of a finished call
/// is left. Its processes are dead by then, but fds it left in flight in an `SCM_RIGHTS`
/// cycle (a socket queued on itself) outlive them until the kernel's unix garbage collector
/// runs, and they hold whatever they point to for the next call to see: a bound UDP port, a
/// file lock, a memfd. Closing a unix socket schedules that collection; this closes one
/// until it has happened (false after 250 ms: the container must go).
pub(super) fn settle_unix(clean: usize) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(250);
    loop {
        match unix_sockets() {
            Some(n) if n > clean => {}
            // Without /proc/net/unix nothing can be checked (and the pool reports it).
            _ => return true,
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        // Releasing a unix socket schedules the collector.
        drop(std::os::unix::net::UnixDatagram::pair());
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// A pidfd for `pid` (a process of this pid namespace); `None` where the kernel has none.
pub(super) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    pidfd(pid).ok()
}

/// A pidfd for `pid`, or the errno.
fn pidfd(pid: i32) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_open(pid, 0) takes integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: a fresh fd of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until `fd` is readable (a pidfd: its process has exited); false at the deadline.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut p, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Waits until every process of the process group `pgid` (a finished call's, already killed)
/// has exited: a zombie at most, its fds, memory and mounts released, whoever reaps it. Until
/// then a process killed inside a system call may still finish that call (create a file,
/// bind a socket, make an IPC object) after the cleanup looked. No process can join the group
/// once it is killed (its members cannot fork past a pending SIGKILL or leave it: the call
/// filter denies `setpgid` and `setsid`). False at the deadline.
pub(super) fn await_group(pgid: i32, deadline: Instant) -> bool {
    loop {
        // SAFETY: integer-only syscall; signal 0 only checks that the group has a member.
        if unsafe { libc::kill(-pgid, 0) } < 0 {
            // Nobody left, zombies included.
            return true;
        }
        let Some(members) = group_members(pgid) else {
            // No /proc: wait until the last member is reaped (orphans by the supervisor,
            // the call process itself by the zygote).
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
            continue;
        };
        for pid in members {
            match pidfd(pid) {
                Ok(fd) => {
                    if !wait_readable(fd.as_fd(), deadline) {
                        return false;
                    }
                }
                // Reaped meanwhile.
                Err(libc::ESRCH) => {}
                // No pidfd: watch its state instead.
                Err(_) => {
                    while process_state(pid).is_some_and(|s| s != b'Z' && s != b'X') {
                        if Instant::now() >= deadline {
                            return false;
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
        }
        return true;
    }
}

/// The processes of the group `pgid`, zombies included, from `/proc/<pid>/stat`; `None`
/// without `/proc`.
fn group_members(pgid: i32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if stat_fields(pid).is_some_and(|(_, pgrp)| pgrp == pgid) {
            out.push(pid);
        }
    }
    Some(out)
}

/// The state letter of `pid`, if it exists.
fn process_state(pid: i32) -> Option<u8> {
    stat_fields(pid).map(|(state, _)| state)
}

/// `(state, pgrp)` from `/proc/<pid>/stat`.
fn stat_fields(pid: i32) -> Option<(u8, i32)> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold anything, so start after the last ')'.
    let rest = &s[s.iter().rposition(|&b| b == b')')? + 2..];
    let mut f = rest.split(|&b| b == b' ');
    let state = *f.next()?.first()?;
    let pgrp = std::str::from_utf8(f.nth(1)?).ok()?.parse().ok()?;
    Some((state, pgrp))
}

fn wipe_dir(dir: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        // Never follows a link: a link is removed, not what it points to.
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

// From <linux/ipc.h>, <linux/shm.h>, <linux/sem.h>, <linux/msg.h>.
const IPC_RMID: libc::c_int = 0;
const SHM_STAT: libc::c_int = 13;
const SHM_INFO: libc::c_int = 14;
const SEM_STAT: libc::c_int = 18;
const SEM_INFO: libc::c_int = 19;
const MSG_STAT: libc::c_int = 11;
const MSG_INFO: libc::c_int = 12;

/// Removes every SysV IPC object (the supervisor is privileged in the container's IPC
/// namespace, so it may remove anyone's). `*_INFO` returns the highest used index; `*_STAT` maps
/// an index to an id.
fn remove_sysv() {
    // (syscall, INFO command, STAT command, whether the command is the 4th argument: semctl)
    for (nr, info, stat, sem) in [
        (libc::SYS_shmctl, SHM_INFO, SHM_STAT, false),
        (libc::SYS_semctl, SEM_INFO, SEM_STAT, true),
        (libc::SYS_msgctl, MSG_INFO, MSG_STAT, false),
    ] {
        let max = ctl(nr, 0, info, sem);
        for idx in 0..=max.max(-1) {
            let id = ctl(nr, idx, stat, sem);
            if id >= 0 {
                ctl(nr, id, IPC_RMID, sem);
            }
        }
    }
}

/// One `shmctl`/`msgctl`/`semctl` call with a scratch buffer large enough for any of their
/// result structs.
fn ctl(nr: libc::c_long, id: libc::c_long, cmd: libc::c_int, sem: bool) -> libc::c_long {
    let mut buf = [0u8; 512];
    let p = buf.as_mut_ptr();
    if sem {
        // SAFETY: semctl(id, 0, cmd, buf): writes at most a semid_ds/seminfo (< 512 bytes).
        unsafe { libc::syscall(nr, id, 0, cmd, p) }
    } else {
        // SAFETY: shmctl/msgctl(id, cmd, buf): writes at most a *id_ds/*info (< 512 bytes).
        unsafe { libc::syscall(nr, id, cmd, p) }
    }
}

//! What the supervisor removes between calls (Fresh) and between workers (Reuse), so nothing a
//! call leaves is there for the next one: every entry of `/tmp` and `/dev/shm`, every SysV
//! shared memory segment, semaphore set and message queue, and every POSIX message queue of
//! the container's IPC namespace.
//! Processes are killed before (the call's whole process group), and the wipe waits until
//! every one of them has exited ([`await_group`]).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Empties the shared scratch directories and the IPC namespace; false when something could
/// not be removed (then the container must go: it would be there for the next call).
pub(super) fn wipe(mqueues: Option<&Mqueues>) -> bool {
    let mut clean = true;
    for dir in [c"/tmp", c"/dev/shm"] {
        clean &= wipe_tree(dir);
    }
    remove_sysv();
    if let Some(m) = mqueues {
        clean &= m.wipe();
    }
    clean
}

/// The POSIX message queues of the container's IPC namespace, as a directory: its `mqueue`
/// file system, mounted detached by the supervisor (never attached where a call could see
/// it). A call can reach them with `mq_open` wherever landlock's file-system rules are not
/// enforced (unsupported, or loosened by the profile).
pub(super) struct Mqueues {
    /// The detached mount (kept for as long as its directory is used).
    _mount: OwnedFd,
    dir: OwnedFd,
}

impl Mqueues {
    /// `None` where the kernel has no new mount API or the supervisor may not mount `mqueue`
    /// (then a call's queues are not removed; landlock's file-system rules keep calls from
    /// opening any).
    pub(super) fn open() -> Option<Mqueues> {
        // From <linux/mount.h>.
        const FSOPEN_CLOEXEC: libc::c_uint = 1;
        const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
        const FSMOUNT_CLOEXEC: libc::c_uint = 1;
        let own = |r: libc::c_long| {
            // SAFETY: a fresh fd of ours, if non-negative.
            (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r as RawFd) })
        };
        // SAFETY: fsopen takes a C string and flags; returns a new fd or -1.
        let fs =
            own(unsafe { libc::syscall(libc::SYS_fsopen, c"mqueue".as_ptr(), FSOPEN_CLOEXEC) })?;
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
        let created = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if created < 0 {
            return None;
        }
        // SAFETY: fsmount takes the configured context's fd and flags; returns a new fd or -1.
        let mount =
            own(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
        // SAFETY: a live C string; returns a new fd or -1.
        let dir = own(unsafe {
            libc::openat(
                mount.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            ) as libc::c_long
        })?;
        Some(Mqueues { _mount: mount, dir })
    }

    /// Removes every queue (`mq_unlink`: a queue still open lives on, nameless, until closed;
    /// the calls that could hold one are dead by now).
    fn wipe(&self) -> bool {
        // A directory fd of its own, so each wipe reads the whole directory from its start.
        let Some(d) = open_dir(self.dir.as_fd(), c".") else {
            return false;
        };
        let Some(names) = entries(d.as_fd()) else {
            return false;
        };
        names.iter().all(|(n, _)| unlink(d.as_fd(), n, false))
    }
}

/// Opens the directory `name` below `dir`, never through a link.
fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> Option<OwnedFd> {
    // SAFETY: a live C string; returns a new fd or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a fresh fd of ours.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `unlinkat(dir, name)`, of a directory with `is_dir`; true when it is gone.
fn unlink(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> bool {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a live C string and an open directory fd.
    let r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
}

/// Every entry of the directory `d` (read from its current offset to the end; `.` and `..`
/// left out), with its `d_type`; `None` if it cannot be read.
fn entries(d: BorrowedFd<'_>) -> Option<Vec<(CString, u8)>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes of records into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                d.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        if n == 0 {
            return Some(out);
        }
        // Records: ino u64, off i64, reclen u16, type u8, NUL-terminated name.
        let mut at = 0usize;
        while at + 19 <= n as usize {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n as usize {
                return None;
            }
            let kind = buf[at + 18];
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                out.push((CString::new(name).ok()?, kind));
            }
            at += reclen;
        }
    }
}

/// Whether the entry `name` of `dir` (of `d_type` `kind`) is a directory, never following a
/// link.
fn is_dir_entry(dir: BorrowedFd<'_>, name: &CStr, kind: u8) -> bool {
    if kind != libc::DT_UNKNOWN {
        return kind == libc::DT_DIR;
    }
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live C string, an open directory fd and a writable stat.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes everything below `top` (which stays); true when it is empty afterwards.
///
/// It holds one directory fd at a time, whatever the depth: a chain of directories deeper
/// than the supervisor's fd limit (a call can make one level by level, no path ever long) is
/// removed like anything else, where a recursive removal holding an fd per level fails and
/// leaves it (a full `/tmp` for every later call, say). Each level's subdirectories still to
/// remove are kept by name; going back up is `..` of the emptied directory. Nothing else
/// changes the tree meanwhile (every process of the call has exited), and no link is ever
/// followed (a link is removed, not what it points to).
fn wipe_tree(top: &CStr) -> bool {
    // SAFETY: AT_FDCWD is a valid directory fd for *at calls.
    let cwd = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };
    let Some(mut cur) = open_dir(cwd, top) else {
        // Nothing to wipe where there is no such directory.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
    };
    // Empties the directory `d` but for its subdirectories, which it returns.
    let clear = |d: BorrowedFd<'_>| -> Option<Vec<CString>> {
        let mut dirs = Vec::new();
        for (name, kind) in entries(d)? {
            if is_dir_entry(d, &name, kind) {
                dirs.push(name);
            } else if !unlink(d, &name, false) {
                return None;
            }
        }
        Some(dirs)
    };
    // Per level above the current one: its subdirectories still to remove, and the current
    // directory's name in it.
    let mut above: Vec<(Vec<CString>, CString)> = Vec::new();
    let Some(mut pending) = clear(cur.as_fd()) else {
        return false;
    };
    loop {
        if let Some(sub) = pending.pop() {
            // A directory the call made unreadable or read-only is its own to remove: its
            // owner (without CAP_DAC_OVERRIDE, the supervisor runs as the call's user) may
            // give itself access first.
            // SAFETY: a live C string and an open directory fd; `sub` is a directory.
            unsafe { libc::fchmodat(cur.as_raw_fd(), sub.as_ptr(), 0o700, 0) };
            let Some(d) = open_dir(cur.as_fd(), &sub) else {
                return false;
            };
            let Some(inner) = clear(d.as_fd()) else {
                return false;
            };
            above.push((std::mem::replace(&mut pending, inner), sub));
            cur = d;
        } else {
            let Some((rest, name)) = above.pop() else {
                // Back at `top`: read it again from its start, it must be empty now.
                return open_dir(cur.as_fd(), c".")
                    .and_then(|d| entries(d.as_fd()))
                    .is_some_and(|e| e.is_empty());
            };
            let Some(parent) = open_dir(cur.as_fd(), c"..") else {
                return false;
            };
            cur = parent;
            if !unlink(cur.as_fd(), &name, true) {
                return false;
            }
            pending = rest;
        }
    }
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
        if unsafe { libc::kill(-pgid, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            // Nobody left, zombies included.
            return true;
        }
        let Some(members) = group_members(pgid) else {
            // No /proc: wait until the last member is reaped: the call process itself by the
            // zygote, its orphans (children of this process now) here.
            // SAFETY: integer-only syscall with a null status pointer; reaps only members of
            // the group.
            while unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A tree deeper than the fd limit, wide directories, links to a decoy outside, a fifo and
    /// an unreadable directory: everything below `top` goes, `top` and the decoy stay.
    #[test]
    fn wipe_tree_empties_any_tree_and_follows_no_link() {
        let base = std::env::temp_dir().join(format!("hatchery-wipe-{}", std::process::id()));
        let top = base.join("top");
        let decoy = base.join("decoy");
        std::fs::create_dir_all(&top).unwrap();
        std::fs::create_dir_all(&decoy).unwrap();
        std::fs::write(decoy.join("keep"), b"x").unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(top.join(format!("w{i}/a/b"))).unwrap();
            std::fs::write(top.join(format!("w{i}/a/f")), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&decoy, top.join("link")).unwrap();
        std::os::unix::fs::symlink(&decoy, top.join("w1/a/link")).unwrap();
        nix::unistd::mkfifo(&top.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // 1500 levels, each made relative to the one above.
        let mut d = std::fs::File::open(&top).unwrap();
        for _ in 0..1500 {
            nix::sys::stat::mkdirat(Some(d.as_raw_fd()), "d", nix::sys::stat::Mode::S_IRWXU)
                .unwrap();
            let next = open_dir(d.as_fd(), c"d").unwrap();
            d = std::fs::File::from(next);
        }
        std::fs::write(
            "/proc/self/fd/".to_string() + &d.as_raw_fd().to_string() + "/bottom",
            b"x",
        )
        .unwrap();
        drop(d);
        let locked = top.join("w2/locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("f"), b"x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let ro = top.join("w3/ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("f"), b"x").unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        let c = CString::new(top.as_os_str().as_encoded_bytes()).unwrap();
        assert!(wipe_tree(&c));
        assert_eq!(std::fs::read_dir(&top).unwrap().count(), 0);
        assert!(decoy.join("keep").exists(), "followed a link");
        std::fs::remove_dir_all(&base).unwrap();
        // A missing directory is nothing to wipe.
        assert!(wipe_tree(&c));
    }
}

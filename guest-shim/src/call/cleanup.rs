//! What the supervisor removes between calls (Fresh) and between workers (Reuse), so nothing a
//! call leaves is there for the next one: every entry of `/tmp` and `/dev/shm`, and every SysV
//! shared memory segment, semaphore set and message queue of the container's IPC namespace.
//! Processes are killed before (the call's whole process group).
#![allow(unsafe_code)]

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

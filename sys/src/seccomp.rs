//! Installing a classic BPF seccomp filter and answering its user notifications, raw (rustix
//! does not have seccomp). Filters are compiled before the fork; the child only installs them.
//!
//! Everything here is allocation-free and async-signal-safe, but for [`read_c_string`], which a
//! supervisor uses on notifications (never between fork and exec).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, Errno};

/// `AUDIT_ARCH_*` of the native architecture (x86-64 and aarch64; `None` elsewhere).
pub fn native_audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xC000_003E)
    } else if cfg!(target_arch = "aarch64") {
        Some(0xC000_00B7)
    } else {
        None
    }
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;

/// Installs a classic BPF seccomp filter (the caller sets `no_new_privs` first). With
/// `listener` the filter gets a user-notification listener, whose (close-on-exec) fd is
/// returned. A program longer than the kernel's `sock_fprog` can describe is `EINVAL`.
pub fn install(program: &[libc::sock_filter], listener: bool) -> Result<Option<OwnedFd>, Errno> {
    let len = libc::c_ushort::try_from(program.len()).map_err(|_| libc::EINVAL)?;
    let prog = libc::sock_fprog {
        len,
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
    // SAFETY: with NEW_LISTENER the kernel returns a new fd that nothing else owns.
    Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(ret as i32) }))
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
pub struct Notif {
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
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `SECCOMP_IOCTL_NOTIF_RECV` = `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND` = `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// Receives one pending notification from a seccomp listener (blocks if none is pending).
pub fn notif_recv(listener: BorrowedFd<'_>) -> Result<Notif, Errno> {
    // The kernel insists on a zeroed buffer.
    let mut notif = Notif::default();
    // SAFETY: `notif` is a writable `struct seccomp_notif` of the size the ioctl number encodes;
    // `listener` is open for the call.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_RECV, &mut notif as *mut Notif) };
    check(r as libc::c_long)?;
    Ok(notif)
}

/// Answers notification `id`: the call fails with `errno`.
pub fn notif_deny(listener: BorrowedFd<'_>, id: u64, errno: i32) -> Result<(), Errno> {
    let resp = NotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: `resp` is a `struct seccomp_notif_resp` of the size the ioctl number encodes;
    // `listener` is open for the call.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
    check(r as libc::c_long).map(drop)
}

/// Answers notification `id`: the call runs as if no filter had notified it
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Only for calls the policy itself allows: the kernel
/// runs the call with the caller's (possibly changed) arguments.
pub fn notif_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    let resp = NotifResp {
        id,
        val: 0,
        error: 0,
        flags: 1, // SECCOMP_USER_NOTIF_FLAG_CONTINUE
    };
    // SAFETY: as in `notif_deny`.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
    check(r as libc::c_long).map(drop)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` in process `pid`'s memory
/// (`process_vm_readv`, page by page so an unmapped page after the string does not fail the
/// read). Returns the bytes before the NUL, and whether the string was longer than `max`.
pub fn read_c_string(pid: libc::pid_t, addr: u64, max: usize) -> Result<(Vec<u8>, bool), Errno> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let chunk = ((PAGE - at % PAGE) as usize).min(max - out.len());
        let mut buf = vec![0u8; chunk];
        let n = read_memory(pid, at, &mut buf)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok((out, false));
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Ok((out, true))
}

/// Reads `buf.len()` bytes (or fewer, at the end of a mapping) at `addr` in process `pid`.
pub fn read_memory(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; the remote range is only read
    // by the kernel, which checks it against the other process's mappings.
    let r = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(r as libc::c_long).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structs have the kernel's sizes, which the ioctl numbers encode.
    #[test]
    fn struct_sizes_match_the_ioctl_numbers() {
        let size = |ioctl: libc::c_ulong| ((ioctl >> 16) & 0x3fff) as usize;
        assert_eq!(std::mem::size_of::<Notif>(), size(NOTIF_RECV));
        assert_eq!(std::mem::size_of::<NotifResp>(), size(NOTIF_SEND));
    }

    #[test]
    fn oversized_program_is_einval_not_truncated() {
        let nop = libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let program = vec![nop; usize::from(u16::MAX) + 2];
        assert_eq!(install(&program, false).unwrap_err(), libc::EINVAL);
    }
}
